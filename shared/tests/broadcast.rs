use bandsync::broadcast::*;
use bandsync::model::ChannelName;
use bandsync::ports::{ChannelLog, ConnectionStore};
use bandsync_testkit::*;
use serde_json::{Value, json};

/// Connections `c1`, `c2`, ... subscribed to `band:demo` and behaving as given, and a
/// message of three events of that channel (as the log gave them their seqs).
async fn subscribers(h: &Harness, behaviours: &[PushBehaviour]) -> BroadcastMessage {
    let demo = channel("band:demo");
    for (i, b) in behaviours.iter().enumerate() {
        let id = h
            .add_connection(&format!("c{}", i + 1), "alice", &["demo"])
            .await;
        h.store.subscribe(&id, &demo, h.now()).await.unwrap();
        h.pusher.set(&id, *b);
    }
    let events = h.append(&demo, &["a", "b", "c"]).await;
    BroadcastMessage {
        channel: demo,
        events,
    }
}

/// The event frames a connection received, as (seq, the harness's label).
fn received(h: &Harness, conn: &str) -> Vec<(u64, String)> {
    h.pusher
        .frames(&conn_id(conn))
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "event", "{f}");
            assert_eq!(f["channel"], "band:demo");
            (
                f["seq"].as_u64().unwrap(),
                f["data"]["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all_three() -> Vec<(u64, String)> {
    [(1, "a"), (2, "b"), (3, "c")]
        .map(|(s, e)| (s, e.to_owned()))
        .to_vec()
}

#[tokio::test]
async fn messages_that_arrive_out_of_seq_order_are_pushed_in_seq_order_once() {
    // GIVEN a subscriber, and seqs 1..3 in the log, published as two messages that
    // reach the queue in the wrong order (two publishers raced between append and send)
    let h = Harness::new();
    let all = subscribers(&h, &[PushBehaviour::Deliver]).await;
    let (early, late) = (
        BroadcastMessage {
            channel: all.channel.clone(),
            events: all.events[..1].to_vec(),
        },
        BroadcastMessage {
            channel: all.channel.clone(),
            events: all.events[1..].to_vec(),
        },
    );
    // WHEN the later message is delivered first, then the earlier one, then a repeat
    let b = h.broadcaster();
    assert_eq!(
        b.deliver(&late).await.unwrap().delivered,
        3,
        "the gap is filled from the log"
    );
    assert_eq!(
        b.deliver(&early).await.unwrap(),
        DeliveryReport::default(),
        "nothing new"
    );
    assert_eq!(
        b.deliver(&late).await.unwrap(),
        DeliveryReport::default(),
        "a repeat is a no-op"
    );
    // THEN the subscriber got 1, 2, 3 exactly once, in order
    assert_eq!(received(&h, "c1"), all_three());
    assert_eq!(h.store.delivered(&all.channel).await.unwrap(), 3);
}

#[tokio::test]
async fn every_subscriber_gets_every_frame_in_order() {
    // GIVEN three subscribers of band:demo and a connection on another channel
    let h = Harness::new();
    let message = subscribers(&h, &[PushBehaviour::Deliver; 3]).await;
    let outsider = h.add_connection("x1", "bob", &["rock"]).await;
    h.store
        .subscribe(&outsider, &channel("band:rock"), h.now())
        .await
        .unwrap();

    // WHEN the message is delivered
    let report = h.broadcaster().deliver(&message).await.unwrap();

    // THEN each subscriber got the three events in seq order, the outsider nothing
    for c in ["c1", "c2", "c3"] {
        assert_eq!(received(&h, c), all_three(), "{c}");
    }
    assert!(h.pusher.frames(&outsider).is_empty());
    let frame: Value = h.pusher.frames(&conn_id("c1")).remove(0);
    assert_eq!(frame["epoch"], json!(message.events[0].epoch));
    assert_eq!(
        frame["data"],
        json!({"done": 0, "operation": "a", "total": 3})
    );
    assert_eq!(
        report,
        DeliveryReport {
            connections: 3,
            delivered: 9,
            gone: 0,
            failed: 0,
            skipped: 0,
        }
    );
}

#[tokio::test]
async fn a_gone_connection_is_removed_with_its_subscriptions() {
    // GIVEN a subscriber that API Gateway says is gone, also subscribed elsewhere
    let h = Harness::new();
    let message = subscribers(&h, &[PushBehaviour::Deliver, PushBehaviour::Gone]).await;
    let gone = conn_id("c2");
    h.store
        .subscribe(&gone, &ChannelName::System, h.now())
        .await
        .unwrap();

    // WHEN the message is delivered
    let report = h.broadcaster().deliver(&message).await.unwrap();

    // THEN the gone connection and all its subscriptions are deleted
    assert_eq!((report.gone, report.failed), (1, 0));
    assert_eq!(h.store.get_connection(&gone).await.unwrap(), None);
    assert!(h.store.subscriptions(&gone).await.unwrap().is_empty());
    assert_eq!(
        h.store.subscribers(&message.channel).await.unwrap(),
        [conn_id("c1")]
    );
    // AND the live one got everything
    assert_eq!(received(&h, "c1"), all_three());
    assert_eq!(report.delivered, 3);
}

#[tokio::test]
async fn a_post_that_fails_twice_is_retried_and_delivered() {
    // GIVEN a subscriber whose first two posts fail (throttled), then succeed
    let h = Harness::new();
    let message = subscribers(&h, &[PushBehaviour::ErrFirst(2)]).await;

    // WHEN the message is delivered (3 attempts per post, no backoff in tests)
    let report = h.broadcaster().deliver(&message).await.unwrap();

    // THEN it got every frame, in order, after two retries of the first
    assert_eq!(received(&h, "c1"), all_three());
    assert_eq!(h.pusher.attempts(&conn_id("c1")), 2 + 3);
    assert_eq!((report.delivered, report.failed, report.gone), (3, 0, 0));
    assert!(
        h.store
            .get_connection(&conn_id("c1"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_post_that_always_fails_is_counted_and_the_others_still_get_it() {
    // GIVEN one subscriber whose posts always fail between two healthy ones
    let h = Harness::new();
    let message = subscribers(
        &h,
        &[
            PushBehaviour::Deliver,
            PushBehaviour::ErrFirst(u32::MAX),
            PushBehaviour::Deliver,
        ],
    )
    .await;
    let broadcaster = h.broadcaster();

    // WHEN the message is delivered
    let report = broadcaster.deliver(&message).await.unwrap();

    // THEN the failing one is counted failed after its attempts, and kept (not gone)
    assert_eq!(report.failed, 1);
    assert_eq!(report.gone, 0);
    let failing = conn_id("c2");
    assert_eq!(h.pusher.attempts(&failing), broadcaster.attempts);
    assert!(h.pusher.frames(&failing).is_empty());
    assert!(h.store.get_connection(&failing).await.unwrap().is_some());
    // AND the others got every frame
    assert_eq!(received(&h, "c1"), all_three());
    assert_eq!(received(&h, "c3"), all_three());
    assert_eq!(report.delivered, 6);
}

#[tokio::test]
async fn handle_sqs_acknowledges_a_malformed_message_and_delivers_the_rest() {
    // GIVEN a FIFO batch: a good message, a malformed one, another good one
    let h = Harness::new();
    let message = subscribers(&h, &[PushBehaviour::Deliver]).await;
    let first = BroadcastMessage {
        channel: message.channel.clone(),
        events: message.events[..1].to_vec(),
    };
    let rest = BroadcastMessage {
        channel: message.channel.clone(),
        events: message.events[1..].to_vec(),
    };
    let (first, rest) = (
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&rest).unwrap(),
    );
    let event = sqs_event(
        "band:demo",
        &[("m1", &first), ("m2", "{\"channel\":"), ("m3", &rest)],
    );

    // WHEN the broadcaster handles it
    let response = h.broadcaster().handle_sqs(event, None).await;

    // THEN nothing comes back: the malformed message is acknowledged (logged, counted)
    assert!(failed_ids(&response).is_empty());
    // AND the good ones were delivered, in order
    assert_eq!(received(&h, "c1"), all_three());
}

#[tokio::test]
async fn retries_wait_through_the_sleeper_in_doubling_full_jitter_windows() {
    use bandsync_testkit::RecordingSleeper;
    use std::sync::Arc;
    use std::time::Duration;
    // GIVEN a subscriber whose first two posts fail, and a broadcaster that backs off
    // from 50 ms with its waits recorded instead of taken
    let h = Harness::new();
    let message = subscribers(&h, &[PushBehaviour::ErrFirst(2)]).await;
    let sleeper = Arc::new(RecordingSleeper::default());
    let mut broadcaster = h.broadcaster().with_sleeper(sleeper.clone());
    broadcaster.backoff = Duration::from_millis(50);

    // WHEN the message is delivered
    let report = broadcaster.deliver(&message).await.unwrap();

    // THEN it is delivered after two waits, drawn from windows of 50 ms and then 100 ms
    assert_eq!(report.delivered, 3);
    let waits = sleeper.delays();
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(
        waits[0] < Duration::from_millis(50) && waits[1] < Duration::from_millis(100),
        "{waits:?}"
    );
}

/// A `file.created` of `name`, or a `setlist.updated`, as sources publish them.
fn kind(name: &str) -> bandsync::wire::events::EventKind {
    use bandsync::wire::events::EventKind;
    if name == "setlist" {
        let data = json!({"source": "sheet", "spreadsheet_id": "s1", "range": "A:C",
            "rows": 1, "columns": ["title"], "initial": false,
            "added": [], "removed": [], "moved": [], "edited": []});
        return EventKind::from_parts("setlist.updated", &data).unwrap();
    }
    let data = json!({"source": "drive", "file_id": name, "path": format!("/{name}"),
        "name": name, "size": 1, "hash": "h", "modified_ms": 0});
    EventKind::from_parts("file.created", &data).unwrap()
}

#[tokio::test]
async fn a_setlist_only_device_gets_setlists_and_skipped_ranges_for_the_rest() {
    use bandsync::model::{DeviceBinding, DeviceId, NewEvent};
    // GIVEN a connection bound to a setlist-only device and one with no device
    let h = Harness::new();
    let demo = channel("band:demo");
    let phone = h.add_connection("phone", "alice", &["demo"]).await;
    let laptop = h.add_connection("laptop", "bob", &["demo"]).await;
    for c in [&phone, &laptop] {
        h.store.subscribe(c, &demo, h.now()).await.unwrap();
    }
    let binding = DeviceBinding {
        device: DeviceId::parse("alice-phone").unwrap(),
        categories: vec!["setlists".into()],
    };
    assert!(h.store.bind_device(&phone, &binding).await.unwrap());
    // AND a batch: two files, a setlist change, three more files
    let names = ["a.pdf", "b.mp3", "setlist", "c.pdf", "d.mp3", "e.txt"];
    let new: Vec<NewEvent> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NewEvent::new(format!("{n}#{i}"), h.now(), kind(n)))
        .collect();
    let events = h.store.append(&demo, &new).await.unwrap();

    // WHEN the batch is delivered
    let report = h
        .broadcaster()
        .deliver(&BroadcastMessage {
            channel: demo.clone(),
            events,
        })
        .await
        .unwrap();

    // THEN the phone got the setlist event between two skipped frames covering the
    // files' seqs: every seq 1..=6 is accounted for, no file event is in it
    let phone_frames = h.pusher.frames(&phone);
    let shape: Vec<(String, u64, u64)> = phone_frames
        .iter()
        .map(|f| match f["type"].as_str().unwrap() {
            "skipped" => (
                "skipped".to_owned(),
                f["from_seq"].as_u64().unwrap(),
                f["to_seq"].as_u64().unwrap(),
            ),
            other => {
                let seq = f["seq"].as_u64().unwrap();
                (
                    format!("{other}:{}", f["event"].as_str().unwrap()),
                    seq,
                    seq,
                )
            }
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("skipped".to_owned(), 1, 2),
            ("event:setlist.updated".to_owned(), 3, 3),
            ("skipped".to_owned(), 4, 6),
        ]
    );
    assert!(phone_frames.iter().all(|f| f["channel"] == "band:demo"));
    // AND the connection without a device got all six events
    let laptop_seqs: Vec<u64> = h
        .pusher
        .frames(&laptop)
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(laptop_seqs, (1..=6).collect::<Vec<_>>());
    assert_eq!(
        report,
        DeliveryReport {
            connections: 2,
            delivered: 7,
            gone: 0,
            failed: 0,
            skipped: 5,
        }
    );
}

#[tokio::test]
async fn a_delivery_takes_the_events_queued_behind_it_and_their_messages_find_them_delivered() {
    // GIVEN seqs 1..3 in the log, each published as its own message (three pushes)
    let h = Harness::new();
    let all = subscribers(&h, &[PushBehaviour::Deliver]).await;
    let one = |i: usize| BroadcastMessage {
        channel: all.channel.clone(),
        events: all.events[i..=i].to_vec(),
    };
    // WHEN the first message is delivered
    let b = h.broadcaster();
    let first = b.deliver(&one(0)).await.unwrap();
    // THEN it carried all three, and the other two messages are no-ops
    assert_eq!(first.delivered, 3);
    assert_eq!(b.deliver(&one(1)).await.unwrap(), DeliveryReport::default());
    assert_eq!(b.deliver(&one(2)).await.unwrap(), DeliveryReport::default());
    assert_eq!(received(&h, "c1"), all_three());
    assert_eq!(h.log.delivered(&all.channel).await.unwrap(), 3);
}

#[tokio::test]
async fn without_coalescing_each_message_delivers_its_own_events() {
    // GIVEN the same three one-event messages, and a broadcaster that does not coalesce
    let h = Harness::new();
    let all = subscribers(&h, &[PushBehaviour::Deliver]).await;
    let mut b = h.broadcaster();
    b.coalesce = 0;
    // WHEN they are delivered in order THEN each carries one event
    for i in 0..3 {
        let message = BroadcastMessage {
            channel: all.channel.clone(),
            events: all.events[i..=i].to_vec(),
        };
        assert_eq!(b.deliver(&message).await.unwrap().delivered, 1);
    }
    assert_eq!(received(&h, "c1"), all_three());
}

#[tokio::test]
async fn a_delivery_takes_at_most_coalesce_events_beyond_its_own() {
    // GIVEN seqs 1..3 in the log and a broadcaster that takes one more event at most
    let h = Harness::new();
    let all = subscribers(&h, &[PushBehaviour::Deliver]).await;
    let mut b = h.broadcaster();
    b.coalesce = 1;
    let first = BroadcastMessage {
        channel: all.channel.clone(),
        events: all.events[..1].to_vec(),
    };
    // WHEN the first message is delivered THEN it carries seqs 1 and 2, not 3
    assert_eq!(b.deliver(&first).await.unwrap().delivered, 2);
    assert_eq!(h.log.delivered(&all.channel).await.unwrap(), 2);
}
