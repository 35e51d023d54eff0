//! Presence end to end: real WebSocket clients connect and go, a member of the band
//! watches `band:demo`, and the stack's sweep publishes `presence.left` once the
//! debounce has run out (and not at all for a quick reconnect).

use bandsync::ports::PresenceStore;
use bandsync_testkit::stack::*;
use serde_json::Value;
use std::time::Duration;

const DEBOUNCE: Duration = Duration::from_millis(1500);

/// The presence events about `member` among `frames`: their names.
fn presence_of(frames: &[Value], member: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "event" && f["data"]["member"] == member)
        .filter_map(|f| f["event"].as_str())
        .filter(|n| n.starts_with("presence."))
        .map(str::to_owned)
        .collect()
}

/// Who `c` is told is online in demo: (member, devices).
async fn online(c: &mut Client) -> Vec<(String, u64)> {
    let reply = c.presence("demo").await;
    reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["member"].as_str().unwrap().to_owned(),
                m["devices"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn presence_is_debounced_and_queryable() {
    let t = spawn_stack_with(|c| {
        c.presence_debounce = DEBOUNCE;
        c.presence_sweep_every = Duration::from_millis(100);
    })
    .await;
    // GIVEN alice watching the band
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;

    // WHEN bob's phone connects: alice sees him join
    let phone = t.client("bob", &["demo"]).await;
    let seen = alice
        .events_until(|ev| presence_of(ev, "bob") == ["presence.joined"])
        .await;
    assert_eq!(seen.last().unwrap()["data"]["devices"], 1);
    // and his tablet connecting too publishes nothing
    let tablet = t.client("bob", &["demo"]).await;
    t.drain().await;
    assert!(presence_of(&alice.frames_until_pong().await, "bob").is_empty());
    assert_eq!(
        online(&mut alice).await,
        [("alice".to_owned(), 1), ("bob".to_owned(), 2)]
    );

    // WHEN both his sockets drop and one comes straight back (a network switch)
    tablet.close().await;
    phone.close().await;
    let phone = t.client("bob", &["demo"]).await;
    // THEN once the sweep has decided his departure (after the debounce: it forgets the
    // mark whether or not he left), alice saw no left / joined pair
    eventually("the sweep settles bob's departure mark", || async {
        let far = chrono::Utc::now() + chrono::Duration::hours(1);
        let marks = t.stack.store.leaving(far, 10).await.unwrap();
        marks.is_empty().then_some(())
    })
    .await;
    t.drain().await;
    assert!(presence_of(&alice.frames_until_pong().await, "bob").is_empty());
    assert_eq!(
        online(&mut alice).await,
        [("alice".to_owned(), 1), ("bob".to_owned(), 1)]
    );

    // WHEN he really goes: presence.left, after the debounce
    let gone = std::time::Instant::now();
    phone.close().await;
    let seen = alice
        .events_until(|ev| presence_of(ev, "bob") == ["presence.left"])
        .await;
    assert!(
        gone.elapsed() >= DEBOUNCE,
        "left after {:?}",
        gone.elapsed()
    );
    assert_eq!(seen.last().unwrap()["data"]["devices"], 0);
    // and he is no longer listed, over HTTP either
    let (status, body) = t
        .http()
        .get(
            "/sync/presence?band=demo",
            Some(&t.token("alice", &["demo"])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "presence");
    let members: Vec<&str> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["member"].as_str())
        .collect();
    assert_eq!(members, ["alice"]);
    let (status, _) = t
        .http()
        .get(
            "/sync/presence?band=jazz",
            Some(&t.token("alice", &["demo"])),
        )
        .await;
    assert_eq!(status, 403);
}
