//! A local fake of the Google Calendar API v3 `events.list` endpoint, for tests and
//! (later) the local stack without a Google account.
//!
//! [`FakeCalendar::start`] serves [`router`] on `127.0.0.1:<free port>`;
//! [`router`] alone can be mounted on a shared fake server with the Drive fake's routes
//! (it has no fallback of its own, so `Router::merge` accepts it).
//!
//! `GET /calendar/v3/calendars/{calendarId}/events` answers `{"kind":"calendar#events",
//! "items":[…],"nextPageToken"|"nextSyncToken":…}` and honours:
//!
//! - `pageToken` and `maxResults` (default 250, at most 2500, and at most the fake's own
//!   page size, [`FakeCalendarState::set_page_size`]);
//! - `showDeleted` (default false: cancelled events are left out, except cancelled
//!   occurrences of a recurring event, as Google does with `singleEvents=false`);
//! - `syncToken`: only the events changed since the token, cancelled ones always
//!   included. Google's rules are enforced: `timeMin`, `timeMax`, `updatedMin`, `q`,
//!   `orderBy`, `iCalUID` and the extended-property filters, or `showDeleted=false`,
//!   next to a sync token are a 400; a stale or unreadable sync token is Google's 410
//!   `fullSyncRequired`; a page token of an incremental listing is only accepted with its
//!   sync token, one of a full listing only without;
//! - `fields`, the partial-response mask (shared with the Drive fake).
//!
//! Events live in memory, per calendar, and are changed through methods: create, update,
//! cancel (the event stays as a `cancelled` tombstone, as Google keeps deleted events
//! for a while) and delete for good (the tombstone is gone: every sync token issued
//! before that no longer covers the calendar and is answered 410, which is what Google
//! does once it has dropped tombstones a token would need). Every change takes a number
//! from one counter; sync tokens and page tokens are made of those numbers. A cancelled
//! event is listed as Google lists a deleted one, with only `kind`, `etag`, `id` and
//! `status` (plus `recurringEventId` and `originalStartTime` for a cancelled
//! occurrence): a client must not count on more.
//!
//! Like the Drive fake: every request needs `Authorization: Bearer <token>` (else
//! Google's 401), faults can be queued ([`FakeCalendarState::fail_next`]: 429 with
//! `Retry-After`, 5xx, 410, malformed JSON) and every request is recorded
//! ([`FakeCalendarState::requests`]).
//!
//! Not modelled: `singleEvents=true` (recurring events are never expanded into
//! occurrences; the fake answers 400 rather than pretend), `timeMin`/`timeMax` and the
//! other filters of full listings (ignored), the details Google keeps on the
//! organizer's own deleted events, `events.watch` and `channels.stop`.
//!
//! The mutating methods panic on a calendar or event the fake does not have: that is a
//! bug in the test using it, not a condition to handle.

use crate::push::PushHub;
use crate::server::{FakeState, Running};
use crate::server::{
    Gate, Params, answer, flag, google_error, invalid_parameter, param, rfc3339, status_error,
};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use bandsync::google::calendar::{EventDateTime, EventStatus, SYNC_TOKEN_RESTRICTIONS};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Google's default and largest `maxResults` for `events.list`.
const DEFAULT_MAX_RESULTS: usize = 250;
const MAX_RESULTS: usize = 2500;

/// The time zone of the fake's calendars (and of [`EventInput::timed`]).
pub const TIME_ZONE: &str = "Europe/Paris";

const SYNC_TOKEN_PREFIX: &str = "fakesync-";
const FULL_PAGE_PREFIX: &str = "fakepage-full-";
const SYNC_PAGE_PREFIX: &str = "fakepage-sync-";

/// An event's content, as a test creates or changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInput {
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: EventDateTime,
    pub end: EventDateTime,
    /// Confirmed or tentative (cancel with [`FakeCalendarState::cancel_event`]).
    pub status: EventStatus,
    pub recurrence: Vec<String>,
    /// Set for an exception of a recurring event.
    pub recurring_event_id: Option<String>,
    pub original_start_time: Option<EventDateTime>,
}

impl EventInput {
    /// An event from `start` to `end` (RFC 3339 with an offset) in [`TIME_ZONE`].
    pub fn timed(summary: &str, start: &str, end: &str) -> Self {
        Self {
            summary: Some(summary.to_owned()),
            start: EventDateTime::at(start, TIME_ZONE),
            end: EventDateTime::at(end, TIME_ZONE),
            ..Self::default()
        }
    }

    /// An all-day event from `date` to `end_date` (exclusive), `yyyy-mm-dd`.
    pub fn all_day(summary: &str, date: &str, end_date: &str) -> Self {
        Self {
            summary: Some(summary.to_owned()),
            start: EventDateTime::date(date),
            end: EventDateTime::date(end_date),
            ..Self::default()
        }
    }

    pub fn with_location(mut self, location: &str) -> Self {
        self.location = Some(location.to_owned());
        self
    }
}

#[derive(Debug, Clone)]
struct FakeEvent {
    id: String,
    input: EventInput,
    cancelled: bool,
    /// Creation order: the order of full listings.
    seq: u64,
    /// The number of its latest change: what sync tokens compare.
    change: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    sequence: u32,
}

impl FakeEvent {
    fn etag(&self) -> String {
        format!("\"{}\"", 3_181_161_784_712_000u64 + self.change)
    }

    fn is_exception(&self) -> bool {
        self.input.recurring_event_id.is_some()
    }

    fn to_json(&self, calendar_id: &str) -> Value {
        let mut e = Map::new();
        e.insert("kind".into(), json!("calendar#event"));
        e.insert("etag".into(), json!(self.etag()));
        e.insert("id".into(), json!(self.id));
        let i = &self.input;
        if self.cancelled {
            e.insert("status".into(), json!("cancelled"));
        } else {
            e.insert("status".into(), json!(i.status.as_str()));
            let eid = base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(format!("{} {calendar_id}", self.id));
            e.insert(
                "htmlLink".into(),
                json!(format!("https://www.google.com/calendar/event?eid={eid}")),
            );
            e.insert("created".into(), json!(rfc3339(self.created)));
            e.insert("updated".into(), json!(rfc3339(self.updated)));
            for (name, value) in [
                ("summary", &i.summary),
                ("description", &i.description),
                ("location", &i.location),
            ] {
                if let Some(value) = value {
                    e.insert(name.into(), json!(value));
                }
            }
            e.insert("start".into(), json!(i.start));
            e.insert("end".into(), json!(i.end));
            if !i.recurrence.is_empty() {
                e.insert("recurrence".into(), json!(i.recurrence));
            }
            e.insert("iCalUID".into(), json!(format!("{}@google.com", self.id)));
            e.insert("sequence".into(), json!(self.sequence));
            e.insert("eventType".into(), json!("default"));
        }
        if let Some(recurring) = &i.recurring_event_id {
            e.insert("recurringEventId".into(), json!(recurring));
        }
        if let Some(original) = &i.original_start_time {
            e.insert("originalStartTime".into(), json!(original));
        }
        Value::Object(e)
    }
}

#[derive(Debug, Default)]
struct FakeCal {
    events: HashMap<String, FakeEvent>,
    /// Sync tokens below this number no longer cover the calendar (410).
    min_valid: u64,
}

struct Inner {
    gate: Gate,
    page_size: usize,
    clock: DateTime<Utc>,
    /// The number the next change gets.
    next_change: u64,
    next_id: u64,
    calendars: HashMap<String, FakeCal>,
    /// Watch channels (`events.watch`), made on first use.
    hub: Option<PushHub>,
}

impl Inner {
    fn tick(&mut self) -> (u64, DateTime<Utc>) {
        self.clock += TimeDelta::seconds(1);
        let change = self.next_change;
        self.next_change += 1;
        (change, self.clock)
    }

    fn calendar_mut(&mut self, calendar_id: &str) -> &mut FakeCal {
        self.calendars
            .get_mut(calendar_id)
            .unwrap_or_else(|| panic!("the fake Calendar has no calendar {calendar_id:?}"))
    }

    /// Apply `f` to an event, as a new change.
    fn change(&mut self, calendar_id: &str, id: &str, f: impl FnOnce(&mut FakeEvent)) {
        let (change, now) = self.tick();
        let event = self
            .calendar_mut(calendar_id)
            .events
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake Calendar has no event {id:?} in {calendar_id:?}"));
        f(event);
        event.change = change;
        event.updated = now;
        event.sequence += 1;
    }
}

/// The fake's state: its calendars and events, its faults and its request log. Cheap to
/// clone (a handle); [`router`] serves it, the methods change it.
#[derive(Clone)]
pub struct FakeCalendarState(Arc<Mutex<Inner>>);

impl std::fmt::Debug for FakeCalendarState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCalendarState").finish_non_exhaustive()
    }
}

impl FakeCalendarState {
    /// No calendars yet; requests must carry `Bearer <token>`.
    pub fn new(token: &str) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            gate: Gate::new(token),
            page_size: MAX_RESULTS,
            clock: DateTime::from_timestamp(1_772_366_400, 0).expect("a valid timestamp"),
            next_change: 1,
            next_id: 1,
            calendars: HashMap::new(),
            hub: None,
        })))
    }

    /// The watch channels of this fake and the notifications sent.
    pub fn push(&self) -> PushHub {
        self.lock().hub.get_or_insert_with(PushHub::new).clone()
    }

    /// Tell the calendar's watch channels (Calendar says `exists` for any change).
    fn notify(&self, calendar_id: &str) {
        let hub = self.lock().hub.clone();
        if let Some(hub) = hub {
            hub.notify(&format!("calendar:{calendar_id}"), "exists", None);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty calendar (creating an event creates its calendar too).
    pub fn add_calendar(&self, calendar_id: &str) {
        self.lock()
            .calendars
            .entry(calendar_id.to_owned())
            .or_default();
    }

    /// Whether the calendar has the event (cancelled ones included).
    pub fn has_event(&self, calendar_id: &str, id: &str) -> bool {
        self.lock()
            .calendars
            .get(calendar_id)
            .is_some_and(|c| c.events.contains_key(id))
    }

    /// A new event; returns its id.
    pub fn create_event(&self, calendar_id: &str, input: EventInput) -> String {
        let mut inner = self.lock();
        let (change, now) = inner.tick();
        let seq = inner.next_id;
        inner.next_id += 1;
        // Google's event ids are base32hex: lower-case a-v and digits.
        let id = format!("bandevent{seq:06}");
        let event = FakeEvent {
            id: id.clone(),
            input,
            cancelled: false,
            seq,
            change,
            created: now,
            updated: now,
            sequence: 0,
        };
        inner
            .calendars
            .entry(calendar_id.to_owned())
            .or_default()
            .events
            .insert(id.clone(), event);
        drop(inner);
        self.notify(calendar_id);
        id
    }

    /// Change an event's content (a new etag and `updated`).
    pub fn update_event(&self, calendar_id: &str, id: &str, f: impl FnOnce(&mut EventInput)) {
        self.lock()
            .change(calendar_id, id, |event| f(&mut event.input));
        self.notify(calendar_id);
    }

    /// Delete an event as Google does: it stays as a `cancelled` tombstone.
    pub fn cancel_event(&self, calendar_id: &str, id: &str) {
        self.lock()
            .change(calendar_id, id, |event| event.cancelled = true);
        self.notify(calendar_id);
    }

    /// Delete an event for good, tombstone included: listings no longer show it at all,
    /// so every sync token issued before now is stale for that calendar.
    pub fn delete_event(&self, calendar_id: &str, id: &str) {
        let mut inner = self.lock();
        let (change, _) = inner.tick();
        let calendar = inner.calendar_mut(calendar_id);
        assert!(
            calendar.events.remove(id).is_some(),
            "the fake Calendar has no event {id:?} in {calendar_id:?}"
        );
        calendar.min_valid = change + 1;
        drop(inner);
        self.notify(calendar_id);
    }

    /// Make every sync token issued so far stale: the next incremental listing of any
    /// calendar answers 410 `fullSyncRequired`.
    pub fn invalidate_sync_tokens(&self) {
        let mut inner = self.lock();
        let (change, _) = inner.tick();
        for calendar in inner.calendars.values_mut() {
            calendar.min_valid = change + 1;
        }
    }

    /// The `nextSyncToken` a listing finished now would end with.
    pub fn current_sync_token(&self) -> String {
        sync_token(self.lock().next_change)
    }

    /// The most events a page holds, whatever `maxResults` asks (default 2500).
    pub fn set_page_size(&self, page_size: usize) {
        self.lock().page_size = page_size.clamp(1, MAX_RESULTS);
    }
}

/// The routes of the fake Calendar API (no fallback: mergeable with other fakes').
pub fn router(state: FakeCalendarState) -> Router {
    Router::new()
        .route(
            "/calendar/v3/calendars/{calendar_id}/events",
            get(events_list),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events/watch",
            post(events_watch),
        )
        .route("/calendar/v3/channels/stop", post(channels_stop))
        .with_state(state)
}

/// A running fake Calendar API. Stops serving when dropped. Derefs to its
/// [`FakeCalendarState`] for the mutating methods.
pub type FakeCalendar = Running<FakeCalendarState>;

impl FakeState for FakeCalendarState {
    const NAME: &'static str = "Calendar";

    fn with_token(token: &str) -> Self {
        Self::new(token)
    }

    fn app(&self) -> Router {
        router(self.clone()).fallback(|| async { status_error(404) })
    }

    fn with_gate<R>(&self, f: impl FnOnce(&mut Gate) -> R) -> R {
        f(&mut self.lock().gate)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP side
// ---------------------------------------------------------------------------------------

fn sync_token(change: u64) -> String {
    format!("{SYNC_TOKEN_PREFIX}{change}")
}

/// Where a listing stands: a full one (its sync token fixed at its first page, then
/// events in creation order after `after_seq`), or an incremental one (events whose
/// latest change is `from` or later, in change order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Full { snapshot: u64, after_seq: u64 },
    Sync { from: u64 },
}

fn parse_page_token(token: &str) -> Option<Listing> {
    if let Some(rest) = token.strip_prefix(FULL_PAGE_PREFIX) {
        let (snapshot, after) = rest.split_once('-')?;
        return Some(Listing::Full {
            snapshot: snapshot.parse().ok()?,
            after_seq: after.parse().ok()?,
        });
    }
    let from = token.strip_prefix(SYNC_PAGE_PREFIX)?.parse().ok()?;
    Some(Listing::Sync { from })
}

fn full_sync_required() -> Response {
    google_error(
        410,
        "calendar",
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        None,
        Some(("parameter", "syncToken")),
    )
}

/// What Google answers a sync token next to a filter (the reason is the one users
/// report seeing; Google does not document it).
fn sync_token_with_restrictions() -> Response {
    google_error(
        400,
        "global",
        "invalid",
        "Sync token cannot be used with other request restrictions.",
        Some("INVALID_ARGUMENT"),
        Some(("parameter", "syncToken")),
    )
}

/// `maxResults`: 1 or more (default 250), capped at 2500 and the fake's page size.
fn max_results(page_size: usize, params: &Params) -> Option<usize> {
    let asked = match param(params, "maxResults") {
        None => DEFAULT_MAX_RESULTS,
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1)?,
    };
    Some(asked.min(MAX_RESULTS).min(page_size))
}

async fn events_list(
    State(state): State<FakeCalendarState>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let mut inner = state.lock();
    let path = format!("/calendar/v3/calendars/{calendar_id}/events");
    if let Some(response) = inner.gate.check("GET", &path, &params, &headers) {
        return response;
    }
    let sync = param(&params, "syncToken");
    if sync.is_some()
        && (SYNC_TOKEN_RESTRICTIONS
            .iter()
            .any(|r| param(&params, r).is_some())
            || param(&params, "showDeleted") == Some("false"))
    {
        return sync_token_with_restrictions();
    }
    if flag(&params, "singleEvents", false) {
        return google_error(
            400,
            "global",
            "invalid",
            "singleEvents=true is not modelled by the fake Calendar",
            Some("INVALID_ARGUMENT"),
            Some(("parameter", "singleEvents")),
        );
    }
    let Some(size) = max_results(inner.page_size, &params) else {
        return invalid_parameter("maxResults");
    };
    let show_deleted = sync.is_some() || flag(&params, "showDeleted", false);
    let next_change = inner.next_change;
    let Some(calendar) = inner.calendars.get(&calendar_id) else {
        return status_error(404);
    };
    // Google answers an unreadable sync token like a stale one.
    let from = sync.map(|token| {
        token
            .strip_prefix(SYNC_TOKEN_PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n >= calendar.min_valid && *n <= next_change)
    });
    let listing = match (from, param(&params, "pageToken")) {
        (Some(None), _) => return full_sync_required(),
        (None, None) => Listing::Full {
            snapshot: next_change,
            after_seq: 0,
        },
        (Some(Some(from)), None) => Listing::Sync { from },
        (sync, Some(page)) => match parse_page_token(page) {
            Some(l @ Listing::Full { .. }) if sync.is_none() => l,
            Some(l @ Listing::Sync { .. }) if sync.is_some() => l,
            _ => return invalid_parameter("pageToken"),
        },
    };
    let visible = |e: &&FakeEvent| !e.cancelled || show_deleted || e.is_exception();
    let mut matching: Vec<&FakeEvent> = match listing {
        Listing::Full { after_seq, .. } => {
            let mut all: Vec<&FakeEvent> = calendar
                .events
                .values()
                .filter(|e| e.seq > after_seq)
                .filter(visible)
                .collect();
            all.sort_by_key(|e| e.seq);
            all
        }
        Listing::Sync { from } => {
            let mut changed: Vec<&FakeEvent> = calendar
                .events
                .values()
                .filter(|e| e.change >= from)
                .collect();
            changed.sort_by_key(|e| e.change);
            changed
        }
    };
    let more = matching.len() > size;
    matching.truncate(size);
    let items: Vec<Value> = matching.iter().map(|e| e.to_json(&calendar_id)).collect();
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"p3{next_change:014}\""),
        "summary": calendar_id,
        "updated": rfc3339(inner.clock),
        "timeZone": TIME_ZONE,
        "accessRole": "owner",
        "defaultReminders": [],
        "items": items,
    });
    let last = matching.last();
    match (listing, more, last) {
        (Listing::Full { snapshot, .. }, true, Some(last)) => {
            body["nextPageToken"] = json!(format!("{FULL_PAGE_PREFIX}{snapshot}-{}", last.seq));
        }
        (Listing::Full { snapshot, .. }, _, _) => {
            body["nextSyncToken"] = json!(sync_token(snapshot))
        }
        (Listing::Sync { .. }, true, Some(last)) => {
            body["nextPageToken"] = json!(format!("{SYNC_PAGE_PREFIX}{}", last.change + 1));
        }
        (Listing::Sync { .. }, _, _) => body["nextSyncToken"] = json!(sync_token(next_change)),
    }
    drop(inner);
    answer(&params, body)
}

/// `events.watch`: a channel on one calendar's events.
async fn events_watch(
    State(state): State<FakeCalendarState>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Option<axum::Json<serde_json::Value>>,
) -> Response {
    let path = format!("/calendar/v3/calendars/{calendar_id}/events/watch");
    {
        let mut inner = state.lock();
        if let Some(response) = inner.gate.check("POST", &path, &params, &headers) {
            return response;
        }
        if !inner.calendars.contains_key(&calendar_id) {
            return status_error(404);
        }
    }
    let uri = format!("https://www.googleapis.com{path}?alt=json");
    let topic = format!("calendar:{calendar_id}");
    state
        .push()
        .watch(&topic, &uri, &body.unwrap_or_default().0)
}

/// `channels.stop` of a Calendar channel.
async fn channels_stop(
    State(state): State<FakeCalendarState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Option<axum::Json<serde_json::Value>>,
) -> Response {
    let refused = state
        .lock()
        .gate
        .check("POST", "/calendar/v3/channels/stop", &params, &headers);
    match refused {
        Some(response) => response,
        None => state.push().stop(&body.unwrap_or_default().0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ya29.calendar-fake";
    const CAL: &str = "band@group.calendar.google.com";

    /// GET `target` (path and query) with `token`; the status and the JSON body.
    async fn call(fake: &FakeCalendar, target: &str, token: &str) -> (u16, Value) {
        let url = format!("{}{target}", fake.base_url());
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("the fake answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// An evening event (21:00 to 23:30 on 14 March 2026).
    fn evening(summary: &str) -> EventInput {
        EventInput::timed(
            summary,
            "2026-03-14T21:00:00+01:00",
            "2026-03-14T23:30:00+01:00",
        )
    }

    fn events_path(query: &str) -> String {
        format!("/calendar/v3/calendars/{CAL}/events?{query}")
    }

    fn ids(body: &Value) -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["id"].as_str().expect("an id").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn lists_events_with_googles_shapes_and_a_sync_token_at_the_end() {
        // GIVEN a calendar with a gig (timed, with a location) and an all-day festival
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        let gig = fake.create_event(CAL, evening("Gig at the Roxy").with_location("The Roxy"));
        fake.create_event(
            CAL,
            EventInput::all_day("Festival", "2026-07-01", "2026-07-03"),
        );
        // WHEN the calendar is listed
        let (status, body) = call(&fake, &events_path(""), TOKEN).await;
        // THEN both come in creation order with Google's field names, and the sync token
        assert_eq!(status, 200);
        assert_eq!(body["kind"], "calendar#events");
        assert_eq!(ids(&body).first(), Some(&gig));
        let e = &body["items"][0];
        assert_eq!(e["kind"], "calendar#event");
        assert_eq!(e["status"], "confirmed");
        assert_eq!(e["summary"], "Gig at the Roxy");
        assert_eq!(e["location"], "The Roxy");
        assert_eq!(e["start"]["dateTime"], "2026-03-14T21:00:00+01:00");
        assert_eq!(e["start"]["timeZone"], TIME_ZONE);
        assert_eq!(e["updated"], "2026-03-01T12:00:01.000Z");
        assert!(e["etag"].as_str().unwrap().starts_with('"'));
        assert!(
            e["htmlLink"]
                .as_str()
                .unwrap()
                .starts_with("https://www.google.com/calendar/event?eid=")
        );
        assert_eq!(body["items"][1]["start"], json!({"date": "2026-07-01"}));
        assert_eq!(body["nextSyncToken"], fake.current_sync_token());
        assert!(body.get("nextPageToken").is_none());
    }

    #[tokio::test]
    async fn a_sync_token_lists_only_later_changes_and_cancellations_minimally() {
        // GIVEN three events and a sync token taken after them
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        let a = fake.create_event(CAL, evening("A"));
        let b = fake.create_event(CAL, EventInput::all_day("B", "2026-03-03", "2026-03-04"));
        fake.create_event(CAL, EventInput::all_day("C", "2026-03-05", "2026-03-06"));
        let token = fake.current_sync_token();
        // WHEN one is cancelled and another updated
        fake.cancel_event(CAL, &a);
        fake.update_event(CAL, &b, |e| e.location = Some("Studio".into()));
        let (status, body) = call(&fake, &events_path(&format!("syncToken={token}")), TOKEN).await;
        // THEN only those two come, in change order; the cancelled one with only
        // kind, etag, id and status
        assert_eq!(status, 200);
        assert_eq!(ids(&body), [a.clone(), b]);
        let cancelled = body["items"][0].as_object().unwrap();
        let mut keys: Vec<&str> = cancelled.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["etag", "id", "kind", "status"]);
        assert_eq!(cancelled["status"], "cancelled");
        // AND a full listing hides the cancelled one unless showDeleted=true
        let (_, all) = call(&fake, &events_path(""), TOKEN).await;
        assert!(!ids(&all).contains(&a));
        let (_, deleted) = call(&fake, &events_path("showDeleted=true"), TOKEN).await;
        assert!(ids(&deleted).contains(&a));
        // AND the new token lists nothing and answers itself again
        let next = body["nextSyncToken"].as_str().unwrap().to_owned();
        let (_, again) = call(&fake, &events_path(&format!("syncToken={next}")), TOKEN).await;
        assert_eq!(again["items"], json!([]));
        assert_eq!(again["nextSyncToken"], next.as_str());
    }

    #[tokio::test]
    async fn stale_sync_tokens_are_410_full_sync_required() {
        // GIVEN a sync token, then an event deleted for good
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        let a = fake.create_event(CAL, EventInput::all_day("A", "2026-03-02", "2026-03-03"));
        let before = fake.current_sync_token();
        fake.delete_event(CAL, &a);
        let after = fake.current_sync_token();
        // THEN the older token is 410 fullSyncRequired, the newer one is fine
        let (status, body) = call(&fake, &events_path(&format!("syncToken={before}")), TOKEN).await;
        assert_eq!(status, 410);
        assert_eq!(body["error"]["errors"][0]["reason"], "fullSyncRequired");
        assert_eq!(body["error"]["errors"][0]["location"], "syncToken");
        let (status, _) = call(&fake, &events_path(&format!("syncToken={after}")), TOKEN).await;
        assert_eq!(status, 200);
        // WHEN every token is invalidated THEN the newer one is 410 too, and so is garbage
        fake.invalidate_sync_tokens();
        for token in [after.as_str(), "not-a-token"] {
            let (status, _) = call(&fake, &events_path(&format!("syncToken={token}")), TOKEN).await;
            assert_eq!(status, 410, "{token}");
        }
        // AND a token issued after the invalidation works
        let fresh = fake.current_sync_token();
        let (status, _) = call(&fake, &events_path(&format!("syncToken={fresh}")), TOKEN).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn pages_follow_max_results_and_the_fakes_page_size() {
        // GIVEN five events and pages of at most two
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        let created: Vec<String> = (0..5)
            .map(|i| {
                fake.create_event(
                    CAL,
                    EventInput::all_day(&format!("E{i}"), "2026-04-01", "2026-04-02"),
                )
            })
            .collect();
        fake.set_page_size(2);
        // WHEN the calendar is listed page by page
        let mut seen = Vec::new();
        let mut query = "maxResults=2500".to_owned();
        let mut pages = 0;
        let sync_token = loop {
            let (status, body) = call(&fake, &events_path(&query), TOKEN).await;
            assert_eq!(status, 200);
            pages += 1;
            seen.extend(ids(&body));
            match body["nextPageToken"].as_str() {
                Some(next) => {
                    assert!(body.get("nextSyncToken").is_none());
                    query = format!("maxResults=2500&pageToken={next}");
                }
                None => break body["nextSyncToken"].as_str().unwrap().to_owned(),
            }
        };
        // THEN three pages hold the five events once each, and the token ends the last
        assert_eq!(pages, 3);
        assert_eq!(seen, created);
        assert_eq!(sync_token, fake.current_sync_token());
        // AND a full listing's page token is refused next to a sync token
        let (_, first) = call(&fake, &events_path(""), TOKEN).await;
        let page = first["nextPageToken"].as_str().unwrap();
        let (status, _) = call(
            &fake,
            &events_path(&format!("syncToken={sync_token}&pageToken={page}")),
            TOKEN,
        )
        .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn refuses_what_google_refuses() {
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        fake.add_calendar(CAL);
        let token = fake.current_sync_token();
        // GIVEN a sync token next to a filter, or with showDeleted=false THEN 400
        for extra in [
            "timeMin=2026-01-01T00:00:00Z",
            "q=gig",
            "orderBy=updated",
            "showDeleted=false",
        ] {
            let (status, body) = call(
                &fake,
                &events_path(&format!("syncToken={token}&{extra}")),
                TOKEN,
            )
            .await;
            assert_eq!(status, 400, "{extra}");
            assert_eq!(
                body["error"]["message"],
                "Sync token cannot be used with other request restrictions."
            );
        }
        // AND bad maxResults, an unknown page token, singleEvents=true are 400
        for bad in [
            "maxResults=0",
            "maxResults=lots",
            "pageToken=nope",
            "singleEvents=true",
        ] {
            let (status, _) = call(&fake, &events_path(bad), TOKEN).await;
            assert_eq!(status, 400, "{bad}");
        }
        // AND an unknown calendar is 404, a wrong token 401
        let (status, _) = call(&fake, "/calendar/v3/calendars/nobody/events", TOKEN).await;
        assert_eq!(status, 404);
        let (status, body) = call(&fake, &events_path(""), "ya29.wrong").await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["errors"][0]["reason"], "authError");
        // AND every request was recorded with the decoded calendar id
        let requests = fake.requests();
        assert_eq!(requests.len(), 10);
        assert_eq!(
            requests[0].path,
            format!("/calendar/v3/calendars/{CAL}/events")
        );
        assert!(!requests.last().unwrap().authorized);
    }

    #[tokio::test]
    async fn the_router_merges_with_other_routes() {
        // GIVEN the calendar routes merged into an app with another route
        let state = FakeCalendarState::new(TOKEN);
        state.add_calendar(CAL);
        let app = Router::new()
            .route("/other", get(|| async { "other" }))
            .merge(router(state.clone()));
        let server = crate::server::Served::bind(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            app,
            "test",
        )
        .await
        .unwrap();
        let addr = server.addr();
        // WHEN the calendar route is called THEN the shared state answers it
        let response = reqwest::Client::new()
            .get(format!("http://{addr}{}", events_path("")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(state.with_gate(|g| g.requests()).len(), 1);
        drop(server);
    }
}
