//! The real `bandsync-local` binary, as a newcomer runs it: it starts on its own, serves
//! health, mints tokens that it accepts, and after a crash (SIGKILL) and a restart on the
//! same data directory nothing it had accepted is lost.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_bandsync-local");
const WAIT: Duration = Duration::from_secs(20);

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
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .is_ok()
            && tokio::net::TcpStream::connect(("127.0.0.1", ws))
                .await
                .is_ok();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the stack did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write whole (rename into place), so the sync never sees a half-written file.
fn put(path: &Path, content: &[u8]) {
    let tmp = path.with_file_name(".incoming.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Event frames until one `sync.completed` that follows a `file.created` of `path`.
async fn events_until_created(ws: &mut Ws, path: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut created = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let f: Value = serde_json::from_str(&t).unwrap();
        if f["type"] != "event" {
            continue;
        }
        created |= f["event"] == "file.created" && f["data"]["path"] == path;
        let done = created && f["event"] == "sync.completed";
        events.push(f);
        if done {
            return events;
        }
    }
}

#[tokio::test]
async fn the_binary_survives_a_crash_without_losing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (http, ws_port) = (free_port(), free_port());
    let tok = token(dir.path());
    let proc = start(dir.path(), http, ws_port);
    wait_healthy(http, ws_port).await;

    let url = format!("ws://127.0.0.1:{ws_port}/local?token={tok}");
    let (mut ws, _) = connect_async(&url)
        .await
        .expect("the minted token is accepted");
    send(
        &mut ws,
        json!({"action": "subscribe", "channel": "band:demo"}),
    )
    .await;
    put(&dir.path().join("bandsync-demo/one.pdf"), b"1");
    let first = events_until_created(&mut ws, "one.pdf").await;
    let last = first.last().unwrap()["seq"].as_u64().unwrap();
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();

    // Crash: no shutdown, no flush.
    drop(proc);
    put(&dir.path().join("bandsync-demo/two.pdf"), b"2");

    let _proc = start(dir.path(), http, ws_port);
    wait_healthy(http, ws_port).await;
    let (mut ws, _) = connect_async(&url).await.expect("tokens survive a restart");
    send(
        &mut ws,
        json!({"action": "resume", "channel": "band:demo", "after_seq": last, "epoch": epoch}),
    )
    .await;
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
