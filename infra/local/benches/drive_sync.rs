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

use bandsync_local::LocalStack;
use bandsync_testkit::stack::{Client, SeqOrder, arg, loopback_config};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    let dir = tempfile::tempdir()?;
    let mut cfg = loopback_config(dir.path());
    cfg.google_fake = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.channels_every = Duration::from_secs(3600);
    let stack = LocalStack::start(cfg).await?;
    let fake = stack.google.clone().expect("the fake runs");
    let token = stack.token("bench", &["demo"]);
    let mut ws = Client::connect(&stack.ws_url, &token).await;
    let subscribed = ws.subscribe("band:demo").await;

    let mut order = SeqOrder::since(&subscribed);
    // Wait out the first pass (the seeded tree).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_done = false;
    while !first_done {
        let frame = next_event(&mut ws, deadline).await?;
        order.observe(&frame);
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
        order.observe(&frame);
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
        disorder: order.disorder,
        api_calls,
        notifications,
    })
}

/// The next event frame before `deadline`.
async fn next_event(ws: &mut Client, deadline: Instant) -> anyhow::Result<Value> {
    ws.next_event(tokio::time::Instant::from_std(deadline))
        .await
        .ok_or_else(|| anyhow::anyhow!("no event in time (timed out, or the socket closed)"))
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
