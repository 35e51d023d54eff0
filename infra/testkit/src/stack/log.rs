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

/// Counts the events that did not come right after the one before (gaps or reorders),
/// for benches that report them rather than fail on the first.
#[derive(Debug, Default)]
pub struct SeqOrder {
    /// The highest seq seen.
    pub last_seq: u64,
    /// Events whose seq was not `last_seq + 1`.
    pub disorder: u64,
    /// The seq the subscription started at: events up to it were published before it,
    /// and whether they reach the client depends on when the subscribe landed.
    since: u64,
}

impl SeqOrder {
    /// Order from a subscription whose `subscribed` frame said `seq`.
    pub fn since(subscribed: &Value) -> Self {
        let seq = subscribed["seq"].as_u64().unwrap_or_default();
        Self {
            last_seq: seq,
            disorder: 0,
            since: seq,
        }
    }

    pub fn observe(&mut self, event: &Value) {
        let seq = event["seq"].as_u64().unwrap_or_default();
        if seq <= self.since {
            return;
        }
        if seq != self.last_seq + 1 {
            self.disorder += 1;
        }
        self.last_seq = self.last_seq.max(seq);
    }
}
