//! Selective sync end to end: a device's categories decide what its connection is sent,
//! live, on resume and in the entity snapshot, and can change while it is connected.

use bandsync_testkit::stack::*;
use serde_json::{Value, json};

async fn register(c: &mut Client, device: &str, categories: &[&str]) -> Value {
    c.register_device(device, Platform::Ios, Some(categories))
        .await
}

/// The seqs of `channel` each frame covers, in order: an event its seq, a `skipped`
/// frame its range. Asserts they follow one another with no hole from `from`, and
/// returns the last.
fn assert_covered(frames: &[Value], from: u64) -> u64 {
    let mut next = from;
    for f in frames {
        let (lo, hi) = match f["type"].as_str() {
            Some("event") => (f["seq"].as_u64().unwrap(), f["seq"].as_u64().unwrap()),
            Some("skipped") => (
                f["from_seq"].as_u64().unwrap(),
                f["to_seq"].as_u64().unwrap(),
            ),
            _ => continue,
        };
        assert_eq!(f["channel"], "band:demo", "{f}");
        // A resume overlapping live delivery repeats seqs; a hole is what must not be.
        assert!(lo <= next, "hole before {lo}: expected {next}; {f}");
        next = next.max(hi + 1);
    }
    next - 1
}

fn events_named<'a>(frames: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .filter(|f| f["event"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

fn entity(mid: u64, ty: &str, id: &str, fields: Value) -> Value {
    json!({"mid": mid, "type": ty, "id": id, "op": "create", "base_version": 0,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

#[tokio::test]
async fn selective_sync_keeps_a_setlist_only_device_out_of_file_events() {
    let t = spawn_stack().await;
    // GIVEN alice's phone, which only wants setlists, and bob's laptop (everything)
    let mut phone = t.client("alice", &["demo"]).await;
    let reply = register(&mut phone, "alice-phone", &["setlists"]).await;
    assert_eq!(reply["categories"], json!(["setlists"]));
    let subscribed = phone.subscribe("band:demo").await;
    let start = subscribed["seq"].as_u64().unwrap();
    let mut laptop = t.client("bob", &["demo"]).await;
    // bob's own `presence.joined` may land before or after his subscribe: his frames
    // start after the seq his subscribe reports.
    let bob_start = laptop.subscribe("band:demo").await["seq"].as_u64().unwrap();
    register(&mut laptop, "bob-laptop", &[]).await;

    // WHEN a folder sync brings 12 charts and 12 recordings, and bob edits the setlist
    // and a song's status
    let before = t.folder_notified().await;
    for i in 0..12 {
        put(t.folder().join(format!("chart-{i}.pdf")), format!("c{i}"));
        put(t.folder().join(format!("take-{i}.mp3")), format!("r{i}"));
    }
    t.settle_folder(before).await;
    let mutations = vec![
        entity(1, "setlist_entry", "e1", json!({"title": "So What"})),
        entity(2, "song_status", "s1", json!({"status": "ready"})),
    ];
    laptop.push("demo", "bob-laptop", json!(1), mutations).await;
    let verdicts = laptop.expect("push_result").await;
    assert_eq!(verdicts["results"][0]["status"], "applied", "{verdicts}");
    t.drain().await;

    // THEN bob got every file event; the phone none of them, nor the sync jobs nor the
    // song status, only the setlist entry, with `skipped` frames covering the rest so
    // its seqs stay gapless
    let bob = laptop.frames_until_pong().await;
    assert_eq!(events_named(&bob, "file.created").len(), 24);
    let head = assert_covered(&bob, bob_start + 1);
    let frames = phone.frames_until_pong().await;
    assert!(events_named(&frames, "file.").is_empty(), "{frames:?}");
    assert!(events_named(&frames, "sync.").is_empty());
    let entities = events_named(&frames, "entity.");
    assert_eq!(entities.len(), 1, "{entities:?}");
    assert_eq!(entities[0]["data"]["type"], "setlist_entry");
    assert!(frames.iter().any(|f| f["type"] == "skipped"));
    assert_eq!(
        assert_covered(&frames, start + 1),
        head,
        "every seq accounted for"
    );

    // AND a resume replays through the same filter
    let epoch = subscribed["epoch"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            bob.iter()
                .find_map(|f| f["epoch"].as_str().map(str::to_owned))
        })
        .unwrap();
    phone.resume("band:demo", start, &epoch).await;
    let resumed = phone.expect("resumed").await;
    assert_eq!(resumed["seq"], head);
    let replay = phone.frames_until_pong().await;
    assert!(events_named(&replay, "file.").is_empty());
    assert_eq!(events_named(&replay, "entity.").len(), 1);
    assert_eq!(assert_covered(&replay, start + 1), head);

    // AND the snapshot for the phone has the setlist entry and not the song status
    let token = t.token("alice", &["demo"]);
    let (status, page) = t
        .http()
        .get("/sync/entities?band=demo&device=alice-phone", Some(&token))
        .await;
    assert_eq!(status, 200, "{page}");
    let types: Vec<&str> = page["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["setlist_entry"]);
    let (_, all) = t.http().get("/sync/entities?band=demo", Some(&token)).await;
    assert_eq!(all["entities"].as_array().unwrap().len(), 2);
    let (status, body) = t
        .http()
        .get("/sync/entities?band=demo&device=bob-laptop", Some(&token))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("device_taken")),
        "{body}"
    );

    // WHEN the phone asks for charts too, while connected, and backfills with a resume
    // from where it subscribed
    let reply = register(&mut phone, "alice-phone", &["setlists", "charts"]).await;
    assert_eq!(reply["categories"], json!(["setlists", "charts"]));
    phone.resume("band:demo", start, &epoch).await;
    phone.expect("resumed").await;
    let backfill = phone.frames_until_pong().await;
    // THEN it gets the 12 charts it missed, still no recordings
    let files = events_named(&backfill, "file.created");
    assert_eq!(files.len(), 12, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f["data"]["name"].as_str().unwrap().ends_with(".pdf"))
    );
    assert_eq!(assert_covered(&backfill, start + 1), head);

    // AND an unknown category is refused, naming it
    phone
        .send_register_device("alice-phone", Platform::Ios, Some(&["setlist"]))
        .await;
    let err = phone.expect("error").await;
    assert_eq!(err["code"], "invalid_request");
    assert!(
        err["message"].as_str().unwrap().contains("setlist"),
        "{err}"
    );
}
