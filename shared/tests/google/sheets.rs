//! The Sheets client against the fake Sheets API.

use bandsync::google::GoogleError;
use bandsync::google::auth::StaticToken;
use bandsync::google::client::GoogleClient;
use bandsync::google::retry::Retrier;
use bandsync::google::retry::RetryPolicy;
use bandsync::google::sheets::*;
use bandsync_google_fake::Fault;
use bandsync_google_fake::sheets::FakeSheets;
use bandsync_testkit::RecordingSleeper;
use std::sync::Arc;
use std::{collections::HashMap, time::Duration};

const TOKEN: &str = "ya29.sheets-token";
const ID: &str = "1SheetFakeSetlist";

struct Setup {
    fake: FakeSheets,
    client: SheetsClient,
    sleeper: Arc<RecordingSleeper>,
}

/// A client of a fresh fake that retries 4 times, sleeping only on paper, with
/// the default delays (500 ms base) at half jitter.
async fn setup() -> Setup {
    let fake = FakeSheets::start(TOKEN).await.expect("fake starts");
    let sleeper = Arc::new(RecordingSleeper::default());
    let policy = RetryPolicy {
        max_attempts: 4,
        ..RetryPolicy::default()
    };
    let tokens = Arc::new(StaticToken::new(TOKEN));
    let http = bandsync::google::https_client().unwrap();
    let client = SheetsClient::new(http, &fake.base_url(), tokens)
        .unwrap()
        .with_retrier(
            Retrier::new(policy)
                .with_sleeper(sleeper.clone())
                .with_random(|| 0.5),
        );
    Setup {
        fake,
        client,
        sleeper,
    }
}

impl Setup {
    /// Spreadsheet [`ID`] with these sheets, the first holding `rows`.
    fn spreadsheet(&self, sheets: &[&str], rows: &[&[&str]]) {
        self.fake.create_spreadsheet(ID, sheets);
        self.fake.set_rows(ID, sheets[0], rows);
    }
}

fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect()
}

#[tokio::test]
async fn reads_ranges_of_the_forms_the_setlist_uses() {
    // GIVEN a spreadsheet with a setlist on its first sheet and notes on another
    let s = setup().await;
    s.spreadsheet(
        &["Setlist", "Notes"],
        &[
            &["Song", "Key", "BPM", "Notes"],
            &["Blue Bossa", "Cm", "140", "count in"],
            &["So What", "Dm", "136"],
            &["Autumn Leaves", "Gm", "120", "ballad intro"],
        ],
    );
    s.fake.set_rows(ID, "Notes", &[&["bring spare strings"]]);

    // WHEN a whole sheet, a sheet-qualified range and an unqualified one are read
    let whole = s.client.get_values(ID, "Setlist").await.unwrap();
    let open_ended = s.client.get_values(ID, "Setlist!A2:C").await.unwrap();
    let first_sheet = s.client.get_values(ID, "B1:C3").await.unwrap();
    let other = s.client.get_values(ID, "Notes").await.unwrap();

    // THEN each answers Google's ValueRange, ragged where the sheet is
    assert_eq!(whole.range, "Setlist!A1:Z1000");
    assert_eq!(whole.major_dimension, "ROWS");
    assert_eq!(whole.values.len(), 4);
    assert_eq!(whole.values[2], ["So What", "Dm", "136"]);
    assert_eq!(open_ended.range, "Setlist!A2:C1000");
    assert_eq!(
        open_ended.values,
        rows(&[
            &["Blue Bossa", "Cm", "140"],
            &["So What", "Dm", "136"],
            &["Autumn Leaves", "Gm", "120"],
        ])
    );
    assert_eq!(first_sheet.range, "Setlist!B1:C3");
    assert_eq!(
        first_sheet.values,
        rows(&[&["Key", "BPM"], &["Cm", "140"], &["Dm", "136"]])
    );
    assert_eq!(other.values, rows(&[&["bring spare strings"]]));

    // AND the requests carried the documented parameters and the range in the path
    let requests = s.fake.requests();
    assert!(requests.iter().all(|r| r.authorized));
    assert_eq!(
        requests[1].path,
        format!("/v4/spreadsheets/{ID}/values/Setlist!A2:C")
    );
    let q: HashMap<_, _> = requests[0].query.iter().cloned().collect();
    assert_eq!(q["majorDimension"], "ROWS");
    assert_eq!(q["valueRenderOption"], "FORMATTED_VALUE");
}

#[tokio::test]
async fn trailing_empty_cells_and_rows_are_omitted_and_an_empty_sheet_has_no_values() {
    // GIVEN a sheet whose rows end in empty cells, with an empty row inside and empty
    // rows at the end, and an empty second sheet
    let s = setup().await;
    s.spreadsheet(
        &["Setlist", "Empty"],
        &[
            &["Song", "Key", "", ""],
            &["", "", ""],
            &["So What", "", "136", ""],
            &["", ""],
            &[""],
        ],
    );
    // WHEN they are read
    let got = s.client.get_values(ID, "Setlist").await.unwrap();
    let empty = s.client.get_values(ID, "Empty!A1:D20").await.unwrap();
    // THEN trailing empties are gone, the inner empty row stays (as an empty list)
    assert_eq!(
        got.values,
        rows(&[&["Song", "Key"], &[], &["So What", "", "136"]])
    );
    // AND the empty range decodes to no rows, keeping its range
    assert_eq!(empty.values, Vec::<Vec<String>>::new());
    assert_eq!(empty.range, "Empty!A1:D20");
}

#[tokio::test]
async fn unknown_spreadsheets_bad_ranges_and_denied_access_are_not_retried() {
    // GIVEN one spreadsheet the caller may not read
    let s = setup().await;
    s.fake.create_spreadsheet(ID, &["Setlist"]);
    s.fake.create_spreadsheet("1Private", &["Sheet1"]);
    s.fake.deny("1Private");
    // WHEN an unknown spreadsheet, an unparsable range, an unknown sheet and the
    // private spreadsheet are read
    let cases = [
        ("1Nope", "Setlist", 404, "NOT_FOUND"),
        (ID, "Setlist!A1:?", 400, "INVALID_ARGUMENT"),
        (ID, "Other!A1:B2", 400, "INVALID_ARGUMENT"),
        ("1Private", "Sheet1", 403, "PERMISSION_DENIED"),
    ];
    for (id, range, status, reason) in cases {
        let err = s.client.get_values(id, range).await.unwrap_err();
        // THEN each is Google's error with its status, from a single request
        match &err {
            GoogleError::Http {
                status: got,
                reason: got_reason,
                ..
            } => assert_eq!((*got, got_reason.as_str()), (status, reason), "{range}"),
            other => panic!("expected Http for {id} {range}, got {other:?}"),
        }
    }
    assert_eq!(s.fake.requests().len(), 4);
    assert!(s.sleeper.delays().is_empty());
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after_without_sleeping() {
    // GIVEN a fake whose next two requests answer 429 (Retry-After 7, then none)
    let s = setup().await;
    s.spreadsheet(&["Setlist"], &[&["Song"], &["Blue Bossa"]]);
    s.fake.fail_next(1, Fault::rate_limited(Some("7")));
    s.fake.fail_next(1, Fault::rate_limited(None));
    // WHEN the values are read
    let got = s.client.get_values(ID, "Setlist").await.unwrap();
    // THEN the third attempt returns them, after the server's 7 s and a backoff of
    // 0.5 * 1 s (second retry), asked of the recording sleeper (no real sleep)
    assert_eq!(got.values, rows(&[&["Song"], &["Blue Bossa"]]));
    assert_eq!(s.fake.requests().len(), 3);
    assert_eq!(
        s.sleeper.delays(),
        [Duration::from_secs(7), Duration::from_millis(500)]
    );
}

#[tokio::test]
async fn non_string_cells_become_text_and_a_wrong_shape_is_a_decode_error() {
    // GIVEN answers as other render options would give them, then a wrong shape
    let s = setup().await;
    s.fake.fail_next(
        1,
        Fault::Raw {
            status: 200,
            body: r#"{"range":"Sheet1!A1:D2","majorDimension":"ROWS",
                     "values":[["Song","BPM","Encore","Extra"],["So What",136,true,null],[2.5,false]]}"#
                .into(),
        },
    );
    s.fake.fail_next(
        1,
        Fault::Raw {
            status: 200,
            body: r#"{"range":"Sheet1!A1:D2","values":"nope"}"#.into(),
        },
    );
    s.fake.fail_next(
        1,
        Fault::Raw {
            status: 200,
            body: r#"{"range":"Sheet1!A1:D2","majorDimension":"COLUMNS","values":[]}"#.into(),
        },
    );
    // WHEN they are read
    let got = s.client.get_values(ID, "Sheet1").await.unwrap();
    // THEN numbers, booleans and nulls are text
    assert_eq!(
        got.values,
        rows(&[
            &["Song", "BPM", "Encore", "Extra"],
            &["So What", "136", "TRUE", ""],
            &["2.5", "FALSE"],
        ])
    );
    // AND a body that is not a ValueRange, or not by rows, is a Decode error
    for _ in 0..2 {
        let err = s.client.get_values(ID, "Sheet1").await.unwrap_err();
        assert!(matches!(err, GoogleError::Decode(_)), "{err:?}");
    }
}

#[test]
fn the_range_is_one_path_segment() {
    let c = SheetsClient::new(
        bandsync::google::https_client().unwrap(),
        SHEETS_BASE_URL,
        Arc::new(StaticToken::new("t")),
    )
    .unwrap();
    assert_eq!(
        c.api()
            .url(&["v4", "spreadsheets", "abc", "values", "'My Set/2'!A1:D"])
            .as_str(),
        "https://sheets.googleapis.com/v4/spreadsheets/abc/values/'My%20Set%2F2'!A1:D"
    );
}
