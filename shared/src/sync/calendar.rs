//! The Calendar source: a band's Google Calendar, followed with `events.list` and sync
//! tokens, so that members' apps learn of a rehearsal or gig being added, moved or
//! called off.
//!
//! The worker drives it page by page ([`SyncWorker::run_calendar`]): each page of events
//! becomes a [`PageDelta`] of [`Change`]s against the catalog, which the worker records
//! and publishes through the routine every source shares, and only then moves the
//! source's cursor ([`CalendarCursor`]) on.
//!
//! Catalog conventions for Calendar sources: a row per live event; `file_id` is the
//! event id, `path` a human label (the summary, or [`UNTITLED`]), `hash` the event's
//! `etag` (it changes with every change to the event), `modified_ms` its `updated`,
//! `size` 0.
//!
//! Events on the band channel ([`calendar_event`]): `calendar.event.created` for an
//! event first seen live, `calendar.event.updated` for a known event whose etag changed,
//! `calendar.event.cancelled` for a known event that is cancelled, or that a full
//! listing no longer shows (it was deleted for good). An event first seen already
//! cancelled is skipped, except a cancelled occurrence of a recurring event we know (one
//! rehearsal of a weekly series called off): that is `calendar.event.cancelled` with the
//! series' id and the occurrence's original start, and the catalog keeps a tombstone row
//! for it (hash [`TOMBSTONE`]…, `modified_ms` the occurrence's original start) so that
//! listing it again makes no second event. Once that start is more than
//! [`TOMBSTONE_RETENTION`] ago, the scheduler's prune pass drops the tombstone, and a
//! cancellation of an occurrence that far in the past seen for the first time is
//! skipped, so a dropped tombstone listed again stays silent. An unchanged etag is no
//! event.

use super::SyncError;
use super::delta::Change;
use super::operation::{Operations, SourcePass};
use crate::google::GoogleError;
use crate::google::calendar::{Event, EventDateTime, EventsQuery};
use crate::google::ports::SourceApis;
use crate::model::{BandId, FileEntry, SourceId, SyncMetrics, SyncOperation};
use crate::wire::events::{CalendarEventChanged, EventKind, EventTime};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// The catalog label of an event without a summary.
pub const UNTITLED: &str = "(untitled event)";

/// The hash prefix of a cancelled occurrence's tombstone row.
pub const TOMBSTONE: &str = "cancelled:";

/// How long a cancelled occurrence's tombstone is kept after the occurrence's original
/// start (its `modified_ms`): members have no use for an occurrence called off that
/// long ago.
pub const TOMBSTONE_RETENTION: TimeDelta = TimeDelta::days(30);

/// Is this catalog row a cancelled occurrence's tombstone?
pub fn is_tombstone(e: &FileEntry) -> bool {
    e.hash.starts_with(TOMBSTONE)
}

/// Where a Calendar source stands, as stored in `Source::cursor`: the sync token of the
/// last complete listing, and, while an incremental listing is under way, the page to
/// go on from. Stored as `{"sync_token":"…","page_token":"…"}`; a cursor that is not
/// that JSON is read as a bare sync token (at worst Google finds it stale: a full sync).
///
/// Why resuming from it never skips a change:
///
/// - the cursor moves only after the changes of the pages it leaves behind are
///   published, recorded and in the catalog (events first, then catalog, then cursor);
/// - a stored page token is always one of an *incremental* listing, kept next to the
///   sync token that listing started from. Resuming sends what the dead delivery would
///   have sent next (Google wants the exact same query, sync token included, plus the
///   page token), so the rest of the listing comes as it would have, and ends with the
///   sync token that covers it all;
/// - if Google refuses that page token (410), the listing starts again from the sync
///   token: the changes already applied come again, match the catalog's etags and make
///   no event; none is missed. If the sync token is refused too, a full listing runs;
/// - a *full* listing stores no page token: which catalog rows are gone can only be
///   known from the whole listing, so a full listing that dies is started over (its
///   pages already applied make no event the second time), with the old cursor cleared
///   before it starts;
/// - the new sync token is stored with the last page, after that page's changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CalendarCursor {
    pub sync_token: String,
    #[serde(default)]
    pub page_token: Option<String>,
}

impl CalendarCursor {
    /// The cursor of a complete listing.
    pub fn at(sync_token: impl Into<String>) -> Self {
        Self {
            sync_token: sync_token.into(),
            page_token: None,
        }
    }

    /// Read a stored cursor: the JSON form, or a bare sync token.
    pub fn decode(stored: &str) -> Self {
        serde_json::from_str(stored).unwrap_or_else(|_| Self::at(stored))
    }

    pub fn encode(&self) -> String {
        let mut v = json!({ "sync_token": self.sync_token });
        if let Some(page_token) = &self.page_token {
            v["page_token"] = json!(page_token);
        }
        v.to_string()
    }
}

/// What one page does to the catalog.
#[derive(Debug, Default)]
pub struct PageDelta {
    /// Each an event and an item.
    pub changes: Vec<Change>,
    /// Events looked at, and events skipped (first seen already cancelled).
    pub seen: u64,
    pub skipped: u64,
}

/// The catalog's events by id, updated as pages are applied.
pub struct Known {
    band: BandId,
    source: SourceId,
    entries: HashMap<String, FileEntry>,
    /// Now, as the pass started: what a tombstone's time is when Google gives none.
    now: Option<DateTime<Utc>>,
}

impl Known {
    pub fn new(band: &BandId, source: &SourceId, catalog: &[FileEntry]) -> Self {
        Self {
            band: band.clone(),
            source: source.clone(),
            entries: catalog
                .iter()
                .map(|e| (e.file_id.clone(), e.clone()))
                .collect(),
            now: None,
        }
    }

    /// The pass runs at `now`: a first-seen cancellation of an occurrence that started
    /// more than [`TOMBSTONE_RETENTION`] before is skipped (its tombstone would be past
    /// its retention, and may have been dropped already).
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    fn past_retention(&self, event: &Event) -> bool {
        match (occurrence_time(event), self.now) {
            (Some(at), Some(now)) => at < now - TOMBSTONE_RETENTION,
            _ => false,
        }
    }

    /// The catalog row of a live event.
    pub fn entry(&self, event: &Event) -> FileEntry {
        let label = event
            .summary
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(UNTITLED);
        FileEntry {
            band: self.band.clone(),
            source: self.source.clone(),
            file_id: event.id.clone(),
            path: label.to_owned(),
            size: 0,
            // Google always sends an etag; without one, `updated` still tells versions apart.
            hash: event
                .etag
                .clone()
                .or_else(|| event.updated.map(rfc3339))
                .unwrap_or_default(),
            modified_ms: event.updated.map_or(0, |t| t.timestamp_millis()),
        }
    }

    /// One page of events (full or incremental listing alike).
    pub fn apply(&mut self, events: &[Event]) -> PageDelta {
        let mut out = PageDelta::default();
        for event in events {
            let before = self.entries.get(&event.id).cloned();
            if event.is_cancelled() {
                match before {
                    None if self.past_retention(event) => out.skipped += 1,
                    None => match self.cancelled_occurrence(event) {
                        Some(tombstone) => {
                            out.seen += 1;
                            self.entries.insert(event.id.clone(), tombstone.clone());
                            out.changes.push(Change::Created(tombstone));
                        }
                        None => out.skipped += 1,
                    },
                    Some(before) if is_tombstone(&before) => out.skipped += 1,
                    Some(before) => {
                        out.seen += 1;
                        self.entries.remove(&event.id);
                        out.changes.push(Change::Deleted(before));
                    }
                }
                continue;
            }
            out.seen += 1;
            let after = self.entry(event);
            match before {
                None => out.changes.push(Change::Created(after.clone())),
                Some(before) if before.hash != after.hash => out.changes.push(Change::Updated {
                    before,
                    after: after.clone(),
                }),
                Some(_) => continue,
            }
            self.entries.insert(event.id.clone(), after);
        }
        out
    }

    /// The tombstone row of a cancelled occurrence of a recurring event whose series
    /// the catalog has (labelled with the series' summary); None for anything else.
    fn cancelled_occurrence(&self, event: &Event) -> Option<FileEntry> {
        let series = self.entries.get(event.recurring_event_id.as_deref()?)?;
        Some(FileEntry {
            file_id: event.id.clone(),
            path: series.path.clone(),
            hash: format!("{TOMBSTONE}{}", event.etag.clone().unwrap_or_default()),
            // What the retention counts from (Google often sends a cancelled occurrence
            // with no `updated`).
            modified_ms: occurrence_time(event)
                .or(self.now)
                .map_or(0, |t| t.timestamp_millis()),
            ..series.clone()
        })
    }

    /// After a whole full listing: the known events it did not show were deleted for
    /// good (Google dropped even their tombstones). In label order. Tombstone rows of
    /// cancelled occurrences just go (their series says the rest).
    pub fn vanished(&mut self, listed: &HashSet<String>) -> Vec<Change> {
        let unlisted: Vec<String> = self
            .entries
            .keys()
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect();
        self.entries
            .retain(|id, e| !(is_tombstone(e) && unlisted.contains(id)));
        let mut gone: Vec<FileEntry> = unlisted
            .iter()
            .filter_map(|id| self.entries.remove(id))
            .collect();
        gone.sort_by(|a, b| (&a.path, &a.file_id).cmp(&(&b.path, &b.file_id)));
        gone.into_iter().map(Change::Deleted).collect()
    }
}

/// When a cancelled occurrence was to start (its original start: a time, or a date at
/// midnight UTC), else when it was cancelled (`updated`).
fn occurrence_time(event: &Event) -> Option<DateTime<Utc>> {
    let start = event.original_start_time.as_ref().and_then(|t| {
        let time = t
            .date_time
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
        let date = t
            .date
            .as_deref()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0));
        time.map(|t| t.with_timezone(&Utc))
            .or_else(|| date.map(|d| d.and_utc()))
    });
    start.or(event.updated)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `start` / `end` as the apps get them: `date` (all day) or `date_time` with its
/// `time_zone`, absent keys left out.
fn when(t: Option<&EventDateTime>) -> Option<EventTime> {
    t.map(|t| EventTime {
        date: t.date.clone(),
        date_time: t.date_time.clone(),
        time_zone: t.time_zone.clone(),
    })
}

/// A change's event. `event` is the resource the page listed (none for an
/// event a full listing no longer shows); what it lacks (a deleted event may come with
/// its id alone) comes from the catalog row where the catalog has it.
///
/// Data: `{source, event_id, summary, location, start, end, status, updated,
/// html_link, recurring_event_id}`; `start`/`end` are `{date}` or `{date_time,
/// time_zone}`, `updated` RFC 3339; unknown values are null.
pub fn calendar_event(change: &Change, event: Option<&Event>) -> EventKind {
    let e = change.entry();
    let cancelled = matches!(change, Change::Deleted(_)) || is_tombstone(e);
    let kind = match change {
        Change::Created(_) if cancelled => EventKind::CalendarEventCancelled,
        Change::Created(_) => EventKind::CalendarEventCreated,
        Change::Deleted(_) => EventKind::CalendarEventCancelled,
        Change::Updated { .. } | Change::Moved { .. } => EventKind::CalendarEventUpdated,
    };
    let summary = event
        .and_then(|ev| ev.summary.clone())
        .or_else(|| (cancelled && e.path != UNTITLED).then(|| e.path.clone()));
    let status = match event {
        _ if cancelled => "cancelled",
        Some(ev) => ev.status.as_str(),
        None => "confirmed",
    };
    let updated = event
        .and_then(|ev| ev.updated)
        .or_else(|| {
            (e.modified_ms > 0)
                .then(|| DateTime::from_timestamp_millis(e.modified_ms))
                .flatten()
        })
        .map(rfc3339);
    kind(CalendarEventChanged {
        source: e.source.clone(),
        event_id: e.file_id.clone(),
        summary,
        location: event.and_then(|ev| ev.location.clone()),
        start: when(event.and_then(|ev| ev.start.as_ref())),
        end: when(event.and_then(|ev| ev.end.as_ref())),
        status: status.to_owned(),
        updated,
        html_link: event.and_then(|ev| ev.html_link.clone()),
        recurring_event_id: event.and_then(|ev| ev.recurring_event_id.clone()),
        original_start: when(event.and_then(|ev| ev.original_start_time.as_ref())),
    })
}

/// A Calendar source, page by page: incremental from the stored cursor, or a full
/// listing compared against the catalog without one (first sync, a `full` job, a
/// sync token Google found stale). See [`CalendarCursor`] for why a delivery that
/// dies anywhere resumes without losing or repeating an event.
pub(super) async fn sync(
    ops: &Operations,
    google: &dyn SourceApis,
    pass: SourcePass<'_>,
) -> Result<Option<SyncOperation>, SyncError> {
    let SourcePass {
        job,
        mut source,
        existing,
        catalog,
        ..
    } = pass;
    let client = google.calendar_api(&job.band).await?;
    let started = Instant::now();
    let quiet = job.trigger.is_background();
    let mut cursor = source.cursor.as_deref().map(CalendarCursor::decode);
    if job.full && existing.is_none() && cursor.is_some() {
        // Cleared in the store too, so that a redelivery of this job lists in full.
        cursor = None;
        source.cursor = None;
        ops.put_cursor(&mut source).await?;
    }
    let mut known = Known::new(&job.band, &job.source, &catalog).at(ops.now());
    let mut run = match existing {
        Some(op) => Some(ops.begin(job, Some(op)).await?),
        None => None,
    };
    let mut metrics = SyncMetrics::default();
    let mut pages = 0u32;
    // A full listing under way: its next page, and every event it showed so far.
    let mut full_page: Option<String> = None;
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let query = match &cursor {
            Some(c) => EventsQuery {
                sync_token: Some(c.sync_token.clone()),
                page_token: c.page_token.clone(),
            },
            None => EventsQuery {
                sync_token: None,
                page_token: full_page.clone(),
            },
        };
        let page = match client.list_events(&source.location, &query).await {
            Ok(page) => page,
            Err(GoogleError::Gone { message }) => match cursor.take() {
                Some(CalendarCursor {
                    sync_token,
                    page_token: Some(_),
                }) => {
                    tracing::warn!(%message, "page token gone: listing again from the sync token");
                    cursor = Some(CalendarCursor::at(sync_token));
                    continue;
                }
                Some(_) => {
                    tracing::warn!(%message, "sync token gone: full sync");
                    source.cursor = None;
                    ops.put_cursor(&mut source).await?;
                    continue;
                }
                // A full listing's page token went stale: the job is retried.
                None => return Err(GoogleError::Gone { message }.into()),
            },
            Err(e) => return Err(e.into()),
        };
        pages += 1;
        let full = cursor.is_none();
        let last = page.next_page_token.is_none();
        let mut delta = known.apply(&page.items);
        if full {
            listed.extend(page.items.iter().map(|e| e.id.clone()));
            if last {
                delta.changes.extend(known.vanished(&listed));
            }
        }
        tracing::debug!(
            page = pages,
            full,
            seen = delta.seen,
            skipped = delta.skipped,
            changes = delta.changes.len(),
            "calendar page"
        );
        metrics.seen += delta.seen;
        metrics.skipped += delta.skipped;
        if run.is_none() && !(quiet && delta.changes.is_empty()) {
            run = Some(ops.begin(job, None).await?);
        }
        if let Some(run) = run.as_mut() {
            let by_id: HashMap<&str, &Event> =
                page.items.iter().map(|e| (e.id.as_str(), e)).collect();
            let event_of =
                |c: &Change| calendar_event(c, by_id.get(c.entry().file_id.as_str()).copied());
            ops.apply_changes(run, &delta.changes, &event_of).await?;
        }
        match (page.next_page_token, page.next_sync_token, cursor.as_mut()) {
            (Some(next), _, None) => full_page = Some(next),
            (Some(next), _, Some(c)) => {
                c.page_token = Some(next);
                source.cursor = Some(c.encode());
                ops.put_cursor(&mut source).await?;
            }
            (None, Some(token), _) => {
                source.cursor = Some(CalendarCursor::at(token).encode());
                ops.put_cursor(&mut source).await?;
                break;
            }
            (None, None, _) => {
                return Err(GoogleError::Decode("events.list page without a token".into()).into());
            }
        }
    }
    match run {
        None => {
            tracing::debug!(pages, "nothing changed");
            Ok(None)
        }
        Some(run) => {
            metrics.synced = run.synced();
            metrics.duration_ms = started.elapsed().as_millis() as u64;
            ops.complete(run.op, source, metrics, &[]).await.map(Some)
        }
    }
}
