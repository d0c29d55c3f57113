//! A cluster of Cloister nodes on one PostgreSQL database (docs/cluster.md): the cluster key,
//! made once and kept sealed by each member; admission by mutual attestation, in which a member
//! hands the key to a node whose quote its policy admits, encrypted to that node's ephemeral key,
//! with a quote of its own binding the answer; and membership, each node's row in the database
//! with its heartbeat.
//!
//! `exchange.rs` is the exchange's cryptography, `policy.rs` the admission decision, both pure;
//! `grant.rs` the cryptography of the key's rotation, pure too; `keys.rs` the key as a node holds
//! it and what wraps the crypto service's keys under it; `vault.rs` crypto's vault on the
//! database; `admission.rs` a node's two sides of the exchange; `rotation.rs` the rotation's steps;
//! `db.rs` the cluster's tables; `sealed.rs` the key file; `node.rs` this node's part in it all,
//! which the API serves and the binary starts.

mod admission;
mod db;
pub mod exchange;
pub mod grant;
mod keys;
mod node;
pub mod policy;
mod rotation;
mod sealed;
mod vault;

use enclave::quote::QuoteError;
use runtime::{Classify, ErrorKind};

pub use admission::{Admission, Joining};
pub use exchange::{ClusterId, ClusterKey, Ephemeral};
pub use node::{HEARTBEAT, Membership, Node, Options};
pub use policy::{Mismatch, Policy};

/// Where a node gets Intel's collateral (PCK CRL, TCB info, QE identity, with their chains) to
/// verify an SGX hardware quote: `[cluster] pccs`, fetched by the binary's HTTP client.
pub trait CollateralSource: Send + Sync + std::fmt::Debug {
    /// The collateral for `quote`'s platform (its FMSPC and PCK CA), as the source has it now.
    fn fetch<'a>(
        &'a self,
        quote: &'a [u8],
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<enclave::dcap::Collateral, CollateralError>> + Send + 'a>,
    >;
}

/// Why a [`CollateralSource`] has no collateral to give (the PCCS is out of reach, or answered
/// with something that is not collateral).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CollateralError(pub String);

/// How long a caller waits before retrying when the database is out of reach.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What can go wrong in the cluster; each variant knows its kind and its code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node's storage is not PostgreSQL.
    #[error(
        "a cluster keeps its records in PostgreSQL, and this node's storage is not: set [storage] \
         backend = \"postgres\""
    )]
    NotPostgres,
    /// A cluster is recorded already.
    #[error("this database belongs to cluster {0} already: a cluster is initialized once")]
    Exists(String),
    /// This node holds no cluster key.
    #[error(
        "this node holds no cluster key, so it admits no one: initialize the cluster on it \
         (`cloister cluster init`) or have it join a member"
    )]
    NotMember,
    /// The key sealed here is not the database's cluster's.
    #[error("{0}")]
    ForeignKey(String),
    /// The challenge is not one of this cluster's.
    #[error("the challenge {0}")]
    BadChallenge(String),
    /// The challenge has expired.
    #[error("the challenge has expired: ask the member for a new one")]
    ChallengeExpired,
    /// A field of a request or answer cannot be read.
    #[error("{0}")]
    Invalid(String),
    /// The quote does not verify.
    #[error("the quote is refused: {0}")]
    Quote(QuoteError),
    /// A hardware quote, and this node has no PCCS to fetch the collateral from.
    #[error(
        "the quote is an SGX hardware quote, and verifying one needs Intel's collateral (PCK CRLs, \
         TCB info, QE identity), which this node fetches only from a PCCS: set [cluster] pccs \
         (docs/cluster.md)"
    )]
    HardwareUnsupported,
    /// The quote verifies, but the identity is not the cluster's.
    #[error("the enclave is not admitted by the cluster's policy: {0}")]
    Policy(#[from] Mismatch),
    /// The member's answer cannot be opened (the joiner's side).
    #[error("the member's answer cannot be used: {0}")]
    BadAnswer(String),
    /// The key received is not the one the database records.
    #[error(
        "the key received does not match the cluster's record in the database (check value \
         {received}, recorded {recorded}): the member answered for another cluster"
    )]
    KeyCheck {
        /// Hex.
        received: String,
        /// Hex.
        recorded: String,
    },
    /// A rotation's grant to this node does not open.
    #[error("the rotated cluster key's grant to this node cannot be used: {0}")]
    BadGrant(String),
    /// A rotation left this node out.
    #[error(
        "the cluster key was rotated to generation {0}, and no grant of it was written for this \
         node (it was not a registered member then): move DATA_DIR/cluster.key away and start it \
         with --join to be admitted again"
    )]
    NotGranted(u64),
    /// The node was removed from the cluster (`cloister cluster remove`).
    #[error(
        "node {0} was removed from the cluster: it may not join or serve as a member again (a \
         new node, with a new data directory, may join if the policy admits it)"
    )]
    Removed(String),
    /// No member with this id, and none to remove.
    #[error("{0}")]
    Refused(String),
    /// The database cannot be reached.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// The database answered with an error.
    #[error("the cluster's tables: {0}")]
    Database(String),
    /// The sealed key file cannot be read or written.
    #[error("the sealed cluster key: {0}")]
    Sealed(String),
    /// We broke.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A refused quote, with a hardware quote's need for collateral said as what it is here.
    pub fn quote(e: QuoteError) -> Error {
        match e {
            QuoteError::CollateralNeeded => Error::HardwareUnsupported,
            other => Error::Quote(other),
        }
    }

    fn from_storage(e: storage::Error) -> Error {
        match e {
            storage::Error::Unavailable(why) => Error::Unavailable(why),
            other => Error::Database(other.to_string()),
        }
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::NotPostgres | Error::HardwareUnsupported => ErrorKind::Unsupported,
            Error::Exists(_) | Error::NotMember => ErrorKind::Conflict,
            Error::BadChallenge(_) | Error::ChallengeExpired | Error::Invalid(_) => {
                ErrorKind::Invalid
            }
            Error::Quote(QuoteError::Malformed(_)) => ErrorKind::Invalid,
            Error::Quote(_)
            | Error::Policy(_)
            | Error::BadAnswer(_)
            | Error::Removed(_)
            | Error::NotGranted(_) => ErrorKind::Forbidden,
            Error::BadGrant(_) => ErrorKind::Integrity,
            Error::Refused(_) => ErrorKind::Conflict,
            Error::ForeignKey(_) | Error::KeyCheck { .. } => ErrorKind::Integrity,
            Error::Unavailable(_) => ErrorKind::Unavailable { retry_after: RETRY },
            Error::Database(_) | Error::Sealed(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::NotPostgres => "cluster.unsupported",
            Error::HardwareUnsupported => "cluster.hardware_unsupported",
            Error::Exists(_) => "cluster.exists",
            Error::NotMember => "cluster.not_member",
            Error::ForeignKey(_) => "cluster.foreign_key",
            Error::BadChallenge(_) => "cluster.bad_challenge",
            Error::ChallengeExpired => "cluster.challenge_expired",
            Error::Invalid(_) => "cluster.invalid",
            Error::Quote(QuoteError::Malformed(_)) => "cluster.malformed_quote",
            Error::Quote(QuoteError::SimulationNotAccepted) => "cluster.simulation_refused",
            Error::Quote(QuoteError::ReportDataMismatch) => "cluster.report_data_mismatch",
            Error::Quote(_) => "cluster.bad_quote",
            Error::Policy(_) => "cluster.policy_refused",
            Error::BadAnswer(_) => "cluster.bad_answer",
            Error::KeyCheck { .. } => "cluster.key_check",
            Error::Removed(_) => "cluster.removed",
            Error::BadGrant(_) => "cluster.bad_grant",
            Error::NotGranted(_) => "cluster.not_granted",
            Error::Refused(_) => "cluster.refused",
            Error::Unavailable(_) => "cluster.unavailable",
            Error::Database(_) => "cluster.database",
            Error::Sealed(_) => "cluster.sealed_key",
            Error::Internal(_) => "internal",
        }
    }
}
