//! A Google Calendar API v3 client: the one call a Calendar source needs to follow a
//! calendar's events.
//!
//! [`CalendarClient::list_events`] is `GET /calendar/v3/calendars/{calendarId}/events`,
//! one page at a time:
//!
//! - without a sync token it is a *full* listing: every event, cancelled ones included
//!   (`showDeleted=true`), recurring events as one event with their `recurrence` rules
//!   and their changed or cancelled occurrences as exceptions (`singleEvents=false`),
//!   2500 a page (the largest Google allows);
//! - with a sync token (the `nextSyncToken` of the last page of the previous listing) it
//!   is an *incremental* listing: only the events changed since, deleted ones as
//!   `status: "cancelled"`. Google refuses a sync token together with `timeMin`,
//!   `timeMax`, `updatedMin`, `q`, `orderBy`, `iCalUID` and the extended-property
//!   filters, and with `showDeleted=false`: none of them is ever sent. The other
//!   parameters are the same as the full listing's, as Google asks ("the exact same list
//!   query"), and so is every later page's query, with its `pageToken` added.
//!
//! Every page but the last carries `nextPageToken`; the last one carries
//! `nextSyncToken`, the cursor for next time. A stale sync token is answered 410
//! (`fullSyncRequired`), which comes back as [`GoogleError::Gone`]: the caller drops its
//! cursor and lists everything again.
//!
//! Every call goes through [`ApiClient`]: a bearer token asked again on each attempt,
//! the band's throttle, retries with backoff honouring `Retry-After`.

use super::GoogleError;
use super::client::{ApiClient, GoogleClient};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the real Calendar API lives.
pub const CALENDAR_BASE_URL: &str = "https://www.googleapis.com";

/// The largest `maxResults` Google accepts for `events.list` (and the default here).
pub const MAX_RESULTS: u32 = 2500;

/// `fields` of `events.list`: the page tokens and the event fields [`Event`] models.
pub const EVENTS_FIELDS: &str = "nextPageToken,nextSyncToken,items(id,status,summary,description,location,start,end,updated,etag,htmlLink,recurrence,recurringEventId,originalStartTime)";

/// The `events.list` parameters Google refuses next to a `syncToken` ("to ensure
/// consistency of the client state"); `showDeleted=false` is refused too.
pub const SYNC_TOKEN_RESTRICTIONS: [&str; 8] = [
    "timeMin",
    "timeMax",
    "updatedMin",
    "q",
    "orderBy",
    "iCalUID",
    "privateExtendedProperty",
    "sharedExtendedProperty",
];

/// `status` of an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// The default when Google leaves it out.
    #[default]
    Confirmed,
    Tentative,
    /// Deleted; or, for an exception of a recurring event (`recurringEventId` set), that
    /// one occurrence is off.
    Cancelled,
    /// A status this client does not know (Google may add some): treated as live.
    #[serde(other)]
    Other,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Tentative => "tentative",
            Self::Cancelled => "cancelled",
            Self::Other => "other",
        }
    }
}

/// `start`, `end` or `originalStartTime`: a `date` (`yyyy-mm-dd`, all-day events) or a
/// `dateTime` (RFC 3339 with an offset), with the `timeZone` it was entered in. Kept as
/// the strings Google sends: they are passed on to the band's apps as they are, and a
/// value we cannot parse must not stop a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDateTime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl EventDateTime {
    /// An all-day date.
    pub fn date(date: &str) -> Self {
        Self {
            date: Some(date.to_owned()),
            ..Self::default()
        }
    }

    /// A time (RFC 3339 with an offset) in an IANA time zone.
    pub fn at(date_time: &str, time_zone: &str) -> Self {
        Self {
            date_time: Some(date_time.to_owned()),
            time_zone: Some(time_zone.to_owned()),
            ..Self::default()
        }
    }
}

/// An event, as the fields in [`EVENTS_FIELDS`] return it. Only `id` is guaranteed: a
/// deleted event may come with nothing but `id` and `status`, a cancelled occurrence
/// with `id`, `recurringEventId` and `originalStartTime`. (Absent fields are `None`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    #[serde(default)]
    pub status: EventStatus,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: Option<EventDateTime>,
    pub end: Option<EventDateTime>,
    /// Last modification of the event (of its data, not of attendees' answers only).
    pub updated: Option<DateTime<Utc>>,
    /// Changes with every change to the event: what a sync compares.
    pub etag: Option<String>,
    pub html_link: Option<String>,
    /// RRULE / EXRULE / RDATE / EXDATE lines of a recurring event.
    #[serde(default)]
    pub recurrence: Vec<String>,
    /// For an exception (a changed or cancelled occurrence): the recurring event.
    pub recurring_event_id: Option<String>,
    /// For an exception: when the occurrence was due by the recurrence rules.
    pub original_start_time: Option<EventDateTime>,
}

impl Event {
    pub fn is_cancelled(&self) -> bool {
        self.status == EventStatus::Cancelled
    }
}

/// What to list: everything (no sync token), or the changes since a sync token; from
/// the first page, or from a `nextPageToken` of the same listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub sync_token: Option<String>,
    pub page_token: Option<String>,
}

/// One page of `events.list`. At least one token is set: `next_page_token` while there
/// are more pages, `next_sync_token` on the last one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    #[serde(default)]
    pub items: Vec<Event>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

/// A Calendar v3 client. Cheap to clone (the HTTP client and token source are shared).
///
/// Retries and the band's throttle are the [`ApiClient`]'s: build one with them
/// (`ApiClient::new(…)?.with_retrier(…).with_throttle(…)`) and pass it to
/// [`CalendarClient::from_api`].
#[derive(Clone, Debug)]
pub struct CalendarClient {
    api: ApiClient,
    max_results: u32,
}

impl GoogleClient for CalendarClient {
    const API: &'static str = "Calendar";

    fn from_api(api: ApiClient) -> Self {
        Self {
            api,
            max_results: MAX_RESULTS,
        }
    }

    fn api(&self) -> &ApiClient {
        &self.api
    }

    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl CalendarClient {
    /// The `maxResults` asked for (clamped to 1..=2500; Google may still answer fewer).
    pub fn with_max_results(mut self, max_results: u32) -> Self {
        self.max_results = max_results.clamp(1, MAX_RESULTS);
        self
    }

    /// `events.list` of `calendar_id`: one page, full or incremental (see the module
    /// documentation for the parameters).
    pub async fn list_events(
        &self,
        calendar_id: &str,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        let max_results = self.max_results.to_string();
        let mut params = vec![
            ("maxResults", max_results.as_str()),
            ("showDeleted", "true"),
            ("singleEvents", "false"),
        ];
        if let Some(sync_token) = &query.sync_token {
            params.push(("syncToken", sync_token));
        }
        if let Some(page_token) = &query.page_token {
            params.push(("pageToken", page_token));
        }
        params.push(("fields", EVENTS_FIELDS));
        let page: EventsPage = self
            .api
            .get_json(
                &["calendar", "v3", "calendars", calendar_id, "events"],
                &params,
            )
            .await?;
        // A page with no token would leave the caller without a way on.
        if page.next_page_token.is_none() && page.next_sync_token.is_none() {
            return Err(GoogleError::Decode(
                "events.list page with neither nextPageToken nor nextSyncToken".into(),
            ));
        }
        Ok(page)
    }
}
