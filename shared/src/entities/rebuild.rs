//! The operator's rebuild check: a band's entities rebuilt from their history (the
//! log every version is kept in) and compared with the state stored.
//!
//! Bounded work: one call checks one page of the band's entities (at most
//! [`MAX_PAGE`], read with the paged listing, a Query), each entity's history read by
//! its key range (at most [`MAX_VERSIONS`] newest versions) with [`CONCURRENCY`] reads
//! in flight; the answer's `next` is where the following call starts. A band of 10,000
//! entities is ten calls of 1,000.
//!
//! The retention: [`EntityStore::prune_history`] forgets old entries but never an
//! entity's newest. An entity whose history no longer starts at version 1 is replayed
//! from its oldest kept entry, taking the entity that entry recorded as the start
//! (`partial`): the versions after it are checked, the pruned ones cannot be, and no
//! mismatch is claimed for what is gone.

use super::merge::Engine;
use super::records::{EntityRecord, HistoryEntry};
use super::replay::{differences, replay_after};
use super::types::{BandTypes, EntityType};
use crate::model::{BandId, ChannelName, EntityId, EntityTypeName};
use crate::ports::{ChannelLog, EntityStore, PortResult};
use crate::wire::http::{LogPosition, RebuildMismatch, RebuildReport, ReplayedRange};
use futures_util::stream::{self, StreamExt, TryStreamExt};

/// Entities one call checks (default and most).
pub const DEFAULT_PAGE: usize = 500;
pub const MAX_PAGE: usize = 1000;
/// Mismatches listed in one report (all are counted).
pub const MAX_MISMATCHES: usize = 100;
/// The newest versions of one entity replayed at most; an entity with more is
/// replayed from its version `version - MAX_VERSIONS` on, like a pruned one.
pub const MAX_VERSIONS: u64 = 10_000;
/// History entries per read.
const HISTORY_PAGE: usize = 500;
/// History reads in flight.
const CONCURRENCY: usize = 8;

/// What the rebuild of one entity came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityCheck {
    /// The first version replayed from (1: the whole history; 0: none kept).
    pub replayed_from: u64,
    /// History entries folded (a partial start is taken, not folded).
    pub versions: u64,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub mismatch: Option<RebuildMismatch>,
}

/// Rebuild `stored` from `history` (its kept entries, oldest first) and compare: no I/O.
pub fn compare(
    engine: &Engine,
    ty: &EntityType,
    stored: &EntityRecord,
    history: &[HistoryEntry],
) -> EntityCheck {
    let mismatch = |replayed_version, replayed_from, reason: String| RebuildMismatch {
        entity_type: stored.entity_type.clone(),
        id: stored.id.clone(),
        stored_version: stored.version,
        replayed_version,
        replayed_from,
        reason,
    };
    let Some(first) = history.first() else {
        // The retention never forgets an entity's newest entry: none at all means the
        // state was written without its history.
        return EntityCheck {
            replayed_from: 0,
            versions: 0,
            from: None,
            to: None,
            mismatch: Some(mismatch(
                None,
                0,
                "no history is kept for it: nothing to rebuild it from".into(),
            )),
        };
    };
    let (start, rest) = if first.version == 1 {
        (None, history)
    } else {
        (Some(first.entity.clone()), &history[1..])
    };
    let replayed_from = first.version;
    let mut check = EntityCheck {
        replayed_from,
        versions: rest.len() as u64,
        from: Some(first.at),
        to: history.last().map(|h| h.at),
        mismatch: None,
    };
    check.mismatch = match replay_after(engine, ty, start, rest) {
        Err(e) => Some(mismatch(
            Some(e.version.saturating_sub(1)),
            replayed_from,
            format!("its history does not replay at {e}"),
        )),
        Ok(None) => None,
        Ok(Some(rebuilt)) if &rebuilt == stored => None,
        Ok(Some(rebuilt)) => Some(mismatch(
            Some(rebuilt.version),
            replayed_from,
            format!(
                "the stored entity differs from its rebuild in {}",
                differences(stored, &rebuilt).join(", ")
            ),
        )),
    };
    check
}

/// The stores and engine a rebuild check reads with.
pub struct Rebuild<'a> {
    pub entities: &'a dyn EntityStore,
    pub log: &'a dyn ChannelLog,
    pub engine: &'a Engine,
}

impl Rebuild<'_> {
    /// Check one page of `band`'s entities (in (type, id) order after `after`, at most
    /// `limit`), each against its history, with the band's types (`types`: the
    /// configuration's, the built-ins besides). Reads only.
    pub async fn check(
        &self,
        band: &BandId,
        types: &BandTypes,
        after: Option<&(EntityTypeName, EntityId)>,
        limit: usize,
    ) -> PortResult<RebuildReport> {
        let limit = limit.clamp(1, MAX_PAGE);
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let page = self
            .entities
            .list_entities(band, None, after, limit)
            .await?;
        // The futures first, then the stream over them: a stream mapping borrowed
        // entities through a closure is not provably Send across the await.
        let pending: Vec<_> = page
            .entities
            .iter()
            .map(|e| self.check_one(types, e))
            .collect();
        let checks: Vec<EntityCheck> = stream::iter(pending)
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut report = RebuildReport {
            band: band.clone(),
            checked: checks.len() as u64,
            matched: true,
            mismatches: Vec::new(),
            mismatched: 0,
            full: 0,
            partial: 0,
            replayed: ReplayedRange {
                versions: 0,
                from: None,
                to: None,
                oldest_start_version: None,
            },
            channel: LogPosition {
                seq: head.as_ref().map(|h| h.seq),
                epoch: head.map(|h| h.epoch),
            },
            next: page.next.map(|(t, i)| format!("{t}/{i}")),
        };
        for c in checks {
            let r = &mut report.replayed;
            r.versions += c.versions;
            r.from = match (r.from, c.from) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            r.to = r.to.max(c.to);
            match c.replayed_from {
                0 => {}
                1 => report.full += 1,
                v => {
                    report.partial += 1;
                    r.oldest_start_version = Some(r.oldest_start_version.map_or(v, |o| o.min(v)));
                }
            }
            if let Some(m) = c.mismatch {
                report.matched = false;
                report.mismatched += 1;
                if report.mismatches.len() < MAX_MISMATCHES {
                    report.mismatches.push(m);
                }
            }
        }
        Ok(report)
    }

    /// [`Self::check`] page after page until the band's last entity: one report over
    /// all of them (`next` none). For the command line, which has no request timeout.
    pub async fn check_all(
        &self,
        band: &BandId,
        types: &BandTypes,
        page: usize,
    ) -> PortResult<RebuildReport> {
        let mut total = self.check(band, types, None, page).await?;
        while let Some(next) = total.next.take() {
            let after = cursor(&next)?;
            let more = self.check(band, types, Some(&after), page).await?;
            combine(&mut total, more);
        }
        Ok(total)
    }

    async fn check_one(&self, types: &BandTypes, stored: &EntityRecord) -> PortResult<EntityCheck> {
        let ty = match types.get(&stored.entity_type) {
            Ok(ty) => ty.into_owned(),
            // A strict band that no longer declares the type: its entities were folded
            // under some definition; the open one (every field lww) is what a push of it
            // would be refused with, so the check says so rather than guessing.
            Err(e) => {
                return Ok(EntityCheck {
                    replayed_from: 0,
                    versions: 0,
                    from: None,
                    to: None,
                    mismatch: Some(RebuildMismatch {
                        entity_type: stored.entity_type.clone(),
                        id: stored.id.clone(),
                        stored_version: stored.version,
                        replayed_version: None,
                        replayed_from: 0,
                        reason: format!("its type cannot be replayed: {}", e.message),
                    }),
                });
            }
        };
        let mut after = stored.version.saturating_sub(MAX_VERSIONS);
        let mut history = Vec::new();
        loop {
            let entries = self
                .entities
                .history(
                    &stored.band,
                    &stored.entity_type,
                    &stored.id,
                    after,
                    HISTORY_PAGE,
                )
                .await?;
            let full = entries.len() == HISTORY_PAGE;
            match entries.last() {
                Some(last) => after = last.version,
                None => break,
            }
            history.extend(entries);
            // A version beyond the stored one is a mismatch the replay reports; there
            // is no need to read further than it.
            if !full || after >= stored.version {
                break;
            }
        }
        Ok(compare(self.engine, &ty, stored, &history))
    }
}

/// The `(type, id)` a report's `next` names.
fn cursor(next: &str) -> PortResult<(EntityTypeName, EntityId)> {
    let parsed = next
        .split_once('/')
        .and_then(|(t, i)| Some((EntityTypeName::parse(t).ok()?, EntityId::parse(i).ok()?)));
    parsed.ok_or_else(|| anyhow::anyhow!("a rebuild page ended at a bad cursor {next}").into())
}

/// Add the report of the page after `total`'s to it (its `next` becomes the total's).
pub fn combine(total: &mut RebuildReport, page: RebuildReport) {
    total.checked += page.checked;
    total.matched &= page.matched;
    total.mismatched += page.mismatched;
    let room = MAX_MISMATCHES.saturating_sub(total.mismatches.len());
    total
        .mismatches
        .extend(page.mismatches.into_iter().take(room));
    total.full += page.full;
    total.partial += page.partial;
    let (r, p) = (&mut total.replayed, page.replayed);
    r.versions += p.versions;
    r.from = match (r.from, p.from) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    r.to = r.to.max(p.to);
    r.oldest_start_version = match (r.oldest_start_version, p.oldest_start_version) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    total.next = page.next;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::entities::merge::{ApplyContext, Verdict};
    use crate::entities::mutation::Mutation;
    use crate::entities::types::builtin_types;
    use crate::model::{DeviceId, UserId};
    use chrono::{TimeZone, Utc};
    use serde_json::{Value, json};

    /// An entry's life: created, then patched by two members, the second from a stale
    /// base (a merge); what a store would hold of it.
    pub(crate) fn entry() -> (Engine, EntityType, EntityRecord, Vec<HistoryEntry>) {
        let engine = Engine::new();
        let ty = builtin_types()
            .into_iter()
            .find(|t| t.name.as_str() == "setlist_entry")
            .unwrap();
        let band = BandId::parse("the-band").unwrap();
        let mut record: Option<EntityRecord> = None;
        let mut history: Vec<HistoryEntry> = Vec::new();
        let steps: [(&str, &str, u64, &str, u64, Value); 4] = [
            (
                "alice@example.com",
                "alice-phone",
                1,
                "create",
                0,
                json!({"title": "So What", "tags": {"$add": ["a"]}}),
            ),
            (
                "alice@example.com",
                "alice-phone",
                2,
                "patch",
                1,
                json!({"key": "D", "plays": {"$inc": 1}}),
            ),
            (
                "bob@example.com",
                "bob-tablet1",
                1,
                "patch",
                1,
                json!({"key": "E", "tags": {"$add": ["b"]}}),
            ),
            (
                "alice@example.com",
                "alice-phone",
                3,
                "patch",
                3,
                json!({"title": "So What?"}),
            ),
        ];
        for (i, (member, device, mid, op, base, fields)) in steps.into_iter().enumerate() {
            let m = Mutation::parse(&json!({"mid": mid, "type": "setlist_entry", "id": "e1",
                "op": op, "base_version": base, "fields": fields,
                "ts": Utc.timestamp_opt(1_800_000_000 + i as i64, 0).unwrap().to_rfc3339()}))
            .unwrap();
            let (member, device) = (
                UserId::parse(member).unwrap(),
                DeviceId::parse(device).unwrap(),
            );
            let cx = ApplyContext {
                band: &band,
                ty: &ty,
                member: &member,
                device: &device,
                now: Utc.timestamp_opt(1_800_000_100 + i as i64, 0).unwrap(),
                resolving: None,
            };
            let stale = record.as_ref().filter(|r| base > 0 && base < r.version);
            let base_stamp = stale.map(|_| history[base as usize - 1].entity.hlc.clone());
            match engine.apply(&cx, record.as_ref(), base_stamp.as_ref(), &m) {
                Verdict::Changed {
                    entity, history: h, ..
                } => {
                    record = Some(entity);
                    history.push(h);
                }
                Verdict::Refused { result } => panic!("refused: {result:?}"),
            }
        }
        assert!(
            history
                .iter()
                .flat_map(|h| &h.decisions)
                .any(|d| d.outcome != "applied"),
            "the fixture has a concurrent change"
        );
        (engine, ty, record.unwrap(), history)
    }

    #[test]
    fn an_untouched_entity_matches_its_rebuild_from_version_1() {
        let (engine, ty, stored, history) = entry();
        let c = compare(&engine, &ty, &stored, &history);
        assert_eq!(c.mismatch, None);
        assert_eq!((c.replayed_from, c.versions), (1, 4));
        assert_eq!(c.from, Some(history[0].at));
        assert_eq!(c.to, Some(history[3].at));
    }

    #[test]
    fn a_corrupted_stored_entity_is_reported_with_both_versions() {
        let (engine, ty, mut stored, history) = entry();
        // Someone edits the stored title by hand.
        let title = stored.state.fields.get_mut("title").unwrap();
        title.state = crate::entities::state::FieldState::Register {
            value: json!("forged"),
            stamp: stored.hlc.clone(),
            by: None,
        };
        let m = compare(&engine, &ty, &stored, &history).mismatch.unwrap();
        assert_eq!(
            (m.stored_version, m.replayed_version, m.replayed_from),
            (4, Some(4), 1)
        );
        assert!(m.reason.contains("field title"), "{}", m.reason);
        assert_eq!(
            (m.entity_type.as_str(), m.id.as_str()),
            ("setlist_entry", "e1")
        );
        // Or moves its version (a write that skipped its history).
        let (_, _, mut stored, _) = entry();
        stored.version = 5;
        let m = compare(&engine, &ty, &stored, &history).mismatch.unwrap();
        assert_eq!((m.stored_version, m.replayed_version), (5, Some(4)));
    }

    #[test]
    fn a_tampered_history_stops_the_replay_where_it_differs() {
        let (engine, ty, stored, mut history) = entry();
        history[1].input.insert("key".into(), json!("F"));
        let m = compare(&engine, &ty, &stored, &history).mismatch.unwrap();
        assert_eq!(m.replayed_version, Some(1));
        assert!(m.reason.contains("version 2"), "{}", m.reason);
    }

    #[test]
    fn a_pruned_history_replays_from_its_oldest_kept_entry_without_a_false_mismatch() {
        let (engine, ty, stored, history) = entry();
        // The retention pruned versions 1 and 2.
        let kept = &history[2..];
        let c = compare(&engine, &ty, &stored, kept);
        assert_eq!(c.mismatch, None);
        assert_eq!((c.replayed_from, c.versions), (3, 1));
        // Only the newest is left: matched from it, nothing folded.
        let c = compare(&engine, &ty, &stored, &history[3..]);
        assert_eq!((c.replayed_from, c.versions, c.mismatch), (4, 0, None));
        // A corrupted state is still caught against what is kept.
        let mut forged = stored.clone();
        forged.deleted = true;
        let m = compare(&engine, &ty, &forged, kept).mismatch.unwrap();
        assert_eq!(m.replayed_from, 3);
        assert!(m.reason.contains("deleted"), "{}", m.reason);
    }

    #[test]
    fn an_entity_without_history_is_a_mismatch() {
        let (engine, ty, stored, _) = entry();
        let c = compare(&engine, &ty, &stored, &[]);
        let m = c.mismatch.unwrap();
        assert_eq!((m.replayed_version, m.replayed_from), (None, 0));
        assert!(m.reason.contains("no history"), "{}", m.reason);
    }

    fn report(checked: u64, mismatched: u64, next: Option<&str>) -> RebuildReport {
        let (_, _, stored, _) = entry();
        let mismatch = RebuildMismatch {
            entity_type: stored.entity_type.clone(),
            id: stored.id.clone(),
            stored_version: 1,
            replayed_version: Some(2),
            replayed_from: 1,
            reason: "x".into(),
        };
        RebuildReport {
            band: stored.band.clone(),
            checked,
            matched: mismatched == 0,
            mismatches: vec![mismatch; mismatched.min(MAX_MISMATCHES as u64) as usize],
            mismatched,
            full: checked,
            partial: 0,
            replayed: ReplayedRange {
                versions: checked * 2,
                from: Some(Utc.timestamp_opt(checked as i64, 0).unwrap()),
                to: Some(Utc.timestamp_opt(100 + checked as i64, 0).unwrap()),
                oldest_start_version: None,
            },
            channel: LogPosition {
                seq: Some(9),
                epoch: None,
            },
            next: next.map(str::to_owned),
        }
    }

    #[test]
    fn pages_combine_into_one_report_with_a_bounded_list() {
        let mut total = report(1000, 0, Some("setlist_entry/e1"));
        combine(&mut total, report(500, 150, None));
        assert_eq!(
            (total.checked, total.mismatched, total.matched),
            (1500, 150, false)
        );
        assert_eq!(total.mismatches.len(), MAX_MISMATCHES);
        assert_eq!(total.replayed.versions, 3000);
        assert_eq!(
            total.replayed.from,
            Some(Utc.timestamp_opt(500, 0).unwrap())
        );
        assert_eq!(total.replayed.to, Some(Utc.timestamp_opt(1100, 0).unwrap()));
        assert_eq!(total.next, None);
        assert!(cursor("setlist_entry/e1").is_ok());
        assert!(cursor("no-slash").is_err());
    }
}
