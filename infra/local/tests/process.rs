//! The real `bandsync-local` binary, as a newcomer runs it: it starts on its own, serves
//! health, mints tokens that it accepts, and after a crash (SIGKILL) and a restart on the
//! same data directory nothing it had accepted is lost; a second process on the same data
//! directory is refused.

use bandsync_testkit::stack::{Client, eventually, put};
use serde_json::Value;
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
