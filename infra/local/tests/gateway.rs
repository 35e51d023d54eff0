//! The WebSocket gateway routes like API Gateway: `$request.body.action` picks a route,
//! `$default` catches the rest, and with no route to take the client is told `Forbidden`.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use bandsync_local::gateway::{Gateway, Limits, Registry, RouteHandler, Routes};
use bandsync_local::listen::Socket;
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// A route that answers through @connections with its route key and the body it got.
fn answering(registry: &Registry, status: i64) -> RouteHandler {
    let registry = registry.clone();
    std::sync::Arc::new(move |req: ApiGatewayWebsocketProxyRequest| {
        let registry = registry.clone();
        async move {
            let ctx = &req.request_context;
            let reply =
                json!({"route": ctx.route_key, "event_type": ctx.event_type, "body": req.body});
            let _ = registry.post(
                ctx.connection_id.as_deref().unwrap_or_default(),
                reply.to_string().as_bytes(),
                usize::MAX,
            );
            let mut resp = ApiGatewayProxyResponse::default();
            resp.status_code = status;
            resp
        }
        .boxed()
    })
}

async fn serve(routes: impl FnOnce(&Registry) -> Routes) -> String {
    let registry = Registry::default();
    let gateway = Gateway {
        stage: "test".into(),
        routes: routes(&registry),
        registry,
        limits: Limits::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let service = gateway
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    format!("ws://{addr}/test")
}

/// Send `text` and wait for the next frame back.
async fn ask(ws: &mut Socket, text: &str) -> Value {
    ws.send_text(text).await.unwrap();
    next(ws).await
}

async fn next(ws: &mut Socket) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next_frame());
    frame.await.unwrap().expect("a frame").json
}

#[tokio::test]
async fn route_selection_on_the_action_with_a_default() {
    let url = serve(|r| {
        Routes::default()
            .route("echo", answering(r, 200))
            .route("$default", answering(r, 200))
    })
    .await;
    let mut ws = Socket::open(&url).await.unwrap();
    let echo = ask(&mut ws, r#"{"action":"echo","n":1}"#).await;
    assert_eq!(
        (echo["route"].as_str(), echo["event_type"].as_str()),
        (Some("echo"), Some("MESSAGE"))
    );
    assert_eq!(echo["body"], r#"{"action":"echo","n":1}"#);
    for other in [
        r#"{"action":"dance"}"#,
        "not json",
        r#"{"action":5}"#,
        r#"{"action":"$connect"}"#,
    ] {
        assert_eq!(ask(&mut ws, other).await["route"], "$default", "{other}");
    }
}

#[tokio::test]
async fn no_route_to_take_is_forbidden_and_a_failing_route_is_an_internal_error() {
    let url = serve(|r| Routes::default().route("boom", answering(r, 500))).await;
    let mut ws = Socket::open(&url).await.unwrap();
    let refused = ask(&mut ws, r#"{"action":"nothing-here"}"#).await;
    assert_eq!(refused["message"], "Forbidden");
    assert!(refused["connectionId"].is_string() && refused["requestId"].is_string());
    // The route's own reply comes first, then API Gateway's error for its 500.
    assert_eq!(ask(&mut ws, r#"{"action":"boom"}"#).await["route"], "boom");
    let err = next(&mut ws).await;
    assert_eq!(err["message"], "Internal server error");
}
