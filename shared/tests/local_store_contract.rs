//! The port contracts on the embedded (SQLite) store, in memory and file-backed: the
//! same suites the DynamoDB adapters run on moto (tests/aws/store.rs).

use bandsync::adapters::local::EmbeddedStore;
use bandsync_testkit::contract;
use std::sync::Arc;
use tempfile::TempDir;

/// Both flavours every suite runs against; the directory keeps the file alive.
fn backends() -> Vec<(&'static str, Arc<EmbeddedStore>, Option<TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = EmbeddedStore::open(&dir.path().join("bandsync.db")).unwrap();
    vec![
        (
            "in memory",
            Arc::new(EmbeddedStore::in_memory().unwrap()),
            None,
        ),
        ("file-backed", Arc::new(file), Some(dir)),
    ]
}

macro_rules! contract_tests {
    ($($suite:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $suite() {
            for (backend, store, _dir) in backends() {
                // Shown with a failure, to tell which backend broke the contract.
                eprintln!("{} on the {backend} store", stringify!($suite));
                contract::$suite(&*store).await;
            }
        }
    )*};
}

contract_tests!(
    config_store_contract,
    source_store_contract,
    config_revision_contract,
    source_revision_contract,
    source_revision_race_contract,
    catalog_contract,
    catalog_page_contract,
    purge_mark_contract,
    operation_walk_contract,
    operation_contract,
    watch_channel_contract,
    dedupe_contract,
    channel_log_contract,
    connection_contract,
    health_contract,
    entity_store_contract,
    presence_contract,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_concurrency_contract() {
    for (backend, store, _dir) in backends() {
        eprintln!("presence_concurrency_contract on the {backend} store");
        contract::presence_concurrency_contract(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entity_commit_concurrency_contract() {
    for (backend, store, _dir) in backends() {
        eprintln!("entity_commit_concurrency_contract on the {backend} store");
        contract::entity_commit_concurrency_contract(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_log_concurrency_contract() {
    for (backend, store, _dir) in backends() {
        eprintln!("channel_log_concurrency_contract on the {backend} store");
        contract::channel_log_concurrency_contract(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_store_contract() {
    for (backend, store, _dir) in backends() {
        eprintln!("store_contract on the {backend} store");
        contract::store_contract(store).await;
    }
}

/// SQLite holds what DynamoDB's 400 KB items cannot.
#[tokio::test]
async fn a_huge_entity_commits_whole() {
    for (backend, store, _dir) in backends() {
        eprintln!("huge_entity_contract on the {backend} store");
        assert!(!contract::huge_entity_contract(&*store, 600 * 1024).await);
    }
}
