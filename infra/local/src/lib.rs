//! The bandsync local stack: the whole system on one machine, no AWS account, no network.
//! See [`stack::LocalStack`].

pub mod cli;
pub mod gateway;
pub mod google;
pub mod http_api;
pub mod listen;
pub mod pollers;
pub mod stack;

pub use stack::{LocalStack, RunningStack, StackConfig};
