//! The client contract, in one place: every frame a WebSocket client sends
//! ([`frames::ClientRequest`]) or receives ([`frames::ServerFrame`]), every event on a
//! channel ([`events::EventKind`], typed payloads), and the HTTP API's request and
//! response bodies ([`http`]).
//!
//! With the `schema` feature, [`docs`] generates from these types the JSON Schema of
//! every frame and event, the AsyncAPI 3 document of the WebSocket API and the OpenAPI
//! 3.1 document of the HTTP API, which are checked in under `shared/schema/` (a test
//! fails when they no longer match; `cargo run -p bandsync --features schema --example
//! gen-docs` writes them again). Wire names here are contracts: renaming a variant or a
//! field changes what clients see.

#[cfg(feature = "schema")]
pub mod docs;
pub mod events;
pub mod frames;
pub mod http;
