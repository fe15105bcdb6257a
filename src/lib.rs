//! duckcache: an embeddable cache library with a C ABI.
//!
//! The crate is a plain Rust library first: every backend is a public type implementing
//! [`Backend`], with `Result`-returning methods. The C interface in [`ffi`] is a thin
//! translation of that trait, and it is the top floor: it imports the stores, no store
//! imports it. `unsafe` is denied everywhere except where a module allows it, each
//! block with a SAFETY comment (clippy's `undocumented_unsafe_blocks`, in Cargo.toml):
//! `ffi` (the C boundary), `sync` (futex locks, the fork registry), `clock` (clock
//! reads), `signals` (the signal mask of a Redis call), `memory`'s entry allocation,
//! `read_cache::wal_index` (SQLite's WAL-index header), and `sqlite::files` and
//! `sqlite::process` (SQLite's own file objects and global mutexes).
//!
//! Backends:
//! - [`MemoryCache`]: in-process, exact LRU bounded by key count and bytes, per-entry TTL.
//! - [`FileCache`]: one SQLite store in a directory, shared by processes, bounded by bytes.
//! - [`ShardedCache`]: file-cache shards in a directory, started one by one as each fills.
//! - [`FolderCache`]: one folder of plain files per key, safe whatever the key's bytes.
//! - `redis_cache::RedisCache` (the default `redis` feature): a Redis/Valkey server.
//!
//! Wrapping backends, built over others: [`EncryptedCache`] seals every value;
//! [`TieredCache`] puts a near cache in front of a far one. [`uri::open`] opens any of
//! them from a `cache_open` URI.

#![deny(unsafe_code)]

pub mod backend;
#[allow(unsafe_code)]
pub mod clock;
mod disk;
pub mod encrypted;
pub mod error;
pub mod file;
pub mod folder;
mod group_commit;
pub mod memory;
mod read_cache;
#[cfg(feature = "redis")]
pub mod redis_cache;
pub mod sharded;
#[cfg(feature = "redis")]
mod signals;
pub mod single_flight;
pub mod sink;
mod sqlite;
#[allow(unsafe_code)]
mod sync;
pub mod tiered;
pub mod ttl;
pub mod uri;
pub mod worker;

#[allow(unsafe_code)]
pub mod ffi;

pub use backend::{Backend, Stats};
pub use encrypted::EncryptedCache;
pub use error::{Error, ErrorKind, Result};
pub use file::{FileCache, INLINE_MAX};
pub use folder::FolderCache;
pub use memory::{MemoryCache, Policy};
pub use sharded::ShardedCache;
pub use tiered::TieredCache;
pub use ttl::Ttl;
