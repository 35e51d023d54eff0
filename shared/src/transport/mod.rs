//! The edge between AWS's event shapes and the jobs: nothing here decides anything about
//! bands, documents or events, it only carries them in and out.
//!
//! - [`sqs`]: running an SQS batch, one message at a time, with partial batch failure;
//! - [`http`]: API Gateway response shapes and the HTTP rendering of a refusal;
//! - [`lambda`]: each function's entry point (what its main runs per invocation);
//! - [`telemetry`]: JSON logs for the Lambda functions;
//! - [`metrics`]: CloudWatch Embedded Metric Format lines;
//! - [`untrusted`]: what callers send, truncated and escaped for the logs.

pub mod http;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod metrics;
pub mod sqs;
#[cfg(feature = "aws")]
pub mod telemetry;
pub mod untrusted;
pub use untrusted::untrusted;
