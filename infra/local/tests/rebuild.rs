//! `bandsync-local rebuild --band <band>` on a stopped stack's data dir: it prints the
//! report and exits 0 when every entity matches its rebuild, non-zero when one does not
//! (or when the band is not there).

use bandsync::adapters::local::EmbeddedStore;
use bandsync::entities::mutation::{MutationResult, MutationStatus};
use bandsync::entities::push::PushService;
use bandsync::entities::records::{Commit, Receipt};
use bandsync::model::{
    BandId, Connection, ConnectionId, DeviceId, EntityId, EntityTypeName, SyncConfiguration, UserId,
};
use bandsync::ports::{ConfigStore, EntityStore, SystemClock};
use bandsync::publish::Publisher;
use bandsync_testkit::RecordingQueue;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_bandsync-local");

fn rebuild(dir: &Path, band: &str) -> (Output, Value) {
    let out = Command::new(BIN)
        .args(["rebuild", "--band", band, "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

/// A data dir with band `demo` and two entries pushed by a member.
async fn data_dir(dir: &Path) -> Arc<EmbeddedStore> {
    let store = Arc::new(EmbeddedStore::open(&dir.join("bandsync.db")).unwrap());
    let band = BandId::parse("demo").unwrap();
    let config = SyncConfiguration {
        band: band.clone(),
        name: "Demo".into(),
        file_types: Vec::new(),
        google_credentials: None,
        entity_types: Vec::new(),
        strict_entities: false,
    };
    store.put_config(&config).await.unwrap();
    let push = PushService::new(
        store.clone(),
        store.clone(),
        Publisher::new(store.clone(), Arc::new(RecordingQueue::new())),
        Arc::new(SystemClock),
    );
    let now = chrono::Utc::now();
    let conn = Connection {
        id: ConnectionId::parse("cli-conn").unwrap(),
        user: UserId::parse("alice").unwrap(),
        bands: vec![band],
        connected_at: now,
        expires_at: now + chrono::TimeDelta::hours(1),
        device: None,
    };
    let register =
        serde_json::from_value(json!({"device": "alice-phone", "platform": "web", "name": "p"}))
            .unwrap();
    push.register(&conn, register).await.unwrap();
    let mutation = |mid: u64, id: &str, op: &str, base: u64, fields: Value| {
        json!({"mid": mid, "type": "setlist_entry", "id": id, "op": op,
               "base_version": base, "fields": fields, "ts": "2026-12-01T20:00:00Z"})
    };
    let request = serde_json::from_value(json!({"band": "demo", "device": "alice-phone",
    "mutations": [
        mutation(1, "e1", "create", 0, json!({"title": "So What"})),
        mutation(2, "e2", "create", 0, json!({"title": "Freddie", "plays": {"$inc": 1}})),
        mutation(3, "e1", "patch", 1, json!({"key": "D"})),
    ]}))
    .unwrap();
    let results = push.push(&conn, request, 512).await.unwrap();
    assert!(
        results.iter().all(|r| r.status == MutationStatus::Applied),
        "{results:?}"
    );
    store
}

#[tokio::test]
async fn rebuild_exits_zero_on_a_match_and_non_zero_on_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_dir(dir.path()).await;

    // GIVEN an untouched data dir WHEN rebuilt THEN it matches: exit 0, the report printed
    let (out, report) = rebuild(dir.path(), "demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["matched"], true, "{report}");
    assert_eq!(report["checked"], 2);
    assert_eq!(report["replayed"]["versions"], 3);

    // GIVEN e2's stored state moved past its history
    let band = BandId::parse("demo").unwrap();
    let (ty, id) = (
        EntityTypeName::parse("setlist_entry").unwrap(),
        EntityId::parse("e2").unwrap(),
    );
    let stored = store.get_entity(&band, &ty, &id).await.unwrap().unwrap();
    let device = DeviceId::parse("alice-phone").unwrap();
    let mid = store.get_device(&device).await.unwrap().unwrap().next_mid;
    let mut forged = stored.clone();
    forged.version += 1;
    let commit = Commit {
        device: device.clone(),
        mid,
        receipt: Receipt {
            device,
            mid,
            band: band.clone(),
            member: UserId::parse("alice").unwrap(),
            at: chrono::Utc::now(),
            result: MutationResult::bare(mid, MutationStatus::Applied),
            parked: None,
        },
        entity: Some(forged),
        expected_version: stored.version,
        history: None,
        conflicts: Vec::new(),
        event: None,
        more_events: Vec::new(),
    };
    store.commit(&commit).await.unwrap();

    // WHEN rebuilt THEN it exits non-zero, the report naming e2
    let (out, report) = rebuild(dir.path(), "demo");
    assert!(!out.status.success(), "a mismatch fails the command");
    assert_eq!(report["matched"], false, "{report}");
    assert_eq!(report["mismatches"][0]["id"], "e2");
    assert_eq!(report["mismatches"][0]["stored_version"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("differ from their rebuild"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // AND a band that is not there is an error, not a match
    let (out, report) = rebuild(dir.path(), "nowhere");
    assert!(!out.status.success());
    assert_eq!(report, Value::Null);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
}
