//! Keeping a sharded store in proportion to its live data, and whole: superseded copies
//! removed, empty shards dropped, sparse shards compacted into new ones, expired
//! entries purged, the index rebuilt from the shards when it is lost, and `check`.

use super::index;
use super::shards::{shard_dir, shards_on_disk, OpenShards};
use super::state::State;
use crate::backend::Backend;
use crate::clock::wall_now;
use crate::error::Result;
use crate::file::readers::ConnectionBudget;
use crate::file::FileCache;
use crate::sqlite::SqliteOptions;
use rusqlite::Transaction;
use std::path::Path;

/// Fills a new index from the shards already on disk, newest first, so the newest copy
/// of each key wins and older ones are recorded as stale.
pub(super) fn rebuild_index(tx: &Transaction, dir: &Path, options: SqliteOptions) -> Result<()> {
    for id in shards_on_disk(dir)?.into_iter().rev() {
        index::add_shard_with_id(tx, id)?;
        let shard =
            FileCache::open_with_readers(shard_dir(dir, id), 0, options, ConnectionBudget::new(0))?;
        let adopted = shard
            .for_each_entry(&mut |key, size, expires| index::adopt(tx, key, id, size, expires));
        shard.close()?;
        adopted?;
    }
    Ok(())
}

/// Keeps the shards in proportion to the live data when keys are rewritten (each write
/// goes to the newest shard and leaves a dead copy behind). Called when the new shard
/// `into` starts: if the shards are on average less than half full, the live entries
/// of the sparsest older one (at most half a shard) move into `into`, so that shard
/// empties and goes. Each new shard moves at most half a shard's bytes, and the shard
/// count stays within about twice the live bytes over the shard limit, plus two.
/// `skip` is the key being stored, which its own write moves.
pub(super) fn compact_into(
    tx: &Transaction,
    shards: &mut OpenShards,
    into: i64,
    limit: u64,
    skip: &[u8],
) -> Result<()> {
    let (count, sparsest) = index::sparsest_old_shard(tx, into)?;
    let Some((from, bytes)) = sparsest else {
        return Ok(());
    };
    let (_, live) = index::totals(tx)?;
    if count < 3 || live.saturating_mul(2) >= (count - 1).saturating_mul(limit) || bytes > limit / 2
    {
        return Ok(());
    }
    for (key, placement) in index::keys_in(tx, from)? {
        if key == skip {
            continue;
        }
        let mut found = None;
        shards
            .get(from, false)?
            .get_flagged(&key, &mut |v, flags| found = Some((v.to_vec(), flags)))?;
        match found {
            Some((value, flags)) => {
                shards
                    .get(into, true)?
                    .set_until(&key, &value, placement.expires, flags)?;
                index::place(
                    tx,
                    &key,
                    into,
                    placement.size,
                    placement.expires,
                    Some(placement),
                )?;
            }
            // A row whose shard lacks the key (left by a crash): it reads as a miss.
            None => {
                index::remove(tx, &key)?;
            }
        }
    }
    Ok(())
}

/// Removes the shards older than the newest where no key is placed: their folders, and
/// their stale copies, which nothing can reach.
/// Only their rows go here: the folders are removed once this transaction has
/// committed (a folder removed before a commit that then fails would take with it the
/// keys the index still places there).
pub(super) fn remove_empty_shards(tx: &Transaction, shards: &mut OpenShards) -> Result<()> {
    for id in index::empty_old_shards(tx)? {
        index::drop_shard(tx, id)?;
        shards.unlisted.push(id);
    }
    Ok(())
}

/// Removes every expired entry from the index and its shard; returns how many.
pub(super) fn purge_expired(tx: &Transaction, shards: &mut OpenShards) -> Result<u64> {
    let expired = index::remove_expired(tx, wall_now())?;
    for (shard, key) in &expired {
        shards.get(*shard, true)?.delete(key)?;
    }
    Ok(expired.len() as u64)
}

/// Checks the index (SQLite's integrity check), every shard (as the file cache's
/// check), and that each key the index places is in its shard. With `repair`, shards
/// are repaired and index rows whose shard lacks the key dropped.
pub(super) fn check(state: &mut State, repair: bool) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let verdict: String = state
        .index()?
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        found.push(format!(
            "index.db: SQLite integrity check: {verdict} (not repairable here)"
        ));
    }
    for id in index::shard_ids(state.index()?)? {
        let Some(shard) = state.shards.get_existing(id)? else {
            found.push(format!("shard-{id:06}: listed in the index but missing"));
            continue;
        };
        for line in shard.check(repair)? {
            found.push(format!("shard-{id:06}: {line}"));
        }
    }
    // A first pass over a snapshot of the index, without the write lock: other
    // handles and processes move keys between shards meanwhile, so a key the
    // snapshot places in a shard that lacks it is only a suspect.
    let placed: Vec<(Vec<u8>, i64)> = {
        let mut stmt = state.index()?.prepare("SELECT key, shard FROM keys")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut suspects = Vec::new();
    for (key, id) in placed {
        let present = match state.shards.get_existing(id)? {
            Some(shard) => shard.has(&key)?,
            None => false,
        };
        if !present {
            suspects.push((key, id));
        }
    }
    if !suspects.is_empty() {
        // Each suspect confirmed under the index's write lock, where no writer can
        // move it; a row is dropped only if it still names the shard that lacks
        // the key (dropping by key alone lost keys re-set meanwhile).
        let confirmed = state.transaction(|tx, shards| {
            let mut confirmed = Vec::new();
            for (key, id) in suspects {
                if index::placement(tx, &key)?.map(|p| p.shard) != Some(id) {
                    continue;
                }
                let present = match shards.get_existing(id)? {
                    Some(shard) => shard.has(&key)?,
                    None => false,
                };
                if !present {
                    if repair {
                        index::remove_placed(tx, &key, id)?;
                    }
                    confirmed.push((key, id));
                }
            }
            Ok(confirmed)
        })?;
        for (key, id) in confirmed {
            found.push(format!(
                "key {}: the index places it in shard-{id:06}, which lacks it{}",
                String::from_utf8_lossy(&key),
                if repair { "; index row dropped" } else { "" }
            ));
        }
    }
    Ok(found)
}

/// Entries that have expired but are still stored.
pub(super) fn expired_entries(state: &mut State) -> Result<u64> {
    let index = state.index()?;
    let (rows, _) = index::totals(index)?;
    Ok(rows.saturating_sub(index::live_count(index, wall_now())?))
}

/// Reclaims free space in the index and every shard.
pub(super) fn compact(state: &mut State) -> Result<()> {
    state.index()?.execute_batch("VACUUM")?;
    for id in index::shard_ids(state.index()?)? {
        if let Some(shard) = state.shards.get_existing(id)? {
            shard.compact()?;
        }
    }
    Ok(())
}
