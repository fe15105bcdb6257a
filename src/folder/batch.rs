//! The folder kind's bulk set, all or nothing.
//!
//! Set one by one, a batch stopped by a full disk or a kill left its first entries
//! stored. Here:
//! 1. **Stage**: every live entry is written whole into a working folder of its own. A
//!    failure (the disk full, a file too large) removes them all: nothing was visible.
//! 2. **Journal**: the plan (each working folder, its identity and its entry's name;
//!    each key to remove) is written to `.tmp-…` and renamed to `.batch-…`, so it
//!    appears whole or not at all. From here on the batch is decided.
//! 3. **Apply**: removals, then each working folder swapped or moved into place. A
//!    failure undoes the steps already made, in reverse, and the call fails with nothing
//!    stored; success removes the journal.
//!
//! A writer killed after step 2 leaves the journal: the next open of the directory (once
//! that writer's process is gone, or the journal is older than the stale age of working
//! folders) completes the batch, installing each working folder still there whose
//! identity the journal names (a folder at that name with another identity is the entry
//! a swap displaced, and is removed). So a batch ends whole, or not at all.
//!
//! Readers see the entries change one by one during step 3 (each the old value or the
//! new, never absent); other writers of the same keys meanwhile may be overwritten by a
//! completion after a kill, as by any later set.

use super::entry::{Meta, Root, TMP_PREFIX};
use super::naming;
use crate::error::{Error, ErrorKind, Result};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

/// A journal's name starts with this (never an entry's name: a leading dot is escaped).
pub(super) const JOURNAL_PREFIX: &str = ".batch-";
const JOURNAL_HEADER: &str = "duckcache-folder-batch 1";

/// One entry of a batch: its key's folder name, and its value (None: remove the key).
pub(super) struct Planned<'a> {
    pub name: String,
    pub meta: Meta,
    pub value: Option<&'a [u8]>,
}

/// A staged entry: the working folder, its identity (device, inode), the entry's name.
struct Staged {
    tmp: String,
    id: (u64, u64),
    name: String,
}

/// What apply did to one name, to undo it.
enum Done {
    /// The staged folder went in where nothing was; it is at `name` now.
    Placed { name: String, tmp: String },
    /// Swapped: the new entry is at `name`, the one it displaced at `tmp`.
    Swapped { name: String, tmp: String },
    /// The entry at `name` was moved to `aside` (a removal).
    Removed { name: String, aside: String },
}

/// Stores `planned` (the last entry of each key) all or nothing.
pub(super) fn set_all(root: &Root, planned: &[Planned]) -> Result<()> {
    let mut staged: Vec<Staged> = Vec::new();
    let mut removals: Vec<&str> = Vec::new();
    for p in planned {
        let Some(value) = p.value else {
            removals.push(&p.name);
            continue;
        };
        let tmp = Root::new_tmp_name();
        let written = root
            .write_tmp(&tmp, &p.meta, value)
            .and_then(|()| root.identity(&tmp));
        match written {
            Ok(id) => staged.push(Staged {
                tmp,
                id,
                name: p.name.clone(),
            }),
            Err(e) => {
                staged.iter().for_each(|s| root.discard(&s.tmp));
                return Err(e);
            }
        }
    }
    let journal = match write_journal(root, &staged, &removals) {
        Ok(journal) => journal,
        Err(e) => {
            staged.iter().for_each(|s| root.discard(&s.tmp));
            return Err(e);
        }
    };
    let mut done: Vec<Done> = Vec::new();
    let applied = apply(root, &staged, &removals, &mut done);
    match applied {
        Ok(()) => {
            for step in done {
                match step {
                    Done::Swapped { tmp, .. } => root.discard(&tmp),
                    Done::Removed { aside, .. } => root.discard(&aside),
                    Done::Placed { .. } => {}
                }
            }
            root.discard(&journal);
            Ok(())
        }
        Err(e) => {
            undo(root, done);
            staged.iter().for_each(|s| root.discard(&s.tmp));
            root.discard(&journal);
            Err(e)
        }
    }
}

fn apply(root: &Root, staged: &[Staged], removals: &[&str], done: &mut Vec<Done>) -> Result<()> {
    for name in removals {
        let aside = Root::new_tmp_name();
        if root.take(name, &aside)? {
            done.push(Done::Removed {
                name: (*name).to_owned(),
                aside,
            });
        }
    }
    for s in staged {
        // Swap where an entry is (readers see the old or the new, never nothing), else
        // move in; a race with another writer of the name is tried again.
        let mut placed = false;
        for _ in 0..64 {
            if root.exchange(&s.tmp, &s.name)? {
                done.push(Done::Swapped {
                    name: s.name.clone(),
                    tmp: s.tmp.clone(),
                });
                placed = true;
                break;
            }
            if root.place_new(&s.tmp, &s.name)? {
                done.push(Done::Placed {
                    name: s.name.clone(),
                    tmp: s.tmp.clone(),
                });
                placed = true;
                break;
            }
        }
        if !placed {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{}: other writers kept replacing the entry", s.name),
            ));
        }
    }
    Ok(())
}

/// Reverses the steps made, last first (best effort: a step that cannot be reversed
/// leaves the batch's entry, as a failed single set may).
fn undo(root: &Root, done: Vec<Done>) {
    for step in done.into_iter().rev() {
        match step {
            Done::Swapped { name, tmp } => {
                // The displaced entry back; the new one, now at `tmp`, removed by caller.
                let _ = root.exchange(&tmp, &name);
            }
            Done::Placed { name, tmp } => {
                let _ = root.take(&name, &tmp);
            }
            Done::Removed { name, aside } => root.put_back(&aside, &name),
        }
    }
}

/// Writes the journal whole under a working name, then gives it its journal name.
fn write_journal(root: &Root, staged: &[Staged], removals: &[&str]) -> Result<String> {
    let mut text = format!("{JOURNAL_HEADER}\n");
    for s in staged {
        text.push_str(&format!("set {} {} {}:{}\n", s.name, s.tmp, s.id.0, s.id.1));
    }
    for name in removals {
        text.push_str(&format!("remove {name}\n"));
    }
    let unique = crate::disk::unique_name();
    let tmp = format!("{TMP_PREFIX}{unique}.batch");
    let journal = format!("{JOURNAL_PREFIX}{unique}");
    root.write_plain_file(&tmp, text.as_bytes())?;
    root.rename_file(&tmp, &journal)
        .inspect_err(|_| root.discard(&tmp))?;
    Ok(journal)
}

/// Completes the batches whose writers died after deciding them (see the module's note):
/// journals of a process that is gone, or older than `stale`.
pub(super) fn complete_left_batches(root: &Root, stale: Duration) -> Result<()> {
    for journal in root.list()? {
        let Some(unique) = journal.strip_prefix(JOURNAL_PREFIX) else {
            continue;
        };
        if writer_alive(unique) && !root.is_older_than(&journal, stale) {
            continue;
        }
        let Some(text) = root.read_plain_file(&journal)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        if lines.next() != Some(JOURNAL_HEADER) {
            continue; // not ours to read: left alone
        }
        let plan: Vec<Vec<&str>> = lines.map(|l| l.split(' ').collect()).collect();
        // Finished except for the journal's removal: nothing of it is still staged.
        let unfinished = plan.iter().any(|p| {
            matches!(p.as_slice(), ["set", _, tmp, id] if root.identity(tmp).ok() == parse_id(id))
        });
        if unfinished {
            for p in &plan {
                if let ["remove", name] = p.as_slice() {
                    if naming::is_entry_name(name) {
                        let aside = Root::new_tmp_name();
                        if root.take(name, &aside)? {
                            root.discard(&aside);
                        }
                    }
                }
            }
        }
        for p in &plan {
            let ["set", name, tmp, id] = p.as_slice() else {
                continue;
            };
            if !naming::is_entry_name(name) || !tmp.starts_with(TMP_PREFIX) {
                continue;
            }
            if root.identity(tmp).ok() == parse_id(id) {
                root.install(tmp, name)?;
            } else {
                root.discard(tmp); // an entry a swap displaced (or nothing)
            }
        }
        root.discard(&journal);
    }
    Ok(())
}

fn parse_id(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Whether the process named in a unique name (`{nanos}-{pid}-{n}`, hex) still runs.
fn writer_alive(unique: &str) -> bool {
    let pid = unique
        .split('-')
        .nth(1)
        .and_then(|p| u32::from_str_radix(p, 16).ok());
    match pid {
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// The identity of a root's folder, through a pinned descriptor.
impl Root {
    pub(super) fn identity(&self, name: &str) -> Result<(u64, u64)> {
        let folder = self
            .open_folder(name)?
            .ok_or_else(|| Error::new(ErrorKind::Io, format!("{name} is gone")))?;
        let st = rustix::fs::fstat(folder.as_fd())
            .map_err(|e| Error::io(e.into(), "cannot stat", &self.path().join(name)))?;
        Ok((st.st_dev, st.st_ino))
    }
}
