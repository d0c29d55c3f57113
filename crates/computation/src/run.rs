//! What one run is made of, as the service hands it to the pool: the script, its caller, its
//! limits and the handles its capability calls go through. Below both the sandbox, which runs it,
//! and the capabilities, which lend it the account's storage and keys.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::limits::Limits;

/// Everything one run needs.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) owner: String,
    pub(crate) signing_key: Option<String>,
    pub(crate) grants: crate::Grants,
    /// The account's rate limit, which capability calls count against.
    pub(crate) allowance: Option<runtime::rate::Allowance>,
    pub(crate) capabilities: crate::Capabilities,
    pub(crate) code: String,
    pub(crate) args_json: String,
    pub(crate) deterministic: bool,
    pub(crate) limits: Limits,
    pub(crate) deps: Deps,
    /// Set to stop the run (a job's cancel); the interrupt handler polls it.
    pub(crate) cancel: Arc<AtomicBool>,
    /// When the caller stops waiting: the deadline of the request a synchronous run answers (none
    /// for a job, which outlives its request). Its capability calls inherit it, and the run stops
    /// there, since no one would read its result.
    pub(crate) caller_deadline: Option<Instant>,
}

/// The services capability calls go to, and the async runtime they are awaited on.
#[derive(Debug, Clone)]
pub(crate) struct Deps {
    pub(crate) crypto: crypto::Handle,
    pub(crate) storage: storage::Handle,
    pub(crate) tokio: tokio::runtime::Handle,
}
