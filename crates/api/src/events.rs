//! The event journal over HTTP: by cursor as JSON, and live as server-sent events that resume from
//! the last sequence number a client saw, without gaps or duplicates.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use runtime::Journal;
use runtime::journal::Entry;
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;

use wire::events::EventPage;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

const MAX_PAGE: usize = 10_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Events with a sequence number above this one (default 0: from the start).
    since: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<usize>,
}

/// The event journal from a cursor, as JSON.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListQuery),
    responses(
        (status = 200, description = "A page of entries", body = EventPage),
        (status = 409, description = "The journal failed its integrity check (`journal.integrity`)", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_PAGE);
    let journal = state.client.journal().clone();
    let since = q.since.unwrap_or(0);
    let entries = tokio::task::spawn_blocking(move || journal.read(since, limit))
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })??;
    let next = entries.last().map_or(since, |e| e.seq);
    Ok(Json(EventPage {
        events: entries,
        next,
        last_seq: state.client.journal().last_seq(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Start after this sequence number (the `Last-Event-ID` header wins when both are given).
    since: Option<u64>,
}

/// Live events. Resumes after `Last-Event-ID` (as browsers send on reconnect) or `?since=`; without
/// either, starts with the events that happen from now on.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number")),
    responses(
        (status = 200, description = "`text/event-stream` of `journal` events; each event's `id` is the entry's sequence number; no gaps, no duplicates",
            content_type = "text/event-stream", body = Entry),
        (status = 400, description = "`Last-Event-ID` is not a sequence number", body = ErrorBody),
    ))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let from_header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "request.invalid_last_event_id",
                        "Last-Event-ID must be a sequence number",
                    )
                })?,
        ),
        None => None,
    };
    let journal = state.client.journal().clone();
    // Subscribe before reading the backlog so nothing falls between the two.
    let live = journal.subscribe();
    let cursor = from_header
        .or(q.since)
        .unwrap_or_else(|| journal.last_seq());
    let events = follow(journal, live, cursor)
        .map(|entry| {
            Ok(Event::default()
                .id(entry.seq.to_string())
                .event("journal")
                .json_data(&*entry)
                .unwrap_or_default())
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Follow {
    journal: Journal,
    live: broadcast::Receiver<Arc<Entry>>,
    cursor: u64,
    backlog: VecDeque<Arc<Entry>>,
}

/// Entries after `cursor`, in order, forever: from the journal first, then live, re-reading the
/// journal by cursor whenever the live feed lagged or skipped. A gap in the journal itself (an entry
/// removed from the file) is passed over rather than retried.
fn follow(
    journal: Journal,
    live: broadcast::Receiver<Arc<Entry>>,
    cursor: u64,
) -> impl Stream<Item = Arc<Entry>> {
    let state = Follow {
        journal,
        live,
        cursor,
        backlog: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(entry) = s.next_from_backlog() {
                return Some((entry, s));
            }
            if s.cursor < s.journal.last_seq() {
                match s.journal.read(s.cursor, 1000) {
                    Ok(entries) if !entries.is_empty() => {
                        // What the journal holds is all there is: if it skips a number, so do we.
                        if let Some(first) = entries.first() {
                            s.cursor = s.cursor.max(first.seq.saturating_sub(1));
                        }
                        s.backlog.extend(entries);
                        continue;
                    }
                    Ok(_) => s.cursor = s.journal.last_seq(),
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream stopped: the journal cannot be read past {}", s.cursor);
                        return None;
                    }
                }
            }
            match s.live.recv().await {
                Ok(entry) => s.backlog.push_back(entry),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl Follow {
    /// The next entry in sequence, if the backlog holds it. Anything out of order is dropped, and
    /// the journal is read again by cursor.
    fn next_from_backlog(&mut self) -> Option<Arc<Entry>> {
        while let Some(entry) = self.backlog.pop_front() {
            if entry.seq <= self.cursor {
                continue;
            }
            if entry.seq == self.cursor + 1 {
                self.cursor = entry.seq;
                return Some(entry);
            }
            // Skipped some live entries: drop what we hold and read them from the journal.
            self.backlog.clear();
        }
        None
    }
}
