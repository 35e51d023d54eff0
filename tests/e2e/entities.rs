//! Members' own changes end to end: real WebSocket clients push mutations to the local
//! stack, get one verdict per mutation, and see every change (their own too) as an
//! event on the band's channel.

use bandsync::model::DeviceId;
use bandsync::ports::EntityStore;
use bandsync_testkit::stack::*;
use serde_json::{Value, json};

/// A client in band demo with its device registered and band:demo subscribed.
async fn member(t: &TestStack, user: &str, device: &str) -> Client {
    let mut c = t.client(user, &["demo"]).await;
    c.subscribe("band:demo").await;
    register(&mut c, device).await;
    c
}

async fn register(c: &mut Client, device: &str) {
    c.send(
        json!({"action": "register_device", "device": device, "platform": "web",
                  "name": device}),
    )
    .await;
    let reply = c.expect("device").await;
    assert_eq!(reply["device"], device);
}

fn entry(mid: u64, id: &str, op: &str, base: u64, fields: Value) -> Value {
    json!({"mid": mid, "type": "setlist_entry", "id": id, "op": op, "base_version": base,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

fn push(device: &str, reference: Value, mutations: Vec<Value>) -> Value {
    json!({"action": "push", "band": "demo", "device": device, "ref": reference,
           "mutations": mutations})
}

/// Send a push and wait for its `push_result`; its verdicts.
async fn pushed(c: &mut Client, device: &str, mutations: Vec<Value>) -> Vec<Value> {
    c.send(push(device, json!("p"), mutations)).await;
    let reply = c.expect("push_result").await;
    assert_eq!(reply["device"], device);
    reply["results"].as_array().unwrap().clone()
}

/// The `entity.*` events for `id` among `events`, by version.
fn versions_of(events: &[Value], id: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("entity."))
        })
        .filter(|e| e["data"]["id"] == id)
        .map(|e| e["data"]["version"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn two_members_edit_the_same_entry_concurrently_and_end_in_the_same_state() {
    let t = spawn_stack().await;
    let mut alice = member(&t, "alice", "alice-phone").await;
    let mut bob = member(&t, "bob", "bob-tablet").await;
    // GIVEN an entry both have seen at version 1
    let created = pushed(
        &mut alice,
        "alice-phone",
        vec![entry(
            1,
            "e1",
            "create",
            0,
            json!({"title": "So What", "key": "C"}),
        )],
    )
    .await;
    assert_eq!(created[0]["status"], "applied");
    for c in [&mut alice, &mut bob] {
        let seen = c.events_until(|ev| versions_of(ev, "e1") == [1]).await;
        assert_eq!(seen.last().unwrap()["event"], "entity.created");
    }

    // WHEN both change it from version 1 at once: the key, a tag, the play count
    alice
        .send(push(
            "alice-phone",
            json!("a"),
            vec![entry(
                2,
                "e1",
                "patch",
                1,
                json!({"key": "D", "tags": {"$add": ["ballad"]}, "plays": {"$inc": 1}}),
            )],
        ))
        .await;
    bob.send(push(
        "bob-tablet",
        json!("b"),
        vec![entry(
            1,
            "e1",
            "patch",
            1,
            json!({"key": "E", "tags": {"$add": ["modal"]}, "plays": {"$inc": 2}}),
        )],
    ))
    .await;
    let a = alice.expect("push_result").await;
    let b = bob.expect("push_result").await;

    // THEN one is applied and the other merged over it (versions 2 and 3)
    let mut verdicts: Vec<(u64, String)> = [&a, &b]
        .iter()
        .map(|r| {
            let v = &r["results"][0];
            (
                v["version"].as_u64().unwrap(),
                v["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    verdicts.sort();
    assert_eq!(
        verdicts,
        [(2, "applied".into()), (3, "merged".into())],
        "{a} {b}"
    );
    // AND each sees both changes as events, the other's and its own
    let mut finals = Vec::new();
    for c in [&mut alice, &mut bob] {
        let seen = c.events_until(|ev| versions_of(ev, "e1").len() == 2).await;
        let mut v = versions_of(&seen, "e1");
        v.sort();
        assert_eq!(v, [2, 3]);
        let devices: Vec<&str> = seen
            .iter()
            .filter_map(|e| e["data"]["device"].as_str())
            .collect();
        assert!(
            devices.contains(&"alice-phone") && devices.contains(&"bob-tablet"),
            "{devices:?}"
        );
    }
    // AND both read the same state, which kept both tags and both increments
    for token in [t.token("alice", &["demo"]), t.token("bob", &["demo"])] {
        let (status, body) = t
            .http()
            .get("/sync/entities/setlist_entry/e1?band=demo", Some(&token))
            .await;
        assert_eq!(status, 200, "{body}");
        finals.push(body);
    }
    assert_eq!(finals[0], finals[1]);
    let fields = &finals[0]["fields"];
    assert_eq!(finals[0]["version"], 3);
    assert_eq!(fields["plays"], 3);
    let mut tags: Vec<&str> = fields["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["ballad", "modal"]);
    // the merged verdict's fields are that state
    let merged = if a["results"][0]["status"] == "merged" {
        &a
    } else {
        &b
    };
    assert_eq!(&merged["results"][0]["fields"], fields);
}

#[tokio::test]
async fn a_device_back_online_replays_500_mutations_each_with_one_verdict() {
    let t = spawn_stack().await;
    let mut observer = t.client("bob", &["demo"]).await;
    let subscribed = observer.subscribe("band:demo").await;
    let mut alice = t.client("alice", &["demo"]).await;
    register(&mut alice, "alice-laptop").await;
    // GIVEN 500 mutations queued offline: 100 entries created, each changed four times
    let queued: Vec<Value> = (1..=500u64)
        .map(|mid| {
            let n = (mid - 1) / 5;
            let step = (mid - 1) % 5;
            let id = format!("e{n}");
            match step {
                0 => entry(mid, &id, "create", 0, json!({"title": format!("song {n}")})),
                _ => entry(mid, &id, "patch", step, json!({"plays": {"$inc": 1}})),
            }
        })
        .collect();
    // WHEN it pushes them in frames of 100
    let mut verdicts = Vec::new();
    for (i, frame) in queued.chunks(100).enumerate() {
        alice
            .send(push("alice-laptop", json!(i), frame.to_vec()))
            .await;
    }
    for i in 0..5 {
        let reply = alice.expect("push_result").await;
        assert_eq!(reply["ref"], i, "answered in order");
        verdicts.extend(reply["results"].as_array().unwrap().clone());
    }
    // THEN every mid has exactly one verdict, in order, all applied
    let mids: Vec<u64> = verdicts
        .iter()
        .map(|v| v["mid"].as_u64().unwrap())
        .collect();
    assert_eq!(mids, (1..=500).collect::<Vec<_>>());
    assert!(
        verdicts.iter().all(|v| v["status"] == "applied"),
        "{:?}",
        verdicts.iter().find(|v| v["status"] != "applied")
    );
    // AND the other member got the 500 events, gapless after his subscription
    let events = observer
        .events_until(|ev| {
            ev.iter()
                .filter(|e| {
                    e["event"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("entity."))
                })
                .count()
                == 500
        })
        .await;
    assert_gapless(&events, subscribed["seq"].as_u64().unwrap() + 1);
    // AND each entry ended at version 5 with its four plays
    let (status, page) = t
        .http()
        .get(
            "/sync/entities?band=demo&type=setlist_entry&limit=1000",
            Some(&t.token("bob", &["demo"])),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let entities = page["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 100);
    assert!(
        entities
            .iter()
            .all(|e| e["version"] == 5 && e["fields"]["plays"] == 4)
    );
}

#[tokio::test]
async fn a_lost_acknowledgement_applies_nothing_twice() {
    let t = spawn_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    register(&mut alice, "alice-phone").await;
    let frame = vec![
        entry(
            1,
            "e1",
            "create",
            0,
            json!({"title": "Nardis", "plays": {"$inc": 1}}),
        ),
        entry(2, "e1", "patch", 1, json!({"plays": {"$inc": 1}})),
        entry(3, "e1", "patch", 2, json!({"plays": {"$inc": 1}})),
    ];
    // GIVEN alice pushes and her connection drops before she reads the answer
    alice
        .send(push("alice-phone", json!("first"), frame.clone()))
        .await;
    alice.close().await;
    let device = DeviceId::parse("alice-phone").unwrap();
    eventually("the first push is committed", || async {
        let d = t.stack.store.get_device(&device).await.unwrap()?;
        (d.next_mid == 4).then_some(())
    })
    .await;

    // WHEN she reconnects and pushes the same mids again
    let mut alice = t.client("alice", &["demo"]).await;
    let results = pushed(&mut alice, "alice-phone", frame).await;

    // THEN each is a duplicate of its applied verdict
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["status"], "duplicate", "{r}");
        assert_eq!(r["original_status"], "applied");
        assert_eq!(r["version"], i as u64 + 1);
    }
    // AND nothing applied twice: three plays, version 3, three events
    let token = t.token("alice", &["demo"]);
    let (_, body) = t
        .http()
        .get("/sync/entities/setlist_entry/e1?band=demo", Some(&token))
        .await;
    assert_eq!(
        (body["version"].as_u64(), body["fields"]["plays"].as_i64()),
        (Some(3), Some(3))
    );
    let (_, history) = t
        .http()
        .get(
            "/sync/entities/setlist_entry/e1/history?band=demo",
            Some(&token),
        )
        .await;
    assert_eq!(history["versions"].as_array().unwrap().len(), 3);
    alice
        .send(json!({"action": "resume", "channel": "band:demo", "after_seq": 0}))
        .await;
    alice.expect("resumed").await;
    let log = alice.frames_until_pong().await;
    assert_eq!(versions_of(&log, "e1"), [1, 2, 3], "one event per change");
}

#[tokio::test]
async fn a_members_parked_mutations_are_listed_for_them_alone_and_dismissed_once() {
    let t = spawn_stack().await;
    let mut alice = member(&t, "alice", "alice-phone").await;
    let mut bob = member(&t, "bob", "bob-tablet").await;
    // GIVEN alice's RSVP, and bob's push that changes it (owner only) then his own
    let rsvp = |mid, id: &str, op, base, v: &str| {
        json!({"mid": mid, "type": "attendance", "id": id, "op": op, "base_version": base,
               "fields": {"rsvp": v}, "ts": "2026-12-01T20:00:00Z"})
    };
    let r = pushed(
        &mut alice,
        "alice-phone",
        vec![rsvp(1, "r1-alice", "create", 0, "yes")],
    )
    .await;
    assert_eq!(r[0]["status"], "applied");
    let r = pushed(
        &mut bob,
        "bob-tablet",
        vec![
            rsvp(1, "r1-alice", "patch", 1, "no"),
            rsvp(2, "r1-bob", "create", 0, "yes"),
        ],
    )
    .await;
    assert_eq!(r[0]["code"], "not_owner", "{r:?}");
    assert_eq!(r[1]["status"], "applied");

    // WHEN bob reads his tablet's parked mutations over HTTP
    let http = t.http();
    let bob_token = t.token("bob", &["demo"]);
    let path = "/sync/devices/bob-tablet/parked?band=demo";
    let (status, body) = http.get(path, Some(&bob_token)).await;

    // THEN the refused one is there, as he pushed it, with its code
    assert_eq!(status, 200, "{body}");
    let parked = body["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{body}");
    assert_eq!(parked[0]["mid"], 1);
    assert_eq!(parked[0]["code"], "not_owner");
    assert_eq!(parked[0]["mutation"]["fields"]["rsvp"], "no");
    // AND alice may not read bob's device
    let (status, body) = http.get(path, Some(&t.token("alice", &["demo"]))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // WHEN bob dismisses it, twice
    let dismiss = "/sync/devices/bob-tablet/parked/1?band=demo";
    assert_eq!(http.delete(dismiss, Some(&bob_token)).await.0, 204);
    assert_eq!(http.delete(dismiss, Some(&bob_token)).await.0, 204);
    // THEN it is no longer listed, and the mid keeps its verdict
    let (_, body) = http.get(path, Some(&bob_token)).await;
    assert_eq!(body["parked"], json!([]), "{body}");
    let again = pushed(
        &mut bob,
        "bob-tablet",
        vec![rsvp(1, "r1-alice", "patch", 1, "no")],
    )
    .await;
    assert_eq!(
        (again[0]["status"].as_str(), again[0]["code"].as_str()),
        (Some("duplicate"), Some("not_owner"))
    );
}

#[tokio::test]
async fn verdicts_over_128_kb_reach_the_socket_in_several_push_results() {
    let t = spawn_stack().await;
    let mut alice = member(&t, "alice", "alice-phone").await;
    // GIVEN a 12 KB scrapbook page that every verdict on it carries back in `fields`
    let page = |mid: u64, op: &str, base: u64, fields: Value| {
        json!({"mid": mid, "type": "scrapbook", "id": "s1", "op": op, "base_version": base,
               "fields": fields, "ts": "2026-12-01T20:00:00Z"})
    };
    let mut mutations = vec![page(1, "create", 0, json!({"text": "x".repeat(12_000)}))];
    mutations.extend((2..=100).map(|mid| page(mid, "patch", mid - 1, json!({"n": mid}))));
    // WHEN alice pushes it with 99 small changes (about 1.2 MB of verdicts)
    alice
        .send(push("alice-phone", json!("big"), mutations))
        .await;
    // THEN the gateway delivers them (each frame under its 128 KB) in several
    // push_result frames of her ref, in order, the last without `more`
    let mut frames = 0;
    let mut mids = Vec::new();
    loop {
        let reply = alice.expect("push_result").await;
        assert_eq!(reply["ref"], "big");
        frames += 1;
        for r in reply["results"].as_array().unwrap() {
            assert_eq!(r["status"], "applied", "{r}");
            mids.push(r["mid"].as_u64().unwrap());
        }
        if reply.get("more").is_none() {
            break;
        }
        assert_eq!(reply["more"], true);
    }
    assert!(frames > 5, "{frames} frames");
    assert_eq!(mids, (1..=100).collect::<Vec<_>>());
}
