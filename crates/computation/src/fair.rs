//! The pool's queue, shared fairly between accounts: each account's runs wait in their own line,
//! the accounts take turns (one run each, round and round), and an account holding its share of
//! the workers waits for one of its runs to end before it gets another, so one account's long
//! runs never occupy the whole pool while another account waits.

use std::collections::{HashMap, VecDeque};

/// Runs waiting, by owner, with how many each owner has running.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    lines: HashMap<String, VecDeque<T>>,
    /// Owners with runs waiting, in the order of their next turn.
    turns: VecDeque<String>,
    running: HashMap<String, usize>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lines: HashMap::new(),
            turns: VecDeque::new(),
            running: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Runs waiting, in all.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Puts `task` at the end of `owner`'s line.
    pub(crate) fn push(&mut self, owner: &str, task: T) {
        let line = self.lines.entry(owner.to_owned()).or_default();
        if line.is_empty() {
            self.turns.push_back(owner.to_owned());
        }
        line.push_back(task);
        self.len += 1;
    }

    /// The next run to start: the first owner in turn with fewer than `share` runs going gives up
    /// its oldest, which counts as running until [`FairQueue::ended`], and goes to the back of the
    /// turns. `None` when nothing waits, or every owner waiting is at its share.
    pub(crate) fn pop(&mut self, share: usize) -> Option<(String, T)> {
        let at = self
            .turns
            .iter()
            .position(|owner| self.running.get(owner).copied().unwrap_or(0) < share)?;
        let owner = self.turns.remove(at)?;
        let line = self.lines.get_mut(&owner)?;
        let task = line.pop_front()?;
        if line.is_empty() {
            self.lines.remove(&owner);
        } else {
            self.turns.push_back(owner.clone());
        }
        self.len -= 1;
        *self.running.entry(owner.clone()).or_default() += 1;
        Some((owner, task))
    }

    /// One of `owner`'s runs taken by [`FairQueue::pop`] has ended (or was given up).
    pub(crate) fn ended(&mut self, owner: &str) {
        if let Some(running) = self.running.get_mut(owner) {
            *running -= 1;
            if *running == 0 {
                self.running.remove(owner);
            }
        }
    }

    /// Takes the first waiting run that `matches` out of its line.
    pub(crate) fn take(&mut self, matches: impl Fn(&T) -> bool) -> Option<T> {
        let (owner, at) = self.lines.iter().find_map(|(owner, line)| {
            line.iter().position(&matches).map(|at| (owner.clone(), at))
        })?;
        let line = self.lines.get_mut(&owner)?;
        let task = line.remove(at)?;
        if line.is_empty() {
            self.lines.remove(&owner);
            self.turns.retain(|o| o != &owner);
        }
        self.len -= 1;
        Some(task)
    }

    /// Every waiting run, taken out (the pool is closing).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.turns.clear();
        self.len = 0;
        self.lines.drain().flat_map(|(_, line)| line).collect()
    }
}

/// How many workers one account may hold: `percent` of `size`, rounded up, at least one.
pub(crate) fn share(size: usize, percent: u32) -> usize {
    (size * percent as usize)
        .div_ceil(100)
        .clamp(1, size.max(1))
}

#[cfg(test)]
mod tests {
    use super::{FairQueue, share};

    #[test]
    fn accounts_take_turns_and_none_goes_past_its_share() {
        let mut queue = FairQueue::default();
        for i in 0..4 {
            queue.push("mallory", format!("m{i}"));
        }
        queue.push("alice", "a0".to_owned());
        queue.push("bob", "b0".to_owned());
        queue.push("alice", "a1".to_owned());
        assert_eq!(queue.len(), 7);
        // Share 2: turns go round, one run each.
        let order: Vec<String> = std::iter::from_fn(|| queue.pop(2).map(|(_, t)| t)).collect();
        assert_eq!(order, ["m0", "a0", "b0", "m1", "a1"]);
        // Mallory holds two and waits, though her runs are first in the queue.
        assert_eq!(queue.len(), 2);
        assert!(queue.pop(2).is_none());
        queue.push("carol", "c0".to_owned());
        assert_eq!(queue.pop(2).map(|(_, t)| t).as_deref(), Some("c0"));
        queue.ended("mallory");
        assert_eq!(queue.pop(2), Some(("mallory".to_owned(), "m2".to_owned())));
        assert_eq!(queue.take(|t| t == "m3").as_deref(), Some("m3"));
        assert_eq!(queue.len(), 0);
        assert!(queue.pop(10).is_none());
        queue.push("dave", "d0".to_owned());
        assert_eq!(queue.drain(), ["d0"]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_share_is_a_percentage_of_the_workers_rounded_up_and_at_least_one() {
        assert_eq!(share(2, 50), 1);
        assert_eq!(share(3, 50), 2);
        assert_eq!(share(8, 50), 4);
        assert_eq!(share(1, 50), 1);
        assert_eq!(share(4, 1), 1);
        assert_eq!(share(4, 100), 4);
    }
}
