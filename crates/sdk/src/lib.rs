//! The Rust SDK for Cloister: a typed async client of a running runtime's HTTP API.
//!
//! Every method is one endpoint and answers the API's own answer type, deserialized: the very
//! types the API serializes (from the `wire` crate, re-exported here as [`types`], and the
//! runtime's own, such as a journal [`Entry`]), so a field the API renames or drops breaks the
//! build or the call, never silently reads as a default. An error answer becomes
//! [`Error::Api`] with the API's status, stable code (`storage.not_found`, `auth.invalid_token`,
//! ...), message and `Retry-After`, so callers can match on the code. The `cloister` CLI is this
//! crate's first user: every command it sends to a runtime goes through [`Client`].
//!
//! ```no_run
//! use cloister_sdk::{Client, Error};
//!
//! # async fn example() -> Result<(), Error> {
//! let cloister = Client::new("http://127.0.0.1:8420", "cls_...")?;
//!
//! // The operator's view.
//! let services = cloister.services().await?;
//! for s in &services.services {
//!     println!("{} {} {}", s.name, s.state, s.health.level());
//! }
//!
//! // An application's: durable values, then a signature with the account's key.
//! let stored = cloister.put("greeting", "hello").await?;
//! let value = cloister.get("greeting").await?;
//! assert_eq!(value.version, stored.version);
//! let me = cloister.account("me").await?;
//! let signed = cloister.sign(&me.signing_key, b"hello", None).await?;
//! println!("signature {} by key version {}", signed.signature, signed.version);
//!
//! // Errors carry the API's code.
//! match cloister.get("no/such/key").await {
//!     Err(e) if e.code() == Some("storage.not_found") => println!("not there"),
//!     Err(e) => return Err(e),
//!     Ok(v) => println!("{} bytes", v.data.len()),
//! }
//!
//! // The journal, live.
//! let mut events = cloister.event_stream(0).await?;
//! while let Some(entry) = events.next().await {
//!     let entry = entry?;
//!     println!("{} {:?}", entry.seq, entry.event);
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod ai;
mod client;
mod cluster;
mod data;
mod error;
mod events;
mod jobs;
mod keys;

pub use admin::Command;
pub use client::{Client, DEADLINE_HEADER};
pub use data::Write;
pub use error::{ApiError, Error};
pub use events::{EventStream, ServiceStream};
pub use jobs::MAX_JOB_WAIT;

/// The API's answer and request types, as the API itself serializes them.
pub mod types {
    pub use enclave::{Identity, PlatformKind};
    pub use runtime::journal::Entry;
    pub use runtime::reconfig::{Outcome, Source, Status};
    pub use runtime::{Answer, Health, Kind, Readiness, RuntimeLevel, ServiceName, State};
    pub use wire::*;
}

pub use runtime::journal::Entry;
