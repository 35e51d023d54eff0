//! What a deleted source's purge reads and writes: its mark, and the catalog a page at a
//! time.

use super::*;
use bandsync::model::SourcePurge;

/// Purge marks: put replaces, listed per band by source, forget is idempotent.
pub async fn purge_mark_contract<S: SourceStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let (s1, s2) = (source_id(), source_id());
    assert!(store.purges(&a).await.unwrap().is_empty(), "no mark yet");
    let at = Utc::now();
    let mark = |band: &BandId, source: &SourceId, kind| SourcePurge {
        band: band.clone(),
        source: source.clone(),
        kind,
        deleted_at: at,
        operations_after: None,
        operations_done: false,
    };
    store
        .put_purge(&mark(&a, &s1, SourceKind::Drive))
        .await
        .unwrap();
    store
        .put_purge(&mark(&a, &s2, SourceKind::Calendar))
        .await
        .unwrap();
    store
        .put_purge(&mark(&b, &s1, SourceKind::Folder))
        .await
        .unwrap();
    let again = SourcePurge {
        deleted_at: at + secs(5),
        operations_after: Some((at, "op-1".into())),
        ..mark(&a, &s1, SourceKind::Drive)
    };
    store.put_purge(&again).await.unwrap();
    let listed = store.purges(&a).await.unwrap();
    let by_source = sorted_by(
        vec![again.clone(), mark(&a, &s2, SourceKind::Calendar)],
        |m| m.source.clone(),
    );
    assert_eq!(
        listed, by_source,
        "the band's marks, a re-put replacing, by source"
    );
    assert_eq!(
        store.purges(&b).await.unwrap(),
        vec![mark(&b, &s1, SourceKind::Folder)]
    );
    store.forget_purge(&a, &s1).await.unwrap();
    store.forget_purge(&a, &s1).await.unwrap();
    assert_eq!(
        store.purges(&a).await.unwrap(),
        vec![mark(&a, &s2, SourceKind::Calendar)],
        "forgotten once, twice is no error"
    );
    assert_eq!(
        store.purges(&b).await.unwrap().len(),
        1,
        "other bands keep theirs"
    );
}

/// A catalog's first page, in file-id order, and many deleted at once.
pub async fn catalog_page_contract<S: CatalogStore + ?Sized>(store: &S) {
    let a = band();
    let (s1, s2) = (source_id(), source_id());
    let files: Vec<FileEntry> = (0..30)
        .rev()
        .map(|i| file(&a, &s1, &format!("f{i:03}"), &format!("charts/{i}.pdf")))
        .collect();
    store.put_files(&files).await.unwrap();
    store
        .put_file(&file(&a, &s2, "f000", "other.pdf"))
        .await
        .unwrap();
    let ids = |v: Vec<FileEntry>| v.into_iter().map(|f| f.file_id).collect::<Vec<_>>();
    let first = ids(store.first_files(&a, &s1, 10).await.unwrap());
    let expected: Vec<String> = (0..10).map(|i| format!("f{i:03}")).collect();
    assert_eq!(first, expected, "the first ten, in file-id order");
    assert!(store.first_files(&a, &s1, 0).await.unwrap().is_empty());
    // Deleting a page (with a repeat and a missing id) leaves the rest.
    let mut page = first.clone();
    page.push(first[0].clone());
    page.push("not-there".into());
    store.delete_files(&a, &s1, &page).await.unwrap();
    let rest = ids(store.first_files(&a, &s1, 100).await.unwrap());
    let expected: Vec<String> = (10..30).map(|i| format!("f{i:03}")).collect();
    assert_eq!(rest, expected, "the next page is first now");
    assert_eq!(
        ids(store.list_files(&a, &s2).await.unwrap()),
        ["f000"],
        "another source's catalog is untouched"
    );
    store.delete_files(&a, &s1, &rest).await.unwrap();
    assert!(store.list_files(&a, &s1).await.unwrap().is_empty());
}

/// A band's operations walked oldest first from a (start, id), and one forgotten with
/// its items.
pub async fn operation_walk_contract<S: OperationStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let t0 = Utc::now();
    let mut ops: Vec<SyncOperation> = (0..5).map(|i| operation(&a, t0 + secs(i))).collect();
    for op in ops.iter().rev() {
        store.put_operation(op).await.unwrap();
    }
    store.put_operation(&operation(&b, t0)).await.unwrap();
    for n in 1..=30 {
        store.put_item(&item(&ops[1].id, n)).await.unwrap();
    }
    let ids = |v: Vec<SyncOperation>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let first = ids(store.operations_after(&a, None, 2).await.unwrap());
    assert_eq!(
        first,
        [ops[0].id.clone(), ops[1].id.clone()],
        "oldest first"
    );
    let key = (ops[1].started_at, ops[1].id.clone());
    let next = ids(store.operations_after(&a, Some(&key), 10).await.unwrap());
    assert_eq!(next, ids(ops[2..].to_vec()), "after the key, to the end");
    let last = (ops[4].started_at, ops[4].id.clone());
    assert!(
        store
            .operations_after(&a, Some(&last), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Forgetting one takes its record, its listing entry and its items.
    let gone = ops.remove(1);
    store.delete_operation(&gone).await.unwrap();
    store.delete_operation(&gone).await.unwrap();
    assert_eq!(store.get_operation(&gone.id).await.unwrap(), None);
    assert!(store.list_items(&gone.id).await.unwrap().is_empty());
    let listed = ids(store.list_operations(&a, 10).await.unwrap());
    assert!(!listed.contains(&gone.id), "not listed any more");
    assert_eq!(listed.len(), 4);
    assert_eq!(store.list_operations(&b, 10).await.unwrap().len(), 1);
}
