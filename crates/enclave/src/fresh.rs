//! Freshness judged at start: a store's own sequence number (storage's commit, the keystore's
//! generation), read from data the host can replace, against the store's monotonic [`Counters`]
//! value. One pure function, [`judge`], decides for every store, tested as a table.
//!
//! A store writes sequence `n + 1` durably, then advances its counter to `n + 1`, and only then
//! acknowledges. So at start the only benign disagreement is a store one ahead of an existing
//! counter (a crash between the two writes). A missing counter file is "never advanced" only for a
//! new store (sequence 0): each store creates its counter at 0 when it starts new, so a counter file
//! deleted later is not mistaken for a new one.
//!
//! [`Counters`]: crate::Counters

/// Why a store's sequence number is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// Behind the counter: an older copy of the store.
    #[error("found {found}, but the freshness counter says {expected} was acknowledged")]
    RolledBack { found: u64, expected: u64 },
    /// Ahead of the counter by more than the one step a crash can leave, or a store that is not
    /// new without a counter file (`counter: None`): the counter was deleted or replaced.
    #[error("found {found}, but the freshness counter is {}", match counter {
        Some(c) => format!("at {c}"),
        None => "missing".to_owned(),
    })]
    CounterLost { found: u64, counter: Option<u64> },
}

/// What to do with a store that is not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The store is at the counter (or new, with no counter yet: create it at 0).
    Current,
    /// One ahead of the counter: a crash between the store's write and the counter's advance.
    /// Advance the counter to the store's sequence.
    CatchUp,
    /// Stale, but the operator accepted this exact sequence: move the store and the counter to
    /// `to`, the higher of the two, so no sequence number is ever reused.
    Accepted { stale: Stale, to: u64 },
}

/// Judges a store at sequence `found` against its counter (`None`: no counter file), with the
/// operator's `accept` (a sequence number to accept once despite the counter).
pub fn judge(found: u64, counter: Option<u64>, accept: Option<u64>) -> Result<Verdict, Stale> {
    let stale = match counter {
        None if found == 0 => return Ok(Verdict::Current),
        None => Stale::CounterLost {
            found,
            counter: None,
        },
        Some(c) if found == c => return Ok(Verdict::Current),
        Some(c) if Some(found) == c.checked_add(1) => return Ok(Verdict::CatchUp),
        Some(c) if found < c => Stale::RolledBack { found, expected: c },
        Some(c) => Stale::CounterLost {
            found,
            counter: Some(c),
        },
    };
    if accept == Some(found) {
        return Ok(Verdict::Accepted {
            stale,
            to: found.max(counter.unwrap_or(0)),
        });
    }
    Err(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found, counter, accept.
    type Case = (u64, Option<u64>, Option<u64>);

    #[test]
    fn the_verdict_table() {
        use Verdict::{Accepted, CatchUp, Current};
        let rolled = |found, expected| Stale::RolledBack { found, expected };
        let lost = |found, counter| Stale::CounterLost { found, counter };
        #[rustfmt::skip]
        let table: [(Case, Result<Verdict, Stale>); 13] = [
            // A new store and no counter yet.
            ((0, None, None), Ok(Current)),
            // At the counter, whatever is accepted.
            ((5, Some(5), None), Ok(Current)),
            ((5, Some(5), Some(5)), Ok(Current)),
            // One ahead: the crash gap, only with a counter file.
            ((6, Some(5), None), Ok(CatchUp)),
            ((1, Some(0), None), Ok(CatchUp)),
            ((1, None, None), Err(lost(1, None))),
            // Behind: an older copy.
            ((3, Some(5), None), Err(rolled(3, 5))),
            ((0, Some(5), None), Err(rolled(0, 5))),
            // Accepting another number accepts nothing.
            ((3, Some(5), Some(4)), Err(rolled(3, 5))),
            ((3, Some(5), Some(3)), Ok(Accepted { stale: rolled(3, 5), to: 5 })),
            // Ahead by more than one, or no counter file: the counter was lost.
            ((9, Some(5), None), Err(lost(9, Some(5)))),
            ((9, Some(5), Some(9)), Ok(Accepted { stale: lost(9, Some(5)), to: 9 })),
            ((2, None, Some(2)), Ok(Accepted { stale: lost(2, None), to: 2 })),
        ];
        for ((found, counter, accept), expected) in table {
            assert_eq!(
                judge(found, counter, accept),
                expected,
                "found {found}, counter {counter:?}, accept {accept:?}"
            );
        }
        assert_eq!(judge(u64::MAX, Some(u64::MAX - 1), None), Ok(CatchUp));
        assert_eq!(judge(0, Some(u64::MAX), None), Err(rolled(0, u64::MAX)));
    }
}
