//! The deadlines of the bus's calls in flight, kept by one task instead of a timer per call.
//!
//! A call used to wait under `tokio::time::timeout_at`: a timer registered in the runtime's wheel on
//! the first poll and unlinked again when the answer came, about 840 of a call's 4,000 instructions.
//! Here a call files itself in a slab and pushes its deadline onto a min-heap, in the shard of the
//! thread it runs on, and one task per bus sleeps until the earliest deadline of all shards and
//! expires what is due. Successive calls' deadlines mostly grow, so a push is a comparison. A call
//! that ends leaves the slab at once (so nothing it holds outlives it) but not the heap, where
//! finding it would cost a search: its entry there is a stale (key, generation) pair, dropped when
//! its deadline comes or by a sweep that runs when the shard's heap has doubled since the last one.
//! So a heap holds at most about twice the calls in flight, and a sweep costs a comparison per call.
//!
//! Deadlines are exact, as with a timer of their own: the task sleeps on tokio's clock until the
//! earliest one, so a paused clock in tests advances to it as it did before.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::call::Pending;

/// A sweep never runs on a shard's heap smaller than this.
const SWEEP_FLOOR: usize = 1024;

/// Each thread files its calls in a shard of its own (while there are no more threads than shards),
/// so the runtime's workers do not take one lock, and its cache line, from each other on every call:
/// with one lock for the bus, 64 callers on two workers ran at 0.21 of raw tokio's rate instead of
/// 0.35 without deadlines at all.
const SHARDS: usize = 8;

/// The deadlines of one bus's calls. Dropping it ends its task.
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    shards: [Shard; SHARDS],
    /// Wakes the task: a deadline earlier than the one it sleeps until, or the bus gone.
    wake: Notify,
    /// Whether a task is running (it clears this if its runtime drops it).
    running: AtomicBool,
    closed: AtomicBool,
}

/// A lock alone on its cache line.
#[repr(align(128))]
struct Shard(Mutex<State>);

#[derive(Default)]
struct State {
    /// The calls in flight, by key; a slot's generation tells a heap entry that is still its call
    /// from one left behind by an earlier call in the same slot.
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Entry>,
    /// The heap's length at which the next insert sweeps out entries of calls that have ended.
    sweep_at: usize,
    /// What the task sleeps until, as far as this shard knows: an earlier deadline wakes it. `None`
    /// while the task waits for a first deadline, reads the shards, or is not running: then any
    /// deadline wakes it.
    armed: Option<Instant>,
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

/// A call's place among the deadlines: dropping it (when the call ends, or its caller stops
/// waiting) takes the call out.
#[must_use = "dropping it takes the call out of the deadlines at once"]
pub(crate) struct Filed<'a> {
    deadlines: &'a Deadlines,
    shard: u8,
    key: u32,
    generation: u32,
}

impl Drop for Filed<'_> {
    fn drop(&mut self) {
        let shard = &self.deadlines.shared.shards[usize::from(self.shard)];
        let call = shard.lock().take(self.key, self.generation);
        // Dropped after the lock: it may be the call's last reference.
        drop(call);
    }
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

    fn sweep(&mut self) {
        let mut heap = std::mem::take(&mut self.heap).into_vec();
        heap.retain(|e| self.is_current(e));
        self.heap = BinaryHeap::from(heap);
        self.sweep_at = (2 * self.heap.len()).max(SWEEP_FLOOR);
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock panics; the state is consistent even if a holder did.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This thread's shard.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let mine = NEXT.fetch_add(1, Atomic::Relaxed) % SHARDS;
            shard.set(Some(mine));
            mine
        })
    })
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            shared: Arc::new(Shared {
                shards: std::array::from_fn(|_| {
                    Shard(Mutex::new(State {
                        sweep_at: SWEEP_FLOOR,
                        ..State::default()
                    }))
                }),
                wake: Notify::new(),
                running: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_flight: usize = (self.shared.shards.iter())
            .map(|s| {
                let state = s.lock();
                state.slots.len() - state.free.len()
            })
            .sum();
        f.debug_struct("Deadlines")
            .field("in_flight", &in_flight)
            .finish()
    }
}

impl Deadlines {
    /// Expires `call` at `at` unless the [`Filed`] returned is dropped first. Must be called on a
    /// tokio runtime (the task that keeps the deadlines is started on the first call).
    pub(crate) fn insert(&self, at: Instant, call: Arc<dyn Pending>) -> Filed<'_> {
        let shard = shard_of_this_thread();
        let mut state = self.shared.shards[shard].lock();
        if state.heap.len() >= state.sweep_at {
            state.sweep();
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
        drop(state);
        if !self.shared.running.load(Atomic::Acquire)
            && !self.shared.running.swap(true, Atomic::AcqRel)
        {
            let running = Running(self.shared.clone());
            tokio::spawn(async move { run(running).await });
        } else if earlier {
            self.shared.wake.notify_one();
        }
        Filed {
            deadlines: self,
            shard: shard as u8,
            key,
            generation,
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.closed.store(true, Atomic::Release);
        self.shared.wake.notify_one();
    }
}

/// Held by the task; marks it gone when its runtime drops it, so the next call starts another.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        for shard in &self.0.shards {
            shard.lock().armed = None;
        }
        self.0.running.store(false, Atomic::Release);
    }
}

async fn run(running: Running) {
    let shared = &running.0;
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    let mut due = Vec::new();
    loop {
        // Registered before the shards are read, so a deadline filed meanwhile is not missed.
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if shared.closed.load(Atomic::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for shard in &shared.shards {
            let mut state = shard.lock();
            while let Some(entry) = state.heap.peek().copied().filter(|e| e.at <= now) {
                state.heap.pop();
                if let Some(call) = state.take(entry.key, entry.generation) {
                    due.push(call);
                }
            }
            if let Some(first) = state.heap.peek() {
                next = Some(next.map_or(first.at, |n| n.min(first.at)));
            }
            // Until every shard is read, any deadline filed here wakes the task.
            state.armed = None;
        }
        if let Some(next) = next {
            for shard in &shared.shards {
                let mut state = shard.lock();
                // A shard that was filed into since it was read has already woken the task (its
                // `armed` is no longer `None`), which then reads every shard again.
                if state.armed.is_none() {
                    state.armed = Some(next);
                }
            }
        }
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
        d.shared.shards.iter().map(|s| s.lock().heap.len()).sum()
    }

    /// Each deadline expires its call at its own instant, in any order of insertion, and not before;
    /// a call nobody holds any more is dropped, not expired.
    #[tokio::test(start_paused = true)]
    async fn each_call_expires_at_its_own_deadline_and_not_before() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let probes: Vec<Arc<Probe>> = (0..3).map(|_| Arc::default()).collect();
        // Out of order: 300 ms, then 100 ms (earlier than what the task sleeps until), then 200 ms.
        let _filed: Vec<Filed<'_>> = (probes.iter().zip([300, 100, 200]))
            .map(|(probe, ms)| deadlines.insert(start + Duration::from_millis(ms), probe.clone()))
            .collect();
        let ended = Arc::new(Probe::default());
        drop(deadlines.insert(start + Duration::from_millis(50), ended.clone()));
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
        let _filed: Vec<Filed<'_>> = live
            .iter()
            .map(|probe| deadlines.insert(far, probe.clone()))
            .collect();
        for _ in 0..100 * SWEEP_FLOOR {
            drop(deadlines.insert(far, Arc::new(Probe::default())));
            assert!(
                len(&deadlines) <= 2 * SWEEP_FLOOR + 10,
                "{}",
                len(&deadlines)
            );
        }
        // One thread filed them all, so all in one shard.
        let state = deadlines.shared.shards[shard_of_this_thread()].lock();
        let kept = state.heap.iter().filter(|e| state.is_current(e)).count();
        assert_eq!(kept, live.len(), "every call in flight is still kept");
        assert_eq!(state.slots.len(), live.len() + 1, "slots are reused");
    }

    /// The task ends when the bus drops its deadlines.
    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_deadlines() {
        let deadlines = Deadlines::default();
        drop(deadlines.insert(
            Instant::now() + Duration::from_secs(5),
            Arc::new(Probe::default()),
        ));
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
