//! Logs and metrics for the Lambda functions: one JSON object per line on stdout, which
//! CloudWatch Logs keeps as is (and Logs Insights queries by field), plus the Embedded
//! Metric Format lines of [`crate::transport::metrics`].
//!
//! Every line carries the spans it was written in: lambda_runtime opens a
//! `Lambda runtime invoke` span with `requestId` (and `xrayTraceId`) around each
//! invocation, so each line of an invocation names its request id, whatever spans the
//! handler opened inside it.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The level when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info";

/// lambda_runtime's per-invocation span (target `lambda_runtime::layers::trace`, level
/// info) must stay enabled whatever `RUST_LOG` says, or a `RUST_LOG=warn` function would
/// log without its request id. The module logs no events of its own at info.
const INVOKE_SPAN: &str = "lambda_runtime::layers::trace=info";

/// The filter for a `RUST_LOG` value (None when unset): the value, or [`DEFAULT_FILTER`]
/// when it is unset or does not parse, with the invocation span always on.
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let base = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or(DEFAULT_FILTER);
    EnvFilter::try_new(format!("{base},{INVOKE_SPAN}"))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The JSON subscriber, writing to `writer`: one object per line, no ANSI, fields at the
/// top level, the current span and every span around it.
pub fn subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        // CloudWatch shows escape codes verbatim.
        .with_ansi(false)
        // Fields at the top level, next to level/target/timestamp.
        .flatten_event(true)
        // The innermost span, and every span around it (the invocation's request id).
        .with_current_span(true)
        .with_span_list(true)
        .with_target(true)
        .with_writer(writer)
        .finish()
}

/// Install the JSON subscriber on stdout (level from `RUST_LOG`, default info) and turn
/// EMF metric lines on. Call once, first thing in `main`; a second call changes nothing.
pub fn init() {
    crate::transport::metrics::set_enabled(true);
    let rust_log = std::env::var("RUST_LOG").ok();
    let installed = tracing::subscriber::set_global_default(subscriber(
        filter(rust_log.as_deref()),
        std::io::stdout,
    ));
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_defaults_to_info_and_keeps_the_invoke_span() {
        for unset in [None, Some(""), Some("  "), Some("no such=level=at all")] {
            let f = filter(unset).to_string();
            assert!(f.contains("info"), "{unset:?} -> {f}");
            assert!(f.contains("lambda_runtime::layers::trace=info"), "{f}");
        }
        let f = filter(Some("warn,bandsync=debug")).to_string();
        assert!(f.contains("warn") && f.contains("bandsync=debug"), "{f}");
        assert!(f.contains("lambda_runtime::layers::trace=info"), "{f}");
    }

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn every_line_is_json_with_the_request_id_even_at_warn() {
        let buffer = Buffer::default();
        let sub = subscriber(filter(Some("warn")), buffer.clone());
        tracing::subscriber::with_default(sub, || {
            // What lambda_runtime opens around each invocation.
            let invoke = tracing::info_span!(
                target: "lambda_runtime::layers::trace",
                "Lambda runtime invoke",
                requestId = "req-1"
            );
            let _invoke = invoke.enter();
            let inner = tracing::warn_span!("sqs_message", message_id = "m-1");
            let _inner = inner.enter();
            tracing::info!("filtered out at warn");
            tracing::warn!(attempt = 2, "message failed");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(!out.contains('\u{1b}'), "no ANSI escapes: {out}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "message failed");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["span"]["message_id"], "m-1");
        assert_eq!(line["spans"][0]["name"], "Lambda runtime invoke");
        assert_eq!(line["spans"][0]["requestId"], "req-1");
    }
}
