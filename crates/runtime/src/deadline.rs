//! The deadline a piece of work runs under, carried implicitly so that every bus call made while
//! handling a request inherits what is left of that request's deadline.
//!
//! The HTTP edge runs each request inside [`scope`] with the request's deadline; each incarnation
//! runs inside a scope of its own, and [`crate::Context::recv`] sets it to the deadline of the
//! request it returns. [`crate::Handle::call`] and [`crate::Handle::call_by`] never wait past
//! [`current`], so a chain (computation → storage → crypto) gives up together. A deadline is only
//! ever lowered by what it inherits, never raised.
//!
//! Work handed to another task or thread does not inherit it (task-locals do not travel): such work
//! must take `current()` along and pass it explicitly. The computation service's script host does
//! not yet: its capability calls are bounded by the run's own time limit, not the request's.

use std::cell::Cell;
use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: Cell<Option<Instant>>;
}

/// Runs `work` with `deadline` as the current deadline (or with none), lowered to an enclosing
/// scope's deadline if that one is earlier.
pub async fn scope<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    let deadline = earliest(deadline, current());
    CURRENT.scope(Cell::new(deadline), work).await
}

/// The deadline of the work running on this task, if it runs inside a [`scope`] that has one.
pub fn current() -> Option<Instant> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// Makes `deadline` the current one for the rest of the enclosing scope: the deadline of the request
/// an incarnation is about to handle, or none while it waits for the next one (so work it does
/// between requests does not run under a request's past deadline). Outside any scope it does nothing.
pub(crate) fn set(deadline: Option<Instant>) {
    let _ = CURRENT.try_with(|c| c.set(deadline));
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scope_only_lowers_the_deadline_it_inherits() {
        assert_eq!(current(), None);
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let later = now + Duration::from_secs(5);
        scope(Some(soon), async {
            assert_eq!(current(), Some(soon));
            // An inner scope asking for more keeps the outer deadline.
            scope(Some(later), async { assert_eq!(current(), Some(soon)) }).await;
            scope(None, async { assert_eq!(current(), Some(soon)) }).await;
        })
        .await;
        scope(Some(later), async {
            scope(Some(soon), async { assert_eq!(current(), Some(soon)) }).await;
            set(Some(soon));
            assert_eq!(current(), Some(soon));
            set(None);
            assert_eq!(current(), None);
        })
        .await;
        // Outside a scope, setting does nothing.
        set(Some(soon));
        assert_eq!(current(), None);
    }
}
