//! The event journal by cursor (`GET /v1/events`); the live stream's events are the same
//! [`Entry`]s, one per server-sent event.

use std::sync::Arc;

use runtime::journal::Entry;
use serde::{Deserialize, Serialize};

/// A page of journal entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    /// In sequence order. Each entry carries the hash of the one before (`prev`) and its own.
    #[schema(value_type = Vec<Entry>)]
    pub events: Vec<Arc<Entry>>,
    /// Pass as `since` for the next page.
    pub next: u64,
    /// The newest sequence number in the journal.
    pub last_seq: u64,
}
