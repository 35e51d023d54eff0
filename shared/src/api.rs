//! The HTTP API (`/sync/*`): status, trigger, operations, health, stats for operators and
//! apps. Bearer JWT on everything but health; every answer is band-scoped to the token.
//!
//! The operator routes (`/sync/bands/...`) need an operator's token (`admin` claim): they
//! register a band's configuration, its sources, and its Google credentials, which are
//! sealed with the deployment's [`CredentialKey`] on the way in and never shown again.

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
/// Items shown with one operation.
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
        }
    }

    /// Answer `GET /sync/presence` from this store.
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

    #[tracing::instrument(skip_all, fields(method = %req.request_context.http.method, path = ?req.raw_path))]
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
            (Method::GET, ["sync", "operations", id]) => self.operation(&member, id).await,
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
        self.configs.get_config(band).await?.ok_or_else(|| {
            Refusal::new(
                ErrorCode::NotFound,
                format!("band {band} is not registered (PUT /sync/bands/{band} first)"),
            )
        })
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

    async fn health(&self) -> (u16, Value) {
        let mut checks = std::collections::BTreeMap::new();
        let mut all_up = true;
        for (name, check) in &self.checks {
            let state = match check.check().await {
                Ok(()) => "up",
                Err(e) => {
                    // The detail is for the operator's log, not for an unauthenticated caller.
                    tracing::error!(dependency = %name, error = ?e, "health check failed");
                    all_up = false;
                    "down"
                }
            };
            checks.insert(
                name.clone(),
                CheckState {
                    status: state.into(),
                },
            );
        }
        let status = if all_up { "ok" } else { "degraded" };
        (
            if all_up { 200 } else { 503 },
            json!(Health {
                status: status.into(),
                checks
            }),
        )
    }

    async fn status(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let config = self.configs.get_config(&band).await?;
        let sources = self.sources.list_sources(&band).await?;
        let channels = self.watch_channels.list_watch_channels(&band).await?;
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let last = self
            .operations
            .list_operations(&band, 1)
            .await?
            .into_iter()
            .next();
        let watch_channels = channels
            .into_iter()
            .map(|c| WatchChannelView {
                expired: c.expires_at.is_some_and(|at| at <= self.clock.now()),
                id: c.id,
                source: c.source,
                kind: c.kind,
                resource_id: c.resource_id,
                created_at: c.created_at,
                expires_at: c.expires_at,
                last_message: c.last_message,
                last_message_at: c.last_message_at,
            })
            .collect();
        let status = Status {
            band,
            config: config.as_ref().map(ConfigView::from),
            sources,
            watch_channels,
            channel: head,
            last_operation: last,
        };
        Ok((200, json!(status)))
    }

    async fn trigger(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let body: SyncRequestBody = json_body(req, "{band, source?, full?}")?;
        Self::allowed(member, &body.band)?;
        let jobs = crate::sync::request_sync(
            self.sources.as_ref(),
            self.sync_queue.as_ref(),
            crate::sync::SyncRequest {
                band: &body.band,
                source: body.source.as_ref(),
                full: body.full,
                trigger: Trigger::Manual,
                requested_by: &member.user,
            },
            self.clock.now(),
        )
        .await?;
        let queued = jobs
            .into_iter()
            .map(|j| QueuedJob {
                job: j.id,
                source: j.source,
                full: j.full,
            })
            .collect();
        Ok((202, json!(TriggerAccepted { queued })))
    }

    async fn operations(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let limit = match req.query_string_parameters.first("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::InvalidParameter,
                        format!("limit must be 1..={MAX_LIMIT}"),
                    )
                })?,
        };
        let ops = self.operations.list_operations(&band, limit).await?;
        Ok((
            200,
            json!(OperationList {
                band,
                operations: ops
            }),
        ))
    }

    async fn operation(&self, member: &Member, id: &str) -> Result<(u16, Value), Refusal> {
        let not_found = || Refusal::new(ErrorCode::NotFound, format!("no operation {id}"));
        // Another band's operation is "not found", not "forbidden": ids are not disclosed.
        let op = self
            .operations
            .get_operation(id)
            .await?
            .filter(|op| member.is_member_of(&op.band))
            .ok_or_else(not_found)?;
        // A large sync has many items: answer with the first ones (a Lambda response is at
        // most 6 MB) and say how many there are.
        let mut items = self.operations.list_items(&op.id).await?;
        let total = items.len();
        items.truncate(MAX_ITEMS);
        let detail = OperationDetail {
            operation: op,
            items,
            items_total: total as u64,
            items_truncated: total > MAX_ITEMS,
        };
        Ok((200, json!(detail)))
    }

    /// Create or update a band's configuration; its credentials are kept.
    async fn put_band(
        &self,
        band: BandId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let empty = req.body.as_deref().is_none_or(|b| b.trim().is_empty());
        let body: BandBody = if empty {
            BandBody::default()
        } else {
            json_body(
                req,
                "{name?: string, file_types?: [string], strict_entities?: bool, history_days?: int|null}",
            )?
        };
        let name = body
            .name
            .map(|n| text_field(ErrorCode::InvalidName, "name", &n, MAX_NAME))
            .transpose()?;
        let file_types = body
            .file_types
            .map(|ts| {
                ts.iter()
                    .map(|t| file_type(t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if let Some(Some(days)) = body.history_days
            && !(1..=MAX_HISTORY_DAYS).contains(&days)
        {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!(
                    "history_days must be 1 to {MAX_HISTORY_DAYS} (null: the deployment's retention), not {days}"
                ),
            ));
        }
        let existing = self.configs.get_config(&band).await?;
        let created = existing.is_none();
        let mut config = existing.unwrap_or_else(|| SyncConfiguration {
            band: band.clone(),
            name: band.to_string(),
            file_types: vec![],
            google_credentials: None,
            entity_types: vec![],
            strict_entities: false,
            history_days: None,
        });
        if let Some(strict) = body.strict_entities {
            config.strict_entities = strict;
        }
        if let Some(days) = body.history_days {
            config.history_days = days;
        }
        if let Some(name) = name {
            config.name = name;
        }
        if let Some(mut types) = file_types {
            types.sort();
            types.dedup();
            config.file_types = types;
        }
        self.configs.put_config(&config).await?;
        tracing::info!(%band, created, "band configuration stored");
        Ok((200, json!(ConfigView::from(&config))))
    }

    /// Validate a band's Google credentials file, seal it under the deployment's key and
    /// store it in the band's configuration. The file is never logged nor echoed.
    async fn put_credentials(
        &self,
        band: BandId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let key = self.credentials_key.as_ref().ok_or_else(|| {
            Refusal::new(ErrorCode::NotConfigured,
                "this deployment has no credentials key (CredentialsKey / BANDSYNC_CREDENTIALS_KEY): Google credentials cannot be stored",
            )
        })?;
        let file = body_text(req.body.as_deref(), req.is_base64_encoded)?;
        if file.len() > MAX_CREDENTIALS {
            return Err(Refusal::new(
                ErrorCode::InvalidCredentials,
                format!("a credentials file is at most {MAX_CREDENTIALS} bytes"),
            ));
        }
        // Its errors name the field at fault, never a secret.
        let credentials = GoogleCredentials::from_json(file.as_bytes())
            .map_err(|e| Refusal::new(ErrorCode::InvalidCredentials, e.to_string()))?;
        let mut config = self.registered(&band).await?;
        let sealed = sealed::seal(key, file.as_bytes(), &sealed::credentials_context(&band))
            .map_err(|e| {
                tracing::error!(%band, error = %e, "sealing Google credentials failed");
                Refusal::new(
                    ErrorCode::Unavailable,
                    "could not seal the credentials; try again",
                )
            })?;
        config.google_credentials = Some(sealed);
        self.configs.put_config(&config).await?;
        tracing::info!(%band, grant = credentials.grant_kind(), "Google credentials stored");
        Ok(no_content())
    }

    async fn delete_credentials(&self, band: BandId) -> Result<(u16, Value), Refusal> {
        let mut config = self.registered(&band).await?;
        if config.google_credentials.take().is_some() {
            self.configs.put_config(&config).await?;
            tracing::info!(%band, "Google credentials removed");
        }
        Ok(no_content())
    }

    /// Put a source of a registered band. Re-putting the same kind and place (and shared
    /// drive) keeps where its sync was; moving it resets the cursor (the next sync is a
    /// full one, compared with the catalog).
    async fn put_source(
        &self,
        band: BandId,
        id: SourceId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let body: SourceBody = json_body(
            req,
            "{kind: \"drive\"|\"sheet\"|\"calendar\"|\"folder\", location: string, drive_id?: string}",
        )?;
        let kind = source_kind(&body.kind)?;
        let location = text_field(
            ErrorCode::InvalidLocation,
            "location",
            &body.location,
            MAX_LOCATION,
        )?;
        let drive_id = body
            .drive_id
            .map(|d| text_field(ErrorCode::InvalidParameter, "drive_id", &d, MAX_NAME))
            .transpose()?;
        if drive_id.is_some() && kind != SourceKind::Drive {
            return Err(Refusal::new(
                ErrorCode::InvalidParameter,
                "drive_id applies to drive sources only",
            ));
        }
        self.registered(&band).await?;
        let source = match self.sources.get_source(&band, &id).await? {
            Some(mut old) => {
                if (old.kind, &old.location, &old.drive_id) != (kind, &location, &drive_id) {
                    old.cursor = None;
                }
                Source {
                    kind,
                    location,
                    drive_id,
                    ..old
                }
            }
            None => Source {
                drive_id,
                ..Source::new(band.clone(), id, kind, location)
            },
        };
        self.sources.put_source(&source).await?;
        tracing::info!(%band, source = %source.id, kind = ?source.kind, "source stored");
        Ok((200, json!(source)))
    }

    async fn delete_source(&self, band: BandId, id: SourceId) -> Result<(u16, Value), Refusal> {
        if self.sources.get_source(&band, &id).await?.is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("band {band} has no source {id}"),
            ));
        }
        self.sources.delete_source(&band, &id).await?;
        tracing::info!(%band, source = %id, "source deleted");
        Ok(no_content())
    }

    /// Declare (or redefine) one of a band's entity types. A redefinition applies to the
    /// mutations decided after it; stored entities keep their fields.
    async fn put_entity_type(
        &self,
        band: BandId,
        name: EntityTypeName,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let text = body_text(req.body.as_deref(), req.is_base64_encoded)?;
        if text.len() > MAX_ENTITY_TYPE_BYTES {
            return Err(Refusal::new(
                ErrorCode::MalformedBody,
                format!("an entity type is at most {MAX_ENTITY_TYPE_BYTES} bytes"),
            ));
        }
        // The path names the type: the body may leave `name` out.
        let mut raw: Value = serde_json::from_str(&text).map_err(|e| {
            Refusal::new(
                ErrorCode::MalformedBody,
                format!("expected an entity type: {e}"),
            )
        })?;
        match raw.as_object_mut() {
            Some(obj) => match obj.get("name") {
                None => {
                    obj.insert("name".into(), json!(name));
                }
                Some(n) if n != &json!(name) => {
                    return Err(Refusal::new(
                        ErrorCode::InvalidParameter,
                        format!("the body names type {n}, the path {name}"),
                    ));
                }
                Some(_) => {}
            },
            None => {
                return Err(Refusal::new(
                    ErrorCode::MalformedBody,
                    "expected an entity type: a JSON object",
                ));
            }
        }
        let ty: EntityType = serde_json::from_value(raw).map_err(|e| {
            Refusal::new(
                ErrorCode::MalformedBody,
                format!("expected an entity type: {e}"),
            )
        })?;
        self.engine.validate_type(&ty)?;
        let mut config = self.registered(&band).await?;
        let declared = config.entity_types.len();
        match config.entity_types.iter_mut().find(|t| t.name == name) {
            Some(old) => *old = ty.clone(),
            None if declared >= MAX_ENTITY_TYPES => {
                return Err(Refusal::new(
                    ErrorCode::InvalidParameter,
                    format!("a band declares at most {MAX_ENTITY_TYPES} entity types"),
                ));
            }
            None => config.entity_types.push(ty.clone()),
        }
        self.configs.put_config(&config).await?;
        tracing::info!(%band, entity_type = %name, "entity type stored");
        Ok((200, json!(ty)))
    }

    async fn entity(
        &self,
        band: BandId,
        ty: EntityTypeName,
        id: EntityId,
    ) -> Result<(u16, Value), Refusal> {
        let entity = self.entities.get_entity(&band, &ty, &id).await?;
        let entity = entity.ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("band {band} has no {ty} {id}"))
        })?;
        Ok((200, json!(EntityView::from(&entity))))
    }

    async fn history(
        &self,
        band: BandId,
        ty: EntityTypeName,
        id: EntityId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let after = number_param(req, "after", 0, u64::MAX)?.unwrap_or(0);
        let entries = self
            .entities
            .history(&band, &ty, &id, after, HISTORY_PAGE)
            .await?;
        if entries.is_empty()
            && after == 0
            && self.entities.get_entity(&band, &ty, &id).await?.is_none()
        {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("band {band} has no {ty} {id}"),
            ));
        }
        let next = (entries.len() == HISTORY_PAGE)
            .then(|| entries.last().map(|e| e.version))
            .flatten();
        let history = EntityHistory {
            entity_type: ty,
            id,
            versions: entries.iter().map(EntityVersion::from).collect(),
            next,
        };
        Ok((200, json!(history)))
    }

    /// A page of the band's entities. The channel's head is read BEFORE the page, so
    /// every event after it is newer than or already in the page: a client that
    /// resumes from it and applies an event only when its version is newer misses
    /// nothing and applies nothing twice.
    async fn entities(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let ty = req
            .query_string_parameters
            .first("type")
            .map(EntityTypeName::parse)
            .transpose()?;
        let after = req
            .query_string_parameters
            .first("after")
            .map(entity_cursor)
            .transpose()?;
        let limit = number_param(req, "limit", 1, MAX_ENTITY_PAGE as u64)?
            .map_or(ENTITY_PAGE, |n| n as usize);
        // Selective sync: `device=` leaves out the types its categories do not ask for.
        let wanted = match req.query_string_parameters.first("device") {
            Some(d) => self.device_types(member, d).await?,
            None => None,
        };
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let mut page = self
            .entities
            .list_entities(&band, ty.as_ref(), after.as_ref(), limit)
            .await?;
        if let Some(types) = &wanted {
            page.entities
                .retain(|e| types.iter().any(|t| t == e.entity_type.as_str()));
        }
        // Bounded in bytes too (text fields carry their Yjs documents): a page that would
        // pass the budget ends early, its `next` at the last entity it has.
        let mut next = page.next.map(|(t, i)| format!("{t}/{i}"));
        let mut entities: Vec<EntityView> = Vec::with_capacity(page.entities.len());
        let mut bytes = 0;
        for e in &page.entities {
            let view = EntityView::from(e);
            let size = serde_json::to_vec(&view).map_or(0, |b| b.len());
            if let Some(last) = entities.last()
                && bytes + size > ENTITY_PAGE_BYTES
            {
                next = Some(format!("{}/{}", last.entity_type, last.id));
                break;
            }
            bytes += size;
            entities.push(view);
        }
        let list = EntityList {
            band,
            seq: head.as_ref().map_or(0, |h| h.seq),
            epoch: head.map(|h| h.epoch),
            entities,
            next,
        };
        Ok((200, json!(list)))
    }

    /// The entity types the member's `device` asks for (`None`: every type).
    async fn device_types(
        &self,
        member: &Member,
        device: &str,
    ) -> Result<Option<Vec<String>>, Refusal> {
        let id = crate::model::DeviceId::parse(device)?;
        let Some(record) = self.entities.get_device(&id).await? else {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no device {id} is registered; send register_device first"),
            ));
        };
        crate::entities::devices::taken(&record, &member.user)?;
        Ok(crate::entities::categories::entity_types(
            &record.categories,
        ))
    }

    /// The member's own `device` in `band` (a member of the band): another member's is
    /// `forbidden`, an unknown one `not_found`.
    async fn own_device(
        &self,
        member: &Member,
        band: &BandId,
        device: &str,
    ) -> Result<crate::model::DeviceId, Refusal> {
        let id = crate::model::DeviceId::parse(device)?;
        let record = self.entities.get_device(&id).await?.ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("no device {id} is registered"))
        })?;
        if record.member != member.user {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "device {id} is another member's; only its own member sees its parked mutations in band {band}"
                ),
            ));
        }
        Ok(id)
    }

    /// A page of the device's parked mutations in the band, newest first. The store
    /// pages by mid over all of the device's bands; a page is filtered to this band, so
    /// it may hold fewer than `limit` while `next` says more may follow.
    async fn parked(
        &self,
        member: &Member,
        device: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let device = self.own_device(member, &band, device).await?;
        let before = number_param(req, "before", 1, u64::MAX)?;
        let limit = number_param(req, "limit", 1, MAX_PARKED_PAGE as u64)?
            .map_or(PARKED_PAGE, |n| n as usize);
        let receipts = self.entities.parked_before(&device, before, limit).await?;
        let next = (receipts.len() == limit)
            .then(|| receipts.last().map(|r| r.mid))
            .flatten();
        let list = crate::wire::http::ParkedList {
            parked: receipts
                .iter()
                .filter(|r| r.band == band)
                .filter_map(crate::wire::http::ParkedMutation::of)
                .collect(),
            band,
            device,
            next,
        };
        Ok((200, json!(list)))
    }

    /// Dismiss a parked mutation: 204 whether it was still listed or not (a repeat is
    /// harmless). The mid keeps its verdict; only the listing forgets it.
    async fn dismiss_parked(
        &self,
        member: &Member,
        device: &str,
        mid: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let device = self.own_device(member, &band, device).await?;
        let mid = mid.parse::<u64>().ok().filter(|m| *m >= 1).ok_or_else(|| {
            Refusal::new(
                ErrorCode::InvalidParameter,
                format!("mid must be an integer from 1, not {mid:?}"),
            )
        })?;
        // Only a receipt of this band may be dismissed through it.
        let receipt = self.entities.receipts(&device, mid, mid).await?;
        if receipt.first().is_some_and(|r| r.band == band) {
            self.entities.dismiss_parked(&device, mid).await?;
        }
        Ok(no_content())
    }

    /// The band's members online now: the body of the `presence` frame.
    async fn presence(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let store = self
            .presence
            .as_deref()
            .ok_or_else(|| Refusal::new(ErrorCode::NotConfigured, "presence is not kept here"))?;
        let members = crate::presence::online(store, &band).await?;
        let list = crate::wire::http::PresenceList {
            kind: crate::wire::http::PresenceKind::Presence,
            band,
            members,
        };
        Ok((200, json!(list)))
    }

    async fn conflicts(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let mut conflicts = self
            .entities
            .list_conflicts(&band, false, MAX_CONFLICTS + 1)
            .await?;
        let truncated = conflicts.len() > MAX_CONFLICTS;
        conflicts.truncate(MAX_CONFLICTS);
        let counts = crate::entities::stats::conflict_counts(&conflicts);
        let open = conflicts.iter().filter(|c| c.resolution.is_none()).count() as u64;
        let list = ConflictList {
            band,
            open,
            resolved: conflicts.len() as u64 - open,
            counts,
            conflicts,
            truncated,
        };
        Ok((200, json!(list)))
    }

    /// Operator: one page of the band's entities rebuilt from their history and
    /// compared with what is stored (reads only; see [`crate::entities::rebuild`]).
    async fn rebuild(
        &self,
        band: BandId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let after = req
            .query_string_parameters
            .first("after")
            .map(entity_cursor)
            .transpose()?;
        let limit = number_param(req, "limit", 1, rebuild::MAX_PAGE as u64)?
            .map_or(rebuild::DEFAULT_PAGE, |n| n as usize);
        let config = self.registered(&band).await?;
        let types = BandTypes::new(config.entity_types, config.strict_entities);
        let check = rebuild::Rebuild {
            entities: &*self.entities,
            log: &*self.log,
            engine: &self.engine,
        };
        let report = check.check(&band, &types, after.as_ref(), limit).await?;
        if report.matched {
            tracing::info!(%band, checked = report.checked, partial = report.partial, "rebuild matched");
        } else {
            tracing::warn!(%band, checked = report.checked, mismatched = report.mismatched, "rebuild found mismatches");
        }
        Ok((200, json!(report)))
    }

    async fn stats(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let ops = self.operations.list_operations(&band, MAX_LIMIT).await?;
        let count = |s: OperationStatus| ops.iter().filter(|o| o.status == s).count() as u64;
        let synced: u64 = ops.iter().map(|o| o.metrics.synced).sum();
        let failed: u64 = ops.iter().map(|o| o.metrics.failed).sum();
        let mut durations: Vec<u64> = ops
            .iter()
            .filter(|o| o.status == OperationStatus::Completed)
            .map(|o| o.metrics.duration_ms)
            .collect();
        durations.sort_unstable();
        let pct = |p: usize| {
            durations
                .get((durations.len().saturating_sub(1)) * p / 100)
                .copied()
        };
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let verdicts = self.entities.verdict_counts(&band).await?;
        let stats = Stats {
            band,
            window: StatsWindow {
                operations: ops.len() as u64,
            },
            operations: OperationCounts {
                completed: count(OperationStatus::Completed),
                failed: count(OperationStatus::Failed),
                running: count(OperationStatus::Running),
            },
            items: ItemCounts { synced, failed },
            duration_ms: Percentiles {
                p50: pct(50),
                p99: pct(99),
            },
            events: LogPosition {
                seq: head.as_ref().map(|h| h.seq),
                epoch: head.map(|h| h.epoch),
            },
            entities: crate::entities::stats::verdict_counts(&verdicts),
        };
        Ok((200, json!(stats)))
    }
}
