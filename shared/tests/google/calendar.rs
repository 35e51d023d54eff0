//! The Calendar client against the fake Calendar API.

use bandsync::google::GoogleError;
use bandsync::google::auth::StaticToken;
use bandsync::google::calendar::*;
use bandsync::google::client::{ApiClient, GoogleClient};
use bandsync_google_fake::Fault;
use bandsync_google_fake::calendar::{EventInput, FakeCalendar};
use bandsync_testkit::{RecordingSleeper, recording_retrier};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "ya29.calendar-client";
const CAL: &str = "band@group.calendar.google.com";

async fn setup() -> (FakeCalendar, CalendarClient, Arc<RecordingSleeper>) {
    let fake = FakeCalendar::start(TOKEN).await.expect("fake starts");
    fake.add_calendar(CAL);
    let (retrier, sleeper) = recording_retrier(6);
    let api = ApiClient::new(
        bandsync::google::https_client().unwrap(),
        &fake.base_url(),
        Arc::new(StaticToken::new(TOKEN)),
        "Calendar",
    )
    .unwrap();
    let client = CalendarClient::from_api(api.with_retrier(retrier));
    (fake, client, sleeper)
}

fn gig(fake: &FakeCalendar, summary: &str) -> String {
    fake.create_event(
        CAL,
        EventInput::timed(
            summary,
            "2026-03-14T21:00:00+01:00",
            "2026-03-14T23:00:00+01:00",
        ),
    )
}

/// Follow a listing to its end: every event, the sync token, the number of pages.
async fn drain(client: &CalendarClient, sync_token: Option<&str>) -> (Vec<Event>, String, u32) {
    let mut query = EventsQuery {
        sync_token: sync_token.map(str::to_owned),
        page_token: None,
    };
    let (mut all, mut pages) = (Vec::new(), 0);
    loop {
        let page = client.list_events(CAL, &query).await.unwrap();
        pages += 1;
        all.extend(page.items);
        match (page.next_page_token, page.next_sync_token) {
            (Some(next), _) => query.page_token = Some(next),
            (None, Some(token)) => return (all, token, pages),
            (None, None) => unreachable!("list_events refuses such a page"),
        }
    }
}

fn query_of(req: &bandsync_google_fake::RecordedRequest) -> HashMap<&str, &str> {
    req.query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn a_full_listing_pages_until_the_sync_token_with_the_documented_parameters() {
    // GIVEN five events, served two a page
    let (fake, client, _) = setup().await;
    fake.set_page_size(2);
    let ids: Vec<String> = (0..5).map(|i| gig(&fake, &format!("Gig {i}"))).collect();
    // WHEN the calendar is listed without a sync token
    let (events, token, pages) = drain(&client, None).await;
    // THEN three pages give the five events, decoded, and the sync token
    assert_eq!(pages, 3);
    let seen: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(seen, ids);
    assert_eq!(events[0].summary.as_deref(), Some("Gig 0"));
    assert_eq!(events[0].status, EventStatus::Confirmed);
    assert_eq!(
        events[0].start.as_ref().unwrap().date_time.as_deref(),
        Some("2026-03-14T21:00:00+01:00")
    );
    assert!(events[0].etag.is_some() && events[0].html_link.is_some());
    assert!(events[0].updated.is_some());
    assert_eq!(token, fake.current_sync_token());
    // AND every request asked for the documented full listing: deleted events,
    // recurring events unexpanded, 2500 a page, our fields; no sync token
    let requests = fake.requests();
    for (i, r) in requests.iter().enumerate() {
        let q = query_of(r);
        assert_eq!(r.path, format!("/calendar/v3/calendars/{CAL}/events"));
        assert_eq!(q["showDeleted"], "true");
        assert_eq!(q["singleEvents"], "false");
        assert_eq!(q["maxResults"], "2500");
        assert_eq!(q["fields"], EVENTS_FIELDS);
        assert!(!q.contains_key("syncToken"));
        assert_eq!(q.contains_key("pageToken"), i > 0);
        assert!(r.authorized);
    }
}

#[tokio::test]
async fn an_incremental_listing_sends_the_sync_token_on_every_page_and_no_filter() {
    // GIVEN a synced calendar, then three new events, a cancellation and an edit
    let (fake, client, _) = setup().await;
    let gone = gig(&fake, "Cancelled gig");
    let edited = gig(&fake, "Rehearsal");
    let (_, token, _) = drain(&client, None).await;
    fake.set_page_size(2);
    let new: Vec<String> = (0..3).map(|i| gig(&fake, &format!("New {i}"))).collect();
    fake.cancel_event(CAL, &gone);
    fake.update_event(CAL, &edited, |e| e.location = Some("Studio B".into()));
    fake.clear_requests();
    // WHEN the changes are listed from the sync token
    let (events, next, pages) = drain(&client, Some(&token)).await;
    // THEN the five changes come over three pages; the cancellation as Google
    // sends a deleted event (id and status, no summary)
    assert_eq!(pages, 3);
    let seen: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(seen, [&new[0], &new[1], &new[2], &gone, &edited]);
    let cancelled = &events[3];
    assert!(cancelled.is_cancelled());
    assert_eq!(cancelled.summary, None);
    assert_eq!(events[4].location.as_deref(), Some("Studio B"));
    assert_eq!(next, fake.current_sync_token());
    // AND every page carried the same sync token, none of the parameters Google
    // refuses with it, and showDeleted=true (never false)
    for (i, r) in fake.requests().iter().enumerate() {
        let q = query_of(r);
        assert_eq!(q["syncToken"], token);
        assert_eq!(q["showDeleted"], "true");
        assert!(
            SYNC_TOKEN_RESTRICTIONS.iter().all(|p| !q.contains_key(p)),
            "{q:?}"
        );
        assert_eq!(q.contains_key("pageToken"), i > 0);
    }
}

#[tokio::test]
async fn a_stale_sync_token_is_gone_and_not_retried() {
    // GIVEN a sync token made stale
    let (fake, client, sleeper) = setup().await;
    let token = fake.current_sync_token();
    fake.invalidate_sync_tokens();
    // WHEN the changes are listed
    let query = EventsQuery {
        sync_token: Some(token),
        page_token: None,
    };
    let err = client.list_events(CAL, &query).await.unwrap_err();
    // THEN it is Gone with Google's message, after one request and no wait
    assert_eq!(
        err,
        GoogleError::Gone {
            message: "Sync token is no longer valid, a full sync is required.".into()
        }
    );
    assert_eq!(fake.requests().len(), 1);
    assert!(sleeper.delays().is_empty());
}

#[tokio::test]
async fn a_storm_of_429s_and_500s_completes_honouring_retry_after() {
    // GIVEN a calendar whose next requests answer 429 (Retry-After 4, 2, none), 500
    let (fake, client, sleeper) = setup().await;
    let id = gig(&fake, "Gig");
    fake.fail_next(1, Fault::rate_limited(Some("4")));
    fake.fail_next(1, Fault::rate_limited(Some("2")));
    fake.fail_next(1, Fault::rate_limited(None));
    fake.fail_next(1, Fault::ServerError);
    // WHEN the calendar is listed
    let page = client
        .list_events(CAL, &EventsQuery::default())
        .await
        .unwrap();
    // THEN the fifth attempt succeeds, after the server's waits, then the jittered
    // backoffs of retries 3 and 4 (half of 400 ms and of 800 ms)
    assert_eq!(page.items[0].id, id);
    assert_eq!(fake.requests().len(), 5);
    let ms = Duration::from_millis;
    assert_eq!(sleeper.delays(), [ms(4_000), ms(2_000), ms(200), ms(400)]);
}

#[tokio::test]
async fn pages_without_tokens_or_json_are_decode_errors() {
    // GIVEN answers with no token, truncated JSON, and items of the wrong shape
    let (fake, client, _) = setup().await;
    for body in [
        r#"{"kind":"calendar#events","items":[]}"#,
        r#"{"items":{"id":"x"},"nextSyncToken":"s"}"#,
    ] {
        fake.fail_next(
            1,
            Fault::Raw {
                status: 200,
                body: body.into(),
            },
        );
    }
    fake.fail_next(1, Fault::MalformedJson);
    // WHEN the calendar is listed three times THEN each is a Decode error
    for _ in 0..3 {
        let err = client
            .list_events(CAL, &EventsQuery::default())
            .await
            .unwrap_err();
        assert!(matches!(err, GoogleError::Decode(_)), "{err:?}");
    }
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn calendar_ids_are_encoded_as_one_path_segment() {
    let client = CalendarClient::new(
        bandsync::google::https_client().unwrap(),
        CALENDAR_BASE_URL,
        Arc::new(StaticToken::new("t")),
    )
    .unwrap();
    let id = "en.usa#holiday@group.v.calendar.google.com";
    assert_eq!(
        client
            .api()
            .url(&["calendar", "v3", "calendars", id, "events"])
            .as_str(),
        "https://www.googleapis.com/calendar/v3/calendars/en.usa%23holiday@group.v.calendar.google.com/events"
    );
}

#[test]
fn events_decode_as_google_sends_them() {
    // GIVEN a deleted event with only its id and status, a cancelled occurrence, an
    // event with a status this client does not know, and a full one
    let deleted: Event = serde_json::from_str(r#"{"id":"abc","status":"cancelled"}"#).unwrap();
    let occurrence: Event = serde_json::from_str(
        r#"{"id":"abc_20260310T180000Z","status":"cancelled","recurringEventId":"abc",
            "originalStartTime":{"dateTime":"2026-03-10T19:00:00+01:00","timeZone":"Europe/Paris"}}"#,
    )
    .unwrap();
    let odd: Event = serde_json::from_str(r#"{"id":"x","status":"postponed"}"#).unwrap();
    let full: Event = serde_json::from_str(
        r#"{"kind":"calendar#event","etag":"\"318\"","id":"e1","status":"tentative",
            "htmlLink":"https://www.google.com/calendar/event?eid=ZTE","summary":"Rehearsal",
            "start":{"date":"2026-03-10"},"end":{"date":"2026-03-11"},
            "recurrence":["RRULE:FREQ=WEEKLY;BYDAY=TU"],"updated":"2026-03-01T12:00:00.000Z",
            "attendees":[{"email":"drums@example.com"}]}"#,
    )
    .unwrap();
    // THEN each decodes, unknown fields ignored, the status defaulting to confirmed
    assert!(deleted.is_cancelled() && deleted.summary.is_none() && deleted.etag.is_none());
    assert_eq!(occurrence.recurring_event_id.as_deref(), Some("abc"));
    assert_eq!(odd.status, EventStatus::Other);
    assert_eq!(full.status, EventStatus::Tentative);
    assert_eq!(full.start, Some(EventDateTime::date("2026-03-10")));
    assert_eq!(full.recurrence.len(), 1);
    let no_status: Event = serde_json::from_str(r#"{"id":"y"}"#).unwrap();
    assert_eq!(no_status.status, EventStatus::Confirmed);
    // AND an event without an id is refused
    assert!(serde_json::from_str::<Event>(r#"{"status":"confirmed"}"#).is_err());
}
