//! The local stack against the fake Google APIs: a Drive change made at "Google" is
//! pushed to the stack's webhook through a watch channel the scheduler opened, synced by
//! the Drive engine, and reaches a subscribed client as a Drive-shaped `file.*` event.

use crate::support::*;
use bandsync_local::LocalStack;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

async fn spawn_google_stack() -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(dir.path());
    cfg.google_fake = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    // No periodic pass during the test: what arrives came through push.
    cfg.channels_every = Duration::from_secs(3600);
    let stack = LocalStack::start(cfg).await.expect("stack starts");
    TestStack { stack, _dir: dir }
}

fn drive_event(kind: &'static str, path: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events: &[Value]| {
        events
            .iter()
            .any(|e| e["event"] == kind && e["data"]["path"] == path)
            && events
                .last()
                .is_some_and(|e| e["event"] == "sync.completed")
    }
}

#[tokio::test]
async fn drive_changes_at_the_fake_reach_subscribers_through_a_watch_channel() {
    // GIVEN the stack with the fake Google APIs, and a member subscribed to the band
    let t = spawn_google_stack().await;
    let token = t.token("alice", &["demo"]);
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;
    let http = reqwest::Client::new();
    let base = &t.stack.http_url;

    // THEN the first scheduler tick opened a channel on the Drive source, and the first
    // pass listed the seeded tree (the two charts and the recording, not the file
    // outside the band folder)
    let first = alice
        .events_until(drive_event("file.created", "Recordings/rehearsal-1.mp3"))
        .await;
    let mut paths: Vec<String> = file_events(&first)
        .into_iter()
        .filter(|(k, _)| k == "file.created")
        .map(|(_, p)| p)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "Charts/Blue Bossa.pdf",
            "Charts/So What.pdf",
            "Recordings/rehearsal-1.mp3"
        ]
    );
    let (status, body) = t.http().get("/sync/status?band=demo", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let channels = body["watch_channels"].as_array().unwrap().clone();
    let drive_channel = channels
        .iter()
        .find(|c| c["source"] == "drive")
        .unwrap_or_else(|| panic!("a Drive channel in {channels:?}"));
    assert_eq!(drive_channel["kind"], "drive");
    assert!(drive_channel["expires_at"].is_string(), "{drive_channel}");

    // WHEN a chart is added at "Google" through the fake's control API
    let seeded: Value = http
        .get(format!("{base}/fake/drive"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = http
        .post(format!("{base}/fake/drive/files"))
        .json(
            &json!({"name": "Autumn Leaves.pdf", "content": "%PDF chart",
                      "parent": seeded["charts"], "mime_type": "application/pdf"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // THEN the push notification brings a Drive-shaped file.created, with the Drive id
    let batch = alice
        .events_until(drive_event("file.created", "Charts/Autumn Leaves.pdf"))
        .await;
    let event = batch.iter().find(|e| e["event"] == "file.created").unwrap();
    assert_eq!(event["data"]["file_id"], id.as_str());
    assert_eq!(event["data"]["source"], "drive");
    assert_eq!(event["data"]["hash"], md5_hex("%PDF chart"));

    // WHEN it is renamed, then trashed THEN a move and a delete follow, in order
    let renamed = http
        .post(format!("{base}/fake/drive/files/{id}/rename"))
        .json(&json!({"name": "Autumn Leaves (Eb).pdf"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 204);
    alice
        .events_until(drive_event("file.moved", "Charts/Autumn Leaves (Eb).pdf"))
        .await;
    let trashed = http
        .post(format!("{base}/fake/drive/files/{id}/trash"))
        .send()
        .await
        .unwrap();
    assert_eq!(trashed.status(), 204);
    alice
        .events_until(drive_event("file.deleted", "Charts/Autumn Leaves (Eb).pdf"))
        .await;

    // AND the fake's control API answers bad input with clear errors
    let missing = http
        .post(format!("{base}/fake/drive/files/nope/trash"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let no_body = http
        .post(format!("{base}/fake/drive/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_body.status(), 400);
}

fn md5_hex(s: &str) -> String {
    bandsync::google::fake::md5_hex(s.as_bytes())
}
