//! The async executor: a fixed pool of worker threads, started on first use, running
//! per-handle FIFO queues. Each [`Queue`] is run by at most one thread at a time, so a
//! handle's jobs happen in the order they were submitted while different handles
//! proceed in parallel. The executor knows nothing about caches or C: a job is a closure.
//!
//! Pool size: the `DUCKCACHE_WORKERS` environment variable when set (1 to 256), else
//! the number of CPUs, at least 2 and at most 16. A process made by fork() starts a pool
//! of its own on first use.
//!
//! Draining ([`Queue::close_and_drain`]) waits for every job of a queue to finish. From a
//! worker thread it runs the remaining jobs itself rather than wait, so a job that
//! closes another handle cannot deadlock the pool. It refuses
//! ([`DrainError::InsideOwnJob`]) where waiting could never end: inside a job of the
//! queue being drained, also when that job is further up this thread's stack (a job of
//! B drains A, which runs A's job here, which drains B), and when the thread running
//! the queue is itself waiting, directly or through others, for a queue this thread is
//! running (B's job on one worker drains A while A's job on another drains B).

use crate::sync::fork::{self, ForkLocks, ForkMutex};
use crate::sync::{Condvar, Mutex};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::ThreadId;

/// For each thread waiting in a drain, the queue it waits for: the edges along which
/// [`Queue::close_and_drain`] looks for a cycle before it waits. (A short list: one
/// entry per thread waiting right now. A Vec rather than a map also keeps leak checkers
/// quiet about the static's allocation at exit.)
static DRAIN_WAITS: Mutex<Vec<(ThreadId, Arc<Queue>)>> = Mutex::new(Vec::new());

fn waited_for(waits: &[(ThreadId, Arc<Queue>)], thread: ThreadId) -> Option<&Arc<Queue>> {
    waits.iter().find(|(t, _)| *t == thread).map(|(_, q)| q)
}

/// A unit of work.
pub type Job = Box<dyn FnOnce() + Send>;

/// Jobs a worker runs from one queue before letting other queues go first.
const BATCH: usize = 64;

/// A handle's queue of jobs.
pub struct Queue {
    state: Mutex<State>,
    /// Signalled whenever a job finishes.
    finished: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// In the pool's channel or being run by a worker.
    scheduled: bool,
    /// A thread is running one of this queue's jobs now.
    executing: bool,
    /// No more jobs accepted.
    closed: bool,
    /// Runs once the queue is closed and empty (a free deferred from inside a job).
    on_drained: Option<Job>,
    /// The process `scheduled` and `executing` describe (0 before the first job).
    pid: u32,
    /// The thread running a job of this queue now (when `executing`).
    executor: Option<ThreadId>,
}

impl State {
    fn is_idle(&self) -> bool {
        self.jobs.is_empty() && !self.executing
    }

    /// After fork() a child has a copy of the queue but none of the threads that were
    /// scheduled to run it or running it (a worker finishing its bookkeeping after the
    /// last callback, say): forget that activity, so the child's own pool takes over.
    fn claim_for_this_process(&mut self) {
        let pid = std::process::id();
        if self.pid != pid {
            self.scheduled = false;
            self.executing = false;
            self.executor = None;
            self.pid = pid;
        }
    }
}

/// Why a submission was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// Why a drain was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainError {
    /// Called from one of the queue's own jobs, which could never see the queue empty.
    InsideOwnJob,
}

thread_local! {
    /// The queues whose jobs this thread is running, outermost first (a job that drains
    /// another queue runs that queue's jobs nested inside its own).
    static RUNNING: RefCell<Vec<*const Queue>> = const { RefCell::new(Vec::new()) };
    /// True on the pool's threads.
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

struct Pool {
    ready: Sender<Arc<Queue>>,
    /// The process that started the threads.
    pid: u32,
}

/// The pool of this process. A child made by fork() has none of its parent's threads,
/// so it starts its own pool on its first async call (the parent's stays the parent's).
static POOL: Mutex<Option<Arc<Pool>>> = Mutex::new(None);

/// Registers the executor's process-wide locks with the fork handlers.
fn register_global_locks() {
    fork::register_static(fork::RANK_DRAIN_WAITS, &DRAIN_WAITS);
    fork::register_static(fork::RANK_POOL, &POOL);
}

impl ForkLocks for Queue {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        vec![&self.state]
    }
}

fn pool() -> Arc<Pool> {
    let pid = std::process::id();
    let mut current = POOL.lock();
    match &*current {
        Some(pool) if pool.pid == pid => pool.clone(),
        _ => {
            let pool = Arc::new(start_pool(pid));
            *current = Some(pool.clone());
            pool
        }
    }
}

fn start_pool(pid: u32) -> Pool {
    let (ready, incoming) = unbounded();
    for i in 0..worker_count() {
        let incoming: Receiver<Arc<Queue>> = incoming.clone();
        // A pool that cannot start any thread would leave jobs unrun forever; with
        // at least one thread the pool works, only slower.
        let started = std::thread::Builder::new()
            .name(format!("duckcache-worker-{i}"))
            .spawn(move || {
                IS_WORKER.with(|w| w.set(true));
                for queue in incoming {
                    queue.run_batch();
                }
            });
        if started.is_err() && i == 0 {
            panic!("cannot start the duckcache worker thread");
        }
    }
    Pool { ready, pid }
}

/// The pool size: `DUCKCACHE_WORKERS`, else the CPU count within 2..=16.
pub fn worker_count() -> usize {
    if let Some(n) = std::env::var("DUCKCACHE_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
    {
        return n;
    }
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 16)
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
        });
        register_global_locks();
        fork::register(fork::RANK_QUEUE, Arc::downgrade(&queue));
        queue
    }

    /// True on a thread running one of this queue's jobs, also further up its stack.
    pub fn is_current(&self) -> bool {
        RUNNING.with(|r| r.borrow().iter().any(|q| std::ptr::eq(*q, self)))
    }

    /// True when waiting for this queue would close a cycle: the thread running it waits
    /// for a queue whose runner waits ... for a queue this thread is running. Called
    /// with the wait table locked, so two threads cannot both miss the cycle they form.
    fn would_deadlock(&self, waits: &[(ThreadId, Arc<Queue>)]) -> bool {
        let mut runner = self.state.lock().executor;
        for _ in 0..=waits.len() {
            let Some(thread) = runner else { return false };
            if thread == std::thread::current().id() {
                return true;
            }
            let Some(next) = waited_for(waits, thread) else {
                return false;
            };
            if next.is_current() {
                return true;
            }
            runner = next.state.lock().executor;
        }
        false
    }

    /// Queues `job`; it runs after every job submitted before it.
    pub fn submit(self: &Arc<Self>, job: Job) -> Result<(), Closed> {
        let schedule = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(Closed);
            }
            state.claim_for_this_process();
            state.jobs.push_back(job);
            !std::mem::replace(&mut state.scheduled, true)
        };
        if schedule {
            // The receivers live as long as the process: sending cannot fail.
            let _ = pool().ready.send(self.clone());
        }
        Ok(())
    }

    /// Stops accepting jobs and waits until every queued job has run. Idempotent.
    pub fn close_and_drain(self: &Arc<Self>) -> Result<(), DrainError> {
        if self.is_current() {
            return Err(DrainError::InsideOwnJob);
        }
        let helping = IS_WORKER.with(|w| w.get());
        let mut state = self.state.lock();
        state.claim_for_this_process();
        state.closed = true;
        if !state.jobs.is_empty() && !state.scheduled && !state.executing {
            // Jobs nobody is scheduled to run: inherited through fork() from a parent
            // that had them queued. Run them here rather than wait forever.
            state.scheduled = true;
            let _ = pool().ready.send(self.clone());
        }
        while !state.is_idle() {
            if helping && !state.executing {
                // A worker waiting here would hold up the very jobs it waits for when
                // the pool is small: run them here instead, in order.
                let job = state.jobs.pop_front().expect("not idle and not executing");
                state.executing = true;
                state.executor = Some(std::thread::current().id());
                drop(state);
                self.run_jobs([job]);
                state = self.state.lock();
            } else {
                drop(state);
                self.register_wait()?;
                state = self.state.lock();
                if !state.is_idle() {
                    self.finished.wait(&mut state);
                }
                drop(state);
                self.unregister_wait();
                state = self.state.lock();
            }
        }
        Ok(())
    }

    /// Records that this thread waits for this queue, unless that closes a cycle.
    fn register_wait(self: &Arc<Self>) -> Result<(), DrainError> {
        let mut waits = DRAIN_WAITS.lock();
        if self.would_deadlock(&waits) {
            return Err(DrainError::InsideOwnJob);
        }
        waits.push((std::thread::current().id(), self.clone()));
        Ok(())
    }

    fn unregister_wait(&self) {
        let me = std::thread::current().id();
        DRAIN_WAITS.lock().retain(|(t, _)| *t != me);
    }

    /// Closes the queue and runs `f` once it is empty: now, when it already is, else
    /// after the last queued job (on the thread that ran it).
    pub fn close_then(&self, f: Job) {
        let mut state = self.state.lock();
        state.claim_for_this_process();
        state.closed = true;
        if state.is_idle() {
            drop(state);
            f();
        } else {
            state.on_drained = Some(f);
        }
    }

    /// Runs jobs (taken from the front of the queue, in order) with this queue as the
    /// thread's current one, then records that they finished (running a deferred
    /// `on_drained` when the queue is now closed and empty).
    fn run_jobs(&self, jobs: impl IntoIterator<Item = Job>) {
        RUNNING.with(|r| r.borrow_mut().push(self));
        for job in jobs {
            // A job is expected not to panic (the C layer catches panics inside it); if
            // one does, the worker and the queue must survive it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
        RUNNING.with(|r| r.borrow_mut().pop());
        // A closed queue takes no more jobs, so one empty now stays empty: run the
        // deferred work before anyone waiting for the queue is told it is idle.
        let drained = {
            let mut state = self.state.lock();
            if state.jobs.is_empty() && state.closed {
                state.on_drained.take()
            } else {
                None
            }
        };
        if let Some(f) = drained {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        }
        {
            let mut state = self.state.lock();
            state.executing = false;
            state.executor = None;
        }
        self.finished.notify_all();
    }

    /// A worker's turn on this queue: the jobs queued now, up to [`BATCH`], taken under
    /// one lock; then back of the line if more came.
    fn run_batch(self: Arc<Self>) {
        let batch: Vec<Job> = {
            let mut state = self.state.lock();
            // A drain running the jobs itself finishes them all.
            if state.executing || state.jobs.is_empty() {
                state.scheduled = false;
                return;
            }
            state.executing = true;
            state.executor = Some(std::thread::current().id());
            let n = state.jobs.len().min(BATCH);
            state.jobs.drain(..n).collect()
        };
        self.run_jobs(batch);
        let more = {
            let mut state = self.state.lock();
            state.scheduled = !state.jobs.is_empty() && !state.executing;
            state.scheduled
        };
        if more {
            let _ = pool().ready.send(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A queue as a fork() child inherits it: marked scheduled and executing by a
    /// worker of the parent (another pid), with `jobs` left over.
    fn inherited_mid_run(jobs: Vec<Job>) -> Arc<Queue> {
        let q = Queue::new();
        let mut state = q.state.lock();
        state.scheduled = true;
        state.executing = true;
        state.pid = std::process::id().wrapping_add(1);
        state.jobs.extend(jobs);
        drop(state);
        q
    }

    #[test]
    fn a_queue_inherited_through_fork_is_taken_over_by_this_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let q = inherited_mid_run(Vec::new());
        let sent = tx.clone();
        q.submit(Box::new(move || sent.send("submitted").unwrap()))
            .unwrap();
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            got,
            Ok("submitted"),
            "a new job runs on this process's pool"
        );

        let sent = tx.clone();
        let left: Job = Box::new(move || sent.send("inherited").unwrap());
        let q = inherited_mid_run(vec![left]);
        q.close_and_drain().unwrap();
        assert_eq!(
            rx.try_recv(),
            Ok("inherited"),
            "a drain runs jobs nobody else will"
        );
    }

    #[test]
    fn jobs_of_one_queue_run_in_order_and_queues_in_parallel() {
        let queues: Vec<_> = (0..4).map(|_| Queue::new()).collect();
        let seen: Vec<_> = (0..4).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
        for i in 0..1000 {
            for (q, s) in queues.iter().zip(&seen) {
                let s = s.clone();
                q.submit(Box::new(move || s.lock().push(i))).unwrap();
            }
        }
        for q in &queues {
            q.close_and_drain().unwrap();
            assert_eq!(q.submit(Box::new(|| {})), Err(Closed));
        }
        for s in &seen {
            assert_eq!(*s.lock(), (0..1000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn drain_from_own_job_is_refused_and_from_another_queue_helps() {
        let a = Queue::new();
        let b = Queue::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let ran = ran.clone();
            a.submit(Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        // A job draining its own queue: the result goes back through a channel, since a
        // panic inside a job is swallowed by the worker.
        let own = Queue::new();
        let (own2, own_tx) = (own.clone(), tx.clone());
        own.submit(Box::new(move || {
            own_tx.send(Err(own2.close_and_drain())).unwrap();
        }))
        .unwrap();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(),
            Err(Err(DrainError::InsideOwnJob))
        );
        // A job of b draining a: it runs a's jobs itself if needed, and all are done.
        let (a2, ran2) = (a.clone(), ran.clone());
        b.submit(Box::new(move || {
            let drained = a2.close_and_drain();
            tx.send(Ok((drained, ran2.load(Ordering::SeqCst)))).unwrap();
        }))
        .unwrap();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(),
            Ok((Ok(()), 100))
        );
        own.close_and_drain().unwrap();
    }

    #[test]
    fn close_then_runs_after_the_last_job() {
        let q = Queue::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (q2, o1) = (q.clone(), order.clone());
        // The first job waits until the second is queued behind it, then closes the
        // queue with deferred work: the queued job still runs, and the deferred work last.
        let (queued_tx, queued_rx) = crossbeam_channel::bounded::<()>(1);
        q.submit(Box::new(move || {
            queued_rx.recv().unwrap();
            let o2 = o1.clone();
            q2.close_then(Box::new(move || o2.lock().push("drained")));
            o1.lock().push("first");
        }))
        .unwrap();
        let o3 = order.clone();
        q.submit(Box::new(move || o3.lock().push("second")))
            .unwrap();
        queued_tx.send(()).unwrap();
        q.close_and_drain().unwrap();
        assert_eq!(*order.lock(), ["first", "second", "drained"]);
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_queue() {
        let q = Queue::new();
        q.submit(Box::new(|| panic!("boom"))).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        q.submit(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        q.close_and_drain().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
