use bandsync::api::*;
use bandsync::deployment::Deployment;
use bandsync::google::oauth::GoogleCredentials;
use bandsync::google::sealed::{self, CredentialKey};
use bandsync::model::{Source, SourceKind, Trigger};
use bandsync::ports::{ConfigStore, OperationStore, SourceStore};
use bandsync_testkit::*;
use serde_json::{Value, json};

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
    /// Where the API plays it runs (the local stack unless a test says AWS).
    deployment: Deployment,
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
            deployment: Deployment::Local,
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
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let response = self
            .h
            .api()
            .with_credentials_key(self.key.clone())
            .with_deployment(self.deployment)
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
    bandsync_google_fake::oauth::test_service_account_json("http://127.0.0.1:9/token")
}

#[tokio::test]
async fn on_aws_folder_sources_and_plain_http_token_uris_are_refused() {
    // GIVEN the API as deployed on AWS
    let mut f = Fixture::new().await;
    f.deployment = Deployment::Aws;

    // WHEN the operator points a source at a folder of the function's machine
    for place in ["/var/task", "/proc/self"] {
        let body = json!({"kind": "folder", "location": place}).to_string();
        let (status, answer) = f
            .ops("PUT", "/sync/bands/demo/sources/sneaky", Some(&body))
            .await;
        // THEN it is refused, saying why, and nothing is stored
        assert_eq!(
            (status, error_code(&answer)),
            (400, "invalid_parameter"),
            "{place}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("local stack only"), "{message}");
    }
    let sneaky = bandsync::model::SourceId::parse("sneaky").unwrap();
    assert!(
        f.h.store
            .get_source(&band("demo"), &sneaky)
            .await
            .unwrap()
            .is_none()
    );

    // WHEN the operator stores credentials whose token_uri is plain http to loopback
    // (inside Lambda: the Runtime API)
    let (status, answer) = f.put_credentials("demo").await;
    // THEN they are refused too, and nothing is sealed
    assert_eq!((status, error_code(&answer)), (400, "invalid_credentials"));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https")
    );
    let config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
    assert!(config.google_credentials.is_none());
    // AND an https one is stored
    let https = bandsync_google_fake::oauth::test_service_account_json(
        "https://oauth2.googleapis.com/token",
    );
    let (status, _) = f
        .ops("PUT", "/sync/bands/demo/credentials", Some(&https))
        .await;
    assert_eq!(status, 204);
    // AND a drive source is fine
    let drive = json!({"kind": "drive", "location": "folder-id"}).to_string();
    let (status, _) = f
        .ops("PUT", "/sync/bands/demo/sources/scores", Some(&drive))
        .await;
    assert_eq!(status, 200);

    // WHEN the same requests reach the local stack THEN both are accepted there
    f.deployment = Deployment::Local;
    let body = json!({"kind": "folder", "location": "/tmp"}).to_string();
    let (status, _) = f
        .ops("PUT", "/sync/bands/demo/sources/sneaky", Some(&body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(f.put_credentials("demo").await.0, 204);
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
async fn an_operations_items_come_in_pages() {
    // GIVEN demo's operation has 2,500 items
    let f = Fixture::new().await;
    let first = f.h.store.list_items("demo-1").await.unwrap()[0].clone();
    let many: Vec<_> = (1..=2500)
        .map(|n| bandsync::model::SyncItem {
            n,
            file_id: format!("f{n}"),
            ..first.clone()
        })
        .collect();
    f.h.store.put_items(&many).await.unwrap();
    let ns = |body: &Value| -> Vec<u64> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["n"].as_u64().unwrap())
            .collect()
    };

    // WHEN alice asks without a cursor THEN she gets the first 1,000 and where to go on
    let (status, body) = f.get("/sync/operations/demo-1").await;
    assert_eq!(status, 200);
    assert_eq!(ns(&body), (1..=1000).collect::<Vec<_>>());
    assert_eq!(
        (
            &body["items_total"],
            &body["items_truncated"],
            &body["next"]
        ),
        (&json!(2500), &json!(true), &json!(1000))
    );
    // WHEN she follows the cursor with a smaller page THEN that page
    let (_, body) = f.get("/sync/operations/demo-1?after=1000&limit=10").await;
    assert_eq!(ns(&body), (1001..=1010).collect::<Vec<_>>());
    assert_eq!(body["next"], 1010);
    // AND the last page says it is the last
    let (_, body) = f.get("/sync/operations/demo-1?after=2000").await;
    assert_eq!(ns(&body).len(), 500);
    assert_eq!(body["items_truncated"], false);
    assert!(body.get("next").is_none(), "{}", body["next"]);
    // AND a page over the cap, or a cursor that is not a number, is refused
    for bad in [
        "limit=1001",
        "limit=0",
        "after=-1",
        "after=x",
        "after=4294967296",
    ] {
        let (status, body) = f.get(&format!("/sync/operations/demo-1?{bad}")).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_parameter"),
            "{bad}"
        );
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
    let jobs: Vec<bandsync::model::SyncJob> = f.h.sync_queue.bodies();
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
    let forged = bandsync::auth::TokenKey::new("other").mint(
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
               "google_credentials": {"configured": false},
               "entity_types": [], "strict_entities": false})
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
async fn an_operator_sets_and_clears_a_band_s_history_days() {
    let f = Fixture::new().await;
    // WHEN the operator sets 30 days of history
    let (status, body) = f
        .ops("PUT", "/sync/bands/jazz", Some(r#"{"history_days":30}"#))
        .await;
    // THEN it is kept and shown
    assert_eq!((status, &body["history_days"]), (200, &json!(30)), "{body}");
    let stored = || async { f.h.store.get_config(&band("jazz")).await.unwrap().unwrap() };
    assert_eq!(stored().await.history_days, Some(30));
    // AND an update that does not name it keeps it
    let (status, body) = f
        .ops("PUT", "/sync/bands/jazz", Some(r#"{"name":"Jazz"}"#))
        .await;
    assert_eq!((status, &body["history_days"]), (200, &json!(30)), "{body}");
    // WHEN it sets null THEN the band is back on the deployment's retention
    let (status, body) = f
        .ops("PUT", "/sync/bands/jazz", Some(r#"{"history_days":null}"#))
        .await;
    assert_eq!(status, 200);
    assert!(body.get("history_days").is_none(), "{body}");
    assert_eq!(stored().await.history_days, None);
    // AND out-of-range or mistyped values are refused, changing nothing
    for (bad, code) in [
        (r#"{"history_days":0}"#, "invalid_request"),
        (r#"{"history_days":3651}"#, "invalid_request"),
        (r#"{"history_days":-1}"#, "malformed_body"),
        (r#"{"history_days":"7"}"#, "malformed_body"),
    ] {
        let (status, body) = f.ops("PUT", "/sync/bands/jazz", Some(bad)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{bad}: {body}"
        );
    }
    assert_eq!(stored().await.history_days, None);
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

// ------------------------------------------------------------- two-way sync ----------

const ALICE_CONN: &str = "alice-conn=";

impl Fixture {
    /// A frame from alice's connection (registered in band demo); the one reply.
    async fn frame(&self, frame: Value) -> Value {
        let ws = self.h.ws_message();
        ws.handle(ws_message_event(ALICE_CONN, &frame.to_string()))
            .await;
        self.h
            .pusher
            .frames(&conn_id(ALICE_CONN))
            .pop()
            .expect("a reply")
    }

    /// Alice's phone pushes `mutations` to band demo; the verdicts.
    async fn push(&self, mutations: Vec<Value>) -> Vec<Value> {
        let reply = self
            .frame(
                json!({"action": "push", "band": "demo", "device": "alice-phone",
                          "mutations": mutations}),
            )
            .await;
        assert_eq!(reply["type"], "push_result", "{reply}");
        reply["results"].as_array().unwrap().clone()
    }

    /// Entries e1 (created, then retitled: version 2) and e2 (created, then deleted).
    async fn with_entities() -> Self {
        let f = Self::new().await;
        f.h.add_connection(ALICE_CONN, "alice", &["demo"]).await;
        let reply = f
            .frame(json!({"action": "register_device", "device": "alice-phone",
                          "platform": "android", "name": "phone"}))
            .await;
        assert_eq!(reply["type"], "device");
        let r = f
            .push(vec![
                mutation(
                    1,
                    "setlist_entry",
                    "e1",
                    "create",
                    0,
                    json!({"title": "So What"}),
                ),
                mutation(
                    2,
                    "setlist_entry",
                    "e1",
                    "patch",
                    1,
                    json!({"title": "Blue in Green"}),
                ),
                mutation(
                    3,
                    "setlist_entry",
                    "e2",
                    "create",
                    0,
                    json!({"title": "Freddie"}),
                ),
                mutation(4, "setlist_entry", "e2", "delete", 1, json!({})),
            ])
            .await;
        assert!(r.iter().all(|v| v["status"] == "applied"), "{r:?}");
        f
    }
}

fn mutation(mid: u64, ty: &str, id: &str, op: &str, base: u64, fields: Value) -> Value {
    json!({"mid": mid, "type": ty, "id": id, "op": op, "base_version": base,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

#[tokio::test]
async fn an_entity_is_shown_to_members_deleted_ones_too() {
    let f = Fixture::with_entities().await;
    let (status, body) = f.get("/sync/entities/setlist_entry/e1?band=demo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"type": "setlist_entry", "id": "e1", "version": 2,
               "fields": {"title": "Blue in Green"}, "deleted": false})
    );
    let (status, body) = f.get("/sync/entities/setlist_entry/e2?band=demo").await;
    assert_eq!(
        (status, &body["deleted"], &body["version"]),
        (200, &json!(true), &json!(2))
    );
    #[rustfmt::skip]
    let refusals = [
        ("/sync/entities/setlist_entry/nope?band=demo", 404, "not_found"),
        ("/sync/entities/setlist_entry/e1?band=rock", 403, "forbidden"),
        ("/sync/entities/setlist_entry/e1", 400, "missing_parameter"),
        ("/sync/entities/set%20list/e1?band=demo", 400, "invalid_parameter"),
        ("/sync/entities/setlist_entry/e1/history?band=rock", 403, "forbidden"),
        ("/sync/entities/setlist_entry/nope/history?band=demo", 404, "not_found"),
        ("/sync/entities/setlist_entry/e1/history?band=demo&after=x", 400, "invalid_parameter"),
    ];
    for (target, status, code) in refusals {
        let (s, body) = f.get(target).await;
        assert_eq!((s, error_code(&body)), (status, code), "{target}: {body}");
    }
}

#[tokio::test]
async fn an_entitys_history_says_who_changed_what_when() {
    let f = Fixture::with_entities().await;
    let (status, body) = f
        .get("/sync/entities/setlist_entry/e1/history?band=demo")
        .await;
    assert_eq!(status, 200, "{body}");
    let versions = body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let v2 = &versions[1];
    assert_eq!(v2["version"], 2);
    assert_eq!(
        (v2["member"].as_str(), v2["device"].as_str()),
        (Some("alice"), Some("alice-phone"))
    );
    assert_eq!(
        (v2["mid"].as_u64(), v2["op"].as_str()),
        (Some(2), Some("patch"))
    );
    assert_eq!(v2["input"], json!({"title": "Blue in Green"}));
    assert_eq!(
        v2["diff"],
        json!([{"field": "title", "before": "So What", "after": "Blue in Green"}])
    );
    assert!(
        v2["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["policy"] == "lww"),
        "{v2}"
    );
    assert_eq!(body["next"], Value::Null);
    // after a version: the rest
    let (_, body) = f
        .get("/sync/entities/setlist_entry/e1/history?band=demo&after=1")
        .await;
    assert_eq!(body["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_entity_snapshot_pages_with_the_channel_position_it_is_consistent_with() {
    let f = Fixture::with_entities().await;
    let (status, body) = f.get("/sync/entities?band=demo").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e1", "e2"]);
    // the head the page is at least as new as: the last push's event
    let log = f.h.log(&channel("band:demo")).await;
    let last = log.last().unwrap();
    assert_eq!(last.event(), "entity.deleted");
    assert_eq!(body["seq"], last.seq);
    assert_eq!(body["epoch"], last.epoch.as_str());
    assert_eq!(body["next"], Value::Null);
    // one at a time
    let (_, page) = f.get("/sync/entities?band=demo&limit=1").await;
    assert_eq!(page["entities"][0]["id"], "e1");
    assert_eq!(page["next"], "setlist_entry/e1");
    let (_, page) = f
        .get("/sync/entities?band=demo&limit=1&after=setlist_entry/e1")
        .await;
    assert_eq!(page["entities"][0]["id"], "e2");
    // another type has none
    let (_, page) = f.get("/sync/entities?band=demo&type=attendance").await;
    assert_eq!(page["entities"], json!([]));
    #[rustfmt::skip]
    let refusals = [
        ("/sync/entities?band=rock", 403, "forbidden"),
        ("/sync/entities", 400, "missing_parameter"),
        ("/sync/entities?band=demo&after=e1", 400, "invalid_parameter"),
        ("/sync/entities?band=demo&limit=0", 400, "invalid_parameter"),
        ("/sync/entities?band=demo&type=a%20b", 400, "invalid_parameter"),
    ];
    for (target, status, code) in refusals {
        let (s, body) = f.get(target).await;
        assert_eq!((s, error_code(&body)), (status, code), "{target}: {body}");
    }
}

#[tokio::test]
async fn an_operator_declares_a_bands_entity_type_and_members_see_its_conflicts() {
    let f = Fixture::with_entities().await;
    // GIVEN the operator declares `gig`, its venue an `ask` field
    let gig = r#"{"fields": {"venue": {"policy": "ask", "fallback": "lww"}, "fee": {"policy": "reject"}}}"#;
    let (status, body) = f
        .ops("PUT", "/sync/bands/demo/entity-types/gig", Some(gig))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "gig");
    assert_eq!(body["fields"]["venue"]["policy"], "ask");
    let (_, status_body) = f.get("/sync/status?band=demo").await;
    assert_eq!(status_body["config"]["entity_types"], json!(["gig"]));
    // WHEN two concurrent venues are pushed
    let r = f
        .push(vec![
            mutation(5, "gig", "g1", "create", 0, json!({"venue": "Club"})),
            mutation(6, "gig", "g1", "patch", 1, json!({"venue": "Hall"})),
        ])
        .await;
    assert_eq!(r[1]["status"], "applied");
    f.h.add_connection("bob-conn=", "bob", &["demo"]).await;
    let ws = f.h.ws_message();
    ws.handle(ws_message_event(
        "bob-conn=",
        &json!({"action": "register_device",
        "device": "bob-tablet", "platform": "web", "name": "tab"})
        .to_string(),
    ))
    .await;
    ws.handle(ws_message_event("bob-conn=", &json!({"action": "push", "band": "demo",
        "device": "bob-tablet", "mutations": [mutation(1, "gig", "g1", "patch", 1, json!({"venue": "Bar"}))]}).to_string())).await;
    let reply = f.h.pusher.frames(&conn_id("bob-conn=")).pop().unwrap();
    assert_eq!(reply["results"][0]["status"], "conflict", "{reply}");
    // THEN the band's conflicts list it, counted per type and policy
    let (status, body) = f.get("/sync/conflicts?band=demo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["open"].as_u64(), body["resolved"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        body["counts"],
        json!([{"type": "gig", "policy": "ask", "open": 1, "resolved": 0, "resolved_by": {}}])
    );
    assert_eq!(body["conflicts"][0]["id"], reply["results"][0]["conflict"]);
    assert_eq!(body["conflicts"][0]["field"], "venue");
    let (s, b) = f.get("/sync/conflicts?band=rock").await;
    assert_eq!((s, error_code(&b)), (403, "forbidden"));
}

#[tokio::test]
async fn bad_entity_type_declarations_are_refused() {
    let f = Fixture::new().await;
    let put =
        |band: &'static str, ty: &'static str| format!("/sync/bands/{band}/entity-types/{ty}");
    // a member's token is not an operator's
    let (s, b) = f
        .call(
            "PUT",
            &put("demo", "gig"),
            Some(&f.alice),
            Some(r#"{"fields":{}}"#),
        )
        .await;
    assert_eq!((s, error_code(&b)), (403, "forbidden"));
    #[rustfmt::skip]
    let cases: Vec<(String, &str, i64, &str)> = vec![
        (put("demo", "gig"), "not json", 400, "malformed_body"),
        (put("demo", "gig"), "[1]", 400, "malformed_body"),
        (put("demo", "gig"), r#"{"fields": {"x": {"policy": "lww", "color": 1}}}"#, 400, "malformed_body"),
        (put("demo", "gig"), r#"{"name": "poster", "fields": {}}"#, 400, "invalid_parameter"),
        (put("demo", "g%20g"), r#"{"fields": {}}"#, 400, "invalid_parameter"),
        (put("nowhere", "gig"), r#"{"fields": {}}"#, 404, "not_found"),
    ];
    for (target, body, status, code) in cases {
        let (s, b) = f.ops("PUT", &target, Some(body)).await;
        assert_eq!((s, error_code(&b)), (status, code), "{target} {body}: {b}");
    }
    // a definition the engine cannot use (a fallback on a field that is not `ask`)
    let (s, b) = f
        .ops(
            "PUT",
            &put("demo", "gig"),
            Some(r#"{"fields": {"x": {"policy": "lww", "fallback": "lww"}}}"#),
        )
        .await;
    assert_eq!(s / 100, 4, "{b}");
    let config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
    assert!(config.entity_types.is_empty(), "nothing stored");
}
