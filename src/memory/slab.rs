//! The entries of one shard: a slab of nodes addressed by slot number, a free list
//! threaded through the vacant slots, and two intrusive lists ordered by stamp, newest
//! first: [`MAIN`] (LRU's recency list, S3-FIFO's main queue) and [`SMALL`] (S3-FIFO's
//! small queue). Nothing here knows about keys' hashes, TTLs, locks or policies.

use super::entry::Entry;
use crate::clock::MonoDeadline;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// No slot: the end of a list.
pub(super) const NIL: u32 = u32::MAX;
/// [`Slab::oldest_stamp`] of an empty list: later than any stamp, so never the oldest.
pub(super) const NO_STAMP: u64 = u64::MAX;
/// The list of LRU's order and of S3-FIFO's main queue.
pub(super) const MAIN: usize = 0;
/// S3-FIFO's small queue (LRU leaves it empty).
pub(super) const SMALL: usize = 1;

/// A node's stamp word: the stamp in the low bits, then S3-FIFO's two-bit access count,
/// then the list the node is on (so the policy costs the node no extra bytes).
const STAMP_BITS: u32 = 61;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
const FREQ_SHIFT: u32 = STAMP_BITS;
const LIST_SHIFT: u32 = 63;
/// The highest access count kept (S3-FIFO's counter saturates at 3).
pub(super) const MAX_FREQ: u8 = 3;

/// One entry's place in the slab: 32 bytes, two to a cache line.
pub(super) struct Node {
    /// Key, value, deadline and flags (see [`Entry`]).
    pub entry: Entry,
    /// Towards the most recently used end (or the next free slot, for a free slot).
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
    /// The cache-wide stamp that orders entries across shards for eviction, the access
    /// count and the list (see [`STAMP_BITS`]). Atomic so that S3-FIFO's hits, which run
    /// under the shard's shared lock, can raise the count ([`Node::count_access`]);
    /// everything else changes it through `&mut` (plain stores).
    stamp_word: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Node>() == 32);

impl Node {
    pub fn new(entry: Entry) -> Self {
        Node {
            entry,
            prev: NIL,
            next: NIL,
            stamp_word: AtomicU64::new(0),
        }
    }

    fn word(&self) -> u64 {
        self.stamp_word.load(Relaxed)
    }

    /// The stamp the node was linked (or last moved) with.
    pub fn stamp(&self) -> u64 {
        self.word() & STAMP_MASK
    }

    /// S3-FIFO's access count, 0..=[`MAX_FREQ`].
    pub fn freq(&self) -> u8 {
        ((self.word() >> FREQ_SHIFT) & 3) as u8
    }

    pub fn set_freq(&mut self, freq: u8) {
        let freq = u64::from(freq.min(MAX_FREQ));
        let word = self.stamp_word.get_mut();
        *word = (*word & !(3 << FREQ_SHIFT)) | (freq << FREQ_SHIFT);
    }

    /// Raises the access count by one (up to [`MAX_FREQ`]) through a shared reference:
    /// S3-FIFO's hit under the shard's shared lock. Only when the count is below the
    /// top, so a hot entry's line is not written at all; of two hits racing, one may be
    /// lost, as with any approximate counter (the queues only ask "accessed again?").
    #[inline]
    pub fn count_access(&self) {
        let word = self.word();
        if (word >> FREQ_SHIFT) & 3 < u64::from(MAX_FREQ) {
            let _ =
                self.stamp_word
                    .compare_exchange(word, word + (1 << FREQ_SHIFT), Relaxed, Relaxed);
        }
    }

    /// The list the (linked) node is on: [`MAIN`] or [`SMALL`].
    pub fn list(&self) -> usize {
        (self.word() >> LIST_SHIFT) as usize
    }

    /// Sets stamp and list, keeping the access count.
    fn place(&mut self, list: usize, stamp: u64) {
        let word = self.stamp_word.get_mut();
        let freq = *word & (3 << FREQ_SHIFT);
        *word = (stamp & STAMP_MASK) | freq | ((list as u64) << LIST_SHIFT);
    }

    pub fn key(&self) -> &[u8] {
        self.entry.key()
    }

    pub fn value(&self) -> &[u8] {
        self.entry.value()
    }

    pub fn deadline(&self) -> MonoDeadline {
        self.entry.deadline()
    }

    pub fn flags(&self) -> u32 {
        self.entry.flags()
    }

    /// Bytes of key and value.
    pub fn size(&self) -> u64 {
        self.entry.len() as u64
    }

    pub fn is_vacant(&self) -> bool {
        self.entry.is_vacant()
    }
}

/// One intrusive list's ends.
#[derive(Clone, Copy)]
struct List {
    /// Newest linked entry.
    head: u32,
    /// Oldest linked entry.
    tail: u32,
    /// The tail's stamp ([`NO_STAMP`] when the list is empty), kept up to date where the
    /// tail's neighbour is already in cache, so reading it never touches the coldest node.
    oldest_stamp: u64,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
    oldest_stamp: NO_STAMP,
};

/// The slab and its two lists.
pub(super) struct Slab {
    nodes: Vec<Node>,
    free_head: u32,
    lists: [List; 2],
}

impl Slab {
    pub fn new() -> Self {
        Slab {
            nodes: Vec::new(),
            free_head: NIL,
            lists: [EMPTY; 2],
        }
    }

    pub fn node(&self, slot: u32) -> &Node {
        &self.nodes[slot as usize]
    }

    pub fn node_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.nodes[slot as usize]
    }

    /// Slots ever allocated (occupied or vacant): the range to scan.
    pub fn capacity(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// The oldest entry of `list` ([`NIL`] when empty).
    pub fn tail(&self, list: usize) -> u32 {
        self.lists[list].tail
    }

    /// The stamp of the oldest entry of `list`; [`NO_STAMP`] when empty.
    pub fn oldest_stamp(&self, list: usize) -> u64 {
        self.lists[list].oldest_stamp
    }

    /// Puts `node` in a free slot (or a new one) and returns the slot. Not linked.
    pub fn allocate(&mut self, node: Node) -> Result<u32> {
        if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.nodes[slot as usize].prev;
            self.nodes[slot as usize] = node;
            return Ok(slot);
        }
        let slot = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&s| s != NIL)
            .ok_or_else(|| Error::no_memory(std::mem::size_of::<Node>()))?;
        self.nodes
            .try_reserve(1)
            .map_err(|_| Error::no_memory(std::mem::size_of::<Node>()))?;
        self.nodes.push(node);
        Ok(slot)
    }

    /// Empties the (unlinked) `slot`, puts it on the free list and returns the entry.
    pub fn release(&mut self, slot: u32) -> Node {
        let free_head = self.free_head;
        let n = &mut self.nodes[slot as usize];
        let vacant = Node {
            entry: Entry::vacant(),
            prev: free_head,
            next: NIL,
            stamp_word: AtomicU64::new(0),
        };
        self.free_head = slot;
        std::mem::replace(n, vacant)
    }

    /// Takes the linked `slot` out of its list.
    #[inline]
    pub fn unlink(&mut self, slot: u32) {
        let (prev, next, list) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next, n.list())
        };
        match prev {
            NIL => self.lists[list].head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => {
                // The new tail was just written above, so its stamp is at hand.
                let oldest_stamp = match prev {
                    NIL => NO_STAMP,
                    p => self.nodes[p as usize].stamp(),
                };
                let l = &mut self.lists[list];
                l.tail = prev;
                l.oldest_stamp = oldest_stamp;
            }
            n => self.nodes[n as usize].prev = prev,
        }
    }

    /// Links the unlinked `slot` as the newest entry of `list`, with `stamp`.
    #[inline]
    pub fn push_front(&mut self, list: usize, slot: u32, stamp: u64) {
        let old_head = self.lists[list].head;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = NIL;
            n.next = old_head;
            n.place(list, stamp);
        }
        match old_head {
            NIL => {
                self.lists[list].tail = slot;
                self.lists[list].oldest_stamp = stamp;
            }
            h => self.nodes[h as usize].prev = slot,
        }
        self.lists[list].head = slot;
    }

    /// Makes the linked `slot` the newest entry of its list, with `stamp`.
    #[inline]
    pub fn move_to_front(&mut self, slot: u32, stamp: u64) {
        let list = self.nodes[slot as usize].list();
        let l = self.lists[list];
        if l.head == slot {
            // Already the newest: only its stamp moves on.
            self.nodes[slot as usize].place(list, stamp);
            if l.tail == slot {
                self.lists[list].oldest_stamp = stamp;
            }
            return;
        }
        self.unlink(slot);
        self.push_front(list, slot, stamp);
    }

    /// Entries and bytes (of keys and values) on `list`.
    pub fn list_totals(&self, list: usize) -> (u64, u64) {
        let (mut entries, mut bytes, mut at) = (0, 0, self.lists[list].head);
        while at != NIL {
            let n = &self.nodes[at as usize];
            entries += 1;
            bytes += n.size();
            at = n.next;
        }
        (entries, bytes)
    }

    /// Drops every entry.
    pub fn reset(&mut self) {
        *self = Slab::new();
    }

    /// Checks the structure: `linked` says whether occupied slots are on the lists
    /// (every one on exactly one). Returns the number of occupied slots per list (all on
    /// [`MAIN`] when not linked), or what is wrong.
    pub fn check(&self, linked: bool) -> std::result::Result<[u64; 2], String> {
        let occupied = self.nodes.iter().filter(|n| !n.is_vacant()).count() as u64;
        let mut free = 0u64;
        let mut at = self.free_head;
        while at != NIL {
            let n = self
                .nodes
                .get(at as usize)
                .ok_or("free list leaves the slab")?;
            if !n.is_vacant() {
                return Err(format!("occupied slot {at} on the free list"));
            }
            free += 1;
            if free > self.nodes.len() as u64 {
                return Err("the free list loops".into());
            }
            at = n.prev;
        }
        if free + occupied != self.nodes.len() as u64 {
            return Err(format!(
                "{free} free + {occupied} occupied != {} slots",
                self.nodes.len()
            ));
        }
        if !linked {
            return match self.lists.iter().all(|l| l.tail == NIL && l.head == NIL) {
                true => Ok([occupied, 0]),
                false => Err("an unlinked slab keeps a list".into()),
            };
        }
        let counts = [self.check_list(MAIN)?, self.check_list(SMALL)?];
        if counts[MAIN] + counts[SMALL] != occupied {
            return Err(format!("{counts:?} linked of {occupied} occupied"));
        }
        Ok(counts)
    }

    /// Walks `list`; returns its length or what is wrong.
    fn check_list(&self, list: usize) -> std::result::Result<u64, String> {
        let l = &self.lists[list];
        let (mut count, mut prev, mut at, mut stamp) = (0u64, NIL, l.head, u64::MAX);
        while at != NIL {
            let n = self
                .nodes
                .get(at as usize)
                .ok_or("recency list leaves the slab")?;
            if n.is_vacant() {
                return Err(format!("vacant slot {at} on the recency list"));
            }
            if n.prev != prev {
                return Err(format!("slot {at} links back to {} not {prev}", n.prev));
            }
            if n.list() != list {
                return Err(format!(
                    "slot {at} on list {list} says it is on {}",
                    n.list()
                ));
            }
            if n.stamp() > stamp {
                return Err(format!(
                    "slot {at}'s stamp {} is newer than the one before it",
                    n.stamp()
                ));
            }
            count += 1;
            if count > self.nodes.len() as u64 {
                return Err(format!("list {list} loops"));
            }
            (prev, stamp, at) = (at, n.stamp(), n.next);
        }
        if prev != l.tail {
            return Err(format!(
                "list {list} ends at {prev}, the tail is {}",
                l.tail
            ));
        }
        let stamp = if prev == NIL { NO_STAMP } else { stamp };
        if stamp != l.oldest_stamp {
            return Err(format!(
                "list {list}: oldest stamp {} but the tail's is {stamp}",
                l.oldest_stamp
            ));
        }
        Ok(count)
    }
}
