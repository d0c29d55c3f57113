//! The deadlines of the bus's calls in flight, kept by one task instead of a timer per call.
//!
//! A call used to wait under `tokio::time::timeout_at`: a timer registered in the runtime's wheel on
//! the first poll and unlinked again when the answer came, about 840 of a call's 4,000 instructions.
//! Here a call files itself in a slab and pushes its deadline onto one min-heap per bus, and one task
//! sleeps until the earliest deadline and expires what is due. Successive calls' deadlines mostly
//! grow, so a push is a comparison. A call that ends leaves the slab at once (so nothing it holds
//! outlives it) but not the heap, where finding it would cost a search: its entry there is a stale
//! (key, generation) pair, dropped when its deadline comes or by a sweep that runs when the heap has
//! doubled since the last one. So the heap holds at most about twice the calls in flight, and a sweep
//! costs a comparison per call.
//!
//! Deadlines are exact, as with a timer of their own: the task sleeps on tokio's clock until the
//! earliest one, so a paused clock in tests advances to it as it did before.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::call::Pending;

/// A sweep never runs on a heap smaller than this.
const SWEEP_FLOOR: usize = 1024;

/// The deadlines of one bus's calls. Dropping it ends its task.
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the task: a deadline earlier than the one it sleeps until, or the bus gone.
    wake: Notify,
}

struct State {
    /// The calls in flight, by key; a slot's generation tells a heap entry that is still its call
    /// from one left behind by an earlier call in the same slot.
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Entry>,
    /// The heap's length at which the next insert sweeps out entries of calls that have ended.
    sweep_at: usize,
    /// What the task sleeps until: `None` while it waits for a first deadline (or is not running).
    armed: Option<Instant>,
    /// Whether a task is running (it clears this if its runtime drops it).
    running: bool,
    closed: bool,
}

struct Slot {
    generation: u32,
    call: Option<Arc<dyn Pending>>,
}

#[derive(Clone, Copy)]
struct Entry {
    at: Instant,
    key: u32,
    generation: u32,
}

impl Ord for Entry {
    /// Reversed, so that the `BinaryHeap` (a max-heap) has the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

/// A call's place among the deadlines, for taking it out when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    key: u32,
    generation: u32,
}

impl State {
    /// Takes the call filed under `key` if it is still the one of `generation`.
    fn take(&mut self, key: u32, generation: u32) -> Option<Arc<dyn Pending>> {
        let slot = self.slots.get_mut(key as usize)?;
        if slot.generation != generation {
            return None;
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key);
        slot.call.take()
    }

    fn is_current(&self, entry: &Entry) -> bool {
        self.slots
            .get(entry.key as usize)
            .is_some_and(|s| s.generation == entry.generation)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock panics; the state is consistent even if a holder did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: Vec::new(),
                    free: Vec::new(),
                    heap: BinaryHeap::new(),
                    sweep_at: SWEEP_FLOOR,
                    armed: None,
                    running: false,
                    closed: false,
                }),
                wake: Notify::new(),
            }),
        }
    }
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Deadlines")
            .field("in_flight", &(state.slots.len() - state.free.len()))
            .field("armed", &state.armed)
            .finish()
    }
}

impl Deadlines {
    /// Expires `call` at `at` unless [`Deadlines::remove`] takes it out first. Must be called on a
    /// tokio runtime (the task that keeps the deadlines is started on the first call).
    pub(crate) fn insert(&self, at: Instant, call: Arc<dyn Pending>) -> Ticket {
        let mut state = self.shared.lock();
        if state.heap.len() >= state.sweep_at {
            let mut heap = std::mem::take(&mut state.heap).into_vec();
            heap.retain(|e| state.is_current(e));
            state.heap = BinaryHeap::from(heap);
            state.sweep_at = (2 * state.heap.len()).max(SWEEP_FLOOR);
        }
        let key = match state.free.pop() {
            Some(key) => key,
            None => {
                // More than u32::MAX calls in flight cannot fit in memory anyway.
                let key = u32::try_from(state.slots.len()).unwrap_or(u32::MAX);
                state.slots.push(Slot {
                    generation: 0,
                    call: None,
                });
                key
            }
        };
        let slot = &mut state.slots[key as usize];
        slot.call = Some(call);
        let generation = slot.generation;
        state.heap.push(Entry {
            at,
            key,
            generation,
        });
        let earlier = state.armed.is_none_or(|armed| at < armed);
        if earlier {
            state.armed = Some(at);
        }
        let start = !state.running;
        state.running = true;
        drop(state);
        if start {
            let running = Running(self.shared.clone());
            tokio::spawn(async move { run(running).await });
        } else if earlier {
            self.shared.wake.notify_one();
        }
        Ticket { key, generation }
    }

    /// Takes a call that has ended out of the deadlines.
    pub(crate) fn remove(&self, ticket: Ticket) {
        let call = self.shared.lock().take(ticket.key, ticket.generation);
        // Dropped after the lock: it may be the call's last reference.
        drop(call);
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// Held by the task; marks it gone when its runtime drops it, so the next call starts another.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running = false;
        state.armed = None;
    }
}

async fn run(running: Running) {
    let shared = &running.0;
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    let mut due = Vec::new();
    loop {
        // Registered before the heap is read, so a push between the read and the wait is not missed.
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = Instant::now();
        let next = {
            let mut state = shared.lock();
            if state.closed {
                return;
            }
            while let Some(entry) = state.heap.peek().copied().filter(|e| e.at <= now) {
                state.heap.pop();
                if let Some(call) = state.take(entry.key, entry.generation) {
                    due.push(call);
                }
            }
            state.armed = state.heap.peek().map(|e| e.at);
            state.armed
        };
        for call in due.drain(..) {
            call.expire();
        }
        match next {
            Some(at) => {
                sleep.as_mut().reset(at);
                tokio::select! {
                    () = &mut sleep => {}
                    () = &mut woken => {}
                }
            }
            None => woken.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ServiceName;
    use crate::bus::call::Outcome;

    #[derive(Default)]
    struct Probe {
        expired: AtomicUsize,
    }

    impl Pending for Probe {
        fn settle(&self, _: Outcome) -> bool {
            true
        }
        fn caller(&self) -> Option<ServiceName> {
            None
        }
        fn expire(&self) {
            self.expired.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn len(d: &Deadlines) -> usize {
        d.shared.lock().heap.len()
    }

    /// Each deadline expires its call at its own instant, in any order of insertion, and not before;
    /// a call nobody holds any more is dropped, not expired.
    #[tokio::test(start_paused = true)]
    async fn each_call_expires_at_its_own_deadline_and_not_before() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let probes: Vec<Arc<Probe>> = (0..3).map(|_| Arc::default()).collect();
        // Out of order: 300 ms, then 100 ms (earlier than what the task sleeps until), then 200 ms.
        for (probe, ms) in probes.iter().zip([300, 100, 200]) {
            deadlines.insert(start + Duration::from_millis(ms), probe.clone());
        }
        let ended = Arc::new(Probe::default());
        let ticket = deadlines.insert(start + Duration::from_millis(50), ended.clone());
        deadlines.remove(ticket);
        assert_eq!(
            Arc::strong_count(&ended),
            1,
            "an ended call is let go at once"
        );
        let expired = |i: usize| probes[i].expired.load(Ordering::SeqCst);
        for (ms, want) in [
            (99, [0, 0, 0]),
            (100, [0, 1, 0]),
            (200, [0, 1, 1]),
            (300, [1, 1, 1]),
        ] {
            tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
            // Let the deadlines' task run at this instant.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert_eq!([expired(0), expired(1), expired(2)], want, "at {ms} ms");
        }
        assert_eq!([expired(0), expired(1), expired(2)], [1, 1, 1]);
        assert_eq!(ended.expired.load(Ordering::SeqCst), 0);
        assert_eq!(len(&deadlines), 0);
    }

    /// Calls that have ended do not pile up until their deadlines: the heap stays within about twice
    /// the calls in flight.
    #[tokio::test(start_paused = true)]
    async fn ended_calls_are_swept_out_long_before_their_deadlines() {
        let deadlines = Deadlines::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let live: Vec<Arc<Probe>> = (0..10).map(|_| Arc::default()).collect();
        for probe in &live {
            deadlines.insert(far, probe.clone());
        }
        for _ in 0..100 * SWEEP_FLOOR {
            let ticket = deadlines.insert(far, Arc::new(Probe::default()));
            deadlines.remove(ticket);
            assert!(
                len(&deadlines) <= 2 * SWEEP_FLOOR + 10,
                "{}",
                len(&deadlines)
            );
        }
        let state = deadlines.shared.lock();
        let kept = state.heap.iter().filter(|e| state.is_current(e)).count();
        assert_eq!(kept, live.len(), "every call in flight is still kept");
        assert_eq!(state.slots.len(), live.len() + 1, "slots are reused");
    }

    /// The task ends when the bus drops its deadlines.
    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_deadlines() {
        let deadlines = Deadlines::default();
        let _ = deadlines.insert(
            Instant::now() + Duration::from_secs(5),
            Arc::new(Probe::default()),
        );
        let shared = Arc::downgrade(&deadlines.shared);
        drop(deadlines);
        for _ in 0..16 {
            if shared.strong_count() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task still holds the deadlines after the bus dropped them");
    }
}
