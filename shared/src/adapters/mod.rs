//! The backends behind the ports, each behind its own cargo feature so a binary links
//! only the one it runs on: `local` is the embedded backend of the local stack (SQLite
//! store and durable FIFO queues in one file), which the Lambda binaries never enable;
//! `aws` is DynamoDB, SQS, the API Gateway management API and SNS, for the Lambdas.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "local")]
pub mod local;
