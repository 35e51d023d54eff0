//! Conditional writes of configurations and sources: a write names the revision its read
//! saw and lands only on it, so no write made from a stale read undoes the one in between
//! (an operator's delete or move under a running sync, a credentials delete under a band
//! edit). Each scenario interleaves the two writers at the point where a whole-record
//! write from the first read would have undone the other.

use super::*;
use bandsync::model::SealedSecret;
use bandsync::ports::WriteOutcome;

fn written(outcome: WriteOutcome, what: &str) -> u64 {
    match outcome {
        WriteOutcome::Written { revision } => revision,
        WriteOutcome::GoneOrChanged => panic!("{what}: expected the write to land"),
    }
}

fn refused(outcome: WriteOutcome, what: &str) {
    assert_eq!(outcome, WriteOutcome::GoneOrChanged, "{what}");
}

/// A sync pass's writes of its cursor under an operator's delete, move and re-create.
pub async fn source_revision_contract<S: SourceStore + ?Sized>(store: &S) {
    let band = band();
    let id = source_id();
    store.put_source(&source(&band, &id)).await.unwrap();

    // GIVEN a pass that read the source
    let read = store.get_source(&band, &id).await.unwrap().unwrap();
    assert_ne!(read.revision, 0, "a stored source has a revision");
    let listed = store.list_sources(&band).await.unwrap();
    assert_eq!(listed[0].revision, read.revision, "listed with it too");
    // WHEN it writes its cursor from that read
    let mut pass = read.clone();
    pass.cursor = Some("page-2".into());
    let r1 = written(
        store
            .write_source(&pass, Some(read.revision))
            .await
            .unwrap(),
        "a write from the current revision",
    );
    // THEN it lands under a new revision, and a second write from the old read is refused
    assert_ne!(r1, read.revision);
    let stored = store.get_source(&band, &id).await.unwrap().unwrap();
    assert_eq!(
        (stored.cursor.as_deref(), stored.revision),
        (Some("page-2"), r1)
    );
    let mut stale = read.clone();
    stale.cursor = Some("page-1".into());
    refused(
        store
            .write_source(&stale, Some(read.revision))
            .await
            .unwrap(),
        "a write from an overtaken read",
    );
    assert_eq!(
        store
            .get_source(&band, &id)
            .await
            .unwrap()
            .unwrap()
            .cursor
            .as_deref(),
        Some("page-2"),
        "the refused write changed nothing"
    );

    // WHEN an operator moves the source while the pass (at r1) runs
    let mut moved = stored.clone();
    moved.location = "/elsewhere".into();
    moved.cursor = None;
    let r2 = written(
        store.write_source(&moved, Some(r1)).await.unwrap(),
        "the operator's move",
    );
    // THEN the pass's next cursor write is refused and the move stands
    pass.cursor = Some("page-3".into());
    refused(
        store.write_source(&pass, Some(r1)).await.unwrap(),
        "a pass's write after a move",
    );
    let stored = store.get_source(&band, &id).await.unwrap().unwrap();
    assert_eq!(stored.location, "/elsewhere", "the move is not reverted");
    assert_eq!(stored.cursor, None, "nor the old place's cursor put back");
    assert_eq!(stored.revision, r2);

    // WHEN an operator deletes it while the pass (at r2) runs
    store.delete_source(&band, &id).await.unwrap();
    // THEN the pass's write is refused and the source does not come back
    refused(
        store.write_source(&stored, Some(r2)).await.unwrap(),
        "a pass's write after a delete",
    );
    assert_eq!(
        store.get_source(&band, &id).await.unwrap(),
        None,
        "still deleted"
    );
    assert!(store.list_sources(&band).await.unwrap().is_empty());

    // WHEN the operator creates it again
    let fresh = source(&band, &id);
    let r3 = written(
        store.write_source(&fresh, None).await.unwrap(),
        "a create of a free id",
    );
    // THEN a create over it is refused, and so is the old pass's write (a recreated
    // source never has a revision an old reader holds)
    refused(
        store.write_source(&fresh, None).await.unwrap(),
        "a create over an existing source",
    );
    refused(
        store.write_source(&stored, Some(r2)).await.unwrap(),
        "an old pass's write onto the recreated source",
    );
    let now = store.get_source(&band, &id).await.unwrap().unwrap();
    assert_eq!(
        (now.location.as_str(), now.revision),
        (fresh.location.as_str(), r3)
    );
    // AND a write onto a source that never existed creates nothing
    let other = source_id();
    refused(
        store
            .write_source(&source(&band, &other), Some(r3))
            .await
            .unwrap(),
        "a write onto a missing source",
    );
    assert_eq!(store.get_source(&band, &other).await.unwrap(), None);
}

/// Writers racing from one read: exactly one lands.
pub async fn source_revision_race_contract<S: SourceStore + ?Sized>(store: &S) {
    let band = band();
    let id = source_id();
    store.put_source(&source(&band, &id)).await.unwrap();
    let read = store.get_source(&band, &id).await.unwrap().unwrap();
    let writes = (0..8).map(|i| {
        let mut s = read.clone();
        s.cursor = Some(format!("page-{i}"));
        async move {
            (
                i,
                store.write_source(&s, Some(read.revision)).await.unwrap(),
            )
        }
    });
    let outcomes = futures_util::future::join_all(writes).await;
    let won: Vec<_> = outcomes
        .iter()
        .filter_map(|(i, o)| match o {
            WriteOutcome::Written { revision } => Some((*i, *revision)),
            WriteOutcome::GoneOrChanged => None,
        })
        .collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one of racing writers lands: {outcomes:?}"
    );
    let stored = store.get_source(&band, &id).await.unwrap().unwrap();
    assert_eq!(stored.cursor, Some(format!("page-{}", won[0].0)));
    assert_eq!(stored.revision, won[0].1);
}

/// Band edits under a credentials delete.
pub async fn config_revision_contract<S: ConfigStore + ?Sized>(store: &S) {
    let band = band();
    let config = SyncConfiguration {
        band: band.clone(),
        name: "The Band".into(),
        file_types: vec![],
        google_credentials: Some(SealedSecret {
            v: 1,
            alg: "A256GCM".into(),
            nonce: "bm9uY2U=".into(),
            ct: "Y2lwaGVy".into(),
        }),
        entity_types: vec![],
        strict_entities: false,
        history_days: None,
    };
    assert_eq!(store.get_config_revised(&band).await.unwrap(), None);
    // A create lands once; the registry lists the band.
    let r0 = written(
        store.write_config(&config, None).await.unwrap(),
        "a create of a new band",
    );
    refused(
        store.write_config(&config, None).await.unwrap(),
        "a create over an existing band",
    );
    assert!(store.list_bands().await.unwrap().contains(&band));
    let read = store.get_config_revised(&band).await.unwrap().unwrap();
    assert_eq!((&read.record, read.revision), (&config, r0));

    // GIVEN a rename that read the configuration (with its credentials)
    let mut rename = read.record.clone();
    rename.name = "Renamed".into();
    // WHEN the credentials are deleted before the rename writes
    let mut revoked = read.record.clone();
    revoked.google_credentials = None;
    let r1 = written(
        store.write_config(&revoked, Some(r0)).await.unwrap(),
        "the credentials delete",
    );
    // THEN the rename from the old read is refused: the credentials stay deleted
    refused(
        store.write_config(&rename, Some(r0)).await.unwrap(),
        "an edit from an overtaken read",
    );
    let stored = store.get_config_revised(&band).await.unwrap().unwrap();
    assert_eq!(stored.record.google_credentials, None, "never returns");
    assert_eq!(stored.revision, r1);
    // AND the rename applied again to the newer record lands without them
    rename = stored.record.clone();
    rename.name = "Renamed".into();
    written(
        store.write_config(&rename, Some(r1)).await.unwrap(),
        "the edit applied again",
    );
    let stored = store.get_config(&band).await.unwrap().unwrap();
    assert_eq!(
        (stored.name.as_str(), &stored.google_credentials),
        ("Renamed", &None)
    );
    // An unconditional put (seeding) moves the revision on too.
    store.put_config(&stored).await.unwrap();
    let after_put = store.get_config_revised(&band).await.unwrap().unwrap();
    refused(
        store.write_config(&rename, Some(r1)).await.unwrap(),
        "an edit from before a put",
    );
    assert_ne!(after_put.revision, r1);
}
