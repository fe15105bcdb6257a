//! The Redis/Valkey backend: a [`Backend`] on a Redis-protocol server (Redis, Valkey,
//! KeyDB, Dragonfly), through the `redis` crate's synchronous client: no async runtime
//! inside the library.
//!
//! Layout on the server (the README documents it for other clients):
//! - every key is `prefix` + key; nothing outside the prefix is ever read, changed or
//!   removed (clear and delete_prefix walk with SCAN, never FLUSHDB or KEYS);
//! - an entry with flags 0 is a Redis string holding exactly the value's bytes, so any
//!   client reads what C wrote, and a counter is Redis's own decimal text (INCRBY);
//! - an entry with other flags is a Redis hash with fields `v` (the value) and `f` (the
//!   flags, decimal);
//! - TTLs are the server's own, in milliseconds (PX, PEXPIRE, PTTL).
//!
//! Atomicity is the server's: a Lua script or a MULTI/EXEC per call (pop, add, incr,
//! touch, set_many), WATCH for the generic read-decide-write. Connections come from a
//! small pool (`pool_size`), so threads of one handle do not wait on each other; a
//! connection that failed is dropped and the next call makes a new one, so a server that
//! comes back is used again without reopening. Every wait is bounded by `timeout_ms`.

mod connection;
mod scripts;

use crate::backend::{Backend, Change, Current, Decide, EntryRef, KeyPage, Remaining, Stats};
use crate::backend::{Visit, VisitMany, VisitManyTtl, KEY_PAGE};
use crate::error::{Error, ErrorKind, Result};
use crate::sync::Mutex;
use crate::ttl::Ttl;
use connection::{exec_atomic, is_server_error, Pool};
use redis::{RedisError, Value};
use scripts::Scripts;
use std::time::Duration;

/// Redis's own default proto-max-bulk-len, assumed when the server will not say.
const DEFAULT_MAX_BULK: u64 = 512 * 1024 * 1024;

/// Default connections per handle.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default bound on every wait (connect, command, a free connection).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TTL longer than this is stored without one (PX takes milliseconds as a 64-bit
/// count added to the server's clock).
const LONGEST_TTL_MS: u128 = 1 << 46;

/// The Redis/Valkey backend.
pub struct RedisCache {
    client: redis::Client,
    /// The server's address as shown in messages (no password).
    address: String,
    prefix: Vec<u8>,
    timeout: Duration,
    pool: Pool,
    stats: Mutex<Stats>,
    scripts: Scripts,
    /// The server's largest bulk string (proto-max-bulk-len): Redis's default (512 MB)
    /// when the server will not say (CONFIG renamed away, as on managed Redis); read
    /// again before a key or value over it is refused, so a limit raised at run time is
    /// seen.
    max_bulk: std::sync::atomic::AtomicU64,
}

impl RedisCache {
    /// Connects to the server `url` (`redis://[user:pass@]host[:port][/db]`,
    /// `rediss://…` over TLS, `redis+unix:///path/sock`, as redis-rs reads them); keys are
    /// stored under `prefix`. For TLS, `ca_pem` is the certificate authority to trust
    /// (PEM), or None for the system's roots. One connection is made at once, so a server
    /// that cannot be reached fails the open with `Unavailable`.
    pub fn open(
        url: &str,
        prefix: &[u8],
        pool_size: usize,
        timeout: Duration,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<RedisCache> {
        if pool_size == 0 || pool_size > 1024 {
            return Err(Error::invalid_arg(format!(
                "pool_size must be from 1 to 1024, not {pool_size}"
            )));
        }
        if timeout.is_zero() {
            return Err(Error::invalid_arg("timeout_ms must be more than 0"));
        }
        let address = redacted(url);
        let client = match ca_pem {
            None => redis::Client::open(url),
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
        }
        .map_err(|e| {
            Error::invalid_arg(format!(
                "{address} is not a Redis URL redis-rs accepts: {e}"
            ))
        })?;
        let cache = RedisCache {
            client,
            address,
            prefix: prefix.to_vec(),
            timeout,
            pool: Pool::new(pool_size),
            stats: Mutex::new(Stats::default()),
            scripts: Scripts::new(),
            max_bulk: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_BULK),
        };
        // Connect now (a wrong address or password fails the open), and ask the server
        // for its bulk limit.
        cache.read_max_bulk()?;
        Ok(cache)
    }

    /// Asks the server for proto-max-bulk-len (CONFIG may be disabled: the default then).
    fn read_max_bulk(&self) -> Result<u64> {
        let limit = self.with(|con| {
            let reply: RedisResultValue = redis::cmd("CONFIG")
                .arg("GET")
                .arg("proto-max-bulk-len")
                .query::<Value>(con)
                .map(Some)
                .or_else(|e| {
                    if is_server_error(&e) {
                        Ok(None)
                    } else {
                        Err(e)
                    }
                });
            reply
        })?;
        let max = limit
            .and_then(|v| match v {
                Value::Array(items) if items.len() == 2 => match &items[1] {
                    Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                    _ => None,
                },
                Value::Map(pairs) => pairs.first().and_then(|(_, v)| match v {
                    Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or(DEFAULT_MAX_BULK);
        self.max_bulk
            .store(max, std::sync::atomic::Ordering::Relaxed);
        Ok(max)
    }

    /// The full key (prefix + key); a key longer than the server takes is refused
    /// before anything is sent (sent, the server closes the connection).
    fn key(&self, key: &[u8]) -> Result<Vec<u8>> {
        self.check_bulk(self.prefix.len() + key.len(), "key")?;
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        Ok(k)
    }

    fn keys_of(&self, keys: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        keys.iter().map(|k| self.key(k)).collect()
    }

    /// The library's error for a failed call.
    fn failure(&self, e: RedisError) -> Error {
        let text = e.to_string();
        let kind = if text.contains("NOTNUMERIC")
            || text.contains("not an integer")
            || text.contains("would overflow")
        {
            ErrorKind::NotNumeric
        } else if text.contains("invalid bulk length")
            || text.contains("exceeds maximum")
            || text.contains("proto-max-bulk-len")
        {
            ErrorKind::TooLarge
        } else if text.contains("WRONGTYPE") {
            ErrorKind::Corrupt
        } else {
            ErrorKind::Unavailable
        };
        Error::new(kind, format!("{}: {text}", self.address))
    }

    fn count_lookup(&self, hit: bool) -> bool {
        let mut stats = self.stats.lock();
        if hit {
            stats.hits += 1;
        } else {
            stats.misses += 1;
        }
        hit
    }

    /// A page of SCAN over the full-key pattern of `prefix`; `after` is the cursor.
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        let cursor: u64 = match after {
            None => 0,
            Some(c) => std::str::from_utf8(c)
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| Error::invalid_arg("not a position of this cache's walk"))?,
        };
        let mut pattern = glob_escape(&self.key(prefix)?);
        pattern.push(b'*');
        let (next, keys): (u64, Vec<Vec<u8>>) = self.with(|con| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(KEY_PAGE)
                .query(con)
        })?;
        let keys = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(self.prefix.as_slice()).map(<[u8]>::to_vec))
            .collect();
        Ok(KeyPage {
            keys,
            next: (next != 0).then(|| next.to_string().into_bytes()),
        })
    }

    fn check_value(&self, len: usize) -> Result<()> {
        self.check_bulk(len, "value")
    }

    /// TooLarge for a key or value (`what`) over the server's bulk limit, asked again
    /// first (it may have been raised since).
    fn check_bulk(&self, len: usize, what: &str) -> Result<()> {
        let len = len as u64;
        if len <= self.max_bulk.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let max = self.read_max_bulk()?;
        if len <= max {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "{}: the {what} is {len} bytes and the server takes at most {max} (proto-max-bulk-len)",
                self.address
            ),
        ))
    }
}

type RedisResultValue = redis::RedisResult<Option<Value>>;

/// `redis://user:secret@host` → `redis://user:***@host`, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

/// Escapes the glob characters of SCAN's MATCH (`* ? [ ] \`).
fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// A TTL in milliseconds for PX/PEXPIRE: None for never (and for TTLs too long to
/// count), at least 1 ms otherwise.
fn ttl_ms(ttl: Ttl) -> Option<u64> {
    match ttl {
        Ttl::Never => None,
        Ttl::After(d) => {
            // Rounded up, in 64-bit steps: a 128-bit division (as_nanos) compiled into a
            // call the optimiser ran ahead of the match, on a Never's unset payload
            // (harmless, but valgrind rightly reports the branch on it).
            let ms = d
                .as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)))
                .max(1);
            (u128::from(ms) < LONGEST_TTL_MS).then_some(ms)
        }
    }
}

fn ms_arg(ms: Option<u64>) -> String {
    ms.map_or(String::new(), |ms| ms.to_string())
}

/// A value and its flags from a script's `{value, flags, ...}` reply; None for `false`.
fn entry_of(v: &Value) -> Option<(&[u8], u32, Option<i64>)> {
    let Value::Array(items) = v else { return None };
    let value = match items.first()? {
        Value::BulkString(b) => b.as_slice(),
        Value::Nil => &[],
        _ => return None,
    };
    let flags = match items.get(1) {
        Some(Value::Int(f)) => u32::try_from(*f).unwrap_or(0),
        _ => 0,
    };
    let pttl = match items.get(2) {
        Some(Value::Int(ms)) => Some(*ms),
        _ => None,
    };
    Some((value, flags, pttl))
}

/// Adds the commands that store one entry to a MULTI/EXEC pipeline.
fn queue_store(pipe: &mut redis::Pipeline, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) {
    if ttl.is_expired_at_once() {
        pipe.cmd("DEL").arg(key).ignore();
        return;
    }
    let ms = ttl_ms(ttl);
    if flags == 0 {
        let set = pipe.cmd("SET").arg(key).arg(value);
        if let Some(ms) = ms {
            set.arg("PX").arg(ms);
        }
        set.ignore();
    } else {
        pipe.cmd("DEL").arg(key).ignore();
        pipe.cmd("HSET")
            .arg(key)
            .arg("v")
            .arg(value)
            .arg("f")
            .arg(flags)
            .ignore();
        if let Some(ms) = ms {
            pipe.cmd("PEXPIRE").arg(key).arg(ms).ignore();
        }
    }
}

impl Backend for RedisCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        self.check_value(value.len())?;
        let k = self.key(key)?;
        if flags == 0 || ttl.is_expired_at_once() {
            self.with(|con| {
                let mut cmd = if ttl.is_expired_at_once() {
                    redis::cmd("DEL")
                } else {
                    redis::cmd("SET")
                };
                cmd.arg(&k);
                if !ttl.is_expired_at_once() {
                    cmd.arg(value);
                    if let Some(ms) = ttl_ms(ttl) {
                        cmd.arg("PX").arg(ms);
                    }
                }
                cmd.exec(con)
            })?;
        } else {
            self.with(|con| {
                let mut pipe = redis::pipe();
                pipe.atomic();
                queue_store(&mut pipe, &k, value, ttl, flags);
                exec_atomic(&pipe, con)
            })?;
        }
        self.stats.lock().sets += 1;
        Ok(())
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        Ok(self.get_flagged_ttl(key, visit)?.is_some())
    }

    /// One round trip, without a script (as fast as a plain GET): GET, HMGET and PTTL
    /// pipelined; GET answers for a plain string, HMGET for a hash (GET's reply is then
    /// WRONGTYPE). A string replaced by a hash between the two is read as absent: the
    /// race of a get with a concurrent set, either outcome of which is allowed.
    fn get_flagged_ttl(&self, key: &[u8], visit: &mut Visit) -> Result<Option<Remaining>> {
        let k = self.key(key)?;
        let replies: Vec<Value> = self.with(|con| {
            redis::pipe()
                .ignore_errors()
                .cmd("GET")
                .arg(&k)
                .cmd("HMGET")
                .arg(&k)
                .arg("v")
                .arg("f")
                .cmd("PTTL")
                .arg(&k)
                .query(con)
        })?;
        let (found, pttl) = match replies.as_slice() {
            [Value::BulkString(v), _, Value::Int(pttl)] => (Some((v.as_slice(), 0)), *pttl),
            [Value::ServerError(_), Value::Array(hash), Value::Int(pttl)] => {
                match hash.as_slice() {
                    [Value::BulkString(v), f] => {
                        let flags = match f {
                            Value::BulkString(f) => {
                                std::str::from_utf8(f).ok().and_then(|f| f.parse().ok())
                            }
                            _ => None,
                        };
                        (Some((v.as_slice(), flags.unwrap_or(0))), *pttl)
                    }
                    _ => (None, -2),
                }
            }
            [Value::Nil, _, _] => (None, -2),
            [Value::ServerError(e), Value::ServerError(h), _]
                if e.code() == "WRONGTYPE" && h.code() == "WRONGTYPE" =>
            {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                    "{}: the key holds a Redis value that is neither a string nor a hash ({e:?})",
                    self.address
                ),
                ))
            }
            // The server refused the request (BUSY, NOPERM, LOADING, OOM...): its words.
            [Value::ServerError(e), ..]
            | [_, Value::ServerError(e), _]
            | [_, _, Value::ServerError(e)]
                if e.code() != "WRONGTYPE" =>
            {
                return Err(self.failure(e.clone().into()))
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!("{}: an unexpected reply to a get: {other:?}", self.address),
                ))
            }
        };
        let found = found.map(|(value, flags)| {
            visit(value, flags);
            if pttl >= 0 {
                Remaining::Seconds(pttl.max(1) as f64 / 1000.0)
            } else {
                Remaining::Forever
            }
        });
        self.count_lookup(found.is_some());
        Ok(found)
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        let k = self.key(key)?;
        let reply: Value = self.with(|con| self.scripts.pop.key(&k).invoke(con))?;
        let found = entry_of(&reply)
            .map(|(value, flags, _)| visit(value, flags))
            .is_some();
        self.count_lookup(found);
        if found {
            self.stats.lock().deletes += 1;
        }
        Ok(found)
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        let k = self.key(key)?;
        let n: i64 = self.with(|con| redis::cmd("EXISTS").arg(&k).query(con))?;
        Ok(self.count_lookup(n > 0))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.delete_counted(key).map(drop)
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        let k = self.key(key)?;
        let n: i64 = self.with(|con| redis::cmd("DEL").arg(&k).query(con))?;
        self.stats.lock().deletes += n as u64;
        Ok(n > 0)
    }

    fn clear(&self) -> Result<()> {
        self.delete_prefix(b"").map(drop)
    }

    /// Counted with SCAN, which leaves out keys that have expired (DBSIZE counts those
    /// the server has not yet reclaimed), even with an empty prefix.
    fn len(&self) -> Result<u64> {
        let mut count = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(b"", after.as_deref())?;
            count += page.keys.len() as u64;
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(count),
            }
        }
    }

    /// The handle's own counters; `entries` as `len`, `bytes` 0 (not known).
    fn stats(&self) -> Result<Stats> {
        let entries = self.len()?;
        Ok(Stats {
            entries,
            bytes: 0,
            ..*self.stats.lock()
        })
    }

    fn save(&self) -> Result<()> {
        if self.pool.is_closed() {
            return Err(Error::closed());
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.pool.close();
        self.drop_idle();
        Ok(())
    }

    /// WATCH the key, read it, decide, and write in MULTI/EXEC; a write by another
    /// client in between makes EXEC fail and the whole step run again.
    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        let k = self.key(key)?;
        // What the last run of `decide` said: stored or not, or its error.
        let mut decided: Result<bool> = Ok(false);
        self.with(|con| {
            let done = redis::transaction(con, &[&k], |con, pipe| {
                let reply: Value = self.scripts.get.key(&k).invoke(con)?;
                let current = entry_of(&reply);
                let change = decide(current.map(|(value, flags, _)| Current { value, flags }));
                let (value, flags, ttl) = match change {
                    Err(e) => {
                        decided = Err(e);
                        return Ok(Some(()));
                    }
                    Ok(Change::Keep) => {
                        decided = Ok(false);
                        return Ok(Some(()));
                    }
                    Ok(Change::Put { value, flags, ttl }) => (value, flags, ttl),
                };
                let kept_pttl = current.and_then(|(_, _, pttl)| pttl);
                let effective = match ttl {
                    Some(ttl) => ttl,
                    None => match kept_pttl {
                        Some(ms) if ms > 0 => Ttl::After(Duration::from_millis(ms as u64)),
                        _ => Ttl::Never,
                    },
                };
                queue_store(pipe, &k, &value, effective, flags);
                decided = Ok(true);
                pipe.query::<Option<()>>(con)
            });
            if done.is_err() {
                // An error inside WATCH (a refused script, say) left the key watched: a
                // later MULTI on this connection would be aborted by another client's
                // write. UNWATCH, or the connection is dropped (UNWATCH's failure is not
                // the server's refusal).
                redis::cmd("UNWATCH")
                    .exec(con)
                    .map_err(|e| RedisError::from(std::io::Error::other(e.to_string())))?;
            }
            done
        })?;
        if decided? {
            self.stats.lock().sets += 1;
        }
        Ok(())
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        let k = self.key(key)?;
        let ms: i64 = self.with(|con| redis::cmd("PTTL").arg(&k).query(con))?;
        Ok(match ms {
            -2 => None,
            ms if ms < 0 => Some(Remaining::Forever),
            ms => Some(Remaining::Seconds(ms.max(1) as f64 / 1000.0)),
        })
    }

    /// SCAN: a page is what one SCAN call returns. SCAN may report a key twice when the
    /// server resizes its table during the walk (it never leaves one out).
    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        self.scan(prefix, after)
    }

    /// The server expires entries itself.
    fn purge_expired(&self) -> Result<u64> {
        self.save().map(|()| 0)
    }

    fn add_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<bool> {
        self.check_value(value.len())?;
        let k = self.key(key)?;
        if ttl.is_expired_at_once() {
            let n: i64 = self.with(|con| redis::cmd("EXISTS").arg(&k).query(con))?;
            return Ok(n == 0);
        }
        let stored = if flags == 0 {
            let reply: Value = self.with(|con| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(&k).arg(value).arg("NX");
                if let Some(ms) = ttl_ms(ttl) {
                    cmd.arg("PX").arg(ms);
                }
                cmd.query(con)
            })?;
            !matches!(reply, Value::Nil)
        } else {
            let n: i64 = self.with(|con| {
                self.scripts
                    .add_flagged
                    .key(&k)
                    .arg(value)
                    .arg(flags)
                    .arg(ms_arg(ttl_ms(ttl)))
                    .invoke(con)
            })?;
            n == 1
        };
        if stored {
            self.stats.lock().sets += 1;
        }
        Ok(stored)
    }

    fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool> {
        let k = self.key(key)?;
        if ttl.is_expired_at_once() {
            return self.delete_counted(key);
        }
        let n: i64 = self.with(|con| {
            self.scripts
                .touch
                .key(&k)
                .arg(ms_arg(ttl_ms(ttl)))
                .invoke(con)
        })?;
        Ok(n == 1)
    }

    fn incr(&self, key: &[u8], delta: i64, ttl: Ttl) -> Result<i64> {
        let k = self.key(key)?;
        let new_ttl = if ttl.is_expired_at_once() {
            Some(1)
        } else {
            ttl_ms(ttl)
        };
        let sum: i64 = self.with(|con| {
            self.scripts
                .incr
                .key(&k)
                .arg(delta)
                .arg(ms_arg(new_ttl))
                .invoke(con)
        })?;
        self.stats.lock().sets += 1;
        Ok(sum)
    }

    /// One round trip: a script reads every key.
    fn get_many(&self, keys: &[&[u8]], visit: &mut VisitMany) -> Result<()> {
        self.get_many_ttl(keys, &mut |i, value, flags, _| visit(i, value, flags))
    }

    /// One round trip: the same script gives each key's PTTL.
    fn get_many_ttl(&self, keys: &[&[u8]], visit: &mut VisitManyTtl) -> Result<()> {
        if keys.is_empty() {
            return self.save();
        }
        let full = self.keys_of(keys)?;
        let reply: Value = self.with(|con| {
            let mut invocation = self.scripts.get_many.prepare_invoke();
            for k in &full {
                invocation.key(k);
            }
            invocation.invoke(con)
        })?;
        let Value::Array(items) = reply else {
            return Err(Error::new(
                ErrorKind::Internal,
                "get_many: the script's reply is not an array",
            ));
        };
        let mut hits = 0;
        for (i, item) in items.iter().enumerate().take(keys.len()) {
            if let Some((value, flags, pttl)) = entry_of(item) {
                let left = match pttl {
                    Some(ms) if ms >= 0 => Remaining::Seconds(ms.max(1) as f64 / 1000.0),
                    _ => Remaining::Forever,
                };
                visit(i, value, flags, left);
                hits += 1;
            }
        }
        let mut stats = self.stats.lock();
        stats.hits += hits;
        stats.misses += keys.len() as u64 - hits;
        Ok(())
    }

    /// One round trip, atomic: MULTI, every entry's commands, EXEC.
    fn set_many(&self, entries: &[EntryRef]) -> Result<()> {
        for e in entries {
            self.check_value(e.value.len())?;
        }
        if entries.is_empty() {
            return self.save();
        }
        let full: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| self.key(e.key))
            .collect::<Result<_>>()?;
        self.with(|con| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (e, k) in entries.iter().zip(&full) {
                queue_store(&mut pipe, k, e.value, e.ttl, e.flags);
            }
            exec_atomic(&pipe, con)
        })?;
        self.stats.lock().sets += entries.len() as u64;
        Ok(())
    }

    fn check_entry(&self, _key: &[u8], value: &[u8]) -> Result<()> {
        self.check_value(value.len())
    }

    /// One DEL of every key.
    fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        if keys.is_empty() {
            return self.save().map(|()| 0);
        }
        let full = self.keys_of(keys)?;
        let n: u64 = self.with(|con| redis::cmd("DEL").arg(&full).query(con))?;
        self.stats.lock().deletes += n;
        Ok(n)
    }

    /// SCAN pages, each removed with one DEL (which counts only keys still there).
    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let mut deleted = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let KeyPage { keys, next } = self.scan(prefix, after.as_deref())?;
            if !keys.is_empty() {
                // Keys the server just listed: prefixed again as they were.
                let full: Vec<Vec<u8>> = keys
                    .iter()
                    .map(|k| [self.prefix.as_slice(), k].concat())
                    .collect();
                let n: u64 = self.with(|con| redis::cmd("DEL").arg(&full).query(con))?;
                deleted += n;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        self.stats.lock().deletes += deleted;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(
            glob_escape(b"a*b?c[d]e\\f"),
            b"a\\*b\\?c\\[d\\]e\\\\f".to_vec()
        );
        assert_eq!(glob_escape(b"plain:"), b"plain:".to_vec());
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("redis://ada:pw@localhost"),
            "redis://ada:***@localhost"
        );
        assert_eq!(
            redacted("redis+unix:///tmp/r.sock?pass=x"),
            "redis+unix:///tmp/r.sock"
        );
    }

    #[test]
    fn ttls_in_milliseconds() {
        assert_eq!(ttl_ms(Ttl::Never), None);
        assert_eq!(ttl_ms(Ttl::After(Duration::from_micros(1))), Some(1));
        assert_eq!(ttl_ms(Ttl::After(Duration::from_millis(1500))), Some(1500));
        assert_eq!(ttl_ms(Ttl::After(Duration::from_secs(u64::MAX / 2))), None);
    }

    #[test]
    fn a_server_that_is_down_is_unavailable_within_the_timeout() {
        // A loopback port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Instant::now();
        let e = RedisCache::open(
            &format!("redis://127.0.0.1:{port}"),
            b"",
            2,
            Duration::from_millis(300),
            None,
        )
        .err()
        .expect("nothing listens there");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
        assert!(
            e.message().contains(&format!("127.0.0.1:{port}")),
            "{}",
            e.message()
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
