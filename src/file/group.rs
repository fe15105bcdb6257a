//! Group commit: sets on one handle that arrive while another set holds the handle's
//! connection wait in a queue, and whichever thread takes the connection next commits
//! every waiting set in one transaction.
//!
//! Why: every set used to be its own transaction, and under two writers the handle's
//! lock went to whichever thread asked first, so one writer could commit several times
//! while the other waited (p99 10x the median in `cache-speedtest --threads 2`). Now a
//! waiting set is committed by the next thread to hold the lock, whoever that is, so no
//! set waits for more than the transaction in progress and the one after it; and a
//! transaction's fixed cost (the write lock, the WAL frames of the pages every set
//! touches, the index update) is shared.
//!
//! Every acknowledged set is as durable as before: a caller returns only after the
//! transaction holding its entries committed. Each caller's entries stay all or none.
//! A failing transaction fails every set in it, each with the same error (the failures
//! a transaction can have, I/O, a full disk, a busy lock, damage, belong to the store,
//! not to one set).
//!
//! The protocol, under a small queue lock (never held while waiting for the store): a
//! set queues its request; if no thread is leading, it leads: it takes the handle's
//! lock, takes every queued request, commits them in one transaction, hands each its
//! outcome and wakes the waiters, and gives the lead up, all before it lets the handle's
//! lock go. A set that finds a leader sleeps until its request has an outcome or the
//! lead is free. So a finished set returns as soon as it is woken, whoever holds the
//! handle's lock by then.
//!
//! Fork: the queue lock is registered with the fork handlers after the handle's state.
//! A child ignores a lead and requests from before the fork (their threads are not in
//! the child, and their sets are the parent's to commit): both carry the fork count
//! (`fork::forks`) they were made under.

use super::Until;
use crate::error::{Error, ErrorKind, Result};
use crate::ffi::fork::{self, ForkLocks, ForkMutex};
use crate::sync::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// Values this large and up keep their own transaction: they go to value files written
/// under the lock (see `with_value_files`), and copying them into a request would cost
/// more than a shared commit saves.
const LARGEST_SHARED: usize = 4096;

/// True when the entries may share a transaction with other callers' sets.
pub(super) fn may_join(entries: &[Until]) -> bool {
    entries.iter().all(|e| e.value.len() < LARGEST_SHARED)
}

/// One caller's set, copied so the thread that commits it can read it.
pub(super) struct Request {
    entries: Vec<OwnedUntil>,
    /// Written once, under the handle's lock, by the thread that ran the transaction.
    outcome: OnceLock<Result<()>>,
}

struct OwnedUntil {
    key: Vec<u8>,
    value: Vec<u8>,
    expires: Option<f64>,
    flags: u32,
}

impl Request {
    pub fn new(entries: &[Until]) -> Arc<Request> {
        Arc::new(Request {
            entries: entries
                .iter()
                .map(|e| OwnedUntil {
                    key: e.key.to_vec(),
                    value: e.value.to_vec(),
                    expires: e.expires,
                    flags: e.flags,
                })
                .collect(),
            outcome: OnceLock::new(),
        })
    }

    /// The outcome, once another thread committed (or failed) the request.
    pub fn outcome(&self) -> Option<Result<()>> {
        self.outcome.get().cloned()
    }

    fn finish(&self, outcome: Result<()>) {
        // Each request is taken from the queue once, so finished once.
        let _ = self.outcome.set(outcome);
    }
}

/// The queue of requests and the lead, behind the queue lock.
#[derive(Default)]
struct Queue {
    /// Requests not yet taken, each with the fork count it was queued under.
    requests: Vec<(u64, Arc<Request>)>,
    /// The fork count under which a thread took the lead, while it leads.
    leader: Option<u64>,
}

/// The requests waiting to be committed and the lead; see the module documentation.
#[derive(Default)]
pub(super) struct Waiting {
    queue: Mutex<Queue>,
    /// Notified when a leader has finished a batch and given the lead up.
    turn: Condvar,
    /// Batches led so far (how much sharing happens, for tests).
    batches: AtomicU64,
}

impl Waiting {
    /// Queues `request` and waits: true when the caller is to lead (take the handle's
    /// lock, then [`Waiting::lead`]), false when another thread finished the request.
    pub fn wait_turn(&self, request: &Arc<Request>) -> bool {
        let now = fork::forks();
        let mut queue = self.queue.lock();
        queue.requests.push((now, request.clone()));
        loop {
            if request.outcome.get().is_some() {
                return false;
            }
            if queue.leader != Some(now) {
                queue.leader = Some(now);
                return true;
            }
            self.turn.wait(&mut queue);
        }
    }

    /// The leader's batch: every request queued in this process (the caller holds the
    /// handle's lock). Dropping it hands each request its outcome and gives the lead up.
    pub fn lead(&self) -> Batch<'_> {
        let now = fork::forks();
        self.batches.fetch_add(1, Relaxed);
        let requests = std::mem::take(&mut self.queue.lock().requests)
            .into_iter()
            .filter_map(|(queued_under, r)| (queued_under == now).then_some(r))
            .collect();
        Batch {
            waiting: self,
            requests,
            outcome: None,
        }
    }
}

impl Waiting {
    /// Batches led so far.
    #[cfg(test)]
    pub fn batches(&self) -> u64 {
        self.batches.load(Relaxed)
    }

    /// Requests queued and not yet taken.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.lock().requests.len()
    }
}

impl ForkLocks for Waiting {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        vec![&self.queue]
    }
}

/// The requests one transaction commits, oldest first.
pub(super) struct Batch<'a> {
    waiting: &'a Waiting,
    requests: Vec<Arc<Request>>,
    outcome: Option<Result<()>>,
}

impl Batch<'_> {
    /// Every request's entries, in queue order (a key set by two requests ends with the
    /// later one's value, as if they had committed one after the other).
    pub fn entries(&self) -> Vec<Until<'_>> {
        self.requests
            .iter()
            .flat_map(|r| r.entries.iter())
            .map(|e| Until {
                key: &e.key,
                value: &e.value,
                expires: e.expires,
                flags: e.flags,
            })
            .collect()
    }

    /// The transaction's outcome, handed to every request when the batch is dropped.
    pub fn finish(mut self, outcome: &Result<()>) {
        self.outcome = Some(outcome.clone());
    }
}

impl Drop for Batch<'_> {
    /// Also runs when the leader unwinds (a bug): its waiters then get an internal error
    /// rather than waiting for ever.
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(Error::new(
                ErrorKind::Internal,
                "the thread committing this set together with others failed",
            ))
        });
        for request in self.requests.drain(..) {
            request.finish(outcome.clone());
        }
        self.waiting.queue.lock().leader = None;
        self.waiting.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &[u8]) -> Arc<Request> {
        Request::new(&[Until {
            key,
            value: b"v",
            expires: None,
            flags: 0,
        }])
    }

    /// Queues `request` from another thread while a leader leads, and returns once it
    /// is queued (the thread then waits for its turn; joined, it says whether it led).
    fn follow(waiting: &Arc<Waiting>, request: &Arc<Request>) -> std::thread::JoinHandle<bool> {
        let queued = waiting.queued();
        let follower = {
            let (waiting, request) = (waiting.clone(), request.clone());
            std::thread::spawn(move || waiting.wait_turn(&request))
        };
        while waiting.queued() == queued {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        follower
    }

    #[test]
    fn a_follower_is_finished_by_the_leader_and_a_free_lead_is_taken() {
        let waiting = Arc::new(Waiting::default());
        let first = request(b"a");
        assert!(waiting.wait_turn(&first), "no leader: the first set leads");
        let second = request(b"b");
        let follower = follow(&waiting, &second);
        let batch = waiting.lead();
        let keys: Vec<&[u8]> = batch.entries().iter().map(|e| e.key).collect();
        assert_eq!(keys, [&b"a"[..], b"b"]);
        batch.finish(&Ok(()));
        assert!(
            !follower.join().unwrap(),
            "the follower's set was committed for it"
        );
        assert_eq!(
            (first.outcome(), second.outcome()),
            (Some(Ok(())), Some(Ok(())))
        );
        assert!(waiting.wait_turn(&request(b"c")), "the lead is free again");
        assert_eq!(waiting.batches(), 1);
    }

    #[test]
    fn a_failed_batch_fails_every_set_in_it_and_a_leader_that_unwinds_frees_the_lead() {
        let waiting = Arc::new(Waiting::default());
        let first = request(b"a");
        assert!(waiting.wait_turn(&first));
        let second = request(b"b");
        let follower = follow(&waiting, &second);
        let full = Err(Error::new(ErrorKind::Io, "disk full"));
        waiting.lead().finish(&full);
        assert!(!follower.join().unwrap());
        assert_eq!(
            (first.outcome(), second.outcome()),
            (Some(full.clone()), Some(full))
        );

        // A leader that panics between taking its batch and finishing it.
        let third = request(b"c");
        assert!(waiting.wait_turn(&third));
        let fourth = request(b"d");
        let follower = follow(&waiting, &fourth);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _batch = waiting.lead();
            panic!("a bug while committing");
        }));
        assert!(unwound.is_err());
        assert!(
            !follower.join().unwrap(),
            "the follower is woken, not left waiting"
        );
        for r in [&third, &fourth] {
            let err = r.outcome().unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Internal);
        }
        assert!(waiting.wait_turn(&request(b"e")), "the lead is free again");
    }
}
