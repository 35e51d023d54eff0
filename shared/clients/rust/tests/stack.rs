//! The client against the real local stack, in-process: an offline queue delivered on
//! connect, live events, and a connection killed through @connections that resumes
//! without a gap or a duplicate.

use bandsync_client::{
    ChannelEvent, ChannelOptions, Client, Device, MemoryStorage, Options, State, StateChange,
    TokenError, get_token,
};
use bandsync_testkit::stack::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);

fn device(id: &str) -> Device {
    Device {
        id: id.into(),
        platform: "web".into(),
        name: id.into(),
        categories: None,
    }
}

fn create(id: &str) -> Value {
    json!({"band": "demo", "type": "setlist_entry", "id": id, "op": "create",
           "base_version": 0, "fields": {"title": format!("song {id}")}})
}

/// A client whose `getToken` always gives `token`.
fn client_with(url: &str, token: String, device_id: &str) -> Client {
    let tokens = get_token(move || {
        let t = token.clone();
        async move { Ok(t) }
    });
    Client::new(
        url,
        Options::new(tokens, MemoryStorage::new()).device(device(device_id)),
    )
    .expect("a client")
}

/// Events until `n` entity events came: every event's seq (in the order they reached
/// the app) and the entity events.
async fn entity_events(
    rx: &mut UnboundedReceiver<ChannelEvent>,
    all: &mut Vec<u64>,
    n: usize,
) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let event = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} entity events came: {got:?}", got.len()))
            .expect("the client is running");
        if let ChannelEvent::Event { seq, frame, .. } = event {
            all.push(seq);
            if frame["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("entity."))
            {
                got.push((seq, frame));
            }
        }
    }
    got
}

/// Each seq once, in order, with no gap.
fn assert_gapless(all: &[u64]) {
    assert!(!all.is_empty());
    let want: Vec<u64> = (all[0]..all[0] + all.len() as u64).collect();
    assert_eq!(all, want.as_slice(), "once each, in order, gapless");
}

/// Wait for the states to go through `want`, in order (others between allowed).
async fn wait_for_states(changes: &mut UnboundedReceiver<StateChange>, want: &[State]) {
    let mut seen = Vec::new();
    for w in want {
        loop {
            let change = tokio::time::timeout(WAIT, changes.recv())
                .await
                .unwrap_or_else(|_| panic!("never {w:?}; went through {seen:?}"))
                .expect("the client is running");
            seen.push(change.current);
            if change.current == *w {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_pushes_live_events_and_a_killed_connection_resumes_without_gap_or_duplicate() {
    let t = spawn_stack().await;
    let url = t.stack.ws_url.clone();
    let online = Arc::new(AtomicBool::new(false));
    let tokens = {
        let online = online.clone();
        let token = t.token("alice", &["demo"]);
        get_token(move || {
            let up = online.load(Ordering::SeqCst);
            let token = token.clone();
            async move {
                if up {
                    Ok(token)
                } else {
                    Err(TokenError::Other("offline".into()))
                }
            }
        })
    };
    let storage = MemoryStorage::new();
    let alice = Client::new(
        &url,
        Options::new(tokens, storage.clone()).device(device("alice-laptop")),
    )
    .expect("a client");

    // GIVEN three changes made offline: queued, stored, no verdict yet
    let mut pushes = Vec::new();
    for n in 1..=3 {
        let c = alice.clone();
        pushes.push(tokio::spawn(async move {
            c.push(create(&format!("e{n}"))).await
        }));
    }
    eventually("three queued", || async {
        (alice.pending().len() == 3).then_some(())
    })
    .await;
    let stored = storage.snapshot();
    assert_eq!(stored["mid:next"], 4);
    for mid in 1..=3 {
        assert_eq!(
            stored[&format!("outbox:{mid}")]["mid"],
            mid,
            "outbox:{mid} stored"
        );
    }
    assert_ne!(alice.state(), State::Connected);

    // WHEN it comes online and subscribes
    online.store(true, Ordering::SeqCst);
    alice.connect();
    let band = alice
        .channel("band:demo", ChannelOptions::default())
        .expect("a channel");
    let mut events = band.events();
    tokio::time::timeout(WAIT, band.subscribe())
        .await
        .expect("live in time")
        .expect("subscribed");

    // THEN each queued change gets its verdict (the three pushes were concurrent tasks,
    // so which took which mid is theirs to race for; each mid once)
    let mut mids = Vec::new();
    for push in pushes {
        let verdict = push.await.unwrap().expect("a verdict");
        assert_eq!(verdict.status(), "applied", "{:?}", verdict.result);
        assert_eq!(verdict.mid, verdict.mutation["mid"].as_u64());
        mids.extend(verdict.mid);
    }
    mids.sort_unstable();
    assert_eq!(mids, [1, 2, 3]);
    assert!(alice.pending().is_empty());
    assert!(!storage.snapshot().contains_key("outbox:1"));

    // AND a live push is answered and its event arrives
    let live = alice.push(create("e4")).await.expect("a verdict");
    assert_eq!((live.mid, live.status()), (Some(4), "applied"));
    let mut all = Vec::new();
    entity_events(&mut events, &mut all, 4).await;

    // WHEN the connection is killed (DeleteConnection) while another member changes things
    let mut changes = alice.state_changes();
    let ids = t.stack.registry.ids();
    assert_eq!(ids.len(), 1, "one connection");
    t.stack
        .registry
        .close(&ids[0])
        .expect("the connection closes");
    let bob_token = t.token("bob", &["demo"]);
    let bob = client_with(&url, bob_token, "bob-phone-1");
    for n in 1..=3 {
        let v = bob
            .push(create(&format!("b{n}")))
            .await
            .expect("bob's verdict");
        assert_eq!(v.status(), "applied");
    }
    // and alice pushes while she is away
    let away = {
        let c = alice.clone();
        tokio::spawn(async move { c.push(create("e5")).await })
    };
    wait_for_states(
        &mut changes,
        &[State::Disconnected, State::Connecting, State::Connected],
    )
    .await;
    assert_eq!(away.await.unwrap().expect("a verdict").mid, Some(5));

    // THEN alice gets what she missed and what came after: bob's three and her e5, each
    // once, and every event of the channel since she subscribed in order with no gap
    let rest = entity_events(&mut events, &mut all, 3 + 1).await;
    let ids: Vec<&str> = rest
        .iter()
        .filter_map(|(_, f)| f["data"]["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 4, "{rest:?}");
    assert_gapless(&all);
    t.drain().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(extra) = events.try_recv() {
        if let ChannelEvent::Event { seq, frame, .. } = extra {
            assert!(
                !frame["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("entity.")),
                "an entity event after all were seen: {seq} {frame}"
            );
        }
    }
    let cursor = storage.snapshot()["cursor:band:demo"].clone();
    assert!(
        cursor["seq"].as_u64().unwrap() >= *all.last().unwrap(),
        "{cursor}"
    );
    alice.close().await;
    assert_eq!(alice.state(), State::Closed);
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_app_once_and_gapless_across_a_kill() {
    let t = spawn_stack().await;
    let token = t.token("carol", &["demo"]);
    let carol = client_with(&t.stack.ws_url, token, "carol-tablet");
    let band = carol
        .channel("band:demo", ChannelOptions::default())
        .unwrap();
    let mut events = band.events();
    let mut changes = carol.state_changes();
    band.subscribe().await.expect("live");
    for n in 1..=4 {
        carol.push(create(&format!("c{n}"))).await.expect("verdict");
        if n == 2 {
            // Killed mid-stream: the next pushes go after the reconnect.
            let ids = t.stack.registry.ids();
            t.stack.registry.close(&ids[0]).expect("closed");
        }
    }
    wait_for_states(
        &mut changes,
        &[State::Connected, State::Disconnected, State::Connected],
    )
    .await;
    t.drain().await;
    // Every event of the channel since it subscribed, each once, in order, no gap.
    let mut all = Vec::new();
    entity_events(&mut events, &mut all, 4).await;
    assert_gapless(&all);
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_file_resumes_after_its_cursor_and_finishes_the_outbox() {
    use bandsync_client::FileStorage;
    let t = spawn_stack().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.json");
    let token = t.token("dave", &["demo"]);
    let make = |token: String| {
        let tokens = get_token(move || {
            let t = token.clone();
            async move { Ok(t) }
        });
        let options = Options::new(tokens, FileStorage::new(&file)).device(device("dave-laptop"));
        Client::new(&t.stack.ws_url, options).expect("a client")
    };
    // GIVEN a client that saw some events, then quit with changes still queued
    let first = make(token.clone());
    let band = first
        .channel("band:demo", ChannelOptions::default())
        .unwrap();
    let mut events = band.events();
    band.subscribe().await.expect("live");
    let v = first.push(create("d1")).await.expect("a verdict");
    assert_eq!(v.status(), "applied");
    let mut seen = Vec::new();
    entity_events(&mut events, &mut seen, 1).await;
    first.close().await;
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let cursor = stored["cursor:band:demo"]["seq"]
        .as_u64()
        .expect("a stored cursor");
    assert_eq!(cursor, *seen.last().unwrap());

    // Changes made while it is closed: queued in the file by a client that cannot connect
    let offline = {
        let tokens = get_token(|| async { Err(TokenError::Other("offline".into())) });
        let options = Options::new(tokens, FileStorage::new(&file)).device(device("dave-laptop"));
        Client::new(&t.stack.ws_url, options).expect("a client")
    };
    for n in 2..=3 {
        let c = offline.clone();
        tokio::spawn(async move { c.push(create(&format!("d{n}"))).await });
    }
    eventually("queued", || async {
        (offline.pending().len() == 2).then_some(())
    })
    .await;
    offline.close().await;
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        stored["outbox:2"]["mid"], 2,
        "the outbox is on disk: {stored}"
    );
    assert_eq!(stored["outbox:3"]["mid"], 3);
    assert_eq!(stored["mid:next"], 4);

    // WHEN a new client starts from the file
    let again = make(token);
    assert_eq!(again.pending().len(), 2, "the outbox survived");
    let mut verdicts = again.verdicts();
    let band = again
        .channel("band:demo", ChannelOptions::default())
        .unwrap();
    let mut events = band.events();
    band.subscribe().await.expect("live");
    // THEN the queued changes are applied once each (only the verdict stream is left)
    for mid in 2..=3 {
        let v = tokio::time::timeout(WAIT, verdicts.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (v.mid, v.status()),
            (Some(mid), "applied"),
            "{:?}",
            v.result
        );
    }
    // AND the events continue right after the stored cursor: none repeated, none missed
    let mut after = Vec::new();
    entity_events(&mut events, &mut after, 2).await;
    assert_eq!(after[0], cursor + 1, "{after:?}");
    assert_gapless(&after);
    again.close().await;
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        stored.get("outbox:2").is_none() && stored.get("outbox:3").is_none(),
        "{stored}"
    );
}
