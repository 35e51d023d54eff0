//! The channel log, alone and under concurrent appends.

use super::*;

/// The channel log: gapless seqs, idempotent appends, one epoch, reads, head and prune.
pub async fn channel_log_contract<S: ChannelLog + ?Sized>(log: &S) {
    let (ch, other) = (band_channel(), band_channel());
    let t0 = Utc::now();
    assert_eq!(log.head(&ch).await.unwrap(), None, "never had an event");
    assert!(log.read_after(&ch, 0, 10).await.unwrap().is_empty());
    assert!(log.append(&ch, &[]).await.unwrap().is_empty());

    let (a, b, c) = (
        new_event("a", t0),
        new_event("b", t0 + secs(1)),
        new_event("c", t0 + secs(2)),
    );
    let first = log.append(&ch, &[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(seqs(&first), [1, 2]);
    assert_eq!(ids(&first), ["a", "b"]);
    let epoch = first[0].epoch.clone();
    assert!(!epoch.is_empty());
    assert!(first.iter().all(|e| e.epoch == epoch && e.channel == ch));
    assert_eq!(
        (first[0].event(), first[0].ts, first[0].data()),
        (a.event(), a.ts, a.data()),
        "the event is stored as given"
    );

    let b_again = new_event_failing(&b.id, b.ts, "a redelivery may carry other data");
    let second = log.append(&ch, &[b_again, c.clone()]).await.unwrap();
    assert_eq!(seqs(&second), [2, 3], "b keeps its seq, c takes the next");
    assert_eq!(
        second[0], first[1],
        "a repeated event comes back as first stored"
    );

    let all = log.read_after(&ch, 0, 100).await.unwrap();
    assert_eq!(
        (seqs(&all), ids(&all)),
        (vec![1, 2, 3], vec!["a", "b", "c"]),
        "exactly once each"
    );
    assert_eq!(all[..2], first[..], "reads return what appends returned");
    assert_eq!(
        ids(&log.read_after(&ch, 1, 1).await.unwrap()),
        ["b"],
        "after, limited"
    );
    assert!(log.read_after(&ch, 3, 10).await.unwrap().is_empty());
    let head = log.head(&ch).await.unwrap().expect("a head");
    assert_eq!((head.seq, head.first_retained, &head.epoch), (3, 1, &epoch));

    let elsewhere = log.append(&other, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(seqs(&elsewhere), [1], "channels count separately");
    assert_ne!(elsewhere[0].epoch, epoch, "each channel has its own epoch");

    assert_eq!(
        log.prune(&ch, t0 + secs(1)).await.unwrap(),
        1,
        "strictly older than `before`"
    );
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!((head.seq, head.first_retained), (3, 2));
    assert_eq!(ids(&log.read_after(&ch, 0, 10).await.unwrap()), ["b", "c"]);
    assert_eq!(log.prune(&ch, t0 + secs(60)).await.unwrap(), 2);
    assert_eq!(log.prune(&ch, t0 + secs(60)).await.unwrap(), 0);
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.first_retained, &head.epoch),
        (3, 4, &epoch),
        "all pruned: seq stays"
    );

    let d = log
        .append(&ch, &[new_event("d", t0 + secs(3))])
        .await
        .unwrap();
    assert_eq!((d[0].seq, &d[0].epoch), (4, &epoch), "seqs never go back");
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!((head.seq, head.first_retained), (4, 4));
    assert_eq!(
        log.head(&other).await.unwrap().unwrap().seq,
        1,
        "pruning is per channel"
    );

    // One id twice in one append: one event, one seq.
    let twice = new_event("twice", t0 + secs(4));
    let both = log.append(&ch, &[twice.clone(), twice]).await.unwrap();
    assert_eq!(seqs(&both), [5, 5], "the repeat keeps the first seq");
    assert_eq!(log.head(&ch).await.unwrap().unwrap().seq, 5);

    // The broadcaster's watermark: per channel, starts at 0, never moves back.
    assert_eq!(log.delivered(&ch).await.unwrap(), 0);
    log.mark_delivered(&ch, 3).await.unwrap();
    log.mark_delivered(&ch, 2).await.unwrap();
    assert_eq!(log.delivered(&ch).await.unwrap(), 3, "never moves back");
    assert_eq!(log.delivered(&other).await.unwrap(), 0, "per channel");
    log.mark_delivered(&ch, 4).await.unwrap();
    assert_eq!(log.delivered(&ch).await.unwrap(), 4);
}

/// Concurrent appends from several tasks: every event gets exactly one seq, the seqs are
/// 1..=N without gaps, each task sees its own events in order, and concurrent repeats of
/// one batch store it once.
pub async fn channel_log_concurrency_contract<S: ChannelLog + ?Sized + 'static>(log: Arc<S>) {
    const TASKS: usize = 8;
    const EVENTS: usize = 25;
    const TOTAL: u64 = (TASKS * EVENTS) as u64;
    let ch = band_channel();
    let t0 = Utc::now();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (log, ch) = (Arc::clone(&log), ch.clone());
        tasks.spawn(async move {
            let mut got = Vec::with_capacity(EVENTS);
            for i in 0..EVENTS {
                let event = new_event(&format!("t{task}-e{i}"), t0);
                got.extend(seqs(&log.append(&ch, &[event]).await.unwrap()));
            }
            got
        });
    }
    let mut all = Vec::new();
    for got in tasks.join_all().await {
        assert!(got.is_sorted(), "a task's events are in its order: {got:?}");
        all.extend(got);
    }
    assert_eq!(
        sorted(all),
        (1..=TOTAL).collect::<Vec<_>>(),
        "gapless, each seq once"
    );

    let stored = log.read_after(&ch, 0, 10 * TOTAL as usize).await.unwrap();
    assert_eq!(seqs(&stored), (1..=TOTAL).collect::<Vec<_>>());
    let distinct: BTreeSet<_> = stored.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(distinct.len(), TOTAL as usize, "every event stored once");

    let batch: Vec<_> = (0..3)
        .map(|i| new_event(&format!("shared-{i}"), t0))
        .collect();
    let mut repeats = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (log, ch, batch) = (Arc::clone(&log), ch.clone(), batch.clone());
        repeats.spawn(async move { log.append(&ch, &batch).await.unwrap() });
    }
    let results = repeats.join_all().await;
    let want = vec![TOTAL + 1, TOTAL + 2, TOTAL + 3];
    assert!(
        results.iter().all(|r| seqs(r) == want),
        "one seq per event, whoever wins: {results:?}"
    );
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.first_retained),
        (TOTAL + 3, 1),
        "no seq was burnt"
    );
}
