//! One entry's bytes in one allocation: a header (the deadline and the caller's flags),
//! then the key, then the value, owned through a thin pointer with the two lengths
//! beside it. 16 bytes in the slab node instead of the 32 a boxed slice plus deadline and
//! flags took, and a get finds the deadline and flags in the cache line the key
//! comparison has just loaded.

use crate::clock::{MonoDeadline, NO_DEADLINE};
use crate::error::{Error, ErrorKind, Result};
use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;

/// `key_len` of a vacant entry (no allocation). Keys are therefore limited to
/// `u32::MAX - 1` bytes.
pub(super) const VACANT: u32 = u32::MAX;

/// Bytes before the key: the deadline (u64), then the flags (u32).
const HEADER: usize = 12;
const FLAGS_AT: usize = 8;

pub(super) struct Entry {
    ptr: NonNull<u8>,
    key_len: u32,
    value_len: u32,
}

// SAFETY: an Entry owns its allocation outright (no sharing, no interior mutability
// except through &mut), like a Box<[u8]>.
unsafe impl Send for Entry {}
// SAFETY: as above; &Entry only reads.
unsafe impl Sync for Entry {}

impl Entry {
    /// The entry of a vacant slot: no allocation.
    pub fn vacant() -> Entry {
        Entry {
            ptr: NonNull::dangling(),
            key_len: VACANT,
            value_len: 0,
        }
    }

    /// Allocates and fills an entry; an error (changing nothing) when the key is 4 GiB
    /// or longer, the value too long, or memory short.
    pub fn new(key: &[u8], value: &[u8], deadline: MonoDeadline, flags: u32) -> Result<Entry> {
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|&l| l != VACANT)
            .ok_or_else(|| Error::invalid_arg("key longer than 4 GiB"))?;
        let value_len = u32::try_from(value.len())
            .map_err(|_| Error::new(ErrorKind::TooLarge, "a memory cache value is under 4 GiB"))?;
        let layout = Self::layout_for(key.len(), value.len())
            .ok_or_else(|| Error::no_memory(key.len() + value.len()))?;
        // SAFETY: the layout's size is at least HEADER, never zero.
        let ptr = NonNull::new(unsafe { alloc(layout) })
            .ok_or_else(|| Error::no_memory(layout.size()))?;
        // SAFETY: the allocation holds HEADER + key + value bytes, aligned for u64; the
        // writes below stay inside it and do not overlap the caller's slices.
        unsafe {
            let base = ptr.as_ptr();
            base.cast::<u64>().write(deadline);
            base.add(FLAGS_AT).cast::<u32>().write_unaligned(flags);
            std::ptr::copy_nonoverlapping(key.as_ptr(), base.add(HEADER), key.len());
            std::ptr::copy_nonoverlapping(
                value.as_ptr(),
                base.add(HEADER + key.len()),
                value.len(),
            );
        }
        Ok(Entry {
            ptr,
            key_len,
            value_len,
        })
    }

    fn layout_for(key_len: usize, value_len: usize) -> Option<Layout> {
        let size = HEADER.checked_add(key_len)?.checked_add(value_len)?;
        Layout::from_size_align(size, std::mem::align_of::<u64>()).ok()
    }

    pub fn is_vacant(&self) -> bool {
        self.key_len == VACANT
    }

    /// Bytes of key and value (0 for a vacant entry).
    pub fn len(&self) -> usize {
        if self.is_vacant() {
            0
        } else {
            self.key_len as usize + self.value_len as usize
        }
    }

    pub fn key(&self) -> &[u8] {
        if self.is_vacant() {
            return &[];
        }
        // SAFETY: an occupied entry's allocation holds key_len key bytes at HEADER,
        // initialised in `new`, alive as long as &self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HEADER), self.key_len as usize) }
    }

    pub fn value(&self) -> &[u8] {
        if self.is_vacant() {
            return &[];
        }
        // SAFETY: as for `key`: value_len value bytes right after the key.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(HEADER + self.key_len as usize),
                self.value_len as usize,
            )
        }
    }

    pub fn deadline(&self) -> MonoDeadline {
        if self.is_vacant() {
            return NO_DEADLINE;
        }
        // SAFETY: an occupied entry's allocation starts with its deadline, u64-aligned.
        unsafe { self.ptr.as_ptr().cast::<u64>().read() }
    }

    pub fn set_deadline(&mut self, deadline: MonoDeadline) {
        assert!(!self.is_vacant(), "a vacant entry has no deadline");
        // SAFETY: as for `deadline`; &mut self makes this the only access.
        unsafe { self.ptr.as_ptr().cast::<u64>().write(deadline) }
    }

    pub fn flags(&self) -> u32 {
        if self.is_vacant() {
            return 0;
        }
        // SAFETY: an occupied entry's allocation holds the flags at FLAGS_AT.
        unsafe {
            self.ptr
                .as_ptr()
                .add(FLAGS_AT)
                .cast::<u32>()
                .read_unaligned()
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.is_vacant() {
            return;
        }
        let layout = Self::layout_for(self.key_len as usize, self.value_len as usize)
            .expect("the layout it was allocated with");
        // SAFETY: allocated in `new` with this same layout, freed once (drop).
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_it_was_given() {
        let mut e = Entry::new(b"key", b"value", 42, 7).unwrap();
        assert_eq!(
            (e.key(), e.value(), e.deadline(), e.flags()),
            (&b"key"[..], &b"value"[..], 42, 7)
        );
        assert_eq!(e.len(), 8);
        e.set_deadline(NO_DEADLINE);
        assert_eq!(
            (e.deadline(), e.flags(), e.key()),
            (NO_DEADLINE, 7, &b"key"[..])
        );
        let empty = Entry::new(b"", b"", 1, u32::MAX).unwrap();
        assert_eq!(
            (empty.key(), empty.value(), empty.flags(), empty.len()),
            (&b""[..], &b""[..], u32::MAX, 0)
        );
        let v = Entry::vacant();
        assert!(v.is_vacant());
        assert_eq!((v.len(), v.key(), v.deadline()), (0, &b""[..], NO_DEADLINE));
    }
}
