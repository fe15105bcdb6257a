//! The connections of a handle: the pool (idle connections, a bound on how many are
//! open, a child of fork never using its parent's), every call run within its timeout
//! ([`Deadlined`]) with the thread's signals held back, and which failures leave a
//! connection fit to reuse.

use super::RedisCache;
use crate::error::{Error, ErrorKind, Result};
use crate::signals::SignalsHeld;
use crate::sync::fork;
use crate::sync::{Condvar, Mutex};
use redis::{Connection, ConnectionLike, RedisError, RedisResult, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connections of one handle.
pub(super) struct Pool {
    /// Registered with the fork handlers: a child never finds it held by a parent thread.
    state: Arc<Mutex<PoolState>>,
    freed: Condvar,
    size: usize,
}

struct PoolState {
    /// Idle connections and the process that made each: a child of fork() must never
    /// use (or close) its parent's connections, or the two would read each other's
    /// replies.
    idle: Vec<(Connection, u32)>,
    /// Connections out of the pool or idle in it.
    open: usize,
    closed: bool,
    /// The process whose connections `open` counts: in a child of fork(), those out of
    /// the pool belong to parent threads the child does not have, and never come back.
    pid: u32,
}

/// What the pool is asked for per call.
enum Lease {
    Idle(Connection),
    New,
}

impl Pool {
    pub(super) fn new(size: usize) -> Pool {
        Pool {
            state: fork::registered(
                fork::RANK_REDIS_POOL,
                Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                    closed: false,
                    pid: std::process::id(),
                }),
            ),
            freed: Condvar::new(),
            size,
        }
    }

    /// No call gets a connection any more (the caller drops the idle ones).
    pub(super) fn close(&self) {
        self.state.lock().closed = true;
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

impl RedisCache {
    /// A connection for one call: an idle one, a new one while fewer than `pool_size`
    /// are open, else the first one freed by `deadline`. True with a connection that was
    /// idle in the pool (it may have died meanwhile).
    pub(super) fn lease(&self, deadline: Instant) -> Result<(Connection, bool)> {
        let lease = {
            let mut state = self.pool.state.lock();
            loop {
                if state.closed {
                    return Err(Error::closed());
                }
                if state.pid != std::process::id() {
                    // A child of fork(): the parent's connections out of the pool are
                    // not coming back here; idle ones are dropped below unused.
                    state.open = state.idle.len();
                    state.pid = std::process::id();
                }
                if let Some((con, pid)) = state.idle.pop() {
                    if pid == std::process::id() {
                        break Lease::Idle(con);
                    }
                    // Inherited through fork(): the parent still uses the socket. Left
                    // open (forgotten, not dropped), never read or written here.
                    std::mem::forget(con);
                    state.open -= 1;
                    continue;
                }
                if state.open < self.pool.size {
                    state.open += 1;
                    break Lease::New;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "{}: all {} connections of this handle stayed busy for {} ms",
                            self.address,
                            self.pool.size,
                            self.timeout.as_millis()
                        ),
                    ));
                }
                self.pool.freed.wait_for(&mut state, left);
            }
        };
        match lease {
            Lease::Idle(con) => Ok((con, true)),
            Lease::New => self
                .connect()
                .map(|con| (con, false))
                .inspect_err(|_| self.give_back(None)),
        }
    }

    pub(super) fn connect(&self) -> Result<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.failure(e))?;
        con.set_read_timeout(Some(self.timeout))
            .map_err(|e| self.failure(e))?;
        con.set_write_timeout(Some(self.timeout))
            .map_err(|e| self.failure(e))?;
        Ok(con)
    }

    /// Drops every idle connection (a parent's, inherited through fork(), is forgotten).
    pub(super) fn drop_idle(&self) {
        let mut state = self.pool.state.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open -= idle.len();
        drop(state);
        for (con, pid) in idle {
            if pid != std::process::id() {
                std::mem::forget(con);
            }
        }
        self.pool.freed.notify_all();
    }

    /// Returns a connection to the pool (None: it was dropped).
    pub(super) fn give_back(&self, con: Option<Connection>) {
        let mut state = self.pool.state.lock();
        match con {
            Some(con) if !state.closed => state.idle.push((con, std::process::id())),
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.freed.notify_one();
    }

    /// Runs `f` on a pooled connection, all of it within the timeout (see [`Deadlined`];
    /// once more when it opened a connection), with the thread's signals held (see
    /// [`crate::signals`]). A connection whose call failed other than with the server's
    /// own error reply is dropped (it may hold half a reply). An idle connection found
    /// dead (the server restarted or closed it meanwhile: the command never reached a
    /// server that could carry it out) is replaced once, within the same call.
    pub(super) fn with<R>(&self, mut f: impl FnMut(&mut Deadlined) -> RedisResult<R>) -> Result<R> {
        let _signals = SignalsHeld::new();
        let started = Instant::now();
        let mut retried = false;
        loop {
            let (mut con, reused) = self.lease(started + self.timeout)?;
            // A new connection took up to a timeout of its own: the commands get another.
            let deadline = if reused {
                started + self.timeout
            } else {
                Instant::now() + self.timeout
            };
            let result = f(&mut Deadlined {
                con: &mut con,
                deadline,
            });
            match result {
                Ok(r) => {
                    self.give_back(Some(con));
                    return Ok(r);
                }
                Err(e) if is_server_error(&e) && !closes_the_connection(&e) => {
                    self.give_back(Some(con));
                    return Err(self.failure(e));
                }
                Err(e) => {
                    self.give_back(None);
                    if reused && !retried && is_dead_connection(&e) {
                        // The others idle beside it are most likely dead too (a server
                        // restart closes them all): the retry opens a new one.
                        self.drop_idle();
                        retried = true;
                        continue;
                    }
                    return Err(self.failure(e));
                }
            }
        }
    }
}

/// True for an error reply of the server (the connection is still in step).
pub(super) fn is_server_error(e: &RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::Server(_))
        && !e.is_connection_dropped()
        && !e.is_io_error()
}

/// True for an error reply after which the server closes the connection (a protocol
/// error: a request over its limits): such a connection must not go back to the pool,
/// where it failed the next, innocent call.
pub(super) fn closes_the_connection(e: &RedisError) -> bool {
    e.to_string()
        .to_ascii_lowercase()
        .contains("protocol error")
}

/// True when the connection was found closed by the server (end of file, reset, broken
/// pipe), as opposed to a timeout or a reply the client could not read.
pub(super) fn is_dead_connection(e: &RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

/// A connection whose every wait ends by one deadline: each write and read is given the
/// time left, and the first failure ends the call (the connection is then dropped), so a
/// frozen server costs a call its timeout once, not once per reply it is owed.
pub(crate) struct Deadlined<'a> {
    con: &'a mut Connection,
    deadline: Instant,
}

impl Deadlined<'_> {
    fn left(&self) -> RedisResult<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the call's timeout passed",
            )));
        }
        Ok(left)
    }

    fn send(&mut self, bytes: &[u8]) -> RedisResult<()> {
        self.con.set_write_timeout(Some(self.left()?))?;
        match self.con.send_packed_command(bytes) {
            Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                // The server may have refused the request and closed the connection
                // while it was still being sent (a bulk over its proto-max-bulk-len):
                // its last words are then waiting to be read, and say why.
                let said = self.receive();
                match said {
                    Ok(Value::ServerError(refusal)) => Err(refusal.into()),
                    _ => Err(e),
                }
            }
            sent => sent,
        }
    }

    fn receive(&mut self) -> RedisResult<Value> {
        self.con.set_read_timeout(Some(self.left()?))?;
        self.con.recv_response()
    }
}

impl ConnectionLike for Deadlined<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send(cmd)?;
        match self.receive()? {
            Value::ServerError(e) => Err(e.into()),
            v => Ok(v),
        }
    }

    /// As redis-rs's own, except that the first reply that does not come ends the call
    /// (redis-rs waits for every later one too, a timeout each).
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send(cmd)?;
        let mut replies = Vec::with_capacity(count);
        let mut refused = None;
        for at in 0..offset + count {
            match self.receive()? {
                // A command MULTI refused to queue: EXEC then aborts the transaction.
                Value::ServerError(e) if at < offset => {
                    refused.get_or_insert(e);
                }
                v if at >= offset => replies.push(v),
                _ => {}
            }
        }
        match refused {
            Some(e) => Err(e.into()),
            None => Ok(replies),
        }
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.con.is_open()
    }
}

/// Runs an atomic pipeline (MULTI ... EXEC). An EXEC the server aborted (a WATCH left on
/// the connection, whose key another client changed) stored nothing: an error, never
/// success, and the connection is dropped.
pub(super) fn exec_atomic(pipe: &redis::Pipeline, con: &mut Deadlined) -> RedisResult<()> {
    match pipe.query::<Option<()>>(con)? {
        Some(()) => Ok(()),
        None => Err(RedisError::from(std::io::Error::other(
            "the server aborted the transaction (EXEC returned nil): nothing was stored",
        ))),
    }
}
