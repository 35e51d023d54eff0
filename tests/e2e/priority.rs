//! Priorities end to end: a member's edit reaches the other members while a bulk folder
//! sync is still being delivered, behind at most a window of it, in one gapless order.

use bandsync::model::ChannelName;
use bandsync::ports::ChannelLog;
use bandsync::publish::{Backpressure, EVENTS_PER_MESSAGE};
use bandsync_testkit::stack::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::time::{Duration, Instant};

const FILES: usize = 2_000;
const LISTENERS: usize = 40;

#[tokio::test]
async fn an_edit_overtakes_a_bulk_sync_backlog_and_order_stays_gapless() {
    let t = spawn_stack().await;
    let mut bob = t.client("bob", &["demo"]).await;
    let subscribed = bob.subscribe("band:demo").await;
    let start = subscribed["seq"].as_u64().unwrap() + 1;
    let mut alice = t.client("alice", &["demo"]).await;
    alice
        .register_device("alice-phone", Platform::Ios, None)
        .await;

    // Forty more members' sockets, read all along: fan-out, not the sync, is then the
    // slow side, so without backpressure a backlog would build.
    let mut readers = Vec::new();
    for i in 0..LISTENERS {
        let mut c = t.client(&format!("m{i}"), &["demo"]).await;
        c.subscribe("band:demo").await;
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while n < FILES {
                match c.next_event(deadline).await {
                    Some(e) if e["event"] == "file.created" => n += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            n
        }));
    }
    // The backlog a new event meets, sampled all along: the watermark is read before
    // the head, so a sample never undercounts.
    let (stop, max_lag) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = tokio::spawn({
        let (store, stop, max_lag) = (t.stack.store.clone(), stop.clone(), max_lag.clone());
        let channel = ChannelName::parse("band:demo").unwrap();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let delivered = store.delivered(&channel).await.unwrap();
                let head = store.head(&channel).await.unwrap().map_or(0, |h| h.seq);
                max_lag.fetch_max(head.saturating_sub(delivered), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });

    // GIVEN a folder sync of 2,000 files under way, bob already receiving it
    for i in 0..FILES {
        put(t.folder().join(format!("bulk-{i:04}.pdf")), format!("{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events = Vec::new();
    let files = |ev: &[serde_json::Value]| {
        ev.iter()
            .filter(|e| e["event"].as_str().is_some_and(|n| n.starts_with("file.")))
            .count()
    };
    while files(&events) < 300 {
        events.push(bob.next_event(deadline).await.expect("bulk events"));
    }
    let before_push = files(&events);

    // WHEN alice pushes an edit
    let edit = json!({"mid": 1, "type": "setlist_entry", "id": "e1", "op": "create",
        "base_version": 0, "fields": {"title": "So What"}, "ts": "2026-12-01T20:00:00Z"});
    alice
        .push("demo", "alice-phone", json!(1), vec![edit])
        .await;

    // THEN bob gets it while the sync is still being delivered: most of the sync comes
    // after it
    loop {
        let e = bob.next_event(deadline).await.expect("the edit");
        let edit = e["event"] == "entity.created";
        events.push(e);
        if edit {
            break;
        }
    }
    let ahead = files(&events) - before_push;
    while files(&events) < FILES {
        events.push(
            bob.next_event(deadline)
                .await
                .expect("the rest of the sync"),
        );
    }
    let after_edit = FILES - before_push - ahead;
    assert!(
        after_edit >= FILES / 2,
        "only {after_edit} came after the edit"
    );
    // AND at no time was more than a window and a message (and the edit) undelivered:
    // that is all an edit can wait behind
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let max_lag = max_lag.load(Ordering::Relaxed);
    let bound = Backpressure::default().window + EVENTS_PER_MESSAGE as u64 + 1;
    assert!(
        max_lag <= bound,
        "{max_lag} undelivered events (bound {bound})"
    );
    println!(
        "backlog at most {max_lag} (bound {bound}); file events bob got between the push \
         and the edit: {ahead}; after the edit: {after_edit}"
    );
    for r in readers {
        assert_eq!(r.await.unwrap(), FILES, "every listener got the whole sync");
    }
    // AND the channel is one gapless order
    assert_gapless(&events, start);
    let verdict = alice.expect("push_result").await;
    assert_eq!(verdict["results"][0]["status"], "applied");
}
