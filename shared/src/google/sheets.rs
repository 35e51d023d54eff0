//! A Google Sheets API v4 client: the one call a setlist source needs.
//!
//! - [`SheetsClient::get_values`]: `GET /v4/spreadsheets/{spreadsheetId}/values/{range}`
//!   with `majorDimension=ROWS` and `valueRenderOption=FORMATTED_VALUE`: the cells of an
//!   A1 range as the sheet shows them, one inner list per row.
//!
//! What Google answers is a `ValueRange`: `range` (the whole requested range, sheet
//! qualified, e.g. `Sheet1!A1:Z1000`, even though the values stop earlier),
//! `majorDimension`, and `values`. Trailing empty cells of a row and trailing empty rows
//! are left out, and an empty range has no `values` at all: [`ValueRange::values`] is
//! then empty. With `FORMATTED_VALUE` every cell is a string; numbers and booleans
//! (which the other render options send) are turned into strings here, so a caller
//! never fails on a cell's JSON type.
//!
//! Every call goes through [`ApiClient`]: a bearer token asked again on each attempt,
//! the band's throttle, retries with backoff honouring `Retry-After` on 429 / 5xx, and
//! failures mapped to [`GoogleError`] (an unknown spreadsheet is `Http { status: 404 }`,
//! no access `Http { status: 403 }`, a range Google cannot parse `Http { status: 400 }`).

use super::GoogleError;
use super::client::{ApiClient, GoogleClient};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the real Sheets API lives.
pub const SHEETS_BASE_URL: &str = "https://sheets.googleapis.com";

/// The cells of a range, row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ValueRange {
    /// The range Google read, in A1 notation with the sheet name (`Setlist!A1:Z1000`).
    pub range: String,
    /// `ROWS` (what this client asks for).
    pub major_dimension: String,
    /// One list per row, trailing empty cells and rows omitted (as Google sends them).
    pub values: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValueRangeBody {
    #[serde(default)]
    range: String,
    #[serde(default)]
    major_dimension: Option<String>,
    /// Absent (or null) for an empty range.
    #[serde(default)]
    values: Option<Vec<Vec<Value>>>,
}

/// A cell as text: strings as they are, numbers in their JSON form, booleans as the
/// sheet shows them (`TRUE` / `FALSE`), null as empty; anything else as its JSON text.
pub fn cell_text(cell: Value) -> String {
    match cell {
        Value::String(s) => s,
        Value::Null => String::new(),
        Value::Bool(true) => "TRUE".to_owned(),
        Value::Bool(false) => "FALSE".to_owned(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// 0-based column → `A`..`Z`, `AA`..
pub fn column_letters(mut index: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A Sheets v4 client. Cheap to clone (the HTTP client and token source are shared).
#[derive(Clone, Debug)]
pub struct SheetsClient {
    api: ApiClient,
}

impl GoogleClient for SheetsClient {
    const API: &'static str = "Sheets";

    fn from_api(api: ApiClient) -> Self {
        Self { api }
    }

    fn api(&self) -> &ApiClient {
        &self.api
    }

    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl SheetsClient {
    /// `spreadsheets.values.get`: the formatted cells of `range` (A1 notation, e.g.
    /// `Setlist`, `Setlist!A1:F`, `A:Z`) of the spreadsheet, row by row.
    pub async fn get_values(
        &self,
        spreadsheet_id: &str,
        range: &str,
    ) -> Result<ValueRange, GoogleError> {
        let query = [
            ("majorDimension", "ROWS"),
            ("valueRenderOption", "FORMATTED_VALUE"),
        ];
        let body: ValueRangeBody = self
            .api
            .get_json(
                &["v4", "spreadsheets", spreadsheet_id, "values", range],
                &query,
            )
            .await?;
        let major_dimension = body.major_dimension.unwrap_or_else(|| "ROWS".to_owned());
        if major_dimension != "ROWS" {
            return Err(GoogleError::Decode(format!(
                "values.get answered majorDimension {major_dimension:?}, ROWS was asked for"
            )));
        }
        Ok(ValueRange {
            range: body.range,
            major_dimension,
            values: body
                .values
                .unwrap_or_default()
                .into_iter()
                .map(|row| row.into_iter().map(cell_text).collect())
                .collect(),
        })
    }
}
