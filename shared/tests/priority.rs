//! Priorities: a source's bulk sync appends in windows behind the broadcaster, so a
//! member's edit published meanwhile waits behind at most a window and a message of bulk
//! events, and the channel's order stays one gapless log.

use bandsync::model::{ChannelName, NewEvent};
use bandsync::ports::ChannelLog;
use bandsync::publish::{Backpressure, EVENTS_PER_MESSAGE};
use bandsync::wire::events::EventKind;
use bandsync_testkit::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const BULK: usize = 2_000;
const WINDOW: u64 = 100;

fn file(i: usize) -> NewEvent {
    let name = format!("f{i}.pdf");
    let data = json!({"source": "drive", "file_id": name, "path": format!("/{name}"),
        "name": name, "size": 1, "hash": "h", "modified_ms": 0});
    let kind = EventKind::from_parts("file.created", &data).unwrap();
    NewEvent::new(format!("file-{i}"), chrono::Utc::now(), kind)
}

fn edit() -> NewEvent {
    let data = json!({"type": "setlist_entry", "id": "e1", "version": 2,
        "fields": {"title": "So What"}, "member": "alice", "device": "alice-phone", "mid": 2});
    let kind = EventKind::from_parts("entity.updated", &data).unwrap();
    NewEvent::new("m:alice-phone:2", chrono::Utc::now(), kind)
}

/// Bulk-publish BULK file events (with `backpressure` or none) while a stand-in
/// broadcaster delivers 10 events every 2 ms; once 300 are delivered, publish an edit
/// at once. How many undelivered bulk events were ahead of the edit in the log (read
/// just after it was appended).
async fn backlog_ahead_of_an_edit(backpressure: Option<Backpressure>) -> u64 {
    let h = Harness::new();
    let channel = ChannelName::parse("band:demo").unwrap();
    let store = h.store.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let broadcaster = tokio::spawn({
        let (store, channel, stop) = (store.clone(), channel.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let head = store.head(&channel).await.unwrap().map_or(0, |h| h.seq);
                let delivered = store.delivered(&channel).await.unwrap();
                store
                    .mark_delivered(&channel, head.min(delivered + 10))
                    .await
                    .unwrap();
            }
        }
    });
    let bulk = match backpressure {
        Some(bp) => h.publisher().with_backpressure(bp),
        None => h.publisher(),
    };
    let sync = tokio::spawn({
        let channel = channel.clone();
        async move {
            let events: Vec<NewEvent> = (0..BULK).map(file).collect();
            bulk.publish(&channel, &events).await.unwrap();
        }
    });
    eventually("300 events delivered", || async {
        (store.delivered(&channel).await.unwrap() >= 300).then_some(())
    })
    .await;
    // The edit's publisher is the push service's: it never waits. The watermark read
    // right after it is a lower bound of the backlog the edit met, never an overcount.
    let edit = h.publisher().publish(&channel, &[edit()]).await.unwrap();
    let delivered = store.delivered(&channel).await.unwrap();
    let ahead = (edit[0].seq - 1).saturating_sub(delivered);
    sync.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    broadcaster.await.unwrap();
    // One order: every seq once, the edit among the files.
    let log = h.log(&channel).await;
    assert_eq!(log.len(), BULK + 1);
    assert!(log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    ahead
}

#[tokio::test]
async fn an_edit_waits_behind_at_most_a_window_of_bulk_events() {
    let bp = Backpressure {
        window: WINDOW,
        poll: Duration::from_millis(1),
        stall: Duration::from_secs(5),
    };
    let with = backlog_ahead_of_an_edit(Some(bp)).await;
    // A window, the message being appended, and what the stand-in delivered meanwhile.
    assert!(
        with <= WINDOW + EVENTS_PER_MESSAGE as u64,
        "{with} bulk events ahead of the edit"
    );
    let without = backlog_ahead_of_an_edit(None).await;
    println!("bulk events ahead of an edit: {with} with backpressure, {without} without");
    assert!(
        without > 1_000,
        "without backpressure the whole sync is ahead: {without}"
    );
}

#[tokio::test]
async fn a_stalled_broadcaster_costs_one_stall_not_one_per_window() {
    // GIVEN no broadcaster at all, and a publisher that gives up after 100 ms of no
    // movement
    let h = Harness::new();
    let channel = ChannelName::parse("band:demo").unwrap();
    let sleeper = Arc::new(RecordingSleeper::default());
    let publisher = h
        .publisher()
        .with_backpressure(Backpressure {
            window: WINDOW,
            poll: Duration::from_millis(5),
            stall: Duration::from_millis(100),
        })
        .with_sleeper(sleeper.clone());
    // WHEN 1,000 bulk events (20 messages) are published
    let events: Vec<NewEvent> = (0..1_000).map(file).collect();
    let stored = publisher.publish(&channel, &events).await.unwrap();
    // THEN all are in the log, after one stall of 20 polls (not 18 stalls)
    assert_eq!(stored.len(), 1_000);
    let polls = sleeper.delays();
    assert_eq!(polls.len(), 20, "{polls:?}");
    assert_eq!(polls.iter().sum::<Duration>(), Duration::from_millis(100));
}
