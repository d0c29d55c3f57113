//! What Cloister's tests share, in one place instead of a copy per test target: fakes
//! ([`fakes`]), the six services and the API in-process ([`in_process`], with a small fluent
//! client), loopback HTTP sources for the oracle ([`source`]), a private PostgreSQL server
//! ([`postgres`]) and the real binary on loopback
//! ([`server`]). A dev-dependency only: no crate lists it under `[dependencies]`.
//!
//! Tests that run the binary give its path, `env!("CARGO_BIN_EXE_cloister")`, which only the
//! binary's own test targets know.

pub mod fakes;
pub mod in_process;
pub mod postgres;
pub mod server;
pub mod source;

/// Standard base64, as the API's byte fields are written.
pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A loopback port free when asked, for a process that must be told its port before it starts
/// (a PostgreSQL server; a node a command is already waiting for).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
