//! The deadlines of the bus's calls in flight, kept by one task instead of a timer per call.
//!
//! A call used to wait under `tokio::time::timeout_at`: a timer registered in the runtime's wheel on
//! the first poll and unlinked again when the answer came, about 840 of a call's 4,000 instructions.
//! Here a call pushes itself with its deadline onto a min-heap, in the shard of the thread it runs
//! on, and one task per bus sleeps until the earliest deadline of all shards and expires what is
//! due. Successive calls' deadlines mostly grow, so a push is a comparison. A call that ends is not
//! looked for in the heap (that would cost a search, and a second lock per call): it stays there,
//! over, until its deadline comes or until a sweep, which runs when the shard's heap has doubled
//! since the last one (and is at least [`SWEEP_FLOOR`] long) and keeps only the calls still
//! waiting. So a heap holds at most about twice the calls in flight, or the floor, and a sweep
//! costs a look per call it passes; the calls it lets go are recent, so their memory is reused
//! warm.
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

/// A sweep never runs on a shard's heap smaller than this: the ended calls a shard may hold. Small,
/// so that an ended call is let go (and its memory reused) while it is still in the cache: 128
/// here cost about six cache misses per call more (`callgrind --cache-sim`, docs/performance.md);
/// the doubling keeps a sweep's cost per insert constant whatever the floor.
const SWEEP_FLOOR: usize = 8;

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
    /// The calls filed, earliest deadline on top; some of them over.
    heap: BinaryHeap<Entry>,
    /// The heap's length at which the next insert sweeps out entries of calls that have ended.
    sweep_at: usize,
    /// What the task sleeps until, as far as this shard knows: an earlier deadline wakes it. `None`
    /// while the task waits for a first deadline, reads the shards, or is not running: then any
    /// deadline wakes it.
    armed: Option<Instant>,
}

struct Entry {
    at: Instant,
    call: Arc<dyn Pending>,
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

impl State {
    fn sweep(&mut self) {
        self.heap.retain(|e| !e.call.is_over());
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
        let filed: usize = (self.shared.shards.iter())
            .map(|s| s.lock().heap.len())
            .sum();
        f.debug_struct("Deadlines").field("filed", &filed).finish()
    }
}

impl Deadlines {
    /// Expires `call` at `at`, unless it is over by then ([`Pending::is_over`]). Must be called on
    /// a tokio runtime (the task that keeps the deadlines is started on the first call).
    pub(crate) fn insert(&self, at: Instant, call: Arc<dyn Pending>) {
        let shard = shard_of_this_thread();
        let mut state = self.shared.shards[shard].lock();
        if state.heap.len() >= state.sweep_at {
            state.sweep();
        }
        state.heap.push(Entry { at, call });
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
            while state.heap.peek().is_some_and(|e| e.at <= now) {
                if let Some(entry) = state.heap.pop() {
                    // Expired after the lock; a call already over ignores it.
                    due.push(entry.call);
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
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ServiceName;
    use crate::bus::call::Outcome;

    #[derive(Default)]
    struct Probe {
        expired: AtomicUsize,
        over: AtomicBool,
    }

    impl Probe {
        fn over() -> Arc<Probe> {
            let probe = Probe::default();
            probe.over.store(true, Ordering::SeqCst);
            Arc::new(probe)
        }
    }

    impl Pending for Probe {
        fn settle(&self, _: Outcome) -> bool {
            true
        }
        fn caller(&self) -> Option<ServiceName> {
            None
        }
        fn expire(&self) {
            // As a call: one that is over ignores its deadline.
            if !self.is_over() {
                self.expired.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn is_over(&self) -> bool {
            self.over.load(Ordering::SeqCst)
        }
        fn is_expired(&self) -> bool {
            self.expired.load(Ordering::SeqCst) > 0
        }
    }

    fn len(d: &Deadlines) -> usize {
        d.shared.shards.iter().map(|s| s.lock().heap.len()).sum()
    }

    /// Each deadline expires its call at its own instant, in any order of insertion, and not before;
    /// a call that is over is let go at its deadline without being expired.
    #[tokio::test(start_paused = true)]
    async fn each_call_expires_at_its_own_deadline_and_not_before() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let probes: Vec<Arc<Probe>> = (0..3).map(|_| Arc::default()).collect();
        // Out of order: 300 ms, then 100 ms (earlier than what the task sleeps until), then 200 ms.
        for (probe, ms) in probes.iter().zip([300, 100, 200]) {
            deadlines.insert(start + Duration::from_millis(ms), probe.clone());
        }
        let ended = Probe::over();
        deadlines.insert(start + Duration::from_millis(50), ended.clone());
        let expired = |i: usize| probes[i].expired.load(Ordering::SeqCst);
        for (ms, want) in [
            (49, [0, 0, 0]),
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
            if ms >= 99 {
                assert_eq!(
                    Arc::strong_count(&ended),
                    1,
                    "an ended call is let go at its deadline"
                );
            }
        }
        assert_eq!([expired(0), expired(1), expired(2)], [1, 1, 1]);
        assert_eq!(len(&deadlines), 0);
    }

    /// Calls that have ended do not pile up until their deadlines: the heap stays within about twice
    /// the calls in flight (or the floor), and every call still waiting is kept.
    #[tokio::test(start_paused = true)]
    async fn ended_calls_are_swept_out_long_before_their_deadlines() {
        let deadlines = Deadlines::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let live: Vec<Arc<Probe>> = (0..10).map(|_| Arc::default()).collect();
        for probe in &live {
            deadlines.insert(far, probe.clone());
        }
        let ended: Vec<Arc<Probe>> = (0..100 * SWEEP_FLOOR).map(|_| Probe::over()).collect();
        for probe in &ended {
            deadlines.insert(far, probe.clone());
            assert!(
                len(&deadlines) <= 2 * SWEEP_FLOOR + 10,
                "{}",
                len(&deadlines)
            );
        }
        let let_go = ended.iter().filter(|p| Arc::strong_count(p) == 1).count();
        assert!(
            let_go >= ended.len() - 2 * SWEEP_FLOOR,
            "the sweeps let go of the ended calls: {let_go} of {}",
            ended.len()
        );
        // One thread filed them all, so all in one shard.
        let state = deadlines.shared.shards[shard_of_this_thread()].lock();
        let kept = state.heap.iter().filter(|e| !e.call.is_over()).count();
        assert_eq!(kept, live.len(), "every call in flight is still kept");
        assert!(live.iter().all(|p| Arc::strong_count(p) == 2));
    }

    /// The task ends when the bus drops its deadlines.
    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_deadlines() {
        let deadlines = Deadlines::default();
        deadlines.insert(
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
