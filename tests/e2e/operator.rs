//! The operator API over real HTTP: an operator registers a band and a folder source with
//! `PUT /sync/bands/...`, a member of that band sees them in `GET /sync/status`, and a
//! sync of the new source runs end to end.

use bandsync_testkit::stack::*;
use serde_json::{Value, json};

/// Requests with a bearer token, by any method (PUT and DELETE for the operator routes).
struct Caller {
    http: Http,
    token: String,
}

impl Caller {
    /// (status, JSON body or Null).
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .client
            .request(method, format!("{}{path}", self.http.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

#[tokio::test]
async fn an_operator_registers_a_band_and_a_folder_source_that_members_see_and_sync() {
    // GIVEN the local stack, an operator, a member's token, and a folder with a chart
    let t = spawn_stack().await;
    let http = t.http();
    let now = chrono::Utc::now();
    let ops = Caller {
        http: t.http(),
        token: t
            .stack
            .tokens
            .mint_admin("ops", now, chrono::Duration::hours(1)),
    };
    let member = t.token("carol", &["garage"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("garage-charts");
    std::fs::create_dir_all(&folder).expect("folder");
    put(folder.join("Blue Bossa.pdf"), "chart");

    // WHEN a member tries to register the band THEN she may not
    let band = json!({"name": "The Garage Band", "file_types": ["pdf"]});
    let as_member = Caller {
        http: t.http(),
        token: member.clone(),
    };
    let (status, body) = as_member.put("/sync/bands/garage", band.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // WHEN the operator registers the band and its folder source
    let (status, config) = ops.put("/sync/bands/garage", band).await;
    assert_eq!(status, 200, "{config}");
    let source = json!({"kind": "folder", "location": folder.to_string_lossy()});
    let (status, added) = ops.put("/sync/bands/garage/sources/charts", source).await;
    assert_eq!(status, 200, "{added}");

    // WHEN the operator declares a type with a misspelled policy THEN it is refused (the
    // engine pushes run under has no such policy), and a sane one is kept
    let typo = json!({"fields": {"title": {"policy": "lwww"}}});
    let (status, body) = ops
        .put("/sync/bands/garage/entity-types/setlist_entry", typo)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("lwww"),
        "{body}"
    );
    let sane = json!({"fields": {"title": {"policy": "lww"}}});
    let (status, body) = ops
        .put("/sync/bands/garage/entity-types/setlist_entry", sane)
        .await;
    assert_eq!(status, 200, "{body}");

    // THEN a member of the band sees both in its status
    let (status, body) = http.get("/sync/status?band=garage", Some(&member)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["name"], "The Garage Band");
    assert_eq!(body["config"]["file_types"], json!(["pdf"]));
    assert_eq!(
        body["config"]["google_credentials"],
        json!({"configured": false})
    );
    assert_eq!(body["sources"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["sources"][0]["id"], "charts");
    assert_eq!(body["sources"][0]["kind"], "folder");

    // AND a sync of it runs: the chart is synced
    let (status, queued) = http
        .post("/sync/trigger", Some(&member), r#"{"band":"garage"}"#)
        .await;
    assert_eq!(status, 202, "{queued}");
    let op = eventually("a completed sync of garage", || async {
        let (_, ops) = http
            .get("/sync/operations?band=garage", Some(&member))
            .await;
        let op = ops["operations"][0].clone();
        (op["status"] == "completed").then_some(op)
    })
    .await;
    assert_eq!(op["metrics"]["synced"], 1, "{op}");

    // WHEN the operator deletes the source THEN the member no longer sees it
    let (status, _) = ops.delete("/sync/bands/garage/sources/charts").await;
    assert_eq!(status, 204);
    let (_, body) = http.get("/sync/status?band=garage", Some(&member)).await;
    assert_eq!(body["sources"], json!([]));
}
