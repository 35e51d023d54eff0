//! What only the local stack serves: the example page and the client bundle under `/app/`
//! (built into the binary, so no npm is needed to see them) and `POST /local/token`, the
//! page's `getToken`. Neither is an API Gateway route: no Lambda mints tokens.

use bandsync_testkit::stack::{Client, Http, Platform, eventually, spawn_stack};
use serde_json::Value;

const PAGE: &str = include_str!("../../../shared/clients/ts/example/index.html");
const BUNDLE: &str = include_str!("../../../shared/clients/ts/dist/bandsync.min.mjs");

async fn get(http: &Http, path: &str) -> (u16, String, String) {
    let resp = http
        .client
        .get(format!("{}{path}", http.base))
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, resp.text().await.expect("a body"))
}

async fn ask_token(http: &Http, body: &str) -> (u16, Value) {
    http.post("/local/token", None, body).await
}

#[tokio::test]
async fn the_example_page_and_its_bundle_are_served_under_app() {
    let stack = spawn_stack().await;
    let http = stack.http();
    assert_eq!(
        stack.stack.app_url(),
        Some(format!("{}/app/", stack.stack.http_url))
    );

    // GIVEN /app/ THEN the page, as HTML, with this stack's WebSocket URL written in
    let (status, content_type, page) = get(&http, "/app/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    let meta = format!(r#"content="{}""#, stack.stack.ws_url);
    assert!(
        page.contains(&meta),
        "the page names {}",
        stack.stack.ws_url
    );
    assert!(!page.contains("__BANDSYNC_WS_URL__"));
    assert_eq!(
        page.replace(&stack.stack.ws_url, "__BANDSYNC_WS_URL__"),
        PAGE
    );
    assert!(page.contains(r#"from './bandsync.min.mjs'"#));
    // AND /app (no slash) leads there
    let (status, _, same) = get(&http, "/app").await;
    assert_eq!((status, same.len()), (200, page.len()));

    // GIVEN the bundle THEN the committed file, as a JavaScript module
    let (status, content_type, bundle) = get(&http, "/app/bandsync.min.mjs").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/javascript; charset=utf-8");
    assert_eq!(bundle, BUNDLE);

    // GIVEN anything else under /app/ THEN 404
    for path in [
        "/app/index.html",
        "/app/dist/index.mjs",
        "/app/%2e%2e/Cargo.toml",
        "/app/x/y",
    ] {
        let (status, _, _) = get(&http, path).await;
        assert_eq!(status, 404, "{path}");
    }
    // AND the API beside it is unchanged
    let (status, body) = http.get("/sync/health", None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn local_tokens_open_the_websocket_and_the_http_api() {
    let stack = spawn_stack().await;
    let http = stack.http();

    // GIVEN a member and a band THEN a token and when it expires (an hour)
    let (status, body) = ask_token(&http, r#"{"user":"alice","band":"demo"}"#).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("a token").to_owned();
    let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339");
    let left = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((3590..=3600).contains(&left), "{left} s left");

    // AND the stack takes it: the channel subscribes, the HTTP API answers
    let mut ws = Client::connect(&stack.stack.ws_url, &token).await;
    let subscribed = ws.subscribe("band:demo").await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let (status, body) = http.get("/sync/status?band=demo", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    // AND only for that band
    let (status, _) = http.get("/sync/status?band=other", Some(&token)).await;
    assert_eq!(status, 403);

    // GIVEN seconds THEN that short a token
    let (status, body) = ask_token(&http, r#"{"user":"bo","band":"demo","seconds":90}"#).await;
    assert_eq!(status, 200, "{body}");
    let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((80..=90).contains(&(expires - chrono::Utc::now().timestamp())));

    // GIVEN nonsense THEN a clear refusal
    let (status, body) = ask_token(&http, r#"{"band":"demo"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_body", "{body}");
    let (status, body) = ask_token(&http, r#"{"user":"alice","band":"demo","seconds":-5}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_parameter", "{body}");
    // AND it takes only POST
    let (status, _) = http.get("/local/token", None).await;
    assert_eq!(status, 405);
}

#[test]
fn no_lambda_serves_the_local_routes() {
    // The Lambdas' routes (the template is checked against this list) have no /local or
    // /app: tokens come from the app's own backend on AWS.
    let local: Vec<&&str> = bandsync::api::ROUTES
        .iter()
        .filter(|r| {
            let path = r.split_once(' ').map_or(**r, |(_, p)| p);
            path.starts_with("/local") || path.starts_with("/app")
        })
        .collect();
    assert!(local.is_empty(), "{local:?}");
}

#[tokio::test]
async fn local_connections_name_each_socket_for_an_at_connections_delete() {
    let stack = spawn_stack().await;
    let http = stack.http();
    let (status, body) = http.get("/local/connections", None).await;
    assert_eq!(
        (status, body["connections"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // GIVEN alice on a registered device and bo with none
    let mut alice = stack.client("alice", &["demo"]).await;
    let device = alice
        .register_device("alice-browser", Platform::Web, None)
        .await;
    assert_eq!(device["type"], "device", "{device}");
    let _bo = stack.client("bo", &["demo"]).await;
    let listed = eventually("both connections are listed", || async {
        let (_, body) = http.get("/local/connections", None).await;
        let list = body["connections"].as_array()?.clone();
        (list.len() == 2 && list.iter().any(|c| c["device"] == "alice-browser")).then_some(list)
    })
    .await;
    // THEN each with its member (and device), oldest first
    assert_eq!(listed[0]["user"], "alice", "{listed:?}");
    assert_eq!(listed[0]["device"], "alice-browser");
    assert_eq!(listed[1]["user"], "bo");
    assert_eq!(listed[1]["device"], Value::Null);

    // AND the id is the one @connections cuts (the socket closes with 1000)
    let id = listed[0]["id"].as_str().unwrap();
    let resp = http
        .client
        .delete(format!("{}/@connections/{id}", stack.stack.management_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(alice.close_code().await, Some(1000));
    eventually("alice's connection is gone", || async {
        let (_, body) = http.get("/local/connections", None).await;
        (body["connections"].as_array()?.len() == 1).then_some(())
    })
    .await;
}

/// One request with an `Origin` (and whatever else), answered as status and headers.
async fn with_origin(
    http: &Http,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    let mut req = http.client.request(method, format!("{}{path}", http.base));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if path == "/local/token" {
        req = req.body(r#"{"user":"alice","band":"demo"}"#);
    }
    let resp = req.send().await.expect("a response");
    (resp.status().as_u16(), resp.headers().clone())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn pages_on_this_machine_may_call_the_token_route_and_the_api_and_no_others() {
    let stack = spawn_stack().await;
    let http = stack.http();
    let token = stack.stack.token("alice", &["demo"]);
    let bearer = format!("Bearer {token}");
    use http::Method;

    // GIVEN a page of a dev server on this machine THEN its requests are answered for it
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
    ] {
        let (status, h) =
            with_origin(&http, Method::POST, "/local/token", &[("origin", origin)]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "access-control-allow-origin"), Some(origin));
        assert_eq!(header(&h, "vary"), Some("origin"));
        let (status, h) = with_origin(
            &http,
            Method::GET,
            "/sync/status?band=demo",
            &[("origin", origin), ("authorization", &bearer)],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "access-control-allow-origin"), Some(origin));
    }

    // AND its preflight (a JSON body, a bearer token) is answered by the stack
    let preflight = [
        ("origin", "http://localhost:5173"),
        ("access-control-request-method", "PUT"),
        (
            "access-control-request-headers",
            "authorization,content-type",
        ),
    ];
    for path in [
        "/local/token",
        "/sync/entities/setlist_entry/a",
        "/sync/health",
    ] {
        let (status, h) = with_origin(&http, Method::OPTIONS, path, &preflight).await;
        assert_eq!(status, 204, "{path}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("http://localhost:5173")
        );
        let methods = header(&h, "access-control-allow-methods").unwrap_or_default();
        for m in ["GET", "POST", "PUT", "DELETE"] {
            assert!(methods.contains(m), "{path}: {methods}");
        }
        assert_eq!(
            header(&h, "access-control-allow-headers"),
            Some("authorization, content-type")
        );
        assert_eq!(header(&h, "access-control-max-age"), Some("600"));
    }

    // GIVEN any other origin THEN no CORS header: its browser keeps the answer from it
    for origin in [
        "http://evil.example",
        "http://localhost.evil.example:5173",
        "https://localhost:5173",
        "null",
    ] {
        let (status, h) =
            with_origin(&http, Method::POST, "/local/token", &[("origin", origin)]).await;
        assert_eq!(status, 200, "the request itself is the stack's as before");
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{origin}");
        let refused = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ];
        let (status, h) = with_origin(&http, Method::OPTIONS, "/local/token", &refused).await;
        assert_eq!(status, 405, "{origin}: no preflight answer");
        assert_eq!(header(&h, "access-control-allow-origin"), None);
        assert_eq!(header(&h, "access-control-allow-methods"), None);
    }
    // AND the example page's own routes need none
    let (_, h) = with_origin(
        &http,
        Method::GET,
        "/app/",
        &[("origin", "http://localhost:5173")],
    )
    .await;
    assert_eq!(header(&h, "access-control-allow-origin"), None);
}

/// A request to a /local route as if made for `host` (what a browser sends as `Host`).
async fn for_host(http: &Http, path: &str, host: &str) -> (u16, Value) {
    let method = if path == "/local/token" {
        http::Method::POST
    } else {
        http::Method::GET
    };
    let resp = http
        .client
        .request(method, format!("{}{path}", http.base))
        .header("host", host)
        .body(r#"{"user":"alice","band":"demo"}"#)
        .send()
        .await
        .expect("a response");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_local_routes_refuse_a_host_that_is_not_this_machine() {
    let stack = spawn_stack().await;
    let http = stack.http();
    // GIVEN a page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding):
    // its requests come to the stack's port but say whose name they used
    for path in ["/local/token", "/local/connections"] {
        for host in [
            "evil.example",
            "evil.example:8787",
            "localhost.evil.example",
        ] {
            let (status, body) = for_host(&http, path, host).await;
            // THEN refused with a code and a message, and no token
            assert_eq!(status, 403, "{path} for {host}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(host), "{message}");
            assert!(body.get("token").is_none());
        }
        // AND the stack's own names are served
        for host in ["localhost", "127.0.0.1:8787", "[::1]:8787"] {
            let (status, body) = for_host(&http, path, host).await;
            assert_eq!(status, 200, "{path} for {host}: {body}");
        }
    }
}
