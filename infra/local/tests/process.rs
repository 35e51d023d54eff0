//! The real `bandsync-local` binary, as a newcomer runs it: it starts on its own, serves
//! health, mints tokens that it accepts, and after a crash (SIGKILL) and a restart on the
//! same data directory nothing it had accepted is lost; a second process on the same data
//! directory is refused; a crash in the middle of a device's push loses and doubles
//! nothing it was told.

use bandsync::adapters::local::EmbeddedStore;
use bandsync::model::DeviceId;
use bandsync::ports::EntityStore;
use bandsync_testkit::stack::{Client, Http, Platform, eventually, put};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bandsync-local");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, http: u16, ws: u16) -> Proc {
    let child = Command::new(BIN)
        .current_dir(dir)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--ws-addr",
            &format!("127.0.0.1:{ws}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    Proc(child)
}

async fn wait_healthy(http: u16, ws: u16) {
    eventually("the stack comes up", || async {
        let up = |port| tokio::net::TcpStream::connect(("127.0.0.1", port));
        (up(http).await.is_ok() && up(ws).await.is_ok()).then_some(())
    })
    .await;
}

fn token(dir: &Path) -> String {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["token", "--user", "alice", "--band", "demo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "token subcommand: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Event frames until one `sync.completed` that follows a `file.created` of `path`.
async fn events_until_created(ws: &mut Client, path: &str) -> Vec<Value> {
    ws.events_until(|events| {
        let created = events
            .iter()
            .position(|e| e["event"] == "file.created" && e["data"]["path"] == path);
        created.is_some_and(|i| events[i..].iter().any(|e| e["event"] == "sync.completed"))
    })
    .await
}

#[tokio::test]
async fn the_binary_survives_a_crash_without_losing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (http, ws_port) = (free_port(), free_port());
    let tok = token(dir.path());
    let proc = start(dir.path(), http, ws_port);
    wait_healthy(http, ws_port).await;

    // A second process on the same data dir is refused, and says why.
    let mut second = Proc(
        Command::new(BIN)
            .current_dir(dir.path())
            .args(["--http-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the second binary starts"),
    );
    let status = eventually("the second process exits", || {
        std::future::ready(second.0.try_wait().unwrap())
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the second one fails: {stderr}");
    assert!(
        stderr.contains("another bandsync-local is running"),
        "{stderr}"
    );

    // The minted token is accepted.
    let url = format!("ws://127.0.0.1:{ws_port}/local");
    let mut ws = Client::connect(&url, &tok).await;
    ws.subscribe("band:demo").await;
    put(dir.path().join("bandsync-demo/one.pdf"), b"1");
    let first = events_until_created(&mut ws, "one.pdf").await;
    let last = first.last().unwrap()["seq"].as_u64().unwrap();
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();

    // Crash: no shutdown, no flush.
    drop(proc);
    put(dir.path().join("bandsync-demo/two.pdf"), b"2");

    let _proc = start(dir.path(), http, ws_port);
    wait_healthy(http, ws_port).await;
    // Tokens survive a restart.
    let mut ws = Client::connect(&url, &tok).await;
    ws.resume("band:demo", last, &epoch).await;
    let after = events_until_created(&mut ws, "two.pdf").await;
    // A resume may deliver a seq twice (replay and live): compare the distinct ones.
    let seqs: Vec<u64> = after
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        seqs.first(),
        Some(&(last + 1)),
        "resumes right after the last seen seq"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {seqs:?}"
    );
    assert!(
        after.iter().all(|e| e["epoch"] == epoch.as_str()),
        "same epoch after a crash"
    );
}

/// The `m`th of the crash test's mutations (from 1): entity `e<k>` of [`ENTRIES`] is
/// created by the first mutation that names it and patched by each later one, every one
/// adding one play, so an entity's plays count the mutations applied to it.
fn crash_mutation(mid: u64) -> Value {
    let (k, step) = ((mid - 1) % ENTRIES, (mid - 1) / ENTRIES);
    let (op, fields) = if step == 0 {
        (
            "create",
            json!({"title": format!("song {k}"), "plays": {"$inc": 1}}),
        )
    } else {
        ("patch", json!({"plays": {"$inc": 1}}))
    };
    json!({"mid": mid, "type": "setlist_entry", "id": format!("e{k}"), "op": op,
           "base_version": step, "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

/// Entities of the crash test, and mutations of each.
const ENTRIES: u64 = 30;
const ROUNDS: u64 = 10;
const FRAME: usize = 50;

async fn crash_push(ws: &mut Client, frame: &[Value], reference: usize) {
    ws.push("demo", "crash-phone", json!(reference), frame.to_vec())
        .await;
}

async fn register_crash_device(ws: &mut Client) {
    let reply = ws.register_device("crash-phone", Platform::Ios, None).await;
    assert_eq!(reply["device"], "crash-phone");
}

/// Every event of band:demo from the start of its log, by seq (a resume may deliver one
/// twice), asking again while the replay says there is more.
async fn whole_log(ws: &mut Client) -> BTreeMap<u64, Value> {
    let mut log = BTreeMap::new();
    let mut after = 0;
    loop {
        ws.send(json!({"action": "resume", "channel": "band:demo", "after_seq": after}))
            .await;
        let resumed = ws.expect("resumed").await;
        for f in ws.frames_until_pong().await {
            if f["type"] == "event" {
                log.insert(f["seq"].as_u64().unwrap(), f);
            }
        }
        after = resumed["seq"].as_u64().unwrap();
        if resumed["more"] != true {
            return log;
        }
    }
}

#[tokio::test]
async fn a_crash_mid_push_loses_and_doubles_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (http, ws_port) = (free_port(), free_port());
    let tok = token(dir.path());
    let url = format!("ws://127.0.0.1:{ws_port}/local");
    let total = ENTRIES * ROUNDS;
    let mutations: Vec<Value> = (1..=total).map(crash_mutation).collect();

    // GIVEN a device sending its whole queue in frames, all at once
    let proc = start(dir.path(), http, ws_port);
    wait_healthy(http, ws_port).await;
    let mut ws = Client::connect(&url, &tok).await;
    register_crash_device(&mut ws).await;
    for (i, frame) in mutations.chunks(FRAME).enumerate() {
        crash_push(&mut ws, frame, i).await;
    }
    // WHEN the process is killed (SIGKILL) in the middle of the third frame: a reader
    // of its database (WAL lets another process read) watches the device's mid move
    let db = EmbeddedStore::open(&dir.path().join(".bandsync/bandsync.db")).unwrap();
    let device = DeviceId::parse("crash-phone").unwrap();
    let kill_at = 2 * FRAME as u64 + FRAME as u64 / 3;
    let committed = eventually("the device is in its third frame", || async {
        let d = db.get_device(&device).await.unwrap()?;
        (d.next_mid > kill_at).then_some(d.next_mid - 1)
    })
    .await;
    drop(proc);
    drop(db);
    // What the device was told before the kill: the answers that reached its socket.
    let mut acked: BTreeMap<u64, Value> = BTreeMap::new();
    while let Some(f) = ws.recv(std::time::Duration::from_millis(0)).await {
        for r in f["results"].as_array().into_iter().flatten() {
            assert_eq!(r["status"], "applied", "{r}");
            acked.insert(r["mid"].as_u64().unwrap(), r.clone());
        }
    }
    assert!(
        (acked.len() as u64) < total && committed < total,
        "the kill came before the last frame was answered ({} acked, {committed} committed)",
        acked.len()
    );

    // AND it restarts on the same data dir, and the device, which lost whatever acks
    // were not read, pushes everything again from mid 1
    let _proc = start(dir.path(), http, ws_port);
    wait_healthy(http, ws_port).await;
    let mut ws = Client::connect(&url, &tok).await;
    register_crash_device(&mut ws).await;
    let mut verdicts = Vec::new();
    for (i, frame) in mutations.chunks(FRAME).enumerate() {
        crash_push(&mut ws, frame, i).await;
        let reply = ws.expect("push_result").await;
        assert_eq!(reply["ref"], i);
        verdicts.extend(reply["results"].as_array().unwrap().clone());
    }

    // THEN every mid has exactly one verdict, in order
    let mids: Vec<u64> = verdicts
        .iter()
        .map(|v| v["mid"].as_u64().unwrap())
        .collect();
    assert_eq!(mids, (1..=total).collect::<Vec<_>>());
    // AND the acknowledged ones are duplicates with their original verdict
    for (mid, before) in &acked {
        let v = &verdicts[*mid as usize - 1];
        assert_eq!(v["status"], "duplicate", "mid {mid}: {v}");
        assert_eq!(v["original_status"], "applied", "mid {mid}: {v}");
        assert_eq!(v["version"], before["version"], "mid {mid}: {v}");
        assert_eq!(v["seq"], before["seq"], "mid {mid}: {v}");
    }
    // AND what was committed before the kill, answered or not, is a duplicate of its
    // applied verdict; the rest is applied now
    for v in &verdicts {
        let mid = v["mid"].as_u64().unwrap();
        let ok = match v["status"].as_str() {
            Some("duplicate") => v["original_status"] == "applied",
            Some("applied") => mid > committed,
            _ => false,
        };
        assert!(ok, "mid {mid} (committed up to {committed}): {v}");
    }
    // AND nothing was applied twice: each entity at version ROUNDS with ROUNDS plays
    let (status, page) = Http::new(&format!("http://127.0.0.1:{http}"))
        .get(
            "/sync/entities?band=demo&type=setlist_entry&limit=1000",
            Some(&tok),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let entities = page["entities"].as_array().unwrap();
    assert_eq!(entities.len() as u64, ENTRIES);
    for e in entities {
        assert_eq!(e["version"], ROUNDS, "{e}");
        assert_eq!(e["fields"]["plays"], ROUNDS, "{e}");
    }
    // AND the band's log is gapless with exactly one entity event per mutation
    let log = whole_log(&mut ws).await;
    let seqs: Vec<u64> = log.keys().copied().collect();
    assert_eq!(seqs.first(), Some(&1));
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {seqs:?}"
    );
    let entity_mids: Vec<u64> = log
        .values()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("entity."))
        })
        .map(|e| e["data"]["mid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        entity_mids,
        (1..=total).collect::<Vec<_>>(),
        "one event per mutation, in order"
    );
    // AND every verdict names its event's seq
    for v in &verdicts {
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(log[&seq]["data"]["mid"], v["mid"], "{v}");
    }
}
