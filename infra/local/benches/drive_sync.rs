//! Time to sync N Drive changes end to end on the local stack against the fake Google
//! APIs, and the Google API calls made per change.
//!
//! N-1 files are created in the band folder at the fake while its push notifications are
//! paused (as if they happened while nobody was notified); then push is resumed and the
//! N-th file is created. Its notification goes to `/webhooks/google`, the job through
//! the sync queue, the worker pages through `changes.list` (1000 changes a page) and
//! records and publishes every change, and the broadcaster pushes the events to a
//! subscribed WebSocket client. The clock runs from the N-th create to the frame of the
//! `sync.completed` that follows the N-th `file.created` at the client.
//!
//! `cargo bench -p bandsync-local --bench drive_sync` (options after `--`:
//! `--changes N`, default 10000; `--runs N`, default 3). Figures: RESULTS.md beside this
//! file.

mod common;
use bandsync_local::{LocalStack, StackConfig};
use common::arg;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// What one run saw.
struct Run {
    to_completed: Duration,
    to_last_event: Duration,
    created: usize,
    disorder: u64,
    api_calls: usize,
    notifications: usize,
}

async fn run(changes: usize) -> anyhow::Result<Run> {
    bandsync::transport::metrics::set_enabled(false);
    let dir = tempfile::tempdir()?;
    let mut cfg = StackConfig::demo(dir.path());
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.ws_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.google_fake = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.reconcile_every = None;
    cfg.channels_every = Duration::from_secs(3600);
    let stack = LocalStack::start(cfg).await?;
    let fake = stack.google.clone().expect("the fake runs");
    let token = stack.token("bench", &["demo"]);
    let (mut ws, _) = connect_async(format!("{}?token={token}", stack.ws_url)).await?;
    ws.send(Message::text(
        json!({"action": "subscribe", "channel": "band:demo"}).to_string(),
    ))
    .await?;

    let mut last_seq = 0u64;
    let mut disorder = 0u64;
    // Wait out the first pass (the seeded tree).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_done = false;
    while !first_done {
        let frame = next_event(&mut ws, deadline).await?;
        track(&frame, &mut last_seq, &mut disorder);
        first_done = frame["event"] == "sync.completed";
    }

    fake.drive.push().set_paused(true);
    for i in 0..changes.saturating_sub(1) {
        fake.drive.create_file(
            &fake.charts,
            &format!("chart-{i:05}.pdf"),
            "application/pdf",
            format!("chart {i}").as_bytes(),
        );
    }
    fake.drive.push().set_paused(false);
    fake.drive.clear_requests();
    let notified_before = fake.drive.push().deliveries().len();
    let started = Instant::now();
    fake.drive.create_file(
        &fake.charts,
        "chart-last.pdf",
        "application/pdf",
        b"the last one",
    );

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut created = 0;
    let mut to_last_event = Duration::ZERO;
    loop {
        let frame = next_event(&mut ws, deadline).await?;
        track(&frame, &mut last_seq, &mut disorder);
        match frame["event"].as_str() {
            Some("file.created") => {
                created += 1;
                to_last_event = started.elapsed();
            }
            Some("sync.completed") if created >= changes => break,
            _ => {}
        }
    }
    let to_completed = started.elapsed();
    let api_calls = fake
        .drive
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/drive/"))
        .count();
    let notifications = fake.drive.push().deliveries().len() - notified_before;
    stack.shutdown().await;
    Ok(Run {
        to_completed,
        to_last_event,
        created,
        disorder,
        api_calls,
        notifications,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_event(ws: &mut Ws, deadline: Instant) -> anyhow::Result<Value> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for events"))?
            .ok_or_else(|| anyhow::anyhow!("the socket closed"))??;
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(&text)?;
        if frame["type"] == "event" {
            return Ok(frame);
        }
    }
}

fn track(frame: &Value, last_seq: &mut u64, disorder: &mut u64) {
    let seq = frame["seq"].as_u64().unwrap_or_default();
    if seq != *last_seq + 1 {
        *disorder += 1;
    }
    *last_seq = (*last_seq).max(seq);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let changes = arg("--changes", 10_000).max(1);
    let runs = arg("--runs", 3).max(1);
    println!(
        "| changes | to last file event ms | to sync.completed ms | changes/s | lost | gaps or reorders | Drive API calls | calls per change | notifications |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for _ in 0..runs {
        let r = run(changes).await?;
        let lost = changes.saturating_sub(r.created);
        failed |= lost > 0 || r.disorder > 0;
        println!(
            "| {changes} | {:.0} | {:.0} | {:.0} | {lost} | {} | {} | {:.4} | {} |",
            r.to_last_event.as_secs_f64() * 1000.0,
            r.to_completed.as_secs_f64() * 1000.0,
            changes as f64 / r.to_completed.as_secs_f64(),
            r.disorder,
            r.api_calls,
            r.api_calls as f64 / changes as f64,
            r.notifications,
        );
    }
    anyhow::ensure!(!failed, "changes were lost or came out of order");
    Ok(())
}
