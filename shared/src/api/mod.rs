//! The HTTP API (`/sync/*`): status, trigger, operations, health, stats for operators and
//! apps. Bearer JWT on everything but health; every answer is band-scoped to the token.
//!
//! The operator routes (`/sync/bands/...`) need an operator's token (`admin` claim): they
//! register a band's configuration, its sources, and its Google credentials, which are
//! sealed with the deployment's [`CredentialKey`] on the way in and never shown again.

mod entities;
mod operator;
mod status;

use crate::auth::{Member, TokenKey, bearer};
use crate::entities::rebuild;
use crate::entities::types::{BandTypes, EntityType};
use crate::error::{ErrorCode, Refusal};
use crate::google::oauth::GoogleCredentials;
use crate::google::sealed::{self, CredentialKey};
use crate::model::{
    BandId, ChannelName, EntityId, EntityTypeName, OperationStatus, Source, SourceId, SourceKind,
    SyncConfiguration, Trigger,
};
use crate::ports::{
    ChannelLog, ConfigStore, EntityStore, HealthCheck, OperationStore, Queue, SourceStore,
    WatchChannelStore,
};
use crate::transport::http::{body_text, header, json_v2, refused_v2};
use crate::transport::untrusted;
use crate::wire::http::{
    BandBody, CheckState, ConfigView, ConflictList, EntityHistory, EntityList, EntityVersion,
    EntityView, Health, ItemCounts, LogPosition, OperationCounts, OperationDetail, OperationList,
    Percentiles, QueuedJob, SourceBody, Stats, StatsWindow, Status, SyncRequestBody,
    TriggerAccepted, WatchChannelView,
};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes this function serves, as API Gateway route keys (template.yaml declares
/// the same; the local stack routes by them).
pub const ROUTES: &[&str] = &[
    "GET /sync/status",
    "POST /sync/trigger",
    "GET /sync/operations",
    "GET /sync/operations/{id}",
    "GET /sync/health",
    "GET /sync/stats",
    "PUT /sync/bands/{band}",
    "PUT /sync/bands/{band}/credentials",
    "DELETE /sync/bands/{band}/credentials",
    "PUT /sync/bands/{band}/sources/{source}",
    "DELETE /sync/bands/{band}/sources/{source}",
    "PUT /sync/bands/{band}/entity-types/{type}",
    "POST /sync/bands/{band}/entities/rebuild",
    "GET /sync/entities",
    "GET /sync/entities/{type}/{id}",
    "GET /sync/entities/{type}/{id}/history",
    "GET /sync/conflicts",
    "GET /sync/presence",
    "GET /sync/devices/{device}/parked",
    "DELETE /sync/devices/{device}/parked/{mid}",
];

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Items shown with one operation: the largest page, and the default.
const MAX_ITEMS: usize = 1000;
/// Longest band name, source location, shared drive id and file type accepted.
const MAX_NAME: usize = 200;
const MAX_LOCATION: usize = 1024;
const MAX_FILE_TYPE: usize = 16;
/// Largest credentials file accepted (a service-account key file is about 2.3 KB).
const MAX_CREDENTIALS: usize = 64 * 1024;
/// Entities per page of `GET /sync/entities` (default and most).
const ENTITY_PAGE: usize = 100;
const MAX_ENTITY_PAGE: usize = 1000;
/// The most bytes of entities one snapshot page answers (a Lambda's answer is at most
/// 6 MB).
const ENTITY_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// The longest entity history a band may keep (ten years).
const MAX_HISTORY_DAYS: u32 = 3650;
/// Versions per page of an entity's history.
const HISTORY_PAGE: usize = 100;
/// Parked mutations per page of `GET /sync/devices/{device}/parked` (default and most).
const PARKED_PAGE: usize = 50;
const MAX_PARKED_PAGE: usize = 200;
/// The most a page of parked mutations may be, as JSON: each may be a whole push frame
/// (128 KB), and a Lambda answer is at most 6 MB.
const MAX_PARKED_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Conflicts listed by `GET /sync/conflicts` (the counts are over these).
const MAX_CONFLICTS: usize = 1000;
/// Entity types a band may declare, and the largest definition accepted.
const MAX_ENTITY_TYPES: usize = 64;
const MAX_ENTITY_TYPE_BYTES: usize = 64 * 1024;

/// The stores the API reads and writes.
pub struct ApiStores {
    /// Bands' configurations (and sealed credentials).
    pub configs: Arc<dyn ConfigStore>,
    pub sources: Arc<dyn SourceStore>,
    /// Sync operations and their items.
    pub operations: Arc<dyn OperationStore>,
    pub watch_channels: Arc<dyn WatchChannelStore>,
    /// Band channels' heads (seq and epoch).
    pub log: Arc<dyn ChannelLog>,
    /// Members' entities, their history and conflicts.
    pub entities: Arc<dyn EntityStore>,
}

pub struct Api {
    configs: Arc<dyn ConfigStore>,
    sources: Arc<dyn SourceStore>,
    operations: Arc<dyn OperationStore>,
    watch_channels: Arc<dyn WatchChannelStore>,
    log: Arc<dyn ChannelLog>,
    entities: Arc<dyn EntityStore>,
    sync_queue: Arc<dyn Queue>,
    tokens: TokenKey,
    clock: Arc<dyn crate::ports::Clock>,
    /// Named dependencies reported by /sync/health.
    checks: Vec<(String, Arc<dyn HealthCheck>)>,
    /// The engine pushes run under (the built-in policies): a stored type must name
    /// only policies it has, or every push touching the type is refused.
    engine: crate::entities::merge::Engine,
    /// What bands' Google credentials are sealed under; None: they cannot be stored.
    credentials_key: Option<CredentialKey>,
    /// Who is online, for `GET /sync/presence` (None: 503 `not_configured`).
    presence: Option<Arc<dyn crate::ports::PresenceStore>>,
    /// What operators may point sources at (AWS unless said).
    deployment: crate::deployment::Deployment,
}

/// A JSON request body, or a 400 saying what was expected.
fn json_body<T: serde::de::DeserializeOwned>(
    req: &ApiGatewayV2httpRequest,
    expected: &str,
) -> Result<T, Refusal> {
    let body = body_text(req.body.as_deref(), req.is_base64_encoded)?;
    serde_json::from_str(&body).map_err(|e| {
        Refusal::new(
            ErrorCode::MalformedBody,
            format!("expected {expected}: {e}"),
        )
    })
}

/// Text an operator gives (a name, a location): trimmed, not empty, not too long, no
/// control characters.
fn text_field(code: ErrorCode, field: &str, value: &str, max: usize) -> Result<String, Refusal> {
    let value = value.trim();
    let reason = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.chars().count() > max {
        format!("must be at most {max} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(value.to_owned());
    };
    Err(Refusal::new(code, format!("{field} {reason}")))
}

/// A file type as the band's filter compares it: lower case, no leading dot.
fn file_type(raw: &str) -> Result<String, Refusal> {
    let t = raw.trim().trim_start_matches('.').to_ascii_lowercase();
    if t.is_empty() || t.len() > MAX_FILE_TYPE || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Refusal::new(
            ErrorCode::InvalidFileType,
            format!(
                "file type {raw:?} is not an extension (letters and digits, at most {MAX_FILE_TYPE}, e.g. \"pdf\")"
            ),
        ));
    }
    Ok(t)
}

fn source_kind(raw: &str) -> Result<SourceKind, Refusal> {
    serde_json::from_value(json!(raw)).map_err(|_| {
        Refusal::new(
            ErrorCode::InvalidKind,
            format!("unknown source kind {raw:?} (expected drive, sheet, calendar or folder)"),
        )
    })
}

/// An integer query parameter within `min..=max`, if given.
fn number_param(
    req: &ApiGatewayV2httpRequest,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, Refusal> {
    let Some(raw) = req.query_string_parameters.first(name) else {
        return Ok(None);
    };
    raw.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .map(Some)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::InvalidParameter,
                format!("{name} must be an integer in {min}..={max}"),
            )
        })
}

/// `after=<type>/<id>`: where a page of entities starts (the `next` of the last one).
fn entity_cursor(raw: &str) -> Result<(EntityTypeName, EntityId), Refusal> {
    let (ty, id) = raw.split_once('/').ok_or_else(|| {
        Refusal::new(
            ErrorCode::InvalidParameter,
            format!("after must be <type>/<id> (the `next` of a page), not {raw:?}"),
        )
    })?;
    Ok((EntityTypeName::parse(ty)?, EntityId::parse(id)?))
}

/// 204, no body.
fn no_content() -> (u16, Value) {
    (204, Value::Null)
}

/// The route of a request: `METHOD /path` with the stage prefix (if any) dropped.
fn route(req: &ApiGatewayV2httpRequest) -> (Method, Vec<String>) {
    let method = req.request_context.http.method.clone();
    let path = req.raw_path.as_deref().unwrap_or("/");
    let path = path.find("/sync").map_or(path, |i| &path[i..]);
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (method, segments)
}

impl Api {
    pub fn new(
        stores: ApiStores,
        sync_queue: Arc<dyn Queue>,
        tokens: TokenKey,
        clock: Arc<dyn crate::ports::Clock>,
        checks: Vec<(String, Arc<dyn HealthCheck>)>,
    ) -> Self {
        let ApiStores {
            configs,
            sources,
            operations,
            watch_channels,
            log,
            entities,
        } = stores;
        Self {
            configs,
            sources,
            operations,
            watch_channels,
            log,
            entities,
            sync_queue,
            tokens,
            clock,
            checks,
            credentials_key: None,
            engine: crate::entities::merge::Engine::new(),
            presence: None,
            deployment: crate::deployment::Deployment::default(),
        }
    }

    /// Answer `GET /sync/presence` from this store.
    /// Where this API runs: on AWS, folder sources and plain-http `token_uri`s are refused.
    pub fn with_deployment(mut self, deployment: crate::deployment::Deployment) -> Self {
        self.deployment = deployment;
        self
    }

    pub fn with_presence(mut self, presence: Arc<dyn crate::ports::PresenceStore>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Let operators store bands' Google credentials, sealed under `key` (None: refused
    /// with 503 `not_configured`).
    pub fn with_credentials_key(mut self, key: Option<CredentialKey>) -> Self {
        self.credentials_key = key;
        self
    }

    #[tracing::instrument(skip_all, fields(method = %req.request_context.http.method, path = %untrusted(req.raw_path.as_deref().unwrap_or_default())))]
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.dispatch(&req).await {
            Ok((204, _)) => {
                let mut r = ApiGatewayV2httpResponse::default();
                r.status_code = 204;
                r
            }
            Ok((status, body)) => json_v2(status, &body),
            Err(e) => refused_v2(e),
        }
    }

    async fn dispatch(&self, req: &ApiGatewayV2httpRequest) -> Result<(u16, Value), Refusal> {
        let (method, segments) = route(req);
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        if segs == ["sync", "health"] && method == Method::GET {
            return Ok(self.health().await);
        }
        let known = matches!(
            segs.as_slice(),
            ["sync", "status" | "trigger" | "operations" | "stats"]
                | ["sync", "operations", _]
                | ["sync", "bands", _]
                | ["sync", "bands", _, "credentials"]
                | ["sync", "bands", _, "sources", _]
                | ["sync", "bands", _, "entity-types", _]
                | ["sync", "bands", _, "entities", "rebuild"]
                | ["sync", "entities" | "conflicts" | "presence"]
                | ["sync", "entities", _, _]
                | ["sync", "entities", _, _, "history"]
                | ["sync", "devices", _, "parked"]
                | ["sync", "devices", _, "parked", _]
        );
        if !known {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no route {method} /{}", segs.join("/")),
            ));
        }
        let member = self.tokens.verify(
            bearer(header(&req.headers, "authorization"))?,
            self.clock.now(),
        )?;
        match (method.clone(), segs.as_slice()) {
            (Method::GET, ["sync", "status"]) => self.status(&member, req).await,
            (Method::POST, ["sync", "trigger"]) => self.trigger(&member, req).await,
            (Method::GET, ["sync", "operations"]) => self.operations(&member, req).await,
            (Method::GET, ["sync", "operations", id]) => self.operation(&member, id, req).await,
            (Method::GET, ["sync", "stats"]) => self.stats(&member, req).await,
            (Method::PUT, ["sync", "bands", band]) => {
                self.put_band(Self::operator(&member, band)?, req).await
            }
            (Method::PUT, ["sync", "bands", band, "credentials"]) => {
                self.put_credentials(Self::operator(&member, band)?, req)
                    .await
            }
            (Method::DELETE, ["sync", "bands", band, "credentials"]) => {
                self.delete_credentials(Self::operator(&member, band)?)
                    .await
            }
            (Method::PUT, ["sync", "bands", band, "sources", source]) => {
                let band = Self::operator(&member, band)?;
                self.put_source(band, SourceId::parse(source)?, req).await
            }
            (Method::DELETE, ["sync", "bands", band, "sources", source]) => {
                let band = Self::operator(&member, band)?;
                self.delete_source(band, SourceId::parse(source)?).await
            }
            (Method::PUT, ["sync", "bands", band, "entity-types", ty]) => {
                let band = Self::operator(&member, band)?;
                self.put_entity_type(band, EntityTypeName::parse(ty)?, req)
                    .await
            }
            (Method::POST, ["sync", "bands", band, "entities", "rebuild"]) => {
                self.rebuild(Self::operator(&member, band)?, req).await
            }
            (Method::GET, ["sync", "entities"]) => self.entities(&member, req).await,
            (Method::GET, ["sync", "entities", ty, id]) => {
                let (ty, id) = (EntityTypeName::parse(ty)?, EntityId::parse(id)?);
                self.entity(Self::band(&member, req)?, ty, id).await
            }
            (Method::GET, ["sync", "entities", ty, id, "history"]) => {
                let (ty, id) = (EntityTypeName::parse(ty)?, EntityId::parse(id)?);
                self.history(Self::band(&member, req)?, ty, id, req).await
            }
            (Method::GET, ["sync", "conflicts"]) => self.conflicts(&member, req).await,
            (Method::GET, ["sync", "presence"]) => self.presence(&member, req).await,
            (Method::GET, ["sync", "devices", device, "parked"]) => {
                self.parked(&member, device, req).await
            }
            (Method::DELETE, ["sync", "devices", device, "parked", mid]) => {
                self.dismiss_parked(&member, device, mid, req).await
            }
            _ => Err(Refusal::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed here"),
            )),
        }
    }

    /// The `band` query parameter, which the token must grant.
    fn band(member: &Member, req: &ApiGatewayV2httpRequest) -> Result<BandId, Refusal> {
        let raw = req.query_string_parameters.first("band").ok_or_else(|| {
            Refusal::new(
                ErrorCode::MissingParameter,
                "query parameter `band` is required",
            )
        })?;
        let band = BandId::parse(raw)?;
        Self::allowed(member, &band)?;
        Ok(band)
    }

    /// The band an operator route is about: the token must be an operator's (403 before
    /// anything about the request is looked at), then the id must parse (400).
    fn operator(member: &Member, band: &str) -> Result<BandId, Refusal> {
        if !member.admin {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this route needs an operator's token (the `admin` claim)",
            ));
        }
        Ok(BandId::parse(band)?)
    }

    /// The band's configuration, which the route needs to exist.
    async fn registered(&self, band: &BandId) -> Result<SyncConfiguration, Refusal> {
        self.configs
            .get_config(band)
            .await?
            .ok_or_else(|| operator::not_registered(band))
    }

    fn allowed(member: &Member, band: &BandId) -> Result<(), Refusal> {
        if member.is_member_of(band) {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("you are not a member of band {band}"),
            ))
        }
    }
}
