//! `cache_open`'s URIs: `SCHEME:REST?name=value&...`, parsed into the backend they
//! name. Every wrong part gets an `InvalidArg` naming it.
//!
//! | scheme | REST | parameters |
//! |---|---|---|
//! | `memory` | empty | `max_keys`, `max_bytes`, `policy` |
//! | `file` | a directory | `size_limit`, `sync`, `busy_timeout_ms`, `read_cache` |
//! | `sharded` | a directory | `shard_size_limit`, `max_open_shards`, `sync`, `busy_timeout_ms`, `read_cache` |
//! | `folder` | a directory | `max_open` |
//!
//! A directory is `/abs/dir`, `///abs/dir` (after `file:`, as in `file:///var/c`) or
//! `rel/dir` (relative to the working directory); paths and values are percent-decoded.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::file::{FileCache, SqliteOptions};
use crate::folder::FolderCache;
use crate::memory::{MemoryCache, Policy};
use crate::sharded::ShardedCache;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

/// An opened cache, as its own type where it has one (the operator command checks and
/// compacts the persistent kinds).
pub enum Opened {
    File(FileCache),
    Sharded(ShardedCache),
    Folder(FolderCache),
    /// Memory, Redis.
    Other(Box<dyn Backend>),
}

impl Opened {
    /// The cache as a [`Backend`].
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Opened::File(c) => c,
            Opened::Sharded(c) => c,
            Opened::Folder(c) => c,
            Opened::Other(c) => c.as_ref(),
        }
    }

    pub fn into_backend(self) -> Box<dyn Backend> {
        match self {
            Opened::File(c) => Box::new(c),
            Opened::Sharded(c) => Box::new(c),
            Opened::Folder(c) => Box::new(c),
            Opened::Other(c) => c,
        }
    }
}

/// Opens the backend `uri` names.
pub fn open(uri: &str) -> Result<Box<dyn Backend>> {
    open_kind(uri).map(Opened::into_backend)
}

/// As [`open`], keeping the kind's own type.
pub fn open_kind(uri: &str) -> Result<Opened> {
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| {
        Error::invalid_arg(format!(
            "\"{uri}\" has no scheme (as in \"memory:\" or \"file:/var/cache/app\")"
        ))
    })?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    if scheme.starts_with("redis") {
        check_redis_address(location, query)?;
    }
    let mut params = Params::parse(query)?;
    let backend = match scheme {
        "memory" => {
            if !location.is_empty() {
                return Err(Error::invalid_arg(format!(
                    "memory: takes no location (got \"{location}\"); parameters follow '?'"
                )));
            }
            let max_keys = params.number("max_keys", 0)?;
            let max_bytes = params.size("max_bytes", 0)?;
            let policy = match params.take("policy").as_deref() {
                None | Some("lru") => Policy::Lru,
                Some("s3fifo") => Policy::S3Fifo,
                Some(other) => {
                    return Err(Error::invalid_arg(format!(
                        "policy \"{other}\" is not one of lru, s3fifo"
                    )))
                }
            };
            params.finish(scheme)?;
            Opened::Other(Box::new(MemoryCache::with_policy(max_keys, max_bytes, policy)))
        }
        "file" => {
            let dir = directory(scheme, location)?;
            let size_limit = params.size("size_limit", 0)?;
            let options = params.sqlite_options()?;
            params.finish(scheme)?;
            Opened::File(FileCache::open_with(dir, size_limit, options)?)
        }
        "sharded" => {
            let dir = directory(scheme, location)?;
            // 0 (or absent) means the default, as in cache_open_sharded, the shorthand of
            // this URI: ShardedCache decides both.
            let shard_size_limit = params.size("shard_size_limit", 0)?;
            let max_open = params.number("max_open_shards", 0)?;
            let options = params.sqlite_options()?;
            params.finish(scheme)?;
            let max_open = u32::try_from(max_open).map_err(|_| too_big("max_open_shards"))?;
            Opened::Sharded(ShardedCache::open_with(dir, shard_size_limit, max_open, options)?)
        }
        "folder" => {
            let dir = directory(scheme, location)?;
            let max_open = params.number("max_open", 128)?;
            params.finish(scheme)?;
            let max_open = u32::try_from(max_open).map_err(|_| too_big("max_open"))?;
            Opened::Folder(FolderCache::open(dir, max_open)?)
        }
        "redis" | "rediss" | "redis+unix" => Opened::Other(open_redis(scheme, location, params)?),
        other => {
            return Err(Error::invalid_arg(format!(
                "unknown scheme \"{other}\" (known: memory, file, sharded, folder, redis, rediss, redis+unix)"
            )))
        }
    };
    Ok(backend)
}

/// Refuses, naming no part of it (it may hold a password), a Redis address that would
/// be misread: a '?' inside the user name or password (the query then holds the '@' and
/// the host, and a message about a parameter would show the password's tail), or a '%'
/// not followed by two hex digits (redis-rs would take it as written).
fn check_redis_address(location: &str, query: &str) -> Result<()> {
    if query.contains('@') {
        return Err(Error::invalid_arg(
            "the URI has a '@' after its '?': a '?' in a user name or password must be \
             written %3F (the address is not shown: it may hold a password)",
        ));
    }
    let bytes = location.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(Error::invalid_arg(
                "a '%' in the URI's address is not followed by two hex digits (write a \
                 literal '%' as %25; the address is not shown: it may hold a password)",
            ));
        }
    }
    Ok(())
}

/// The parameters redis-rs itself reads, per scheme: a TCP URL's database is its path
/// (`redis://host/3`), so `db=` there would be silently ignored and is refused.
#[cfg(feature = "redis")]
const REDIS_RS_PARAMS: &[(&str, &[&str])] = &[
    ("redis", &["protocol"]),
    ("rediss", &["protocol"]),
    ("redis+unix", &["db", "pass", "user", "protocol"]),
];

/// A Redis/Valkey server: `prefix`, `pool_size`, `timeout_ms` and (for `rediss`)
/// `ca_file` are ours; the parameters redis-rs reads for the scheme
/// ([`REDIS_RS_PARAMS`]) go to it with the rest of the URL; any other is refused.
#[cfg(feature = "redis")]
fn open_redis(scheme: &str, location: &str, mut params: Params) -> Result<Box<dyn Backend>> {
    use crate::redis_cache::{RedisCache, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT};
    let ca_pem = match params.take("ca_file") {
        None => None,
        Some(_) if scheme != "rediss" => {
            return Err(Error::invalid_arg("ca_file is for rediss:// (TLS) only"))
        }
        Some(path) => Some(
            std::fs::read(&path)
                .map_err(|e| Error::invalid_arg(format!("ca_file {path} cannot be read: {e}")))?,
        ),
    };
    let prefix = params.take("prefix").unwrap_or_default();
    let pool_size = params.number("pool_size", DEFAULT_POOL_SIZE as u64)?;
    let timeout_ms = params.number("timeout_ms", DEFAULT_TIMEOUT.as_millis() as u64)?;
    let pool_size = usize::try_from(pool_size).map_err(|_| too_big("pool_size"))?;
    let mut url = format!("{scheme}:{location}");
    let mut rest: Vec<(String, String)> = params.0.drain().collect();
    rest.sort();
    let theirs = REDIS_RS_PARAMS
        .iter()
        .find(|(s, _)| *s == scheme)
        .map_or(&[][..], |(_, names)| *names);
    if let Some((name, _)) = rest
        .iter()
        .find(|(name, _)| !theirs.contains(&name.as_str()))
    {
        let mut known = vec!["prefix", "pool_size", "timeout_ms"];
        if scheme == "rediss" {
            known.push("ca_file");
        }
        known.extend_from_slice(theirs);
        return Err(Error::invalid_arg(format!(
            "unknown parameter \"{name}\" for {scheme}: (known: {}){}",
            known.join(", "),
            if name == "db" {
                "; a TCP URL names its database in its path: redis://host:port/3"
            } else {
                ""
            }
        )));
    }
    for (i, (name, value)) in rest.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&format!("{name}={}", percent_encode(value)));
    }
    Ok(Box::new(RedisCache::open(
        &url,
        prefix.as_bytes(),
        pool_size,
        Duration::from_millis(timeout_ms),
        ca_pem,
    )?))
}

#[cfg(not(feature = "redis"))]
fn open_redis(scheme: &str, _: &str, _: Params) -> Result<Box<dyn Backend>> {
    Err(Error::invalid_arg(format!(
        "the {scheme} scheme is not in this build of duckcache (built without the redis feature)"
    )))
}

/// Escapes what a query value must not hold as itself.
#[cfg(feature = "redis")]
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn too_big(name: &str) -> Error {
    Error::invalid_arg(format!("{name} is larger than 4294967295"))
}

/// The directory of a `file:`, `sharded:` or `folder:` URI.
fn directory(scheme: &str, location: &str) -> Result<PathBuf> {
    let path = match location.strip_prefix("//") {
        // `file:///var/c`: an empty authority, then an absolute path.
        Some(after) if after.starts_with('/') => after,
        Some(after) => {
            return Err(Error::invalid_arg(format!(
                "{scheme}://{after}: a host is not supported; write {scheme}:/abs/dir, {scheme}:///abs/dir or {scheme}:rel/dir"
            )))
        }
        None => location,
    };
    if path.is_empty() {
        return Err(Error::invalid_arg(format!(
            "{scheme}: needs a directory (as in {scheme}:/var/cache/app)"
        )));
    }
    let bytes = percent_decode(path, "the directory")?;
    if bytes.contains(&0) {
        return Err(Error::invalid_arg("the directory contains a NUL byte"));
    }
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// Decodes `%XX` escapes; `what` names the part for the error message.
fn percent_decode(text: &str, what: &str) -> Result<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::invalid_arg(format!(
                        "{what} has a '%' not followed by two hexadecimal digits: \"{text}\""
                    ))
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The parameters of a URI, each taken once by the backend that reads it.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: &str) -> Result<Params> {
        let mut params = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                Error::invalid_arg(format!(
                    "parameter \"{pair}\" has no value (write name=value)"
                ))
            })?;
            let name = String::from_utf8(percent_decode(name, "a parameter name")?)
                .map_err(|_| Error::invalid_arg("a parameter name is not UTF-8"))?;
            let value = String::from_utf8(percent_decode(value, &format!("parameter {name}"))?)
                .map_err(|_| Error::invalid_arg(format!("the value of {name} is not UTF-8")))?;
            if params.insert(name.clone(), value).is_some() {
                return Err(Error::invalid_arg(format!(
                    "parameter {name} is given twice"
                )));
            }
        }
        Ok(Params(params))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// A plain non-negative integer.
    fn number(&mut self, name: &str, default: u64) -> Result<u64> {
        let Some(text) = self.take(name) else {
            return Ok(default);
        };
        text.parse().map_err(|_| {
            Error::invalid_arg(format!("{name}=\"{text}\" is not a non-negative integer"))
        })
    }

    /// Bytes, optionally with a suffix KB, MB, GB (powers of 1000) or KiB, MiB, GiB.
    fn size(&mut self, name: &str, default: u64) -> Result<u64> {
        let Some(text) = self.take(name) else {
            return Ok(default);
        };
        parse_size(&text).map_err(|why| Error::invalid_arg(format!("{name}=\"{text}\": {why}")))
    }

    fn sqlite_options(&mut self) -> Result<SqliteOptions> {
        let mut options = SqliteOptions::default();
        match self.take("sync").as_deref() {
            None | Some("normal") => {}
            Some("full") => options.sync_full = true,
            Some(other) => {
                return Err(Error::invalid_arg(format!(
                    "sync=\"{other}\" is not one of normal, full"
                )))
            }
        }
        let default_ms = options.busy_timeout.as_millis() as u64;
        options.busy_timeout = Duration::from_millis(self.number("busy_timeout_ms", default_ms)?);
        options.read_cache = self.size("read_cache", 0)?;
        Ok(options)
    }

    /// Refuses whatever parameter no one took.
    fn finish(self, scheme: &str) -> Result<()> {
        let mut left: Vec<&String> = self.0.keys().collect();
        left.sort();
        match left.first() {
            None => Ok(()),
            Some(name) => Err(Error::invalid_arg(format!(
                "unknown parameter \"{name}\" for {scheme}:"
            ))),
        }
    }
}

/// `"64MiB"` → 67108864. The suffixes are case-sensitive, as written in the contract.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    const SUFFIXES: [(&str, u64); 6] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
    ];
    let (digits, unit) = SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((text, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "not a size (an integer of bytes, optionally with KB, MB, GB, KiB, MiB or GiB)".into(),
        );
    }
    let n: u64 = digits.parse().map_err(|_| "too large".to_string())?;
    n.checked_mul(unit).ok_or_else(|| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn refused(uri: &str) -> String {
        match open(uri) {
            Ok(_) => panic!("{uri} was accepted"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidArg, "{uri}: {e:?}");
                e.message().to_owned()
            }
        }
    }

    #[test]
    fn a_sharded_zero_means_the_default_as_in_the_v1_call() {
        let dir = std::env::temp_dir().join(format!("duckcache-uri-zero-{}", std::process::id()));
        let uri = format!(
            "sharded:{}?shard_size_limit=0&max_open_shards=0",
            dir.display()
        );
        match open_kind(&uri).expect("0 is the default") {
            Opened::Sharded(c) => {
                assert_eq!(c.shard_size_limit(), crate::sharded::DEFAULT_SHARD_SIZE)
            }
            _ => panic!("not sharded"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("3MiB"), Ok(3 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("KB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5MB").is_err());
        assert!(parse_size("1kb").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn every_wrong_part_is_named() {
        assert!(refused("nothing").contains("no scheme"));
        assert!(refused("disk:/tmp/x").contains("unknown scheme \"disk\""));
        assert!(refused("memory:?max_keys=ten").contains("max_keys"));
        assert!(refused("memory:?max_keys=-1").contains("max_keys"));
        assert!(refused("memory:?colour=red").contains("unknown parameter \"colour\""));
        assert!(refused("memory:?max_keys=1&max_keys=2").contains("twice"));
        assert!(refused("memory:?max_keys").contains("no value"));
        assert!(refused("memory:somewhere").contains("no location"));
        assert!(refused("memory:?policy=mru").contains("mru"));
        assert!(refused("memory:?max_bytes=lots").contains("max_bytes"));
        assert!(refused("file:").contains("needs a directory"));
        assert!(refused("file://host/x").contains("host"));
        assert!(refused("file:/tmp/x?size_limit=12XB").contains("size_limit"));
        assert!(refused("file:/tmp/x?sync=sometimes").contains("sync"));
        assert!(refused("file:/tmp/x?busy_timeout_ms=soon").contains("busy_timeout_ms"));
        assert!(refused("file:/tmp/a%zzb").contains("'%'"));
        assert!(refused("file:/tmp/a%00b").contains("NUL"));
        assert!(refused("folder:/tmp/x?max_open=99999999999").contains("max_open"));
        assert!(refused("folder:/tmp/x?size_limit=1").contains("unknown parameter \"size_limit\""));
        assert!(refused("redis://127.0.0.1:1?ca_file=/x").contains("rediss"));
        assert!(refused("rediss://127.0.0.1:1?ca_file=/no/such/ca.pem").contains("cannot be read"));
        assert!(refused("redis://127.0.0.1:1?pool_size=0").contains("pool_size"));
        assert!(refused("redis://127.0.0.1:1?timeout_ms=0").contains("timeout_ms"));
        assert!(refused("redis://127.0.0.1:1?pool_size=lots").contains("pool_size"));
        // Parameters nobody reads, or read only by another scheme, are refused by name.
        assert!(refused("redis://127.0.0.1:1/0?prefx=app:").contains("\"prefx\""));
        assert!(refused("redis://127.0.0.1:1?db=3").contains("path"));
        assert!(refused("redis://127.0.0.1:1?max_keys=3").contains("\"max_keys\""));
        assert!(refused("redis://127.0.0.1:1?tracking=on").contains("\"tracking\""));
        // A password's bytes never reach a message, however the URI is malformed.
        for uri in [
            "redis://user:se?cret@127.0.0.1:1/0",
            "redis://user:se%zzcret@127.0.0.1:1",
            "redis://user:secret%4@127.0.0.1:1",
        ] {
            let message = refused(uri);
            assert!(
                !message.contains("cret") && !message.contains("se%"),
                "{uri}: {message}"
            );
        }
    }

    #[test]
    fn paths_decode_and_kinds_open() {
        let tmp = std::env::temp_dir().join(format!("duckcache-uri-{}", std::process::id()));
        let encode = |dir: &std::path::Path| {
            dir.display()
                .to_string()
                .replace('?', "%3F")
                .replace(' ', "%20")
        };
        // One directory per kind: a folder store refuses a file store's directory.
        for scheme in ["file", "sharded", "folder"] {
            let dir = tmp.join(scheme).join("a?b c");
            let encoded = encode(&dir);
            let uri = format!("{scheme}://{}/{}", "", encoded.trim_start_matches('/'));
            let c = open(&uri).unwrap_or_else(|e| panic!("{uri}: {e:?}"));
            c.set(b"k", b"v", crate::Ttl::Never).unwrap();
            c.close().unwrap();
            assert!(dir.is_dir(), "{uri} made {}", dir.display());
        }
        let c = open(&format!(
            "file:{}?size_limit=1KiB&sync=full&busy_timeout_ms=50",
            encode(&tmp.join("file").join("a?b c"))
        ))
        .unwrap();
        let big = vec![0u8; 2000];
        assert_eq!(
            c.set(b"big", &big, crate::Ttl::Never).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
        let m = open("memory:?max_keys=2").unwrap();
        for k in [b"a", b"b", b"c"] {
            m.set(k, b"", crate::Ttl::Never).unwrap();
        }
        assert_eq!(m.len().unwrap(), 2);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
