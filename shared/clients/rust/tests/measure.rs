//! Figures for the client (issue 10): outbox replay of 1,000 mutations (time to every
//! verdict) and reconnect-to-live after 1,000 missed events (p50/p99), against the
//! local stack in-process. Ignored by default (timing, not correctness):
//! `cargo test -p bandsync-client --test measure -- --ignored --nocapture`.

use bandsync_client::storage::Storage;
use bandsync_client::{
    ChannelEvent, ChannelOptions, Client, Device, MemoryStorage, Options, get_token,
};
use bandsync_testkit::stack::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn client(url: &str, token: String, device: &str, storage: MemoryStorage) -> Client {
    let tokens = get_token(move || {
        let t = token.clone();
        async move { Ok(t) }
    });
    let device = Device {
        id: device.into(),
        platform: "web".into(),
        name: device.into(),
        categories: None,
    };
    Client::new(url, Options::new(tokens, storage).device(device)).expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn outbox_replay_and_reconnect_to_live() {
    let t = spawn_stack().await;
    let url = t.stack.ws_url.clone();
    // alice follows the band, then goes away with her cursor stored
    let stored = MemoryStorage::new();
    let alice = client(
        &url,
        t.token("alice", &["demo"]),
        "alice-laptop",
        stored.clone(),
    );
    let band = alice
        .channel("band:demo", ChannelOptions::default())
        .unwrap();
    band.subscribe().await.expect("live");
    alice.close().await;
    let cursor = stored.snapshot();

    // bob's 1,000 queued mutations, replayed on connect
    let bob = client(
        &url,
        t.token("bob", &["demo"]),
        "bob-phone-1",
        MemoryStorage::new(),
    );
    let mut verdicts = bob.verdicts();
    let started = Instant::now();
    for n in 0..1000 {
        let c = bob.clone();
        tokio::spawn(async move {
            c.push(
                json!({"band": "demo", "type": "setlist_entry", "id": format!("m{n}"),
                          "op": "create", "base_version": 0, "fields": {"title": "x"}}),
            )
            .await
        });
    }
    for _ in 0..1000 {
        let v = tokio::time::timeout(Duration::from_secs(120), verdicts.recv())
            .await
            .expect("verdicts in time")
            .expect("running");
        assert_eq!(v.status(), "applied");
    }
    let replay = started.elapsed();
    bob.close().await;
    t.drain().await;

    // alice comes back 20 times from the same stored cursor: >= 1,000 missed events each
    let mut times = Vec::new();
    let mut missed = 0;
    for _ in 0..20 {
        let mut storage = MemoryStorage::new();
        let changes: Vec<_> = cursor
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        storage.apply(&changes).unwrap();
        let start = Instant::now();
        let alice = client(&url, t.token("alice", &["demo"]), "alice-laptop", storage);
        let band = alice
            .channel("band:demo", ChannelOptions::default())
            .unwrap();
        let mut events = band.events();
        band.subscribe().await.expect("live");
        times.push(start.elapsed());
        missed = 0;
        while let Ok(e) = events.try_recv() {
            match e {
                ChannelEvent::Event { .. } => missed += 1,
                ChannelEvent::Presence { .. } => {}
                reset => panic!("{reset:?} (stored {cursor:?})"),
            }
        }
        assert!(missed >= 1000, "{missed} events replayed");
        alice.close().await;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "outbox replay of 1,000 mutations: {:.0} ms to every verdict",
        ms(replay)
    );
    eprintln!(
        "reconnect to live after {missed} missed events: p50 {:.0} ms, p99 {:.0} ms (20 runs)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}
