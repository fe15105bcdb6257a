//! The shard stores a sharded handle has open: at most `max_open`, the least recently
//! used saved and closed to make room, each reopened on demand; and where shards live
//! on disk.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::file::readers::ConnectionBudget;
use crate::file::FileCache;
use crate::sqlite::SqliteOptions;
use crate::sync::RwLock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shard stores currently open, at most `max_open`, least recently used closed first.
pub(super) struct OpenShards {
    pub(super) dir: PathBuf,
    pub(super) options: SqliteOptions,
    pub(super) max_open: usize,
    pub(super) open: HashMap<i64, OpenShard>,
    pub(super) uses: u64,
    /// Shards the current write transaction drops from the index: their folders go
    /// after it commits.
    pub(super) unlisted: Vec<i64>,
    /// The read connections the shards may hold open together.
    pub(super) readers: ConnectionBudget,
    /// The open shards as reads without the handle's lock find them: kept equal to
    /// `open` (a shard closed here is closed there; a read holding it then fails and
    /// goes the locked way).
    pub(super) visible: Arc<RwLock<HashMap<i64, Arc<FileCache>>>>,
}

pub(super) struct OpenShard {
    /// Shared with reads that run without the handle's lock (see [`OpenShards::visible`]).
    pub(super) cache: Arc<FileCache>,
    pub(super) last_use: u64,
    /// Written since the last save: saved before it is closed to make room.
    pub(super) dirty: bool,
}

pub(super) fn shard_dir(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("shard-{id:06}"))
}

/// The ids of the shard folders in `dir`.
pub(super) fn shards_on_disk(dir: &Path) -> Result<Vec<i64>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(e, "cannot list", dir))?;
    let mut ids: Vec<i64> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let id = e
                .file_name()
                .to_str()?
                .strip_prefix("shard-")?
                .parse()
                .ok()?;
            (id > 0 && e.file_type().ok()?.is_dir()).then_some(id)
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

impl OpenShards {
    /// The shard `id`, opened (and created) when needed. `for_write` marks it for the
    /// next save.
    pub(super) fn get(&mut self, id: i64, for_write: bool) -> Result<&FileCache> {
        self.uses += 1;
        if !self.open.contains_key(&id) {
            if self.open.len() >= self.max_open {
                self.close_least_recent()?;
            }
            let cache = Arc::new(FileCache::open_with_readers(
                shard_dir(&self.dir, id),
                0,
                self.options,
                self.readers.clone(),
            )?);
            self.visible.write().insert(id, cache.clone());
            self.open.insert(
                id,
                OpenShard {
                    cache,
                    last_use: 0,
                    dirty: false,
                },
            );
        }
        let shard = self.open.get_mut(&id).expect("inserted above");
        shard.last_use = self.uses;
        shard.dirty |= for_write;
        Ok(&*shard.cache)
    }

    /// The shard `id` for a read: None when its folder is gone (never created anew).
    pub(super) fn get_existing(&mut self, id: i64) -> Result<Option<&FileCache>> {
        if !self.open.contains_key(&id) && !shard_dir(&self.dir, id).is_dir() {
            return Ok(None);
        }
        self.get(id, false).map(Some)
    }

    /// Closes the shard `id` if it is open, without saving it, and removes its folder
    /// (best effort: a folder left behind is swept at the next open).
    pub(super) fn remove_folder(&mut self, id: i64) {
        if let Some(shard) = self.forget(id) {
            let _ = shard.cache.close();
        }
        let _ = std::fs::remove_dir_all(shard_dir(&self.dir, id));
    }

    /// Takes the shard `id` out of the open ones (not closed yet).
    pub(super) fn forget(&mut self, id: i64) -> Option<OpenShard> {
        self.visible.write().remove(&id);
        self.open.remove(&id)
    }

    pub(super) fn close_least_recent(&mut self) -> Result<()> {
        let Some(id) = self
            .open
            .iter()
            .min_by_key(|(_, s)| s.last_use)
            .map(|(id, _)| *id)
        else {
            return Ok(());
        };
        let shard = self.forget(id).expect("found above");
        let saved = if shard.dirty {
            shard.cache.save()
        } else {
            Ok(())
        };
        let closed = shard.cache.close();
        saved.and(closed)
    }

    pub(super) fn save_all(&mut self) -> Result<()> {
        for shard in self.open.values_mut().filter(|s| s.dirty) {
            shard.cache.save()?;
            shard.dirty = false;
        }
        Ok(())
    }

    /// Closes every shard; the first error is returned after all were tried.
    pub(super) fn close_all(&mut self) -> Result<()> {
        let mut result = Ok(());
        self.visible.write().clear();
        for (_, shard) in self.open.drain() {
            result = result.and(shard.cache.close());
        }
        result
    }
}
