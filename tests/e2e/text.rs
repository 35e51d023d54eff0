//! Text fields over real WebSockets: two members' Yjs apps edit an entry's notes
//! offline, push their updates, apply each other's `text_updates` from the band's
//! events, and end with the same document as each other and the server.

use bandsync_testkit::stack::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

/// A member's app: its socket, device, next mid and the Yjs document of e1's notes.
struct App {
    ws: Client,
    device: &'static str,
    next_mid: u64,
    doc: Doc,
    notes: TextRef,
}

impl App {
    async fn new(t: &TestStack, user: &str, device: &'static str, client_id: u64) -> Self {
        let mut ws = t.client(user, &["demo"]).await;
        ws.subscribe("band:demo").await;
        ws.send(
            json!({"action": "register_device", "device": device, "platform": "web",
                       "name": device}),
        )
        .await;
        assert_eq!(ws.expect("device").await["device"], device);
        let doc = Doc::with_client_id(client_id);
        let notes = doc.get_or_insert_text("text");
        Self {
            ws,
            device,
            next_mid: 1,
            doc,
            notes,
        }
    }

    fn text(&self) -> String {
        self.notes.get_string(&self.doc.transact())
    }

    fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    fn apply(&self, b64: &str) {
        let update = Update::decode_v1(&BASE64.decode(b64).unwrap()).unwrap();
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    /// An offline edit: the update it made.
    fn edit(&self, f: impl FnOnce(&TextRef, &mut yrs::TransactionMut<'_>)) -> String {
        let before = self.state_vector();
        f(&self.notes, &mut self.doc.transact_mut());
        BASE64.encode(self.doc.transact().encode_state_as_update_v1(&before))
    }

    /// Push one mutation of e1; its verdict.
    async fn push(&mut self, op: &str, base: u64, fields: Value) -> Value {
        let mid = self.next_mid;
        self.next_mid += 1;
        self.ws
            .send(
                json!({"action": "push", "band": "demo", "device": self.device, "ref": mid,
                         "mutations": [{"mid": mid, "type": "setlist_entry", "id": "e1",
                                        "op": op, "base_version": base, "fields": fields,
                                        "ts": "2026-12-01T20:00:00Z"}]}),
            )
            .await;
        let reply = self.ws.expect("push_result").await;
        reply["results"][0].clone()
    }

    /// Wait for e1's events up to `version` and apply their notes updates; the
    /// versions seen.
    async fn catch_up(&mut self, version: u64) -> Vec<u64> {
        let e1 = |e: &Value| {
            e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("entity."))
                && e["data"]["id"] == "e1"
        };
        let events = self
            .ws
            .events_until(|ev| {
                ev.iter()
                    .filter(|e| e1(e))
                    .any(|e| e["data"]["version"].as_u64() >= Some(version))
            })
            .await;
        let mut seen = Vec::new();
        for e in events.iter().filter(|e| e1(e)) {
            seen.push(e["data"]["version"].as_u64().unwrap());
            if let Some(update) = e["data"]["text_updates"]["notes"].as_str() {
                self.apply(update);
            }
        }
        seen
    }
}

#[tokio::test]
async fn two_yjs_apps_edit_notes_offline_and_converge_over_websockets() {
    let t = spawn_stack().await;
    let mut alice = App::new(&t, "alice", "alice-phone", 1001).await;
    let mut bob = App::new(&t, "bob", "bob-tablet", 2002).await;
    let token = t.token("bob", &["demo"]);

    // GIVEN e1, created by alice's app with notes typed into its document
    let typed = alice.edit(|n, txn| n.insert(txn, 0, "Intro: drums"));
    let r = alice
        .push(
            "create",
            0,
            json!({"title": "So What", "notes": {"$text": typed}}),
        )
        .await;
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(alice.catch_up(1).await, [1]);
    // AND bob's app, started from the snapshot's text_state
    let (status, page) = t.http().get("/sync/entities?band=demo", Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    let view = &page["entities"][0];
    bob.apply(view["text_state"]["notes"].as_str().expect("text_state"));
    assert_eq!(bob.text(), "Intro: drums");
    assert_eq!(bob.catch_up(1).await, [1]);

    // WHEN both edit offline from version 1, then push
    let a = alice.edit(|n, txn| n.insert(txn, 12, ", then bass"));
    let b = bob.edit(|n, txn| n.insert(txn, 0, "Count in. "));
    let ra = alice.push("patch", 1, json!({"notes": {"$text": a}})).await;
    let rb = bob.push("patch", 1, json!({"notes": {"$text": b}})).await;
    let mut verdicts = [ra["status"].clone(), rb["status"].clone()];
    verdicts.sort_by_key(|v| v.to_string());
    assert_eq!(verdicts, [json!("applied"), json!("merged")], "{ra} {rb}");

    // AND each applies both events (the other's update and its own)
    let mut a_seen = alice.catch_up(3).await;
    let mut b_seen = bob.catch_up(3).await;
    a_seen.sort();
    b_seen.sort();
    assert_eq!((a_seen, b_seen), (vec![2, 3], vec![2, 3]));

    // THEN both documents are one, with both edits, and the server agrees
    let expected = "Count in. Intro: drums, then bass";
    assert_eq!(alice.text(), expected);
    assert_eq!(bob.text(), expected);
    assert_eq!(alice.state_vector(), bob.state_vector());
    let (status, server) = t
        .http()
        .get("/sync/entities/setlist_entry/e1?band=demo", Some(&token))
        .await;
    assert_eq!(status, 200, "{server}");
    assert_eq!(server["version"], 3);
    assert_eq!(server["fields"]["notes"], expected);
    let fresh = Doc::new();
    let notes = fresh.get_or_insert_text("text");
    let state = BASE64
        .decode(server["text_state"]["notes"].as_str().unwrap())
        .unwrap();
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    assert_eq!(notes.get_string(&fresh.transact()), expected);
    assert_eq!(fresh.transact().state_vector(), alice.state_vector());
}
