//! Every store port on DynamoDB, in the two tables of template.yaml (`pk`/`sk` strings,
//! TTL attribute `expires_at`). Every request path is a GetItem, a Query on a key, or a
//! (transactional) write: never a Scan.
//!
//! Sync table:
//! - `BAND#b / CONFIG` (+ `BANDS / BAND#b`, the registry), `BAND#b / SOURCE#s`,
//!   `BAND#b / GEN#s` (the source's generation), `FILES#b#s / FILE#id`;
//! - `CHANNEL#id / CHANNEL` (+ `BAND#b / WATCH#id`, the band's listing);
//! - `OP#id / OP` (+ `OPS#b / <started_at>#<id>`, newest-first listing), `OP#id / ITEM#n`;
//! - `WEBHOOK#<channel>#<n> / DEDUPE` with `expires_at` (earlier builds wrote
//!   `WEBHOOK#WEBHOOK#<channel>#<n>`, still read; see `dedupe`);
//! - `CHAN#c / HEAD` (seq, epoch, delivered), `CHAN#c / SEQ#n` (the events),
//!   `CHAN#c / EVID#id` (seq of an event id: what makes appends idempotent);
//! - two-way sync: `DEVICE#d / DEVICE` (member, next_mid, registered_at),
//!   `DEVICE#d / MID#n` (receipts), `DEVICE#d / PARKED#n` (rejected ones, again);
//!   `ENTITIES#b / <type>#<id>` (entity_version), `HIST#b#<type>#<id> / V#n`
//!   (committed_at); `CONFLICTS#b / ID#id`, `CONFLICTS#b / AT#<opened_at>#<id>` and
//!   `CONFLICTS#b / OPEN#<opened_at>#<id>` (open ones only).
//!
//! Connections table: `CONN#id / META` (TTL past API Gateway's 2 h), `CHAN#c / CONN#id`
//! (fan-out is one Query), `CONN#id / SUB#c` (cleanup on disconnect); presence:
//! `PRES#b / MEMBER#m` (the member's live connection ids as a string set, its session)
//! and `PRESENCE#LEAVING / <leaving_since>#<band>#<member>` (the sweep's index).
//!
//! Records are JSON in a `body` attribute beside the keys, as in the embedded store.
//!
//! One file per concern: `keys` (every key above, and nowhere else), `item` (attribute
//! codecs), `client` (single requests and their failures), `batch` (batch requests and
//! their retries); then one file per port: `config` (configurations and sources),
//! `catalog`, `operations`, `watch` (watch channels), `dedupe`, `log` (the channel log),
//! `connections`, `presence`, `entities` (two-way sync).

mod batch;
mod catalog;
mod client;
mod config;
mod connections;
mod dedupe;
mod entities;
mod item;
mod keys;
mod log;
mod operations;
mod presence;
mod watch;

use crate::backoff::{Sleeper, TokioSleeper};
use crate::ports::{HealthCheck, PortResult};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    sync_table: String,
    connections_table: String,
    /// Appends to one channel from this process take turns, so they do not race each
    /// other for the head; writers in other processes are handled by the conditional
    /// head update and retries.
    appending: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Where the waits of the retry loops (unprocessed batch items, lost append races)
    /// are taken.
    sleeper: Arc<dyn Sleeper>,
    /// What entity commits cost, as DynamoDB reports it (see [`DynamoStore::commit_cost`]).
    commit_cost: Arc<CommitCost>,
}

/// Entity commits this store made, and the write capacity DynamoDB reported for them.
#[derive(Debug, Default)]
struct CommitCost {
    commits: AtomicU64,
    /// Thousandths of a write unit, so an atomic integer adds them up.
    milli_units: AtomicU64,
}

impl DynamoStore {
    pub fn new(client: Client, sync_table: String, connections_table: String) -> Self {
        Self {
            client,
            sync_table,
            connections_table,
            appending: Arc::default(),
            sleeper: Arc::new(TokioSleeper),
            commit_cost: Arc::default(),
        }
    }

    /// The entity commits this store (and its clones) made and the write capacity units
    /// DynamoDB reported for them (`ReturnConsumedCapacity`): what a mutation costs. The
    /// units stay 0 on an endpoint that does not report capacity.
    pub fn commit_cost(&self) -> (u64, f64) {
        let commits = self.commit_cost.commits.load(Ordering::Relaxed);
        let milli = self.commit_cost.milli_units.load(Ordering::Relaxed);
        (commits, milli as f64 / 1000.0)
    }

    /// The same store, waiting between retries through `sleeper`.
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }
}

#[async_trait]
impl HealthCheck for DynamoStore {
    /// A key lookup on each table: a data-plane call, cheap and not rate-limited like
    /// DescribeTable.
    async fn check(&self) -> PortResult<()> {
        self.get(&self.sync_table, keys::health(), false).await?;
        self.get(&self.connections_table, keys::health(), false)
            .await?;
        Ok(())
    }
}
