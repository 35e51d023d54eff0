//! The HTTP API (`/sync/*`): status, trigger, operations, health, stats for operators and
//! apps. Bearer JWT on everything but health; every answer is band-scoped to the token.

use crate::auth::{Member, TokenKey, bearer};
use crate::http::{ApiError, body_text, header, json_v2};
use crate::model::{BandId, ChannelName, OperationStatus, SourceId, Trigger};
use crate::ports::{HealthCheck, Queue, Store};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use http::Method;
use serde::Deserialize;
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
];

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

pub struct Api {
    store: Arc<dyn Store>,
    sync_queue: Arc<dyn Queue>,
    tokens: TokenKey,
    clock: Arc<dyn crate::ports::Clock>,
    /// Named dependencies reported by /sync/health.
    checks: Vec<(String, Arc<dyn HealthCheck>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    band: BandId,
    #[serde(default)]
    source: Option<SourceId>,
    /// A manual trigger is a full sync unless asked otherwise.
    #[serde(default = "yes")]
    full: bool,
}

fn yes() -> bool {
    true
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
        }
    }

    #[tracing::instrument(skip_all, fields(method = %req.request_context.http.method, path = ?req.raw_path))]
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.dispatch(&req).await {
            Ok((status, body)) => json_v2(status, &body),
            Err(e) => e.into(),
        }
    }

    async fn dispatch(&self, req: &ApiGatewayV2httpRequest) -> Result<(u16, Value), ApiError> {
        let (method, segments) = route(req);
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        if segs == ["sync", "health"] && method == Method::GET {
            return Ok(self.health().await);
        }
        let known = matches!(
            segs.as_slice(),
            ["sync", "status" | "trigger" | "operations" | "stats"] | ["sync", "operations", _]
        );
        if !known {
            return Err(ApiError::not_found(format!(
                "no route {method} /{}",
                segs.join("/")
            )));
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
            _ => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{method} is not allowed here"),
            )),
        }
    }

    /// The `band` query parameter, which the token must grant.
    fn band(member: &Member, req: &ApiGatewayV2httpRequest) -> Result<BandId, ApiError> {
        let raw = req.query_string_parameters.first("band").ok_or_else(|| {
            ApiError::bad_request("missing_parameter", "query parameter `band` is required")
        })?;
        let band = BandId::parse(raw)?;
        Self::allowed(member, &band)?;
        Ok(band)
    }

    fn allowed(member: &Member, band: &BandId) -> Result<(), ApiError> {
        if member.is_member_of(band) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "you are not a member of band {band}"
            )))
        }
    }

    async fn health(&self) -> (u16, Value) {
        let mut checks = serde_json::Map::new();
        let mut all_up = true;
        for (name, check) in &self.checks {
            let state = match check.check().await {
                Ok(()) => json!({"status": "up"}),
                Err(e) => {
                    all_up = false;
                    json!({"status": "down", "error": e.to_string()})
                }
            };
            checks.insert(name.clone(), state);
        }
        let status = if all_up { "ok" } else { "degraded" };
        (
            if all_up { 200 } else { 503 },
            json!({"status": status, "checks": checks}),
        )
    }

    async fn status(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), ApiError> {
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
        let channels: Vec<Value> = channels
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "source": c.source, "resource_id": c.resource_id,
                    "expires_at": c.expires_at, "last_message": c.last_message, "last_message_at": c.last_message_at,
                })
            })
            .collect();
        Ok((
            200,
            json!({
                "band": band, "config": config, "sources": sources, "watch_channels": channels,
                "channel": head, "last_operation": last,
            }),
        ))
    }

    async fn trigger(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), ApiError> {
        let body = body_text(req.body.as_deref(), req.is_base64_encoded)?;
        let body: TriggerBody = serde_json::from_str(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_body",
                format!("expected {{band, source?, full?}}: {e}"),
            )
        })?;
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
        let jobs: Vec<Value> = jobs
            .iter()
            .map(|j| json!({"job": j.id, "source": j.source, "full": j.full}))
            .collect();
        Ok((202, json!({"queued": jobs})))
    }

    async fn operations(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), ApiError> {
        let band = Self::band(member, req)?;
        let limit = match req.query_string_parameters.first("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("limit must be 1..={MAX_LIMIT}"),
                    )
                })?,
        };
        let ops = self.store.list_operations(&band, limit).await?;
        Ok((200, json!({"band": band, "operations": ops})))
    }

    async fn operation(&self, member: &Member, id: &str) -> Result<(u16, Value), ApiError> {
        let not_found = || ApiError::not_found(format!("no operation {id}"));
        // Another band's operation is "not found", not "forbidden": ids are not disclosed.
        let op = self
            .store
            .get_operation(id)
            .await?
            .filter(|op| member.is_member_of(&op.band))
            .ok_or_else(not_found)?;
        let items = self.store.list_items(&op.id).await?;
        Ok((200, json!({"operation": op, "items": items})))
    }

    async fn stats(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), ApiError> {
        let band = Self::band(member, req)?;
        let ops = self.store.list_operations(&band, MAX_LIMIT).await?;
        let count = |s: OperationStatus| ops.iter().filter(|o| o.status == s).count();
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
        Ok((
            200,
            json!({
                "band": band,
                "window": {"operations": ops.len()},
                "operations": {"completed": count(OperationStatus::Completed), "failed": count(OperationStatus::Failed), "running": count(OperationStatus::Running)},
                "items": {"synced": synced, "failed": failed},
                "duration_ms": {"p50": pct(50), "p99": pct(99)},
                "events": {"seq": head.as_ref().map(|h| h.seq), "epoch": head.map(|h| h.epoch)},
            }),
        ))
    }
}
