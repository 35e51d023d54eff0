//! A client that was away resumes and gets exactly what it missed; one whose history is
//! gone (epoch changed, window passed) is told so.

use bandsync::model::ChannelName;
use bandsync::ports::ChannelLog;
use bandsync_testkit::stack::*;
use serde_json::json;

#[tokio::test]
async fn reconnect_and_resume_gets_exactly_what_was_missed() {
    let t = spawn_stack().await;
    let mut observer = t.client("bob", &["demo"]).await;
    observer.subscribe("band:demo").await;
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;

    put(t.folder().join("one.pdf"), b"1");
    let seen = alice.events_until(|ev| has_completed(ev, 1)).await;
    let last = seen.last().unwrap();
    let (last_seq, epoch) = (
        last["seq"].as_u64().unwrap(),
        last["epoch"].as_str().unwrap().to_owned(),
    );
    observer
        .events_until(|ev| {
            ev.last()
                .is_some_and(|e| e["seq"].as_u64() == Some(last_seq))
        })
        .await;
    alice.close().await;

    // While alice is away: two more changes.
    put(t.folder().join("two.pdf"), b"2");
    let missed_a = observer.events_until(|ev| has_completed(ev, 1)).await;
    put(t.folder().join("three.pdf"), b"3");
    let missed_b = observer.events_until(|ev| has_completed(ev, 1)).await;
    let missed: Vec<_> = missed_a.into_iter().chain(missed_b).collect();
    assert_gapless(&missed, last_seq + 1);

    let mut alice = t.client("alice", &["demo"]).await;
    alice.send(json!({"action": "resume", "channel": "band:demo", "after_seq": last_seq, "epoch": epoch, "ref": 9})).await;
    let resumed = alice.expect("resumed").await;
    assert_eq!(resumed["ref"], 9);
    assert_eq!(resumed["replayed"], missed.len());
    assert_eq!(resumed["seq"], missed.last().unwrap()["seq"]);
    let replayed = alice.events_until(|ev| ev.len() == missed.len()).await;
    assert_eq!(replayed, missed, "exactly the missed events, in order");

    // Resumed means subscribed: the next change arrives live.
    put(t.folder().join("four.pdf"), b"4");
    let live = alice.events_until(|ev| has_completed(ev, 1)).await;
    assert_gapless(&live, missed.last().unwrap()["seq"].as_u64().unwrap() + 1);
    t.drain().await;
    assert!(
        alice
            .frames_until_pong()
            .await
            .iter()
            .all(|f| f["type"] != "event"),
        "no duplicates"
    );
}

#[tokio::test]
async fn history_lost_when_the_epoch_changed_or_the_window_passed() {
    let t = spawn_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;
    put(t.folder().join("one.pdf"), b"1");
    let seen = alice.events_until(|ev| has_completed(ev, 1)).await;
    let epoch = seen[0]["epoch"].as_str().unwrap().to_owned();
    let head = seen.last().unwrap()["seq"].as_u64().unwrap();

    alice.send(json!({"action": "resume", "channel": "band:demo", "after_seq": 1, "epoch": "some-old-epoch"})).await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "history_lost");
    assert_eq!(err["data"]["epoch"], epoch.as_str());
    assert_eq!(err["data"]["seq"], head);

    alice.resume("band:demo", head + 5, &epoch).await;
    assert_eq!(alice.expect("error").await["code"], "history_lost");

    // Up to date: nothing to replay.
    alice.resume("band:demo", head, &epoch).await;
    assert_eq!(alice.expect("resumed").await["replayed"], 0);

    // The retention window passes for every event so far.
    let pruned = t
        .stack
        .store
        .prune(
            &ChannelName::parse("band:demo").unwrap(),
            chrono::Utc::now() + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(pruned, head);
    alice.resume("band:demo", 0, &epoch).await;
    assert_eq!(alice.expect("error").await["code"], "history_lost");
    // ...but a client that had everything is still up to date.
    alice.resume("band:demo", head, &epoch).await;
    assert_eq!(alice.expect("resumed").await["replayed"], 0);
}
