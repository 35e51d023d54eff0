//! The local stack against the fake Google APIs: a Drive change made at "Google" is
//! pushed to the stack's webhook through a watch channel the scheduler opened, synced by
//! the Drive engine, and reaches a subscribed client as a Drive-shaped `file.*` event.

use bandsync_local::LocalStack;
use bandsync_testkit::stack::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

async fn spawn_google_stack() -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(dir.path());
    cfg.google_fake = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    // No periodic pass during the test: what arrives came through push.
    cfg.channels_every = Duration::from_secs(3600);
    let stack = LocalStack::start(cfg).await.expect("stack starts");
    TestStack { stack, _dir: dir }
}

/// The fakes' control API on the stack's HTTP port.
struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    fn of(t: &TestStack) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/fake", t.stack.http_url),
        }
    }

    /// The status and JSON body (Null when none) of `method path` with `body`.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("control request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POST `body` to `path`, which must answer 201 with an id.
    async fn create(&self, path: &str, body: Value) -> String {
        let (status, answer) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }
}

fn drive_event(kind: &'static str, path: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events: &[Value]| {
        events
            .iter()
            .any(|e| e["event"] == kind && e["data"]["path"] == path)
            && events
                .last()
                .is_some_and(|e| e["event"] == "sync.completed")
    }
}

#[tokio::test]
async fn drive_changes_at_the_fake_reach_subscribers_through_a_watch_channel() {
    // GIVEN the stack with the fake Google APIs, and a member subscribed to the band
    let t = spawn_google_stack().await;
    let token = t.token("alice", &["demo"]);
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;

    // THEN the first scheduler tick opened a channel on the Drive source, and the first
    // pass listed the seeded tree (the two charts and the recording, not the file
    // outside the band folder)
    let first = alice
        .events_until(drive_event("file.created", "Recordings/rehearsal-1.mp3"))
        .await;
    let mut paths: Vec<String> = file_events(&first)
        .into_iter()
        .filter(|(k, _)| k == "file.created")
        .map(|(_, p)| p)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "Charts/Blue Bossa.pdf",
            "Charts/So What.pdf",
            "Recordings/rehearsal-1.mp3"
        ]
    );
    let (status, body) = t.http().get("/sync/status?band=demo", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let channels = body["watch_channels"].as_array().unwrap().clone();
    let drive_channel = channels
        .iter()
        .find(|c| c["source"] == "drive")
        .unwrap_or_else(|| panic!("a Drive channel in {channels:?}"));
    assert_eq!(drive_channel["kind"], "drive");
    assert!(drive_channel["expires_at"].is_string(), "{drive_channel}");

    // WHEN a chart is added at "Google" through the fake's control API
    let control = Control::of(&t);
    let (_, seeded) = control.call(reqwest::Method::GET, "/drive", None).await;
    let id = control
        .create(
            "/drive/files",
            json!({"name": "Autumn Leaves.pdf", "content": "%PDF chart",
                   "parent": seeded["charts"], "mime_type": "application/pdf"}),
        )
        .await;

    // THEN the push notification brings a Drive-shaped file.created, with the Drive id
    let batch = alice
        .events_until(drive_event("file.created", "Charts/Autumn Leaves.pdf"))
        .await;
    let event = batch.iter().find(|e| e["event"] == "file.created").unwrap();
    assert_eq!(event["data"]["file_id"], id.as_str());
    assert_eq!(event["data"]["source"], "drive");
    assert_eq!(event["data"]["hash"], md5_hex("%PDF chart"));

    // WHEN it is renamed, then trashed THEN a move and a delete follow, in order
    let rename = json!({"name": "Autumn Leaves (Eb).pdf"});
    let (status, _) = control
        .call(
            reqwest::Method::POST,
            &format!("/drive/files/{id}/rename"),
            Some(rename),
        )
        .await;
    assert_eq!(status, 204);
    alice
        .events_until(drive_event("file.moved", "Charts/Autumn Leaves (Eb).pdf"))
        .await;
    let (status, _) = control
        .call(
            reqwest::Method::POST,
            &format!("/drive/files/{id}/trash"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    alice
        .events_until(drive_event("file.deleted", "Charts/Autumn Leaves (Eb).pdf"))
        .await;

    // AND the fake's control API answers bad input with clear errors
    let post = reqwest::Method::POST;
    let (missing, _) = control
        .call(post.clone(), "/drive/files/nope/trash", None)
        .await;
    assert_eq!(missing, 404);
    let (no_body, _) = control.call(post, "/drive/files", None).await;
    assert_eq!(no_body, 400);
}

fn md5_hex(s: &str) -> String {
    bandsync_google_fake::drive::md5_hex(s.as_bytes())
}

/// An event named `kind` whose data satisfies `check`, once seen.
fn seen(events: &[Value], kind: &str, check: impl Fn(&Value) -> bool) -> bool {
    events
        .iter()
        .any(|e| e["event"] == kind && check(&e["data"]))
}

#[tokio::test]
async fn setlist_and_calendar_changes_at_the_fakes_reach_subscribers() {
    // GIVEN the stack with the fakes, a member subscribed, and the first passes done:
    // the seeded setlist as an initial diff, the seeded rehearsal and gig as created
    let t = spawn_google_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;
    let first = alice
        .events_until(|events| {
            seen(events, "setlist.updated", |d| d["initial"] == true)
                && seen(events, "calendar.event.created", |d| {
                    d["summary"] == "Gig at the Blue Note"
                })
                && seen(events, "calendar.event.created", |d| {
                    d["summary"] == "Rehearsal" && d["location"] == "Studio B"
                })
        })
        .await;
    let initial = first
        .iter()
        .find(|e| e["event"] == "setlist.updated")
        .unwrap();
    assert_eq!(initial["data"]["rows"], 2, "{initial}");
    let control = Control::of(&t);

    // WHEN a song is inserted at the top of the setlist and a key is changed
    let rows = json!({"rows": [
        ["Song", "Key", "Notes"],
        ["Autumn Leaves", "Gm", "opener"],
        ["Blue Bossa", "Cm", ""],
        ["So What", "Eb", "modal"],
    ]});
    let (status, _) = control
        .call(reqwest::Method::PUT, "/setlist", Some(rows))
        .await;
    assert_eq!(status, 204);

    // THEN one setlist.updated carries exactly that diff: one row added at 1, one
    // edited cell, and nothing reported as moved
    let batch = alice
        .events_until(|events| seen(events, "setlist.updated", |d| d["initial"] != true))
        .await;
    let diff = &batch
        .iter()
        .find(|e| e["event"] == "setlist.updated")
        .unwrap()["data"];
    assert_eq!(diff["added"].as_array().unwrap().len(), 1, "{diff}");
    assert_eq!(diff["added"][0]["key"], "Autumn Leaves");
    assert_eq!(diff["added"][0]["position"], 1);
    assert_eq!(diff["moved"].as_array().unwrap().len(), 0, "{diff}");
    assert_eq!(diff["removed"].as_array().unwrap().len(), 0, "{diff}");
    let edited = diff["edited"].as_array().unwrap();
    assert_eq!(edited.len(), 1, "{diff}");
    assert_eq!(edited[0]["key"], "So What");
    assert_eq!(edited[0]["changes"]["Key"]["before"], "Dm");
    assert_eq!(edited[0]["changes"]["Key"]["after"], "Eb");

    // WHEN a gig is added to the band calendar, then called off
    let id = control
        .create(
            "/calendar/events",
            json!({"summary": "Jam night", "start": "2026-12-20T20:00:00+01:00",
                   "end": "2026-12-20T23:00:00+01:00", "location": "The Cellar"}),
        )
        .await;
    let batch = alice
        .events_until(|events| {
            seen(events, "calendar.event.created", |d| {
                d["event_id"] == id.as_str()
            })
        })
        .await;
    let gig = &batch
        .iter()
        .find(|e| e["event"] == "calendar.event.created")
        .unwrap()["data"];
    assert_eq!(gig["summary"], "Jam night");
    assert_eq!(gig["location"], "The Cellar");
    let (status, _) = control
        .call(
            reqwest::Method::DELETE,
            &format!("/calendar/events/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);

    // THEN members learn it is cancelled
    alice
        .events_until(|events| {
            seen(events, "calendar.event.cancelled", |d| {
                d["event_id"] == id.as_str()
            })
        })
        .await;
    // AND bad control requests are clear errors
    let bad_time = json!({"summary": "x", "start": "tomorrow", "end": "later"});
    let (status, _) = control
        .call(reqwest::Method::POST, "/calendar/events", Some(bad_time))
        .await;
    assert_eq!(status, 400);
}
