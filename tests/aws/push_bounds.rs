//! The push service's whole-entity bound on DynamoDB (moto): an entity that would grow
//! past it is `rejected` with `entity_too_large`, parked, and its mid advances, as on
//! SQLite (the check is the service's, before either store sees the commit), instead of
//! failing as a frame error on the 400 KB item limit and stalling the device's queue.

use crate::support::*;
use bandsync::entities::push::MAX_ENTITY_BYTES;
use bandsync::model::{BandId, DeviceId, EntityId, EntityTypeName};
use bandsync::ports::EntityStore;
use serde_json::{Value, json};

fn page(mid: u64, op: &str, base: u64, fields: Value) -> Value {
    json!({"mid": mid, "type": "scrapbook", "id": "s1", "op": op, "base_version": base,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

/// `n` fields `<prefix>0..` of about 15 KB each.
fn big_fields(prefix: &str, n: usize) -> Value {
    let text = "x".repeat(15_000);
    Value::Object(
        (0..n)
            .map(|i| (format!("{prefix}{i}"), json!(text)))
            .collect(),
    )
}

#[tokio::test]
async fn an_entity_past_its_bound_is_rejected_and_parked_on_dynamodb_too() {
    let p = MotoPush::new("bound-conn").await;
    let (store, band) = (p.store.clone(), BandId::parse("demo").unwrap());
    // GIVEN a scrapbook grown to about 120 KB
    for (mid, op, base, prefix) in [(1, "create", 0, "a"), (2, "patch", 1, "b")] {
        let r = p
            .send(vec![page(mid, op, base, big_fields(prefix, 4))])
            .await;
        assert_eq!(r[0]["status"], "applied", "{r}");
    }
    // WHEN a 15 KB field more would pass the bound, with a small change behind it
    let r = p
        .send(vec![
            page(3, "patch", 2, big_fields("c", 1)),
            page(4, "patch", 2, json!({"title": "small"})),
        ])
        .await;
    // THEN it is rejected as entity_too_large and the change behind it applied
    assert_eq!(r[0]["status"], "rejected", "{}", r[0]["message"]);
    assert_eq!(r[0]["code"], "entity_too_large");
    assert!(
        r[0]["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_ENTITY_BYTES.to_string())
    );
    assert_eq!(r[1]["status"], "applied", "{}", r[1]["message"]);
    let device = DeviceId::parse("ringo-phone").unwrap();
    assert_eq!(
        store.get_device(&device).await.unwrap().unwrap().next_mid,
        5
    );
    let (ty, id) = (
        EntityTypeName::parse("scrapbook").unwrap(),
        EntityId::parse("s1").unwrap(),
    );
    let stored = store.get_entity(&band, &ty, &id).await.unwrap().unwrap();
    assert_eq!(stored.version, 3);
    // AND it is parked, as pushed
    let parked = store.parked_before(&device, None, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].mid, 3);
    assert!(parked[0].parked.as_ref().unwrap()["fields"]["c0"].is_string());
    // AND a create whose history entry would pass its bound is rejected, not a frame
    // error: the queue goes on
    let create = json!({"mid": 5, "type": "scrapbook", "id": "s2", "op": "create",
        "base_version": 0, "fields": big_fields("a", 7), "ts": "2026-12-01T20:00:00Z"});
    let r = p.send(vec![create]).await;
    assert_eq!(r[0]["code"], "entity_too_large", "{r}");
    assert_eq!(
        store.get_device(&device).await.unwrap().unwrap().next_mid,
        6
    );
}
