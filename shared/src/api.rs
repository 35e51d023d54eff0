//! The HTTP API (`/sync/*`): status, trigger, operations, health, stats for operators and
//! apps. Bearer JWT on everything but health; every answer is band-scoped to the token.
//!
//! The operator routes (`/sync/bands/...`) need an operator's token (`admin` claim): they
//! register a band's configuration, its sources, and its Google credentials, which are
//! sealed with the deployment's [`CredentialKey`] on the way in and never shown again.

use crate::auth::{Member, TokenKey, bearer};
use crate::error::{ErrorCode, Refusal};
use crate::google::oauth::GoogleCredentials;
use crate::google::sealed::{self, CredentialKey};
use crate::model::{
    BandId, ChannelName, OperationStatus, Source, SourceId, SourceKind, SyncConfiguration, Trigger,
};
use crate::ports::{HealthCheck, Queue, Store};
use crate::transport::http::{body_text, header, json_v2, refused_v2};
use crate::wire::http::{
    BandBody, CheckState, ConfigView, Health, ItemCounts, LogPosition, OperationCounts,
    OperationDetail, OperationList, Percentiles, QueuedJob, SourceBody, Stats, StatsWindow, Status,
    SyncRequestBody, TriggerAccepted, WatchChannelView,
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
];

/// A route template's path with its parameters filled in (`{band}` is `demo`, `{source}`
/// `charts`, `{id}` `demo-1`): for tests that call every route.
#[cfg(any(test, feature = "testing"))]
pub fn sample_path(template: &str) -> String {
    template
        .replace("{id}", "demo-1")
        .replace("{band}", "demo")
        .replace("{source}", "charts")
}

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

pub struct Api {
    store: Arc<dyn Store>,
    sync_queue: Arc<dyn Queue>,
    tokens: TokenKey,
    clock: Arc<dyn crate::ports::Clock>,
    /// Named dependencies reported by /sync/health.
    checks: Vec<(String, Arc<dyn HealthCheck>)>,
    /// What bands' Google credentials are sealed under; None: they cannot be stored.
    credentials_key: Option<CredentialKey>,
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
        store: Arc<dyn Store>,
        sync_queue: Arc<dyn Queue>,
        tokens: TokenKey,
        clock: Arc<dyn crate::ports::Clock>,
        checks: Vec<(String, Arc<dyn HealthCheck>)>,
    ) -> Self {
        Self {
            store,
            sync_queue,
            tokens,
            clock,
            checks,
            credentials_key: None,
        }
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
        self.store.get_config(band).await?.ok_or_else(|| {
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
        let config = self.store.get_config(&band).await?;
        let sources = self.store.list_sources(&band).await?;
        let channels = self.store.list_watch_channels(&band).await?;
        let head = self.store.head(&ChannelName::Band(band.clone())).await?;
        let last = self
            .store
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
            self.store.as_ref(),
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
        let ops = self.store.list_operations(&band, limit).await?;
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
            .store
            .get_operation(id)
            .await?
            .filter(|op| member.is_member_of(&op.band))
            .ok_or_else(not_found)?;
        // A large sync has many items: answer with the first ones (a Lambda response is at
        // most 6 MB) and say how many there are.
        let mut items = self.store.list_items(&op.id).await?;
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
            json_body(req, "{name?: string, file_types?: [string]}")?
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
        let existing = self.store.get_config(&band).await?;
        let created = existing.is_none();
        let mut config = existing.unwrap_or_else(|| SyncConfiguration {
            band: band.clone(),
            name: band.to_string(),
            file_types: vec![],
            google_credentials: None,
        });
        if let Some(name) = name {
            config.name = name;
        }
        if let Some(mut types) = file_types {
            types.sort();
            types.dedup();
            config.file_types = types;
        }
        self.store.put_config(&config).await?;
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
        self.store.put_config(&config).await?;
        tracing::info!(%band, grant = credentials.grant_kind(), "Google credentials stored");
        Ok(no_content())
    }

    async fn delete_credentials(&self, band: BandId) -> Result<(u16, Value), Refusal> {
        let mut config = self.registered(&band).await?;
        if config.google_credentials.take().is_some() {
            self.store.put_config(&config).await?;
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
        let source = match self.store.get_source(&band, &id).await? {
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
        self.store.put_source(&source).await?;
        tracing::info!(%band, source = %source.id, kind = ?source.kind, "source stored");
        Ok((200, json!(source)))
    }

    async fn delete_source(&self, band: BandId, id: SourceId) -> Result<(u16, Value), Refusal> {
        if self.store.get_source(&band, &id).await?.is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("band {band} has no source {id}"),
            ));
        }
        self.store.delete_source(&band, &id).await?;
        tracing::info!(%band, source = %id, "source deleted");
        Ok(no_content())
    }

    async fn stats(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let ops = self.store.list_operations(&band, MAX_LIMIT).await?;
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
        let head = self.store.head(&ChannelName::Band(band.clone())).await?;
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
        };
        Ok((200, json!(stats)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{ConfigStore, SourceStore};
    use crate::testing::*;

    /// Bands `demo` and `rock`, each with a folder source `charts` (one shared folder
    /// holding one file) synced once by jobs `demo-1` and `rock-1`; alice is in demo only.
    struct Fixture {
        h: Harness,
        _dir: tempfile::TempDir,
        alice: String,
        /// An operator's `Authorization` header.
        ops: String,
        /// The API's credentials key (None: the deployment has none).
        key: Option<CredentialKey>,
    }

    impl Fixture {
        async fn new() -> Self {
            let h = Harness::new();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("chart.pdf"), "chart").unwrap();
            for name in ["demo", "rock"] {
                let b = h.add_band(name).await;
                let s = h
                    .add_source(&b, "charts", dir.path().to_str().unwrap())
                    .await;
                let job = h.sync_job(&format!("{name}-1"), &b, &s.id, Trigger::Manual);
                h.sync_worker().run(&job).await.unwrap().unwrap();
            }
            let alice = h.bearer("alice", &["demo"]);
            let ops = h
                .tokens
                .mint_admin("ops", h.now(), chrono::TimeDelta::hours(1));
            Self {
                h,
                _dir: dir,
                alice,
                ops: format!("Bearer {ops}"),
                key: Some(CredentialKey::generate().unwrap()),
            }
        }

        /// A request with the given Authorization header (if any): (status, JSON body).
        async fn call(
            &self,
            method: &str,
            target: &str,
            auth: Option<&str>,
            body: Option<&str>,
        ) -> (i64, Value) {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let response = self
                .h
                .api()
                .with_credentials_key(self.key.clone())
                .handle(http_event(method, target, &headers, body))
                .await;
            // Whatever the route, a sealed secret or a key never leaves the API.
            let text = match &response.body {
                Some(aws_lambda_events::encodings::Body::Text(t)) => t.clone(),
                _ => String::new(),
            };
            for secret in ["PRIVATE KEY", "\"ct\"", "\"nonce\""] {
                assert!(!text.contains(secret), "{method} {target} shows {secret}");
            }
            let json = if response.status() == 204 {
                assert_eq!(response.body, None, "204 has no body");
                Value::Null
            } else {
                response.body_json()
            };
            (response.status(), json)
        }

        /// The operator stores a service-account key file as `band`'s credentials.
        async fn put_credentials(&self, band: &str) -> (i64, Value) {
            let target = format!("/sync/bands/{band}/credentials");
            self.ops("PUT", &target, Some(&service_account())).await
        }

        /// A request as the operator.
        async fn ops(&self, method: &str, target: &str, body: Option<&str>) -> (i64, Value) {
            self.call(method, target, Some(&self.ops), body).await
        }

        /// A GET as alice.
        async fn get(&self, target: &str) -> (i64, Value) {
            self.call("GET", target, Some(&self.alice), None).await
        }
    }

    fn error_code(body: &Value) -> &str {
        body["error"]["code"].as_str().unwrap_or("<none>")
    }

    /// A service-account key file as Google hands it out.
    fn service_account() -> String {
        crate::google::fake_oauth::test_service_account_json("http://127.0.0.1:9/token")
    }

    #[tokio::test]
    async fn health_needs_no_token_and_reports_the_store_up() {
        // GIVEN the API; WHEN anyone asks for health
        let f = Fixture::new().await;
        let (status, body) = f.call("GET", "/sync/health", None, None).await;
        // THEN it is 200 with every check up
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"status": "ok", "checks": {"store": {"status": "up"}}})
        );
    }

    #[tokio::test]
    async fn status_shows_a_members_band() {
        // GIVEN demo synced once; WHEN alice asks for its status (behind a stage prefix)
        let f = Fixture::new().await;
        let (status, body) = f.get("/prod/sync/status?band=demo").await;

        // THEN she sees its config, sources, channel head and last operation
        assert_eq!(status, 200);
        assert_eq!(body["band"], "demo");
        assert_eq!(body["config"]["name"], "demo");
        assert_eq!(body["sources"][0]["id"], "charts");
        assert_eq!(body["sources"][0]["last_operation"], "demo-1");
        assert_eq!(body["channel"]["seq"], 3);
        assert_eq!(body["last_operation"]["id"], "demo-1");
        assert_eq!(body["last_operation"]["status"], "completed");
    }

    #[tokio::test]
    async fn operations_are_listed_newest_first_within_the_limit() {
        // GIVEN demo has a second, later operation
        let f = Fixture::new().await;
        f.h.clock.advance(chrono::TimeDelta::minutes(5));
        let job = f.h.sync_job(
            "demo-2",
            &band("demo"),
            &source_id("charts"),
            Trigger::Manual,
        );
        f.h.sync_worker().run(&job).await.unwrap().unwrap();

        // WHEN alice lists demo's operations, all and then only one
        let (status, all) = f.get("/sync/operations?band=demo").await;
        let (_, one) = f.get("/sync/operations?band=demo&limit=1").await;

        // THEN she sees demo's only, newest first, and the limit holds
        assert_eq!(status, 200);
        let ids = |b: &Value| -> Vec<String> {
            b["operations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&all), ["demo-2", "demo-1"]);
        assert_eq!(ids(&one), ["demo-2"]);
        for bad in ["0", "101", "many"] {
            let (status, body) = f
                .get(&format!("/sync/operations?band=demo&limit={bad}"))
                .await;
            assert_eq!(
                (status, error_code(&body)),
                (400, "invalid_parameter"),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn an_operation_is_shown_with_its_items_but_another_bands_is_not_found() {
        let f = Fixture::new().await;

        // WHEN alice asks for her band's operation
        let (status, body) = f.get("/sync/operations/demo-1").await;
        // THEN she gets it with its items
        assert_eq!(status, 200);
        assert_eq!(body["operation"]["id"], "demo-1");
        assert_eq!(body["operation"]["metrics"]["synced"], 1);
        assert_eq!(body["items"][0]["path"], "chart.pdf");
        assert_eq!(body["items"][0]["action"], "created");

        // WHEN she asks for rock's operation, or one that does not exist
        // THEN both are 404 alike (ids are not disclosed)
        for id in ["rock-1", "nope"] {
            let (status, body) = f.get(&format!("/sync/operations/{id}")).await;
            assert_eq!((status, error_code(&body)), (404, "not_found"), "{id}");
        }
    }

    #[tokio::test]
    async fn stats_sum_up_a_bands_operations() {
        // GIVEN demo synced once; WHEN alice asks for its stats
        let f = Fixture::new().await;
        let (status, body) = f.get("/sync/stats?band=demo").await;
        // THEN they count demo's operations, items and events only
        assert_eq!(status, 200);
        assert_eq!(
            body["operations"],
            json!({"completed": 1, "failed": 0, "running": 0})
        );
        assert_eq!(body["items"], json!({"synced": 1, "failed": 0}));
        assert_eq!(body["window"]["operations"], 1);
        assert_eq!(body["events"]["seq"], 3);
        assert!(body["duration_ms"]["p50"].is_u64());
    }

    #[tokio::test]
    async fn trigger_queues_a_full_manual_sync_of_a_members_band() {
        // GIVEN alice in demo; WHEN she triggers a sync
        let f = Fixture::new().await;
        let (status, body) = f
            .call(
                "POST",
                "/sync/trigger",
                Some(&f.alice),
                Some(r#"{"band":"demo"}"#),
            )
            .await;

        // THEN one full manual job per source is queued
        assert_eq!(status, 202);
        let jobs: Vec<crate::model::SyncJob> = f.h.sync_queue.bodies();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].trigger, jobs[0].full), (Trigger::Manual, true));
        assert_eq!(
            body["queued"],
            json!([{"job": jobs[0].id, "source": "charts", "full": true}])
        );
    }

    #[tokio::test]
    async fn refusals_have_the_right_status_and_code() {
        let f = Fixture::new().await;
        let forged = crate::auth::TokenKey::new("other").mint(
            "alice",
            &["demo"],
            f.h.now(),
            chrono::TimeDelta::hours(1),
        );
        let forged = format!("Bearer {forged}");
        let credentials = |who: &str| match who {
            "alice" => Some(f.alice.clone()),
            "forged" => Some(forged.clone()),
            "basic" => Some("Basic YWxpY2U6cHc=".to_owned()),
            _ => None,
        };
        let rock = Some(r#"{"band":"rock"}"#);
        #[rustfmt::skip]
        let cases = [
            ("GET /sync/status?band=demo",    "nobody", None,          401, "missing_token"),
            ("GET /sync/status?band=demo",    "forged", None,          401, "invalid_token"),
            ("GET /sync/status?band=demo",    "basic",  None,          401, "invalid_token"),
            ("GET /sync/status?band=rock",    "alice",  None,          403, "forbidden"),
            ("POST /sync/trigger",            "alice",  rock,          403, "forbidden"),
            ("GET /sync/status",              "alice",  None,          400, "missing_parameter"),
            ("POST /sync/trigger",            "alice",  Some("{band"), 400, "malformed_body"),
            ("GET /sync/nothing-here",        "alice",  None,          404, "not_found"),
            ("DELETE /sync/status?band=demo", "alice",  None,          405, "method_not_allowed"),
        ];
        for (request, who, body, status, code) in cases {
            // GIVEN/WHEN a request that must be refused
            let (method, target) = request.split_once(' ').unwrap();
            let auth = credentials(who);
            let (got, json) = f.call(method, target, auth.as_deref(), body).await;
            // THEN it is, with the status and code a client can act on
            assert_eq!(
                (got, error_code(&json)),
                (status, code),
                "{request} as {who}"
            );
        }
        // AND nothing was queued by the refused triggers
        assert_eq!(f.h.sync_queue.attempts(), 0);
    }

    #[tokio::test]
    async fn every_declared_route_is_served() {
        // GIVEN the routes template.yaml declares for this function
        let f = Fixture::new().await;
        for route in ROUTES {
            let (method, template) = route.split_once(' ').unwrap();
            let path = sample_path(template);
            // WHEN the operator calls it (no body)
            let (status, body) = f.ops(method, &path, None).await;
            // THEN a handler answers: not a routing 404 nor a 405
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.starts_with("no route"), "{route}: {body}");
            assert_ne!(status, 405, "{route}: {body}");
        }
    }

    #[tokio::test]
    async fn operator_routes_need_an_operators_token() {
        let f = Fixture::new().await;
        let sa = service_account();
        let source = r#"{"kind":"folder","location":"/tmp/elsewhere"}"#;
        #[rustfmt::skip]
        let routes = [
            ("PUT",    "/sync/bands/demo",                 Some(r#"{"name":"x"}"#)),
            ("PUT",    "/sync/bands/demo/credentials",     Some(sa.as_str())),
            ("DELETE", "/sync/bands/demo/credentials",     None),
            ("PUT",    "/sync/bands/demo/sources/charts",  Some(source)),
            ("DELETE", "/sync/bands/demo/sources/charts",  None),
        ];
        for (method, target, body) in routes {
            // WHEN nobody, then a member of the band, asks
            let (status, json) = f.call(method, target, None, body).await;
            // THEN it is 401 without a token, 403 with a member's
            assert_eq!(
                (status, error_code(&json)),
                (401, "missing_token"),
                "{method} {target}"
            );
            let (status, json) = f.call(method, target, Some(&f.alice), body).await;
            assert_eq!(
                (status, error_code(&json)),
                (403, "forbidden"),
                "{method} {target}"
            );
        }
        // AND nothing changed
        let config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
        assert_eq!(
            (config.name.as_str(), config.google_credentials),
            ("demo", None)
        );
        let source =
            f.h.store
                .get_source(&band("demo"), &source_id("charts"))
                .await
                .unwrap();
        assert_eq!(source.unwrap().kind, SourceKind::Folder);
    }

    #[tokio::test]
    async fn an_operator_creates_and_updates_a_band_keeping_its_credentials() {
        let f = Fixture::new().await;
        // WHEN the operator registers a new band with no body
        let (status, body) = f.ops("PUT", "/sync/bands/jazz", None).await;
        // THEN it is there with defaults
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"band": "jazz", "name": "jazz", "file_types": [],
                   "google_credentials": {"configured": false}})
        );

        // WHEN it gets credentials, then a name and file types
        let (status, _) = f.put_credentials("jazz").await;
        assert_eq!(status, 204);
        let update = r#"{"name":"The Jazz Trio","file_types":[".PDF","mp3","pdf"]}"#;
        let (status, body) = f.ops("PUT", "/sync/bands/jazz", Some(update)).await;

        // THEN the types are normalised and the credentials kept
        assert_eq!(status, 200);
        assert_eq!(body["name"], "The Jazz Trio");
        assert_eq!(body["file_types"], json!(["mp3", "pdf"]));
        assert_eq!(body["google_credentials"], json!({"configured": true}));
        let stored = f.h.store.get_config(&band("jazz")).await.unwrap().unwrap();
        assert!(stored.google_credentials.is_some());

        // AND a name-only update keeps the file types
        let (_, body) = f
            .ops("PUT", "/sync/bands/jazz", Some(r#"{"name":"Trio"}"#))
            .await;
        assert_eq!(body["file_types"], json!(["mp3", "pdf"]));
    }

    #[tokio::test]
    async fn credentials_are_sealed_under_the_bands_context_and_never_shown() {
        let f = Fixture::new().await;
        let key = f.key.clone().unwrap();
        let file = service_account();

        // WHEN the operator stores demo's service-account key
        let (status, _) = f
            .ops("PUT", "/sync/bands/demo/credentials", Some(&file))
            .await;

        // THEN what is stored opens with the key under demo's context, to the file
        assert_eq!(status, 204);
        let config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
        let sealed_file = config.google_credentials.expect("sealed credentials");
        let context = sealed::credentials_context(&band("demo"));
        let plain = sealed::open(&key, &sealed_file, &context).unwrap();
        assert_eq!(plain.as_bytes(), file.as_bytes());
        assert!(GoogleCredentials::from_json(plain.as_bytes()).is_ok());
        // AND not under another band's
        let rock = sealed::credentials_context(&band("rock"));
        assert!(sealed::open(&key, &sealed_file, &rock).is_err());
        // AND a member sees only that there are some (Fixture::call checks no secret shows)
        let (_, status) = f.get("/sync/status?band=demo").await;
        assert_eq!(
            status["config"]["google_credentials"],
            json!({"configured": true})
        );

        // WHEN the operator removes them (twice)
        for _ in 0..2 {
            let (status, _) = f.ops("DELETE", "/sync/bands/demo/credentials", None).await;
            assert_eq!(status, 204);
        }
        // THEN they are gone
        let config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
        assert_eq!(config.google_credentials, None);
        assert_eq!(config.name, "demo", "the rest of the configuration stays");
    }

    #[tokio::test]
    async fn credentials_need_the_deployments_key() {
        // GIVEN an API without a credentials key
        let mut f = Fixture::new().await;
        f.key = None;
        // WHEN the operator stores credentials THEN it is 503 not_configured
        let (status, body) = f.put_credentials("demo").await;
        assert_eq!((status, error_code(&body)), (503, "not_configured"));
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("CredentialsKey")
        );
        // AND removing them needs no key
        let (status, _) = f.ops("DELETE", "/sync/bands/demo/credentials", None).await;
        assert_eq!(status, 204);
    }

    #[tokio::test]
    async fn bad_operator_inputs_are_refused_with_a_clear_code() {
        let f = Fixture::new().await;
        let long = format!(r#"{{"kind":"folder","location":"{}"}}"#, "x".repeat(1025));
        let sa = service_account();
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Option<&str>, i64, &str)> = vec![
            ("PUT", "/sync/bands/demo/credentials", Some("{not json"), 400, "invalid_credentials"),
            ("PUT", "/sync/bands/demo/credentials", None, 400, "invalid_credentials"),
            ("PUT", "/sync/bands/demo/credentials", Some(r#"{"type":"api_key"}"#), 400, "invalid_credentials"),
            ("PUT", "/sync/bands/demo/credentials", Some(r#"{"type":"authorized_user","client_id":"c"}"#), 400, "invalid_credentials"),
            ("PUT", "/sync/bands/demo", Some("{name"), 400, "malformed_body"),
            ("PUT", "/sync/bands/demo", Some(r#"{"colour":"red"}"#), 400, "malformed_body"),
            ("PUT", "/sync/bands/demo", Some(r#"{"name":" "}"#), 400, "invalid_name"),
            ("PUT", "/sync/bands/demo", Some(r#"{"file_types":["p df"]}"#), 400, "invalid_file_type"),
            ("PUT", "/sync/bands/demo", Some(r#"{"file_types":[""]}"#), 400, "invalid_file_type"),
            ("PUT", "/sync/bands/bad%20band", None, 400, "invalid_parameter"),
            ("PUT", "/sync/bands/demo/sources/bad.id", Some(r#"{"kind":"folder","location":"/x"}"#), 400, "invalid_parameter"),
            ("PUT", "/sync/bands/demo/sources/s", Some(r#"{"kind":"ftp","location":"/x"}"#), 400, "invalid_kind"),
            ("PUT", "/sync/bands/demo/sources/s", Some(r#"{"kind":"folder","location":""}"#), 400, "invalid_location"),
            ("PUT", "/sync/bands/demo/sources/s", Some(&long), 400, "invalid_location"),
            ("PUT", "/sync/bands/demo/sources/s", Some(r#"{"kind":"folder","location":"/x","drive_id":"0A"}"#), 400, "invalid_parameter"),
            ("PUT", "/sync/bands/demo/sources/s", Some(r#"{"location":"/x"}"#), 400, "malformed_body"),
            ("PUT", "/sync/bands/demo/sources/s", None, 400, "malformed_body"),
            ("PUT", "/sync/bands/nope/credentials", Some(sa.as_str()), 404, "not_found"),
            ("PUT", "/sync/bands/nope/sources/s", Some(r#"{"kind":"folder","location":"/x"}"#), 404, "not_found"),
            ("DELETE", "/sync/bands/nope/credentials", None, 404, "not_found"),
            ("DELETE", "/sync/bands/demo/sources/nope", None, 404, "not_found"),
            ("GET", "/sync/bands/demo", None, 405, "method_not_allowed"),
            ("POST", "/sync/bands/demo/sources/charts", None, 405, "method_not_allowed"),
            ("PUT", "/sync/bands/demo/other", None, 404, "not_found"),
        ];
        for (method, target, body, status, code) in cases {
            // WHEN the operator sends a bad request
            let (got, json) = f.ops(method, target, body).await;
            // THEN it is refused with a status and code to act on, and a message
            assert_eq!(
                (got, error_code(&json)),
                (status, code),
                "{method} {target} {body:?}"
            );
            assert!(
                !json["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
            );
        }
        // AND demo is as it was
        let config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
        assert_eq!(
            (config.name.as_str(), config.google_credentials),
            ("demo", None)
        );
        assert_eq!(f.h.store.get_config(&band("nope")).await.unwrap(), None);
        assert_eq!(
            f.h.store.list_sources(&band("demo")).await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn putting_a_source_keeps_its_cursor_unless_it_moves() {
        // GIVEN demo's charts source part-way through its syncs
        let f = Fixture::new().await;
        let (b, id) = (band("demo"), source_id("charts"));
        let mut charts = f.h.store.get_source(&b, &id).await.unwrap().unwrap();
        charts.cursor = Some("page-7".into());
        f.h.store.put_source(&charts).await.unwrap();
        let generation = f.h.store.bump_generation(&b, &id).await.unwrap();
        let same = json!({"kind": "folder", "location": charts.location}).to_string();

        // WHEN the operator puts it again unchanged
        let (status, body) = f
            .ops("PUT", "/sync/bands/demo/sources/charts", Some(&same))
            .await;
        // THEN nothing of its sync state is lost
        assert_eq!(status, 200);
        assert_eq!(body, json!(charts));
        assert_eq!(
            f.h.store.get_source(&b, &id).await.unwrap(),
            Some(charts.clone())
        );

        // WHEN it moves elsewhere
        let moved = r#"{"kind":"folder","location":"/srv/charts-2026"}"#;
        let (status, body) = f
            .ops("PUT", "/sync/bands/demo/sources/charts", Some(moved))
            .await;
        // THEN its cursor is reset, its history and generation kept
        assert_eq!(status, 200);
        assert_eq!(body["location"], "/srv/charts-2026");
        assert_eq!(body["cursor"], Value::Null);
        assert_eq!(body["last_operation"], "demo-1");
        let stored = f.h.store.get_source(&b, &id).await.unwrap().unwrap();
        assert_eq!(stored.cursor, None);
        assert_eq!(f.h.store.generation(&b, &id).await.unwrap(), generation);

        // WHEN the operator adds a Drive source in a shared drive
        let drive = r#"{"kind":"drive","location":"1AbCfolder","drive_id":"0AshareD"}"#;
        let (status, body) = f
            .ops("PUT", "/sync/bands/demo/sources/gdrive", Some(drive))
            .await;
        // THEN it is new, never synced
        assert_eq!(status, 200);
        let expected = Source {
            drive_id: Some("0AshareD".into()),
            ..Source::new(
                b.clone(),
                source_id("gdrive"),
                SourceKind::Drive,
                "1AbCfolder",
            )
        };
        assert_eq!(body, json!(expected));
        assert_eq!(
            f.h.store
                .get_source(&b, &source_id("gdrive"))
                .await
                .unwrap(),
            Some(expected)
        );
    }

    #[tokio::test]
    async fn deleting_a_source_forgets_it() {
        let f = Fixture::new().await;
        // WHEN the operator deletes demo's charts
        let (status, _) = f
            .ops("DELETE", "/sync/bands/demo/sources/charts", None)
            .await;
        // THEN it is gone for members, rock's charts stay, and a second delete is 404
        assert_eq!(status, 204);
        let (_, body) = f.get("/sync/status?band=demo").await;
        assert_eq!(body["sources"], json!([]));
        assert!(
            f.h.store
                .get_source(&band("rock"), &source_id("charts"))
                .await
                .unwrap()
                .is_some()
        );
        let (status, body) = f
            .ops("DELETE", "/sync/bands/demo/sources/charts", None)
            .await;
        assert_eq!((status, error_code(&body)), (404, "not_found"));
    }
}
