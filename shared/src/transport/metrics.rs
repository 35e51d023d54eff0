//! CloudWatch Embedded Metric Format: one JSON line on stdout per data point set, which
//! CloudWatch turns into metrics with no SDK call on the hot path.

use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicBool, Ordering};

pub const NAMESPACE: &str = "bandsync";

static ENABLED: AtomicBool = AtomicBool::new(true);

/// The local stack turns EMF lines off unless asked (they are for CloudWatch).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// Build the EMF document for one set of values sharing dimensions.
pub fn document(
    timestamp_ms: i64,
    dimensions: &[(&str, &str)],
    values: &[(&str, f64, Unit)],
) -> Value {
    let mut root = Map::new();
    for (k, v) in dimensions {
        root.insert((*k).to_owned(), json!(v));
    }
    for (name, value, _) in values {
        root.insert((*name).to_owned(), json!(value));
    }
    let dims: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
        .collect();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [dims], "Metrics": metrics}],
        }),
    );
    Value::Object(root)
}

/// One metric the code emits, with its fixed dimension (name, value) and the names of
/// the dimensions whose values vary (`by`: an entity type, a status; the dashboard
/// charts those with a SEARCH expression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub dimension: (&'static str, &'static str),
    pub by: &'static [&'static str],
}

const fn metric(name: &'static str, dimension: (&'static str, &'static str)) -> Metric {
    Metric {
        name,
        dimension,
        by: &[],
    }
}

const fn metric_by(
    name: &'static str,
    dimension: (&'static str, &'static str),
    by: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        dimension,
        by,
    }
}

impl Metric {
    /// Whether an emit with these dimensions is this metric's.
    fn takes(&self, dimensions: &[(&str, &str)]) -> bool {
        dimensions.first() == Some(&self.dimension)
            && dimensions[1..]
                .iter()
                .map(|(k, _)| *k)
                .eq(self.by.iter().copied())
    }
}

const BROADCAST: (&str, &str) = ("Function", "broadcast");
const SYNC_WORKER: (&str, &str) = ("Function", "sync-worker");
const PUSH: (&str, &str) = crate::entities::stats::FUNCTION;

/// Every metric [`emit`] is called with: what template.yaml's dashboard must chart (the
/// template test reads this list). A debug build's `emit` refuses one missing here.
pub const METRICS: &[Metric] = &[
    metric("EventsOut", BROADCAST),
    metric("GoneConnections", BROADCAST),
    metric("FailedPosts", BROADCAST),
    metric("DeliveryLatency", BROADCAST),
    metric("ItemsSynced", SYNC_WORKER),
    metric("ItemsFailed", SYNC_WORKER),
    metric("SyncDuration", SYNC_WORKER),
    metric("SyncFailures", SYNC_WORKER),
    metric("PoisonMessages", ("Queue", "any")),
    // Members' mutations per entity type and verdict, and the fields decided against a
    // concurrent change per policy and outcome (`entities::stats::Tally`).
    metric_by("Mutations", PUSH, &["EntityType", "Status"]),
    metric_by("FieldDecisions", PUSH, &["EntityType", "Policy", "Outcome"]),
];

/// Write one EMF line to stdout (when enabled).
pub fn emit(dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) {
    debug_assert!(
        values.iter().all(|(name, _, _)| METRICS
            .iter()
            .any(|m| m.name == *name && m.takes(dimensions))),
        "emit {values:?} with {dimensions:?}: not in metrics::METRICS"
    );
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let doc = document(chrono::Utc::now().timestamp_millis(), dimensions, values);
    println!("{doc}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_shape() {
        let d = document(
            1000,
            &[("Function", "broadcast")],
            &[
                ("Delivered", 3.0, Unit::Count),
                ("DeliveryLatency", 12.5, Unit::Milliseconds),
            ],
        );
        assert_eq!(d["Function"], "broadcast");
        assert_eq!(d["Delivered"], 3.0);
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], NAMESPACE);
        assert_eq!(m["Dimensions"][0][0], "Function");
        assert_eq!(m["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(d["_aws"]["Timestamp"], 1000);
    }

    #[test]
    fn a_metric_takes_its_fixed_dimension_then_its_varying_ones() {
        let m = METRICS.iter().find(|m| m.name == "Mutations").unwrap();
        let fixed = m.dimension;
        assert!(m.takes(&[fixed, ("EntityType", "setlist_entry"), ("Status", "merged")]));
        assert!(!m.takes(&[fixed, ("Status", "merged"), ("EntityType", "x")]));
        assert!(!m.takes(&[fixed]));
        assert!(!m.takes(&[
            ("Function", "broadcast"),
            ("EntityType", "x"),
            ("Status", "y")
        ]));
        let d = document(
            1,
            &[fixed, ("EntityType", "song_status"), ("Status", "applied")],
            &[("Mutations", 2.0, Unit::Count)],
        );
        assert_eq!(
            d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["Function", "EntityType", "Status"])
        );
        assert_eq!(d["EntityType"], "song_status");
    }
}
