//! Latency of the local stack, end to end: from a file written in the watched folder to
//! its `file.created` event at a subscribed WebSocket client, plus loss and order checks.
//!
//! `cargo bench -p bandsync-local --bench latency` (options after `--`:
//! `--changes N` (default 200), `--burst N` (default 200), `--debounce-ms N` (default 30,
//! the local stack's default)). Figures: RESULTS.md beside this file.

use bandsync_local::LocalStack;
use bandsync_testkit::stack::{Client, SeqOrder, arg, loopback_config};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Every event frame, checking seqs as they come.
struct Receiver {
    client: Client,
    order: SeqOrder,
}

impl Receiver {
    async fn next_event(&mut self, deadline: Instant) -> Option<Value> {
        let frame = self
            .client
            .next_event(tokio::time::Instant::from_std(deadline))
            .await?;
        self.order.observe(&frame);
        Some(frame)
    }
}

struct Summary {
    label: String,
    latencies_ms: Vec<f64>,
    lost: usize,
    total: Duration,
}

impl Summary {
    fn print(&mut self) {
        self.latencies_ms.sort_by(|a, b| a.total_cmp(b));
        let l = &self.latencies_ms;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} |",
            self.label,
            l.len(),
            percentile(l, 50.0),
            percentile(l, 90.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            self.lost,
            l.len() as f64 / self.total.as_secs_f64(),
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let changes = arg("--changes", 200);
    let burst = arg("--burst", 200);
    let debounce_ms = arg("--debounce-ms", 30);
    let dir = tempfile::tempdir()?;
    let mut cfg = loopback_config(dir.path());
    cfg.debounce = Duration::from_millis(debounce_ms as u64);
    let debounce = cfg.debounce;
    let stack = LocalStack::start(cfg).await?;
    let folder = stack.config.folder.clone();
    let mut client = Client::connect(&stack.ws_url, &stack.token("bench", &["demo"])).await;
    let subscribed = client.subscribe("band:demo").await;
    let mut rx = Receiver {
        client,
        order: SeqOrder::since(&subscribed),
    };

    println!(
        "local stack latency, file write -> file.created at a WebSocket client (debounce {} ms)",
        debounce.as_millis()
    );
    println!();
    println!("| mode | changes | p50 ms | p90 ms | p99 ms | max ms | lost | changes/s |");
    println!("|---|---|---|---|---|---|---|---|");

    // Sequential: one change at a time, each waited for.
    let started = Instant::now();
    let mut seq_summary = Summary {
        label: "sequential".into(),
        latencies_ms: Vec::new(),
        lost: 0,
        total: Duration::ZERO,
    };
    for i in 0..changes {
        let name = format!("seq-{i:05}.pdf");
        let t0 = Instant::now();
        std::fs::write(folder.join(&name), format!("change {i}"))?;
        let deadline = t0 + Duration::from_secs(10);
        loop {
            match rx.next_event(deadline).await {
                Some(e) if e["event"] == "file.created" && e["data"]["path"] == name.as_str() => {
                    seq_summary
                        .latencies_ms
                        .push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                Some(_) => continue,
                None => {
                    seq_summary.lost += 1;
                    break;
                }
            }
        }
    }
    seq_summary.total = started.elapsed();
    seq_summary.print();

    // Burst: every change written at once; latency of each from its own write.
    let mut written: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    for i in 0..burst {
        let name = format!("burst-{i:05}.pdf");
        std::fs::write(folder.join(&name), format!("burst {i}"))?;
        written.insert(name, Instant::now());
    }
    let mut burst_summary = Summary {
        label: "burst".into(),
        latencies_ms: Vec::new(),
        lost: 0,
        total: Duration::ZERO,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !written.is_empty() {
        let Some(e) = rx.next_event(deadline).await else {
            break;
        };
        if e["event"] != "file.created" {
            continue;
        }
        if let Some(t0) = e["data"]["path"].as_str().and_then(|p| written.remove(p)) {
            burst_summary
                .latencies_ms
                .push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    burst_summary.lost = written.len();
    burst_summary.total = started.elapsed();
    burst_summary.print();

    println!();
    println!(
        "events received: {}, gaps or reorders: {}",
        rx.order.last_seq, rx.order.disorder
    );
    stack.shutdown().await;
    anyhow::ensure!(
        rx.order.disorder == 0,
        "events arrived out of order or with gaps"
    );
    anyhow::ensure!(
        seq_summary.lost + burst_summary.lost == 0,
        "changes were lost"
    );
    Ok(())
}
