//! bandsync's Rust client. The behaviour is shared/clients/PROTOCOL.md, the same as the
//! TypeScript client's, and both replay the scenarios of shared/clients/conformance.
//!
//! - [`core`]: the sans-IO state machine (inputs stamped with the time -> effects);
//! - [`client`]: the tokio driver apps use ([`Client`], [`Channel`]);
//! - [`storage`]: where cursors and the outbox survive a restart ([`MemoryStorage`],
//!   [`FileStorage`]).

pub mod client;
pub mod core;
pub mod storage;

pub use client::{
    Channel, ChannelEvent, ChannelOptions, Client, ClientError, GetState, GetToken, Options,
    StateChange, TokenError, Verdict, get_state, get_token,
};
pub use core::{Cursor, Device, Env, Parked, Pending, State};
pub use storage::{FileStorage, MemoryStorage, Storage};
