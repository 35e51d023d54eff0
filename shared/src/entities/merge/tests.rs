use super::*;
use crate::entities::policy::TextPolicy;
use crate::entities::replay::replay;
use crate::entities::types::{BandTypes, FieldSpec, builtin_types};
use crate::model::EntityId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::TimeZone;
use serde_json::{Map, json};
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, StateVector, Text, Transact, Update};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn builtin(name: &str) -> EntityType {
    builtin_types()
        .into_iter()
        .find(|t| t.name.as_str() == name)
        .unwrap()
}

/// A mutation of entity `e1` as a client sends it; `ts` in seconds from [`at`]'s origin.
fn mutation(ty: &str, mid: u64, op: &str, base: u64, ts: i64, fields: Value) -> Mutation {
    Mutation::parse(
        &json!({"mid": mid, "type": ty, "id": "e1", "op": op, "base_version": base,
        "fields": fields, "ts": at(ts).to_rfc3339()}),
    )
    .unwrap()
}

/// A member and the device they push from.
type Who<'a> = (&'a str, &'a str);
const A: Who = (ALICE, PHONE_A);
const B: Who = (BOB, PHONE_B);

/// One entity and what a store would keep of it: the engine's verdicts committed.
struct Entity {
    engine: Engine,
    ty: EntityType,
    band: BandId,
    record: Option<EntityRecord>,
    history: Vec<HistoryEntry>,
    conflicts: Vec<ConflictRecord>,
    now: DateTime<Utc>,
}

impl Entity {
    fn new(ty: EntityType) -> Self {
        Self::with_engine(Engine::new(), ty)
    }

    fn with_engine(engine: Engine, ty: EntityType) -> Self {
        Self {
            engine,
            ty,
            band: BandId::parse("the-band").unwrap(),
            record: None,
            history: Vec::new(),
            conflicts: Vec::new(),
            now: at(1000),
        }
    }

    /// The stamp the push service reads from history for a stale base.
    fn base(&self, m: &Mutation) -> Option<Stamp> {
        let cur = self.record.as_ref()?;
        (m.base_version > 0 && m.base_version < cur.version)
            .then(|| self.history[m.base_version as usize - 1].entity.hlc.clone())
    }

    fn create(&mut self, who: Who, mid: u64, ts: i64, fields: Value) -> MutationResult {
        self.push(
            who,
            &mutation(self.ty.name.as_str(), mid, "create", 0, ts, fields),
        )
    }

    fn patch(&mut self, who: Who, mid: u64, base: u64, ts: i64, fields: Value) -> MutationResult {
        self.push(
            who,
            &mutation(self.ty.name.as_str(), mid, "patch", base, ts, fields),
        )
    }

    fn delete(&mut self, who: Who, mid: u64, base: u64, ts: i64) -> MutationResult {
        self.push(
            who,
            &mutation(self.ty.name.as_str(), mid, "delete", base, ts, json!({})),
        )
    }

    fn push(&mut self, (member, device): Who, m: &Mutation) -> MutationResult {
        let member = UserId::parse(member).unwrap();
        let device = DeviceId::parse(device).unwrap();
        let resolving = m
            .resolves
            .as_ref()
            .and_then(|id| self.conflicts.iter().rev().find(|c| &c.id == id))
            .cloned();
        let cx = ApplyContext {
            band: &self.band,
            ty: &self.ty,
            member: &member,
            device: &device,
            now: self.now,
            resolving: resolving.as_ref(),
        };
        let base = self.base(m);
        let verdict = self
            .engine
            .apply(&cx, self.record.as_ref(), base.as_ref(), m);
        self.commit(verdict)
    }

    fn commit(&mut self, verdict: Verdict) -> MutationResult {
        match verdict {
            Verdict::Changed {
                entity,
                history,
                result,
                conflicts,
            } => {
                assert_eq!(history.entity, entity);
                assert_eq!(
                    entity.version,
                    self.record.as_ref().map_or(1, |r| r.version + 1)
                );
                self.record = Some(entity);
                self.history.push(history);
                self.conflicts.extend(conflicts);
                result
            }
            Verdict::Refused { result } => {
                assert_eq!(result.status, MutationStatus::Rejected);
                assert_eq!(result.version, self.record.as_ref().map(|r| r.version));
                result
            }
        }
    }

    fn settle(&mut self, conflict: &ConflictRecord) -> MutationResult {
        let member = UserId::parse("scheduler").unwrap();
        let device = DeviceId::parse("server-settle").unwrap();
        let cx = ApplyContext {
            band: &self.band,
            ty: &self.ty,
            member: &member,
            device: &device,
            now: self.now,
            resolving: None,
        };
        let verdict = self
            .engine
            .settle(&cx, self.record.as_ref().unwrap(), conflict);
        self.commit(verdict)
    }

    fn values(&self) -> Map<String, Value> {
        self.record.as_ref().unwrap().state.values()
    }

    fn version(&self) -> u64 {
        self.record.as_ref().unwrap().version
    }
}

fn loser(field: &str, value: Value, policy: &str) -> Loser {
    Loser {
        field: field.into(),
        value,
        policy: policy.into(),
    }
}

fn rejected(r: &MutationResult, code: ErrorCode) {
    assert_eq!(r.status, MutationStatus::Rejected, "{r:?}");
    assert_eq!(r.code, Some(code), "{r:?}");
}

const ALICE: &str = "alice";
const BOB: &str = "bob";
const PHONE_A: &str = "phone-alice";
const PHONE_B: &str = "phone-bobby";

#[test]
fn a_create_then_a_patch_on_it_apply_and_count_versions() {
    let mut e = Entity::new(builtin("setlist_entry"));
    let r = e.create(
        A,
        1,
        0,
        json!({"title": "Song 2", "position": "V", "tags": ["loud"], "plays": 0, "notes": "intro"}),
    );
    assert_eq!(r.status, MutationStatus::Applied);
    assert_eq!(r.version, Some(1));
    assert_eq!(r.seq, None, "the store gives the seq");
    let r = e.patch(A, 2, 1, 5, json!({"key": "E", "plays": {"$inc": 1}}));
    assert_eq!(r.status, MutationStatus::Applied);
    assert_eq!(r.version, Some(2));
    assert_eq!(
        r.fields.unwrap(),
        json!({"title": "Song 2", "key": "E", "position": "V", "tags": ["loud"], "plays": 1,
            "notes": "intro"})
        .as_object()
        .unwrap()
        .clone()
    );
    let h = &e.history[1];
    assert_eq!(
        h.diff.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
        ["key", "plays"]
    );
    assert_eq!(h.diff[1].before, json!(0));
    assert!(h.decisions.iter().all(|d| d.outcome == "applied"));
    assert_eq!(h.input["plays"], json!({"$inc": 1}));
    let rec = e.record.as_ref().unwrap();
    assert_eq!(rec.state.fields["key"].changed_at, 2);
    assert_eq!(rec.state.fields["title"].changed_at, 1);
    assert_eq!(rec.created_by.as_str(), ALICE);
}

#[test]
fn a_patch_or_delete_of_nothing_and_a_base_from_the_future_are_refused() {
    let mut e = Entity::new(builtin("setlist_entry"));
    rejected(
        &e.patch(A, 1, 1, 0, json!({"key": "E"})),
        ErrorCode::NotFound,
    );
    rejected(&e.delete(A, 2, 1, 0), ErrorCode::NotFound);
    e.create(A, 3, 0, json!({"key": "D"}));
    let r = e.patch(A, 4, 7, 0, json!({"key": "E"}));
    rejected(&r, ErrorCode::BaseVersionFromFuture);
    assert_eq!(
        r.fields.unwrap()["key"],
        json!("D"),
        "the current fields to rebase on"
    );
    assert_eq!(e.version(), 1);
}

#[test]
fn lww_the_later_stamp_wins_whatever_order_they_arrive_in() {
    for bob_first in [false, true] {
        let mut e = Entity::new(builtin("setlist_entry"));
        e.create(A, 1, 0, json!({"title": "Intro"}));
        let alice = mutation(
            "setlist_entry",
            2,
            "patch",
            1,
            10,
            json!({"title": "Alice's"}),
        );
        let bob = mutation(
            "setlist_entry",
            1,
            "patch",
            1,
            20,
            json!({"title": "Bob's"}),
        );
        let (first, second) = if bob_first {
            (e.push(B, &bob), e.push(A, &alice))
        } else {
            (e.push(A, &alice), e.push(B, &bob))
        };
        assert_eq!(first.status, MutationStatus::Applied);
        assert_eq!(second.status, MutationStatus::Merged);
        assert_eq!(e.values()["title"], json!("Bob's"), "bob_first={bob_first}");
        // Alice's value loses either way: overwritten, or refused.
        assert_eq!(second.losers, vec![loser("title", json!("Alice's"), "lww")]);
        let outcome = &e.history[2].decisions[0].outcome;
        assert_eq!(outcome, if bob_first { "lost" } else { "won" });
    }
}

#[test]
fn a_change_made_on_top_of_another_wins_even_with_a_slow_clock() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 100, json!({"title": "A"}));
    // Bob's phone is an hour behind, but he saw version 1.
    let r = e.patch(B, 1, 1, -3600, json!({"title": "B"}));
    assert_eq!(r.status, MutationStatus::Applied);
    assert_eq!(e.values()["title"], json!("B"));
    let h = &e.history[1];
    assert_eq!((h.stamp.ms, h.stamp.counter), (e.history[0].stamp.ms, 1));
}

#[test]
fn a_clock_a_year_ahead_does_not_win_for_a_year() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 0, json!({"title": "A"}));
    // Alice's phone thinks it is next year.
    e.patch(A, 2, 1, 365 * 86400, json!({"title": "future"}));
    // Bob, a minute later by the server, on version 1 (concurrent).
    e.now = at(1060);
    let r = e.patch(B, 1, 1, 1060, json!({"title": "now"}));
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(e.values()["title"], json!("now"));
}

#[test]
fn set_concurrent_adds_stay_and_the_later_of_add_and_remove_decides() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 0, json!({"tags": ["loud"]}));
    let r = e.patch(A, 2, 1, 10, json!({"tags": {"$add": ["opener"]}}));
    assert_eq!(r.status, MutationStatus::Applied);
    let r = e.patch(B, 1, 1, 5, json!({"tags": {"$add": ["ballad"]}}));
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(e.values()["tags"], json!(["ballad", "loud", "opener"]));
    // Bob removes "loud" at 20 (on v3); Alice, concurrently on v3, re-adds it at 15: the remove is later.
    e.patch(B, 2, 3, 20, json!({"tags": {"$remove": ["loud"]}}));
    e.patch(A, 3, 3, 15, json!({"tags": {"$add": ["loud"]}}));
    assert_eq!(e.values()["tags"], json!(["ballad", "opener"]));
    // A plain array on a patch replaces the set; a concurrent later add survives it.
    e.patch(A, 4, 5, 30, json!({"tags": ["encore"]}));
    e.patch(B, 3, 5, 40, json!({"tags": {"$add": ["late"]}}));
    assert_eq!(e.values()["tags"], json!(["encore", "late"]));
    // Elements are JSON values, one element whatever the order of an object's keys.
    e.patch(A, 5, 7, 50, json!({"tags": {"$add": [{"a": 1, "b": 2}]}}));
    e.patch(
        A,
        6,
        8,
        51,
        json!({"tags": {"$remove": [{"b": 2, "a": 1}]}}),
    );
    assert_eq!(e.values()["tags"], json!(["encore", "late"]));
}

#[test]
fn counter_increments_add_up_and_a_redelivered_mid_adds_nothing() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 0, json!({"plays": 2}));
    let inc = mutation(
        "setlist_entry",
        2,
        "patch",
        1,
        10,
        json!({"plays": {"$inc": 3}}),
    );
    e.push(A, &inc);
    let r = e.patch(B, 1, 1, 5, json!({"plays": {"$inc": -1}}));
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(e.values()["plays"], json!(4));
    // The same (device, mid) again (a lost acknowledgement the receipts missed).
    e.push(A, &inc);
    assert_eq!(e.values()["plays"], json!(4));
    let r = e.patch(A, 3, 4, 20, json!({"plays": 9}));
    rejected(&r, ErrorCode::InvalidFieldOperation);
    assert!(r.message.unwrap().contains("$inc"));
}

/// A client's Yjs document for one text field.
struct Client {
    doc: yrs::Doc,
    sent: StateVector,
}

impl Client {
    fn new(id: u64, state: Option<&str>) -> Self {
        let doc = yrs::Doc::with_client_id(id);
        doc.get_or_insert_text(policy::TEXT_ROOT);
        if let Some(s) = state {
            let mut txn = doc.transact_mut();
            txn.apply_update(Update::decode_v1(&BASE64.decode(s).unwrap()).unwrap())
                .unwrap();
        }
        let sent = doc.transact().state_vector();
        Self { doc, sent }
    }

    /// Insert `s` at `at` (clamped to the end) and give the update since the last one.
    fn insert(&mut self, at: u32, s: &str) -> String {
        let text = self.doc.get_or_insert_text(policy::TEXT_ROOT);
        let mut txn = self.doc.transact_mut();
        let at = at.min(text.len(&txn));
        text.insert(&mut txn, at, s);
        let update = txn.encode_diff_v1(&self.sent);
        self.sent = txn.state_vector();
        BASE64.encode(update)
    }
}

fn text_state(e: &Entity, field: &str) -> String {
    match &e.record.as_ref().unwrap().state.fields[field].state {
        FieldState::Text { state, .. } => state.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_updates_merge_and_the_initial_text_is_a_deterministic_insert() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 0, json!({"notes": "verse"}));
    assert_eq!(e.values()["notes"], json!("verse"));
    let base = text_state(&e, "notes");
    let mut alice = Client::new(11, Some(&base));
    let mut bob = Client::new(22, Some(&base));
    let a = alice.insert(0, "soft ");
    let b = bob.insert(99, " loud");
    e.patch(A, 2, 1, 10, json!({"notes": {"$text": a}}));
    let r = e.patch(B, 1, 1, 5, json!({"notes": {"$text": b}}));
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(e.values()["notes"], json!("soft verse loud"));
    // The stored state is a Yjs update a new client starts from.
    let fresh = Client::new(33, Some(&text_state(&e, "notes")));
    let txt = fresh.doc.get_or_insert_text(policy::TEXT_ROOT);
    assert_eq!(txt.get_string(&fresh.doc.transact()), "soft verse loud");
    // The same create makes the same document, byte for byte.
    let mut again = Entity::new(builtin("setlist_entry"));
    again.create(A, 1, 0, json!({"notes": "verse"}));
    assert_eq!(text_state(&again, "notes"), base);
    assert_eq!(
        TextPolicy::client_id(&DeviceId::parse(PHONE_A).unwrap(), 1),
        TextPolicy::client_id(&DeviceId::parse(PHONE_A).unwrap(), 1)
    );
    assert_ne!(
        TextPolicy::client_id(&DeviceId::parse(PHONE_A).unwrap(), 1),
        TextPolicy::client_id(&DeviceId::parse(PHONE_A).unwrap(), 2)
    );
}

#[test]
fn text_refuses_what_is_not_a_yjs_update_and_a_plain_string_on_patch() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 0, json!({"notes": "x"}));
    for (fields, want) in [
        (json!({"notes": {"$text": "not base64!"}}), "not base64"),
        (
            json!({"notes": {"$text": BASE64.encode([0xff, 0xff, 0xff])}}),
            "does not decode",
        ),
        (json!({"notes": "plain"}), "plain string on create only"),
    ] {
        let r = e.patch(A, 2, 1, 1, fields);
        rejected(&r, ErrorCode::InvalidFieldOperation);
        let msg = r.message.unwrap();
        assert!(
            msg.contains(want) && msg.starts_with("fields.notes"),
            "{msg}"
        );
    }
    assert_eq!(e.version(), 1);
}

fn with_field(name: &str, field: &str, spec: FieldSpec) -> EntityType {
    EntityType::new(
        EntityTypeName::parse(name).unwrap(),
        [("title", FieldSpec::new(Policy::Lww))],
    )
    .with_field(field, spec)
}

trait WithField {
    fn with_field(self, field: &str, spec: FieldSpec) -> Self;
}

impl WithField for EntityType {
    fn with_field(mut self, field: &str, spec: FieldSpec) -> Self {
        self.fields.insert(field.to_owned(), spec);
        self
    }
}

#[test]
fn reject_refuses_a_change_on_a_stale_base_with_the_current_fields() {
    let mut e = Entity::new(with_field("gig", "fee", FieldSpec::new(Policy::Reject)));
    e.create(A, 1, 0, json!({"fee": 100, "title": "Pub"}));
    let r = e.patch(A, 2, 1, 10, json!({"fee": 150}));
    assert_eq!(r.status, MutationStatus::Applied);
    // Bob, still on version 1, changes the fee and the title: refused whole.
    let r = e.patch(B, 1, 1, 20, json!({"fee": 120, "title": "Bar"}));
    rejected(&r, ErrorCode::StaleBase);
    assert_eq!(r.fields.unwrap()["fee"], json!(150));
    assert_eq!(e.values()["title"], json!("Pub"));
    // A stale base that did not touch the reject field merges.
    let r = e.patch(B, 2, 1, 20, json!({"title": "Bar"}));
    assert_eq!(
        r.status,
        MutationStatus::Applied,
        "title did not change since version 1"
    );
}

#[test]
fn owner_fields_belong_to_the_member_who_created_the_entity() {
    let mut e = Entity::new(builtin("attendance"));
    e.create(A, 1, 0, json!({"rsvp": "yes"}));
    let r = e.patch(B, 1, 1, 5, json!({"rsvp": "no"}));
    rejected(&r, ErrorCode::NotOwner);
    assert!(r.message.unwrap().contains(ALICE));
    let r = e.patch((ALICE, "tablet-alice"), 1, 1, 5, json!({"rsvp": "maybe"}));
    assert_eq!(r.status, MutationStatus::Applied);
    assert_eq!(e.values()["rsvp"], json!("maybe"));
    // Bob creating the same RSVP again merges with it, and his owner fields are refused.
    let r = e.create(B, 2, 9, json!({"rsvp": "no"}));
    rejected(&r, ErrorCode::NotOwner);
}

#[test]
fn two_members_creating_the_same_entity_merge_field_by_field() {
    let mut e = Entity::new(builtin("song_status"));
    e.create(A, 1, 10, json!({"status": "learning", "notes": "a"}));
    let r = e.create(
        B,
        1,
        5,
        json!({"status": "new", "ready": true, "notes": "b"}),
    );
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(r.version, Some(2));
    let v = e.values();
    assert_eq!(v["status"], json!("learning"), "Alice's is later");
    assert_eq!(v["ready"], json!(true));
    let notes = v["notes"].as_str().unwrap().to_owned();
    assert!(
        notes == "ab" || notes == "ba",
        "both initial texts kept: {notes}"
    );
    assert_eq!(e.record.as_ref().unwrap().created_by.as_str(), ALICE);
}

#[test]
fn delete_wins_deletes_over_a_racing_update_and_refuses_updates_based_before_it() {
    let mut e = Entity::new(builtin("setlist_entry"));
    e.create(A, 1, 0, json!({"title": "A"}));
    e.patch(B, 1, 1, 5, json!({"title": "B"}));
    let r = e.delete(A, 2, 1, 6);
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(r.losers, vec![loser("title", json!("B"), "delete_wins")]);
    let rec = e.record.clone().unwrap();
    assert!(rec.deleted);
    assert_eq!(rec.version, 3);
    assert_eq!(
        rec.state.values()["title"],
        json!("B"),
        "a deleted entity keeps its record"
    );
    let r = e.patch(B, 2, 2, 7, json!({"title": "C"}));
    rejected(&r, ErrorCode::NotFound);
    assert!(r.message.unwrap().contains("delete_wins"));
    let r = e.patch(B, 3, 3, 7, json!({"title": "C"}));
    rejected(&r, ErrorCode::NotFound);
    rejected(&e.delete(B, 4, 3, 7), ErrorCode::NotFound);
}

#[test]
fn update_wins_refuses_a_racing_delete_and_brings_the_entity_back() {
    let mut e = Entity::new(builtin("song_status"));
    e.create(A, 1, 0, json!({"status": "new"}));
    e.patch(B, 1, 1, 5, json!({"ready": true}));
    let r = e.delete(A, 2, 1, 6);
    rejected(&r, ErrorCode::StaleBase);
    assert!(r.message.unwrap().contains("ready"));
    // A delete on the current version applies; an update based before it brings it back.
    let r = e.delete(A, 3, 2, 7);
    assert_eq!(r.status, MutationStatus::Applied);
    assert!(e.record.as_ref().unwrap().deleted);
    let r = e.patch(B, 2, 2, 8, json!({"status": "ready"}));
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(r.losers[0].field, ENTITY_FIELD);
    let rec = e.record.as_ref().unwrap();
    assert!(!rec.deleted);
    assert_eq!(rec.state.values()["status"], json!("ready"));
    // A patch made after seeing the delete is not found.
    e.delete(A, 4, 4, 9);
    rejected(
        &e.patch(B, 3, 5, 10, json!({"status": "x"})),
        ErrorCode::NotFound,
    );
}

#[test]
fn a_devices_own_queued_changes_are_not_concurrent_with_each_other() {
    // Offline, Alice's phone queues two changes of the same field on version 1.
    let mut e = Entity::new(with_field("gig", "fee", FieldSpec::new(Policy::Reject)));
    e.create(A, 1, 0, json!({"fee": 100}));
    assert_eq!(
        e.patch(A, 2, 1, 10, json!({"fee": 150})).status,
        MutationStatus::Applied
    );
    let r = e.patch(A, 3, 1, 11, json!({"fee": 200}));
    assert_eq!(r.status, MutationStatus::Applied, "{r:?}");
    assert_eq!(e.values()["fee"], json!(200));
    // Another device on the same base still races them.
    rejected(
        &e.patch(B, 1, 1, 12, json!({"fee": 90})),
        ErrorCode::StaleBase,
    );
    // An earlier mid of the same device (redelivered under a new mid it is not) does
    // not count as seen: only earlier mids do.
    let r = e.patch(A, 1, 1, 13, json!({"fee": 80}));
    rejected(&r, ErrorCode::StaleBase);

    // ask: no conflict with yourself.
    let mut e = Entity::new(ask_type());
    e.create(A, 1, 0, json!({"venue": "Pub"}));
    e.patch(A, 2, 1, 10, json!({"venue": "Bar"}));
    let r = e.patch(A, 3, 1, 11, json!({"venue": "Club"}));
    assert_eq!(r.status, MutationStatus::Applied, "{r:?}");
    assert!(e.conflicts.is_empty());
    assert_eq!(
        e.patch(B, 1, 1, 12, json!({"venue": "Hall"})).status,
        MutationStatus::Conflict
    );

    // update_wins: mark ready, then delete, both queued on version 1.
    let mut e = Entity::new(builtin("song_status"));
    e.create(A, 1, 0, json!({"status": "new"}));
    e.patch(A, 2, 1, 10, json!({"ready": true}));
    let r = e.delete(A, 3, 1, 11);
    assert_eq!(r.status, MutationStatus::Applied, "{r:?}");
    assert!(e.record.as_ref().unwrap().deleted);
    // A later queued patch of the deleting device saw its delete.
    rejected(
        &e.patch(A, 4, 1, 12, json!({"status": "x"})),
        ErrorCode::NotFound,
    );
}

#[test]
fn only_the_owner_deletes_an_owned_entity_and_a_create_after_a_delete_brings_it_back() {
    let mut e = Entity::new(builtin("attendance"));
    e.create(A, 1, 0, json!({"rsvp": "yes"}));
    let r = e.delete(B, 1, 1, 5);
    rejected(&r, ErrorCode::NotOwner);
    assert!(!e.record.as_ref().unwrap().deleted);
    assert_eq!(
        e.delete((ALICE, "tablet-alice"), 1, 1, 6).status,
        MutationStatus::Applied
    );
    assert_eq!(e.version(), 2);
    // Bob's create, not knowing of the delete (delete_wins), stays refused...
    rejected(
        &e.create(B, 2, 7, json!({"rsvp": "no"})),
        ErrorCode::NotFound,
    );
    // ...but the deleting device creating it again is a resurrection: version goes on.
    let r = e.create((ALICE, "tablet-alice"), 2, 8, json!({"rsvp": "maybe"}));
    assert_eq!(r.status, MutationStatus::Applied, "{r:?}");
    let rec = e.record.clone().unwrap();
    assert!(!rec.deleted);
    assert_eq!(rec.version, 3);
    assert_eq!(rec.state.deleted_by, None);
    assert_eq!(e.values()["rsvp"], json!("maybe"));
    // A member who saw the delete (based on it) creates it as theirs.
    e.delete((ALICE, "tablet-alice"), 3, 3, 9);
    let m = Mutation {
        base_version: 4,
        ..mutation("attendance", 3, "create", 0, 10, json!({"rsvp": "no"}))
    };
    let r = e.push(B, &m);
    assert_eq!(r.status, MutationStatus::Applied, "{r:?}");
    assert_eq!(e.record.as_ref().unwrap().created_by.as_str(), BOB);
    assert_eq!(e.version(), 5);
    assert_eq!(e.values(), Map::from_iter([("rsvp".into(), json!("no"))]));
    // History replays to the same record, resurrections and all.
    let rebuilt = replay(&e.engine, &e.ty, &e.history).unwrap();
    assert_eq!(rebuilt.as_ref(), e.record.as_ref());
}

fn ask_type() -> EntityType {
    with_field("gig", "venue", FieldSpec::ask(Policy::Lww, 3600))
}

#[test]
fn ask_opens_a_conflict_that_a_member_resolves() {
    let mut e = Entity::new(ask_type());
    e.create(A, 1, 0, json!({"venue": "Pub"}));
    e.patch(A, 2, 1, 10, json!({"venue": "Bar"}));
    let r = e.patch(B, 1, 1, 20, json!({"venue": "Club", "title": "Gig"}));
    assert_eq!(r.status, MutationStatus::Conflict);
    let id = r.conflict.clone().unwrap();
    assert_eq!(
        id,
        conflict_id(
            &e.band,
            &e.ty.name,
            &EntityId::parse("e1").unwrap(),
            "venue",
            3
        )
    );
    assert!(id.as_str().starts_with("cf-"));
    assert_eq!(
        e.values()["venue"],
        json!("Bar"),
        "the entity keeps its value"
    );
    assert_eq!(e.values()["title"], json!("Gig"), "other fields apply");
    let c = e.conflicts[0].clone();
    assert_eq!(
        c.candidates
            .iter()
            .map(|c| c.value.clone())
            .collect::<Vec<_>>(),
        [json!("Bar"), json!("Club")]
    );
    assert_eq!(c.candidates[0].member.as_str(), ALICE);
    assert_eq!(c.candidates[1].member.as_str(), BOB);
    assert_eq!(c.deadline, e.now + TimeDelta::seconds(3600));
    // The same concurrent value opens nothing.
    let r = e.patch(B, 2, 1, 20, json!({"venue": "Bar"}));
    assert_eq!(r.status, MutationStatus::Merged);
    // Resolving names the conflict and sets its field.
    let mut resolve = mutation("gig", 3, "patch", 4, 30, json!({"venue": "Club"}));
    resolve.resolves = Some(id.clone());
    let r = e.push(B, &resolve);
    assert_eq!(r.status, MutationStatus::Applied);
    assert_eq!(e.values()["venue"], json!("Club"));
    let settled = e.conflicts.last().unwrap();
    assert_eq!(settled.id, id);
    let res = settled.resolution.as_ref().unwrap();
    assert_eq!(
        (res.value.clone(), res.how.as_str()),
        (json!("Club"), "member")
    );
    assert_eq!(e.history.last().unwrap().decisions[0].outcome, "resolved");
    // A second resolution finds it closed; an unknown one is not open either.
    let mut again = mutation("gig", 4, "patch", 5, 31, json!({"venue": "Pub"}));
    again.resolves = Some(id);
    rejected(&e.push(B, &again), ErrorCode::ConflictNotOpen);
    again.resolves = Some(ConflictId::parse("cf-nope").unwrap());
    rejected(&e.push(B, &again), ErrorCode::ConflictNotOpen);
}

#[test]
fn an_ask_conflict_past_its_deadline_is_settled_by_the_fallback() {
    let mut e = Entity::new(ask_type());
    e.create(A, 1, 0, json!({"venue": "Pub"}));
    e.patch(A, 2, 1, 10, json!({"venue": "Bar"}));
    e.patch(B, 1, 1, 20, json!({"venue": "Club"}));
    let conflict = e.conflicts[0].clone();
    e.now = conflict.deadline;
    let r = e.settle(&conflict);
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(e.values()["venue"], json!("Club"), "lww: Bob's is later");
    assert_eq!(r.losers, vec![loser("venue", json!("Bar"), "lww")]);
    let settled = e.conflicts.last().unwrap().clone();
    let res = settled.resolution.as_ref().unwrap();
    assert_eq!((res.how.as_str(), res.by.clone()), ("lww", None));
    let r = e.settle(&settled);
    rejected(&r, ErrorCode::ConflictNotOpen);
    // The earlier challenger loses to the kept value.
    let mut e = Entity::new(ask_type());
    e.create(A, 1, 0, json!({"venue": "Pub"}));
    e.patch(A, 2, 1, 30, json!({"venue": "Bar"}));
    e.patch(B, 1, 1, 20, json!({"venue": "Club"}));
    let conflict = e.conflicts[0].clone();
    e.settle(&conflict);
    assert_eq!(e.values()["venue"], json!("Bar"));
}

#[test]
fn what_the_checks_refuse_before_anything_applies() {
    let engine = Engine::new();
    let ty = builtin("setlist_entry");
    let small = EntityType {
        max_field_bytes: 16,
        ..builtin("setlist_entry")
    };
    let cases: Vec<(&EntityType, Mutation, ErrorCode, &str)> = vec![
        (
            &ty,
            mutation("setlist_entry", 1, "patch", 1, 0, json!({"colour": "red"})),
            ErrorCode::UnknownField,
            "fields.colour",
        ),
        (
            &ty,
            mutation(
                "setlist_entry",
                1,
                "patch",
                1,
                0,
                json!({"title": {"$inc": 1}}),
            ),
            ErrorCode::InvalidFieldOperation,
            "fields.title",
        ),
        (
            &ty,
            mutation("setlist_entry", 1, "patch", 1, 0, json!({"tags": "x"})),
            ErrorCode::InvalidFieldOperation,
            "$add",
        ),
        (
            &ty,
            mutation(
                "setlist_entry",
                1,
                "patch",
                1,
                0,
                json!({"plays": {"$add": [1]}}),
            ),
            ErrorCode::InvalidFieldOperation,
            "$inc",
        ),
        (
            &ty,
            mutation("setlist_entry", 1, "delete", 1, 0, json!({"title": "x"})),
            ErrorCode::InvalidMutation,
            "no fields",
        ),
        (
            &ty,
            mutation("setlist_entry", 1, "patch", 1, 0, json!({})),
            ErrorCode::InvalidMutation,
            "at least one",
        ),
        (
            &ty,
            mutation("song_status", 1, "patch", 1, 0, json!({"status": "x"})),
            ErrorCode::InvalidMutation,
            "checked as",
        ),
        (
            &small,
            mutation(
                "setlist_entry",
                1,
                "patch",
                1,
                0,
                json!({"title": "a title longer than sixteen"}),
            ),
            ErrorCode::FieldTooLarge,
            "16",
        ),
        (
            &small,
            mutation(
                "setlist_entry",
                1,
                "patch",
                1,
                0,
                json!({"notes": {"$text": BASE64.encode([0u8; 40])}}),
            ),
            ErrorCode::FieldTooLarge,
            "fields.notes",
        ),
    ];
    for (ty, m, code, want) in cases {
        let e = engine.check(ty, &m).unwrap_err();
        assert_eq!(e.code, code, "{m:?}: {e}");
        assert!(e.message.contains(want), "{want}: {e}");
    }
    let mut create_resolving = mutation("setlist_entry", 1, "create", 0, 0, json!({}));
    create_resolving.resolves = Some(ConflictId::parse("cf-1").unwrap());
    assert_eq!(
        engine.check(&ty, &create_resolving).unwrap_err().code,
        ErrorCode::InvalidMutation
    );
    engine
        .check(
            &ty,
            &mutation(
                "setlist_entry",
                1,
                "create",
                0,
                0,
                json!({"title": "ok", "plays": 1}),
            ),
        )
        .unwrap();
}

#[test]
fn a_field_that_would_grow_past_its_limit_is_refused() {
    let ty = EntityType {
        max_field_bytes: 24,
        ..builtin("setlist_entry")
    };
    let mut e = Entity::new(ty);
    e.create(A, 1, 0, json!({"tags": ["aaaaaaaa"]}));
    e.patch(A, 2, 1, 1, json!({"tags": {"$add": ["bbbbbbbb"]}}));
    let r = e.patch(A, 3, 2, 2, json!({"tags": {"$add": ["cccccccc"]}}));
    rejected(&r, ErrorCode::FieldTooLarge);
    assert_eq!(e.values()["tags"], json!(["aaaaaaaa", "bbbbbbbb"]));
}

/// A custom policy: the larger number wins.
struct Max;

impl FieldResolver for Max {
    fn name(&self) -> &str {
        "max"
    }
    fn check(&self, field: &str, input: &FieldInput, _: Op) -> Result<(), MutationError> {
        match input {
            FieldInput::Set(v) if v.is_number() => Ok(()),
            _ => Err(MutationError::new(
                ErrorCode::InvalidFieldOperation,
                format!("{field} takes a number"),
            )),
        }
    }
    fn merge(
        &self,
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        input: &FieldInput,
    ) -> Result<FieldMerge, MutationError> {
        let FieldInput::Set(new) = input else {
            unreachable!("checked")
        };
        let kept = current.map(|c| c.state.value()).and_then(|v| v.as_f64());
        let wins = kept.is_none_or(|k| new.as_f64().unwrap_or(f64::MIN) > k);
        Ok(FieldMerge {
            state: if wins {
                FieldState::Register {
                    value: new.clone(),
                    stamp: cx.stamp.clone(),
                    by: Some(cx.member.clone()),
                }
            } else {
                current.unwrap().state.clone()
            },
            outcome: if !cx.concurrent {
                FieldOutcome::Applied
            } else if wins {
                FieldOutcome::Won
            } else {
                FieldOutcome::Lost
            },
            loser: None,
        })
    }
}

/// A validator: a gig's title is never empty.
struct TitleNotEmpty;

impl TypeValidator for TitleNotEmpty {
    fn validate(
        &self,
        _: Option<&EntityRecord>,
        m: &Mutation,
        _: &UserId,
    ) -> Result<(), MutationError> {
        match m.fields.get("title") {
            Some(FieldInput::Set(Value::String(s))) if s.trim().is_empty() => Err(
                MutationError::new(ErrorCode::InvalidMutation, "a gig needs a title"),
            ),
            _ => Ok(()),
        }
    }
}

#[test]
fn an_application_registers_its_own_resolver_and_validator() {
    let gig = with_field(
        "gig",
        "high_score",
        FieldSpec::new(Policy::Custom("max".into())),
    );
    let plain = Engine::new();
    let e = plain.validate_type(&gig).unwrap_err();
    assert!(e.message.contains("max"), "{e}");
    let engine = Engine::new()
        .with_resolver(Arc::new(Max))
        .with_validator(gig.name.clone(), Arc::new(TitleNotEmpty));
    engine.validate_type(&gig).unwrap();
    let mut e = Entity::with_engine(engine, gig);
    e.create(A, 1, 0, json!({"title": "Pub", "high_score": 1}));
    e.patch(A, 2, 1, 10, json!({"high_score": 3}));
    // Bob's concurrent score is later but lower: the larger one wins, not the later.
    let r = e.patch(B, 1, 1, 20, json!({"high_score": 2}));
    assert_eq!(r.status, MutationStatus::Merged);
    assert_eq!(e.values()["high_score"], json!(3));
    assert_eq!(e.history.last().unwrap().decisions[0].outcome, "lost");
    assert_eq!(e.history.last().unwrap().decisions[0].policy, "max");
    rejected(
        &e.patch(B, 2, 3, 40, json!({"high_score": "lots"})),
        ErrorCode::InvalidFieldOperation,
    );
    let r = e.patch(B, 3, 3, 40, json!({"title": " "}));
    rejected(&r, ErrorCode::InvalidMutation);
    assert_eq!(r.message.as_deref(), Some("a gig needs a title"));
    // Without the resolver, the engine refuses the mutation instead of guessing.
    let mut unknown = Entity::new(with_field(
        "gig",
        "high_score",
        FieldSpec::new(Policy::Custom("max".into())),
    ));
    rejected(
        &unknown.create(A, 1, 0, json!({"high_score": 1})),
        ErrorCode::InvalidMutation,
    );
}

#[test]
fn an_undeclared_type_of_a_non_strict_band_is_all_lww() {
    let types = BandTypes::new(vec![], false);
    let ty = types
        .get(&EntityTypeName::parse("poll").unwrap())
        .unwrap()
        .into_owned();
    let mut e = Entity::new(ty);
    e.create(A, 1, 0, json!({"question": "Encore?", "votes": {"a": 1}}));
    e.patch(B, 1, 1, 5, json!({"question": "Two encores?"}));
    assert_eq!(e.values()["question"], json!("Two encores?"));
    assert_eq!(e.values()["votes"], json!({"a": 1}));
}

/// A life of an entity with every kind of verdict, for replay.
fn eventful() -> Entity {
    let ty = builtin("setlist_entry").with_field("venue", FieldSpec::ask(Policy::Lww, 60));
    let mut e = Entity::new(ty);
    let t = "setlist_entry";
    e.create(
        A,
        1,
        0,
        json!({"title": "A", "tags": ["x"], "plays": 1, "notes": "n", "venue": "Pub"}),
    );
    let base = text_state(&e, "notes");
    e.patch(
        A,
        2,
        1,
        10,
        json!({"title": "B", "tags": {"$add": ["y"]}, "venue": "Bar"}),
    );
    let mut bob = Client::new(7, Some(&base));
    let upd = bob.insert(0, ">");
    e.patch(B, 1, 1, 5, json!({"title": "C", "plays": {"$inc": 2}, "notes": {"$text": upd}, "venue": "Club", "tags": ["z"]}));
    let conflict = e.conflicts[0].clone();
    e.create(B, 2, 6, json!({"key": "G"}));
    e.settle(&conflict);
    e.patch(A, 3, 2, 20, json!({"venue": "Hall"}));
    let conflict = e.conflicts.last().unwrap().clone();
    let mut resolve = mutation(t, 3, "patch", 6, 30, json!({"venue": "Park"}));
    resolve.resolves = Some(conflict.id);
    e.push(B, &resolve);
    e.delete(A, 4, 6, 40);
    e
}

#[test]
fn replay_rebuilds_the_entity_from_its_history() {
    let e = eventful();
    let statuses: Vec<_> = e
        .history
        .iter()
        .map(|h| {
            h.decisions
                .iter()
                .map(|d| d.outcome.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        statuses.iter().flatten().any(|o| o == "conflict"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().flatten().any(|o| o == "settled"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().flatten().any(|o| o == "resolved"),
        "{statuses:?}"
    );
    let rebuilt = replay(&e.engine, &e.ty, &e.history).unwrap();
    assert_eq!(rebuilt.as_ref(), e.record.as_ref());
    assert!(rebuilt.unwrap().deleted);
    assert_eq!(replay(&e.engine, &e.ty, &[]).unwrap(), None);
}

#[test]
fn replay_catches_a_tampered_history_entry() {
    let e = eventful();
    // Someone edits the projection of version 3 by hand.
    let mut tampered = e.history.clone();
    let entry = &mut tampered[2].entity.state.fields;
    entry.get_mut("plays").unwrap().state = FieldState::Counter {
        by_device: BTreeMap::from([(DeviceId::parse(PHONE_A).unwrap(), 100)]),
        last_mid: BTreeMap::new(),
    };
    let err = replay(&e.engine, &e.ty, &tampered).unwrap_err();
    assert_eq!(err.version, 3);
    assert!(err.reason.contains("field plays"), "{err}");
    // Or edits what a client sent.
    let mut tampered = e.history.clone();
    tampered[1].input.insert("title".into(), json!("forged"));
    let err = replay(&e.engine, &e.ty, &tampered).unwrap_err();
    assert_eq!(err.version, 2);
    // Or drops a version.
    let mut tampered = e.history.clone();
    tampered.remove(3);
    assert_eq!(replay(&e.engine, &e.ty, &tampered).unwrap_err().version, 5);
}

mod malformed_text {
    //! A `$text` of garbage or of a truncated update is refused (or applies), and never
    //! takes the caller down, whatever yrs makes of it.
    use super::*;
    use proptest::prelude::*;

    fn notes(e: &mut Entity, mid: u64, bytes: &[u8]) -> MutationResult {
        e.patch(
            B,
            mid,
            1,
            5,
            json!({"notes": {"$text": BASE64.encode(bytes)}}),
        )
    }

    fn valid_update() -> Vec<u8> {
        let mut c = Client::new(7, None);
        BASE64.decode(c.insert(0, "hello world")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn garbage_and_truncated_updates_are_refused_not_panics(
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..64,
            flip in (0usize..64, any::<u8>()),
        ) {
            let mut e = Entity::new(builtin("setlist_entry"));
            e.create(A, 1, 0, json!({"title": "t", "notes": "base"}));
            let before = e.values();
            for (mid, bytes) in [garbage.clone(), {
                let mut v = valid_update();
                v.truncate(cut.min(v.len()));
                v
            }, {
                let mut v = valid_update();
                let at = flip.0 % v.len();
                v[at] ^= flip.1;
                v
            }].iter().enumerate() {
                let r = notes(&mut e, mid as u64 + 1, bytes);
                if r.status == MutationStatus::Rejected {
                    prop_assert!(matches!(r.code, Some(ErrorCode::InvalidFieldOperation)), "{r:?}");
                    prop_assert!(r.message.unwrap().starts_with("fields.notes"));
                }
            }
            // Whatever applied, the document still reads.
            prop_assert!(e.values()["notes"].is_string());
            prop_assert_eq!(&e.values()["title"], &before["title"]);
        }
    }

    #[test]
    fn a_panic_inside_yrs_is_an_invalid_field_operation() {
        let e = crate::entities::policy::yrs_guard("notes", || -> Result<(), MutationError> {
            panic!("yrs: index out of bounds")
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidFieldOperation);
        assert!(e.message.contains("malformed"), "{e}");
    }
}

mod determinism {
    //! For lww, set, counter and text fields the final values are the same whatever
    //! order the same concurrent mutations arrive in, with duplicates thrown in.
    use super::*;
    use proptest::prelude::*;

    const TAGS: &[&str] = &["a", "b", "c", "d"];

    /// One field change, before it is made a mutation.
    #[derive(Debug, Clone)]
    enum Change {
        Title(u8),
        Add(usize),
        Remove(usize),
        Replace(Vec<usize>),
        Inc(i64),
        Type { at: u32, c: char },
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0u8..4).prop_map(Change::Title),
            (0..TAGS.len()).prop_map(Change::Add),
            (0..TAGS.len()).prop_map(Change::Remove),
            proptest::collection::vec(0..TAGS.len(), 0..3).prop_map(Change::Replace),
            (-3i64..4).prop_map(Change::Inc),
            (0u32..8, proptest::char::range('a', 'e')).prop_map(|(at, c)| Change::Type { at, c }),
        ]
    }

    /// Per device, its mutations: (client time offset, changes).
    fn devices() -> impl Strategy<Value = Vec<Vec<(i64, Vec<Change>)>>> {
        proptest::collection::vec(
            proptest::collection::vec((0i64..4, proptest::collection::vec(change(), 1..4)), 1..5),
            2..5,
        )
    }

    /// Every device's mutations, all based on version 1 of `e`.
    fn mutations(e: &Entity, devices: &[Vec<(i64, Vec<Change>)>]) -> Vec<Vec<Mutation>> {
        let base = text_state(e, "notes");
        devices
            .iter()
            .enumerate()
            .map(|(d, ms)| {
                let mut client = Client::new(100 + d as u64, Some(&base));
                ms.iter()
                    .enumerate()
                    .map(|(i, (ts, changes))| {
                        let mut fields = Map::new();
                        for c in changes {
                            // A field once per mutation (a later change of it replaces
                            // the earlier); one text edit per mutation.
                            if matches!(c, Change::Type { .. }) && fields.contains_key("notes") {
                                continue;
                            }
                            let (k, v) = match c {
                                Change::Title(n) => ("title", json!(format!("t{n}"))),
                                Change::Add(i) => ("tags", json!({"$add": [TAGS[*i]]})),
                                Change::Remove(i) => ("tags", json!({"$remove": [TAGS[*i]]})),
                                Change::Replace(is) => (
                                    "tags",
                                    json!(is.iter().map(|i| TAGS[*i]).collect::<Vec<_>>()),
                                ),
                                Change::Inc(n) => ("plays", json!({"$inc": n})),
                                Change::Type { at, c } => (
                                    "notes",
                                    json!({"$text": client.insert(*at, &c.to_string())}),
                                ),
                            };
                            fields.insert(k.into(), v);
                        }
                        mutation(
                            "setlist_entry",
                            i as u64 + 1,
                            "patch",
                            1,
                            *ts,
                            Value::Object(fields),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn device(d: usize) -> String {
        format!("device-{d:02}")
    }

    fn created() -> Entity {
        let mut e = Entity::new(builtin("setlist_entry"));
        e.create(
            (ALICE, "device-base"),
            1,
            0,
            json!({"title": "t", "tags": ["a"], "plays": 0, "notes": "base"}),
        );
        e
    }

    /// Deliver in `order` (device picks; each device's mutations in their order), then
    /// redeliver the ones `dups` name (picks among those delivered so far).
    fn deliver(
        all: &[Vec<Mutation>],
        order: &[usize],
        dups: &[(usize, usize)],
    ) -> Map<String, Value> {
        let mut e = created();
        let mut next = vec![0; all.len()];
        let mut delivered: Vec<(usize, usize)> = Vec::new();
        let mut picks = order.iter().copied().chain(0..);
        let total: usize = all.iter().map(Vec::len).sum();
        let mut step = 0;
        while delivered.len() < total {
            let pick = picks.next().unwrap();
            let Some(d) = (0..all.len())
                .map(|k| (pick + k) % all.len())
                .find(|d| next[*d] < all[*d].len())
            else {
                break;
            };
            let r = e.push((&format!("member-{d}"), &device(d)), &all[d][next[d]]);
            assert_ne!(r.status, MutationStatus::Rejected, "{r:?}");
            delivered.push((d, next[d]));
            next[d] += 1;
            for (at, which) in dups {
                if *at == step {
                    let (dd, i) = delivered[which % delivered.len()];
                    e.push((&format!("member-{dd}"), &device(dd)), &all[dd][i]);
                }
            }
            step += 1;
        }
        e.values()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        #[test]
        fn the_same_concurrent_mutations_end_in_the_same_state_in_any_order(
            devices in devices(),
            order in proptest::collection::vec(0usize..8, 0..24),
            dups in proptest::collection::vec((0usize..16, 0usize..16), 0..6),
        ) {
            let e = created();
            let all = mutations(&e, &devices);
            // The reference: each device in turn, no duplicates.
            let sequential: Vec<usize> = all.iter().enumerate().flat_map(|(d, ms)| std::iter::repeat_n(d, ms.len())).collect();
            let reference = deliver(&all, &sequential, &[]);
            let shuffled = deliver(&all, &order, &dups);
            prop_assert_eq!(&shuffled, &reference);
            // And the same again, reversed device order.
            let reversed: Vec<usize> = sequential.iter().rev().copied().collect();
            prop_assert_eq!(&deliver(&all, &reversed, &[]), &reference);
            // The counter is the sum of every mutation's increment (its last `$inc`),
            // each once.
            let per_mutation: i64 = devices.iter().flatten().map(|(_, cs)| {
                cs.iter().filter_map(|c| match c { Change::Inc(n) => Some(*n), _ => None }).next_back().unwrap_or(0)
            }).sum();
            prop_assert_eq!(reference["plays"].as_i64().unwrap(), per_mutation);
        }
    }
}
