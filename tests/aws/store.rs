//! The port contract suites, written once in `bandsync_testkit::contract`, run unchanged against
//! the DynamoDB adapter on moto's server, with the tables created by the same key schema
//! template.yaml declares (support.rs / schema.rs).

use crate::support::*;
use bandsync::adapters::aws::dynamo::DynamoStore;
use bandsync_testkit::contract;
use std::sync::Arc;

async fn store() -> DynamoStore {
    let moto = moto();
    let (sync_table, connections_table) = (unique("sync"), unique("connections"));
    moto.create_tables(&sync_table, &connections_table).await;
    DynamoStore::new(moto.dynamodb(), sync_table, connections_table)
}

#[tokio::test]
async fn config_source_and_catalog_contracts() {
    let s = store().await;
    contract::config_store_contract(&s).await;
    contract::source_store_contract(&s).await;
    contract::catalog_contract(&s).await;
}

/// Conditional writes: no write from a stale read undoes another.
#[tokio::test]
async fn revision_contracts() {
    let s = store().await;
    contract::config_revision_contract(&s).await;
    contract::source_revision_contract(&s).await;
    contract::source_revision_race_contract(&s).await;
}

/// A deleted source's purge: its marks, and its catalog a page at a time.
#[tokio::test]
async fn purge_contracts() {
    let s = store().await;
    contract::purge_mark_contract(&s).await;
    contract::catalog_page_contract(&s).await;
    contract::operation_walk_contract(&s).await;
}

#[tokio::test]
async fn operation_contract() {
    contract::operation_contract(&store().await).await;
}

#[tokio::test]
async fn watch_channel_and_dedupe_contracts() {
    let s = store().await;
    contract::watch_channel_contract(&s).await;
    contract::dedupe_contract(&s).await;
}

#[tokio::test]
async fn channel_log_contract() {
    contract::channel_log_contract(&store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_log_concurrency_contract() {
    contract::channel_log_concurrency_contract(Arc::new(store().await)).await;
}

#[tokio::test]
async fn connection_and_health_contracts() {
    let s = store().await;
    contract::connection_contract(&s).await;
    contract::health_contract(&s).await;
}

#[tokio::test]
async fn entity_store_contract() {
    contract::entity_store_contract(&store().await).await;
}

#[tokio::test]
async fn presence_contract() {
    contract::presence_contract(&store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_commit_concurrency_contract() {
    contract::entity_commit_concurrency_contract(Arc::new(store().await)).await;
}

/// An entity too large for an item is refused before anything is sent (and costs
/// nothing); one that fits commits, and the commit is counted with the write units
/// DynamoDB reports for it (moto reports none, so only the count is checked here).
#[tokio::test]
async fn a_huge_entity_is_refused_cleanly_and_commits_are_counted() {
    let s = store().await;
    assert_eq!(s.commit_cost(), (0, 0.0));
    assert!(contract::huge_entity_contract(&s, 600 * 1024).await);
    assert_eq!(s.commit_cost().0, 0, "a refused commit sent nothing");
    assert!(!contract::huge_entity_contract(&s, 100 * 1024).await);
    assert_eq!(s.commit_cost().0, 1);
}

#[tokio::test]
async fn the_whole_store_contract() {
    contract::store_contract(Arc::new(store().await)).await;
}

// Not tested here: appends from several processes racing for the head. The adapter's
// conditional head update and retry handle that on DynamoDB, whose transactions are
// serializable; moto's are not isolated from each other (a failed transaction restores a
// deep copy of the whole table taken when it began, undoing writes that other requests
// committed meanwhile), so such a test fails on moto for moto's reasons. Within one
// process appends take turns, which channel_log_concurrency_contract covers.
// The same holds for entity commits, which take the same per-channel turn: the entity
// concurrency contract registers its devices before its commits start, so that moto's
// restore of a failed (raced) transaction has nothing else to undo.

/// Tables written by earlier builds keep a webhook message under `WEBHOOK#WEBHOOK#<key>`
/// (the intake and the adapter both added the prefix). Until those rows expire, a message
/// they remember is still a repeat.
#[tokio::test]
async fn a_dedupe_row_in_the_earlier_key_form_is_still_a_repeat() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use bandsync::ports::DedupeStore;
    let moto = moto();
    let (sync_table, connections_table) = (unique("sync"), unique("connections"));
    moto.create_tables(&sync_table, &connections_table).await;
    let now = chrono::Utc::now();
    let ttl = std::time::Duration::from_secs(3600);
    // GIVEN a live row of message 7 of chan-1, and an expired one of message 8, both in
    // the earlier form
    for (message, expires) in [("chan-1#7", now + ttl), ("chan-1#8", now - ttl)] {
        moto.dynamodb()
            .put_item()
            .table_name(&sync_table)
            .item(
                "pk",
                AttributeValue::S(format!("WEBHOOK#WEBHOOK#{message}")),
            )
            .item("sk", AttributeValue::S("DEDUPE".into()))
            .item(
                "expires_at",
                AttributeValue::N(expires.timestamp().to_string()),
            )
            .item(
                "expires_ms",
                AttributeValue::N(expires.timestamp_millis().to_string()),
            )
            .send()
            .await
            .unwrap();
    }
    let s = DynamoStore::new(moto.dynamodb(), sync_table, connections_table);
    // WHEN this build asks, THEN the live one is a repeat, and stays one
    assert!(!s.first_seen("chan-1#7", now, ttl).await.unwrap());
    assert!(!s.first_seen("chan-1#7", now, ttl).await.unwrap());
    // AND the expired one is new, then remembered in the new form
    assert!(s.first_seen("chan-1#8", now, ttl).await.unwrap());
    assert!(!s.first_seen("chan-1#8", now, ttl).await.unwrap());
    // AND a message no build has seen is new
    assert!(s.first_seen("chan-1#9", now, ttl).await.unwrap());
}
