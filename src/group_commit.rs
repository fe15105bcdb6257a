//! Group commit, for the persistent kinds (file, sharded): sets on one handle that
//! arrive while another set is being committed wait in a queue, and one thread commits
//! every waiting set in one transaction.
//!
//! Why: every set used to be its own transaction, and under two writers the handle's
//! lock went to whichever thread asked first, so one writer could commit several times
//! while the other waited (p99 10x the median in `cache-speedtest --threads 2`). Now a
//! waiting set is committed by the next leader, whichever thread that is, so no set
//! waits for more than the transaction in progress and the one after it; and a
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
//! set queues its request; if no thread is leading, it leads: it takes every queued
//! request, commits them in one transaction (under the handle's lock, as any write),
//! hands each its outcome, wakes the waiters and gives the lead up. A set that finds a
//! leader sleeps until its request has an outcome or the lead is free. So a finished set
//! returns as soon as it is woken, whoever holds the handle's lock by then.
//!
//! Fork: the queue lock is registered with the fork handlers after the handle's state.
//! A child ignores a lead and requests from before the fork (their threads are not in
//! the child, and their sets are the parent's to commit): both carry the fork count
//! (`fork::forks`) they were made under.

use crate::backend::EntryRef;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::fork::{self, ForkLocks, ForkMutex};
use crate::sync::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// An entry to store until a Unix time (None = never).
#[derive(Clone, Copy)]
pub(crate) struct Until<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub expires: Option<f64>,
    pub flags: u32,
}

/// The expiry of an entry a bulk set is given with a TTL of 0: already past whatever
/// the clock says, so the write replaces the key and then reads as absent.
const DEAD_ON_ARRIVAL: f64 = f64::MIN;

impl<'a> Until<'a> {
    /// The entry a bulk set stores for `e` at the Unix time `now` (a TTL of 0: dead on
    /// arrival, the one encoding of it).
    pub fn of(e: &EntryRef<'a>, now: f64) -> Until<'a> {
        let expires = match e.ttl.is_expired_at_once() {
            true => Some(DEAD_ON_ARRIVAL),
            false => e.ttl.deadline_from(now),
        };
        Until {
            key: e.key,
            value: e.value,
            expires,
            flags: e.flags,
        }
    }

    /// Set with a TTL of 0: its key is to be removed rather than stored.
    pub fn is_dead_on_arrival(&self) -> bool {
        self.expires == Some(DEAD_ON_ARRIVAL)
    }
}

/// Values this large and up keep their own transaction: copying them into a request
/// would cost more than a shared commit saves (and from 32 KiB they go to value files).
const LARGEST_SHARED: usize = 4096;

/// Stores `entries` by `store`, in a transaction shared with other callers' waiting
/// sets when they are small, else on their own. `store` is given either the caller's
/// entries or a whole batch's, and commits them all or none.
pub(crate) fn commit(
    waiting: &Waiting,
    entries: &[Until],
    store: impl Fn(&[Until]) -> Result<()>,
) -> Result<()> {
    if entries.iter().any(|e| e.value.len() >= LARGEST_SHARED) {
        return store(entries);
    }
    let request = Request::new(entries);
    if waiting.wait_turn(&request) {
        let batch = waiting.lead();
        let outcome = store(&batch.entries());
        batch.finish(&outcome);
    }
    request
        .outcome()
        .expect("a request is finished before its waiter returns")
}

/// One caller's set, copied so the thread that commits it can read it.
pub(crate) struct Request {
    entries: Vec<OwnedUntil>,
    /// Written once, by the leader whose transaction held the request.
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
pub(crate) struct Waiting {
    queue: Mutex<Queue>,
    /// Notified when a leader has finished a batch and given the lead up.
    turn: Condvar,
    /// Batches led so far (how much sharing happens, for tests).
    batches: AtomicU64,
}

impl Waiting {
    /// Queues `request` and waits: true when the caller is to lead ([`Waiting::lead`],
    /// commit the batch, [`Batch::finish`]), false when another thread finished the
    /// request.
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

    /// The leader's batch: every request queued in this process. Dropping it hands each
    /// request its outcome and gives the lead up.
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
pub(crate) struct Batch<'a> {
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

/// Threads setting on one handle of a kind share transactions (fewer batches than
/// sets), and every acknowledged set is in the store afterwards, seen by a new handle:
/// each thread's own keys with their last values, and a key all threads write with one
/// of theirs. `open` opens the kind on a directory; `waiting` is a handle's queue.
#[cfg(test)]
pub(crate) fn check_sets_share_transactions<C: crate::Backend + 'static>(
    open: impl Fn(&std::path::Path) -> C,
    waiting: impl Fn(&C) -> &Waiting,
) {
    use crate::Ttl;
    const THREADS: usize = 4;
    const SETS: usize = 300;
    let dir = std::env::temp_dir().join(format!(
        "duckcache-group-{}-{}",
        std::process::id(),
        std::any::type_name::<C>()
            .rsplit("::")
            .next()
            .unwrap_or("cache")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = Arc::new(open(&dir));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..SETS {
                    let key = format!("t{t}-{}", i % 50);
                    let value = format!("{t}:{i}");
                    cache
                        .set(key.as_bytes(), value.as_bytes(), Ttl::Never)
                        .unwrap();
                    cache.set(b"shared", value.as_bytes(), Ttl::Never).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let sets = (THREADS * SETS * 2) as u64;
    let batches = waiting(&cache).batches();
    assert!(
        batches > 0 && batches < sets,
        "{batches} group commits for {sets} sets (0: no set was queued; as many: none shared)",
    );
    assert_eq!(cache.stats().unwrap().sets, sets);
    drop(cache);
    let reopened = open(&dir);
    for t in 0..THREADS {
        for k in 0..50 {
            let last = (0..SETS).rev().find(|i| i % 50 == k).unwrap();
            let key = format!("t{t}-{k}");
            let got = reopened.get_vec(key.as_bytes()).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(format!("{t}:{last}").as_bytes()),
                "{key}"
            );
        }
    }
    let shared = String::from_utf8(reopened.get_vec(b"shared").unwrap().unwrap()).unwrap();
    assert!(
        (0..THREADS).any(|t| shared == format!("{t}:{}", SETS - 1)),
        "shared holds {shared}, not one thread's last value"
    );
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);
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
