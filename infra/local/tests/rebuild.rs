//! `bandsync-local rebuild --band <band>` on a stopped stack's data dir: it prints the
//! report and exits 0 when every entity matches its rebuild, non-zero when one does not
//! (or when the band is not there).

use bandsync::adapters::local::EmbeddedStore;
use bandsync::entities::mutation::MutationStatus;
use bandsync::model::{BandId, SyncConfiguration};
use bandsync::ports::ConfigStore;
use bandsync_testkit::members::{member_connection, push_service, write_past_history};
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
    let config = SyncConfiguration {
        band: BandId::parse("demo").unwrap(),
        name: "Demo".into(),
        file_types: Vec::new(),
        google_credentials: None,
        entity_types: Vec::new(),
        strict_entities: false,
        history_days: None,
    };
    store.put_config(&config).await.unwrap();
    let push = push_service(store.clone());
    let conn = member_connection("cli-conn", "alice", "demo");
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
    let forged = write_past_history(
        &*store,
        "demo",
        ("setlist_entry", "e2"),
        "alice-phone",
        "alice",
    )
    .await;
    assert_eq!(forged, 2);

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
