//! bandsync's Rust client. The behaviour is shared/clients/PROTOCOL.md, the same as the
//! TypeScript client's, and both replay the scenarios of shared/clients/conformance.
//!
//! - [`core`]: the sans-IO state machine (inputs stamped with the time -> effects);
//! - [`client`]: the tokio driver apps use ([`Client`], [`Channel`]);
//! - [`storage`]: where cursors and the outbox survive a restart ([`MemoryStorage`],
//!   [`FileStorage`]).
//!
//! ```no_run
//! use bandsync_client::{ChannelEvent, ChannelOptions, Client, Device, FileStorage, Options, get_token};
//! use serde_json::json;
//!
//! # async fn app(fetch_token: fn() -> String) -> Result<(), bandsync_client::ClientError> {
//! let options = Options::new(
//!     // Called before every connect; `TokenError::Unauthorized` stops the client.
//!     get_token(move || async move { Ok(fetch_token()) }),
//!     // Cursors and the outbox survive a restart.
//!     FileStorage::new("bandsync-client.json"),
//! )
//! .device(Device { id: "ringo-laptop".into(), platform: "desktop".into(), name: "Laptop".into(), categories: None });
//! let client = Client::new("ws://127.0.0.1:8788/local", options)?;
//! let band = client.channel("band:demo", ChannelOptions::default())?;
//! let mut events = band.events();
//! band.subscribe().await?; // live, after any replay
//! let verdict = client
//!     .push(json!({"band": "demo", "type": "setlist_entry", "id": "song-1", "op": "patch",
//!                  "base_version": 1, "fields": {"title": "Tonight"}}))
//!     .await?;
//! println!("{}: {:?}", verdict.status(), client.pending());
//! while let Some(ChannelEvent::Event { text, .. }) = events.recv().await {
//!     println!("{text}"); // each event once, in seq order, gapless
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod core;
pub mod storage;

pub use client::{
    Channel, ChannelEvent, ChannelOptions, Client, ClientError, GetState, GetToken, Options,
    StateChange, TokenError, Verdict, get_state, get_token,
};
pub use core::{Cursor, Device, Env, Parked, Pending, State};
/// The TLS library of `wss://` ([`Options::tls_config`], [`Options::root_certificates`]).
pub use rustls;
pub use storage::{FileStorage, MemoryStorage, Storage};
