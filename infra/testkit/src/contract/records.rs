//! The band records: configurations, sources, the catalog, operations, watch channels
//! and dedupe marks.

use super::*;

/// Band configurations: get what was put, re-put replaces, bands are separate.
pub async fn config_store_contract<S: ConfigStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    assert_eq!(store.get_config(&a).await.unwrap(), None, "unknown band");
    let mut config = SyncConfiguration {
        band: a.clone(),
        name: "The Band".into(),
        file_types: vec!["pdf".into(), "mp3".into()],
        google_credentials: None,
        entity_types: vec![],
        strict_entities: false,
        history_days: None,
    };
    store.put_config(&config).await.unwrap();
    assert_eq!(store.get_config(&a).await.unwrap().as_ref(), Some(&config));
    config.file_types.clear();
    config.name = "Renamed".into();
    config.history_days = Some(30);
    store.put_config(&config).await.unwrap();
    assert_eq!(
        store.get_config(&a).await.unwrap(),
        Some(config),
        "re-put replaces"
    );
    assert_eq!(
        store.get_config(&b).await.unwrap(),
        None,
        "bands are separate"
    );
    let listed = store.list_bands().await.unwrap();
    assert!(listed.contains(&a), "the registry lists a configured band");
    assert!(!listed.contains(&b), "and only configured ones");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "by id");
}

/// Sources: get, list per band, re-put replaces (the cursor moves on), delete is idempotent.
pub async fn source_store_contract<S: SourceStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let (s1, s2) = (source_id(), source_id());
    assert_eq!(
        store.get_source(&a, &s1).await.unwrap(),
        None,
        "unknown source"
    );
    assert!(store.list_sources(&a).await.unwrap().is_empty());
    for (band, id) in [(&a, &s1), (&a, &s2), (&b, &s1)] {
        store.put_source(&source(band, id)).await.unwrap();
    }
    let mut moved = source(&a, &s1);
    moved.cursor = Some("page-token-2".into());
    moved.last_sync_at = Some(Utc::now());
    moved.last_operation = Some(unique("op"));
    store.put_source(&moved).await.unwrap();

    assert_eq!(
        store.get_source(&a, &s1).await.unwrap().as_ref(),
        Some(&moved)
    );
    assert_eq!(
        store.get_source(&b, &s1).await.unwrap(),
        Some(source(&b, &s1))
    );
    let by_id = |v| sorted_by(v, |s: &Source| s.id.clone());
    let listed = by_id(store.list_sources(&a).await.unwrap());
    assert_eq!(
        listed,
        by_id(vec![moved, source(&a, &s2)]),
        "a band's sources, each once"
    );

    // Deleting forgets that source only; deleting a missing one is not an error.
    store.delete_source(&a, &s1).await.unwrap();
    assert_eq!(store.get_source(&a, &s1).await.unwrap(), None, "deleted");
    assert_eq!(
        store.list_sources(&a).await.unwrap(),
        vec![source(&a, &s2)],
        "the band's other source stays"
    );
    assert_eq!(
        store.get_source(&b, &s1).await.unwrap(),
        Some(source(&b, &s1)),
        "another band's source of the same id stays"
    );
    store.delete_source(&a, &s1).await.unwrap();
    store.delete_source(&b, &source_id()).await.unwrap();

    // The generation: 0 at first, +1 per bump, per source, untouched by source writes.
    assert_eq!(store.generation(&a, &s2).await.unwrap(), 0);
    assert_eq!(store.bump_generation(&a, &s2).await.unwrap(), 1);
    assert_eq!(store.bump_generation(&a, &s2).await.unwrap(), 2);
    store.put_source(&source(&a, &s2)).await.unwrap();
    assert_eq!(
        store.generation(&a, &s2).await.unwrap(),
        2,
        "kept by a rewrite"
    );
    assert_eq!(store.generation(&b, &s2).await.unwrap(), 0, "per band");
    assert_eq!(
        store.generation(&a, &source_id()).await.unwrap(),
        0,
        "per source"
    );
}

/// The file catalog: per (band, source), replace by file id, deletes are idempotent.
pub async fn catalog_contract<S: CatalogStore + ?Sized>(store: &S) {
    let a = band();
    let (s1, s2) = (source_id(), source_id());
    assert!(store.list_files(&a, &s1).await.unwrap().is_empty());
    let f1 = file(&a, &s1, "f1", "charts/one.pdf");
    let f2 = file(&a, &s1, "f2", "charts/two.pdf");
    for f in [&f1, &f2, &file(&a, &s2, "f1", "elsewhere.pdf")] {
        store.put_file(f).await.unwrap();
    }
    let renamed = FileEntry {
        path: "charts/renamed.pdf".into(),
        ..f1.clone()
    };
    store.put_file(&renamed).await.unwrap();
    let listed = sorted_by(store.list_files(&a, &s1).await.unwrap(), |f| {
        f.file_id.clone()
    });
    assert_eq!(
        listed,
        vec![renamed, f2.clone()],
        "re-put replaces by file id"
    );

    store.delete_file(&a, &s1, "f1").await.unwrap();
    store.delete_file(&a, &s1, "f1").await.unwrap();
    store.delete_file(&a, &s1, "never-there").await.unwrap();
    assert_eq!(store.list_files(&a, &s1).await.unwrap(), vec![f2]);
    assert_eq!(
        store.list_files(&a, &s2).await.unwrap().len(),
        1,
        "sources are separate"
    );

    // Many at once (more than one DynamoDB batch), replacing what is there.
    let s3 = source_id();
    let many: Vec<FileEntry> = (0..60)
        .map(|i| file(&a, &s3, &format!("m{i:02}"), &format!("bulk/{i:02}.pdf")))
        .collect();
    store.put_files(&many).await.unwrap();
    store.put_files(&many[..5]).await.unwrap();
    store.put_files(&[]).await.unwrap();
    // The same file twice in one call: the later one wins.
    let stale = FileEntry {
        hash: "stale".into(),
        ..many[7].clone()
    };
    store.put_files(&[stale, many[7].clone()]).await.unwrap();
    let listed = sorted_by(store.list_files(&a, &s3).await.unwrap(), |f| {
        f.file_id.clone()
    });
    assert_eq!(listed, many, "put_files");
}

/// Operations: newest first with a limit, per band; re-put replaces; items by (op, n).
pub async fn operation_contract<S: OperationStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let t0 = Utc::now();
    let ops: Vec<_> = (0..3).map(|i| operation(&a, t0 + secs(i))).collect();
    // Put out of order: the listing must sort, not echo insertion order.
    for op in [&ops[1], &ops[0], &ops[2], &operation(&b, t0 + secs(10))] {
        store.put_operation(op).await.unwrap();
    }
    let listed = async |limit| store.list_operations(&a, limit).await.unwrap();
    assert_eq!(
        listed(2).await,
        vec![ops[2].clone(), ops[1].clone()],
        "newest first, limited"
    );
    assert_eq!(
        listed(10).await,
        vec![ops[2].clone(), ops[1].clone(), ops[0].clone()]
    );

    let done = SyncOperation {
        status: OperationStatus::Completed,
        finished_at: Some(t0 + secs(5)),
        metrics: SyncMetrics {
            seen: 3,
            synced: 2,
            failed: 1,
            skipped: 0,
            duration_ms: 1234,
        },
        error: Some("one file failed".into()),
        ..ops[0].clone()
    };
    store.put_operation(&done).await.unwrap();
    assert_eq!(
        store.get_operation(&done.id).await.unwrap().as_ref(),
        Some(&done)
    );
    assert_eq!(
        listed(10).await.len(),
        3,
        "re-put replaces, never duplicates"
    );
    assert_eq!(store.get_operation(&unique("op")).await.unwrap(), None);

    let op = &ops[2].id;
    assert!(store.list_items(op).await.unwrap().is_empty());
    for n in [10, 2, 1] {
        store.put_item(&item(op, n)).await.unwrap();
    }
    store.put_item(&item(&ops[1].id, 1)).await.unwrap();
    let failed = SyncItem {
        status: ItemStatus::Failed,
        error: Some("403 from Drive".into()),
        ..item(op, 2)
    };
    store.put_item(&failed).await.unwrap();
    let items = store.list_items(op).await.unwrap();
    assert_eq!(
        items,
        vec![item(op, 1), failed, item(op, 10)],
        "by n, numerically; re-put replaces"
    );

    // Many at once (more than one DynamoDB batch), replacing what is there.
    let op = &ops[0].id;
    let many: Vec<SyncItem> = (1..=60).map(|n| item(op, n)).collect();
    store.put_items(&many).await.unwrap();
    store.put_items(&many[..5]).await.unwrap();
    store.put_items(&[]).await.unwrap();
    assert_eq!(store.list_items(op).await.unwrap(), many, "put_items");

    // Pages: n > after, in n order, at most limit; the count is the highest n.
    let page = |after, limit| store.list_items_after(op, after, limit);
    assert_eq!(page(0, 7).await.unwrap(), many[..7], "the first page");
    assert_eq!(page(7, 7).await.unwrap(), many[7..14], "after a cursor");
    assert_eq!(
        page(55, 100).await.unwrap(),
        many[55..],
        "the last, short page"
    );
    assert!(page(60, 10).await.unwrap().is_empty(), "past the end");
    assert!(page(0, 0).await.unwrap().is_empty(), "a zero limit");
    assert!(
        page(u32::MAX, 10).await.unwrap().is_empty(),
        "the largest cursor"
    );
    assert_eq!(store.count_items(op).await.unwrap(), 60);
    assert_eq!(
        store.count_items(&ops[1].id).await.unwrap(),
        1,
        "per operation"
    );
    assert_eq!(store.count_items(&unique("op")).await.unwrap(), 0, "none");
}

/// Watch channels: by id, per band, and the message number only moves forward.
pub async fn watch_channel_contract<S: WatchChannelStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let (w1, w2, w3) = (watch_channel(&a), watch_channel(&a), watch_channel(&b));
    for w in [&w1, &w2, &w3] {
        store.put_watch_channel(w).await.unwrap();
    }
    assert_eq!(
        store.get_watch_channel(&w1.id).await.unwrap().as_ref(),
        Some(&w1)
    );
    assert_eq!(
        store.get_watch_channel(&unique("watch")).await.unwrap(),
        None
    );
    let listed = sorted_by(store.list_watch_channels(&a).await.unwrap(), |w| {
        w.id.clone()
    });
    assert_eq!(
        listed,
        sorted_by(vec![w1.clone(), w2.clone()], |w| w.id.clone()),
        "per band"
    );

    let t0 = Utc::now();
    store.record_message(&w1.id, 5, t0).await.unwrap();
    store.record_message(&w1.id, 3, t0 + secs(1)).await.unwrap();
    let seen = store.get_watch_channel(&w1.id).await.unwrap().unwrap();
    assert_eq!(
        (seen.last_message, seen.last_message_at),
        (Some(5), Some(t0)),
        "never backwards"
    );
    store.record_message(&w1.id, 7, t0 + secs(2)).await.unwrap();
    let seen = store.get_watch_channel(&w1.id).await.unwrap().unwrap();
    assert_eq!(
        (seen.last_message, seen.last_message_at),
        (Some(7), Some(t0 + secs(2)))
    );
    assert_eq!(
        WatchChannel {
            last_message: None,
            last_message_at: None,
            ..seen
        },
        w1,
        "recording a message changes nothing else"
    );

    let renewed = WatchChannel {
        expires_at: Some(t0 + TimeDelta::days(14)),
        ..w2.clone()
    };
    store.put_watch_channel(&renewed).await.unwrap();
    assert_eq!(
        store.get_watch_channel(&w2.id).await.unwrap(),
        Some(renewed.clone()),
        "re-put replaces"
    );

    store.delete_watch_channel(&renewed).await.unwrap();
    assert_eq!(
        store.get_watch_channel(&w2.id).await.unwrap(),
        None,
        "deleted"
    );
    let listed = store.list_watch_channels(&a).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| &w.id).collect::<Vec<_>>(),
        [&w1.id],
        "a deleted channel is not listed"
    );
    store.delete_watch_channel(&renewed).await.unwrap();
}

/// Webhook dedupe: first time true, repeats within the ttl false, after it true again;
/// `seen` reads the same window and marks nothing.
pub async fn dedupe_contract<S: DedupeStore + ?Sized>(store: &S) {
    let (key, other) = (unique("dedupe"), unique("dedupe"));
    let ttl = Duration::from_secs(60);
    let t0 = Utc::now();
    assert!(!store.seen(&key, t0).await.unwrap(), "never marked");
    assert!(store.first_seen(&key, t0, ttl).await.unwrap(), "first time");
    assert!(
        store.seen(&key, t0 + secs(59)).await.unwrap(),
        "seen within the ttl"
    );
    assert!(
        !store.seen(&key, t0 + secs(60)).await.unwrap(),
        "not past it"
    );
    assert!(!store.seen(&other, t0).await.unwrap(), "seen marks nothing");
    assert!(
        !store.first_seen(&key, t0, ttl).await.unwrap(),
        "immediate repeat"
    );
    assert!(
        !store.first_seen(&key, t0 + secs(59), ttl).await.unwrap(),
        "within the ttl"
    );
    assert!(
        store.first_seen(&other, t0 + secs(30), ttl).await.unwrap(),
        "keys are separate"
    );
    assert!(
        store.first_seen(&key, t0 + secs(61), ttl).await.unwrap(),
        "expired: seen anew"
    );
    assert!(
        !store.first_seen(&key, t0 + secs(100), ttl).await.unwrap(),
        "a new window began at 61 s"
    );
    assert!(
        store.first_seen(&key, t0 + secs(122), ttl).await.unwrap(),
        "and ended at 121 s"
    );
}
