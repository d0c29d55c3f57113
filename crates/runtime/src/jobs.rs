//! A job table: work a service runs in the background for an owner, kept with what the owner may
//! read about it (the service's own job type) until a bound on finished jobs drops it: a count per
//! owner, and the bytes finished jobs retain ([`Info::retained_bytes`]) per owner and in all. Past
//! the total, the owner retaining the most loses its oldest first, so one owner's flood of large
//! results drops its own, not another's.
//!
//! The table is plain data with one owner, the service's incarnation, which submits jobs and
//! records what happens to them as its workers report. Readers do not share the table: a reader
//! gets a [`Watch`] on one job and awaits its end on the job's own `watch` channel, with or without
//! a deadline, while the incarnation goes on. Another owner's job id is simply not found:
//! existence is never revealed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

/// What a service keeps about one job (its state, times and outcome), as the owner sees it.
pub trait Info: Clone + Send + Sync + 'static {
    /// Whether the job has ended; nothing changes about a finished job.
    fn is_finished(&self) -> bool;

    /// The bytes a finished job holds on to (its result and output), counted against the table's
    /// byte bounds. None by default.
    fn retained_bytes(&self) -> usize {
        0
    }
}

/// A job just submitted.
#[derive(Debug)]
pub struct Submitted<T> {
    /// The job's id: the table's prefix and 128 random bits.
    pub id: String,
    /// The job as it was made.
    pub info: T,
    /// Set when the job is cancelled (or its owner purged); the work polls it.
    pub cancel: Arc<AtomicBool>,
}

/// What a cancel found.
#[derive(Debug)]
pub enum Cancel<T> {
    /// The job had already finished: this is how.
    Finished(T),
    /// The job's flag is set; it ends when its work sees it. Await its end on `done`; `flag` is
    /// for a scheduler that can stop the work sooner (drop it from a queue).
    Stopping {
        /// The job's cancel flag (already set).
        flag: Arc<AtomicBool>,
        /// The job, once it has ended.
        done: Watch<T>,
    },
}

/// The job was forgotten (its owner purged) before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job was forgotten before it finished")]
pub struct Gone;

/// One job as it changes: the reader's side of its channel.
#[derive(Debug)]
pub struct Watch<T>(watch::Receiver<T>);

impl<T: Info> Watch<T> {
    /// The job once it has finished (at once if it has).
    pub async fn finished(mut self) -> Result<T, Gone> {
        let info = self.0.wait_for(T::is_finished).await.map_err(|_| Gone)?;
        Ok(info.clone())
    }

    /// The job once it has finished, or as it is at `deadline` if it has not by then.
    pub async fn finished_by(mut self, deadline: Instant) -> Result<T, Gone> {
        let waited = tokio::time::timeout_at(deadline, self.0.wait_for(T::is_finished))
            .await
            .map(|ended| ended.map(|info| info.clone()));
        match waited {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(_)) => Err(Gone),
            Err(_) if self.0.has_changed().is_err() => Err(Gone),
            Err(_) => Ok(self.0.borrow().clone()),
        }
    }
}

struct Entry<T> {
    /// Order of submission, for listing.
    seq: u64,
    info: watch::Sender<T>,
    cancel: Arc<AtomicBool>,
    /// What the job retains once finished (0 before).
    bytes: usize,
}

struct Owned<T> {
    jobs: HashMap<String, Entry<T>>,
    /// Finished jobs, in the order they finished.
    finished: VecDeque<String>,
    /// What the finished jobs retain, in all.
    bytes: usize,
}

impl<T> Default for Owned<T> {
    fn default() -> Self {
        Owned {
            jobs: HashMap::new(),
            finished: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T> Owned<T> {
    /// Drops the oldest finished job; the bytes it retained.
    fn drop_oldest(&mut self) -> usize {
        let Some(old) = self.finished.pop_front() else {
            return 0;
        };
        let bytes = self.jobs.remove(&old).map_or(0, |e| e.bytes);
        self.bytes -= bytes;
        bytes
    }
}

/// How much finished jobs may retain, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepBytes {
    /// Per owner: past it, the owner's oldest finished jobs go (its newest is always kept).
    pub per_owner: usize,
    /// In all: past it, the oldest finished jobs of the owner retaining the most go.
    pub total: usize,
}

impl KeepBytes {
    /// No byte bound.
    pub const UNBOUNDED: KeepBytes = KeepBytes {
        per_owner: usize::MAX,
        total: usize::MAX,
    };
}

/// A purged job still running: no reader sees it, but its end is awaited.
struct Draining<T> {
    info: T,
    ended: watch::Sender<bool>,
}

/// Every owner's jobs.
pub struct Table<T> {
    prefix: &'static str,
    keep_finished: usize,
    keep_bytes: KeepBytes,
    /// What every owner's finished jobs retain.
    bytes: usize,
    owners: HashMap<String, Owned<T>>,
    draining: HashMap<(String, String), Draining<T>>,
    next_seq: u64,
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("prefix", &self.prefix)
            .field("keep_finished", &self.keep_finished)
            .field("keep_bytes", &self.keep_bytes)
            .field("bytes", &self.bytes)
            .field("owners", &self.owners.len())
            .field("draining", &self.draining.len())
            .finish()
    }
}

impl<T: Info> Table<T> {
    /// An empty table whose ids start with `prefix`, keeping at most `keep_finished` finished jobs
    /// per owner (at least one).
    pub fn new(prefix: &'static str, keep_finished: usize) -> Self {
        Table {
            prefix,
            keep_finished: keep_finished.max(1),
            keep_bytes: KeepBytes::UNBOUNDED,
            bytes: 0,
            owners: HashMap::new(),
            draining: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Changes the bound on finished jobs kept per owner; it applies as the next job finishes.
    pub fn set_keep_finished(&mut self, keep: usize) {
        self.keep_finished = keep.max(1);
    }

    /// Changes the bounds on what finished jobs retain; they apply as the next job finishes.
    pub fn set_keep_bytes(&mut self, keep: KeepBytes) {
        self.keep_bytes = keep;
    }

    /// What finished jobs retain now, in all.
    pub fn retained_bytes(&self) -> usize {
        self.bytes
    }

    /// Records a new job of `owner`, made by `make` from its fresh id.
    pub fn submit(&mut self, owner: &str, make: impl FnOnce(&str) -> T) -> Submitted<T> {
        let id = crate::id::new_id(self.prefix);
        let info = make(&id);
        let cancel = Arc::new(AtomicBool::new(false));
        self.next_seq += 1;
        let entry = Entry {
            seq: self.next_seq,
            info: watch::Sender::new(info.clone()),
            cancel: cancel.clone(),
            bytes: 0,
        };
        self.owners
            .entry(owner.to_owned())
            .or_default()
            .jobs
            .insert(id.clone(), entry);
        Submitted { id, info, cancel }
    }

    /// Forgets a job whose work never started (a scheduler refused it); its readers see [`Gone`].
    pub fn remove(&mut self, owner: &str, id: &str) {
        if let Some(o) = self.owners.get_mut(owner) {
            let bytes = o.jobs.remove(id).map_or(0, |e| e.bytes);
            o.bytes -= bytes;
            self.bytes -= bytes;
            o.finished.retain(|f| f != id);
            if o.jobs.is_empty() {
                self.owners.remove(owner);
            }
        }
        if let Some(d) = self.draining.remove(&(owner.to_owned(), id.to_owned())) {
            d.ended.send_replace(true);
        }
    }

    /// Changes a job as its work reports (started, finished): readers see the change. A job that
    /// finishes here counts against the bound, the owner's oldest finished job dropped first.
    /// A finished job stays as it is; an unknown one is ignored.
    pub fn update(&mut self, owner: &str, id: &str, change: impl FnOnce(&mut T)) {
        let key = (owner.to_owned(), id.to_owned());
        if let Some(d) = self.draining.get_mut(&key) {
            change(&mut d.info);
            if d.info.is_finished()
                && let Some(d) = self.draining.remove(&key)
            {
                d.ended.send_replace(true);
            }
            return;
        }
        let Some(o) = self.owners.get_mut(owner) else {
            return;
        };
        let Some(entry) = o.jobs.get_mut(id) else {
            return;
        };
        if entry.info.borrow().is_finished() {
            return;
        }
        entry.info.send_modify(change);
        if !entry.info.borrow().is_finished() {
            return;
        }
        entry.bytes = entry.info.borrow().retained_bytes();
        o.bytes += entry.bytes;
        self.bytes += entry.bytes;
        o.finished.push_back(id.to_owned());
        while o.finished.len() > self.keep_finished
            || (o.bytes > self.keep_bytes.per_owner && o.finished.len() > 1)
        {
            self.bytes -= o.drop_oldest();
        }
        self.hold_to_total();
    }

    /// Drops finished jobs, the oldest of the owner retaining the most first, until what they
    /// retain is within the total.
    fn hold_to_total(&mut self) {
        while self.bytes > self.keep_bytes.total {
            let Some(largest) = self
                .owners
                .values_mut()
                .filter(|o| !o.finished.is_empty())
                .max_by_key(|o| o.bytes)
            else {
                return;
            };
            self.bytes -= largest.drop_oldest();
        }
        self.owners
            .retain(|_, o| !o.jobs.is_empty() || !o.finished.is_empty());
    }

    /// The job as it is now.
    pub fn get(&self, owner: &str, id: &str) -> Option<T> {
        self.entry(owner, id).map(|e| e.info.borrow().clone())
    }

    /// A reader's view of the job, to await its end.
    pub fn watch(&self, owner: &str, id: &str) -> Option<Watch<T>> {
        self.entry(owner, id).map(|e| Watch(e.info.subscribe()))
    }

    /// The owner's jobs, oldest first.
    pub fn list(&self, owner: &str) -> Vec<T> {
        let Some(o) = self.owners.get(owner) else {
            return Vec::new();
        };
        let mut jobs: Vec<&Entry<T>> = o.jobs.values().collect();
        jobs.sort_by_key(|e| e.seq);
        jobs.into_iter().map(|e| e.info.borrow().clone()).collect()
    }

    /// Cancels a job: sets its flag unless it has finished.
    pub fn cancel(&self, owner: &str, id: &str) -> Option<Cancel<T>> {
        let entry = self.entry(owner, id)?;
        let info = entry.info.borrow().clone();
        if info.is_finished() {
            return Some(Cancel::Finished(info));
        }
        entry.cancel.store(true, Ordering::Relaxed);
        Some(Cancel::Stopping {
            flag: entry.cancel.clone(),
            done: Watch(entry.info.subscribe()),
        })
    }

    /// Cancels and forgets every job of `owner` (an account being deleted): readers see [`Gone`]
    /// at once. The future resolves when each job that was still going has reported its end.
    pub fn purge(&mut self, owner: &str) -> impl Future<Output = ()> + Send + 'static {
        let mut ends = Vec::new();
        let owned = self.owners.remove(owner).unwrap_or_default();
        self.bytes -= owned.bytes;
        for (id, entry) in owned.jobs {
            entry.cancel.store(true, Ordering::Relaxed);
            let info = entry.info.borrow().clone();
            if !info.is_finished() {
                let (ended, end) = watch::channel(false);
                ends.push(end);
                self.draining
                    .insert((owner.to_owned(), id), Draining { info, ended });
            }
        }
        async move {
            for mut end in ends {
                let _ = end.wait_for(|ended| *ended).await;
            }
        }
    }

    /// Sets the cancel flag of every job still going (the service is stopping).
    pub fn cancel_all(&self) {
        for o in self.owners.values() {
            for entry in o.jobs.values() {
                entry.cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    fn entry(&self, owner: &str, id: &str) -> Option<&Entry<T>> {
        self.owners.get(owner).and_then(|o| o.jobs.get(id))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Job {
        id: String,
        state: &'static str,
        result: usize,
    }

    impl Info for Job {
        fn is_finished(&self) -> bool {
            matches!(self.state, "done" | "cancelled")
        }

        fn retained_bytes(&self) -> usize {
            self.result
        }
    }

    fn pending(id: &str) -> Job {
        Job {
            id: id.to_owned(),
            state: "pending",
            result: 0,
        }
    }

    fn set(state: &'static str) -> impl FnOnce(&mut Job) {
        move |j| j.state = state
    }

    fn done_with(bytes: usize) -> impl FnOnce(&mut Job) {
        move |j| {
            j.state = "done";
            j.result = bytes;
        }
    }

    #[test]
    fn finished_jobs_retain_no_more_than_the_byte_bounds_and_a_flood_drops_its_own() {
        let mut table = Table::new("job", 100);
        table.set_keep_bytes(KeepBytes {
            per_owner: 1000,
            total: 1500,
        });
        let bob = table.submit("bob", pending);
        table.update("bob", &bob.id, done_with(600));
        let alice: Vec<_> = (0..5).map(|_| table.submit("alice", pending)).collect();
        table.update("alice", &alice[0].id, done_with(500));
        // 600 + 1000 is over the total: the largest holder, Alice, loses her oldest; Bob's stays.
        table.update("alice", &alice[1].id, done_with(500));
        assert!(table.get("alice", &alice[0].id).is_none(), "over the total");
        assert!(table.get("bob", &bob.id).is_some(), "bob's result is kept");
        assert_eq!(table.retained_bytes(), 600 + 500);
        // Past 1000 of her own, her oldest go.
        table.update("alice", &alice[2].id, done_with(300));
        table.update("alice", &alice[3].id, done_with(300));
        assert!(
            table.get("alice", &alice[1].id).is_none(),
            "over her own bound"
        );
        assert_eq!(table.list("alice").len(), 3, "two finished, one pending");
        assert_eq!(table.retained_bytes(), 600 + 600);
        // One result over her own bound is kept alone, until the total needs its room.
        table.update("alice", &alice[4].id, done_with(1200));
        assert!(table.get("alice", &alice[3].id).is_none());
        assert!(
            table.get("alice", &alice[4].id).is_none(),
            "600 + 1200 is over the total"
        );
        assert!(table.get("bob", &bob.id).is_some());
        assert_eq!(table.retained_bytes(), 600);
        table.set_keep_bytes(KeepBytes {
            per_owner: 1000,
            total: 5000,
        });
        let big = table.submit("alice", pending);
        table.update("alice", &big.id, done_with(1200));
        assert!(
            table.get("alice", &big.id).is_some(),
            "the newest is kept alone"
        );
        assert_eq!(table.retained_bytes(), 1800);
        // A purge gives its bytes back.
        drop(table.purge("alice"));
        assert_eq!(table.retained_bytes(), 600);
    }

    #[test]
    fn jobs_are_listed_per_owner_oldest_first_and_hidden_from_others() {
        let mut table = Table::new("job", 10);
        let a = table.submit("alice", pending);
        let b = table.submit("alice", pending);
        let c = table.submit("bob", pending);
        assert!(a.id.starts_with("job_") && a.id.len() == 4 + 32, "{}", a.id);
        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(table.list("alice")), [a.id.clone(), b.id.clone()]);
        assert_eq!(ids(table.list("bob")), [c.id]);
        assert_eq!(
            table.get("bob", &a.id),
            None,
            "another owner's job is not found"
        );
        assert!(table.cancel("bob", &a.id).is_none());
        assert!(!a.cancel.load(Ordering::Relaxed));
        table.update("alice", &a.id, set("running"));
        assert_eq!(table.get("alice", &a.id).map(|j| j.state), Some("running"));
    }

    #[test]
    fn the_oldest_finished_jobs_beyond_the_bound_are_dropped() {
        let mut table = Table::new("job", 2);
        let jobs: Vec<_> = (0..4).map(|_| table.submit("alice", pending)).collect();
        // Finish in the order 2, 0, 1, 3: job 2 and then job 0 are dropped.
        for i in [2, 0, 1] {
            table.update("alice", &jobs[i].id, set("done"));
        }
        assert_eq!(table.get("alice", &jobs[2].id), None);
        assert!(table.get("alice", &jobs[0].id).is_some());
        table.update("alice", &jobs[3].id, set("done"));
        assert_eq!(table.get("alice", &jobs[0].id), None);
        assert_eq!(table.list("alice").len(), 2);
        // A finished job does not change again.
        table.update("alice", &jobs[3].id, set("running"));
        assert_eq!(
            table.get("alice", &jobs[3].id).map(|j| j.state),
            Some("done")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_job_finishes_or_at_its_deadline() {
        let mut table = Table::new("job", 10);
        let job = table.submit("alice", pending);
        let start = Instant::now();
        let by_deadline = table
            .watch("alice", &job.id)
            .expect("found")
            .finished_by(start + Duration::from_secs(5));
        let until_done = tokio::spawn(table.watch("alice", &job.id).expect("found").finished());
        table.update("alice", &job.id, set("running"));
        // Not finished by the deadline: the job as it is then.
        assert_eq!(by_deadline.await.map(|j| j.state), Ok("running"));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!until_done.is_finished());
        table.update("alice", &job.id, set("done"));
        assert_eq!(
            until_done.await.expect("joins").map(|j| j.state),
            Ok("done")
        );
        // Finished already: at once.
        let at = Instant::now();
        let done = table.watch("alice", &job.id).expect("found");
        assert_eq!(
            done.finished_by(at + Duration::from_secs(5))
                .await
                .map(|j| j.state),
            Ok("done")
        );
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_sets_the_flag_and_answers_the_end() {
        let mut table = Table::new("job", 10);
        let job = table.submit("alice", pending);
        let Some(Cancel::Stopping { flag, done }) = table.cancel("alice", &job.id) else {
            panic!("a pending job is stopping");
        };
        assert!(flag.load(Ordering::Relaxed) && job.cancel.load(Ordering::Relaxed));
        let done = tokio::spawn(done.finished());
        tokio::task::yield_now().await;
        assert!(!done.is_finished());
        table.update("alice", &job.id, set("cancelled"));
        assert_eq!(done.await.expect("joins").map(|j| j.state), Ok("cancelled"));
        assert!(matches!(
            table.cancel("alice", &job.id),
            Some(Cancel::Finished(Job {
                state: "cancelled",
                ..
            }))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_purge_forgets_at_once_and_resolves_when_the_running_jobs_end() {
        let mut table = Table::new("job", 10);
        let running = table.submit("alice", pending);
        let finished = table.submit("alice", pending);
        let other = table.submit("bob", pending);
        table.update("alice", &running.id, set("running"));
        table.update("alice", &finished.id, set("done"));
        let waiter = tokio::spawn(table.watch("alice", &running.id).expect("found").finished());
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiter_by = table
            .watch("alice", &running.id)
            .expect("found")
            .finished_by(deadline);
        let purged = tokio::spawn(table.purge("alice"));
        assert!(running.cancel.load(Ordering::Relaxed));
        assert!(
            !other.cancel.load(Ordering::Relaxed),
            "bob's job is left alone"
        );
        assert!(table.list("alice").is_empty() && table.get("alice", &running.id).is_none());
        assert_eq!(waiter.await.expect("joins"), Err(Gone));
        assert_eq!(waiter_by.await, Err(Gone));
        assert_eq!(
            Instant::now() + Duration::from_secs(30),
            deadline,
            "at once"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!purged.is_finished(), "the running job has not ended");
        table.update("alice", &running.id, set("cancelled"));
        purged.await.expect("joins");
        assert!(table.get("alice", &running.id).is_none());
        assert_eq!(table.list("bob").len(), 1);
        // A purge with nothing still going resolves at once.
        table.update("bob", &other.id, set("done"));
        let at = Instant::now();
        table.purge("bob").await;
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_job_is_gone_for_its_readers() {
        let mut table = Table::new("job", 10);
        let job = table.submit("alice", pending);
        let waiter = table.watch("alice", &job.id).expect("found");
        table.remove("alice", &job.id);
        assert_eq!(waiter.finished().await, Err(Gone));
        assert!(table.list("alice").is_empty());
    }
}
