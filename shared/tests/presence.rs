//! Presence through the handlers: $connect / $disconnect keep who is online, the sweep
//! publishes `presence.left` once the debounce (a fake clock here) has run out, and the
//! `presence` action and `GET /sync/presence` answer who is online now.

use bandsync::ports::ChannelLog;
use bandsync::presence::{DEFAULT_DEBOUNCE, Presence};
use bandsync::wiring;
use bandsync_testkit::*;
use chrono::TimeDelta;
use serde_json::{Value, json};

/// The events of `band:demo` so far: (name, data).
async fn events(h: &Harness) -> Vec<(String, Value)> {
    let stored = h
        .store
        .read_after(&channel("band:demo"), 0, 1000)
        .await
        .unwrap();
    stored
        .into_iter()
        .map(|e| (e.event().to_owned(), e.data().clone()))
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

async fn connect(h: &Harness, conn: &str, user: &str) {
    let token = h.token(user, &["demo"]);
    let response = h
        .ws_connect()
        .handle(ws_connect_event(conn, Some(&token), &[]))
        .await;
    assert_eq!(response.status(), 200);
}

async fn disconnect(h: &Harness, conn: &str) {
    let response = h.ws_disconnect().handle(ws_disconnect_event(conn)).await;
    assert_eq!(response.status(), 200);
}

fn presence(h: &Harness) -> Presence {
    wiring::presence(&h.ports()).unwrap()
}

fn wait(h: &Harness, secs: i64) {
    h.clock.advance(TimeDelta::seconds(secs));
}

#[tokio::test]
async fn the_first_device_joins_and_the_second_publishes_nothing() {
    // GIVEN ringo's phone connecting (twice: a redelivered $connect)
    let h = Harness::new();
    connect(&h, "phone1234=", "ringo").await;
    connect(&h, "phone1234=", "ringo").await;
    // THEN one presence.joined, for his first device, queued for broadcast
    let seen = events(&h).await;
    assert_eq!(names(&seen), ["presence.joined"]);
    assert_eq!(
        seen[0].1,
        json!({"member": "ringo", "devices": 1, "since": h.now(), "at": h.now()})
    );
    // (queued again by the repeat, under the same dedup id: the queue keeps one)
    let mut ids: Vec<String> = h
        .broadcast_queue
        .messages()
        .into_iter()
        .map(|m| m.dedup_id)
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // WHEN his iPad connects too, later
    wait(&h, 30);
    connect(&h, "ipad5678=", "ringo").await;
    // THEN nothing more: the others knew he was online
    assert_eq!(names(&events(&h).await), ["presence.joined"]);
    // and his iPad going leaves him online with his phone
    disconnect(&h, "ipad5678=").await;
    wait(&h, 60);
    assert_eq!(presence(&h).sweep().await.unwrap(), 0);
    assert_eq!(names(&events(&h).await), ["presence.joined"]);
}

#[tokio::test]
async fn a_reconnect_within_the_debounce_publishes_no_left_joined_pair() {
    // GIVEN ringo online with one phone
    let h = Harness::new();
    connect(&h, "phone1234=", "ringo").await;
    // WHEN its socket drops and comes back (a new connection id) 4 s later
    disconnect(&h, "phone1234=").await;
    wait(&h, 4);
    assert_eq!(presence(&h).sweep().await.unwrap(), 0, "not due yet");
    connect(&h, "phone9999=", "ringo").await;
    // THEN long after the debounce the others saw only his first join
    wait(&h, 60);
    assert_eq!(presence(&h).sweep().await.unwrap(), 0);
    assert_eq!(names(&events(&h).await), ["presence.joined"]);
}

#[tokio::test]
async fn a_real_disconnect_publishes_left_after_the_debounce_once() {
    let h = Harness::new();
    let since = h.now();
    connect(&h, "phone1234=", "ringo").await;
    wait(&h, 100);
    let gone_at = h.now();
    // WHEN his only device goes (the $disconnect delivered twice)
    disconnect(&h, "phone1234=").await;
    disconnect(&h, "phone1234=").await;
    // THEN nothing within the debounce
    wait(&h, DEFAULT_DEBOUNCE.as_secs() as i64 - 1);
    assert_eq!(presence(&h).sweep().await.unwrap(), 0);
    assert_eq!(names(&events(&h).await), ["presence.joined"]);
    // and presence.left once it has run out, once however often the sweep runs
    wait(&h, 2);
    assert_eq!(presence(&h).sweep().await.unwrap(), 1);
    assert_eq!(presence(&h).sweep().await.unwrap(), 0);
    let seen = events(&h).await;
    assert_eq!(names(&seen), ["presence.joined", "presence.left"]);
    assert_eq!(
        seen[1].1,
        json!({"member": "ringo", "devices": 0, "since": since, "at": gone_at})
    );
    // WHEN he connects again: a new session
    connect(&h, "phone5555=", "ringo").await;
    assert_eq!(
        names(&events(&h).await),
        ["presence.joined", "presence.left", "presence.joined"]
    );
}

#[tokio::test]
async fn a_sweep_that_could_not_publish_publishes_on_the_next_round() {
    let h = Harness::new();
    connect(&h, "phone1234=", "ringo").await;
    disconnect(&h, "phone1234=").await;
    wait(&h, 11);
    // GIVEN the broadcast queue failing once
    h.broadcast_queue.fail_next_send();
    assert!(presence(&h).sweep().await.is_err());
    // THEN the next sweep publishes (the log kept the event the failed one appended:
    // the same id, one copy) and it is queued
    assert_eq!(presence(&h).sweep().await.unwrap(), 1);
    let seen = events(&h).await;
    assert_eq!(names(&seen), ["presence.joined", "presence.left"]);
    let queued = h.broadcast_queue.messages();
    assert!(queued.last().unwrap().body.contains("presence.left"));
}

/// Ask `presence` over the WebSocket from `conn`; the reply frame.
async fn ask(h: &Harness, conn: &str, frame: Value) -> Value {
    h.ws_message()
        .handle(ws_message_event(conn, &frame.to_string()))
        .await;
    h.pusher.frames(&conn_id(conn)).pop().expect("a reply")
}

#[tokio::test]
async fn the_query_lists_who_is_online_to_members_only() {
    // GIVEN ringo on two devices, paul on one who has just gone (within the debounce),
    // and john, who is in another band
    let h = Harness::new();
    let since = h.now();
    connect(&h, "phone1234=", "ringo").await;
    connect(&h, "ipad5678=", "ringo").await;
    connect(&h, "paul1234=", "paul").await;
    disconnect(&h, "paul1234=").await;
    let john = h.token("john", &["jazz"]);
    h.ws_connect()
        .handle(ws_connect_event("john1234=", Some(&john), &[]))
        .await;

    // WHEN ringo asks over the WebSocket
    let reply = ask(
        &h,
        "phone1234=",
        json!({"action": "presence", "band": "demo", "ref": 7}),
    )
    .await;
    // THEN both members, paul with no device until his debounce runs out
    let expected = json!({"type": "presence", "band": "demo", "ref": 7, "members": [
        {"member": "paul", "devices": 0, "since": since},
        {"member": "ringo", "devices": 2, "since": since},
    ]});
    assert_eq!(reply, expected);
    // and john may not ask about demo
    let refused = ask(
        &h,
        "john1234=",
        json!({"action": "presence", "band": "demo"}),
    )
    .await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    // a malformed band is refused precisely
    let bad = ask(
        &h,
        "phone1234=",
        json!({"action": "presence", "band": "no spaces"}),
    )
    .await;
    assert_eq!(bad["code"], "invalid_request", "{bad}");

    // WHEN paul's debounce runs out: he is no longer listed
    wait(&h, 11);
    presence(&h).sweep().await.unwrap();
    // THEN GET /sync/presence answers the same body as the frame
    let bearer = h.bearer("ringo", &["demo"]);
    let response = h
        .api()
        .handle(http_event(
            "GET",
            "/sync/presence?band=demo",
            &[("Authorization", &bearer)],
            None,
        ))
        .await;
    assert_eq!(response.status_code, 200);
    let body: Value = match response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("no body: {other:?}"),
    };
    assert_eq!(
        body,
        json!({"type": "presence", "band": "demo", "members": [
            {"member": "ringo", "devices": 2, "since": since},
        ]})
    );
    let forbidden = h
        .api()
        .handle(http_event(
            "GET",
            "/sync/presence?band=jazz",
            &[("Authorization", &bearer)],
            None,
        ))
        .await;
    assert_eq!(forbidden.status_code, 403);
    let missing = h
        .api()
        .handle(http_event(
            "GET",
            "/sync/presence",
            &[("Authorization", &bearer)],
            None,
        ))
        .await;
    assert_eq!(missing.status_code, 400);
}

#[tokio::test]
async fn a_connection_the_broadcaster_finds_gone_is_uncounted() {
    use bandsync::broadcast::BroadcastMessage;
    use bandsync::ports::{ConnectionStore, PresenceStore};
    // GIVEN ringo's only connection, subscribed, which API Gateway says is gone (its
    // $disconnect lost)
    let h = Harness::new();
    connect(&h, "phone1234=", "ringo").await;
    let demo = channel("band:demo");
    h.store
        .subscribe(&conn_id("phone1234="), &demo, h.now())
        .await
        .unwrap();
    h.pusher.set(&conn_id("phone1234="), PushBehaviour::Gone);
    // WHEN an event is broadcast to it
    let appended = h.append(&demo, &["a"]).await;
    let report = h
        .broadcaster()
        .deliver(&BroadcastMessage {
            channel: demo,
            events: appended,
        })
        .await
        .unwrap();
    assert_eq!(report.gone, 1);
    // THEN ringo is leaving, and after the debounce he has left
    let present = h.store.present(&band("demo")).await.unwrap();
    assert_eq!(
        (present[0].devices, present[0].leaving_since),
        (0, Some(h.now()))
    );
    wait(&h, 11);
    assert_eq!(presence(&h).sweep().await.unwrap(), 1);
    let seen = events(&h).await;
    assert_eq!(names(&seen).last(), Some(&"presence.left"));
}
