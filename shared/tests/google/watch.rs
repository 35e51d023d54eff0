//! Watch channels (`*.watch`, `channels.stop`) against the fake Drive API.

use axum::http::HeaderMap;
use bandsync::google::watch::*;
use bandsync_google_fake::FakeDrive;
use bandsync_testkit::{band as band_id, eventually};
use chrono::Utc;
use std::sync::{Arc, Mutex};

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

/// The notifications received, once there are at least `n`.
async fn wait_for(seen: &Arc<Mutex<Vec<HeaderMap>>>, n: usize) -> Vec<HeaderMap> {
    eventually(&format!("{n} notifications"), || async {
        let all = seen.lock().unwrap().clone();
        (all.len() >= n).then_some(all)
    })
    .await
}

/// Every notification up to the `sync` message of a channel `id` opened now, that one
/// included. A fake hub sends its channels' messages one at a time in the order they
/// were queued, so what is not before this marker was never queued: an absence check
/// without a fixed wait.
async fn up_to_marker(
    client: &bandsync::google::drive::DriveClient,
    seen: &Arc<Mutex<Vec<HeaderMap>>>,
    address: &str,
    id: &str,
) -> Vec<HeaderMap> {
    let expiry = Utc::now() + chrono::TimeDelta::hours(1);
    let request = WatchRequest::new(id.into(), address.into(), "marker".into(), expiry);
    let token = client.get_start_page_token(None).await.unwrap();
    client.watch_changes(&token, None, &request).await.unwrap();
    eventually(&format!("the sync message of {id}"), || async {
        let all = seen.lock().unwrap().clone();
        let at = all
            .iter()
            .position(|h| header(h, "x-goog-channel-id") == id)?;
        Some(all[..=at].to_vec())
    })
    .await
}

fn band() -> bandsync::model::BandId {
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
    let request = WatchRequest::new("chan-1".into(), address.clone(), "the-token".into(), expiry);
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
    assert!(fake.push().channels().is_empty());
    let all = up_to_marker(&client, &seen, &address, "marker").await;
    assert_eq!(all.len(), 3, "only the marker's sync after the stop");
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
    let request = WatchRequest::new("chan-f".into(), address.clone(), "t".into(), expiry);
    client.watch_file(&sheet, &request).await.unwrap();

    // WHEN the file changes, and another file changes
    fake.update_content(&sheet, b"new rows");
    fake.create_file(&fake.root_id(), "other.pdf", "application/pdf", b"x");

    // THEN only the watched file's change is notified (after the sync message)
    let all = up_to_marker(&client, &seen, &address, "marker").await;
    assert_eq!(all.len(), 3, "the sync message, one change, the marker");
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
    use bandsync_google_fake::calendar::{EventInput, FakeCalendar};
    use bandsync_google_fake::sheets::FakeSheets;
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
    let urls = bandsync::google::apis::GoogleUrls {
        calendar: calendar.base_url(),
        ..bandsync::google::apis::GoogleUrls::all_at(&drive.base_url())
    };
    let apis = bandsync::google::apis::GoogleApis::with_static_token(urls, TOKEN).unwrap();
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
