//! A local fake of the Google Sheets API v4 endpoint the Sheets client uses, for tests
//! and (later) for the local stack without a Google account.
//!
//! [`router`] serves, over a [`FakeSheetsState`] (so it can be mounted next to the Drive
//! fake on one server):
//!
//! - `GET /v4/spreadsheets/{spreadsheetId}/values/{range}` → a `ValueRange`
//!   `{"range":"Setlist!A1:Z1000","majorDimension":"ROWS","values":[[…],…]}`.
//!
//! Ranges in A1 notation, of these forms (column letters and row numbers in any case;
//! a sheet name quoted as `'It''s'` when it needs it):
//!
//! - `Sheet1`: the whole sheet;
//! - `Sheet1!A1:D20`, `Sheet1!A1:D` (rows onward), `Sheet1!A:D` (whole columns),
//!   `Sheet1!2:5` (whole rows), `Sheet1!B3` (one cell);
//! - the same without `Sheet1!`: on the first sheet (Google's "first visible sheet");
//!   a range that is exactly a sheet's title is that whole sheet, even when it reads
//!   like a cell (`Set1`).
//!
//! Anything else, or an unknown sheet, is Google's 400 `Unable to parse range: …`. As
//! Google does, the answer's `range` is the requested range qualified with the sheet
//! and clipped to the sheet's grid (at least 1000 rows and 26 columns, like a new
//! sheet; more when the data is larger), and `values` leaves out trailing empty cells
//! of each row and trailing empty rows (an empty range has no `values`). Empty rows
//! inside the range stay, as `[]`.
//!
//! Only `majorDimension=ROWS` (the default) is modelled: `COLUMNS` is a 400 here.
//! `valueRenderOption` may be any of Google's three values; cells are stored as the
//! formatted strings, so all three answer the same text.
//!
//! Errors have the Sheets v4 shape `{"error":{"code","message","status"}}`: 404
//! `NOT_FOUND` for an unknown spreadsheet, 403 `PERMISSION_DENIED` for one the caller
//! may not read ([`FakeSheetsState::deny`]). Bearer check, fault injection and request
//! recording are the Drive fake's ([`crate::server::Fault`], `fail_next`, `requests`).
//!
//! Rows are changed through methods on [`FakeSheetsState`] (which [`FakeSheets`]
//! dereferences to). Row and column indexes there are 0-based grid positions: row 0 is
//! the sheet's row 1 (the header of a setlist). The methods panic on a spreadsheet or
//! sheet the fake does not have: that is a bug in the test using it.

use crate::push::PushHub;
use crate::server::{FakeState, Gate, Params, Running};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bandsync::google::sheets::column_letters;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The grid of a new sheet: rows and columns a range is clipped to (at the least).
const MIN_GRID_ROWS: usize = 1000;
const MIN_GRID_COLUMNS: usize = 26;

#[derive(Debug, Clone)]
struct FakeSheet {
    title: String,
    rows: Vec<Vec<String>>,
}

impl FakeSheet {
    fn grid(&self) -> (usize, usize) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        (
            self.rows.len().max(MIN_GRID_ROWS),
            columns.max(MIN_GRID_COLUMNS),
        )
    }
}

#[derive(Debug, Clone)]
struct FakeSpreadsheet {
    sheets: Vec<FakeSheet>,
    denied: bool,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    spreadsheets: HashMap<String, FakeSpreadsheet>,
    /// The Drive fake's watch channels: a spreadsheet edit is a change of its Drive
    /// file, which `files.watch` channels hear about.
    push: Option<PushHub>,
}

impl Inner {
    fn sheet_mut(&mut self, id: &str, title: &str) -> &mut FakeSheet {
        self.spreadsheets
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake Sheets has no spreadsheet {id:?}"))
            .sheets
            .iter_mut()
            .find(|s| s.title == title)
            .unwrap_or_else(|| panic!("spreadsheet {id:?} has no sheet {title:?}"))
    }

    fn spreadsheet_mut(&mut self, id: &str) -> &mut FakeSpreadsheet {
        self.spreadsheets
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake Sheets has no spreadsheet {id:?}"))
    }
}

fn owned_row(row: &[&str]) -> Vec<String> {
    row.iter().map(|c| (*c).to_owned()).collect()
}

/// The fake's spreadsheets, faults and recorded requests. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct FakeSheetsState(Arc<Mutex<Inner>>);

impl FakeSheetsState {
    /// No spreadsheets yet; requests must carry `Bearer <token>`.
    pub fn new(token: &str) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            gate: Gate::new(token),
            spreadsheets: HashMap::new(),
            push: None,
        })))
    }

    /// Notify edits on `hub` (the Drive fake's), as Drive does for a Sheets file.
    pub fn set_push(&self, hub: PushHub) {
        self.lock().push = Some(hub);
    }

    fn edited(&self, id: &str) {
        let hub = self.lock().push.clone();
        if let Some(hub) = hub {
            hub.notify(&format!("file:{id}"), "update", Some("content"));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A spreadsheet with empty sheets of these titles (the first is the one ranges
    /// without a sheet name read). Replaces one of the same id.
    pub fn create_spreadsheet(&self, id: &str, sheet_titles: &[&str]) {
        assert!(!sheet_titles.is_empty(), "a spreadsheet has a sheet");
        let sheets = sheet_titles
            .iter()
            .map(|t| FakeSheet {
                title: (*t).to_owned(),
                rows: Vec::new(),
            })
            .collect();
        self.lock().spreadsheets.insert(
            id.to_owned(),
            FakeSpreadsheet {
                sheets,
                denied: false,
            },
        );
    }

    /// Delete a spreadsheet: reads of it answer 404.
    pub fn delete_spreadsheet(&self, id: &str) {
        self.lock().spreadsheets.remove(id);
    }

    /// Take the caller's access away: reads answer 403 `PERMISSION_DENIED`.
    pub fn deny(&self, id: &str) {
        self.lock().spreadsheet_mut(id).denied = true;
    }

    /// Give the access back.
    pub fn allow(&self, id: &str) {
        self.lock().spreadsheet_mut(id).denied = false;
    }

    /// Replace a sheet's cells (rows may be ragged; empty strings are empty cells).
    pub fn set_rows(&self, id: &str, sheet: &str, rows: &[&[&str]]) {
        self.lock().sheet_mut(id, sheet).rows = rows.iter().map(|r| owned_row(r)).collect();
        self.edited(id);
    }

    /// The sheet's cells as stored (trailing empties included).
    pub fn rows(&self, id: &str, sheet: &str) -> Vec<Vec<String>> {
        self.lock().sheet_mut(id, sheet).rows.clone()
    }

    /// Insert a row before grid row `at` (0-based; past the end appends, with empty
    /// rows in between), shifting the rows below down.
    pub fn insert_row(&self, id: &str, sheet: &str, at: usize, row: &[&str]) {
        let mut inner = self.lock();
        let rows = &mut inner.sheet_mut(id, sheet).rows;
        if rows.len() < at {
            rows.resize(at, Vec::new());
        }
        rows.insert(at, owned_row(row));
        drop(inner);
        self.edited(id);
    }

    /// Delete grid row `at` (0-based), shifting the rows below up. Panics past the data.
    pub fn delete_row(&self, id: &str, sheet: &str, at: usize) -> Vec<String> {
        let mut inner = self.lock();
        let rows = &mut inner.sheet_mut(id, sheet).rows;
        assert!(at < rows.len(), "sheet {sheet:?} has no row {at}");
        let removed = rows.remove(at);
        drop(inner);
        self.edited(id);
        removed
    }

    /// Move grid row `from` so that it ends up at `to` (both 0-based), as dragging a
    /// row in the Sheets UI does.
    pub fn move_row(&self, id: &str, sheet: &str, from: usize, to: usize) {
        let row = self.delete_row(id, sheet, from);
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        self.insert_row(id, sheet, to, &cells);
    }

    /// Set one cell (0-based row and column), growing the grid as needed.
    pub fn set_cell(&self, id: &str, sheet: &str, row: usize, column: usize, value: &str) {
        let mut inner = self.lock();
        let rows = &mut inner.sheet_mut(id, sheet).rows;
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
        let cells = &mut rows[row];
        if cells.len() <= column {
            cells.resize(column + 1, String::new());
        }
        cells[column] = value.to_owned();
        drop(inner);
        self.edited(id);
    }
}

/// The fake's routes over `state`, without a fallback (so it merges with other fakes'
/// routers; [`FakeSheets::start`] adds a 404 fallback).
pub fn router(state: FakeSheetsState) -> Router {
    Router::new()
        .route("/v4/spreadsheets/{id}/values/{range}", get(values_get))
        .with_state(state)
}

/// A running fake Sheets API. Stops serving when dropped. Dereferences to its
/// [`FakeSheetsState`] for the mutation methods.
pub type FakeSheets = Running<FakeSheetsState>;

impl FakeState for FakeSheetsState {
    const NAME: &'static str = "Sheets";

    fn with_token(token: &str) -> Self {
        Self::new(token)
    }

    fn app(&self) -> Router {
        router(self.clone()).fallback(not_found)
    }

    fn with_gate<R>(&self, f: impl FnOnce(&mut Gate) -> R) -> R {
        f(&mut self.lock().gate)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP side
// ---------------------------------------------------------------------------------------

/// The Sheets v4 error body: `{"error":{"code","message","status"}}` (no `errors[]`).
fn sheets_error(code: u16, message: &str, status: &str) -> Response {
    let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"code": code, "message": message, "status": status}});
    (http, Json(body)).into_response()
}

fn bad_range(range: &str) -> Response {
    sheets_error(
        400,
        &format!("Unable to parse range: {range}"),
        "INVALID_ARGUMENT",
    )
}

fn entity_not_found() -> Response {
    sheets_error(404, "Requested entity was not found.", "NOT_FOUND")
}

async fn not_found() -> Response {
    entity_not_found()
}

/// One end of an A1 range: a column (0-based) and / or a row (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Corner {
    column: Option<usize>,
    row: Option<usize>,
}

/// A parsed A1 range: an optional sheet name and an optional area (none: the whole
/// sheet). `end` is `None` for a single cell.
#[derive(Debug, Clone, PartialEq, Eq)]
struct A1 {
    sheet: Option<String>,
    area: Option<(Corner, Corner)>,
}

/// `A`..`Z`, `AA`.. → 0-based column.
fn column_index(letters: &str) -> Option<usize> {
    letters
        .chars()
        .try_fold(0usize, |acc, c| {
            let digit = (c.to_ascii_uppercase() as usize).checked_sub('A' as usize)? + 1;
            acc.checked_mul(26)?.checked_add(digit)
        })?
        .checked_sub(1)
}

fn parse_corner(text: &str) -> Option<Corner> {
    let split = text
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (letters, digits) = text.split_at(split);
    // Sheets has at most 18,278 columns (ZZZ).
    let column = if letters.len() > 3 {
        return None;
    } else if letters.is_empty() {
        None
    } else {
        Some(column_index(letters)?)
    };
    let row = if digits.is_empty() {
        None
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        Some(digits.parse::<usize>().ok().filter(|r| *r >= 1)?)
    } else {
        return None;
    };
    (column.is_some() || row.is_some()).then_some(Corner { column, row })
}

/// `A1:D20`, `A:D`, `A1:D`, `2:5`, `B3`.
fn parse_area(text: &str) -> Option<(Corner, Corner)> {
    match text.split_once(':') {
        Some((start, end)) => Some((parse_corner(start)?, parse_corner(end)?)),
        None => {
            let cell = parse_corner(text)?;
            (cell.column.is_some() && cell.row.is_some()).then_some((cell, cell))
        }
    }
}

fn parse_a1(range: &str) -> Option<A1> {
    if let Some(quoted) = range.strip_prefix('\'') {
        // 'name' with '' for a quote, then !area or nothing.
        let mut name = String::new();
        let mut chars = quoted.char_indices().peekable();
        let rest = loop {
            let (i, c) = chars.next()?;
            if c != '\'' {
                name.push(c);
            } else if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                name.push('\'');
            } else {
                break &quoted[i + 1..];
            }
        };
        let area = match rest {
            "" => None,
            _ => Some(parse_area(rest.strip_prefix('!')?)?),
        };
        return Some(A1 {
            sheet: Some(name),
            area,
        });
    }
    if let Some((sheet, area)) = range.split_once('!') {
        if sheet.is_empty() {
            return None;
        }
        return Some(A1 {
            sheet: Some(sheet.to_owned()),
            area: Some(parse_area(area)?),
        });
    }
    match parse_area(range) {
        Some(area) => Some(A1 {
            sheet: None,
            area: Some(area),
        }),
        None => (!range.is_empty()).then(|| A1 {
            sheet: Some(range.to_owned()),
            area: None,
        }),
    }
}

/// A sheet name as Google writes it in a range: quoted unless plain.
fn quote_sheet(title: &str) -> String {
    if !title.is_empty() && title.chars().all(|c| c.is_alphanumeric() || c == '_') {
        title.to_owned()
    } else {
        format!("'{}'", title.replace('\'', "''"))
    }
}

/// The area of `sheet` a range covers: 0-based inclusive rows and columns, clipped to
/// the grid.
fn resolve(sheet: &FakeSheet, area: Option<(Corner, Corner)>) -> (usize, usize, usize, usize) {
    let (grid_rows, grid_columns) = sheet.grid();
    let (start, end) = area.unwrap_or((
        Corner {
            column: None,
            row: None,
        },
        Corner {
            column: None,
            row: None,
        },
    ));
    let r0 = start.row.map_or(0, |r| r - 1);
    let c0 = start.column.unwrap_or(0);
    let r1 = end.row.map_or(grid_rows - 1, |r| r - 1);
    let c1 = end.column.unwrap_or(grid_columns - 1);
    let (r0, r1) = (r0.min(r1), r0.max(r1).min(grid_rows - 1));
    let (c0, c1) = (c0.min(c1), c0.max(c1).min(grid_columns - 1));
    (r0, r1, c0, c1)
}

/// The cells of the area, trailing empty cells and rows left out.
fn cut(sheet: &FakeSheet, (r0, r1, c0, c1): (usize, usize, usize, usize)) -> Vec<Vec<String>> {
    let mut values: Vec<Vec<String>> = (r0..=r1)
        .map(|r| {
            let row = sheet.rows.get(r).map(Vec::as_slice).unwrap_or_default();
            let mut cells: Vec<String> = row
                .iter()
                .skip(c0)
                .take(c1.saturating_sub(c0) + 1)
                .cloned()
                .collect();
            while cells.last().is_some_and(String::is_empty) {
                cells.pop();
            }
            cells
        })
        .collect();
    while values.last().is_some_and(Vec::is_empty) {
        values.pop();
    }
    values
}

fn a1_text(title: &str, (r0, r1, c0, c1): (usize, usize, usize, usize)) -> String {
    let start = format!("{}{}", column_letters(c0), r0 + 1);
    if (r0, c0) == (r1, c1) {
        format!("{}!{start}", quote_sheet(title))
    } else {
        let end = format!("{}{}", column_letters(c1), r1 + 1);
        format!("{}!{start}:{end}", quote_sheet(title))
    }
}

async fn values_get(
    State(state): State<FakeSheetsState>,
    Path((id, range)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let mut inner = state.lock();
    let path = format!("/v4/spreadsheets/{id}/values/{range}");
    if let Some(response) = inner.gate.check("GET", &path, &params, &headers) {
        return response;
    }
    if !matches!(
        crate::server::param(&params, "majorDimension"),
        None | Some("ROWS")
    ) {
        return sheets_error(
            400,
            "The fake Sheets API only answers majorDimension=ROWS",
            "INVALID_ARGUMENT",
        );
    }
    if let Some(render) = crate::server::param(&params, "valueRenderOption")
        && !matches!(render, "FORMATTED_VALUE" | "UNFORMATTED_VALUE" | "FORMULA")
    {
        return sheets_error(
            400,
            &format!(
                "Invalid value at 'value_render_option' (type.googleapis.com/google.apps.sheets.v4.ValueRenderOption), \"{render}\""
            ),
            "INVALID_ARGUMENT",
        );
    }
    let Some(spreadsheet) = inner.spreadsheets.get(&id) else {
        return entity_not_found();
    };
    if spreadsheet.denied {
        return sheets_error(
            403,
            "The caller does not have permission",
            "PERMISSION_DENIED",
        );
    }
    // A sheet's title alone is that sheet, even if it reads like a cell (`Set1`).
    let a1 = match spreadsheet.sheets.iter().any(|s| s.title == range) {
        true => Some(A1 {
            sheet: Some(range.clone()),
            area: None,
        }),
        false => parse_a1(&range),
    };
    let Some(a1) = a1 else {
        return bad_range(&range);
    };
    let sheet = match &a1.sheet {
        None => spreadsheet.sheets.first(),
        Some(title) => spreadsheet.sheets.iter().find(|s| &s.title == title),
    };
    let Some(sheet) = sheet else {
        return bad_range(&range);
    };
    let area = resolve(sheet, a1.area);
    let values = cut(sheet, area);
    let mut body = json!({"range": a1_text(&sheet.title, area), "majorDimension": "ROWS"});
    if !values.is_empty() {
        body["values"] = Value::from(values);
    }
    drop(inner);
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Fault;

    const TOKEN: &str = "t0k3n";

    async fn get(fake: &FakeSheets, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", fake.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn setlist(fake: &FakeSheets) {
        fake.create_spreadsheet("s1", &["Set list", "Sheet2"]);
        fake.set_rows(
            "s1",
            "Set list",
            &[
                &["Song", "Key"],
                &["Blue Bossa", "Cm"],
                &["So What", "Dm"],
                &["Autumn Leaves", "Gm"],
            ],
        );
    }

    #[test]
    fn parses_the_documented_a1_forms() {
        let c = |column: Option<usize>, row: Option<usize>| Corner { column, row };
        let a1 = |sheet: Option<&str>, area| A1 {
            sheet: sheet.map(str::to_owned),
            area,
        };
        assert_eq!(parse_a1("Sheet1"), Some(a1(Some("Sheet1"), None)));
        assert_eq!(
            parse_a1("Sheet1!A1:D"),
            Some(a1(
                Some("Sheet1"),
                Some((c(Some(0), Some(1)), c(Some(3), None)))
            ))
        );
        assert_eq!(
            parse_a1("a1:d20"),
            Some(a1(None, Some((c(Some(0), Some(1)), c(Some(3), Some(20))))))
        );
        assert_eq!(
            parse_a1("'It''s 2026'!2:5"),
            Some(a1(
                Some("It's 2026"),
                Some((c(None, Some(2)), c(None, Some(5))))
            ))
        );
        assert_eq!(
            parse_a1("'My set'"),
            Some(a1(Some("My set"), None)),
            "a quoted name alone is the whole sheet"
        );
        assert_eq!(
            parse_a1("AA10"),
            Some(a1(
                None,
                Some((c(Some(26), Some(10)), c(Some(26), Some(10))))
            ))
        );
        for bad in [
            "",
            "Sheet1!",
            "!A1",
            "Sheet1!A1:?",
            "Sheet1!A0",
            "Sheet1!1A",
            "'open",
            "'x'A1",
        ] {
            assert_eq!(parse_a1(bad), None, "{bad:?}");
        }
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
        assert_eq!(column_index("ZZ"), Some(701));
    }

    #[tokio::test]
    async fn answers_value_ranges_clipped_and_trimmed_like_google() {
        // GIVEN a spreadsheet whose first sheet's name needs quoting
        let fake = FakeSheets::start(TOKEN).await.unwrap();
        setlist(&fake);
        // WHEN the first sheet is read without a sheet name, by columns only
        let (status, body) = get(&fake, "/v4/spreadsheets/s1/values/B:C", Some(TOKEN)).await;
        // THEN the range is qualified, quoted and clipped to the grid, values trimmed
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"range": "'Set list'!B1:C1000", "majorDimension": "ROWS",
                   "values": [["Key"], ["Cm"], ["Dm"], ["Gm"]]})
        );
        // AND rows only, a single cell, and an empty area (no values at all)
        let (_, body) = get(
            &fake,
            "/v4/spreadsheets/s1/values/'Set%20list'!3:3",
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["range"], "'Set list'!A3:Z3");
        assert_eq!(body["values"], json!([["So What", "Dm"]]));
        let (_, body) = get(&fake, "/v4/spreadsheets/s1/values/A4", Some(TOKEN)).await;
        assert_eq!(body["range"], "'Set list'!A4");
        assert_eq!(body["values"], json!([["Autumn Leaves"]]));
        let (status, body) = get(&fake, "/v4/spreadsheets/s1/values/Sheet2", Some(TOKEN)).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"range": "Sheet2!A1:Z1000", "majorDimension": "ROWS"})
        );
    }

    #[tokio::test]
    async fn row_mutations_shift_rows_like_the_sheets_ui() {
        let fake = FakeSheets::start(TOKEN).await.unwrap();
        setlist(&fake);
        let songs = || -> Vec<String> {
            fake.rows("s1", "Set list")
                .into_iter()
                .map(|r| r.first().cloned().unwrap_or_default())
                .collect()
        };
        fake.insert_row("s1", "Set list", 2, &["Footprints", "Cm"]);
        assert_eq!(
            songs(),
            [
                "Song",
                "Blue Bossa",
                "Footprints",
                "So What",
                "Autumn Leaves"
            ]
        );
        fake.move_row("s1", "Set list", 4, 1);
        assert_eq!(
            songs(),
            [
                "Song",
                "Autumn Leaves",
                "Blue Bossa",
                "Footprints",
                "So What"
            ]
        );
        assert_eq!(fake.delete_row("s1", "Set list", 3), ["Footprints", "Cm"]);
        fake.set_cell("s1", "Set list", 5, 2, "encore");
        let rows = fake.rows("s1", "Set list");
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[4], Vec::<String>::new());
        assert_eq!(rows[5], ["", "", "encore"]);
        fake.insert_row("s1", "Sheet2", 2, &["x"]);
        assert_eq!(fake.rows("s1", "Sheet2").len(), 3);
    }

    #[tokio::test]
    async fn errors_have_the_sheets_shape() {
        let fake = FakeSheets::start(TOKEN).await.unwrap();
        setlist(&fake);
        fake.create_spreadsheet("private", &["Sheet1"]);
        fake.deny("private");
        let cases = [
            ("/v4/spreadsheets/nope/values/A1:B2", 404, "NOT_FOUND"),
            (
                "/v4/spreadsheets/private/values/Sheet1",
                403,
                "PERMISSION_DENIED",
            ),
            (
                "/v4/spreadsheets/s1/values/Nope!A1:B2",
                400,
                "INVALID_ARGUMENT",
            ),
            ("/v4/spreadsheets/s1/values/Nope", 400, "INVALID_ARGUMENT"),
            (
                "/v4/spreadsheets/s1/values/A1:B2?majorDimension=COLUMNS",
                400,
                "INVALID_ARGUMENT",
            ),
            (
                "/v4/spreadsheets/s1/values/A1:B2?valueRenderOption=PRETTY",
                400,
                "INVALID_ARGUMENT",
            ),
            ("/v4/spreadsheets/s1", 404, "NOT_FOUND"),
        ];
        for (path, code, status) in cases {
            let (got, body) = get(&fake, path, Some(TOKEN)).await;
            assert_eq!(got, code, "{path}");
            assert_eq!(body["error"]["code"], code, "{path}");
            assert_eq!(body["error"]["status"], status, "{path}");
            assert!(body["error"].get("errors").is_none(), "{path}");
        }
        let (_, body) = get(&fake, "/v4/spreadsheets/s1/values/Nope", Some(TOKEN)).await;
        assert_eq!(body["error"]["message"], "Unable to parse range: Nope");
        // AND access given back reads again
        fake.allow("private");
        let (status, _) = get(&fake, "/v4/spreadsheets/private/values/Sheet1", Some(TOKEN)).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn the_gate_checks_the_token_records_and_injects_faults() {
        let fake = FakeSheets::start(TOKEN).await.unwrap();
        setlist(&fake);
        let path = "/v4/spreadsheets/s1/values/A1:B2";
        let (status, body) = get(&fake, path, Some("wrong")).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        fake.fail_next(1, Fault::rate_limited(Some("3")));
        let (status, _) = get(&fake, path, Some(TOKEN)).await;
        assert_eq!(status, 429);
        let (status, _) = get(&fake, path, Some(TOKEN)).await;
        assert_eq!(status, 200);
        let authorized: Vec<bool> = fake.requests().iter().map(|r| r.authorized).collect();
        assert_eq!(authorized, [false, true, true]);
        assert_eq!(fake.requests()[0].path, path);
        fake.clear_requests();
        assert!(fake.requests().is_empty());
    }

    #[tokio::test]
    async fn the_router_mounts_on_another_server() {
        // GIVEN the router merged into an app with other routes
        let state = FakeSheetsState::new(TOKEN);
        state.create_spreadsheet("s1", &["Sheet1"]);
        state.set_rows("s1", "Sheet1", &[&["Song"], &["So What"]]);
        let app = Router::new()
            .route("/other", axum::routing::get(|| async { "other" }))
            .merge(router(state.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // WHEN the values endpoint is called there
        let body: Value = reqwest::Client::new()
            .get(format!("http://{addr}/v4/spreadsheets/s1/values/Sheet1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // THEN it answers from the shared state
        assert_eq!(body["values"], json!([["Song"], ["So What"]]));
        assert_eq!(state.with_gate(|g| g.requests()).len(), 1);
        server.abort();
    }
}
