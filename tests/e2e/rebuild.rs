//! The operator's rebuild check and the conflict analytics end to end: members push
//! through real WebSocket clients, an operator asks the local stack to rebuild the
//! band's entities from their history (the full check, a paged one, one after the
//! history retention pruned, one after the stored state was corrupted), and
//! `GET /sync/stats` counts the verdicts per type and policy.

use bandsync::model::BandId;
use bandsync::ports::EntityStore;
use bandsync_testkit::stack::*;
use serde_json::{Value, json};

const REBUILD: &str = "/sync/bands/demo/entities/rebuild";

async fn member(t: &TestStack, user: &str, device: &str) -> Client {
    let mut c = t.client(user, &["demo"]).await;
    c.send(
        json!({"action": "register_device", "device": device, "platform": "web",
                  "name": device}),
    )
    .await;
    assert_eq!(c.expect("device").await["device"], device);
    c
}

fn entry(mid: u64, id: &str, op: &str, base: u64, fields: Value) -> Value {
    json!({"mid": mid, "type": "setlist_entry", "id": id, "op": op, "base_version": base,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

async fn pushed(c: &mut Client, device: &str, mutations: Vec<Value>) -> Vec<Value> {
    c.send(
        json!({"action": "push", "band": "demo", "device": device, "ref": "r",
                  "mutations": mutations}),
    )
    .await;
    let reply = c.expect("push_result").await;
    reply["results"].as_array().unwrap().clone()
}

fn statuses(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_operator_rebuilds_a_band_from_its_history_and_stats_count_the_verdicts() {
    let t = spawn_stack().await;
    let http = t.http();
    let now = chrono::Utc::now();
    let ops = t
        .stack
        .tokens
        .mint_admin("ops", now, chrono::Duration::hours(1));
    let alice_token = t.token("alice", &["demo"]);
    let mut alice = member(&t, "alice", "alice-phone").await;
    let mut bob = member(&t, "bob", "bob-tablet").await;

    // GIVEN three entries, one changed by both members from the same base (a merge)
    let results = pushed(
        &mut alice,
        "alice-phone",
        vec![
            entry(
                1,
                "e1",
                "create",
                0,
                json!({"title": "So What", "key": "C"}),
            ),
            entry(2, "e2", "create", 0, json!({"title": "Blue in Green"})),
            entry(
                3,
                "e3",
                "create",
                0,
                json!({"title": "Freddie", "plays": {"$inc": 1}}),
            ),
            entry(
                4,
                "e1",
                "patch",
                1,
                json!({"key": "D", "tags": {"$add": ["a"]}}),
            ),
        ],
    )
    .await;
    assert_eq!(statuses(&results), ["applied"; 4]);
    let results = pushed(
        &mut bob,
        "bob-tablet",
        vec![entry(
            1,
            "e1",
            "patch",
            1,
            json!({"key": "E", "tags": {"$add": ["b"]}}),
        )],
    )
    .await;
    assert_eq!(statuses(&results), ["merged"], "{results:?}");
    // WHEN a member asks for a rebuild THEN only an operator may
    let (status, body) = http.post(REBUILD, Some(&alice_token), "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = http
        .post("/sync/bands/nowhere/entities/rebuild", Some(&ops), "")
        .await;
    assert_eq!(status, 404, "{body}");

    // WHEN the operator rebuilds the band THEN every entity matches, from version 1
    let (status, report) = http.post(REBUILD, Some(&ops), "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["matched"], true, "{report}");
    assert_eq!(report["checked"], 3);
    assert_eq!(
        (report["full"].as_u64(), report["partial"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        report["replayed"]["versions"], 5,
        "3 creates and 2 patches of e1"
    );
    assert!(report["channel"]["seq"].as_u64().unwrap() >= 5, "{report}");
    assert_eq!(report["next"], Value::Null);
    // AND page by page, following `next`, the same entities are checked
    let (_, first) = http
        .post(&format!("{REBUILD}?limit=2"), Some(&ops), "")
        .await;
    assert_eq!(
        (first["checked"].as_u64(), first["next"].as_str()),
        (Some(2), Some("setlist_entry/e2"))
    );
    let (_, rest) = http
        .post(
            &format!("{REBUILD}?limit=2&after=setlist_entry/e2"),
            Some(&ops),
            "",
        )
        .await;
    assert_eq!(
        (rest["checked"].as_u64(), &rest["next"]),
        (Some(1), &Value::Null)
    );
    let (status, body) = http
        .post(&format!("{REBUILD}?limit=0"), Some(&ops), "")
        .await;
    assert_eq!(status, 400, "{body}");

    // AND /sync/stats counts each verdict once, per type and status, with the policies
    let (status, stats) = http.get("/sync/stats?band=demo", Some(&alice_token)).await;
    assert_eq!(status, 200, "{stats}");
    let types = stats["entities"].as_array().unwrap();
    let entries = types.iter().find(|t| t["type"] == "setlist_entry").unwrap();
    assert_eq!(entries["applied"], 4, "{stats}");
    assert_eq!(entries["merged"], 1, "{stats}");
    assert_eq!(entries["rejected"], 0, "{stats}");
    let policies = entries["policies"].as_object().unwrap();
    assert!(
        policies
            .get("lww")
            .is_some_and(|o| o.get("won").or(o.get("lost")).is_some()),
        "the key's lww decision against alice's: {stats}"
    );

    // WHEN the retention pruned every version but the newest THEN the check is partial:
    // matched from the oldest kept version, no false mismatch
    let band = BandId::parse("demo").unwrap();
    let pruned = t
        .stack
        .store
        .prune_history(&band, now + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(pruned, 2, "e1's versions 1 and 2");
    let (_, report) = http.post(REBUILD, Some(&ops), "").await;
    assert_eq!(report["matched"], true, "{report}");
    assert_eq!(
        (report["full"].as_u64(), report["partial"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(report["replayed"]["oldest_start_version"], 3);

    // WHEN something writes e3's state past its history (a version with no entry)
    let forged = bandsync_testkit::members::write_past_history(
        &*t.stack.store,
        "demo",
        ("setlist_entry", "e3"),
        "alice-phone",
        "alice",
    )
    .await;
    assert_eq!(forged, 2);

    // THEN the rebuild names it, with both versions, and the rest still match
    let (status, report) = http.post(REBUILD, Some(&ops), "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["matched"], false, "{report}");
    assert_eq!(report["mismatched"], 1);
    let m = &report["mismatches"][0];
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("setlist_entry"), Some("e3"))
    );
    assert_eq!(
        (m["stored_version"].as_u64(), m["replayed_version"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(m["reason"].as_str().unwrap().contains("differs"), "{m}");
}
