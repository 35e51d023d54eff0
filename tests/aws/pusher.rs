//! ApiGatewayPusher against the local stack's `@connections` endpoint, which answers as
//! API Gateway does (410 GoneException for a gone id, 413, 429 LimitExceededException,
//! GetConnection with ISO-8601 `connectedAt`), with a real WebSocket client on the other
//! end.
//!
//! Why not moto: moto's apigatewaymanagementapi accepts PostToConnection and
//! DeleteConnection for ANY connection id, so it never answers Gone (the outcome the
//! broadcaster depends on to forget dead connections), and its GetConnection reply
//! carries `connectedAt` as an epoch number, which the Rust SDK (expecting an ISO-8601
//! timestamp, as API Gateway sends) cannot parse. Nor does it deliver anything to a
//! socket. Throttling is covered with a stub that answers 429 on demand.

use crate::support::*;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bandsync::adapters::aws::apigw::ApiGatewayPusher;
use bandsync::model::ConnectionId;
use bandsync::ports::{PushOutcome, Pusher};
use bandsync_testkit::RecordingSleeper;
use bandsync_testkit::stack::{Client, TestStack, spawn_stack};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A local stack with one connected member, and a pusher on its @connections endpoint.
struct Connected {
    stack: TestStack,
    socket: Client,
    id: ConnectionId,
    pusher: ApiGatewayPusher,
}

async fn connected() -> Connected {
    let stack = spawn_stack().await;
    let socket = stack.client("alice", &["demo"]).await;
    let ids = stack.stack.registry.ids();
    assert_eq!(ids.len(), 1, "one open connection: {ids:?}");
    let id = ConnectionId::parse(&ids[0]).expect("a valid connection id");
    let pusher = ApiGatewayPusher::new(
        &sdk_config(&stack.stack.management_url),
        &stack.stack.management_url,
    );
    Connected {
        stack,
        socket,
        id,
        pusher,
    }
}

/// The next data frame as text, None when the socket closes or nothing comes in time.
async fn next_text(client: &mut Client) -> Option<String> {
    let frame = tokio::time::timeout(WAIT, client.socket.next_frame()).await;
    frame.ok().flatten().map(|f| f.text)
}

fn unknown_id() -> ConnectionId {
    ConnectionId::parse("bm9zdWNoY29ubmVjdGlvbg=").unwrap()
}

#[tokio::test]
async fn a_post_reaches_the_socket_and_an_unknown_id_is_gone() {
    // GIVEN a member connected to the local stack
    let mut c = connected().await;

    // WHEN the pusher posts to its connection, and to an id nobody has
    let delivered = c
        .pusher
        .post(&c.id, br#"{"type":"event","seq":1}"#)
        .await
        .expect("post");
    let gone = c
        .pusher
        .post(&unknown_id(), b"{}")
        .await
        .expect("a gone id is not an error");

    // THEN the socket receives the frame, and the unknown id is the Gone outcome
    assert_eq!(delivered, PushOutcome::Delivered);
    assert_eq!(
        next_text(&mut c.socket).await.as_deref(),
        Some(r#"{"type":"event","seq":1}"#)
    );
    assert_eq!(gone, PushOutcome::Gone);
    drop(c.stack);
}

#[tokio::test]
async fn connection_info_gives_when_and_from_where_and_none_when_gone() {
    // GIVEN a member who connected just now from loopback
    let c = connected().await;

    // WHEN the pusher asks about the connection, and about an unknown id
    let info = c
        .pusher
        .connection_info(&c.id)
        .await
        .expect("GetConnection");
    let gone = c
        .pusher
        .connection_info(&unknown_id())
        .await
        .expect("a gone id is not an error");

    // THEN connectedAt is now-ish and the source ip is loopback; the unknown id is None
    let (at, ip) = info.expect("a live connection has info");
    let age = chrono::Utc::now() - at;
    assert!(
        age >= chrono::Duration::zero() - chrono::Duration::seconds(1)
            && age < chrono::Duration::seconds(60),
        "connectedAt {at} is not near now"
    );
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(gone, None);
}

#[tokio::test]
async fn disconnect_closes_the_socket_and_later_posts_are_gone() {
    // GIVEN a member connected to the local stack
    let mut c = connected().await;

    // WHEN the pusher disconnects it
    let closed = c.pusher.disconnect(&c.id).await.expect("DeleteConnection");

    // THEN the socket is closed, and the connection is gone for every later call
    assert!(closed, "a live connection is disconnected");
    assert_eq!(next_text(&mut c.socket).await, None, "the socket closes");
    assert_eq!(
        c.pusher.post(&c.id, b"late").await.expect("post"),
        PushOutcome::Gone
    );
    assert_eq!(c.pusher.connection_info(&c.id).await.expect("get"), None);
    assert!(
        !c.pusher.disconnect(&c.id).await.expect("delete again"),
        "a second disconnect finds nothing"
    );
}

#[tokio::test]
async fn a_payload_over_the_limit_is_an_error_not_gone() {
    // GIVEN a member connected to the local stack (128 KB messages, as API Gateway)
    let c = connected().await;

    // WHEN the pusher posts 200 KB to it
    let err = c
        .pusher
        .post(&c.id, &vec![b'x'; 200 * 1024])
        .await
        .expect_err("413 is an error")
        .to_string();

    // THEN the error says what API Gateway said, and where
    assert!(err.contains("PayloadTooLarge"), "{err}");
    assert!(err.contains(c.id.as_str()), "{err}");
}

/// A management API that answers the first `fail` calls with `status` and `kind` (as
/// `x-amzn-errortype`), then 200; counts the calls.
async fn stub_gateway(
    fail: usize,
    status: StatusCode,
    kind: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < fail {
                let mut r: Response =
                    (status, format!(r#"{{"message":"{kind} from the stub"}}"#)).into_response();
                r.headers_mut()
                    .insert("x-amzn-errortype", HeaderValue::from_static(kind));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                r
            } else {
                StatusCode::OK.into_response()
            }
        }
    });
    let endpoint = format!("{}/prod", serve(router).await);
    (endpoint, calls)
}

/// A pusher for the stub, whose waits between attempts are recorded, not taken.
fn stub_pusher(endpoint: &str, attempts: u32, base: Duration) -> ApiGatewayPusher {
    stub_pusher_recording(endpoint, attempts, base).0
}

fn stub_pusher_recording(
    endpoint: &str,
    attempts: u32,
    base: Duration,
) -> (ApiGatewayPusher, Arc<RecordingSleeper>) {
    let sleeper = Arc::new(RecordingSleeper::default());
    let pusher = ApiGatewayPusher::new(&sdk_config(endpoint), endpoint)
        .with_retry(attempts, base)
        .with_sleeper(sleeper.clone());
    (pusher, sleeper)
}

#[tokio::test]
async fn throttled_posts_are_retried_with_backoff_until_delivered() {
    // GIVEN API Gateway throttling the first two posts (429 LimitExceededException)
    let (endpoint, calls) =
        stub_gateway(2, StatusCode::TOO_MANY_REQUESTS, "LimitExceededException").await;
    let base = Duration::from_millis(50);
    let (pusher, sleeper) = stub_pusher_recording(&endpoint, 3, base);

    // WHEN a post is made
    let outcome = pusher.post(&unknown_id(), b"hello").await;

    // THEN it is delivered on the third attempt, after backing off twice, each wait a
    // full-jitter draw from a window that doubles (50 ms, then 100 ms)
    assert_eq!(
        outcome.expect("delivered after retries"),
        PushOutcome::Delivered
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let waits = sleeper.delays();
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(waits[0] < base && waits[1] < base * 2, "{waits:?}");
}

#[tokio::test]
async fn throttling_past_the_attempts_is_an_error() {
    // GIVEN API Gateway throttling every call
    let (endpoint, calls) = stub_gateway(
        usize::MAX,
        StatusCode::TOO_MANY_REQUESTS,
        "LimitExceededException",
    )
    .await;
    let pusher = stub_pusher(&endpoint, 3, Duration::from_millis(5));

    // WHEN a post, a GetConnection and a DeleteConnection are made
    let post = pusher.post(&unknown_id(), b"hello").await;
    let info = pusher.connection_info(&unknown_id()).await;
    let delete = pusher.disconnect(&unknown_id()).await;

    // THEN each tried 3 times and is an error that says it was throttled
    assert_eq!(calls.load(Ordering::SeqCst), 9);
    let err = post.expect_err("still throttled").to_string();
    assert!(err.contains("LimitExceededException"), "{err}");
    assert!(err.contains("3 attempts"), "{err}");
    assert!(err.contains("PostToConnection"), "{err}");
    assert!(info.is_err() && delete.is_err());
}

#[tokio::test]
async fn a_forbidden_post_is_an_error_at_once() {
    // GIVEN API Gateway refusing the caller (403 ForbiddenException)
    let (endpoint, calls) =
        stub_gateway(usize::MAX, StatusCode::FORBIDDEN, "ForbiddenException").await;
    let pusher = stub_pusher(&endpoint, 3, Duration::from_millis(5));

    // WHEN a post is made
    let err = pusher
        .post(&unknown_id(), b"hello")
        .await
        .expect_err("403 is an error")
        .to_string();

    // THEN it was not retried, and the error names the call, the endpoint and the cause
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for part in ["PostToConnection", endpoint.as_str(), "ForbiddenException"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

#[tokio::test]
async fn a_gone_answer_is_never_retried() {
    // GIVEN API Gateway answering 410 GoneException
    let (endpoint, calls) = stub_gateway(usize::MAX, StatusCode::GONE, "GoneException").await;
    let pusher = stub_pusher(&endpoint, 3, Duration::from_millis(5));

    // WHEN a post is made
    let outcome = pusher.post(&unknown_id(), b"hello").await.expect("post");

    // THEN it is Gone after one call
    assert_eq!(outcome, PushOutcome::Gone);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
