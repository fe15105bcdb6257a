//! Single-flight: of the threads that ask one handle for the same missing key at the
//! same time, one (the leader) computes the value and the others wait for its outcome
//! (`cache_get_or_compute`; moka's `get_with`, diskcache's stampede barrier).
//!
//! The table of flights in progress is per handle and keyed by the key's bytes. A thread
//! that asks again for a key it is itself computing (a compute calling get_or_compute on
//! the same key and handle) is told so instead of waiting for itself forever.

use crate::sync::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::ThreadId;

/// The flights of one handle; `T` is the outcome every waiter receives.
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<Vec<u8>, Arc<Flight<T>>>>,
    /// The outcome waiters get when a leader unwinds without finishing.
    abandoned: fn() -> T,
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
    /// The calling thread is already computing this key.
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
            flights: Mutex::new(HashMap::new()),
            abandoned,
        }
    }

    /// Leads the flight of `key`, or waits for the one in progress.
    pub fn join(&self, key: &[u8]) -> Role<'_, T> {
        let me = std::thread::current().id();
        let flight = {
            let mut flights = self.flights.lock();
            match flights.get(key) {
                Some(f) if f.leader == me => return Role::Reentered,
                Some(f) => f.clone(),
                None => {
                    let flight = Arc::new(Flight {
                        leader: me,
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    flights.insert(key.to_vec(), flight.clone());
                    return Role::Leader(Leader {
                        table: self,
                        key: key.to_vec(),
                        flight,
                        finished: false,
                    });
                }
            }
        };
        let mut outcome = flight.outcome.lock();
        loop {
            if let Some(done) = outcome.as_ref() {
                return Role::Follower(done.clone());
            }
            flight.done.wait(&mut outcome);
        }
    }

    /// Flights in progress (for tests).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
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
        self.table.flights.lock().remove(&self.key);
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
