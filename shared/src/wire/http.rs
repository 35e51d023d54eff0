//! The HTTP API's bodies (`/sync/*`): what each route reads and answers. `POST
//! /sync/trigger` reads the same [`SyncRequestBody`] as the WebSocket's `sync_request`.
//!
//! The API answers through `serde_json::Value`, so the keys of every answer are written
//! in alphabetical order (as they were when it built them with `json!`).

pub use super::frames::SyncRequestBody;
use crate::entities::mutation::Op;
use crate::entities::records::{ConflictRecord, Decision, EntityRecord, FieldDiff, HistoryEntry};
use crate::entities::state::FieldState;
use crate::error::ErrorCode;
use crate::model::{
    BandId, ChannelHead, DeviceId, EntityId, EntityTypeName, Source, SourceId, SourceKind,
    SyncConfiguration, SyncItem, SyncOperation, UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `PUT /sync/bands/{band}`: what to change (the rest is kept, or defaulted for a new band).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BandBody {
    /// Display name (a new band: its id).
    #[serde(default)]
    pub name: Option<String>,
    /// Lower-case file extensions that count (`pdf`, `mp3`, ...); empty: every file.
    #[serde(default)]
    pub file_types: Option<Vec<String>>,
    /// Refuse pushes of entity types the band does not declare (`unknown_entity_type`);
    /// otherwise an undeclared type takes every field as `lww`.
    #[serde(default)]
    pub strict_entities: Option<bool>,
    /// Days of entity history to keep (1 to 3650); null: back to the deployment's
    /// retention. Absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<u32>"))]
    pub history_days: Option<Option<u32>>,
}

/// A field that may be absent (`None`), null (`Some(None)`) or set: what a `PUT` needs
/// to tell "leave it" from "clear it".
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /sync/bands/{band}/sources/{source}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    /// `drive`, `sheet`, `calendar` or `folder` (read as text, so a bad one gets its own
    /// error code, `invalid_kind`).
    #[cfg_attr(feature = "schema", schemars(with = "SourceKind"))]
    pub kind: String,
    /// Drive folder id, spreadsheet id, calendar id or folder path.
    pub location: String,
    /// A Drive source in a shared drive: that drive's id.
    #[serde(default)]
    pub drive_id: Option<String>,
}

/// `GET /sync/health`: 200 when every dependency is up, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    pub checks: BTreeMap<String, CheckState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckState {
    /// `up` or `down` (the detail is in the operator's log).
    pub status: String,
}

/// A band's configuration as the API shows it: whether it has Google credentials,
/// never the credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConfigView {
    pub band: BandId,
    pub name: String,
    pub file_types: Vec<String>,
    pub google_credentials: CredentialsState,
    /// The entity types the band declares (`PUT /sync/bands/{band}/entity-types/{type}`),
    /// besides the built-in ones.
    pub entity_types: Vec<EntityTypeName>,
    pub strict_entities: bool,
    /// Days of entity history kept; absent: the deployment's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CredentialsState {
    pub configured: bool,
}

impl From<&SyncConfiguration> for ConfigView {
    fn from(c: &SyncConfiguration) -> Self {
        Self {
            band: c.band.clone(),
            name: c.name.clone(),
            file_types: c.file_types.clone(),
            google_credentials: CredentialsState {
                configured: c.google_credentials.is_some(),
            },
            entity_types: c.entity_types.iter().map(|t| t.name.clone()).collect(),
            strict_entities: c.strict_entities,
            history_days: c.history_days,
        }
    }
}

/// `GET /sync/status?band=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Status {
    pub band: BandId,
    /// Null: the band is not registered.
    pub config: Option<ConfigView>,
    pub sources: Vec<Source>,
    pub watch_channels: Vec<WatchChannelView>,
    /// The band channel's log (null: no event yet).
    pub channel: Option<ChannelHead>,
    pub last_operation: Option<SyncOperation>,
}

/// A push channel of a source, without its token's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WatchChannelView {
    pub id: String,
    pub source: SourceId,
    pub kind: Option<SourceKind>,
    pub resource_id: String,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired: bool,
    pub last_message: Option<u64>,
    pub last_message_at: Option<DateTime<Utc>>,
}

/// `POST /sync/trigger` (202): one job per source queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TriggerAccepted {
    pub queued: Vec<QueuedJob>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QueuedJob {
    /// The job id, which becomes the operation id.
    pub job: String,
    pub source: SourceId,
    pub full: bool,
}

/// `GET /sync/operations?band=&limit=`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OperationList {
    pub band: BandId,
    pub operations: Vec<SyncOperation>,
}

/// `GET /sync/operations/{id}?after=&limit=`: the operation and a page of its items
/// (n > `after`, at most `limit`: 1..=1000, default 1000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OperationDetail {
    pub operation: SyncOperation,
    pub items: Vec<SyncItem>,
    pub items_total: u64,
    /// More items after this page (`items_total` says how many there are in all).
    pub items_truncated: bool,
    /// The `after` of the next page (the last item's n); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u32>,
}

/// `GET /sync/stats?band=`: over the band's latest operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Stats {
    pub band: BandId,
    pub window: StatsWindow,
    pub operations: OperationCounts,
    pub items: ItemCounts,
    /// Of the completed operations (null: none).
    pub duration_ms: Percentiles,
    pub events: LogPosition,
    /// Members' changes: per entity type, the verdicts committed since the band's first
    /// (durable counters, bumped in each verdict's commit), by type name.
    #[serde(default)]
    pub entities: Vec<VerdictCounts>,
}

/// The verdicts committed on one entity type of a band (`duplicate` and `out_of_order`
/// write nothing, so they are counted in the EMF metrics only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VerdictCounts {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub applied: u64,
    pub merged: u64,
    pub conflict: u64,
    pub rejected: u64,
    /// Per policy (`lww`, `set`, `ask`, ... or a custom resolver's name), how the
    /// fields it decided against a concurrent change came out (`won`, `lost`,
    /// `merged`, `conflict`, `resolved`, `settled`) and how often.
    pub policies: BTreeMap<String, BTreeMap<String, u64>>,
}

/// `POST /sync/bands/{band}/entities/rebuild`: one page of the band's entities, each
/// rebuilt from its history and compared with the state stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RebuildReport {
    pub band: BandId,
    /// Entities compared (this page).
    pub checked: u64,
    /// No entity of the page differs from its rebuild. With `partial` > 0 it is a
    /// partial verdict: the versions the retention pruned were not checked.
    pub matched: bool,
    /// The entities that differ (the first [`crate::entities::rebuild::MAX_MISMATCHES`]).
    pub mismatches: Vec<RebuildMismatch>,
    /// How many differ (listed or not).
    pub mismatched: u64,
    /// Entities whose whole history is kept, replayed from version 1.
    pub full: u64,
    /// Entities whose oldest versions the history retention pruned: replayed from their
    /// oldest kept version, taking the state it recorded as the start.
    pub partial: u64,
    /// What was replayed.
    pub replayed: ReplayedRange,
    /// The band channel's head when the check began (the state is at least that new).
    pub channel: LogPosition,
    /// More entities follow: pass this as `after` for the next page.
    pub next: Option<String>,
}

/// The part of the band's history a rebuild replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReplayedRange {
    /// History entries (versions) folded.
    pub versions: u64,
    /// Commit time of the oldest and newest entry replayed (null: none).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The oldest version a partial entity was replayed from (null: no partial one).
    pub oldest_start_version: Option<u64>,
}

/// An entity whose stored state is not what its history rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RebuildMismatch {
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub stored_version: u64,
    /// The version the rebuild reached (null: it stopped, see `reason`).
    pub replayed_version: Option<u64>,
    /// The first version replayed (1 unless the retention pruned older ones).
    pub replayed_from: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StatsWindow {
    /// How many operations the figures are over.
    pub operations: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OperationCounts {
    pub completed: u64,
    pub failed: u64,
    pub running: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ItemCounts {
    pub synced: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
}

/// The band channel's log position (null: no event yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LogPosition {
    pub seq: Option<u64>,
    pub epoch: Option<String>,
}

/// `GET /sync/entities/{type}/{id}?band=`: an entity as it is now. A deleted one is
/// answered too (`deleted`: true), its history kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EntityView {
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub version: u64,
    pub fields: Map<String, Value>,
    pub deleted: bool,
    /// Per `text` field, its whole Yjs document (base64 of the state as one v1 update):
    /// what a Yjs client starts its own document from (`Y.applyUpdate` into a document
    /// whose text is `getText("text")`), then keeps merging with the events'
    /// `text_updates`. `fields` has the plain text beside it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub text_state: BTreeMap<String, String>,
}

impl From<&EntityRecord> for EntityView {
    fn from(e: &EntityRecord) -> Self {
        Self {
            entity_type: e.entity_type.clone(),
            id: e.id.clone(),
            version: e.version,
            fields: e.state.values(),
            deleted: e.deleted,
            text_state: e
                .state
                .fields
                .iter()
                .filter_map(|(name, f)| match &f.state {
                    FieldState::Text { state, .. } => Some((name.clone(), state.clone())),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// `GET /sync/entities?band=&type=&after=`: a page of a band's entities (deleted ones
/// included) in (type, id) order, and the band channel's position the page is at least
/// as new as. A new device loads every page, then resumes `band:<band>` after `seq` of
/// `epoch`, applying an `entity.*` event only when its `version` is newer than the one
/// it has (events between the head and the page are in the page already).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EntityList {
    pub band: BandId,
    /// The band channel's head read before the page (0 / null: no event yet).
    pub seq: u64,
    pub epoch: Option<String>,
    pub entities: Vec<EntityView>,
    /// The `after` of the next page (`<type>/<id>`); null on the last.
    pub next: Option<String>,
}

/// `GET /sync/entities/{type}/{id}/history?band=&after=`: its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EntityHistory {
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub versions: Vec<EntityVersion>,
    /// The `after` of the next page (a version); null on the last.
    pub next: Option<u64>,
}

/// One version: who made it, when, with which mutation, what changed and how the
/// fields' policies decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EntityVersion {
    pub version: u64,
    /// Server time of the commit.
    pub at: DateTime<Utc>,
    pub member: UserId,
    pub device: DeviceId,
    pub mid: u64,
    pub op: Op,
    /// The client's time of the change (bounded by the server's).
    pub ts: DateTime<Utc>,
    /// The fields as the client sent them.
    pub input: Map<String, Value>,
    pub diff: Vec<FieldDiff>,
    pub decisions: Vec<Decision>,
}

impl From<&HistoryEntry> for EntityVersion {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            version: h.version,
            at: h.at,
            member: h.member.clone(),
            device: h.device.clone(),
            mid: h.mid,
            op: h.op,
            ts: DateTime::from_timestamp_millis(h.stamp.ms).unwrap_or(h.at),
            input: h.input.clone(),
            diff: h.diff.clone(),
            decisions: h.decisions.clone(),
        }
    }
}

/// `GET /sync/presence?band=`: the band's members online now, the same body as the
/// `presence` frame (its `type` included, so one client type reads both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PresenceList {
    /// Always `presence`.
    #[serde(rename = "type")]
    pub kind: PresenceKind,
    pub band: BandId,
    pub members: Vec<crate::wire::frames::PresentMember>,
}

/// The `type` of a [`PresenceList`]: the `presence` frame's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    #[default]
    Presence,
}

/// `GET /sync/conflicts?band=`: a band's conflicts, newest first, and how many there
/// are per entity type and field policy (open, and settled by a member or by the
/// fallback policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConflictList {
    pub band: BandId,
    pub open: u64,
    pub resolved: u64,
    pub counts: Vec<ConflictCount>,
    pub conflicts: Vec<ConflictRecord>,
    /// More conflicts than listed (the newest are).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConflictCount {
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    /// The policy that opened them (`ask`).
    pub policy: crate::entities::types::Policy,
    pub open: u64,
    pub resolved: u64,
    /// Of the resolved: how (`member`, or the fallback policy's name) and how many.
    pub resolved_by: BTreeMap<String, u64>,
}

/// `GET /sync/devices/{device}/parked?band=`: the device's rejected (parked) mutations
/// in the band, newest first, for its own member to see and retry (a retry is a new
/// push under a new mid; the parked one keeps its verdict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ParkedList {
    pub band: BandId,
    pub device: crate::model::DeviceId,
    pub parked: Vec<ParkedMutation>,
    /// Where the next (older) page starts: pass it as `before`. None: this is the last.
    pub next: Option<u64>,
}

/// One parked mutation: its mid, the mutation as it was pushed, and why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ParkedMutation {
    pub mid: u64,
    /// As the device pushed it.
    pub mutation: Value,
    /// The verdict's code (`stale_base`, `not_owner`, `entity_too_large`, ...).
    pub code: Option<ErrorCode>,
    pub message: Option<String>,
    /// When it was refused (server time).
    pub at: DateTime<Utc>,
}

impl ParkedMutation {
    /// The parked part of a receipt (none for a receipt that parked nothing).
    pub fn of(receipt: &crate::entities::records::Receipt) -> Option<Self> {
        Some(Self {
            mid: receipt.mid,
            mutation: receipt.parked.clone()?,
            code: receipt.result.code,
            message: receipt.result.message.clone(),
            at: receipt.at,
        })
    }
}

/// `POST /webhooks/google` (200): what became of an accepted push notification. A
/// refusal is an [`ErrorBody`] (a 5xx only when the job could not be queued, so that
/// Google retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WebhookAnswer {
    /// A sync of the channel's source is queued (`job` is its id).
    Queued { job: String },
    /// Google's `sync` handshake of a new channel: nothing to do.
    SyncAcknowledged,
    /// A message number already seen.
    Duplicate,
    /// A resource state that changes nothing (`state` is Google's).
    Ignored { state: String },
}

/// Every refusal: `{"error": {"code", "message"}}` with the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    /// Stable, for programs (`not_found`, `forbidden`, `malformed_body`, ...).
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_answer_keeps_its_json() {
        // Written through a Value, as the webhook does: keys in alphabetical order.
        let cases = [
            (
                WebhookAnswer::Queued { job: "j1".into() },
                r#"{"job":"j1","status":"queued"}"#,
            ),
            (
                WebhookAnswer::SyncAcknowledged,
                r#"{"status":"sync_acknowledged"}"#,
            ),
            (WebhookAnswer::Duplicate, r#"{"status":"duplicate"}"#),
            (
                WebhookAnswer::Ignored {
                    state: "odd".into(),
                },
                r#"{"state":"odd","status":"ignored"}"#,
            ),
        ];
        for (answer, text) in cases {
            let value = serde_json::to_value(&answer).unwrap();
            assert_eq!(value.to_string(), text);
            assert_eq!(serde_json::from_str::<WebhookAnswer>(text).unwrap(), answer);
        }
    }

    #[test]
    fn a_trigger_body_is_a_sync_request_without_its_action() {
        let body: SyncRequestBody = serde_json::from_str(r#"{"band":"demo"}"#).unwrap();
        assert_eq!(
            body,
            SyncRequestBody {
                band: BandId::parse("demo").unwrap(),
                source: None,
                full: true
            }
        );
        assert!(serde_json::from_str::<SyncRequestBody>(r#"{"band":"demo","x":1}"#).is_err());
    }

    #[test]
    fn an_error_body_is_what_the_api_answers() {
        let e = crate::error::Refusal::new(crate::error::ErrorCode::NotFound, "no operation x");
        let response = crate::transport::http::refused_v2(e);
        let text = match response.body {
            Some(aws_lambda_events::encodings::Body::Text(t)) => t,
            other => panic!("unexpected body {other:?}"),
        };
        let body: ErrorBody = serde_json::from_str(&text).unwrap();
        assert_eq!(body.error.code, ErrorCode::NotFound);
        assert_eq!(serde_json::to_string(&body).unwrap(), text);
    }
}
