//! Every bad input gets a clear error and nothing panics; the stack keeps serving.

use bandsync::model::{BandId, SourceId, WatchChannel};
use bandsync::ports::WatchChannelStore;
use bandsync_testkit::stack::*;

use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;

async fn refused(url: &str) -> (u16, serde_json::Value) {
    match connect_async(url).await {
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or_default();
            (status, body)
        }
        Ok(_) => panic!("{url} should be refused"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_at_connect() {
    let t = spawn_stack().await;
    let url = &t.stack.ws_url;
    let (status, body) = refused(url).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
    let expired = t.stack.tokens.mint(
        "alice",
        &["demo"],
        chrono::Utc::now() - chrono::Duration::hours(2),
        chrono::Duration::hours(1),
    );
    let (status, body) = refused(&format!("{url}?token={expired}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    let forged = bandsync::auth::TokenKey::new("not-the-secret").mint(
        "alice",
        &["demo"],
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    );
    let (status, body) = refused(&format!("{url}?token={forged}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let (status, _) = refused(&format!("{url}?token=garbage")).await;
    assert_eq!(status, 401);
    // The stack still takes a good token after all that.
    let mut ok = t.client("alice", &["demo"]).await;
    ok.send(json!({"action": "ping"})).await;
    ok.expect("pong").await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_lives_on() {
    let t = spawn_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    for (frame, code) in [
        (
            json!({"action": "subscribe", "channel": "band:jazz", "ref": 1}),
            "forbidden",
        ),
        (
            json!({"action": "subscribe", "channel": "user:bob", "ref": 2}),
            "forbidden",
        ),
        (
            json!({"action": "resume", "channel": "band:jazz", "after_seq": 0, "ref": 3}),
            "forbidden",
        ),
        (
            json!({"action": "sync_request", "band": "jazz", "ref": 4}),
            "forbidden",
        ),
        (
            json!({"action": "sync_request", "band": "demo", "source": "nope", "ref": 5}),
            "not_found",
        ),
        (json!({"action": "dance", "ref": 6}), "unknown_action"),
        (json!({"channel": "band:demo", "ref": 7}), "missing_action"),
        (
            json!({"action": "subscribe", "channel": "team:x", "ref": 8}),
            "invalid_request",
        ),
    ] {
        alice.send(frame.clone()).await;
        let err = alice.expect("error").await;
        assert_eq!(err["code"], code, "{frame} -> {err}");
        assert_eq!(err["ref"], frame["ref"]);
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    alice.send_text("{not json").await;
    assert_eq!(alice.expect("error").await["code"], "malformed_json");
    alice
        .send(json!({"action": "subscribe", "channel": "user:alice"}))
        .await;
    assert_eq!(alice.expect("subscribed").await["channel"], "user:alice");
    alice
        .send(json!({"action": "ping", "ref": "still-here"}))
        .await;
    assert_eq!(alice.expect("pong").await["ref"], "still-here");
}

#[tokio::test]
async fn oversize_messages_and_frames_close_with_1009() {
    let t = spawn_stack().await;
    let mut big = t.client("alice", &["demo"]).await;
    let padding = "x".repeat(200 * 1024);
    big.send(json!({"action": "ping", "pad": padding})).await;
    assert_eq!(big.close_code().await, Some(1009), "a 200 KB message");

    let mut wide = t.client("alice", &["demo"]).await;
    let padding = "x".repeat(40 * 1024);
    wide.send(json!({"action": "ping", "pad": padding})).await;
    assert_eq!(wide.close_code().await, Some(1009), "a 40 KB frame");

    let mut fine = t.client("alice", &["demo"]).await;
    fine.send(json!({"action": "ping"})).await;
    fine.expect("pong").await;
}

#[tokio::test]
async fn idle_and_overlong_connections_are_closed() {
    let t = spawn_stack_with(|cfg| cfg.limits.idle_timeout = Duration::from_millis(300)).await;
    let mut idle = t.client("alice", &["demo"]).await;
    assert_eq!(idle.close_code().await, Some(1001));
    t.stack.shutdown().await;

    let t = spawn_stack_with(|cfg| cfg.limits.max_duration = Duration::from_millis(500)).await;
    let mut chatty = t.client("alice", &["demo"]).await;
    let started = std::time::Instant::now();
    let code = loop {
        chatty.send(json!({"action": "ping"})).await;
        if let Some(code) = tokio::time::timeout(Duration::from_millis(100), chatty.close_code())
            .await
            .ok()
            .flatten()
        {
            break code;
        }
        assert!(started.elapsed() < WAIT, "never closed");
    };
    assert_eq!(code, 1001);
    t.stack.shutdown().await;
}

#[tokio::test]
async fn http_api_errors_are_json_with_the_right_status() {
    let t = spawn_stack().await;
    let http = t.http();
    let demo = t.token("alice", &["demo"]);
    // (method, path, token, body, status, error code)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/sync/status?band=demo",
            None,
            "",
            401,
            "missing_token",
        ),
        (
            "GET",
            "/sync/status?band=demo",
            Some("nope"),
            "",
            401,
            "invalid_token",
        ),
        (
            "GET",
            "/sync/status?band=jazz",
            Some(&demo),
            "",
            403,
            "forbidden",
        ),
        (
            "GET",
            "/sync/status",
            Some(&demo),
            "",
            400,
            "missing_parameter",
        ),
        (
            "GET",
            "/sync/status?band=bad%20band",
            Some(&demo),
            "",
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/sync/operations?band=demo&limit=0",
            Some(&demo),
            "",
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/sync/operations/no-such-op",
            Some(&demo),
            "",
            404,
            "not_found",
        ),
        (
            "POST",
            "/sync/trigger",
            Some(&demo),
            "{oops",
            400,
            "malformed_body",
        ),
        (
            "POST",
            "/sync/trigger",
            Some(&demo),
            r#"{"band":"jazz"}"#,
            403,
            "forbidden",
        ),
        (
            "POST",
            "/sync/trigger",
            Some(&demo),
            r#"{"band":"demo","source":"nope"}"#,
            404,
            "not_found",
        ),
        (
            "POST",
            "/sync/status",
            Some(&demo),
            "",
            405,
            "method_not_allowed",
        ),
        ("POST", "/webhooks/google", None, "", 400, "missing_header"),
    ];
    for (method, path, token, body, status, code) in cases {
        let (got, json) = if method == "GET" {
            http.get(path, token).await
        } else {
            http.post(path, token, body).await
        };
        assert_eq!(
            (got, json["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {json}"
        );
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, body) = http.get("/nowhere", None).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
}

#[tokio::test]
async fn webhooks_are_verified_and_deduplicated() {
    let t = spawn_stack().await;
    // A channel whose token we know (as the scheduler creates for Google).
    let token = "channel-secret";
    t.stack
        .store
        .put_watch_channel(&WatchChannel {
            id: "chan-1".into(),
            band: BandId::parse("demo").unwrap(),
            source: SourceId::parse("folder").unwrap(),
            resource_id: "res-1".into(),
            token_hash: bandsync::webhook::token_hash(token),
            expires_at: None,
            last_message: None,
            last_message_at: None,
            kind: None,
            created_at: None,
        })
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let post = |channel: &'static str,
                tok: &'static str,
                res: &'static str,
                state: &'static str,
                n: &'static str| {
        let req = client
            .post(format!("{}/webhooks/google", t.stack.http_url))
            .header("X-Goog-Channel-ID", channel)
            .header("X-Goog-Channel-Token", tok)
            .header("X-Goog-Resource-ID", res)
            .header("X-Goog-Resource-State", state)
            .header("X-Goog-Message-Number", n);
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s, b) = post("chan-1", token, "res-1", "sync", "1").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("sync_acknowledged")));
    let (s, b) = post("chan-1", token, "res-1", "change", "2").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("queued")));
    let (s, b) = post("chan-1", token, "res-1", "change", "2").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")));
    let (s, b) = post("chan-1", token, "res-1", "mystery", "3").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ignored")));
    let (s, b) = post("chan-1", "forged", "res-1", "change", "4").await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, b) = post("chan-1", token, "other-resource", "change", "5").await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, b) = post("chan-unknown", token, "res-1", "change", "6").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, b) = post("chan-1", token, "res-1", "change", "seven").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_header"))
    );
}
