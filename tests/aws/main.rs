//! The AWS adapters against AWS-protocol servers on loopback: SQS and SNS on moto's
//! server (started by the tests themselves, see support.rs; `BANDSYNC_MOTO_SERVER` or
//! `moto_server` on PATH, installed by infra/moto.sh), and the API Gateway management
//! API on the local stack's `@connections` endpoint (see pusher.rs for why not moto).

mod lambda;
mod notifier;
mod push_bounds;
mod pusher;
mod queues;
mod schema;
mod store;
mod support;
mod write_units;
