use bandsync::model::{BandId, UserId};
use bandsync::model::{ChannelName, Connection, ConnectionId, Trigger};
use bandsync::ports::{ConnectionStore, SourceStore};
use bandsync::ws_message::*;
use bandsync_testkit::*;
use serde_json::{Value, json};

#[test]
fn acl() {
    let conn = Connection {
        id: ConnectionId::parse("c1").unwrap(),
        user: UserId::parse("alice").unwrap(),
        bands: vec![BandId::parse("demo").unwrap()],
        connected_at: chrono::Utc::now(),
        expires_at: chrono::Utc::now(),
        device: None,
    };
    let ok = |s: &str| may_read(&conn, &ChannelName::parse(s).unwrap());
    assert!(ok("band:demo"));
    assert!(!ok("band:other"));
    assert!(ok("user:alice"));
    assert!(!ok("user:bob"));
    assert!(ok("system"));
}

const ALICE: &str = "L0SM9cOFvHcCIhw=";

/// Alice connected, a member of band `demo` only.
async fn alice() -> Harness {
    let h = Harness::new();
    h.add_connection(ALICE, "alice", &["demo"]).await;
    h
}

/// A frame from `connection`; returns the frames the pusher got back for it.
async fn send(h: &Harness, connection: &str, frame: Value) -> Vec<Value> {
    let before = h.pusher.frames(&conn_id(connection)).len();
    let response = h
        .ws_message()
        .handle(ws_message_event(connection, &frame.to_string()))
        .await;
    assert_eq!(response.status(), 200, "the route always answers 200");
    h.pusher.frames(&conn_id(connection)).split_off(before)
}

/// A frame that must be answered with one frame only.
async fn ask(h: &Harness, frame: Value) -> Value {
    let mut replies = send(h, ALICE, frame).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.remove(0)
}

async fn subscribed(h: &Harness) -> Vec<ChannelName> {
    h.store.subscriptions(&conn_id(ALICE)).await.unwrap()
}

#[tokio::test]
async fn subscribe_answers_subscribed_with_the_channel_head() {
    // GIVEN band:demo has two events
    let h = alice().await;
    let events = h.append(&channel("band:demo"), &["a", "b"]).await;

    // WHEN alice subscribes
    let reply = ask(
        &h,
        json!({"action": "subscribe", "channel": "band:demo", "ref": "r1"}),
    )
    .await;

    // THEN she is subscribed and told the head's seq and epoch, with her ref
    assert_eq!(
        reply,
        json!({"type": "subscribed", "channel": "band:demo", "seq": 2,
               "epoch": events[0].epoch, "ref": "r1"})
    );
    assert_eq!(subscribed(&h).await, [channel("band:demo")]);
}

#[tokio::test]
async fn another_bands_channel_is_forbidden_and_the_ref_is_echoed() {
    // GIVEN alice is not in band rock
    let h = alice().await;

    // WHEN she subscribes to it, or resumes it
    for action in [
        json!({"action": "subscribe", "channel": "band:rock", "ref": 7}),
        json!({"action": "resume", "channel": "band:rock", "after_seq": 0, "ref": 7}),
    ] {
        let reply = ask(&h, action).await;

        // THEN she gets a forbidden error carrying her ref, and no subscription
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], "forbidden");
        assert_eq!(reply["ref"], 7);
    }
    assert!(subscribed(&h).await.is_empty());
}

#[tokio::test]
async fn resume_replays_what_was_missed_then_answers_resumed() {
    // GIVEN band:demo has five events and alice saw the first two
    let h = alice().await;
    let events = h
        .append(&channel("band:demo"), &["a", "b", "c", "d", "e"])
        .await;
    let epoch = events[0].epoch.clone();

    // WHEN she resumes after seq 2 of that epoch
    let replies = send(
        &h,
        ALICE,
        json!({"action": "resume", "channel": "band:demo", "after_seq": 2,
               "epoch": epoch, "ref": "r"}),
    )
    .await;

    // THEN she gets events 3..=5 in order, then `resumed`, and is subscribed
    let replayed: Vec<(&str, u64)> = replies[..3]
        .iter()
        .map(|f| (f["type"].as_str().unwrap(), f["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(replayed, [("event", 3), ("event", 4), ("event", 5)]);
    assert_eq!(replies[0]["data"]["operation"], "c");
    assert_eq!(
        replies[3],
        json!({"type": "resumed", "channel": "band:demo", "seq": 5, "epoch": epoch,
               "replayed": 3, "more": false, "ref": "r"})
    );
    assert_eq!(replies.len(), 4);
    assert_eq!(subscribed(&h).await, [channel("band:demo")]);
}

#[tokio::test]
async fn a_long_replay_comes_in_bounded_parts() {
    // GIVEN five missed events and a replay bound of two per request
    let h = alice().await;
    let events = h
        .append(&channel("band:demo"), &["a", "b", "c", "d", "e"])
        .await;
    let epoch = events[0].epoch.clone();
    let mut handler = h.ws_message();
    handler.max_replay = 2;
    let mut after = 0;
    let mut got = Vec::new();
    // WHEN alice resumes, and again while `more` says so
    for _ in 0..5 {
        let frame =
            json!({"action": "resume", "channel": "band:demo", "after_seq": after, "epoch": epoch});
        let before = h.pusher.frames(&conn_id(ALICE)).len();
        handler
            .handle(ws_message_event(ALICE, &frame.to_string()))
            .await;
        let replies = h.pusher.frames(&conn_id(ALICE)).split_off(before);
        let (resumed, replayed) = replies.split_last().unwrap();
        got.extend(replayed.iter().map(|f| f["seq"].as_u64().unwrap()));
        after = resumed["seq"].as_u64().unwrap();
        if resumed["more"] == false {
            break;
        }
        assert!(replayed.len() <= 2, "bounded: {replayed:?}");
    }
    // THEN she got 1..=5 exactly once, in three requests' worth of parts
    assert_eq!(got, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn resume_from_another_epoch_is_history_lost_with_the_current_head() {
    // GIVEN band:demo's log was recreated (a new epoch) since alice last saw it
    let h = alice().await;
    let events = h.append(&channel("band:demo"), &["a", "b", "c"]).await;

    // WHEN she resumes with her old epoch
    let reply = ask(
        &h,
        json!({"action": "resume", "channel": "band:demo", "after_seq": 1,
               "epoch": "an-old-epoch", "ref": 3}),
    )
    .await;

    // THEN she is told the history is lost, and where the channel is now
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "history_lost");
    assert_eq!(reply["ref"], 3);
    assert_eq!(reply["data"]["seq"], 3);
    assert_eq!(reply["data"]["epoch"], json!(events[0].epoch));
    assert_eq!(reply["data"]["channel"], "band:demo");
}

#[tokio::test]
async fn resume_over_a_hole_in_the_log_is_history_lost() {
    // GIVEN band:demo's log lost seq 3 of 5 (what a store cut short could leave)
    let h = alice().await;
    let events = h
        .append(&channel("band:demo"), &["a", "b", "c", "d", "e"])
        .await;
    h.log.lose(3);

    // WHEN she resumes from seq 1
    let replies = send(
        &h,
        ALICE,
        json!({"action": "resume", "channel": "band:demo", "after_seq": 1,
               "epoch": events[0].epoch, "ref": 4}),
    )
    .await;

    // THEN she is told the history is lost (not "resumed" after 2, 4 and 5)
    let reply = replies.last().unwrap();
    assert_eq!(reply["type"], "error", "{replies:?}");
    assert_eq!(reply["code"], "history_lost");
    assert_eq!(reply["data"]["seq"], 5);
    assert!(replies.iter().all(|f| f["type"] != "resumed"));
}

#[tokio::test]
async fn sync_request_queues_a_job_and_acks_it() {
    // GIVEN band demo has a source
    let h = alice().await;
    h.add_source(&band("demo"), "charts", "/srv/charts").await;

    // WHEN alice asks for a sync of her band
    let reply = ask(
        &h,
        json!({"action": "sync_request", "band": "demo", "ref": "s"}),
    )
    .await;

    // THEN one client job is queued in the source's group and acknowledged
    let jobs: Vec<bandsync::model::SyncJob> = h.sync_queue.bodies();
    assert_eq!(jobs.len(), 1);
    assert_eq!(h.sync_queue.messages()[0].group, "demo/charts");
    assert_eq!(jobs[0].trigger, Trigger::Client);
    assert_eq!(jobs[0].requested_by.as_deref(), Some("alice"));
    assert_eq!(reply["type"], "ack");
    assert_eq!(reply["ref"], "s");
    assert_eq!(
        reply["data"]["queued"],
        json!([{"job": jobs[0].id, "source": "charts"}])
    );
}

#[tokio::test]
async fn sync_request_for_another_band_or_an_unknown_source_queues_nothing() {
    // GIVEN band demo has a source, band rock is not alice's
    let h = alice().await;
    h.add_source(&band("demo"), "charts", "/srv/charts").await;
    assert!(
        h.store
            .get_source(&band("demo"), &source_id("charts"))
            .await
            .unwrap()
            .is_some()
    );

    // WHEN she asks for rock, or for a source demo does not have
    let rock = ask(&h, json!({"action": "sync_request", "band": "rock"})).await;
    let unknown = ask(
        &h,
        json!({"action": "sync_request", "band": "demo", "source": "nope"}),
    )
    .await;

    // THEN both are refused and nothing is queued
    assert_eq!(rock["code"], "forbidden");
    assert_eq!(unknown["code"], "not_found");
    assert_eq!(h.sync_queue.attempts(), 0);
}

#[tokio::test]
async fn a_frame_from_an_unknown_connection_is_answered_unknown_connection() {
    // GIVEN a connection the store does not know (its $connect was lost)
    let h = alice().await;

    // WHEN it sends a subscribe
    let replies = send(
        &h,
        "ZZZZ0000=",
        json!({"action": "subscribe", "channel": "band:demo", "ref": 1}),
    )
    .await;

    // THEN it is told to reconnect, and nothing is subscribed
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["code"], "unknown_connection");
    assert_eq!(replies[0]["ref"], 1);
    assert!(
        h.store
            .subscriptions(&conn_id("ZZZZ0000="))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ping_pongs_and_unsubscribe_unsubscribes() {
    // GIVEN alice subscribed to band:demo
    let h = alice().await;
    ask(&h, json!({"action": "subscribe", "channel": "band:demo"})).await;

    // WHEN she pings, then unsubscribes
    let pong = ask(&h, json!({"action": "ping", "ref": 9})).await;
    let unsub = ask(&h, json!({"action": "unsubscribe", "channel": "band:demo"})).await;

    // THEN the pong carries the server time and her ref, and she is unsubscribed
    assert_eq!(pong, json!({"type": "pong", "ts": h.now(), "ref": 9}));
    assert_eq!(
        unsub,
        json!({"type": "unsubscribed", "channel": "band:demo"})
    );
    assert!(subscribed(&h).await.is_empty());
}

#[tokio::test]
async fn a_bad_frame_gets_a_precise_error_frame() {
    // GIVEN alice connected
    let h = alice().await;
    // WHEN she sends a frame that is not a JSON object, or an unknown action
    let replies = [
        send(&h, ALICE, json!("not an object")).await,
        send(&h, ALICE, json!({"action": "dance", "ref": "d"})).await,
    ];
    // THEN each gets one error frame with its code (and the ref when there was one)
    assert_eq!(replies[0][0]["code"], "malformed_json");
    assert_eq!(replies[1][0]["code"], "unknown_action");
    assert_eq!(replies[1][0]["ref"], "d");
}
