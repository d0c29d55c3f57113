//! Hot configuration: the running version, the history, and what became of an apply or rollback.

use runtime::reconfig::{Outcome, Source, Status};
use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;

/// A kept configuration version, without its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionSummary {
    /// Its number, from 1.
    pub version: u64,
    /// SHA-256 of the TOML text, hex.
    pub hash: String,
    /// RFC 3339.
    pub applied_at: String,
    /// Where it came from.
    pub source: Source,
    /// Where it stands.
    pub status: Status,
}

/// A configuration version with its TOML text and the configuration it parsed into (every
/// default filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionView {
    /// Number, hash, time, source and status.
    #[serde(flatten)]
    pub summary: VersionSummary,
    /// The TOML text.
    pub text: String,
    /// The configuration it parsed into, as JSON: a document, read as such.
    #[schema(value_type = runtime::config::Config)]
    pub config: serde_json::Value,
}

/// `GET /v1/config/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct History {
    /// Newest first; the first one is running.
    pub versions: Vec<VersionSummary>,
}

/// What became of an apply or a rollback; a rejection also carries the usual error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyAnswer {
    /// Applied, unchanged, rejected or rolled back.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// With a rejection: `config.rejected` and every problem in one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}
