//! The push service: one `push` frame's mutations, checked as a whole, then decided
//! and committed one by one, in mid order.
//!
//! A frame is refused whole (an `error` frame, nothing written) when it is not the
//! member's to send (another band: `forbidden`; an unknown or another member's device:
//! `unknown_device` / `device_taken`), too large (`push_too_large`), too fast
//! (`rate_limited` with `retry_after`), or when any of its mutations is malformed: each
//! is parsed ([`Mutation::parse`]) and checked against the band's entity types
//! ([`Engine::check`]), and its `base_version` against the stored versions plus what
//! the frame's own earlier mutations can add. A client with one bad mutation in its
//! queue learns which (`mutations[i]: fields.x: ...`) and that nothing of the frame
//! was applied, so it can fix or drop that one and send the frame again.
//!
//! Then each mutation gets one verdict. The idempotency key is (device, mid): a mid
//! below the device's `next_mid` was answered before (`duplicate`, with the original
//! verdict from its receipt); one above it is a gap (`out_of_order` with
//! `expected_mid`, and so is the rest of the frame); the expected one is decided by the
//! merge engine and written with its receipt, entity, history, conflicts and its event
//! in one [`Commit`]. A refused mutation (`rejected`) is committed too: its receipt
//! parks it and the mid advances, so one bad change never blocks the queue behind it.
//!
//! Events: the commit appends the change's `entity.*` event (and the `conflict.*`
//! events of the conflicts it opened or settled) to `band:<band>` in the same write, so
//! an applied change never lacks its events, and its receipt keeps the event's seq (a
//! duplicate answers with it); after the frame the
//! committed events are queued for broadcast. A crash between the commit and the
//! queueing is healed by the client's retry: its duplicate queues the event again (the
//! log recognises the event's id, so nothing is doubled), and the broadcaster fills
//! any gap from the log anyway.

use super::devices;
use super::merge::{ApplyContext, Engine, Verdict};
use super::mutation::{Mutation, MutationResult, MutationStatus};
use super::records::{
    Commit, CommitError, ConflictRecord, DeviceRecord, EntityRecord, HistoryEntry, Receipt,
};
use super::types::{BandTypes, EntityType};
use crate::error::{ErrorCode, Refusal};
use crate::model::{BandId, ChannelName, Connection, DeviceId, Event, NewEvent};
use crate::ports::{Clock, ConfigStore, EntityStore, PortError};
use crate::publish::Publisher;
use crate::wire::events::{ConflictOpened, ConflictResolved, EntityChanged, EventKind};
use crate::wire::frames::{MAX_PUSH_BYTES, MAX_PUSH_MUTATIONS, PushRequest};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Receipts read at once for a run of duplicates (the store's most per call).
const RECEIPT_PAGE: u64 = 1000;
/// Tries of one mutation whose entity (or device) another writer moved meanwhile.
const COMMIT_ATTEMPTS: usize = 8;
/// A duplicate's event is queued again only when its receipt is this recent: a crash
/// between commit and queueing is healed by the client's prompt retry, and an old
/// duplicate's event may be past the log's retention (appending it again would add it
/// anew).
const REQUEUE_WITHIN: chrono::Duration = chrono::Duration::hours(1);

/// A refused frame: what its `error` frame says.
#[derive(Debug)]
pub struct PushRefused {
    pub refusal: Refusal,
    /// `rate_limited`: seconds to wait before sending it again.
    pub retry_after: Option<u64>,
}

impl<E: Into<Refusal>> From<E> for PushRefused {
    fn from(e: E) -> Self {
        Self {
            refusal: e.into(),
            retry_after: None,
        }
    }
}

/// How fast a device may push: a bucket of `capacity` mutations refilled at
/// `per_second`. A frame takes one token per mutation (at least one); a frame the
/// bucket cannot pay is refused whole with the seconds until it could.
///
/// The defaults let a device replay a 1,000-mutation offline backlog at once (ten frames
/// of 100 empty the bucket, which refills in about three seconds), while a device
/// pushing in a loop is held to 300 mutations a second.
///
/// The buckets live in the handler's memory: each Lambda instance (and the local
/// stack's one process) keeps its own, so a device spread over N instances could push N
/// times faster. That bounds abuse well enough for a member's device (its connection
/// sticks to few instances) without a write per frame; the per-band cost of a write is
/// the commit's anyway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub capacity: f64,
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            capacity: 1000.0,
            per_second: 300.0,
        }
    }
}

/// Devices tracked at once by one handler before a sweep is due anyway.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    /// Its tokens at `now`, refilled since it was last paid from.
    fn refilled(&self, limit: RateLimit, now: DateTime<Utc>) -> f64 {
        let elapsed = (now - self.at).num_milliseconds().max(0) as f64 / 1000.0;
        (self.tokens + elapsed * limit.per_second).min(limit.capacity)
    }
}

#[derive(Debug, Default)]
struct Buckets {
    by_device: HashMap<DeviceId, Bucket>,
    /// When full buckets were last forgotten.
    swept_at: Option<DateTime<Utc>>,
}

/// The per-device buckets of one handler instance. A bucket that has refilled is the
/// same as none (a device seen for the first time starts full), so full ones are
/// forgotten: once per refill time (`capacity / per_second`, about three seconds by
/// default), or as soon as [`MAX_BUCKETS`] are tracked. Memory is bounded by the
/// devices that pushed within the last refill times, not by every device ever seen.
#[derive(Debug, Default)]
struct Limiter {
    buckets: Mutex<Buckets>,
}

impl Limiter {
    /// Take `cost` tokens of `device`'s bucket, or say how many seconds until it could.
    fn take(
        &self,
        limit: RateLimit,
        device: &DeviceId,
        cost: f64,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill_ms = (limit.capacity / limit.per_second.max(f64::MIN_POSITIVE) * 1000.0)
            .min(i64::MAX as f64) as i64;
        let sweep_due = buckets
            .swept_at
            .is_none_or(|t| (now - t).num_milliseconds() >= refill_ms);
        if sweep_due || buckets.by_device.len() >= MAX_BUCKETS {
            buckets
                .by_device
                .retain(|_, b| b.refilled(limit, now) < limit.capacity);
            buckets.swept_at = Some(now);
        }
        let bucket = buckets.by_device.entry(device.clone()).or_insert(Bucket {
            tokens: limit.capacity,
            at: now,
        });
        bucket.tokens = bucket.refilled(limit, now);
        bucket.at = now;
        // A frame larger than the bucket is paid once the bucket is full.
        let cost = cost.min(limit.capacity);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        let wait = (cost - bucket.tokens) / limit.per_second.max(f64::MIN_POSITIVE);
        Err(wait.ceil().max(1.0) as u64)
    }

    /// Buckets tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_device
            .len()
    }
}

/// A mutation of the frame that passed the checks, with the raw JSON it came as (a
/// rejected one is parked as it was pushed).
struct Checked {
    mutation: Mutation,
    raw: Value,
    ty: EntityType,
}

/// One mutation of a frame, as the checks left it.
enum Pending {
    /// A mid the device has not been answered for: checked whole.
    Fresh(Checked),
    /// A mid below the device's `next_mid`: answered before, so it is answered again
    /// from its receipt and not judged anew (its type may have been removed since, a
    /// field may have become invalid). `mutation` is what parsed of it, to find its
    /// events again; none if it no longer parses.
    Answered {
        mid: u64,
        mutation: Option<Mutation>,
    },
}

impl Pending {
    fn mid(&self) -> u64 {
        match self {
            Self::Fresh(c) => c.mutation.mid,
            Self::Answered { mid, .. } => *mid,
        }
    }

    /// Its entity type, for the analytics (none: it no longer parses).
    fn entity_type(&self) -> Option<&crate::model::EntityTypeName> {
        match self {
            Self::Fresh(c) => Some(&c.ty.name),
            Self::Answered { mutation, .. } => mutation.as_ref().map(|m| &m.entity_type),
        }
    }
}

/// The most an entity may be, as the JSON of its record after a mutation, and the most
/// the history entry of that version may be (it holds the entity after, the fields as
/// sent and the diff). Past either the mutation is `rejected` with `entity_too_large`
/// (parked, its mid advances): checked here, before any store sees it, so both
/// backends refuse the same mutations. Both sit well under DynamoDB's 400 KB item (the
/// adapter refuses a body over 390 KB), and a receipt (the result's fields, at most an
/// entity, with a parked copy of at most one push frame) stays under it too.
pub const MAX_ENTITY_BYTES: usize = 128 * 1024;
pub const MAX_HISTORY_BYTES: usize = 288 * 1024;

pub struct PushService {
    entities: Arc<dyn EntityStore>,
    configs: Arc<dyn ConfigStore>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
    engine: Engine,
    limiter: Limiter,
    /// How fast one device may push (per handler instance; see [`RateLimit`]).
    pub rate: RateLimit,
}

impl PushService {
    pub fn new(
        entities: Arc<dyn EntityStore>,
        configs: Arc<dyn ConfigStore>,
        publisher: Publisher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            entities,
            configs,
            publisher,
            clock,
            engine: Engine::new(),
            limiter: Limiter::default(),
            rate: RateLimit::default(),
        }
    }

    /// `register_device` for the connection's member.
    pub async fn register(
        &self,
        conn: &Connection,
        request: crate::wire::frames::RegisterDevice,
    ) -> Result<DeviceRecord, Refusal> {
        devices::register(
            self.entities.as_ref(),
            &conn.user,
            request,
            self.clock.now(),
        )
        .await
    }

    /// One `push` frame (`bytes` long) from `conn`: a verdict per mutation, in order.
    #[tracing::instrument(skip_all, fields(band = %request.band, device = %request.device, count = request.mutations.len()))]
    pub async fn push(
        &self,
        conn: &Connection,
        request: PushRequest,
        bytes: usize,
    ) -> Result<Vec<MutationResult>, PushRefused> {
        let PushRequest {
            band,
            device,
            mutations,
        } = request;
        if !conn.bands.contains(&band) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("you are not a member of band {band}"),
            )
            .into());
        }
        if mutations.len() > MAX_PUSH_MUTATIONS || bytes > MAX_PUSH_BYTES {
            return Err(Refusal::new(
                ErrorCode::PushTooLarge,
                format!(
                    "a push is at most {MAX_PUSH_MUTATIONS} mutations and {MAX_PUSH_BYTES} bytes \
                     (this one: {} mutations, {bytes} bytes); split it",
                    mutations.len()
                ),
            )
            .into());
        }
        let record = self.entities.get_device(&device).await?.ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownDevice,
                format!("device {device} is not registered; send register_device first"),
            )
        })?;
        devices::taken(&record, &conn.user)?;
        let cost = mutations.len().max(1) as f64;
        if let Err(wait) = self
            .limiter
            .take(self.rate, &device, cost, self.clock.now())
        {
            return Err(PushRefused {
                refusal: Refusal::new(
                    ErrorCode::RateLimited,
                    format!(
                        "device {device} pushes faster than {} mutations a second; send this frame again in {wait} s",
                        self.rate.per_second
                    ),
                ),
                retry_after: Some(wait),
            });
        }
        let checked = self.check(&band, record.next_mid, mutations).await?;
        let mut run = Run {
            service: self,
            band: &band,
            conn,
            device: &device,
            next_mid: record.next_mid,
            committed: Vec::new(),
            receipts: BTreeMap::new(),
            loaded: None,
            refound: Vec::new(),
            tally: Default::default(),
        };
        let outcome = run.decide_all(&checked).await;
        run.tally.emit_frame(
            checked.iter().map(Pending::entity_type),
            outcome.as_ref().ok(),
        );
        // Whatever happened, what was committed is queued for broadcast.
        let committed = std::mem::take(&mut run.committed);
        self.enqueue(&band, committed).await;
        outcome
    }

    /// Parse and check every mutation of the frame against the band's types and the
    /// stored versions: any refusal refuses the frame, before anything is written.
    /// Only mids from the device's `next_mid` on are judged; an earlier one was answered
    /// already and is answered again as it was (see [`Pending::Answered`]).
    async fn check(
        &self,
        band: &BandId,
        next_mid: u64,
        mutations: Vec<Value>,
    ) -> Result<Vec<Pending>, PushRefused> {
        let config = self.configs.get_config(band).await?;
        let types = match config {
            Some(c) => BandTypes::new(c.entity_types, c.strict_entities),
            None => BandTypes::new(Vec::new(), false),
        };
        let mut checked = Vec::with_capacity(mutations.len());
        // Per entity: the stored version and how many earlier mutations of this frame
        // could each add one to it.
        let mut versions: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for (i, raw) in mutations.into_iter().enumerate() {
            let answered = raw
                .get("mid")
                .and_then(Value::as_u64)
                .filter(|mid| (1..next_mid).contains(mid));
            if let Some(mid) = answered {
                let mutation = Mutation::parse(&raw).ok().filter(|m| m.mid == mid);
                checked.push(Pending::Answered { mid, mutation });
                continue;
            }
            let at = |e: super::mutation::MutationError| e.at(&format!("mutations[{i}]"));
            let mutation = Mutation::parse(&raw).map_err(at)?;
            let ty = types.get(&mutation.entity_type).map_err(at)?.into_owned();
            self.engine.check(&ty, &mutation).map_err(at)?;
            let key = (mutation.entity_type.to_string(), mutation.id.to_string());
            let (stored, earlier) = match versions.get(&key) {
                Some(v) => *v,
                None => {
                    let current = self
                        .entities
                        .get_entity(band, &mutation.entity_type, &mutation.id)
                        .await?;
                    (current.map_or(0, |e| e.version), 0)
                }
            };
            if mutation.base_version > stored + earlier {
                return Err(Refusal::new(
                    ErrorCode::BaseVersionFromFuture,
                    format!(
                        "mutations[{i}]: base_version {} of {}/{} is newer than its version {}",
                        mutation.base_version,
                        mutation.entity_type,
                        mutation.id,
                        stored + earlier
                    ),
                )
                .into());
            }
            versions.insert(key, (stored, earlier + 1));
            checked.push(Pending::Fresh(Checked { mutation, raw, ty }));
        }
        Ok(checked)
    }

    /// Queue committed (or re-found) events for broadcast. A failure is logged only:
    /// the events are in the log, the next queued message of the channel makes the
    /// broadcaster fill the gap, and a client's duplicate queues them again.
    async fn enqueue(&self, band: &BandId, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let channel = ChannelName::Band(band.clone());
        if let Err(e) = self.publisher.enqueue(&channel, &events).await {
            tracing::warn!(%band, error = ?e, "committed events could not be queued for broadcast");
        }
    }
}

/// One frame's decisions in progress.
struct Run<'a> {
    service: &'a PushService,
    band: &'a BandId,
    conn: &'a Connection,
    device: &'a DeviceId,
    /// The device's next mid as far as this frame knows.
    next_mid: u64,
    /// The events committed, for broadcast.
    committed: Vec<Event>,
    /// The device's receipts read so far (one read for a run of duplicates), and the
    /// mids that read covered.
    receipts: BTreeMap<u64, Receipt>,
    loaded: Option<std::ops::RangeInclusive<u64>>,
    /// Duplicates whose events are appended and queued again after the frame: the
    /// index of the verdict, and its events (the entity's first).
    refound: Vec<(usize, Vec<NewEvent>)>,
    /// The frame's verdicts, for its analytics' EMF lines.
    tally: super::stats::Tally,
}

impl Run<'_> {
    async fn decide_all(
        &mut self,
        checked: &[Pending],
    ) -> Result<Vec<MutationResult>, PushRefused> {
        let mut results = Vec::with_capacity(checked.len());
        let mut gap = false;
        for p in checked {
            let mid = p.mid();
            let result = if gap || mid > self.next_mid {
                // A gap: nothing after it can be decided before the missing mids are.
                gap = true;
                MutationResult {
                    expected_mid: Some(self.next_mid),
                    ..MutationResult::bare(mid, MutationStatus::OutOfOrder)
                }
            } else {
                match p {
                    Pending::Answered { mid, mutation } => {
                        self.duplicate(*mid, mutation.as_ref(), results.len())
                            .await?
                    }
                    Pending::Fresh(c) if mid < self.next_mid => {
                        self.duplicate(mid, Some(&c.mutation), results.len())
                            .await?
                    }
                    Pending::Fresh(c) => self.apply(c, results.len()).await?,
                }
            };
            results.push(result);
        }
        self.requeue(&mut results).await;
        Ok(results)
    }

    /// A mid answered before: its verdict again (its events are queued again after the
    /// frame, see [`Self::requeue`]), without the entity's `fields`: the client has the
    /// entity from its events (or a snapshot), and a replayed backlog's answer would
    /// otherwise carry the whole entity once per mutation.
    async fn duplicate(
        &mut self,
        mid: u64,
        mutation: Option<&Mutation>,
        index: usize,
    ) -> Result<MutationResult, PushRefused> {
        let s = self.service;
        let Some(receipt) = self.receipt(mid).await? else {
            // Past the receipts' retention: known to be answered, the verdict is gone.
            return Ok(MutationResult::bare(mid, MutationStatus::Duplicate));
        };
        if let Some(m) = mutation
            && s.clock.now() - receipt.at <= REQUEUE_WITHIN
        {
            let events = self.events_of(m, &receipt).await?;
            if !events.is_empty() {
                self.refound.push((index, events));
            }
        }
        Ok(MutationResult {
            fields: None,
            ..receipt.result.as_duplicate()
        })
    }

    /// The receipt of `mid`, read with the device's next ones (up to its `next_mid`) so
    /// that a frame sent again costs one read, not one per mutation.
    async fn receipt(&mut self, mid: u64) -> Result<Option<Receipt>, PortError> {
        if !self.loaded.as_ref().is_some_and(|r| r.contains(&mid)) {
            let to = self
                .next_mid
                .saturating_sub(1)
                .min(mid.saturating_add(RECEIPT_PAGE - 1))
                .max(mid);
            let page = self.service.entities.receipts(self.device, mid, to).await?;
            self.receipts = page.into_iter().map(|r| (r.mid, r)).collect();
            self.loaded = Some(mid..=to);
        }
        Ok(self.receipts.get(&mid).cloned())
    }

    /// The events of a duplicate's change, made again from what is stored (its history
    /// entry, its conflicts): none for a refused one, or when the history is gone.
    async fn events_of(&self, m: &Mutation, receipt: &Receipt) -> Result<Vec<NewEvent>, PortError> {
        let s = self.service;
        let original = receipt
            .result
            .original_status
            .unwrap_or(receipt.result.status);
        let (Some(version), true) = (
            receipt.result.version,
            matches!(
                original,
                MutationStatus::Applied | MutationStatus::Merged | MutationStatus::Conflict
            ),
        ) else {
            return Ok(Vec::new());
        };
        let Some(history) = s
            .entities
            .history_entry(self.band, &m.entity_type, &m.id, version)
            .await?
            .filter(|h| (&h.device, h.mid) == (self.device, m.mid))
        else {
            return Ok(Vec::new());
        };
        let mut events = vec![change_event(&history)];
        for id in receipt.result.conflict.iter().chain(m.resolves.iter()) {
            if let Some(conflict) = s.entities.get_conflict(self.band, id).await? {
                events.extend(conflict_events(&conflict));
            }
        }
        Ok(events)
    }

    /// Append the duplicates' events again and queue them: the log recognises every id
    /// and returns the stored event, so nothing is doubled, and an event whose queueing
    /// was lost (a crash after the commit) reaches the subscribers now. Each duplicate
    /// answers with its event's seq. A failure here only costs that seq: it is logged.
    async fn requeue(&mut self, results: &mut [MutationResult]) {
        if self.refound.is_empty() {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        let events: Vec<NewEvent> = self
            .refound
            .iter()
            .flat_map(|(_, events)| events.iter())
            .filter(|e| seen.insert(e.id.clone()))
            .cloned()
            .collect();
        let channel = ChannelName::Band(self.band.clone());
        let stored = match self.service.publisher.publish(&channel, &events).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(band = %self.band, error = ?e, "duplicates' events could not be queued again");
                return;
            }
        };
        let seqs: HashMap<&str, u64> = stored.iter().map(|e| (e.id.as_str(), e.seq)).collect();
        for (index, events) in &self.refound {
            if let (Some(r), Some(first)) = (results.get_mut(*index), events.first()) {
                // The receipt's seq (commits write it); a receipt written before they
                // did has none, and takes the one the log answers.
                r.seq = r.seq.or_else(|| seqs.get(first.id.as_str()).copied());
            }
        }
    }

    /// The expected mid: decide it and commit the verdict, again if another writer
    /// moved the entity meanwhile.
    async fn apply(&mut self, c: &Checked, index: usize) -> Result<MutationResult, PushRefused> {
        let s = self.service;
        let m = &c.mutation;
        for _ in 0..COMMIT_ATTEMPTS {
            let current = s
                .entities
                .get_entity(self.band, &m.entity_type, &m.id)
                .await?;
            let base = match &current {
                Some(cur) if m.base_version > 0 && m.base_version < cur.version => s
                    .entities
                    .history_entry(self.band, &m.entity_type, &m.id, m.base_version)
                    .await?
                    .map(|h| h.entity.hlc),
                _ => None,
            };
            let resolving = match &m.resolves {
                Some(id) => s.entities.get_conflict(self.band, id).await?,
                None => None,
            };
            let now = s.clock.now();
            let ctx = ApplyContext {
                band: self.band,
                ty: &c.ty,
                member: &self.conn.user,
                device: self.device,
                now,
                resolving: resolving.as_ref(),
            };
            let verdict = s.engine.apply(&ctx, current.as_ref(), base.as_ref(), m);
            let (commit, mut result) = self.commit_of(c, current.as_ref(), verdict, now);
            match s.entities.commit_events(&commit).await {
                Ok(events) => {
                    self.tally.commit(&commit);
                    self.next_mid = m.mid + 1;
                    result.seq = events.first().map(|e| e.seq);
                    self.committed.extend(events);
                    return Ok(result);
                }
                Err(CommitError::Raced(why)) => {
                    tracing::debug!(mid = m.mid, %why, "commit raced; deciding again");
                    // Another connection of this device may have taken the mid.
                    let device = s.entities.get_device(self.device).await?;
                    if let Some(d) = device.filter(|d| d.next_mid > m.mid) {
                        self.next_mid = d.next_mid;
                        return self.duplicate(m.mid, Some(m), index).await;
                    }
                }
                Err(CommitError::Port(e)) => return Err(e.into()),
            }
        }
        Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "{}/{} kept changing while mutation {} was decided; push again from mid {}",
                m.entity_type, m.id, m.mid, m.mid
            ),
        )
        .into())
    }

    /// The commit of a verdict (with the events of the conflicts it opened or settled),
    /// and the answer.
    fn commit_of(
        &self,
        c: &Checked,
        current: Option<&EntityRecord>,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> (Commit, MutationResult) {
        let m = &c.mutation;
        let receipt = |result: &MutationResult, parked: Option<Value>| Receipt {
            device: self.device.clone(),
            mid: m.mid,
            band: self.band.clone(),
            member: self.conn.user.clone(),
            at: now,
            result: result.clone(),
            parked,
        };
        let expected_version = current.map_or(0, |e| e.version);
        let oversize = match &verdict {
            Verdict::Changed {
                entity, history, ..
            } => too_large(entity, history),
            Verdict::Refused { .. } => None,
        };
        let verdict = match oversize {
            Some(why) => Verdict::Refused {
                result: MutationResult {
                    // The current state is not sent back: it may be near the bound itself
                    // (and a parked receipt holds it beside the mutation as pushed).
                    version: current.map(|e| e.version),
                    code: Some(ErrorCode::EntityTooLarge),
                    message: Some(format!(
                        "{}/{} {why}; split it or remove fields",
                        m.entity_type, m.id
                    )),
                    ..MutationResult::bare(m.mid, MutationStatus::Rejected)
                },
            },
            None => verdict,
        };
        match verdict {
            Verdict::Changed {
                entity,
                history,
                result,
                conflicts,
            } => {
                let event = change_event(&history);
                let commit = Commit {
                    device: self.device.clone(),
                    mid: m.mid,
                    receipt: receipt(&result, None),
                    entity: Some(entity),
                    expected_version,
                    history: Some(history),
                    more_events: conflicts.iter().filter_map(conflict_change).collect(),
                    conflicts,
                    event: Some((ChannelName::Band(self.band.clone()), event)),
                };
                (commit, result)
            }
            Verdict::Refused { result } => {
                let parked = (result.status == MutationStatus::Rejected).then(|| c.raw.clone());
                let commit = Commit {
                    device: self.device.clone(),
                    mid: m.mid,
                    receipt: receipt(&result, parked),
                    entity: None,
                    expected_version,
                    history: None,
                    conflicts: Vec::new(),
                    event: None,
                    more_events: Vec::new(),
                };
                (commit, result)
            }
        }
    }
}

/// Why a change would make its entity (or the history entry of that version) larger than
/// [`MAX_ENTITY_BYTES`] ([`MAX_HISTORY_BYTES`]), if it would.
fn too_large(entity: &EntityRecord, history: &HistoryEntry) -> Option<String> {
    let entity_bytes = json_len(entity);
    if entity_bytes > MAX_ENTITY_BYTES {
        return Some(format!(
            "would be {entity_bytes} bytes, more than the {MAX_ENTITY_BYTES} an entity may be"
        ));
    }
    let history_bytes = json_len(history);
    if history_bytes > MAX_HISTORY_BYTES {
        return Some(format!(
            "would have a history entry of {history_bytes} bytes (the entity after, the change \
             and its diff), more than the {MAX_HISTORY_BYTES} one may be"
        ));
    }
    None
}

/// How long `value` is as JSON (as the stores keep it), without building the string.
fn json_len<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Records serialise without failing (string keys only); a failure counts as too large.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// The `entity.*` event of a history entry: made from what is stored, so the same
/// change always makes the same event (and a duplicate can make it again).
pub fn change_event(history: &HistoryEntry) -> NewEvent {
    let (text_updates, text_refetch) = super::policy::TextPolicy::event_updates(history);
    let change = EntityChanged {
        entity_type: history.entity_type.clone(),
        id: history.id.clone(),
        version: history.version,
        fields: history
            .diff
            .iter()
            .map(|d| (d.field.clone(), d.after.clone()))
            .collect(),
        member: history.member.clone(),
        device: history.device.clone(),
        mid: history.mid,
        text_updates,
        text_refetch,
    };
    NewEvent::new(
        EventKind::entity_event_id(&history.device, history.mid),
        history.at,
        EventKind::entity(history.op, change),
    )
}

/// The event of what a commit did to a conflict: `conflict.opened` for an open one,
/// `conflict.resolved` for a settled one (its `conflict.opened` is in the log already).
pub fn conflict_change(conflict: &ConflictRecord) -> Option<NewEvent> {
    let mut events = conflict_events(conflict);
    if conflict.resolution.is_some() {
        events.pop()
    } else {
        events.into_iter().next()
    }
}

/// The events of a conflict as it stands: `conflict.opened`, and `conflict.resolved`
/// once settled.
pub fn conflict_events(conflict: &ConflictRecord) -> Vec<NewEvent> {
    let mut events = vec![NewEvent::new(
        format!("c:{}:opened", conflict.id),
        conflict.opened_at,
        EventKind::ConflictOpened(ConflictOpened {
            conflict: conflict.id.clone(),
            entity_type: conflict.entity_type.clone(),
            id: conflict.entity_id.clone(),
            field: conflict.field.clone(),
            values: conflict
                .candidates
                .iter()
                .map(|c| c.value.clone())
                .collect(),
            deadline: conflict.deadline,
        }),
    )];
    if let Some(r) = &conflict.resolution {
        events.push(NewEvent::new(
            format!("c:{}:resolved", conflict.id),
            r.at,
            EventKind::ConflictResolved(ConflictResolved {
                conflict: conflict.id.clone(),
                entity_type: conflict.entity_type.clone(),
                id: conflict.entity_id.clone(),
                field: conflict.field.clone(),
                value: r.value.clone(),
                how: r.how.clone(),
                by: r.by.clone(),
                reason: r.reason.clone(),
            }),
        ));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_backlog_fits_the_bucket_and_a_loop_is_held_back() {
        let limiter = Limiter::default();
        let limit = RateLimit::default();
        let device = DeviceId::parse("ipad-ringo").unwrap();
        // GIVEN a device back online with 1,000 queued mutations: ten frames of 100 pass
        for _ in 0..10 {
            assert_eq!(limiter.take(limit, &device, 100.0, at(0)), Ok(()));
        }
        // WHEN it pushes again at once THEN it waits for the bucket to refill
        assert_eq!(limiter.take(limit, &device, 100.0, at(0)), Err(1));
        assert_eq!(limiter.take(limit, &device, 500.0, at(0)), Err(2));
        // AND a second later 300 more mutations are allowed
        assert_eq!(limiter.take(limit, &device, 300.0, at(1000)), Ok(()));
        assert!(limiter.take(limit, &device, 1.0, at(1000)).is_err());
        // AND another device has its own bucket
        let other = DeviceId::parse("phone-paul").unwrap();
        assert_eq!(limiter.take(limit, &other, 500.0, at(1000)), Ok(()));
    }

    #[test]
    fn buckets_that_refilled_are_forgotten() {
        let limiter = Limiter::default();
        let limit = RateLimit::default();
        let device = |n: usize| DeviceId::parse(&format!("device-{n:04}")).unwrap();
        // GIVEN 100 devices that pushed once at t=0, and one that emptied its bucket
        for n in 0..100 {
            assert_eq!(limiter.take(limit, &device(n), 10.0, at(0)), Ok(()));
        }
        let busy = DeviceId::parse("busy-device").unwrap();
        assert_eq!(limiter.take(limit, &busy, 1000.0, at(0)), Ok(()));
        assert_eq!(limiter.tracked(), 101);
        // WHEN one more device pushes after the small buckets refilled (10 tokens take
        // 34 ms) but before a refill time passed since the last sweep, nothing goes yet
        assert_eq!(limiter.take(limit, &device(100), 1.0, at(1000)), Ok(()));
        assert_eq!(limiter.tracked(), 102);
        // AND the busy device spends what it got back by t=3 s
        assert_eq!(limiter.take(limit, &busy, 900.0, at(3000)), Ok(()));
        // WHEN a refill time (1000 / 300 s) has passed since the last sweep, the next
        // push forgets every full bucket: the 101 idle ones, not the busy one (120
        // tokens of 1,000 at t=3.4 s), which keeps its debt
        assert_eq!(limiter.take(limit, &device(101), 1.0, at(3400)), Ok(()));
        assert_eq!(limiter.tracked(), 2);
        assert_eq!(limiter.take(limit, &busy, 500.0, at(3400)), Err(2));
        // AND a forgotten device starts again with a full bucket
        assert_eq!(limiter.take(limit, &device(0), 1000.0, at(3400)), Ok(()));
    }
}
