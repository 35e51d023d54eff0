//! Files change in the watched folder; subscribed clients get file.* and sync.* events in
//! seq order with no gap, and the operations are recorded with their items.

use bandsync_testkit::stack::*;
use serde_json::Value;
use std::fs;

fn until_file_event(kind: &'static str, path: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events: &[Value]| {
        let seen = events
            .iter()
            .any(|e| e["event"] == kind && e["data"]["path"] == path);
        seen && events
            .last()
            .is_some_and(|e| e["event"] == "sync.completed")
    }
}

#[tokio::test]
async fn folder_changes_reach_subscribers_in_order() {
    let t = spawn_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    let mut bob = t.client("bob", &["demo"]).await;
    let mut other_band = t.client("carol", &["jazz"]).await;
    // Their presence.joined are delivered (to nobody yet) before anyone subscribes.
    t.drain().await;
    let sub = alice.subscribe("band:demo").await;
    assert_eq!(
        sub["seq"], 2,
        "only alice's and bob's presence.joined yet: {sub}"
    );
    bob.subscribe("band:demo").await;
    other_band.subscribe("band:jazz").await;
    let dir = t.folder();

    // GIVEN a new chart WHEN it is written THEN started, created, completed arrive.
    fs::create_dir_all(dir.join("charts")).unwrap();
    put(dir.join("charts/blue-bossa.pdf"), b"chart v1");
    let mut all = alice
        .events_until(until_file_event("file.created", "charts/blue-bossa.pdf"))
        .await;
    let names: Vec<&str> = all.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["sync.started", "file.created", "sync.completed"]);
    let created = &all[1];
    assert_eq!(created["channel"], "band:demo");
    assert_eq!(created["data"]["name"], "blue-bossa.pdf");
    assert_eq!(created["data"]["size"], 8);
    let file_id = created["data"]["file_id"].as_str().unwrap().to_owned();

    // An edit is an update of the same file.
    put(dir.join("charts/blue-bossa.pdf"), b"chart v2 with a coda");
    let batch = alice
        .events_until(until_file_event("file.updated", "charts/blue-bossa.pdf"))
        .await;
    assert_eq!(batch[1]["data"]["file_id"], file_id.as_str());
    all.extend(batch);

    // A rename is a move that keeps the file id.
    fs::rename(
        dir.join("charts/blue-bossa.pdf"),
        dir.join("charts/blue-bossa-final.pdf"),
    )
    .unwrap();
    let batch = alice
        .events_until(until_file_event(
            "file.moved",
            "charts/blue-bossa-final.pdf",
        ))
        .await;
    let moved = batch.iter().find(|e| e["event"] == "file.moved").unwrap();
    assert_eq!(moved["data"]["from_path"], "charts/blue-bossa.pdf");
    assert_eq!(moved["data"]["file_id"], file_id.as_str());
    assert!(
        file_events(&batch).iter().all(|(k, _)| k == "file.moved"),
        "a rename is not a delete + create: {:?}",
        names_of(&batch)
    );
    all.extend(batch);

    // A touch (new mtime, same content) is not an update: the next change's batch
    // holds only that change.
    let before = t.folder_notified().await;
    fs::File::options()
        .write(true)
        .open(dir.join("charts/blue-bossa-final.pdf"))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    t.settle_folder(before).await;
    put(dir.join("setlist.txt"), b"1. Blue Bossa");
    let batch = alice
        .events_until(until_file_event("file.created", "setlist.txt"))
        .await;
    assert_eq!(
        file_events(&batch),
        [("file.created".to_owned(), "setlist.txt".to_owned())]
    );
    all.extend(batch);

    fs::remove_file(dir.join("setlist.txt")).unwrap();
    all.extend(
        alice
            .events_until(until_file_event("file.deleted", "setlist.txt"))
            .await,
    );

    // A burst: every file arrives, seqs stay gapless.
    for i in 0..25 {
        put(dir.join(format!("take-{i:02}.mp3")), format!("take {i}"));
    }
    all.extend(
        alice
            .events_until(|ev| {
                file_events(ev).len() >= 25
                    && ev.last().is_some_and(|e| e["event"] == "sync.completed")
            })
            .await,
    );
    assert_gapless(&all, 3);

    // Bob saw exactly the same stream; the other band saw nothing.
    let head = all.last().unwrap()["seq"].as_u64().unwrap();
    let bobs = bob
        .events_until(|ev| ev.last().is_some_and(|e| e["seq"].as_u64() == Some(head)))
        .await;
    assert_eq!(bobs, all);
    t.drain().await;
    assert!(other_band.frames_until_pong().await.is_empty());

    // The operations are recorded, newest first, with their items.
    let http = t.http();
    let token = t.token("alice", &["demo"]);
    let (status, ops) = http
        .get("/sync/operations?band=demo&limit=100", Some(&token))
        .await;
    assert_eq!(status, 200, "{ops}");
    let ops = ops["operations"].as_array().unwrap().clone();
    assert!(
        ops.len() >= 6,
        "one operation per change at least: {}",
        ops.len()
    );
    assert!(ops.iter().all(|o| o["status"] == "completed"));
    let first = ops.last().unwrap();
    assert_eq!(first["metrics"]["synced"], 1);
    let (status, detail) = http
        .get(
            &format!("/sync/operations/{}", first["id"].as_str().unwrap()),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["items"][0]["path"], "charts/blue-bossa.pdf");
    assert_eq!(detail["items"][0]["action"], "created");
    let synced_total: u64 = ops
        .iter()
        .map(|o| o["metrics"]["synced"].as_u64().unwrap())
        .sum();
    assert_eq!(
        synced_total as usize,
        file_events(&all).len(),
        "one item per file event"
    );
}

fn names_of(events: &[Value]) -> Vec<String> {
    names(events)
}

#[tokio::test]
async fn a_manual_full_sync_and_a_client_sync_request_run_and_report() {
    let t = spawn_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;
    put(t.folder().join("a.pdf"), b"a");
    alice
        .events_until(|ev| has_completed(ev, 1) && !file_events(ev).is_empty())
        .await;

    let http = t.http();
    let token = t.token("alice", &["demo"]);
    let (status, body) = http
        .post("/sync/trigger", Some(&token), r#"{"band":"demo"}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"][0]["full"], true);
    let events = alice.events_until(|ev| has_completed(ev, 1)).await;
    let started = events
        .iter()
        .find(|e| e["event"] == "sync.started")
        .unwrap();
    assert_eq!(started["data"]["trigger"], "manual");
    assert_eq!(started["data"]["full"], true);
    assert!(
        file_events(&events).is_empty(),
        "nothing changed, so a full sync emits no file events"
    );
    let completed = events.last().unwrap();
    assert_eq!(completed["data"]["metrics"]["seen"], 1);

    alice
        .send(serde_json::json!({"action": "sync_request", "band": "demo", "ref": "r1"}))
        .await;
    let ack = alice.expect("ack").await;
    assert_eq!(ack["ref"], "r1");
    assert_eq!(ack["data"]["queued"][0]["source"], "folder");
    let events = alice.events_until(|ev| has_completed(ev, 1)).await;
    assert_eq!(events[0]["data"]["trigger"], "client");

    let (status, body) = http.get("/sync/status?band=demo", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["sources"][0]["kind"], "folder");
    assert!(body["watch_channels"][0]["last_message"].is_u64(), "{body}");
    let (status, body) = http.get("/sync/stats?band=demo", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["operations"]["completed"], 3, "{body}");
    let (status, body) = http.get("/sync/health", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}
