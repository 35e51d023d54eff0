//! Conflict analytics: how members' mutations were decided, per entity type and policy.
//!
//! One home for every count of verdicts:
//! - [`counters`]: what one [`Commit`] adds to its band's durable counters. The stores
//!   bump them inside the commit itself, so a verdict is counted exactly once (a raced
//!   or refused commit wrote nothing, a duplicate writes no commit). `GET /sync/stats`
//!   reads them back ([`verdict_counts`]);
//! - [`Tally`]: the same counts (and `duplicate` / `out_of_order`, which write nothing)
//!   over one push frame, emitted as EMF lines for the dashboard;
//! - [`conflict_counts`]: the per type and policy counts of `GET /sync/conflicts`.
//!
//! Dimensions stay low in cardinality: entity type, status, policy and outcome. A band
//! is never a dimension (its counts are in `/sync/stats`).

use super::mutation::MutationStatus;
use super::records::{Commit, ConflictRecord};
use crate::model::{BandId, EntityTypeName};
use crate::transport::metrics::{self, Unit};
use crate::wire::http::{ConflictCount, VerdictCounts};
use std::collections::BTreeMap;

/// A status counter is `status:<status>`; a policy's is `policy:<policy>:<outcome>`.
const STATUS: &str = "status:";
const POLICY: &str = "policy:";
/// The type of a rejected mutation whose type cannot be read back from its parked copy.
const UNKNOWN_TYPE: &str = "unknown";

/// One of a band's counters as a store keeps it (summed over the store's shards).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VerdictCount {
    pub entity_type: String,
    /// `status:<status>` or `policy:<policy>:<outcome>` (see [`counters`]).
    pub counter: String,
    pub count: u64,
}

/// Whether a stored name is one of the counters [`counters`] makes.
pub fn is_counter(name: &str) -> bool {
    name.starts_with(STATUS) || name.starts_with(POLICY)
}

/// The wire name of a status.
pub fn status_name(status: MutationStatus) -> &'static str {
    match status {
        MutationStatus::Applied => "applied",
        MutationStatus::Merged => "merged",
        MutationStatus::Conflict => "conflict",
        MutationStatus::Rejected => "rejected",
        MutationStatus::Duplicate => "duplicate",
        MutationStatus::OutOfOrder => "out_of_order",
    }
}

/// What a commit adds to its band's counters: the band, the entity type, and each
/// counter with how much it grows (one status counter, plus one per policy and outcome
/// of the fields decided against a concurrent change). None for a settlement (mid 0):
/// the service's decision, counted as a conflict's resolution by `/sync/conflicts`.
pub fn counters(commit: &Commit) -> Option<(&BandId, String, BTreeMap<String, u64>)> {
    if commit.is_settlement() {
        return None;
    }
    let entity_type = match (&commit.entity, &commit.receipt.parked) {
        (Some(e), _) => e.entity_type.to_string(),
        // A rejected mutation's type, from the mutation as pushed (checked before it
        // was decided, so it parses; anything else is counted as unknown).
        (None, Some(parked)) => parked
            .get("type")
            .and_then(|t| t.as_str())
            .and_then(|t| EntityTypeName::parse(t).ok())
            .map_or_else(|| UNKNOWN_TYPE.to_owned(), |t| t.to_string()),
        (None, None) => UNKNOWN_TYPE.to_owned(),
    };
    let mut counts = BTreeMap::new();
    let status = status_name(commit.receipt.result.status);
    counts.insert(format!("{STATUS}{status}"), 1);
    for d in commit.history.iter().flat_map(|h| &h.decisions) {
        if d.outcome != "applied" {
            *counts
                .entry(format!("{POLICY}{}:{}", d.policy, d.outcome))
                .or_default() += 1;
        }
    }
    Some((&commit.receipt.band, entity_type, counts))
}

/// The `/sync/stats` view of a band's counters, by entity type.
pub fn verdict_counts(rows: &[VerdictCount]) -> Vec<VerdictCounts> {
    let mut by_type: BTreeMap<&str, VerdictCounts> = BTreeMap::new();
    for row in rows {
        let counts = by_type
            .entry(row.entity_type.as_str())
            .or_insert_with(|| VerdictCounts {
                entity_type: row.entity_type.clone(),
                ..VerdictCounts::default()
            });
        if let Some(status) = row.counter.strip_prefix(STATUS) {
            let slot = match status {
                "applied" => &mut counts.applied,
                "merged" => &mut counts.merged,
                "conflict" => &mut counts.conflict,
                "rejected" => &mut counts.rejected,
                // A status a newer build counts: not shown by this one.
                _ => continue,
            };
            *slot += row.count;
        } else if let Some((policy, outcome)) = row
            .counter
            .strip_prefix(POLICY)
            .and_then(|rest| rest.rsplit_once(':'))
        {
            *counts
                .policies
                .entry(policy.to_owned())
                .or_default()
                .entry(outcome.to_owned())
                .or_default() += row.count;
        }
    }
    by_type.into_values().collect()
}

/// Per entity type (the policy is `ask`, the one that opens conflicts): how many of
/// `conflicts` are open, resolved, and how they were resolved.
pub fn conflict_counts(conflicts: &[ConflictRecord]) -> Vec<ConflictCount> {
    let mut counts: BTreeMap<EntityTypeName, ConflictCount> = BTreeMap::new();
    for c in conflicts {
        let count = counts
            .entry(c.entity_type.clone())
            .or_insert_with(|| ConflictCount {
                entity_type: c.entity_type.clone(),
                policy: super::types::Policy::Ask,
                open: 0,
                resolved: 0,
                resolved_by: Default::default(),
            });
        match &c.resolution {
            None => count.open += 1,
            Some(r) => {
                count.resolved += 1;
                *count.resolved_by.entry(r.how.clone()).or_default() += 1;
            }
        }
    }
    counts.into_values().collect()
}

/// The function the push path runs in: the metrics' fixed dimension.
pub const FUNCTION: (&str, &str) = ("Function", "ws-message");

/// The verdicts of one push frame, for its EMF lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// (entity type, status) -> mutations.
    pub mutations: BTreeMap<(String, String), u64>,
    /// (entity type, policy, outcome) -> fields.
    pub decisions: BTreeMap<(String, String, String), u64>,
}

impl Tally {
    /// A committed verdict (what [`counters`] makes of it).
    pub fn commit(&mut self, commit: &Commit) {
        let Some((_, entity_type, counts)) = counters(commit) else {
            return;
        };
        for (counter, n) in counts {
            if let Some(status) = counter.strip_prefix(STATUS) {
                *self
                    .mutations
                    .entry((entity_type.clone(), status.to_owned()))
                    .or_default() += n;
            } else if let Some((policy, outcome)) = counter
                .strip_prefix(POLICY)
                .and_then(|rest| rest.rsplit_once(':'))
            {
                *self
                    .decisions
                    .entry((entity_type.clone(), policy.to_owned(), outcome.to_owned()))
                    .or_default() += n;
            }
        }
    }

    /// A verdict that wrote nothing (`duplicate`, `out_of_order`), of a mutation of
    /// this type (none: one that no longer parses, counted as unknown).
    pub fn unwritten(&mut self, entity_type: Option<&EntityTypeName>, status: MutationStatus) {
        let ty = entity_type.map_or_else(|| UNKNOWN_TYPE.to_owned(), |t| t.to_string());
        *self
            .mutations
            .entry((ty, status_name(status).to_owned()))
            .or_default() += 1;
    }

    /// The frame is done: count its verdicts that wrote nothing (`results`, in the
    /// order of the frame's mutations, whose types `types` are), then [`Self::emit`].
    pub fn emit_frame<'t>(
        &mut self,
        types: impl Iterator<Item = Option<&'t EntityTypeName>>,
        results: Option<&Vec<super::mutation::MutationResult>>,
    ) {
        for (ty, r) in types.zip(results.into_iter().flatten()) {
            if matches!(
                r.status,
                MutationStatus::Duplicate | MutationStatus::OutOfOrder
            ) {
                self.unwritten(ty, r.status);
            }
        }
        self.emit();
    }

    /// One EMF line per (type, status) and per (type, policy, outcome).
    pub fn emit(&self) {
        for ((ty, status), n) in &self.mutations {
            metrics::emit(
                &[FUNCTION, ("EntityType", ty), ("Status", status)],
                &[("Mutations", *n as f64, Unit::Count)],
            );
        }
        for ((ty, policy, outcome), n) in &self.decisions {
            metrics::emit(
                &[
                    FUNCTION,
                    ("EntityType", ty),
                    ("Policy", policy),
                    ("Outcome", outcome),
                ],
                &[("FieldDecisions", *n as f64, Unit::Count)],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::mutation::MutationResult;
    use crate::entities::records::{HistoryEntry, Receipt};
    use crate::model::DeviceId;
    use serde_json::json;

    fn commit(history: &HistoryEntry, status: MutationStatus) -> Commit {
        Commit {
            device: history.device.clone(),
            mid: history.mid,
            receipt: Receipt {
                device: history.device.clone(),
                mid: history.mid,
                band: history.band.clone(),
                member: history.member.clone(),
                at: history.at,
                result: MutationResult::bare(history.mid, status),
                parked: None,
            },
            entity: Some(history.entity.clone()),
            expected_version: history.version - 1,
            history: Some(history.clone()),
            conflicts: Vec::new(),
            event: None,
            more_events: Vec::new(),
        }
    }

    #[test]
    fn a_commit_counts_its_status_and_each_concurrent_decision_by_policy() {
        let (_, _, _, history) = crate::entities::rebuild::tests::entry();
        // Bob's patch from a stale base: merged.
        let merged = history
            .iter()
            .find(|h| h.decisions.iter().any(|d| d.outcome != "applied"))
            .unwrap();
        let c = commit(merged, MutationStatus::Merged);
        let (band, ty, counts) = counters(&c).unwrap();
        assert_eq!((band.as_str(), ty.as_str()), ("the-band", "setlist_entry"));
        assert_eq!(counts.get("status:merged"), Some(&1));
        let concurrent: Vec<_> = merged
            .decisions
            .iter()
            .filter(|d| d.outcome != "applied")
            .collect();
        for d in &concurrent {
            let key = format!("policy:{}:{}", d.policy, d.outcome);
            assert!(
                counts.get(&key).is_some_and(|n| *n >= 1),
                "{key} in {counts:?}"
            );
        }
        let policy_total: u64 = counts
            .iter()
            .filter(|(k, _)| k.starts_with(POLICY))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(policy_total, concurrent.len() as u64);
        // A plain create: its status alone.
        let (_, _, counts) = counters(&commit(&history[0], MutationStatus::Applied)).unwrap();
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("status:applied".to_owned(), 1)]
        );
    }

    #[test]
    fn a_rejected_commit_counts_under_the_type_it_was_pushed_as_and_a_settlement_not_at_all() {
        let (_, _, _, history) = crate::entities::rebuild::tests::entry();
        let mut c = commit(&history[0], MutationStatus::Rejected);
        c.entity = None;
        c.history = None;
        c.receipt.parked = Some(json!({"type": "attendance", "mid": 1}));
        let (_, ty, counts) = counters(&c).unwrap();
        assert_eq!(ty, "attendance");
        assert_eq!(counts.get("status:rejected"), Some(&1));
        c.receipt.parked = Some(json!({"type": "not a type!"}));
        assert_eq!(counters(&c).unwrap().1, UNKNOWN_TYPE);
        let mut settlement = commit(&history[1], MutationStatus::Merged);
        settlement.mid = 0;
        settlement.device = DeviceId::parse("bandsync-settler").unwrap();
        assert!(counters(&settlement).is_none());
    }

    #[test]
    fn stored_counters_read_back_per_type_with_policies_and_a_frame_tallies_the_same() {
        let row = |t: &str, c: &str, n| VerdictCount {
            entity_type: t.into(),
            counter: c.into(),
            count: n,
        };
        let view = verdict_counts(&[
            row("attendance", "status:rejected", 2),
            row("setlist_entry", "status:applied", 5),
            row("setlist_entry", "status:merged", 3),
            row("setlist_entry", "status:conflict", 1),
            row("setlist_entry", "policy:lww:won", 2),
            row("setlist_entry", "policy:lww:lost", 1),
            row("setlist_entry", "policy:ask:conflict", 1),
            row("setlist_entry", "status:from_a_newer_build", 7),
        ]);
        assert_eq!(view.len(), 2);
        assert_eq!(
            (view[0].entity_type.as_str(), view[0].rejected),
            ("attendance", 2)
        );
        let s = &view[1];
        assert_eq!((s.applied, s.merged, s.conflict, s.rejected), (5, 3, 1, 0));
        assert_eq!(s.policies["lww"]["won"], 2);
        assert_eq!(s.policies["lww"]["lost"], 1);
        assert_eq!(s.policies["ask"]["conflict"], 1);

        let (_, _, _, history) = crate::entities::rebuild::tests::entry();
        let mut tally = Tally::default();
        for h in &history {
            tally.commit(&commit(h, MutationStatus::Applied));
        }
        let ty = history[0].entity_type.clone();
        tally.unwritten(Some(&ty), MutationStatus::Duplicate);
        tally.unwritten(Some(&ty), MutationStatus::Duplicate);
        tally.unwritten(None, MutationStatus::OutOfOrder);
        let t = ty.to_string();
        assert_eq!(tally.mutations[&(t.clone(), "applied".into())], 4);
        assert_eq!(tally.mutations[&(t.clone(), "duplicate".into())], 2);
        assert_eq!(
            tally.mutations[&(UNKNOWN_TYPE.into(), "out_of_order".into())],
            1
        );
        assert!(!tally.decisions.is_empty());
        // Emitting checks every line against metrics::METRICS (a debug assertion).
        tally.emit();
    }
}
