//! What kind of failure an error is. Each service's error enum says it once, beside the enum
//! (with [`Classify`]); the HTTP edge turns a kind into a status in one place.

use std::time::Duration;

/// What a caller can do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// What was asked for does not exist (or belongs to someone else: the same answer).
    NotFound,
    /// The request is malformed or breaks a rule the caller can read: fix it and send it again.
    Invalid,
    /// The request is well-formed but its content cannot be acted on (a model that does not load,
    /// a configuration that is refused).
    Unprocessable,
    /// The request, or something in it, is over a size limit.
    TooLarge,
    /// The request conflicts with the current state (a name taken, a job already ended).
    Conflict,
    /// The caller is not known: no credentials, or ones this runtime does not accept (unknown,
    /// revoked, expired). New credentials may succeed; the same ones will not.
    Unauthenticated,
    /// The caller is known but may not do this.
    Forbidden,
    /// The caller is over a limit; the same request may succeed after `retry_after`.
    Limited {
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// Something the request needs is not available now; a retry after `retry_after` may succeed.
    Unavailable {
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// This build or platform cannot do what was asked.
    Unsupported,
    /// Data the host could reach failed authentication (tampered, spliced or rolled back). The
    /// message names what (a key, a model), never a file path.
    Integrity,
    /// We broke: the caller can do nothing about it.
    Internal,
}

/// An error that knows its kind and its stable code (`AREA.REASON`, for example
/// `storage.not_found`). The `Display` text is for people; for [`ErrorKind::Internal`] it is
/// logged, never sent to a caller.
pub trait Classify: std::error::Error {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;
    /// The stable, machine-readable code.
    fn code(&self) -> &'static str;
}
