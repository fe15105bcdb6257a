//! Single-flight: of the threads that ask one handle for the same missing key at the
//! same time, one (the leader) computes the value and the others wait for its outcome
//! (`cache_get_or_compute`; moka's `get_with`, diskcache's stampede barrier).
//!
//! The table of flights in progress is per handle and keyed by the key's bytes. A thread
//! that asks again for a key it is itself computing (a compute calling get_or_compute on
//! the same key and handle) is told so instead of waiting for itself forever; so is one
//! whose wait would close a circle of waits on the handle (the compute of A asks for B
//! while B's asks for A: each leader would wait for the other forever).

use crate::sync::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::ThreadId;

/// The flights of one handle; `T` is the outcome every waiter receives.
pub struct SingleFlight<T> {
    flights: Mutex<Table<T>>,
    /// The outcome waiters get when a leader unwinds without finishing.
    abandoned: fn() -> T,
}

struct Table<T> {
    flights: HashMap<Vec<u8>, Arc<Flight<T>>>,
    /// Each thread waiting for a flight of this handle, and that flight's leader.
    waiting_for: HashMap<ThreadId, ThreadId>,
}

impl<T> Table<T> {
    /// True when `me` waiting for `leader` would close a circle: `leader` waits (through
    /// the leaders it waits for) for `me`.
    fn would_close_a_circle(&self, me: ThreadId, leader: ThreadId) -> bool {
        let mut at = leader;
        // Each step follows one waiting thread, so a chain is at most that long.
        for _ in 0..=self.waiting_for.len() {
            if at == me {
                return true;
            }
            match self.waiting_for.get(&at) {
                Some(&next) => at = next,
                None => return false,
            }
        }
        false
    }
}

struct Flight<T> {
    leader: ThreadId,
    outcome: Mutex<Option<T>>,
    done: Condvar,
}

/// What [`SingleFlight::join`] makes of the caller.
pub enum Role<'a, T: Clone> {
    /// Compute, then hand the outcome to [`Leader::finish`].
    Leader(Leader<'a, T>),
    /// Another thread computed; this is its outcome.
    Follower(T),
    /// The calling thread is already computing this key, or waiting would close a
    /// circle of computes waiting for each other.
    Reentered,
}

/// The duty to finish a flight; dropping it unfinished hands waiters `abandoned()`.
pub struct Leader<'a, T: Clone> {
    table: &'a SingleFlight<T>,
    key: Vec<u8>,
    flight: Arc<Flight<T>>,
    finished: bool,
}

impl<T: Clone> SingleFlight<T> {
    pub fn new(abandoned: fn() -> T) -> Self {
        SingleFlight {
            flights: Mutex::new(Table {
                flights: HashMap::new(),
                waiting_for: HashMap::new(),
            }),
            abandoned,
        }
    }

    /// Leads the flight of `key`, or waits for the one in progress.
    pub fn join(&self, key: &[u8]) -> Role<'_, T> {
        let me = std::thread::current().id();
        let flight = {
            let mut table = self.flights.lock();
            match table.flights.get(key) {
                Some(f) if f.leader == me => return Role::Reentered,
                Some(f) if table.would_close_a_circle(me, f.leader) => return Role::Reentered,
                Some(f) => {
                    let f = f.clone();
                    table.waiting_for.insert(me, f.leader);
                    f
                }
                None => {
                    let flight = Arc::new(Flight {
                        leader: me,
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    table.flights.insert(key.to_vec(), flight.clone());
                    return Role::Leader(Leader {
                        table: self,
                        key: key.to_vec(),
                        flight,
                        finished: false,
                    });
                }
            }
        };
        let done = {
            let mut outcome = flight.outcome.lock();
            loop {
                if let Some(done) = outcome.as_ref() {
                    break done.clone();
                }
                flight.done.wait(&mut outcome);
            }
        };
        self.flights.lock().waiting_for.remove(&me);
        Role::Follower(done)
    }

    /// Flights in progress (for tests).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().flights.len()
    }
}

impl<T: Clone> Leader<'_, T> {
    /// Hands `outcome` to every waiter and ends the flight; later callers start anew.
    pub fn finish(mut self, outcome: T) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: T) {
        self.finished = true;
        // Off the table first: a caller arriving now reads the store (which the leader
        // has written) or leads a new flight; it never waits on a finished one.
        self.table.flights.lock().flights.remove(&self.key);
        *self.flight.outcome.lock() = Some(outcome);
        self.flight.done.notify_all();
    }
}

impl<T: Clone> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        if !self.finished {
            let abandoned = (self.table.abandoned)();
            self.publish(abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn one_leader_and_every_waiter_gets_its_outcome() {
        let table = SingleFlight::new(|| -1i64);
        let computed = AtomicUsize::new(0);
        let barrier = Barrier::new(16);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        match table.join(b"k") {
                            Role::Leader(leader) => {
                                computed.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(50));
                                leader.finish(42);
                                42
                            }
                            Role::Follower(v) => v,
                            Role::Reentered => unreachable!(),
                        }
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), 42);
            }
        });
        // All joined within the leader's 50 ms, so there was one flight.
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert_eq!(table.in_flight(), 0);
    }

    #[test]
    fn two_leaders_asking_for_each_others_key_are_told_instead_of_waiting_forever() {
        let table = SingleFlight::new(|| -1i64);
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            let run = |mine: &'static [u8], theirs: &'static [u8]| {
                let (table, barrier) = (&table, &barrier);
                s.spawn(move || {
                    let Role::Leader(leader) = table.join(mine) else {
                        panic!("each leads its own key")
                    };
                    barrier.wait();
                    // The compute of `mine` asks for `theirs`, whose compute asks for
                    // `mine`: one of the two waits, the other is told (and so finishes,
                    // which ends the first one's wait).
                    let inner = match table.join(theirs) {
                        Role::Reentered => 0,
                        Role::Follower(v) => v,
                        Role::Leader(_) => panic!("{theirs:?} is in flight"),
                    };
                    leader.finish(1 + inner);
                    inner
                })
            };
            let (a, b) = (run(b"a", b"b"), run(b"b", b"a"));
            let mut got = [a.join().unwrap(), b.join().unwrap()];
            got.sort();
            assert_eq!(got, [0, 1], "one was told, the other got its outcome");
        });
        assert_eq!(table.in_flight(), 0);
    }

    #[test]
    fn the_leader_asking_again_is_told_and_an_abandoned_flight_ends() {
        let table = SingleFlight::new(|| -1i64);
        let Role::Leader(leader) = table.join(b"k") else {
            panic!("first caller leads")
        };
        assert!(matches!(table.join(b"k"), Role::Reentered));
        assert!(matches!(table.join(b"other"), Role::Leader(_)));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| match table.join(b"k") {
                Role::Follower(v) => v,
                _ => panic!("a second thread waits"),
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(leader);
            assert_eq!(waiter.join().unwrap(), -1);
        });
        assert_eq!(table.in_flight(), 0);
    }
}
