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
/// Items shown with one operation.
const MAX_ITEMS: usize = 1000;

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
                    // The detail is for the operator's log, not for an unauthenticated caller.
                    tracing::error!(dependency = %name, error = ?e, "health check failed");
                    all_up = false;
                    json!({"status": "down"})
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
                    "id": c.id, "source": c.source, "kind": c.kind, "resource_id": c.resource_id,
                    "created_at": c.created_at, "expires_at": c.expires_at,
                    "expired": c.expires_at.is_some_and(|at| at <= self.clock.now()),
                    "last_message": c.last_message, "last_message_at": c.last_message_at,
                })
            })
            .collect();
        // The sealed credentials stay in the store: the API says only whether there are some.
        let mut config = json!(config);
        if let Some(c) = config.as_object_mut() {
            let configured = c.remove("google_credentials").is_some();
            c.insert(
                "google_credentials".into(),
                json!({"configured": configured}),
            );
        }
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
        // A large sync has many items: answer with the first ones (a Lambda response is at
        // most 6 MB) and say how many there are.
        let mut items = self.store.list_items(&op.id).await?;
        let total = items.len();
        items.truncate(MAX_ITEMS);
        Ok((
            200,
            json!({"operation": op, "items": items, "items_total": total, "items_truncated": total > MAX_ITEMS}),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Bands `demo` and `rock`, each with a folder source `charts` (one shared folder
    /// holding one file) synced once by jobs `demo-1` and `rock-1`; alice is in demo only.
    struct Fixture {
        h: Harness,
        _dir: tempfile::TempDir,
        alice: String,
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
            Self {
                h,
                _dir: dir,
                alice,
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
                .handle(http_event(method, target, &headers, body))
                .await;
            (response.status(), response.body_json())
        }

        /// A GET as alice.
        async fn get(&self, target: &str) -> (i64, Value) {
            self.call("GET", target, Some(&self.alice), None).await
        }
    }

    fn error_code(body: &Value) -> &str {
        body["error"]["code"].as_str().unwrap_or("<none>")
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
}
