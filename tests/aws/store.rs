//! The port contract suites, written once in `bandsync::contract`, run unchanged against
//! the DynamoDB adapter on moto's server, with the tables created by the same key schema
//! template.yaml declares (support.rs / schema.rs).

use crate::support::*;
use bandsync::adapters::aws::dynamo::DynamoStore;
use bandsync::contract;
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
async fn the_whole_store_contract() {
    contract::store_contract(Arc::new(store().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_two_processes_race_on_the_head_and_stay_gapless() {
    use bandsync::model::{ChannelName, NewEvent};
    use bandsync::ports::ChannelLog;
    // GIVEN two stores over the same tables (two Lambda instances: no shared lock)
    let moto = moto();
    let (sync_table, connections_table) = (unique("sync"), unique("connections"));
    moto.create_tables(&sync_table, &connections_table).await;
    let stores: Vec<_> = (0..3)
        .map(|_| {
            DynamoStore::new(
                moto.dynamodb(),
                sync_table.clone(),
                connections_table.clone(),
            )
        })
        .collect();
    let channel = ChannelName::parse("band:race").unwrap();
    // WHEN each appends 15 events at the same time
    let mut tasks = tokio::task::JoinSet::new();
    for (w, store) in stores.into_iter().enumerate() {
        let channel = channel.clone();
        tasks.spawn(async move {
            for i in 0..15 {
                let event = NewEvent {
                    id: format!("w{w}-{i}"),
                    event: "file.created".into(),
                    ts: chrono::Utc::now(),
                    data: serde_json::json!({}),
                };
                store.append(&channel, &[event]).await.unwrap();
            }
            store
        });
    }
    let stores = tasks.join_all().await;
    // THEN the log holds 45 events with seqs 1..=45, each id once
    let log = stores[0].read_after(&channel, 0, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=45).collect::<Vec<_>>()
    );
    let ids: std::collections::BTreeSet<_> = log.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 45);
}
