//! The Drive client against the fake Drive API.

use bandsync::google::GoogleError;
use bandsync::google::auth::AccessTokens;
use bandsync::google::auth::StaticToken;
use bandsync::google::client::GoogleClient;
use bandsync::google::drive::*;
use bandsync::google::retry::Retrier;
use bandsync::google::retry::RetryPolicy;
use bandsync_google_fake::{FakeDrive, Fault};
use bandsync_testkit::RecordingSleeper;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const TOKEN: &str = "ya29.fake-token";

struct Setup {
    fake: FakeDrive,
    client: DriveClient,
    sleeper: Arc<RecordingSleeper>,
}

async fn setup() -> Setup {
    setup_with_token(TOKEN).await
}

async fn setup_with_token(token: &str) -> Setup {
    let fake = FakeDrive::start(TOKEN).await.expect("fake starts");
    let sleeper = Arc::new(RecordingSleeper::default());
    let retrier = Retrier::new(RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(30),
        max_elapsed: Duration::from_secs(120),
    })
    .with_sleeper(sleeper.clone())
    .with_random(|| 0.5);
    let client = DriveClient::new(
        bandsync::google::https_client().unwrap(),
        &fake.base_url(),
        Arc::new(StaticToken::new(token)),
    )
    .unwrap()
    .with_retrier(retrier);
    Setup {
        fake,
        client,
        sleeper,
    }
}

/// Follow changes from `token` to the end; returns every change and the new cursor.
async fn drain(
    client: &DriveClient,
    mut token: String,
    drive_id: Option<&str>,
) -> (Vec<Change>, String, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.list_changes(&token, drive_id).await.unwrap();
        pages += 1;
        all.extend(page.changes);
        match page.end {
            PageEnd::More(next) => token = next,
            PageEnd::Done(cursor) => return (all, cursor, pages),
        }
    }
}

fn query_of(req: &bandsync_google_fake::RecordedRequest) -> HashMap<String, String> {
    req.query.iter().cloned().collect()
}

#[tokio::test]
async fn pages_through_changes_until_new_start_page_token() {
    // GIVEN a cursor taken before 7 files are created, and a fake answering 3 per page
    let s = setup().await;
    s.fake.set_page_size(3);
    let root = s.fake.root_id();
    let start = s.client.get_start_page_token(None).await.unwrap();
    let ids: Vec<String> = (0..7)
        .map(|i| {
            s.fake
                .create_file(&root, &format!("chart-{i}.pdf"), "application/pdf", b"x")
        })
        .collect();
    // WHEN the changes are followed page by page
    let (changes, cursor, pages) = drain(&s.client, start.clone(), None).await;
    // THEN 3 pages (3 + 3 + 1) return the 7 files in order, and the last page's
    // newStartPageToken is the cursor a later getStartPageToken would give
    assert_eq!(pages, 3);
    let seen: Vec<_> = changes.iter().map(|c| c.file_id.clone().unwrap()).collect();
    assert_eq!(seen, ids);
    assert_eq!(cursor, s.client.get_start_page_token(None).await.unwrap());
    assert_ne!(cursor, start);
    // AND nothing more from the new cursor
    let (again, same_cursor, _) = drain(&s.client, cursor.clone(), None).await;
    assert!(again.is_empty());
    assert_eq!(same_cursor, cursor);

    // AND the requests carried exactly Drive's documented parameters
    let requests = s.fake.requests();
    let list = requests
        .iter()
        .find(|r| r.path == "/drive/v3/changes")
        .unwrap();
    let q = query_of(list);
    assert_eq!(q["pageToken"], start);
    assert_eq!(q["includeRemoved"], "true");
    assert_eq!(q["supportsAllDrives"], "true");
    assert_eq!(q["includeItemsFromAllDrives"], "true");
    assert_eq!(q["pageSize"], "1000");
    assert_eq!(q["fields"], CHANGES_FIELDS);
    assert!(!q.contains_key("driveId"));
    assert!(requests.iter().all(|r| r.authorized));
}

#[tokio::test]
async fn created_updated_trashed_and_removed_files_appear_as_drive_reports_them() {
    // GIVEN a folder with two files, and a cursor taken after that
    let s = setup().await;
    let root = s.fake.root_id();
    let charts = s.fake.create_folder(&root, "Charts");
    let keep = s
        .fake
        .create_file(&charts, "blue-bossa.pdf", "application/pdf", b"v1");
    let gone = s
        .fake
        .create_file(&charts, "old.pdf", "application/pdf", b"old");
    let cursor = s.client.get_start_page_token(None).await.unwrap();
    // WHEN a file is created, one updated, one trashed, one deleted for good
    let new = s
        .fake
        .create_file(&charts, "so-what.pdf", "application/pdf", b"hello");
    s.fake.update_content(&keep, b"v2, longer");
    s.fake.trash(&new);
    s.fake.delete(&gone);
    let (changes, _, _) = drain(&s.client, cursor, None).await;
    // THEN each file appears once, at its latest change, in the order of those
    let by_id: Vec<_> = changes.iter().map(|c| c.file_id.clone().unwrap()).collect();
    assert_eq!(by_id, [keep.clone(), new.clone(), gone.clone()]);
    assert!(changes.iter().all(|c| c.change_type == ChangeType::File));

    // the update: new content, checksum, size and a higher version
    let updated = changes[0].file.as_ref().unwrap();
    assert!(!changes[0].removed);
    assert_eq!(updated.name, "blue-bossa.pdf");
    assert_eq!(updated.parents, vec![charts.clone()]);
    assert_eq!(updated.size, Some(10));
    assert_eq!(
        updated.md5_checksum.as_deref(),
        Some("42d29c113070c754a6157853252f27e6") // MD5 of "v2, longer"
    );
    assert!(updated.version.unwrap() > 1);
    assert!(updated.modified_time.is_some());
    // the created-then-trashed file: present, trashed, not removed
    let trashed = changes[1].file.as_ref().unwrap();
    assert!(!changes[1].removed);
    assert!(trashed.trashed);
    assert_eq!(trashed.name, "so-what.pdf");
    // the deleted file: removed, no file
    assert!(changes[2].removed);
    assert!(changes[2].file.is_none());
    // AND change times never go backwards
    assert!(changes.windows(2).all(|w| w[0].time <= w[1].time));
}

#[tokio::test]
async fn moves_renames_and_shared_drives() {
    // GIVEN a file in My Drive and one in a shared drive, and a cursor
    let s = setup().await;
    let root = s.fake.root_id();
    let a = s.fake.create_folder(&root, "A");
    let b = s.fake.create_folder(&root, "B");
    let file = s.fake.create_file(&a, "setlist.txt", "text/plain", b"1");
    let drive = s.fake.create_shared_drive("Band");
    let cursor = s.client.get_start_page_token(Some(&drive)).await.unwrap();
    // WHEN the file is moved to B and renamed, and a file appears in the shared drive
    s.fake.move_to(&file, &b);
    s.fake.rename(&file, "setlist-2026.txt");
    let shared = s
        .fake
        .create_file(&drive, "gig.pdf", "application/pdf", b"p");
    // THEN following all drives shows both, the moved file with its new parent/name
    let (all, _, _) = drain(&s.client, cursor.clone(), None).await;
    let moved = all
        .iter()
        .find(|c| c.file_id.as_deref() == Some(file.as_str()))
        .unwrap();
    let moved = moved.file.as_ref().unwrap();
    assert_eq!(moved.parents, vec![b.clone()]);
    assert_eq!(moved.name, "setlist-2026.txt");
    assert!(all.iter().any(|c| c.file_id.as_deref() == Some(&shared)));
    // AND following the shared drive only shows its file, with driveId on the wire
    let (only, _, _) = drain(&s.client, cursor, Some(&drive)).await;
    let ids: Vec<_> = only.iter().map(|c| c.file_id.clone().unwrap()).collect();
    assert_eq!(ids, [shared]);
    let last = s.fake.requests().pop().unwrap();
    assert_eq!(query_of(&last)["driveId"], drive);
    let token_req = s
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/drive/v3/changes/startPageToken")
        .unwrap();
    assert_eq!(query_of(&token_req)["driveId"], drive);
    assert_eq!(query_of(&token_req)["supportsAllDrives"], "true");
}

#[tokio::test]
async fn list_folder_pages_through_the_untrashed_children() {
    // GIVEN a folder with 5 files (one trashed), a subfolder, and a file elsewhere
    let s = setup().await;
    s.fake.set_page_size(2);
    let root = s.fake.root_id();
    let folder = s.fake.create_folder(&root, "Charts");
    let mut expected: Vec<String> = (0..5)
        .map(|i| {
            s.fake
                .create_file(&folder, &format!("{i}.pdf"), "application/pdf", b"c")
        })
        .collect();
    s.fake.trash(&expected.remove(2));
    let sub = s.fake.create_folder(&folder, "Sub");
    expected.push(sub.clone());
    s.fake
        .create_file(&root, "elsewhere.pdf", "application/pdf", b"e");
    // WHEN the folder is listed page by page
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let page = s
            .client
            .list_folder(&folder, token.as_deref())
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.files);
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    // THEN 3 pages hold the 5 untrashed children, the subfolder marked as a folder
    assert_eq!(pages, 3);
    let ids: Vec<_> = seen.iter().map(|f| f.id.clone()).collect();
    assert_eq!(ids, expected);
    let sub_entry = seen.iter().find(|f| f.id == sub).unwrap();
    assert!(sub_entry.is_folder());
    assert_eq!(sub_entry.size, None);
    assert_eq!(sub_entry.md5_checksum, None);
    assert!(
        seen.iter()
            .all(|f| f.parents == [folder.clone()] && !f.trashed)
    );
    // AND the request used the documented query and fields
    let first = s
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/drive/v3/files")
        .unwrap();
    let q = query_of(&first);
    assert_eq!(q["q"], format!("'{folder}' in parents and trashed=false"));
    assert_eq!(q["fields"], FILES_FIELDS);
    assert_eq!(q["supportsAllDrives"], "true");
    assert!(!q.contains_key("pageToken"));
}

#[tokio::test]
async fn a_storm_of_429s_completes_honouring_retry_after() {
    // GIVEN a fake whose next 4 requests answer 429, with Retry-After 3, 1, an HTTP
    // date 2 s ahead, and none
    let s = setup().await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    s.fake.fail_next(1, Fault::rate_limited(Some("3")));
    s.fake.fail_next(1, Fault::rate_limited(Some("1")));
    s.fake.fail_next(1, Fault::rate_limited(Some(&date)));
    s.fake.fail_next(1, Fault::rate_limited(None));
    // WHEN the start page token is asked for
    let token = s.client.get_start_page_token(None).await;
    // THEN it arrives on the 5th attempt
    assert_eq!(token.unwrap(), s.fake.current_token());
    assert_eq!(s.fake.requests().len(), 5);
    // AND the waits were the server's Retry-After values (the date one within the
    // second it took to get here), then the jittered backoff of retry 4 (0.5 * 800 ms)
    let d = s.sleeper.delays();
    assert_eq!(d.len(), 4);
    assert_eq!(d[0], Duration::from_secs(3));
    assert_eq!(d[1], Duration::from_secs(1));
    assert!(
        d[2] > Duration::from_millis(500) && d[2] <= Duration::from_secs(2),
        "{:?}",
        d[2]
    );
    assert_eq!(d[3], Duration::from_millis(400));
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    // GIVEN a fake whose next 2 requests answer 500 backendError
    let s = setup().await;
    let root = s.fake.root_id();
    s.fake.create_file(&root, "a.pdf", "application/pdf", b"a");
    s.fake.fail_next(2, Fault::ServerError);
    // WHEN the root folder is listed
    let page = s.client.list_folder(&root, None).await.unwrap();
    // THEN the third attempt succeeds after two backoffs (0.5 * 100 ms, 0.5 * 200 ms)
    assert_eq!(page.files.len(), 1);
    assert_eq!(s.fake.requests().len(), 3);
    assert_eq!(
        s.sleeper.delays(),
        [Duration::from_millis(50), Duration::from_millis(100)]
    );
}

#[tokio::test]
async fn exhausted_attempts_return_the_last_http_error() {
    // GIVEN a fake that answers 503 more often than the client tries
    let s = setup().await;
    s.fake.fail_next(10, Fault::Status(503));
    // WHEN changes are listed
    let err = s.client.list_changes("1", None).await.unwrap_err();
    // THEN after 5 attempts the error is the 503 with Google's reason and message
    assert_eq!(s.fake.requests().len(), 5);
    match err {
        GoogleError::Http {
            status,
            reason,
            message,
        } => {
            assert_eq!(status, 503);
            assert_eq!(reason, "backendError");
            assert!(!message.is_empty());
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert_eq!(s.sleeper.delays().len(), 4);
}

#[tokio::test]
async fn gone_is_its_own_error_and_not_retried() {
    // GIVEN a fake answering 410 for a stale token
    let s = setup().await;
    s.fake.fail_next(1, Fault::Gone);
    // WHEN changes are listed
    let err = s.client.list_changes("1", None).await.unwrap_err();
    // THEN the error is Gone, after a single request
    assert!(matches!(err, GoogleError::Gone { .. }), "{err:?}");
    assert_eq!(err.status(), Some(410));
    assert_eq!(s.fake.requests().len(), 1);
    assert!(s.sleeper.delays().is_empty());
}

/// Hands out its tokens in turn, moving on when one is rejected.
#[derive(Default)]
struct Rotating {
    tokens: std::sync::Mutex<std::collections::VecDeque<String>>,
    rejected: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl AccessTokens for Rotating {
    async fn token(&self) -> Result<String, GoogleError> {
        let tokens = self.tokens.lock().unwrap();
        Ok(tokens.front().cloned().unwrap_or_default())
    }
    async fn rejected(&self, token: &str) {
        self.rejected.lock().unwrap().push(token.to_owned());
        let mut tokens = self.tokens.lock().unwrap();
        if tokens.front().is_some_and(|t| t == token) {
            tokens.pop_front();
        }
    }
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once_and_the_call_goes_through() {
    // GIVEN a token source whose current token was revoked, with a fresh one behind
    let fake = FakeDrive::start(TOKEN).await.unwrap();
    let tokens = Arc::new(Rotating::default());
    tokens
        .tokens
        .lock()
        .unwrap()
        .extend(["ya29.revoked".to_owned(), TOKEN.to_owned()]);
    let client = DriveClient::new(
        bandsync::google::https_client().unwrap(),
        &fake.base_url(),
        tokens.clone(),
    )
    .unwrap();
    // WHEN the client calls Drive
    let token = client.get_start_page_token(None).await.unwrap();
    // THEN the 401 made it drop the revoked token and retry at once with the new one
    assert_eq!(token, fake.current_token());
    assert_eq!(*tokens.rejected.lock().unwrap(), ["ya29.revoked"]);
    let authorized: Vec<bool> = fake.requests().iter().map(|r| r.authorized).collect();
    assert_eq!(authorized, [false, true]);
}

#[tokio::test]
async fn a_wrong_token_is_401_after_one_retry_with_a_fresh_token() {
    // GIVEN a client with a token the fake does not accept (and no other to get)
    let s = setup_with_token("ya29.wrong").await;
    // WHEN it asks for the start page token
    let err = s.client.get_start_page_token(None).await.unwrap_err();
    // THEN it gets Google's 401 authError after one more try, not the whole backoff
    assert_eq!(
        err,
        GoogleError::Http {
            status: 401,
            reason: "authError".into(),
            message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.".into(),
        }
    );
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| !r.authorized));
    assert_eq!(s.sleeper.delays().len(), 1);
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_not_a_panic() {
    // GIVEN a fake answering 200 with truncated JSON, then with the wrong shape,
    // then with a page that has no token at all
    let s = setup().await;
    s.fake.fail_next(1, Fault::MalformedJson);
    s.fake.fail_next(
        1,
        Fault::Raw {
            status: 200,
            body: r#"{"changes":"not a list","newStartPageToken":"9"}"#.into(),
        },
    );
    s.fake.fail_next(
        1,
        Fault::Raw {
            status: 200,
            body: r#"{"changes":[]}"#.into(),
        },
    );
    // WHEN changes are listed three times
    // THEN each is a Decode error, from one request each (not retried)
    for _ in 0..3 {
        let err = s.client.list_changes("1", None).await.unwrap_err();
        assert!(matches!(err, GoogleError::Decode(_)), "{err:?}");
    }
    assert_eq!(s.fake.requests().len(), 3);
    // AND an error status with a non-JSON body keeps the status and an excerpt
    s.fake.fail_next(
        1,
        Fault::Raw {
            status: 400,
            body: "<html>Bad Request</html>".into(),
        },
    );
    let err = s.client.list_folder("x", None).await.unwrap_err();
    assert_eq!(
        err,
        GoogleError::Http {
            status: 400,
            reason: "Bad Request".into(),
            message: "<html>Bad Request</html>".into()
        }
    );
}

#[tokio::test]
async fn transport_failures_are_retried_then_reported() {
    // GIVEN a client pointed at a port nobody listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let sleeper = Arc::new(RecordingSleeper::default());
    let client = DriveClient::new(
        bandsync::google::https_client().unwrap(),
        &format!("http://{addr}"),
        Arc::new(StaticToken::new(TOKEN)),
    )
    .unwrap()
    .with_retrier(
        Retrier::new(RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        })
        .with_sleeper(sleeper.clone()),
    );
    // WHEN it calls Drive
    let err = client.get_start_page_token(None).await.unwrap_err();
    // THEN it tried 3 times and reports a transport error
    assert!(matches!(err, GoogleError::Transport(_)), "{err:?}");
    assert_eq!(sleeper.delays().len(), 2);
}

#[test]
fn base_urls_are_checked_and_joined() {
    let http = bandsync::google::https_client().unwrap();
    let tokens: Arc<dyn AccessTokens> = Arc::new(StaticToken::new("t"));
    // GIVEN bad base URLs THEN construction fails with a Config error
    for bad in [
        "not a url",
        "mailto:someone@example.com",
        "ftp://example.com",
    ] {
        let err = DriveClient::new(http.clone(), bad, tokens.clone()).unwrap_err();
        assert!(matches!(err, GoogleError::Config(_)), "{bad}: {err:?}");
    }
    // GIVEN base URLs with and without a path THEN endpoints are appended to them
    let c = DriveClient::new(http.clone(), DRIVE_BASE_URL, tokens.clone()).unwrap();
    assert_eq!(
        c.api().url(&["drive", "v3", "changes"]).as_str(),
        "https://www.googleapis.com/drive/v3/changes"
    );
    let c = DriveClient::new(http, "http://127.0.0.1:9/google/", tokens).unwrap();
    assert_eq!(
        c.api().url(&["drive", "v3", "files"]).as_str(),
        "http://127.0.0.1:9/google/drive/v3/files"
    );
}

#[test]
fn parents_query_escapes_quotes_and_backslashes() {
    assert_eq!(parents_query("abc"), "'abc' in parents and trashed=false");
    assert_eq!(
        parents_query(r"it's\x"),
        r"'it\'s\\x' in parents and trashed=false"
    );
}

#[test]
fn serde_follows_drive_json_names_and_int64_strings() {
    // GIVEN a change as Drive sends it
    let json = r#"{"changeType":"file","removed":false,"fileId":"f1",
        "time":"2026-03-01T12:00:00.000Z",
        "file":{"id":"f1","name":"a.pdf","mimeType":"application/pdf",
                "parents":["p"],"trashed":false,"md5Checksum":"abc",
                "modifiedTime":"2026-03-01T11:59:00.000Z","size":"1234","version":"7"}}"#;
    // WHEN it is decoded
    let change: Change = serde_json::from_str(json).unwrap();
    // THEN every field lands, int64 strings as numbers
    let file = change.file.as_ref().unwrap();
    assert_eq!(file.size, Some(1234));
    assert_eq!(file.version, Some(7));
    assert_eq!(file.mime_type, "application/pdf");
    assert_eq!(file.md5_checksum.as_deref(), Some("abc"));
    // AND it encodes back with the same names and string int64s
    let back = serde_json::to_value(&change).unwrap();
    assert_eq!(back["file"]["size"], "1234");
    assert_eq!(back["file"]["mimeType"], "application/pdf");
    assert_eq!(back["changeType"], "file");
    // AND an unknown changeType, a drive change without fileId, a bad int64 are handled
    let drive: Change =
        serde_json::from_str(r#"{"changeType":"drive","time":"2026-03-01T12:00:00Z"}"#).unwrap();
    assert_eq!(drive.change_type, ChangeType::Drive);
    assert_eq!(drive.file_id, None);
    let other: Change =
        serde_json::from_str(r#"{"changeType":"teamDrive","time":"2026-03-01T12:00:00Z"}"#)
            .unwrap();
    assert_eq!(other.change_type, ChangeType::Other);
    assert!(
        serde_json::from_str::<DriveFile>(r#"{"id":"x","name":"n","mimeType":"m","size":"lots"}"#)
            .is_err()
    );
}
