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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::fake::FakeDrive;
    use crate::testing::band as band_id;
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const TOKEN: &str = "ya29.watch-test";

    /// A receiver of notifications on loopback: records each request's headers.
    async fn receiver() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
        let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/webhooks/google",
            axum::routing::post(move |headers: HeaderMap| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(headers);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/webhooks/google"), seen)
    }

    async fn wait_for(seen: &Arc<Mutex<Vec<HeaderMap>>>, n: usize) -> Vec<HeaderMap> {
        for _ in 0..200 {
            if seen.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.lock().unwrap().clone()
    }

    fn band() -> crate::model::BandId {
        band_id("demo")
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn a_watched_change_log_notifies_with_googles_headers_and_stops() {
        // GIVEN a fake Drive and a receiver of notifications
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let client = fake.apis().drive(&band()).await.unwrap();
        let (address, seen) = receiver().await;
        let expiry = Utc::now() + chrono::TimeDelta::days(7);

        // WHEN the change log is watched
        let token = client.get_start_page_token(None).await.unwrap();
        let request = WatchRequest::new("chan-1".into(), address, "the-token".into(), expiry);
        let channel = client.watch_changes(&token, None, &request).await.unwrap();

        // THEN the channel is ours, with a resource id and the expiry we asked for
        assert_eq!(channel.id, "chan-1");
        assert!(!channel.resource_id.is_empty());
        assert_eq!(
            channel.expires_at().map(|t| t.timestamp_millis()),
            Some(expiry.timestamp_millis())
        );
        // AND the first message is the sync handshake, number 1
        let first = wait_for(&seen, 1).await;
        assert_eq!(header(&first[0], "x-goog-resource-state"), "sync");
        assert_eq!(header(&first[0], "x-goog-message-number"), "1");
        assert_eq!(header(&first[0], "x-goog-channel-token"), "the-token");

        // WHEN a file changes THEN a `change` notification follows, numbered 2
        fake.create_file(&fake.root_id(), "a.pdf", "application/pdf", b"x");
        let all = wait_for(&seen, 2).await;
        assert_eq!(all.len(), 2);
        assert_eq!(header(&all[1], "x-goog-resource-state"), "change");
        assert_eq!(header(&all[1], "x-goog-message-number"), "2");
        assert_eq!(header(&all[1], "x-goog-resource-id"), channel.resource_id);
        assert_eq!(header(&all[1], "x-goog-channel-id"), "chan-1");

        // WHEN it is stopped (twice: the second is a no-op) THEN changes notify no more
        client
            .stop_channel("chan-1", &channel.resource_id)
            .await
            .unwrap();
        client
            .stop_channel("chan-1", &channel.resource_id)
            .await
            .unwrap();
        fake.create_file(&fake.root_id(), "b.pdf", "application/pdf", b"y");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(fake.push().channels().is_empty());
    }

    #[tokio::test]
    async fn a_watched_file_notifies_its_changes_and_refuses_a_repeated_id() {
        // GIVEN a file watched through files.watch
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let sheet = fake.create_file(
            &fake.root_id(),
            "Setlist",
            "application/vnd.google-apps.spreadsheet",
            b"",
        );
        let client = fake.apis().drive(&band()).await.unwrap();
        let (address, seen) = receiver().await;
        let expiry = Utc::now() + chrono::TimeDelta::hours(20);
        let request = WatchRequest::new("chan-f".into(), address, "t".into(), expiry);
        client.watch_file(&sheet, &request).await.unwrap();

        // WHEN the file changes, and another file changes
        fake.update_content(&sheet, b"new rows");
        fake.create_file(&fake.root_id(), "other.pdf", "application/pdf", b"x");

        // THEN only the watched file's change is notified (after the sync message)
        let all = wait_for(&seen, 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(header(&all[1], "x-goog-resource-state"), "update");
        assert_eq!(header(&all[1], "x-goog-changed"), "content,properties");

        // AND a second channel with the same id is refused (400), not a panic
        let again = client.watch_file(&sheet, &request).await.unwrap_err();
        assert_eq!(again.status(), Some(400), "{again:?}");
        // AND watching a file that does not exist is a 404
        let missing = client.watch_file("nope", &request).await.unwrap_err();
        assert_eq!(missing.status(), Some(404), "{missing:?}");
    }

    #[tokio::test]
    async fn a_watched_calendar_and_a_watched_setlist_notify_their_edits() {
        // GIVEN a calendar watched through events.watch, and a spreadsheet (a Drive file
        // whose edits the Sheets fake reports to Drive's channels) through files.watch
        use crate::google::fake_calendar::{EventInput, FakeCalendar};
        use crate::google::fake_sheets::FakeSheets;
        let drive = FakeDrive::start(TOKEN).await.unwrap();
        let calendar = FakeCalendar::start(TOKEN).await.unwrap();
        let sheets = FakeSheets::start(TOKEN).await.unwrap();
        calendar.add_calendar("gigs");
        let sheet = drive.create_file(
            &drive.root_id(),
            "Setlist",
            "application/vnd.google-apps.spreadsheet",
            b"",
        );
        sheets.create_spreadsheet(&sheet, &["Set 1"]);
        sheets.set_push(drive.push().clone());
        let urls = crate::google::apis::GoogleUrls {
            calendar: calendar.base_url(),
            ..crate::google::apis::GoogleUrls::all_at(&drive.base_url())
        };
        let apis = crate::google::apis::GoogleApis::with_static_token(urls, TOKEN).unwrap();
        let (address, seen) = receiver().await;
        let expiry = Utc::now() + chrono::TimeDelta::days(1);
        let cal = apis.calendar(&band()).await.unwrap();
        let cal_channel = cal
            .watch_events(
                "gigs",
                &WatchRequest::new("cal-1".into(), address.clone(), "t".into(), expiry),
            )
            .await
            .unwrap();
        apis.drive(&band())
            .await
            .unwrap()
            .watch_file(
                &sheet,
                &WatchRequest::new("sheet-1".into(), address, "t".into(), expiry),
            )
            .await
            .unwrap();
        wait_for(&seen, 2).await;

        // WHEN a gig is added and a setlist row edited
        calendar.create_event(
            "gigs",
            EventInput::all_day("Gig", "2026-06-01", "2026-06-02"),
        );
        sheets.set_rows(&sheet, "Set 1", &[&["Song"], &["So What"]]);

        // THEN each channel hears of its own change: `exists` for the calendar, `update`
        // for the spreadsheet's Drive file
        let all = wait_for(&seen, 4).await;
        let states: Vec<(&str, &str)> = all[2..]
            .iter()
            .map(|h| {
                (
                    header(h, "x-goog-channel-id"),
                    header(h, "x-goog-resource-state"),
                )
            })
            .collect();
        assert!(states.contains(&("cal-1", "exists")), "{states:?}");
        assert!(states.contains(&("sheet-1", "update")), "{states:?}");
        // AND the calendar channel stops through Calendar's channels.stop
        cal.stop_channel("cal-1", &cal_channel.resource_id)
            .await
            .unwrap();
        assert!(calendar.push().channels().is_empty());
    }
}
