//! Reading a run of `event` frames: their names, their seqs, what completed.

use serde_json::Value;

pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}#{} {}",
                e["event"].as_str().unwrap_or("?"),
                e["seq"],
                e["data"]["path"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The seqs of events, asserting they are gapless and increasing from `from`.
pub fn assert_gapless(events: &[Value], from: u64) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    let expected: Vec<u64> = (from..from + seqs.len() as u64).collect();
    assert_eq!(
        seqs,
        expected,
        "seqs must be gapless and in order: {:#?}",
        names(events)
    );
    let epochs: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["epoch"].as_str()).collect();
    assert!(epochs.len() <= 1, "one epoch: {epochs:?}");
}

pub fn has_completed(events: &[Value], n: usize) -> bool {
    events
        .iter()
        .filter(|e| e["event"] == "sync.completed")
        .count()
        >= n
}

pub fn file_events(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"].as_str().is_some_and(|n| n.starts_with("file.")))
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["data"]["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}
