//! End-to-end tests: the local stack in-process on free loopback ports, real WebSocket
//! clients, the real AWS SDK client for @connections, a real watched folder.

mod bad_inputs;
mod entities;
mod google;
mod management;
mod operator;
mod pipeline;
mod presence;
mod priority;
mod rebuild;
mod restart;
mod resume;
mod selective;
mod text;
