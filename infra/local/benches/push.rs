//! Two-way sync on the local stack, end to end with real WebSocket clients: members'
//! pushes, beside the one-way path of today (a file dropped in the watched folder) in
//! the same run, on the same stack.
//!
//! - latency: push -> `push_result` at the pushing device and push -> the `entity.*`
//!   event at another member's socket, with 1 and with N concurrent pushing devices
//!   (each its own member and connection, one band), one mutation a frame;
//! - throughput: mutations applied per second for one band (devices pushing frames of
//!   100) and for many bands (one device each);
//! - snapshot: a new device loads the band of the one-band run (`GET /sync/entities`
//!   pages) and goes live (`resume` from the page's seq until `resumed`).
//!
//! `cargo bench -p bandsync-local --bench push` (options after `--`, defaults in
//! brackets: `--files N` [100] one-way changes, `--pushes N` [200] pushes of the single
//! device, `--devices N` [100] concurrent devices, `--pushes-each N` [10] pushes of each
//! of them, `--band-devices N` [10] and `--band-mutations N` [1000] for the one-band
//! throughput (and the snapshot: devices x mutations entities), `--bands N` [100] and
//! `--bands-mutations N` [200] for the many-band one). A device may push 1,000
//! mutations at once (the rate limit's bucket), so per-device counts above that are
//! held to 300 a second. Figures: RESULTS.md beside this file.

use bandsync_local::LocalStack;
use bandsync_testkit::stack::{Client, Http, Platform, SeqOrder, arg, loopback_config};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long any one part may wait for what it is owed before it counts it lost.
const PART_WAIT: Duration = Duration::from_secs(60);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99, max of `latencies` (ms), sorted in place.
fn stats(latencies: &mut [f64]) -> (f64, f64, f64) {
    latencies.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(latencies, 50.0),
        percentile(latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
    )
}

fn row(label: &str, latencies: &mut [f64], lost: usize, target: Option<f64>) -> f64 {
    let (p50, p99, max) = stats(latencies);
    let verdict = match target {
        Some(t) if p99 < t => format!("under {t} ms"),
        Some(t) => format!("OVER {t} ms"),
        None => "-".into(),
    };
    println!(
        "| {label} | {} | {p50:.1} | {p99:.1} | {max:.1} | {lost} | {verdict} |",
        latencies.len()
    );
    p50
}

/// A setlist entry as a member's app writes one: every policy of the type but text.
fn entry(mid: u64, id: &str, n: u64) -> Value {
    json!({"mid": mid, "type": "setlist_entry", "id": id, "op": "create", "base_version": 0,
           "fields": {"title": format!("Song number {n}"), "key": "Bb",
                      "position": format!("V{n:06}"), "tags": {"$add": ["set-1", "ballad"]},
                      "plays": {"$inc": 1}},
           "ts": "2026-12-01T20:00:00Z"})
}

/// A member's connection with its device registered.
async fn device(ws_url: &str, token: &str, device: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(ws_url, token).await;
    let reply = c.register_device(device, Platform::Other, None).await;
    anyhow::ensure!(reply["device"] == device, "registered {device}: {reply}");
    Ok(c)
}

/// The answer to the push in flight: its verdicts, or the error that refused it.
async fn answer(c: &mut Client) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + PART_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = c.recv(left).await else {
            anyhow::bail!("no push_result within {PART_WAIT:?}");
        };
        match frame["type"].as_str() {
            Some("push_result") => {
                return Ok(frame["results"].as_array().cloned().unwrap_or_default());
            }
            Some("error") => anyhow::bail!("push refused: {frame}"),
            _ => continue,
        }
    }
}

/// When each (device, mid) pushed was sent, and when its answer came.
type Timings = Vec<(String, u64, Instant, Instant)>;

/// `pushes` single-mutation pushes from `name`, one after another.
async fn push_one_by_one(
    mut c: Client,
    band: String,
    name: String,
    pushes: u64,
) -> anyhow::Result<Timings> {
    let mut out = Vec::with_capacity(pushes as usize);
    for mid in 1..=pushes {
        let id = format!("{name}-{mid}");
        let sent = Instant::now();
        c.push(&band, &name, json!(mid), vec![entry(mid, &id, mid)])
            .await;
        let results = answer(&mut c).await?;
        let acked = Instant::now();
        anyhow::ensure!(
            results.len() == 1 && results[0]["status"] == "applied",
            "{name} mid {mid}: {results:?}"
        );
        out.push((name.clone(), mid, sent, acked));
    }
    c.close().await;
    Ok(out)
}

/// The listener's `entity.*` events until `expected` of them or the deadline: when
/// each (device, mid) arrived. Checks seqs are gapless as they come.
async fn listen_entities(
    mut c: Client,
    mut order: SeqOrder,
    expected: usize,
) -> (HashMap<(String, u64), Instant>, SeqOrder, Client) {
    let mut seen = HashMap::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + PART_WAIT;
    while seen.len() < expected {
        let Some(e) = c.next_event(deadline).await else {
            break;
        };
        let at = Instant::now();
        order.observe(&e);
        let is_entity = e["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("entity."));
        if let (true, Some(d), Some(mid)) = (
            is_entity,
            e["data"]["device"].as_str(),
            e["data"]["mid"].as_u64(),
        ) {
            seen.insert((d.to_owned(), mid), at);
        }
    }
    (seen, order, c)
}

struct Latency {
    result_ms: Vec<f64>,
    event_ms: Vec<f64>,
    lost_events: usize,
    elapsed: Duration,
}

/// `devices` members pushing at once into band demo, `pushes` each, and the listener.
async fn push_latency(
    stack: &bandsync_local::RunningStack,
    listener: Client,
    order: SeqOrder,
    run: &str,
    devices: usize,
    pushes: u64,
) -> anyhow::Result<(Latency, Client, SeqOrder)> {
    let mut clients = Vec::with_capacity(devices);
    for i in 0..devices {
        let name = format!("device-{run}-{i:03}");
        let token = stack.token(&format!("member-{name}"), &["demo"]);
        clients.push((name.clone(), device(&stack.ws_url, &token, &name).await?));
    }
    let expected = devices * pushes as usize;
    let listening = tokio::spawn(listen_entities(listener, order, expected));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(name, c)| tokio::spawn(push_one_by_one(c, "demo".into(), name, pushes)))
        .collect();
    let mut timings = Vec::with_capacity(expected);
    for t in tasks {
        timings.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let (seen, order, listener) = listening.await?;
    let mut result_ms = Vec::with_capacity(expected);
    let mut event_ms = Vec::with_capacity(expected);
    let mut lost_events = 0;
    for (name, mid, sent, acked) in timings {
        result_ms.push(ms(acked - sent));
        match seen.get(&(name, mid)) {
            Some(at) => event_ms.push(ms(at.saturating_duration_since(sent))),
            None => lost_events += 1,
        }
    }
    Ok((
        Latency {
            result_ms,
            event_ms,
            lost_events,
            elapsed,
        },
        listener,
        order,
    ))
}

/// The latency run's two rows; returns (label, p50 verdict, p50 event, pushes/s).
fn latency_rows(
    label: &str,
    mut l: Latency,
    result_target: f64,
    event_target: f64,
) -> (String, f64, f64, f64) {
    let r50 = row(
        &format!("{label}: push -> push_result"),
        &mut l.result_ms,
        0,
        Some(result_target),
    );
    let e50 = row(
        &format!("{label}: push -> other member's entity event"),
        &mut l.event_ms,
        l.lost_events,
        Some(event_target),
    );
    let rate = l.result_ms.len() as f64 / l.elapsed.as_secs_f64();
    (label.to_owned(), r50, e50, rate)
}

/// One way, as latency.rs measures it: a file dropped in the watched folder -> its
/// `file.created` at the listener, one change at a time.
async fn one_way(
    folder: &std::path::Path,
    listener: &mut Client,
    order: &mut SeqOrder,
    files: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut latencies = Vec::with_capacity(files);
    let mut lost = 0;
    for i in 0..files {
        let name = format!("oneway-{i:05}.pdf");
        let t0 = Instant::now();
        std::fs::write(folder.join(&name), format!("change {i}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match listener.next_event(deadline).await {
                Some(e) => {
                    order.observe(&e);
                    if e["event"] == "file.created" && e["data"]["path"] == name.as_str() {
                        latencies.push(ms(t0.elapsed()));
                        break;
                    }
                }
                None => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    Ok((latencies, lost))
}

/// `per_device` mutations from each of `devices` (band, device name, token), in frames
/// of 100 sent one after another per device, all devices at once. (applied, elapsed).
async fn throughput(
    ws_url: &str,
    devices: Vec<(String, String, String)>,
    per_device: u64,
) -> anyhow::Result<(u64, Duration)> {
    let mut clients = Vec::with_capacity(devices.len());
    for (band, name, token) in devices {
        clients.push((band, name.clone(), device(ws_url, &token, &name).await?));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(band, name, mut c)| {
            tokio::spawn(async move {
                let mut applied = 0u64;
                let mids: Vec<u64> = (1..=per_device).collect();
                for (f, frame) in mids.chunks(100).enumerate() {
                    let mutations = frame
                        .iter()
                        .map(|&mid| entry(mid, &format!("{name}-{mid}"), mid))
                        .collect();
                    c.push(&band, &name, json!(f), mutations).await;
                    let results = answer(&mut c).await?;
                    applied += results.iter().filter(|r| r["status"] == "applied").count() as u64;
                }
                c.close().await;
                anyhow::Ok(applied)
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        applied += t.await??;
    }
    Ok((applied, started.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let files = arg("--files", 100);
    let pushes = arg("--pushes", 200) as u64;
    let devices = arg("--devices", 100);
    let pushes_each = arg("--pushes-each", 10) as u64;
    let band_devices = arg("--band-devices", 10);
    let band_mutations = arg("--band-mutations", 1000) as u64;
    let bands = arg("--bands", 100);
    let bands_mutations = arg("--bands-mutations", 200) as u64;

    let dir = tempfile::tempdir()?;
    let mut cfg = loopback_config(dir.path());
    cfg.debounce = Duration::from_millis(30);
    let stack = LocalStack::start(cfg).await?;
    let folder = stack.config.folder.clone();
    let mut listener = Client::connect(&stack.ws_url, &stack.token("listener", &["demo"])).await;
    let subscribed = listener.subscribe("band:demo").await;
    let mut order = SeqOrder::since(&subscribed);

    println!("## latency (one band; the listener is another member's socket on band:demo)");
    println!();
    println!("| path | samples | p50 ms | p99 ms | max ms | lost | p99 target |");
    println!("|---|---|---|---|---|---|---|");
    // The one-way path first, on the same stack and socket, as latency.rs measures it.
    let (mut file_ms, file_lost) = one_way(&folder, &mut listener, &mut order, files).await?;
    let file_p50 = row(
        "one-way: file write -> file.created (debounce 30 ms)",
        &mut file_ms,
        file_lost,
        None,
    );
    let mut ratios = Vec::new();
    let mut lost_total = file_lost;
    for (run, n, each, result_target, event_target) in [
        ("one", 1, pushes, 15.0, 25.0),
        ("many", devices, pushes_each, 15.0, 25.0),
    ] {
        let (l, back, o) = push_latency(&stack, listener, order, run, n, each).await?;
        listener = back;
        order = o;
        let label = format!("{n} device(s)");
        lost_total += l.lost_events;
        ratios.push(latency_rows(&label, l, result_target, event_target));
    }
    // The same many-device run on a stack whose broadcaster delivers each message's own
    // events only (no coalescing), side by side.
    {
        let dir = tempfile::tempdir()?;
        let mut cfg = loopback_config(dir.path());
        cfg.broadcast_coalesce = 0;
        let plain = LocalStack::start(cfg).await?;
        let mut watcher = Client::connect(&plain.ws_url, &plain.token("listener", &["demo"])).await;
        let subscribed = watcher.subscribe("band:demo").await;
        let (l, back, o) = push_latency(
            &plain,
            watcher,
            SeqOrder::since(&subscribed),
            "plain",
            devices,
            pushes_each,
        )
        .await?;
        lost_total += l.lost_events + o.disorder as usize;
        let label = format!("{devices} device(s), coalescing off");
        ratios.push(latency_rows(&label, l, 15.0, 25.0));
        back.close().await;
        plain.shutdown().await;
    }
    println!();
    for (label, r50, e50, rate) in &ratios {
        println!(
            "{label}: {rate:.0} pushes/s; p50 push -> event is {:.2}x the one-way p50 \
             (push -> push_result {:.2}x)",
            e50 / file_p50,
            r50 / file_p50
        );
    }
    println!(
        "listener: events up to seq {}, gaps or reorders: {}",
        order.last_seq, order.disorder
    );
    listener.close().await;

    println!();
    println!("## throughput (frames of 100 mutations, one device a member)");
    println!();
    println!("| run | devices | mutations | applied | elapsed ms | mutations/s |");
    println!("|---|---|---|---|---|---|");
    // One band, several devices; then one device in each of many bands.
    let one_band: Vec<_> = (0..band_devices)
        .map(|i| ("snap".to_owned(), format!("device-bulk-{i:03}")))
        .collect();
    let many: Vec<_> = (0..bands)
        .map(|i| (format!("b{i:03}"), format!("device-solo-{i:03}")))
        .collect();
    let mut counts = Vec::new();
    for (label, run, per_device) in [
        ("one band".to_owned(), one_band, band_mutations),
        (format!("{bands} bands"), many, bands_mutations),
    ] {
        let n = run.len();
        let run: Vec<_> = run
            .into_iter()
            .map(|(band, name)| {
                let token = stack.token(&format!("member-{name}"), &[band.as_str()]);
                (band, name, token)
            })
            .collect();
        let (applied, took) = throughput(&stack.ws_url, run, per_device).await?;
        let wanted = n as u64 * per_device;
        println!(
            "| {label} | {n} | {wanted} | {applied} | {:.0} | {:.0} |",
            ms(took),
            applied as f64 / took.as_secs_f64()
        );
        counts.push((applied, wanted));
    }
    let wanted_one = counts[0].1;

    // A new device of band snap: the snapshot's pages, then live from their seq.
    println!();
    println!("## snapshot (a new device loads band snap and goes live)");
    println!();
    let token = stack.token("newcomer", &["snap"]);
    let http = Http::new(&stack.http_url);
    let started = Instant::now();
    let mut loaded = 0usize;
    let mut pages = 0usize;
    let mut after: Option<String> = None;
    let mut snapshot_seq = None;
    let mut epoch = None;
    loop {
        let path = match &after {
            Some(a) => format!("/sync/entities?band=snap&limit=1000&after={a}"),
            None => "/sync/entities?band=snap&limit=1000".to_owned(),
        };
        let (status, page) = http.get(&path, Some(&token)).await;
        anyhow::ensure!(status == 200, "GET {path}: {status} {page}");
        pages += 1;
        loaded += page["entities"].as_array().map_or(0, Vec::len);
        // The first page's seq: every later event is newer than or in the pages.
        snapshot_seq.get_or_insert(page["seq"].as_u64().unwrap_or(0));
        if epoch.is_none() {
            epoch = page["epoch"].as_str().map(str::to_owned);
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let load = started.elapsed();
    let mut newcomer = Client::connect(&stack.ws_url, &token).await;
    let seq = snapshot_seq.unwrap_or(0);
    newcomer
        .send(
            json!({"action": "resume", "channel": "band:snap", "after_seq": seq,
                     "epoch": epoch}),
        )
        .await;
    let resumed = newcomer.expect("resumed").await;
    let live = started.elapsed();
    newcomer.close().await;
    println!("| entities | pages | load ms | to resumed ms | snapshot seq | replayed |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {loaded} | {pages} | {:.0} | {:.0} | {seq} | {} |",
        ms(load),
        ms(live),
        resumed["replayed"]
    );

    stack.shutdown().await;
    anyhow::ensure!(
        order.disorder == 0,
        "events arrived out of order or with gaps"
    );
    anyhow::ensure!(
        lost_total == 0,
        "{lost_total} changes never reached the listener"
    );
    anyhow::ensure!(
        counts.iter().all(|(applied, wanted)| applied == wanted),
        "not every mutation was applied: {counts:?}"
    );
    anyhow::ensure!(
        loaded as u64 == wanted_one,
        "the snapshot held {loaded} entities, not {wanted_one}"
    );
    Ok(())
}
