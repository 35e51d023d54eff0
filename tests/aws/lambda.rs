//! Every function's entry point (`bandsync::transport::lambda`, what each main runs) fed the JSON
//! events AWS sends, shaped as AWS documents them (fixtures/), wrapped in a
//! `LambdaEvent` as the runtime hands them over. The handlers run on the embedded store
//! with recording fakes for the queues and the pusher.

use bandsync::model::{ChannelName, ConnectionId, Trigger};
use bandsync::ports::{ChannelLog, ConnectionStore, SourceStore};
use bandsync::transport::lambda;
use bandsync_testkit::{Harness, JsonResponse};
use lambda_runtime::{Context, LambdaEvent};
use serde::de::DeserializeOwned;
use serde_json::json;

/// A fixture with its `@NAME@` placeholders filled, as the runtime's `LambdaEvent`.
fn event<T: DeserializeOwned>(fixture: &str, fill: &[(&str, &str)]) -> LambdaEvent<T> {
    let path = format!(
        "{}/tests/aws/fixtures/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (name, value) in fill {
        // Values go into JSON strings: escape them as JSON does.
        let escaped = serde_json::to_string(value).unwrap();
        text = text.replace(&format!("@{name}@"), &escaped[1..escaped.len() - 1]);
    }
    assert!(
        !text.contains("\"@"),
        "{fixture}: a placeholder was left unfilled"
    );
    let payload =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{fixture} does not parse: {e}"));
    LambdaEvent::new(payload, Context::default())
}

const CONN: &str = "NsLcfdUboAMCJdg=";

#[tokio::test]
async fn websocket_connect_message_and_disconnect() {
    let h = Harness::new();
    h.add_band("demo").await;
    let conn = ConnectionId::parse(CONN).unwrap();

    // $connect with a member token: accepted and recorded
    let token = h.token("alice", &["demo"]);
    let ok = lambda::ws_connect(
        &h.ws_connect(),
        event(
            "ws-connect.json",
            &[("TOKEN", &token), ("CONNECTION", CONN)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(ok.status_code, 200);
    assert_eq!(
        h.store
            .get_connection(&conn)
            .await
            .unwrap()
            .unwrap()
            .user
            .as_str(),
        "alice"
    );
    // ...and with a forged one: refused with a JSON error
    let refused = lambda::ws_connect(
        &h.ws_connect(),
        event(
            "ws-connect.json",
            &[("TOKEN", "x.y.z"), ("CONNECTION", "other=")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(refused.status_code, 401);
    assert_eq!(refused.body_json()["error"]["code"], "invalid_token");

    // a MESSAGE on $default: subscribe, answered through the pusher
    let frame = r#"{"action":"subscribe","channel":"band:demo","ref":1}"#;
    let resp = lambda::ws_message(
        &h.ws_message(),
        event("ws-message.json", &[("CONNECTION", CONN), ("BODY", frame)]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 200);
    let frames = h.pusher.frames(&conn);
    assert_eq!(
        (frames[0]["type"].as_str(), frames[0]["ref"].as_i64()),
        (Some("subscribed"), Some(1))
    );
    assert_eq!(
        h.store
            .subscribers(&ChannelName::parse("band:demo").unwrap())
            .await
            .unwrap(),
        std::slice::from_ref(&conn)
    );

    // $disconnect: the connection and its subscription go
    let resp = lambda::ws_disconnect(
        &h.ws_disconnect(),
        event("ws-disconnect.json", &[("CONNECTION", CONN)]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 200);
    assert!(h.store.get_connection(&conn).await.unwrap().is_none());
    assert!(h.store.subscriptions(&conn).await.unwrap().is_empty());
}

fn http(
    method: &str,
    route: &str,
    path: &str,
    query: &str,
    authorization: &str,
) -> [(&'static str, String); 5] {
    [
        ("METHOD", method.to_owned()),
        ("ROUTE_KEY", route.to_owned()),
        ("PATH", path.to_owned()),
        ("QUERY", query.to_owned()),
        ("AUTHORIZATION", authorization.to_owned()),
    ]
}

fn fill<'a, const N: usize>(
    pairs: &'a [(&'static str, String); N],
) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn http_api_routes_answer_through_the_entry_point() {
    let h = Harness::new();
    let band = h.add_band("demo").await;
    h.add_source(&band, "charts", "/nowhere").await;
    let bearer = h.bearer("alice", &["demo"]);

    let health = http("GET", "GET /sync/health", "/sync/health", "", "");
    let resp = lambda::api(&h.api(), event("http-api.json", &fill(&health)))
        .await
        .unwrap();
    assert_eq!(
        (resp.status_code, resp.body_json()["status"].as_str()),
        (200, Some("ok"))
    );

    // The fixture's queryStringParameters is empty and rawQueryString carries the band:
    // API Gateway fills both; the handler reads the parsed map, so fill it as AWS does.
    let status = http(
        "GET",
        "GET /sync/status",
        "/sync/status",
        "band=demo",
        &bearer,
    );
    let mut ev: LambdaEvent<aws_lambda_events::apigw::ApiGatewayV2httpRequest> =
        event("http-api.json", &fill(&status));
    ev.payload.query_string_parameters =
        std::collections::HashMap::from([("band".to_owned(), "demo".to_owned())]).into();
    let resp = lambda::api(&h.api(), ev).await.unwrap();
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.body_json()["sources"][0]["id"], "charts");

    let anonymous = http("GET", "GET /sync/stats", "/sync/stats", "band=demo", "");
    let resp = lambda::api(&h.api(), event("http-api.json", &fill(&anonymous)))
        .await
        .unwrap();
    assert_eq!(
        (resp.status_code, resp.body_json()["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
}

#[tokio::test]
async fn a_google_notification_reaches_the_webhook_entry_point() {
    let h = Harness::new();
    // Without a known channel the webhook refuses: the path through the entry point works
    // and the answer is the JSON error API Gateway passes on.
    let route = http("POST", "POST /webhooks/google", "/webhooks/google", "", "");
    let mut ev: LambdaEvent<aws_lambda_events::apigw::ApiGatewayV2httpRequest> =
        event("http-api.json", &fill(&route));
    for (k, v) in [
        ("x-goog-channel-id", "4ba78bf0-6a47-11e2-bcfd-0800200c9a66"),
        ("x-goog-channel-token", "secret"),
        ("x-goog-resource-id", "ret08u3rv24htgh289g"),
        ("x-goog-resource-state", "change"),
        ("x-goog-message-number", "10"),
    ] {
        ev.payload.headers.insert(k, v.parse().unwrap());
    }
    let resp = lambda::webhook(&h.webhook(), ev).await.unwrap();
    assert_eq!(
        (resp.status_code, resp.body_json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert!(h.sync_queue.messages().is_empty());
}

#[tokio::test]
async fn sqs_batches_reach_the_worker_and_the_broadcaster() {
    let h = Harness::new();
    let band = h.add_band("demo").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chart.pdf"), b"chart").unwrap();
    let source = h
        .add_source(&band, "charts", dir.path().to_str().unwrap())
        .await;
    let job = h.sync_job("job-1", &band, &source.id, Trigger::Manual);
    let body = serde_json::to_string(&job).unwrap();

    // sync-worker: the job runs, nothing is reported failed
    let sync = [
        ("MESSAGE_ID", "059f36b4-87a3-44ab-83d2-661975830a7d"),
        ("GROUP", "demo/charts"),
        ("BODY", body.as_str()),
    ];
    let resp = lambda::sync_worker(&h.sync_worker(), event("sqs-fifo.json", &sync))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let log = h
        .store
        .read_after(&ChannelName::parse("band:demo").unwrap(), 0, 10)
        .await
        .unwrap();
    let names: Vec<&str> = log.iter().map(|e| e.event()).collect();
    assert_eq!(names, ["sync.started", "file.created", "sync.completed"]);

    // broadcast: what the worker queued, delivered to a subscriber
    let conn = h.add_connection(CONN, "alice", &["demo"]).await;
    h.store
        .subscribe(&conn, &ChannelName::parse("band:demo").unwrap(), h.now())
        .await
        .unwrap();
    for (i, m) in h.broadcast_queue.messages().iter().enumerate() {
        let id = format!("b-{i}");
        let fill = [
            ("MESSAGE_ID", id.as_str()),
            ("GROUP", m.group.as_str()),
            ("BODY", m.body.as_str()),
        ];
        let resp = lambda::broadcast(&h.broadcaster(), event("sqs-fifo.json", &fill))
            .await
            .unwrap();
        assert!(resp.batch_item_failures.is_empty());
    }
    let seqs: Vec<u64> = h
        .pusher
        .frames(&conn)
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    // A body that is no job is acknowledged (logged and counted), so it holds nothing up
    let poison = [
        ("MESSAGE_ID", "poison-1"),
        ("GROUP", "demo/charts"),
        ("BODY", "{\"nope\":true}"),
    ];
    let resp = lambda::sync_worker(&h.sync_worker(), event("sqs-fifo.json", &poison))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());

    // An invocation whose deadline has passed starts nothing and returns the batch
    let mut late: LambdaEvent<aws_lambda_events::sqs::SqsEvent> = event("sqs-fifo.json", &sync);
    late.context.deadline = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let resp = lambda::sync_worker(&h.sync_worker(), late).await.unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["059f36b4-87a3-44ab-83d2-661975830a7d"]);
}

#[tokio::test]
async fn the_scheduled_event_ticks_the_scheduler() {
    let h = Harness::new();
    let band = h.add_band("demo").await;
    h.add_source(&band, "charts", "/nowhere").await;
    assert_eq!(h.store.list_sources(&band).await.unwrap().len(), 1);
    let scheduler = bandsync::scheduler::Scheduler::new(
        h.store.clone(),
        h.store.clone(),
        h.store.clone(),
        h.sync_queue.clone(),
        h.clock.clone(),
    );
    let report = lambda::scheduler(&scheduler, &[band], event("eventbridge-schedule.json", &[]))
        .await
        .unwrap();
    assert_eq!(
        report,
        json!({"reconciles_queued": 1, "events_pruned": 0, "channels": {
            "created": 0, "renewed": 0, "stopped": 0, "forgotten": 0, "failed": 0,
            "deferred": 0}})
    );
    assert_eq!(h.sync_queue.messages()[0].group, "demo/charts");
}
