//! Text fields for Yjs clients: an app keeps its own Yjs document per text field,
//! starts it from a snapshot's `text_state`, edits offline, pushes its update as
//! `$text`, and applies the `text_updates` of every `entity.*` event (its own
//! included). Two such apps, and the server, end with the same document.

use bandsync::entities::types::{EntityType, FieldSpec, Policy};
use bandsync::model::{ChannelName, EntityTypeName, SyncConfiguration};
use bandsync::ports::ConfigStore;
use bandsync::ws_message::WsMessage;
use bandsync_testkit::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

const ALICE: &str = "alice-conn=";
const BOB: &str = "bob-conn=";
const CAROL: &str = "carol-conn=";

/// Band demo (alice, bob and carol, each with a registered device), with the built-in
/// types (`setlist_entry.notes` is `text`) and `chart_note`, whose `body` is a text
/// field of 100 KB.
struct Fixture {
    h: Harness,
    ws: WsMessage,
}

impl Fixture {
    async fn new() -> Self {
        let h = Harness::new();
        let chart_note = text_type("chart_note", 100_000);
        h.store
            .put_config(&SyncConfiguration {
                band: band("demo"),
                name: "demo".into(),
                file_types: vec![],
                google_credentials: None,
                entity_types: vec![chart_note],
                strict_entities: false,
                history_days: None,
            })
            .await
            .unwrap();
        for (conn, user) in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")] {
            h.add_connection(conn, user, &["demo"]).await;
        }
        let f = Self {
            ws: h.ws_message(),
            h,
        };
        for (conn, device) in [
            (ALICE, "alice-phone"),
            (BOB, "bob-tablet"),
            (CAROL, "carol-laptop"),
        ] {
            let reply = f
                .ask(
                    conn,
                    json!({"action": "register_device", "device": device,
                           "platform": "web", "name": "mine"}),
                )
                .await;
            assert_eq!(reply["type"], "device", "{reply}");
        }
        f
    }

    async fn ask(&self, conn: &str, frame: Value) -> Value {
        let before = self.h.pusher.frames(&conn_id(conn)).len();
        self.ws
            .handle(ws_message_event(conn, &frame.to_string()))
            .await;
        let mut replies = self.h.pusher.frames(&conn_id(conn)).split_off(before);
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.remove(0)
    }

    /// The one verdict of a push of one mutation.
    async fn push(&self, app: &mut YApp, ty: &str, op: &str, base: u64, fields: Value) -> Value {
        let mid = app.next_mid;
        app.next_mid += 1;
        let reply = self
            .ask(
                app.conn,
                json!({"action": "push", "band": "demo", "device": app.device, "ref": mid,
                       "mutations": [{"mid": mid, "type": ty, "id": app.entity, "op": op,
                                      "base_version": base, "fields": fields,
                                      "ts": "2026-12-01T20:00:00Z"}]}),
            )
            .await;
        assert_eq!(reply["type"], "push_result", "{reply}");
        reply["results"][0].clone()
    }

    /// A create of the app's entity with its text field's first `update`, applied.
    async fn create(&self, app: &mut YApp, ty: &str, update: String) {
        let field = app.field;
        let r = self
            .push(app, ty, "create", 0, json!({field: {"$text": update}}))
            .await;
        assert_eq!(r["status"], "applied", "{r}");
    }

    /// A patch of the app's text field with `update`, from `base`; the verdict.
    async fn patch(&self, app: &mut YApp, ty: &str, base: u64, update: String) -> Value {
        let field = app.field;
        self.push(app, ty, "patch", base, json!({field: {"$text": update}}))
            .await
    }

    /// `GET /sync/entities/{type}/{id}?band=demo` as alice.
    async fn get_entity(&self, ty: &str, id: &str) -> Value {
        let bearer = self.h.bearer("alice", &["demo"]);
        let target = format!("/sync/entities/{ty}/{id}?band=demo");
        let response = self
            .h
            .api()
            .handle(http_event(
                "GET",
                &target,
                &[("Authorization", bearer.as_str())],
                None,
            ))
            .await;
        assert_eq!(response.status(), 200, "{}", response.body_json());
        response.body_json()
    }

    /// The snapshot's first page, as a new device loads it.
    async fn snapshot(&self) -> Value {
        let bearer = self.h.bearer("alice", &["demo"]);
        let response = self
            .h
            .api()
            .handle(http_event(
                "GET",
                "/sync/entities?band=demo",
                &[("Authorization", bearer.as_str())],
                None,
            ))
            .await;
        assert_eq!(response.status(), 200);
        response.body_json()
    }

    /// The `entity.*` events of band demo, as a client receives them.
    async fn events(&self) -> Vec<(u64, Value)> {
        self.h
            .log(&ChannelName::Band(band("demo")))
            .await
            .into_iter()
            .filter(|e| e.event().starts_with("entity."))
            .map(|e| (e.seq, e.data().clone()))
            .collect()
    }
}

/// A type whose one field, `body`, is text of at most `max_bytes`.
fn text_type(name: &str, max_bytes: usize) -> EntityType {
    let body = FieldSpec {
        max_bytes: Some(max_bytes),
        ..FieldSpec::new(Policy::Text)
    };
    EntityType::new(EntityTypeName::parse(name).unwrap(), [("body", body)])
}

/// A member's app: one Yjs document for the text field `field` of one entity, as a
/// Yjs editor binds it (`doc.getText("text")`).
struct YApp {
    conn: &'static str,
    device: &'static str,
    entity: &'static str,
    field: &'static str,
    doc: Doc,
    text: TextRef,
    next_mid: u64,
    /// The last event seq it applied.
    seen: u64,
    /// The entity version it last saw (a push's base).
    version: u64,
}

impl YApp {
    fn new(conn: &'static str, device: &'static str, client_id: u64) -> Self {
        let doc = Doc::with_client_id(client_id);
        let text = doc.get_or_insert_text("text");
        Self {
            conn,
            device,
            entity: "e1",
            field: "notes",
            doc,
            text,
            next_mid: 1,
            seen: 0,
            version: 0,
        }
    }

    fn string(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Apply a base64 v1 update (a snapshot's `text_state` or an event's update).
    fn apply(&mut self, b64: &str) {
        let bytes = BASE64.decode(b64).expect("base64");
        let update = Update::decode_v1(&bytes).expect("a Yjs update");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("applies");
    }

    /// A local edit, offline: the update it made (what the app pushes as `$text`).
    fn edit(&mut self, f: impl FnOnce(&TextRef, &mut yrs::TransactionMut<'_>)) -> String {
        let before = self.state_vector();
        {
            let mut txn = self.doc.transact_mut();
            f(&self.text, &mut txn);
        }
        BASE64.encode(self.doc.transact().encode_state_as_update_v1(&before))
    }

    /// Start from an entity view (`GET` or a snapshot page).
    fn load(&mut self, view: &Value) {
        let state = view["text_state"][self.field]
            .as_str()
            .expect("a text_state");
        self.apply(state);
        self.version = view["version"].as_u64().unwrap();
    }

    /// Apply every event after the last one seen: its `text_updates` for this field.
    fn catch_up(&mut self, events: &[(u64, Value)]) -> usize {
        let mut applied = 0;
        let seen = self.seen;
        for (seq, data) in events.iter().filter(|(s, _)| *s > seen) {
            self.seen = *seq;
            if data["id"] != self.entity {
                continue;
            }
            self.version = self.version.max(data["version"].as_u64().unwrap());
            if let Some(update) = data["text_updates"][self.field].as_str() {
                self.apply(update);
                applied += 1;
            }
        }
        applied
    }
}

#[tokio::test]
async fn two_yjs_apps_edit_offline_and_converge_with_the_server() {
    // GIVEN alice's app creating entry e1 with notes typed into its own document
    let f = Fixture::new().await;
    let mut alice = YApp::new(ALICE, "alice-phone", 1001);
    let typed = alice.edit(|t, txn| t.insert(txn, 0, "Intro: drums"));
    let r = f
        .push(
            &mut alice,
            "setlist_entry",
            "create",
            0,
            json!({"title": "So What", "notes": {"$text": typed}}),
        )
        .await;
    assert_eq!(r["status"], "applied", "{r}");
    // AND its entity.created carries the update as it was pushed
    let events = f.events().await;
    assert_eq!(events[0].1["text_updates"]["notes"], typed.as_str());
    assert_eq!(events[0].1["fields"]["notes"], "Intro: drums");
    assert!(events[0].1["text_updates"].get("title").is_none());
    // (its own event is its rebase point: applying it changes nothing)
    let sv = alice.state_vector();
    assert_eq!(alice.catch_up(&events), 1);
    assert_eq!(alice.state_vector(), sv);

    // AND bob's app starting from the snapshot's text_state
    let mut bob = YApp::new(BOB, "bob-tablet", 2002);
    let page = f.snapshot().await;
    let view = &page["entities"][0];
    assert_eq!(view["fields"]["notes"], "Intro: drums");
    bob.load(view);
    bob.seen = page["seq"].as_u64().unwrap();
    assert_eq!(bob.string(), "Intro: drums");

    // WHEN both edit offline, from version 1, then push
    let a1 = alice.edit(|t, txn| t.insert(txn, 12, ", then bass"));
    let a2 = alice.edit(|t, txn| t.remove_range(txn, 0, 7)); // "Intro: "
    let b1 = bob.edit(|t, txn| t.insert(txn, 0, "Count in. "));
    let b2 = bob.edit(|t, txn| {
        let len = t.len(txn);
        t.insert(txn, len, " (quiet)")
    });
    let base = alice.version;
    for update in [a1, a2] {
        let r = f.patch(&mut alice, "setlist_entry", base, update).await;
        assert!(
            matches!(r["status"].as_str(), Some("applied" | "merged")),
            "{r}"
        );
    }
    let mut statuses = Vec::new();
    for update in [b1, b2] {
        let r = f.patch(&mut bob, "setlist_entry", 1, update).await;
        statuses.push(r["status"].as_str().unwrap().to_owned());
    }
    // (bob's base is older than alice's changes: his first merges; his second follows
    // his own first, which it saw)
    assert_eq!(statuses, ["merged", "applied"]);

    // AND each applies the events it missed
    let events = f.events().await;
    assert_eq!(alice.catch_up(&events), 4);
    assert_eq!(bob.catch_up(&events), 4);

    // THEN both documents are the same, with everyone's edits, and so is the server's
    let expected = "Count in. drums, then bass (quiet)";
    assert_eq!(alice.string(), expected);
    assert_eq!(bob.string(), expected);
    assert_eq!(alice.state_vector(), bob.state_vector());
    let server = f.get_entity("setlist_entry", "e1").await;
    assert_eq!(server["version"], 5);
    assert_eq!(server["fields"]["notes"], expected);
    let mut fresh = YApp::new(CAROL, "carol-laptop", 3003);
    fresh.load(&server);
    assert_eq!(fresh.string(), expected);
    assert_eq!(fresh.state_vector(), alice.state_vector());

    // WHEN a third app, started from text_state, edits and pushes, and the others
    // apply its event (twice, as a redelivery would)
    let c1 = fresh.edit(|t, txn| t.insert(txn, 0, "[slow] "));
    let r = f.patch(&mut fresh, "setlist_entry", 5, c1).await;
    assert_eq!(r["status"], "applied", "{r}");
    let events = f.events().await;
    let seen = alice.seen;
    assert_eq!(alice.catch_up(&events), 1);
    alice.seen = seen;
    assert_eq!(alice.catch_up(&events), 1);
    bob.catch_up(&events);

    // THEN all three and the server still agree
    let expected = format!("[slow] {expected}");
    for app in [&alice, &bob, &fresh] {
        assert_eq!(app.string(), expected, "{}", app.device);
    }
    let server = f.get_entity("setlist_entry", "e1").await;
    assert_eq!(server["fields"]["notes"], expected.as_str());
    assert_eq!(server["version"], 6);
}

#[tokio::test]
async fn a_plain_string_create_comes_with_the_update_the_server_made() {
    // GIVEN bob's app, which created e1 with plain-string notes (no document of its own)
    let f = Fixture::new().await;
    let mut bob = YApp::new(BOB, "bob-tablet", 2002);
    let r = f
        .push(
            &mut bob,
            "setlist_entry",
            "create",
            0,
            json!({"title": "Blue", "notes": "Verse"}),
        )
        .await;
    assert_eq!(r["status"], "applied", "{r}");

    // WHEN it and alice's app apply the entity.created's update
    let events = f.events().await;
    let update = events[0].1["text_updates"]["notes"]
        .as_str()
        .expect("the server's update")
        .to_owned();
    let mut alice = YApp::new(ALICE, "alice-phone", 1001);
    assert_eq!(bob.catch_up(&events), 1);
    assert_eq!(alice.catch_up(&events), 1);

    // THEN both hold the server's document (not a copy typed anew, which would double)
    let state = f.get_entity("setlist_entry", "e1").await["text_state"]["notes"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut from_state = YApp::new(CAROL, "carol-laptop", 3003);
    from_state.apply(&state);
    assert_eq!(alice.state_vector(), from_state.state_vector());
    assert_eq!(bob.string(), "Verse");
    // AND edits on top of it merge as one text
    let a = alice.edit(|t, txn| t.insert(txn, 5, " one"));
    let b = bob.edit(|t, txn| t.insert(txn, 0, "Big "));
    f.patch(&mut alice, "setlist_entry", 1, a).await;
    f.patch(&mut bob, "setlist_entry", 1, b).await;
    let events = f.events().await;
    alice.catch_up(&events);
    bob.catch_up(&events);
    assert_eq!(alice.string(), "Big Verse one");
    assert_eq!(bob.string(), "Big Verse one");
    let server = f.get_entity("setlist_entry", "e1").await;
    assert_eq!(server["fields"]["notes"], "Big Verse one");
    // (the update is exactly what inserting the string makes, applied once)
    assert_eq!(events[0].1["text_updates"]["notes"], update.as_str());
}

#[tokio::test]
async fn an_update_too_big_for_the_event_is_named_for_a_refetch() {
    // GIVEN a chart note whose first text is 45 KB (its update, ~60 KB of base64, is
    // over the event's budget; the entity is within its 128 KB)
    let f = Fixture::new().await;
    let mut alice = YApp::new(ALICE, "alice-phone", 1001);
    alice.field = "body";
    let long = "la ".repeat(15_000);
    let typed = alice.edit(|t, txn| t.insert(txn, 0, &long));
    assert!(typed.len() > bandsync::entities::policy::TEXT_UPDATES_BUDGET);

    // WHEN it is created
    f.create(&mut alice, "chart_note", typed).await;

    // THEN its event names the field for a refetch instead of carrying the update
    let events = f.events().await;
    let data = &events[0].1;
    assert!(
        data.get("text_updates").is_none(),
        "{}",
        data["text_updates"]
    );
    assert_eq!(data["text_refetch"], json!(["body"]));
    let frame = serde_json::to_vec(data).unwrap();
    assert!(frame.len() < 128 * 1024, "{} bytes", frame.len());
    // AND the entity's text_state has the document
    let view = f.get_entity("chart_note", "e1").await;
    let mut bob = YApp::new(BOB, "bob-tablet", 2002);
    bob.field = "body";
    bob.load(&view);
    assert_eq!(bob.string(), long);
    assert_eq!(bob.state_vector(), alice.state_vector());
}

#[tokio::test]
async fn a_text_document_is_bounded_beside_its_text() {
    // GIVEN a 100-byte text field
    let f = Fixture::new().await;
    let small = text_type("memo", 100);
    let mut config = f.h.store.get_config(&band("demo")).await.unwrap().unwrap();
    config.entity_types.push(small);
    f.h.store.put_config(&config).await.unwrap();
    let mut app = YApp::new(ALICE, "alice-phone", 1001);
    app.field = "body";
    let first = app.edit(|t, txn| t.insert(txn, 0, "hi"));
    f.create(&mut app, "memo", first).await;

    // WHEN many writers each type and delete a word: the text stays short, but the
    // document keeps who wrote what
    let mut refused = None;
    for writer in 0..200u64 {
        let other = Doc::with_client_id(10_000 + writer);
        let text = other.get_or_insert_text("text");
        {
            let mut txn = other.transact_mut();
            let state = f.get_entity("memo", "e1").await["text_state"]["body"]
                .as_str()
                .unwrap()
                .to_owned();
            txn.apply_update(Update::decode_v1(&BASE64.decode(state).unwrap()).unwrap())
                .unwrap();
        }
        let before = other.transact().state_vector();
        {
            let mut txn = other.transact_mut();
            text.insert(&mut txn, 0, "word ");
            text.remove_range(&mut txn, 0, 5);
        }
        let update = BASE64.encode(other.transact().encode_state_as_update_v1(&before));
        let version = f.get_entity("memo", "e1").await["version"]
            .as_u64()
            .unwrap();
        let r = f.patch(&mut app, "memo", version, update).await;
        if r["status"] == "rejected" {
            refused = Some(r);
            break;
        }
    }

    // THEN past four times the field's limit it is refused, clearly, and the entity
    // keeps its text
    let r = refused.expect("the document grew past its bound");
    assert_eq!(r["code"], "field_too_large", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("Yjs document"),
        "{r}"
    );
    let view = f.get_entity("memo", "e1").await;
    assert_eq!(view["fields"]["body"], "hi");
    assert!(view["text_state"]["body"].as_str().unwrap().len() <= 400);
}

#[tokio::test]
async fn a_snapshot_page_of_large_texts_ends_early_and_goes_on() {
    // GIVEN 50 chart notes of 40 KB each (their text and document: ~95 KB apiece)
    let f = Fixture::new().await;
    let long = "do re mi ".repeat(4_500);
    let update = |id: u64| {
        let doc = Doc::with_client_id(id);
        let text = doc.get_or_insert_text("text");
        text.insert(&mut doc.transact_mut(), 0, &long);
        BASE64.encode(
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )
    };
    for n in 1..=50u64 {
        let reply = f
            .ask(
                ALICE,
                json!({"action": "push", "band": "demo", "device": "alice-phone", "ref": n,
                       "mutations": [{"mid": n, "type": "chart_note", "id": format!("n{n:02}"),
                                      "op": "create", "base_version": 0,
                                      "fields": {"body": {"$text": update(n)}},
                                      "ts": "2026-12-01T20:00:00Z"}]}),
            )
            .await;
        assert_eq!(reply["results"][0]["status"], "applied", "{reply}");
    }
    let bearer = f.h.bearer("alice", &["demo"]);
    let page = |after: Option<String>| {
        let target = match after {
            Some(a) => format!("/sync/entities?band=demo&type=chart_note&limit=100&after={a}"),
            None => "/sync/entities?band=demo&type=chart_note&limit=100".into(),
        };
        let api = f.h.api();
        let bearer = bearer.clone();
        async move {
            let response = api
                .handle(http_event(
                    "GET",
                    &target,
                    &[("Authorization", bearer.as_str())],
                    None,
                ))
                .await;
            assert_eq!(response.status(), 200);
            let size = match &response.body {
                Some(aws_lambda_events::encodings::Body::Text(t)) => t.len(),
                _ => 0,
            };
            (size, response.body_json())
        }
    };

    // WHEN a new device reads the first page (limit 100)
    let (size, first) = page(None).await;

    // THEN it ends early, within a Lambda's answer, its next at its last entity
    let got = first["entities"].as_array().unwrap();
    assert!(got.len() < 50 && !got.is_empty(), "{}", got.len());
    assert!(size <= 5 * 1024 * 1024, "{size} bytes");
    let last = got.last().unwrap()["id"].as_str().unwrap();
    assert_eq!(first["next"], format!("chart_note/{last}"));
    // AND the next pages have the rest, each once
    let mut ids: Vec<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().into())
        .collect();
    let mut next = first["next"].as_str().map(str::to_owned);
    while let Some(after) = next {
        let (_, more) = page(Some(after)).await;
        ids.extend(
            more["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        next = more["next"].as_str().map(str::to_owned);
    }
    let expected: Vec<String> = (1..=50).map(|n| format!("n{n:02}")).collect();
    assert_eq!(ids, expected);
}
