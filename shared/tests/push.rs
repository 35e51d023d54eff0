//! The push service through the `$default` route, as a client drives it: register a
//! device, push mutations, read the verdicts, the events and what the store kept.

use bandsync::entities::push::RateLimit;
use bandsync::entities::types::{EntityType, FieldSpec, Policy};
use bandsync::model::{ChannelName, DeviceId, EntityId, EntityTypeName, SyncConfiguration, UserId};
use bandsync::ports::{ConfigStore, EntityStore};
use bandsync::ws_message::WsMessage;
use bandsync_testkit::*;
use serde_json::{Value, json};

const ALICE: &str = "alice-conn=";
const BOB: &str = "bob-conn=";
const EVE: &str = "eve-conn=";
const ALICE_PHONE: &str = "alice-phone";
const BOB_TABLET: &str = "bob-tablet";
const EVE_LAPTOP: &str = "eve-laptop";

/// Band `demo` (alice and bob) with the built-in types and a `gig` type whose `fee` is
/// `reject` and `venue` is `ask`; band `rock` (eve). Each member has registered a device.
struct Fixture {
    h: Harness,
    /// One handler for the whole test, as a Lambda instance keeps one.
    ws: WsMessage,
}

fn gig() -> EntityType {
    EntityType::new(
        EntityTypeName::parse("gig").unwrap(),
        [
            ("fee", FieldSpec::new(Policy::Reject)),
            ("venue", FieldSpec::ask(Policy::Lww, 3600)),
            ("date", FieldSpec::new(Policy::Lww)),
        ],
    )
}

impl Fixture {
    async fn new() -> Self {
        Self::with_band(false).await
    }

    async fn with_band(strict: bool) -> Self {
        let h = Harness::new();
        for name in ["demo", "rock"] {
            h.store
                .put_config(&SyncConfiguration {
                    band: band(name),
                    name: name.into(),
                    file_types: vec![],
                    google_credentials: None,
                    entity_types: vec![gig()],
                    strict_entities: strict,
                    history_days: None,
                })
                .await
                .unwrap();
        }
        h.add_connection(ALICE, "alice", &["demo"]).await;
        h.add_connection(BOB, "bob", &["demo"]).await;
        h.add_connection(EVE, "eve", &["rock"]).await;
        let f = Self {
            ws: h.ws_message(),
            h,
        };
        for (conn, device) in [(ALICE, ALICE_PHONE), (BOB, BOB_TABLET), (EVE, EVE_LAPTOP)] {
            let reply = f
                .ask(
                    conn,
                    json!({"action": "register_device", "device": device,
                    "platform": "ios", "name": "mine"}),
                )
                .await;
            assert_eq!(reply["type"], "device", "{reply}");
        }
        f
    }

    /// One frame from `conn`; the one frame it is answered with.
    async fn ask(&self, conn: &str, frame: Value) -> Value {
        let before = self.h.pusher.frames(&conn_id(conn)).len();
        let response = self
            .ws
            .handle(ws_message_event(conn, &frame.to_string()))
            .await;
        assert_eq!(response.status(), 200);
        let mut replies = self.h.pusher.frames(&conn_id(conn)).split_off(before);
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.remove(0)
    }

    /// A push of `mutations` to band demo from `device`.
    async fn push(&self, conn: &str, device: &str, mutations: Vec<Value>) -> Value {
        self.ask(
            conn,
            json!({"action": "push", "band": "demo", "device": device, "ref": "p",
                   "mutations": mutations}),
        )
        .await
    }

    /// The verdicts of a push that must be answered with `push_result`.
    async fn results(&self, conn: &str, device: &str, mutations: Vec<Value>) -> Vec<Value> {
        let reply = self.push(conn, device, mutations).await;
        assert_eq!(reply["type"], "push_result", "{reply}");
        assert_eq!(reply["ref"], "p");
        assert_eq!(reply["device"], device);
        reply["results"].as_array().unwrap().clone()
    }

    async fn next_mid(&self, device: &str) -> u64 {
        self.h
            .store
            .get_device(&DeviceId::parse(device).unwrap())
            .await
            .unwrap()
            .unwrap()
            .next_mid
    }

    async fn entity(
        &self,
        ty: &str,
        id: &str,
    ) -> Option<bandsync::entities::records::EntityRecord> {
        self.h
            .store
            .get_entity(
                &band("demo"),
                &EntityTypeName::parse(ty).unwrap(),
                &EntityId::parse(id).unwrap(),
            )
            .await
            .unwrap()
    }

    async fn events(&self) -> Vec<bandsync::model::Event> {
        self.h.log(&ChannelName::Band(band("demo"))).await
    }
}

/// A mutation of `ty`/`id`.
fn m(mid: u64, ty: &str, id: &str, op: &str, base: u64, fields: Value) -> Value {
    json!({"mid": mid, "type": ty, "id": id, "op": op, "base_version": base,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

fn entry(mid: u64, id: &str, op: &str, base: u64, fields: Value) -> Value {
    m(mid, "setlist_entry", id, op, base, fields)
}

#[tokio::test]
async fn a_create_is_applied_with_its_event_and_receipt() {
    // GIVEN alice's registered phone
    let f = Fixture::new().await;

    // WHEN she creates a setlist entry
    let results = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![entry(
                1,
                "e1",
                "create",
                0,
                json!({"title": "So What", "tags": {"$add": ["jazz"]}}),
            )],
        )
        .await;

    // THEN it is applied at version 1, with the seq of its event and the fields after
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(
        (r["mid"].as_u64(), r["status"].as_str()),
        (Some(1), Some("applied"))
    );
    assert_eq!(r["version"], 1);
    assert_eq!(r["fields"]["title"], "So What");
    assert_eq!(r["fields"]["tags"], json!(["jazz"]));
    // AND its event is in band:demo at that seq, naming who and which mutation
    let events = f.events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(Some(e.seq), r["seq"].as_u64());
    assert_eq!(e.event(), "entity.created");
    assert_eq!(e.id, "m:alice-phone:1");
    assert_eq!(
        (
            e.data()["member"].as_str(),
            e.data()["device"].as_str(),
            e.data()["mid"].as_u64()
        ),
        (Some("alice"), Some(ALICE_PHONE), Some(1))
    );
    assert_eq!(e.data()["fields"]["title"], "So What");
    // AND it was queued for broadcast, and the device's mid moved on
    let queued: Vec<bandsync::broadcast::BroadcastMessage> = f.h.broadcast_queue.bodies();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].events[0].id, "m:alice-phone:1");
    assert_eq!(f.next_mid(ALICE_PHONE).await, 2);
}

#[tokio::test]
async fn concurrent_edits_merge_and_the_losers_are_listed() {
    // GIVEN an entry at version 1 that alice and bob both saw
    let f = Fixture::new().await;
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![entry(1, "e1", "create", 0, json!({"key": "C"}))],
    )
    .await;
    // WHEN each changes its key from version 1, bob a second later by his clock
    let a = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![entry(2, "e1", "patch", 1, json!({"key": "D"}))],
        )
        .await;
    let mut late = entry(
        1,
        "e1",
        "patch",
        1,
        json!({"key": "E", "plays": {"$inc": 1}}),
    );
    late["ts"] = json!("2026-12-01T20:00:01Z");
    let b = f.results(BOB, BOB_TABLET, vec![late]).await;

    // THEN alice's is applied, bob's merged over it, listing the value that lost
    assert_eq!(a[0]["status"], "applied");
    assert_eq!(b[0]["status"], "merged", "{b:?}");
    assert_eq!(b[0]["version"], 3);
    assert_eq!(b[0]["fields"]["key"], "E");
    let losers = b[0]["losers"].as_array().unwrap();
    assert!(
        losers
            .iter()
            .any(|l| l["field"] == "key" && l["value"] == "D" && l["policy"] == "lww"),
        "{losers:?}"
    );
    // AND both see the same state: the store's
    let stored = f.entity("setlist_entry", "e1").await.unwrap();
    assert_eq!(stored.version, 3);
    assert_eq!(stored.state.values()["key"], "E");
    assert_eq!(stored.state.values()["plays"], 1);
    let names: Vec<String> = f
        .events()
        .await
        .iter()
        .map(|e| e.event().to_owned())
        .collect();
    assert_eq!(
        names,
        ["entity.created", "entity.updated", "entity.updated"]
    );
}

#[tokio::test]
async fn an_ask_field_opens_a_conflict_with_its_event() {
    // GIVEN a gig whose venue alice and bob change concurrently, bob's change second
    let f = Fixture::new().await;
    let conflict_id = venue_conflict(&f).await;
    let id = conflict_id.to_string();

    // THEN it is a conflict, stored open
    let conflict =
        f.h.store
            .get_conflict(&band("demo"), &conflict_id)
            .await
            .unwrap()
            .expect("the conflict is stored");
    assert!(conflict.resolution.is_none());
    // AND band:demo has conflict.opened after the entity's update
    let events = f.events().await;
    let last = events.last().unwrap();
    assert_eq!(last.event(), "conflict.opened");
    assert_eq!(last.data()["conflict"], id.as_str());
    assert_eq!(events[events.len() - 2].event(), "entity.updated");
    // AND both were committed together and queued for broadcast with the verdict
    let receipts =
        f.h.store
            .receipts(&DeviceId::parse(BOB_TABLET).unwrap(), 1, 1)
            .await
            .unwrap();
    assert_eq!(receipts[0].result.seq, Some(events[events.len() - 2].seq));
    let queued: Vec<bandsync::broadcast::BroadcastMessage> = f.h.broadcast_queue.bodies();
    let last_message = queued.last().expect("a queued message");
    let ids: Vec<&str> = last_message.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["m:bob-tablet:1", &format!("c:{id}:opened")]);
}

/// A gig whose venue alice and bob changed concurrently: the conflict bob's change
/// opened (the venue is `ask`, settled by `lww` after an hour).
async fn venue_conflict(f: &Fixture) -> bandsync::model::ConflictId {
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![m(1, "gig", "g1", "create", 0, json!({"venue": "Club"}))],
    )
    .await;
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![m(2, "gig", "g1", "patch", 1, json!({"venue": "Hall"}))],
    )
    .await;
    let b = f
        .results(
            BOB,
            BOB_TABLET,
            vec![m(1, "gig", "g1", "patch", 1, json!({"venue": "Bar"}))],
        )
        .await;
    assert_eq!(b[0]["status"], "conflict", "{b:?}");
    bandsync::model::ConflictId::parse(b[0]["conflict"].as_str().unwrap()).unwrap()
}

fn settler(f: &Fixture) -> bandsync::entities::settle::Settler {
    bandsync::entities::settle::Settler::new(
        f.h.store.clone(),
        f.h.store.clone(),
        Some(f.h.publisher()),
    )
}

/// One sweep of band demo settles exactly `id`: its resolution.
async fn settled_once(
    f: &Fixture,
    settler: &bandsync::entities::settle::Settler,
    id: &bandsync::model::ConflictId,
) -> bandsync::entities::records::Resolution {
    let report = settler.settle_band(&band("demo"), f.h.now()).await.unwrap();
    assert_eq!((report.settled, report.unsettled), (1, 0));
    let conflict = f.h.store.get_conflict(&band("demo"), id).await.unwrap();
    conflict.unwrap().resolution.expect("settled")
}

#[tokio::test]
async fn an_ask_conflict_past_its_deadline_is_settled_by_the_fallback() {
    // GIVEN an open conflict on the venue, due in an hour
    let f = Fixture::new().await;
    let id = venue_conflict(&f).await;
    let settler = settler(&f);
    let demo = band("demo");

    // WHEN the sweep runs before the deadline THEN nothing is settled
    let early = settler.settle_band(&demo, f.h.now()).await.unwrap();
    assert_eq!(early.settled, 0);
    // (bob's conflicting change made version 3, keeping the venue)
    assert_eq!(f.entity("gig", "g1").await.unwrap().version, 3);

    // WHEN it runs past the deadline
    f.h.clock.advance(chrono::TimeDelta::hours(2));
    let events_before = f.events().await.len();
    let resolution = settled_once(&f, &settler, &id).await;

    // THEN the fallback (lww) settled it as a new version by the service (mid 0)
    assert_eq!(resolution.how, "lww");
    assert_eq!(resolution.by, None);
    let entity = f.entity("gig", "g1").await.unwrap();
    assert_eq!(entity.version, 4);
    assert_eq!(entity.state.values()["venue"], resolution.value);
    let h =
        f.h.store
            .history_entry(&demo, &entity.entity_type, &entity.id, 4)
            .await
            .unwrap()
            .unwrap();
    assert_eq!((h.device.as_str(), h.mid), ("bandsync-settler", 0));
    // AND its entity.updated and conflict.resolved are in the log, together, and queued
    let events = f.events().await;
    let new: Vec<(&str, &str)> = events[events_before..]
        .iter()
        .map(|e| (e.event(), e.id.as_str()))
        .collect();
    let resolved = format!("c:{id}:resolved");
    let settled = format!("s:{id}");
    assert_eq!(
        new,
        vec![
            ("entity.updated", settled.as_str()),
            ("conflict.resolved", resolved.as_str())
        ]
    );
    let queued: Vec<bandsync::broadcast::BroadcastMessage> = f.h.broadcast_queue.bodies();
    let last = queued.last().unwrap();
    assert_eq!(last.events.len(), 2);
    assert_eq!(last.events[0].id, settled);
    // AND a second sweep finds nothing open: nothing more is written
    let again = settler.settle_band(&demo, f.h.now()).await.unwrap();
    assert_eq!(again.settled, 0);
    assert_eq!(f.events().await.len(), events.len());
    assert!(
        f.h.store
            .list_conflicts(&demo, true, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_due_conflict_whose_entity_was_deleted_is_settled_as_gone() {
    // GIVEN an open conflict on the venue, and the gig deleted before its deadline
    let f = Fixture::new().await;
    let id = venue_conflict(&f).await;
    let deleted = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![m(3, "gig", "g1", "delete", 3, json!({}))],
        )
        .await;
    assert_eq!(deleted[0]["status"], "applied", "{deleted:?}");
    let settler = settler(&f);
    let demo = band("demo");

    // WHEN the sweep runs past the deadline
    f.h.clock.advance(chrono::TimeDelta::hours(2));
    let events_before = f.events().await.len();
    let resolution = settled_once(&f, &settler, &id).await;

    // THEN the conflict is settled (not left open), as gone, saying why
    assert_eq!(resolution.how, "gone");
    assert_eq!(resolution.value, Value::Null);
    assert_eq!(resolution.at, f.h.now());
    let reason = resolution.reason.expect("a reason");
    assert!(reason.contains("gig g1 was deleted"), "{reason}");
    let open = f.h.store.list_conflicts(&demo, true, 10).await.unwrap();
    assert_eq!(open.len(), 0, "{open:?}");
    // AND the deleted entity got no new version
    let entity = f.entity("gig", "g1").await.unwrap();
    assert!(entity.deleted);
    assert_eq!(entity.version, 4);
    // AND only its conflict.resolved is in the log, with the reason, and queued
    let events = f.events().await;
    let new = &events[events_before..];
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].event(), "conflict.resolved");
    assert_eq!(new[0].id, format!("c:{id}:resolved"));
    assert_eq!(new[0].data()["how"], "gone");
    assert_eq!(new[0].data()["reason"], reason.as_str());
    let queued: Vec<bandsync::broadcast::BroadcastMessage> = f.h.broadcast_queue.bodies();
    assert_eq!(queued.last().unwrap().events[0].id, new[0].id);
    // AND a second sweep settles nothing and writes nothing
    let again = settler.settle_band(&demo, f.h.now()).await.unwrap();
    assert_eq!((again.settled, again.unsettled), (0, 0));
    assert_eq!(f.events().await.len(), events.len());
}

#[tokio::test]
async fn the_scheduler_tick_settles_due_conflicts() {
    // GIVEN an open conflict past its deadline, and a scheduler with the settler
    let f = Fixture::new().await;
    let id = venue_conflict(&f).await;
    f.h.clock.advance(chrono::TimeDelta::hours(2));
    let scheduler = bandsync::scheduler::Scheduler::new(
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.sync_queue.clone(),
        f.h.clock.clone(),
    )
    .with_settler(settler(&f));

    // WHEN it ticks THEN the conflict is settled
    let report = scheduler.tick(&[band("demo")]).await.unwrap();
    assert_eq!(report.conflicts.settled, 1);
    let conflict = f.h.store.get_conflict(&band("demo"), &id).await.unwrap();
    assert!(conflict.unwrap().resolution.is_some());
    assert_eq!(f.entity("gig", "g1").await.unwrap().version, 4);
}

#[tokio::test]
async fn the_scheduler_prunes_entity_history_past_the_retention() {
    // GIVEN an entry with three versions, a hundred days old
    let f = Fixture::new().await;
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![
            entry(1, "e1", "create", 0, json!({"title": "Blue"})),
            entry(2, "e1", "patch", 1, json!({"title": "Red"})),
            entry(3, "e1", "patch", 2, json!({"title": "Green"})),
        ],
    )
    .await;
    f.h.clock.advance(chrono::TimeDelta::days(100));
    let scheduler = bandsync::scheduler::Scheduler::new(
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.sync_queue.clone(),
        f.h.clock.clone(),
    )
    .with_entities(f.h.store.clone());

    // WHEN it ticks with the default retention (90 days)
    let report = scheduler.tick(&[band("demo")]).await.unwrap();

    // THEN the old versions are gone but the newest, which the entity is, stays
    assert_eq!(report.history_pruned, 2);
    let (ty, id) = (
        EntityTypeName::parse("setlist_entry").unwrap(),
        EntityId::parse("e1").unwrap(),
    );
    let kept =
        f.h.store
            .history(&band("demo"), &ty, &id, 0, 10)
            .await
            .unwrap();
    assert_eq!(kept.iter().map(|h| h.version).collect::<Vec<_>>(), vec![3]);
    assert_eq!(f.entity("setlist_entry", "e1").await.unwrap().version, 3);
}

#[tokio::test]
async fn a_band_s_history_days_overrides_the_deployment_retention() {
    // GIVEN band demo keeping 7 days of history, band rock the deployment's 90
    let f = Fixture::new().await;
    let mut demo_config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
    demo_config.history_days = Some(7);
    f.h.store.put_config(&demo_config).await.unwrap();
    // AND an entry with three versions in each
    let three = |mid0: u64| {
        vec![
            entry(mid0, "e1", "create", 0, json!({"title": "Blue"})),
            entry(mid0 + 1, "e1", "patch", 1, json!({"title": "Red"})),
            entry(mid0 + 2, "e1", "patch", 2, json!({"title": "Green"})),
        ]
    };
    f.results(ALICE, ALICE_PHONE, three(1)).await;
    let rock = f
        .ask(
            EVE,
            json!({"action": "push", "band": "rock", "device": EVE_LAPTOP, "ref": "p",
                   "mutations": three(1)}),
        )
        .await;
    assert_eq!(rock["results"][2]["status"], "applied", "{rock}");
    let scheduler = bandsync::scheduler::Scheduler::new(
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.sync_queue.clone(),
        f.h.clock.clone(),
    )
    .with_registry(f.h.store.clone())
    .with_entities(f.h.store.clone());
    let versions = |b: &'static str| {
        let store = f.h.store.clone();
        async move {
            let (ty, id) = (
                EntityTypeName::parse("setlist_entry").unwrap(),
                EntityId::parse("e1").unwrap(),
            );
            let kept = store.history(&band(b), &ty, &id, 0, 10).await.unwrap();
            kept.iter().map(|h| h.version).collect::<Vec<_>>()
        }
    };

    // WHEN it ticks six days later THEN nothing is old enough anywhere
    f.h.clock.advance(chrono::TimeDelta::days(6));
    let report = scheduler.tick(&[]).await.unwrap();
    assert_eq!(report.history_pruned, 0);
    assert_eq!(
        scheduler
            .history_cutoff(&band("demo"), f.h.now())
            .await
            .unwrap(),
        f.h.now() - chrono::TimeDelta::days(7)
    );
    assert_eq!(
        scheduler
            .history_cutoff(&band("rock"), f.h.now())
            .await
            .unwrap(),
        f.h.now() - chrono::TimeDelta::days(90)
    );

    // WHEN it ticks at day eight THEN demo's old versions are gone, rock's kept
    f.h.clock.advance(chrono::TimeDelta::days(2));
    let report = scheduler.tick(&[]).await.unwrap();
    assert_eq!(report.history_pruned, 2);
    assert_eq!(versions("demo").await, vec![3]);
    assert_eq!(versions("rock").await, vec![1, 2, 3]);

    // WHEN demo goes back to the deployment's retention and rock is past 90 days
    demo_config.history_days = None;
    f.h.store.put_config(&demo_config).await.unwrap();
    f.h.clock.advance(chrono::TimeDelta::days(90));
    let report = scheduler.tick(&[]).await.unwrap();
    // THEN rock's old versions go by the default
    assert_eq!(report.history_pruned, 2);
    assert_eq!(versions("rock").await, vec![3]);
}

#[tokio::test]
async fn a_rejected_mutation_is_parked_and_the_mid_still_advances() {
    // GIVEN a gig whose fee (a `reject` field) alice changed after bob saw version 1
    let f = Fixture::new().await;
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![m(1, "gig", "g1", "create", 0, json!({"fee": 100}))],
    )
    .await;
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![m(2, "gig", "g1", "patch", 1, json!({"fee": 150}))],
    )
    .await;
    // WHEN bob changes the fee from version 1, then the date in the same frame
    let b = f
        .results(
            BOB,
            BOB_TABLET,
            vec![
                m(1, "gig", "g1", "patch", 1, json!({"fee": 120})),
                m(2, "gig", "g1", "patch", 2, json!({"date": "2026-12-24"})),
            ],
        )
        .await;

    // THEN the fee is rejected as a stale base
    assert_eq!(b[0]["status"], "rejected", "{b:?}");
    assert_eq!(b[0]["code"], "stale_base");
    assert!(b[0]["message"].is_string());
    // AND the mutation behind it is not blocked: applied, and as the entity's last
    // verdict of the answer it alone carries the state to rebase on
    assert_eq!(b[1]["status"], "applied", "{b:?}");
    assert!(b[0].get("fields").is_none());
    assert_eq!(b[1]["fields"]["fee"], 150);
    assert_eq!(b[1]["fields"]["date"], "2026-12-24");
    assert_eq!(f.next_mid(BOB_TABLET).await, 3);
    // AND the rejected one is parked as it was pushed
    let parked =
        f.h.store
            .parked(&DeviceId::parse(BOB_TABLET).unwrap(), 10)
            .await
            .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].mid, 1);
    assert_eq!(parked[0].parked.as_ref().unwrap()["fields"]["fee"], 120);
    // AND it made no event
    assert!(f.events().await.iter().all(|e| e.id != "m:bob-tablet:1"));
}

#[tokio::test]
async fn another_members_rsvp_is_rejected_as_not_owner() {
    let f = Fixture::new().await;
    let rsvp =
        |mid, op, base, v: &str| m(mid, "attendance", "r42-alice", op, base, json!({"rsvp": v}));
    f.results(ALICE, ALICE_PHONE, vec![rsvp(1, "create", 0, "yes")])
        .await;
    let b = f
        .results(BOB, BOB_TABLET, vec![rsvp(1, "patch", 1, "no")])
        .await;
    assert_eq!(b[0]["status"], "rejected", "{b:?}");
    assert_eq!(b[0]["code"], "not_owner");
    let stored = f.entity("attendance", "r42-alice").await.unwrap();
    assert_eq!(stored.state.values()["rsvp"], "yes");
}

#[tokio::test]
async fn a_lost_acknowledgement_is_answered_again_and_nothing_applies_twice() {
    // GIVEN alice pushed two mutations and never read the answer
    let f = Fixture::new().await;
    let frame = vec![
        entry(
            1,
            "e1",
            "create",
            0,
            json!({"title": "Blue", "plays": {"$inc": 1}}),
        ),
        entry(2, "e1", "patch", 1, json!({"plays": {"$inc": 1}})),
    ];
    let first = f.results(ALICE, ALICE_PHONE, frame.clone()).await;
    let events_before = f.events().await.len();

    // WHEN she pushes the same mids again
    let again = f.results(ALICE, ALICE_PHONE, frame).await;

    // THEN each is a duplicate carrying the original verdict
    for (orig, dup) in first.iter().zip(&again) {
        assert_eq!(dup["status"], "duplicate", "{dup}");
        assert_eq!(dup["original_status"], orig["status"]);
        assert_eq!(dup["version"], orig["version"]);
        assert_eq!(dup["seq"], orig["seq"], "the seq of the same event");
    }
    // AND nothing applied twice: the counter counted each increment once
    let stored = f.entity("setlist_entry", "e1").await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.state.values()["plays"], 2);
    assert_eq!(f.events().await.len(), events_before, "no event twice");
    assert_eq!(f.next_mid(ALICE_PHONE).await, 3);
    // AND each event was queued for broadcast again (a crash before queueing heals),
    // the same event as stored
    let queued: Vec<bandsync::broadcast::BroadcastMessage> = f.h.broadcast_queue.bodies();
    for (mid, r) in first.iter().enumerate() {
        let id = format!("m:alice-phone:{}", mid + 1);
        let copies: Vec<u64> = queued
            .iter()
            .flat_map(|m| &m.events)
            .filter(|e| e.id == id)
            .map(|e| e.seq)
            .collect();
        assert_eq!(copies.len(), 2, "{id}");
        assert!(copies.iter().all(|s| Some(*s) == r["seq"].as_u64()), "{id}");
    }
}

#[tokio::test]
async fn a_duplicate_answered_long_after_still_has_its_seq() {
    // GIVEN alice pushed a create two hours ago
    let f = Fixture::new().await;
    let frame = vec![entry(1, "e1", "create", 0, json!({"title": "Blue"}))];
    let first = f.results(ALICE, ALICE_PHONE, frame.clone()).await;
    let seq = first[0]["seq"].as_u64().expect("a seq");
    f.h.clock.advance(chrono::TimeDelta::hours(2));
    let queued_before = f.h.broadcast_queue.messages().len();

    // WHEN she pushes it again, past the window in which its event is queued again
    let again = f.results(ALICE, ALICE_PHONE, frame).await;

    // THEN the duplicate has the seq from its receipt, and nothing was queued
    assert_eq!(again[0]["status"], "duplicate", "{again:?}");
    assert_eq!(again[0]["seq"].as_u64(), Some(seq));
    assert_eq!(f.h.broadcast_queue.messages().len(), queued_before);
}

#[tokio::test]
async fn a_gap_is_out_of_order_and_so_is_the_rest_of_the_frame() {
    let f = Fixture::new().await;
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![entry(1, "e1", "create", 0, json!({"title": "A"}))],
    )
    .await;
    // WHEN mid 2 is lost and 3, then 2, come in one frame
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![
                entry(3, "e1", "patch", 1, json!({"title": "C"})),
                entry(2, "e1", "patch", 1, json!({"title": "B"})),
            ],
        )
        .await;
    // THEN both wait for mid 2, and nothing is applied
    for v in &r {
        assert_eq!(v["status"], "out_of_order", "{v}");
        assert_eq!(v["expected_mid"], 2);
        assert!(v.get("version").is_none());
    }
    assert_eq!(f.next_mid(ALICE_PHONE).await, 2);
    assert_eq!(f.entity("setlist_entry", "e1").await.unwrap().version, 1);
}

#[tokio::test]
async fn a_malformed_mutation_refuses_the_whole_frame_naming_it() {
    let f = Fixture::new().await;
    let good = entry(1, "e1", "create", 0, json!({"title": "A"}));
    let long = "x".repeat(20 * 1024);
    #[rustfmt::skip]
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"mid": 2, "type": "setlist_entry", "id": "e2", "op": "create", "base_version": 0}), "invalid_mutation", "mutations[1]"),
        (entry(2, "e2", "upsert", 0, json!({})), "invalid_mutation", "mutations[1]"),
        (entry(2, "e2", "create", 0, json!({"tags": {"$mul": 2}})), "invalid_field_operation", "mutations[1]: fields.tags"),
        (entry(2, "e2", "create", 0, json!({"plays": {"$add": [1]}})), "invalid_field_operation", "mutations[1]: fields.plays"),
        (entry(2, "e2", "create", 0, json!({"tempo": 120})), "unknown_field", "mutations[1]: fields.tempo"),
        (entry(2, "e2", "create", 0, json!({"title": long})), "field_too_large", "mutations[1]: fields.title"),
        (entry(2, "e9", "patch", 1, json!({"title": "B"})), "base_version_from_future", "mutations[1]"),
        (entry(2, "e1", "patch", 3, json!({"title": "B"})), "base_version_from_future", "mutations[1]"),
    ];
    for (bad, code, place) in cases {
        // WHEN a frame has a good mutation, then a bad one
        let reply = f
            .push(ALICE, ALICE_PHONE, vec![good.clone(), bad.clone()])
            .await;
        // THEN it is refused whole with the code, naming the mutation and field
        assert_eq!(reply["type"], "error", "{bad}: {reply}");
        assert_eq!(reply["code"], code, "{bad}: {reply}");
        assert_eq!(reply["ref"], "p");
        let message = reply["message"].as_str().unwrap();
        assert!(message.starts_with(place), "{bad}: {message}");
        // AND nothing changed
        assert_eq!(f.next_mid(ALICE_PHONE).await, 1, "{bad}");
        assert!(f.entity("setlist_entry", "e1").await.is_none(), "{bad}");
    }
    // A base from the future counts the frame's own earlier mutations: this one is fine.
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![good, entry(2, "e1", "patch", 1, json!({"title": "B"}))],
        )
        .await;
    assert_eq!(
        (r[0]["status"].as_str(), r[1]["status"].as_str()),
        (Some("applied"), Some("applied"))
    );
}

#[tokio::test]
async fn a_strict_band_refuses_an_undeclared_type() {
    let f = Fixture::with_band(true).await;
    let reply = f
        .push(
            ALICE,
            ALICE_PHONE,
            vec![m(1, "poster", "p1", "create", 0, json!({"x": 1}))],
        )
        .await;
    assert_eq!(reply["code"], "unknown_entity_type", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("mutations[0]")
    );
    // The declared and built-in types are fine.
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![m(1, "gig", "g1", "create", 0, json!({"date": "x"}))],
        )
        .await;
    assert_eq!(r[0]["status"], "applied");
}

#[tokio::test]
async fn a_push_is_bounded_in_count_and_bytes_but_takes_a_hundred() {
    let f = Fixture::new().await;
    // 100 mutations of about 1 KB each are accepted (over 100 KB in all)
    let note = "n".repeat(900);
    let hundred: Vec<Value> = (1..=100)
        .map(|i| entry(i, &format!("e{i}"), "create", 0, json!({"title": note})))
        .collect();
    let frame_bytes = json!({"action": "push", "band": "demo", "device": ALICE_PHONE,
        "ref": "p", "mutations": hundred})
    .to_string()
    .len();
    assert!(frame_bytes > 100 * 1000, "{frame_bytes}");
    let r = f.results(ALICE, ALICE_PHONE, hundred).await;
    assert_eq!(r.len(), 100);
    assert!(r.iter().all(|v| v["status"] == "applied"));
    // 501 mutations are too many, and so are 140 KB
    let many: Vec<Value> = (101..=601)
        .map(|i| entry(i, "x", "create", 0, json!({})))
        .collect();
    assert_eq!(
        f.push(ALICE, ALICE_PHONE, many).await["code"],
        "push_too_large"
    );
    let big = "b".repeat(10_000);
    let heavy: Vec<Value> = (101..=114)
        .map(|i| entry(i, &format!("h{i}"), "create", 0, json!({"title": big})))
        .collect();
    assert_eq!(
        f.push(ALICE, ALICE_PHONE, heavy).await["code"],
        "push_too_large"
    );
    assert_eq!(f.next_mid(ALICE_PHONE).await, 101);
}

#[tokio::test]
async fn only_the_members_own_registered_device_may_push_to_their_band() {
    let f = Fixture::new().await;
    let one = || vec![entry(1, "e1", "create", 0, json!({"title": "A"}))];
    // another band
    let reply = f
        .ask(
            EVE,
            json!({"action": "push", "band": "demo", "device": EVE_LAPTOP, "mutations": one()}),
        )
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    // another member's device
    assert_eq!(
        f.push(BOB, ALICE_PHONE, one()).await["code"],
        "device_taken"
    );
    // a device never registered
    assert_eq!(
        f.push(ALICE, "never-registered", one()).await["code"],
        "unknown_device"
    );
    assert!(f.entity("setlist_entry", "e1").await.is_none());
    assert!(f.events().await.is_empty());
}

#[tokio::test]
async fn a_device_belongs_to_the_first_member_who_registers_it() {
    let f = Fixture::new().await;
    // bob registering alice's phone is refused and changes nothing
    let reply = f
        .ask(
            BOB,
            json!({"action": "register_device", "device": ALICE_PHONE,
            "platform": "android", "name": "not mine", "ref": 3}),
        )
        .await;
    assert_eq!(
        (reply["code"].as_str(), reply["ref"].as_i64()),
        (Some("device_taken"), Some(3))
    );
    let stored =
        f.h.store
            .get_device(&DeviceId::parse(ALICE_PHONE).unwrap())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.member, UserId::parse("alice").unwrap());
    assert_eq!(stored.name, "mine");
    // alice registering it again updates it, keeping its mid; categories are echoed
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![entry(1, "e1", "create", 0, json!({}))],
    )
    .await;
    let reply = f
        .ask(
            ALICE,
            json!({"action": "register_device", "device": ALICE_PHONE,
            "platform": "ios", "name": "phone", "categories": ["setlists", "setlists", "charts"]}),
        )
        .await;
    assert_eq!(
        reply,
        json!({"type": "device", "device": ALICE_PHONE, "categories": ["setlists", "charts"]})
    );
    assert_eq!(f.next_mid(ALICE_PHONE).await, 2);
    // a bad name is refused
    let reply = f
        .ask(
            ALICE,
            json!({"action": "register_device", "device": "alice-tablet",
            "platform": "web", "name": "  "}),
        )
        .await;
    assert_eq!(reply["code"], "invalid_request");
}

#[tokio::test]
async fn a_device_pushing_too_fast_is_told_when_to_come_back() {
    // GIVEN a handler letting a device push 3 mutations, refilled at 1 a second
    let mut f = Fixture::new().await;
    f.ws.push_service_mut().rate = RateLimit {
        capacity: 3.0,
        per_second: 1.0,
    };
    let frame = |from: u64, n: u64| -> Vec<Value> {
        (from..from + n)
            .map(|i| entry(i, &format!("e{i}"), "create", 0, json!({})))
            .collect()
    };
    assert_eq!(f.results(ALICE, ALICE_PHONE, frame(1, 3)).await.len(), 3);
    // WHEN it pushes two more at once
    let reply = f.push(ALICE, ALICE_PHONE, frame(4, 2)).await;
    // THEN it is rate limited, told to wait 2 s, and nothing applied
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert_eq!(reply["retry_after"], 2);
    assert_eq!(f.next_mid(ALICE_PHONE).await, 4);
    // AND another device is not held back by it
    assert_eq!(
        f.results(BOB, BOB_TABLET, frame(1, 1)).await[0]["status"],
        "applied"
    );
    // AND two seconds later the frame goes through
    f.h.clock.advance(chrono::TimeDelta::seconds(2));
    let r = f.results(ALICE, ALICE_PHONE, frame(4, 2)).await;
    assert!(r.iter().all(|v| v["status"] == "applied"), "{r:?}");
}

#[tokio::test]
async fn the_same_mid_from_two_connections_at_once_is_decided_once() {
    // GIVEN alice's phone on two connections (two handler instances)
    let f = Fixture::new().await;
    f.h.add_connection("alice-2=", "alice", &["demo"]).await;
    let other = f.h.ws_message();
    let frame = json!({"action": "push", "band": "demo", "device": ALICE_PHONE,
        "mutations": [entry(1, "e1", "create", 0, json!({"plays": {"$inc": 1}}))]})
    .to_string();
    // WHEN both push mid 1 at once
    tokio::join!(
        f.ws.handle(ws_message_event(ALICE, &frame)),
        other.handle(ws_message_event("alice-2=", &frame)),
    );
    // THEN one applied it and the other answers it as a duplicate
    let mut statuses: Vec<String> = [ALICE, "alice-2="]
        .iter()
        .map(|c| f.h.pusher.frames(&conn_id(c)).pop().unwrap())
        .map(|r| r["results"][0]["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["applied", "duplicate"]);
    let stored = f.entity("setlist_entry", "e1").await.unwrap();
    assert_eq!(
        (stored.version, stored.state.values()["plays"].as_i64()),
        (1, Some(1))
    );
}

/// `n` fields named `<prefix>0..` of about 15 KB each (under a field's 16 KB).
fn big_fields(prefix: &str, n: usize) -> Value {
    let page = "x".repeat(15_000);
    Value::Object(
        (0..n)
            .map(|i| (format!("{prefix}{i}"), json!(page)))
            .collect(),
    )
}

/// Scrapbook `s1` grown to about 120 KB by alice's phone (mids 1 and 2).
async fn scrapbook_of_120_kb(f: &Fixture) {
    for (mid, op, prefix) in [(1, "create", "a"), (2, "patch", "b")] {
        let grow = m(mid, "scrapbook", "s1", op, mid - 1, big_fields(prefix, 4));
        let r = f.results(ALICE, ALICE_PHONE, vec![grow]).await;
        assert_eq!(r[0]["status"], "applied", "{r:?}");
    }
}

#[tokio::test]
async fn an_entity_past_its_bound_is_rejected_and_parked_and_the_queue_goes_on() {
    // GIVEN a scrapbook (a type the band does not declare: every field lww) grown to
    // about 120 KB in two pushes of 60 KB
    let f = Fixture::new().await;
    let page = |mid, op, base, fields| m(mid, "scrapbook", "s1", op, base, fields);
    for (mid, op, prefix) in [(1, "create", "a"), (2, "patch", "b")] {
        let grow = page(mid, op, mid - 1, big_fields(prefix, 4));
        let r = f.results(ALICE, ALICE_PHONE, vec![grow]).await;
        assert_eq!(r[0]["status"], "applied", "{r:?}");
    }

    // WHEN one more 15 KB field would take it past 128 KB, and a small change follows
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![
                page(3, "patch", 2, big_fields("c", 1)),
                page(4, "patch", 2, json!({"title": "kept small"})),
            ],
        )
        .await;

    // THEN that mutation is rejected as entity_too_large (without the entity's fields),
    // and the one behind it is applied: the queue does not stall
    assert_eq!(r[0]["status"], "rejected", "{:?}", r[0]["message"]);
    assert_eq!(r[0]["code"], "entity_too_large");
    assert!(
        r[0]["message"].as_str().unwrap().contains("131072"),
        "the message names the bound: {}",
        r[0]["message"]
    );
    assert_eq!(r[0]["version"], 2);
    assert!(r[0].get("fields").is_none());
    assert_eq!(r[1]["status"], "applied", "{:?}", r[1]["message"]);
    assert_eq!(f.next_mid(ALICE_PHONE).await, 5);
    let stored = f.entity("scrapbook", "s1").await.unwrap();
    assert_eq!(stored.version, 3);
    assert!(
        stored.state.values().get("c0").is_none(),
        "nothing of it applied"
    );
    // AND it is parked as it was pushed
    let parked =
        f.h.store
            .parked(&DeviceId::parse(ALICE_PHONE).unwrap(), 10)
            .await
            .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].mid, 3);
    assert_eq!(
        parked[0].result.code,
        Some(bandsync::error::ErrorCode::EntityTooLarge)
    );
    // AND a create whose history entry (the entity, the fields as sent and the diff:
    // three copies of 105 KB) would pass its bound is rejected the same way
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![m(5, "scrapbook", "s2", "create", 0, big_fields("a", 7))],
        )
        .await;
    assert_eq!(r[0]["code"], "entity_too_large", "{r:?}");
    assert!(r[0]["message"].as_str().unwrap().contains("history entry"));
    assert!(f.entity("scrapbook", "s2").await.is_none());
}

#[tokio::test]
async fn an_entity_over_its_bound_may_still_shrink_and_be_deleted() {
    use bandsync::entities::mutation::{MutationResult, MutationStatus};
    use bandsync::entities::records::{Commit, Receipt};
    // GIVEN a scrapbook of about 150 KB, over the bound (grown before it was kept, here
    // written straight to the store as a settlement would)
    let f = Fixture::new().await;
    scrapbook_of_120_kb(&f).await;
    let mut entity = f.entity("scrapbook", "s1").await.unwrap();
    let mut history =
        f.h.store
            .history_entry(&band("demo"), &entity.entity_type, &entity.id, 2)
            .await
            .unwrap()
            .unwrap();
    let page = entity.state.fields["a0"].clone();
    for name in ["c0", "c1"] {
        entity.state.fields.insert(name.into(), page.clone());
    }
    entity.version = 3;
    history.version = 3;
    history.entity = entity.clone();
    let settler = DeviceId::parse("the-settler").unwrap();
    f.h.store
        .commit_events(&Commit {
            device: settler.clone(),
            mid: 0,
            receipt: Receipt {
                device: settler,
                mid: 0,
                band: band("demo"),
                member: UserId::parse("alice").unwrap(),
                at: history.at,
                result: MutationResult::bare(0, MutationStatus::Applied),
                parked: None,
            },
            entity: Some(entity),
            expected_version: 2,
            history: Some(history),
            conflicts: vec![],
            event: None,
            more_events: vec![],
        })
        .await
        .unwrap();
    let page = |mid, op, fields| m(mid, "scrapbook", "s1", op, 3, fields);

    // WHEN alice adds to it, then empties two pages
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![
                page(3, "patch", json!({"title": "a little more"})),
                page(4, "patch", json!({"c0": "", "c1": ""})),
            ],
        )
        .await;
    // THEN the growth is refused, the shrinking change is applied though the entity
    // is still over the bound after it
    assert_eq!(r[0]["code"], "entity_too_large", "{r:?}");
    assert_eq!(r[1]["status"], "applied", "{:?}", r[1]["message"]);
    let stored = f.entity("scrapbook", "s1").await.unwrap();
    assert_eq!(stored.version, 4);
    assert_eq!(stored.state.values()["c0"], "");
    // AND a delete of an entity over the bound always passes
    let r = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![m(5, "scrapbook", "s1", "delete", 4, json!({}))],
        )
        .await;
    assert_eq!(r[0]["status"], "applied", "{:?}", r[0]["message"]);
    assert!(f.entity("scrapbook", "s1").await.unwrap().deleted);
}

#[tokio::test]
async fn a_page_of_large_parked_mutations_stays_under_a_lambda_answer() {
    // GIVEN a 120 KB scrapbook and 40 refused changes of 105 KB each (parked as pushed:
    // 4.2 MB in all)
    let f = Fixture::new().await;
    scrapbook_of_120_kb(&f).await;
    for mid in 3..=42 {
        let grow = m(mid, "scrapbook", "s1", "patch", 2, big_fields("c", 7));
        let r = f.results(ALICE, ALICE_PHONE, vec![grow]).await;
        assert_eq!(r[0]["code"], "entity_too_large", "{r:?}");
    }
    let target = format!("/sync/devices/{ALICE_PHONE}/parked?band=demo&limit=50");

    // WHEN alice reads them, 50 to a page
    let (status, first) = http(&f, "GET", &target, "alice", &["demo"]).await;

    // THEN the first page stops under 4 MB and says where to go on
    assert_eq!(status, 200, "{first}");
    assert!(first.to_string().len() <= 4 * 1024 * 1024 + 4096);
    let listed = |page: &Value| -> Vec<u64> {
        page["parked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["mid"].as_u64().unwrap())
            .collect()
    };
    let mids = listed(&first);
    assert!(
        mids.len() < 40 && mids.len() > 30,
        "{} on the page",
        mids.len()
    );
    assert_eq!(first["next"].as_u64(), mids.last().copied());
    // AND the next page lists the rest: every mid once
    let (_, second) = http(
        &f,
        "GET",
        &format!("{target}&before={}", first["next"]),
        "alice",
        &["demo"],
    )
    .await;
    let mut all = mids;
    all.extend(listed(&second));
    assert_eq!(all, (3..=42).rev().collect::<Vec<_>>());
    assert!(second["next"].is_null());
}

#[tokio::test]
async fn a_resent_frame_is_answered_from_its_receipts_even_if_its_type_is_gone() {
    // GIVEN alice's gigs (mids 1 and 2) in a strict band
    let f = Fixture::with_band(true).await;
    let first = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![
                m(1, "gig", "g1", "create", 0, json!({"date": "2026-12-24"})),
                m(2, "gig", "g1", "patch", 1, json!({"date": "2026-12-31"})),
            ],
        )
        .await;
    assert_eq!(first[1]["status"], "applied", "{first:?}");
    // AND the operator removed the gig type since
    let mut config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
    config.entity_types.clear();
    f.h.store.put_config(&config).await.unwrap();

    // WHEN alice sends the frame again (its answer was lost), one mutation now with a
    // field operation that does not exist, and a new mid behind them
    let again = f
        .results(
            ALICE,
            ALICE_PHONE,
            vec![
                m(1, "gig", "g1", "create", 0, json!({"date": "2026-12-24"})),
                m(2, "gig", "g1", "patch", 1, json!({"date": {"$mul": 2}})),
                entry(3, "e1", "create", 0, json!({"title": "Blue"})),
            ],
        )
        .await;

    // THEN the answered mids are duplicates with their original verdicts (and without
    // the entity's fields), and the new one is judged and applied
    for (orig, dup) in first.iter().zip(&again) {
        assert_eq!(dup["status"], "duplicate", "{dup}");
        assert_eq!(dup["original_status"], "applied");
        assert_eq!(dup["version"], orig["version"]);
        assert_eq!(dup["seq"], orig["seq"]);
        assert!(dup.get("fields").is_none(), "{dup}");
    }
    assert!(
        first[1].get("fields").is_some(),
        "the entity's last verdict has it"
    );
    assert_eq!(again[2]["status"], "applied", "{again:?}");
    // AND a new mid of the removed type is still refused, whole
    let reply = f
        .push(
            ALICE,
            ALICE_PHONE,
            vec![
                m(1, "gig", "g1", "create", 0, json!({})),
                m(4, "gig", "g1", "patch", 2, json!({"date": "x"})),
            ],
        )
        .await;
    assert_eq!(reply["code"], "unknown_entity_type", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("mutations[1]")
    );
    assert_eq!(f.next_mid(ALICE_PHONE).await, 4);
}

/// The frames a raw push frame of `conn` is answered with.
async fn answer(f: &Fixture, conn: &str, push: &Value) -> Vec<Value> {
    let before = f.h.pusher.frames(&conn_id(conn)).len();
    f.ws.handle(ws_message_event(conn, &push.to_string())).await;
    f.h.pusher.frames(&conn_id(conn)).split_off(before)
}

/// A push (of `reference`) of one small patch to each of the pages s0..s19, from mid
/// `first` on, on version `base`.
fn patch_each_page(first: u64, base: u64, reference: &str) -> Value {
    let frame: Vec<Value> = (0..20u64)
        .map(|n| {
            m(
                first + n,
                "scrapbook",
                &format!("s{n}"),
                "patch",
                base,
                json!({"n": n}),
            )
        })
        .collect();
    json!({"action": "push", "band": "demo", "device": ALICE_PHONE, "ref": reference,
           "mutations": frame})
}

#[tokio::test]
async fn verdicts_over_a_frame_come_in_several_push_results() {
    // GIVEN twenty 15 KB scrapbook pages, in four pushes
    let f = Fixture::new().await;
    for k in 0..4u64 {
        let creates = (0..5)
            .map(|i| {
                let n = k * 5 + i;
                m(
                    n + 1,
                    "scrapbook",
                    &format!("s{n}"),
                    "create",
                    0,
                    big_fields("p", 1),
                )
            })
            .collect();
        let r = f.results(ALICE, ALICE_PHONE, creates).await;
        assert!(r.iter().all(|r| r["status"] == "applied"), "{r:?}");
    }
    // WHEN alice pushes a small change to each: every verdict could carry its page,
    // about 300 KB of verdicts
    let push = patch_each_page(21, 1, "big");
    let frames = answer(&f, ALICE, &push).await;

    // THEN they come in several push_result frames of the push's ref, each under 128 KB
    // (as API Gateway posts), all but the last saying more follow, every verdict once,
    // in order
    assert!(frames.len() >= 2, "{} frames", frames.len());
    let mut mids = Vec::new();
    let mut with_fields = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame["type"], "push_result");
        assert_eq!(frame["ref"], "big");
        assert!(frame.to_string().len() <= 128 * 1024);
        assert_eq!(
            frame["more"].as_bool(),
            (i + 1 < frames.len()).then_some(true)
        );
        for r in frame["results"].as_array().unwrap() {
            assert_eq!(r["status"], "applied", "{}", r["message"]);
            let mid = r["mid"].as_u64().unwrap();
            if r.get("fields").is_some() {
                assert_eq!(r["fields"]["p0"].as_str().map(str::len), Some(15_000));
                with_fields.push(mid);
            }
            mids.push(mid);
        }
    }
    assert_eq!(mids, (21..=40).collect::<Vec<_>>());
    // AND the entities' fields stay within the answer's 256 KB budget, spent on the
    // newest verdicts: the first ones go without (read the entity)
    assert_eq!(
        with_fields,
        (24..=40).collect::<Vec<_>>(),
        "17 pages of 15 KB fit"
    );

    // AND sent again, the duplicates carry no fields and fit one frame
    let frames = answer(&f, ALICE, &push).await;
    assert_eq!(frames.len(), 1);
    assert!(frames[0].get("more").is_none());
    let results = frames[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "duplicate" && r.get("fields").is_none())
    );

    // AND when the first frame of a split answer cannot be posted, nothing more is
    // posted: the reply is an error naming the first mid not delivered
    let push = patch_each_page(41, 2, "lost");
    let attempts = f.h.pusher.attempts(&conn_id(ALICE));
    f.h.pusher
        .set(&conn_id(ALICE), PushBehaviour::ErrFirst(attempts + 1));
    let frames = answer(&f, ALICE, &push).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "unavailable");
    assert_eq!(frames[0]["ref"], "lost");
    assert!(
        frames[0]["message"].as_str().unwrap().contains("mid 41"),
        "{}",
        frames[0]
    );
    // AND pushing them again is safe: every one answers duplicate
    let frames = answer(&f, ALICE, &push).await;
    let results: Vec<&Value> = frames
        .iter()
        .flat_map(|f| f["results"].as_array().unwrap())
        .collect();
    assert_eq!(results.len(), 20);
    assert!(results.iter().all(|r| r["status"] == "duplicate"));
}

#[tokio::test]
async fn many_patches_to_one_big_entity_answer_with_its_fields_once() {
    // GIVEN a 120 KB scrapbook
    let f = Fixture::new().await;
    scrapbook_of_120_kb(&f).await;
    // WHEN alice pushes 500 small patches to it in one frame
    let frame: Vec<Value> = (3..=502u64)
        .map(|mid| m(mid, "scrapbook", "s1", "patch", mid - 1, json!({"n": mid})))
        .collect();
    let push = json!({"action": "push", "band": "demo", "device": ALICE_PHONE, "ref": "many",
                      "mutations": frame});
    let frames = answer(&f, ALICE, &push).await;

    // THEN the answer is about one entity and the verdicts, not 500 entities (60 MB)
    let bytes: usize = frames.iter().map(|f| f.to_string().len()).sum();
    assert!(frames.len() <= 3, "{} frames", frames.len());
    assert!(bytes < 250 * 1024, "{bytes} bytes");
    // AND only the last verdict carries the entity, as it is after all 500
    let results: Vec<&Value> = frames
        .iter()
        .flat_map(|f| f["results"].as_array().unwrap())
        .collect();
    assert_eq!(results.len(), 500);
    assert!(results.iter().all(|r| r["status"] == "applied"));
    assert!(results[..499].iter().all(|r| r.get("fields").is_none()));
    let last = &results[499]["fields"];
    assert_eq!(last["n"], 502);
    assert_eq!(last["b3"].as_str().map(str::len), Some(15_000));
}

/// Alice creates gig g1 at fee 100 and raises it to 150: it is at version 2, so a
/// change on base 1 is stale.
async fn alice_sets_the_fee_twice(f: &Fixture) {
    f.results(
        ALICE,
        ALICE_PHONE,
        vec![
            m(1, "gig", "g1", "create", 0, json!({"fee": 100})),
            m(2, "gig", "g1", "patch", 1, json!({"fee": 150})),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_duplicate_of_a_rejected_mutation_keeps_the_state_to_rebase_on() {
    // GIVEN bob's fee change on a stale base, rejected with the current state
    let f = Fixture::new().await;
    alice_sets_the_fee_twice(&f).await;
    let stale = vec![m(1, "gig", "g1", "patch", 1, json!({"fee": 120}))];
    let r = f.results(BOB, BOB_TABLET, stale.clone()).await;
    assert_eq!(r[0]["status"], "rejected");
    assert_eq!(r[0]["fields"]["fee"], 150);

    // WHEN bob's tablet sends it again (the answer was lost)
    let r = f.results(BOB, BOB_TABLET, stale).await;

    // THEN the duplicate still carries the state to rebase on
    assert_eq!(r[0]["status"], "duplicate");
    assert_eq!(r[0]["original_status"], "rejected");
    assert_eq!(r[0]["code"], "stale_base");
    assert_eq!(r[0]["fields"]["fee"], 150);
}

#[tokio::test]
async fn a_huge_ref_is_refused_naming_it() {
    let f = Fixture::new().await;
    // WHEN a frame's ref is 2 KB (every reply would echo it)
    for frame in [
        json!({"action": "push", "band": "demo", "device": ALICE_PHONE, "ref": "r".repeat(2048),
               "mutations": [m(1, "gig", "g1", "create", 0, json!({"fee": 1}))]}),
        json!({"action": "subscribe", "channel": "band:demo", "ref": {"k": "r".repeat(2048)}}),
    ] {
        let reply = f.ask(ALICE, frame).await;
        // THEN it is refused as invalid_request naming `ref`, without echoing it
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "invalid_request");
        assert!(
            reply["message"].as_str().unwrap().contains("`ref`"),
            "{reply}"
        );
        assert!(reply.get("ref").is_none());
    }
    // AND nothing was pushed; a 1 KB ref is fine
    assert!(f.entity("gig", "g1").await.is_none());
    let ok = f
        .ask(
            ALICE,
            json!({"action": "subscribe", "channel": "band:demo", "ref": "r".repeat(1000)}),
        )
        .await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
}

/// An HTTP request to the API as `user` (member of `bands`): (status, JSON body).
async fn http(f: &Fixture, method: &str, target: &str, user: &str, bands: &[&str]) -> (i64, Value) {
    let auth = f.h.bearer(user, bands);
    let response =
        f.h.api()
            .handle(http_event(
                method,
                target,
                &[("Authorization", &auth)],
                None,
            ))
            .await;
    let status = response.status();
    let body = if status == 204 {
        Value::Null
    } else {
        response.body_json()
    };
    (status, body)
}

#[tokio::test]
async fn the_devices_member_sees_its_parked_mutations_and_may_dismiss_them() {
    // GIVEN bob's two refused fee changes (stale bases) between applied ones
    let f = Fixture::new().await;
    alice_sets_the_fee_twice(&f).await;
    let b = f
        .results(
            BOB,
            BOB_TABLET,
            vec![
                m(1, "gig", "g1", "patch", 1, json!({"fee": 120})),
                m(2, "gig", "g1", "patch", 2, json!({"date": "2026-12-24"})),
                m(3, "gig", "g1", "patch", 1, json!({"fee": 130})),
            ],
        )
        .await;
    assert_eq!(
        b.iter().map(|r| r["status"].as_str()).collect::<Vec<_>>(),
        [Some("rejected"), Some("applied"), Some("rejected")]
    );
    let target = format!("/sync/devices/{BOB_TABLET}/parked?band=demo");

    // WHEN bob reads his tablet's parked mutations
    let (status, body) = http(&f, "GET", &target, "bob", &["demo"]).await;

    // THEN both are listed, newest first, as pushed, with why and when
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device"], BOB_TABLET);
    let parked = body["parked"].as_array().unwrap();
    assert_eq!(
        parked.iter().map(|p| p["mid"].as_u64()).collect::<Vec<_>>(),
        [Some(3), Some(1)]
    );
    assert_eq!(parked[0]["mutation"]["fields"]["fee"], 130);
    assert_eq!(parked[1]["mutation"]["fields"]["fee"], 120);
    assert_eq!(parked[1]["code"], "stale_base");
    assert!(parked[1]["message"].is_string() && parked[1]["at"].is_string());
    assert!(body["next"].is_null());
    // AND pages go by `before`
    let (_, page) = http(&f, "GET", &format!("{target}&limit=1"), "bob", &["demo"]).await;
    assert_eq!(page["parked"][0]["mid"], 3);
    assert_eq!(page["next"], 3);
    let (_, older) = http(
        &f,
        "GET",
        &format!("{target}&limit=1&before=3"),
        "bob",
        &["demo"],
    )
    .await;
    assert_eq!(older["parked"][0]["mid"], 1);

    // AND alice (a member of the band, not the device's) is refused
    let (status, body) = http(&f, "GET", &target, "alice", &["demo"]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another member")
    );
    // AND so is bob for a band he is not in, and for an unknown device
    let (status, _) = http(&f, "GET", &target.replace("demo", "rock"), "bob", &["demo"]).await;
    assert_eq!(status, 403);
    let (status, _) = http(
        &f,
        "GET",
        "/sync/devices/no-such-device/parked?band=demo",
        "bob",
        &["demo"],
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = http(&f, "GET", &format!("{target}&before=x"), "bob", &["demo"]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );

    // WHEN bob dismisses mid 1, twice (and alice tries to dismiss mid 3)
    let dismiss = |mid: u64| format!("/sync/devices/{BOB_TABLET}/parked/{mid}?band=demo");
    assert_eq!(
        http(&f, "DELETE", &dismiss(1), "bob", &["demo"]).await.0,
        204
    );
    assert_eq!(
        http(&f, "DELETE", &dismiss(1), "bob", &["demo"]).await.0,
        204
    );
    assert_eq!(
        http(&f, "DELETE", &dismiss(3), "alice", &["demo"]).await.0,
        403
    );
    let (status, _) = http(&f, "DELETE", &dismiss(0), "bob", &["demo"]).await;
    assert_eq!(status, 400);

    // THEN only mid 3 is listed, and mid 1 is still answered with its verdict
    let (_, body) = http(&f, "GET", &target, "bob", &["demo"]).await;
    assert_eq!(
        body["parked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["mid"].as_u64())
            .collect::<Vec<_>>(),
        [Some(3)]
    );
    let again = f
        .results(
            BOB,
            BOB_TABLET,
            vec![m(1, "gig", "g1", "patch", 1, json!({"fee": 120}))],
        )
        .await;
    assert_eq!(
        (
            again[0]["status"].as_str(),
            again[0]["original_status"].as_str(),
            again[0]["code"].as_str()
        ),
        (Some("duplicate"), Some("rejected"), Some("stale_base"))
    );
}
