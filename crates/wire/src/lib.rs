//! What Cloister's HTTP API puts on the wire: the answers it sends (and the request bodies the SDK
//! sends it), as Rust types that both serialize and deserialize.
//!
//! The API (`crates/api`) builds these and serializes them; the Rust SDK (`cloister-sdk`)
//! deserializes the very same types, so the two cannot drift apart silently. Types the runtime owns
//! (a service's [`runtime::Health`], a journal [`runtime::journal::Entry`], a configuration
//! [`runtime::reconfig::Outcome`]) are used as they are. The crate is light on purpose: serde,
//! utoipa for the OpenAPI schema, and the runtime's and platform's own types; no HTTP server, no
//! service.

pub mod accounts;
pub mod ai;
pub mod attestation;
pub mod cluster;
pub mod computation;
pub mod config;
pub mod crypto;
pub mod error;
pub mod events;
pub mod integer;
pub mod json;
pub mod oracle;
pub mod services;
pub mod storage;

pub use error::{ErrorBody, ErrorDetail};
pub use json::JsonText;
