//! Latency of the local stack, end to end: from a file written in the watched folder to
//! its `file.created` event at a subscribed WebSocket client, plus loss and order checks.
//!
//! `cargo bench -p bandsync-local --bench latency` (options after `--`:
//! `--changes N` (default 200), `--burst N` (default 200), `--debounce-ms N` (default 30,
//! the local stack's default)). Figures: RESULTS.md beside this file.

mod common;
use bandsync_local::{LocalStack, StackConfig};
use common::arg;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Every event frame, checking seqs as they come: (events, gaps or reorders seen).
struct Receiver {
    ws: Ws,
    last_seq: u64,
    disorder: u64,
}

impl Receiver {
    async fn next_event(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .ok()??
                .ok()?;
            let Message::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(&text).ok()?;
            if frame["type"] != "event" {
                continue;
            }
            let seq = frame["seq"].as_u64()?;
            if seq != self.last_seq + 1 {
                self.disorder += 1;
            }
            self.last_seq = self.last_seq.max(seq);
            return Some(frame);
        }
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
    bandsync::transport::metrics::set_enabled(false);
    let changes = arg("--changes", 200);
    let burst = arg("--burst", 200);
    let debounce_ms = arg("--debounce-ms", 30);
    let dir = tempfile::tempdir()?;
    let mut cfg = StackConfig::demo(dir.path());
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.ws_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.reconcile_every = None;
    cfg.debounce = Duration::from_millis(debounce_ms as u64);
    let debounce = cfg.debounce;
    let stack = LocalStack::start(cfg).await?;
    let folder = stack.config.folder.clone();
    let (mut ws, _) = connect_async(format!(
        "{}?token={}",
        stack.ws_url,
        stack.token("bench", &["demo"])
    ))
    .await?;
    ws.send(Message::Text(
        json!({"action": "subscribe", "channel": "band:demo"})
            .to_string()
            .into(),
    ))
    .await?;
    let mut rx = Receiver {
        ws,
        last_seq: 0,
        disorder: 0,
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
        rx.last_seq, rx.disorder
    );
    stack.shutdown().await;
    anyhow::ensure!(rx.disorder == 0, "events arrived out of order or with gaps");
    anyhow::ensure!(
        seq_summary.lost + burst_summary.lost == 0,
        "changes were lost"
    );
    Ok(())
}
