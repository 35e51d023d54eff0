//! Push notification channels ("watch" calls) of the Google APIs: the request every
//! `*.watch` method takes, the channel resource it answers, and `channels.stop`.
//!
//! - Drive: `POST drive/v3/changes/watch?pageToken=…` (the change log of the user or of a
//!   shared drive), `POST drive/v3/files/{fileId}/watch` (one file, e.g. a setlist
//!   spreadsheet), `POST drive/v3/channels/stop`;
//! - Calendar: `POST calendar/v3/calendars/{calendarId}/events/watch`,
//!   `POST calendar/v3/channels/stop`.
//!
//! Google then POSTs headers-only notifications to the channel's `address` (an HTTPS URL
//! Google can reach: our HTTP API's `/webhooks/google`), which `webhook` checks.

use super::GoogleError;
use super::calendar::CalendarClient;
use super::client::{ApiClient, GoogleClient, int64};
use super::drive::DriveClient;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The body of every `*.watch` call.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct WatchRequest {
    /// Our id for the channel (a UUID): notifications carry it as `X-Goog-Channel-ID`.
    pub id: String,
    /// Always `web_hook`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub address: String,
    /// Echoed as `X-Goog-Channel-Token` with every notification; only its hash is stored.
    pub token: String,
    /// When the channel should end, ms since the epoch (int64 as a string). Google may
    /// answer an earlier one (its maximum for the resource).
    #[serde(with = "int64_ms")]
    pub expiration: DateTime<Utc>,
}

/// Never prints the token.
impl std::fmt::Debug for WatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRequest")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl WatchRequest {
    pub fn new(id: String, address: String, token: String, expiration: DateTime<Utc>) -> Self {
        Self {
            id,
            kind: "web_hook",
            address,
            token,
            expiration,
        }
    }
}

/// The channel resource a watch call answers (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    /// Opaque id of the watched resource: notifications carry it as `X-Goog-Resource-ID`.
    pub resource_id: String,
    #[serde(default)]
    pub resource_uri: Option<String>,
    /// ms since the epoch, as an int64 string.
    #[serde(default, with = "int64")]
    pub expiration: Option<u64>,
}

impl Channel {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expiration
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(DateTime::from_timestamp_millis)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StopRequest<'a> {
    id: &'a str,
    resource_id: &'a str,
}

/// `channels.stop` under `prefix` (`["drive","v3"]` or `["calendar","v3"]`). A channel
/// Google no longer has (404) is already stopped: not an error.
pub async fn stop_channel(
    api: &ApiClient,
    prefix: &[&str],
    id: &str,
    resource_id: &str,
) -> Result<(), GoogleError> {
    let segments: Vec<&str> = prefix.iter().copied().chain(["channels", "stop"]).collect();
    let body = StopRequest { id, resource_id };
    match api
        .post_json::<_, serde::de::IgnoredAny>(&segments, &[], Some(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(GoogleError::Http { status: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl DriveClient {
    /// `changes.watch` from `page_token` (of the shared drive `drive_id`, or of the
    /// user's view).
    pub async fn watch_changes(
        &self,
        page_token: &str,
        drive_id: Option<&str>,
        request: &WatchRequest,
    ) -> Result<Channel, GoogleError> {
        let mut query = vec![
            ("pageToken", page_token),
            ("supportsAllDrives", "true"),
            ("includeItemsFromAllDrives", "true"),
        ];
        if let Some(drive_id) = drive_id {
            query.push(("driveId", drive_id));
        }
        self.api()
            .post_json(&["drive", "v3", "changes", "watch"], &query, Some(request))
            .await
    }

    /// `files.watch` of one file.
    pub async fn watch_file(
        &self,
        file_id: &str,
        request: &WatchRequest,
    ) -> Result<Channel, GoogleError> {
        self.api()
            .post_json(
                &["drive", "v3", "files", file_id, "watch"],
                &[("supportsAllDrives", "true")],
                Some(request),
            )
            .await
    }

    /// `channels.stop` of a Drive channel.
    pub async fn stop_channel(&self, id: &str, resource_id: &str) -> Result<(), GoogleError> {
        stop_channel(self.api(), &["drive", "v3"], id, resource_id).await
    }
}

impl CalendarClient {
    /// `events.watch` of one calendar.
    pub async fn watch_events(
        &self,
        calendar_id: &str,
        request: &WatchRequest,
    ) -> Result<Channel, GoogleError> {
        self.api()
            .post_json(
                &[
                    "calendar",
                    "v3",
                    "calendars",
                    calendar_id,
                    "events",
                    "watch",
                ],
                &[],
                Some(request),
            )
            .await
    }

    /// `channels.stop` of a Calendar channel.
    pub async fn stop_channel(&self, id: &str, resource_id: &str) -> Result<(), GoogleError> {
        stop_channel(self.api(), &["calendar", "v3"], id, resource_id).await
    }
}

/// A time as int64 ms in a decimal string.
mod int64_ms {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.timestamp_millis().to_string())
    }
}
