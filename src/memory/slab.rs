//! The entries of one shard: a slab of nodes addressed by slot number, a free list
//! threaded through the vacant slots, and an intrusive recency list from the most to the
//! least recently used entry. Nothing here knows about keys' hashes, TTLs or locks.

use crate::clock::{MonoDeadline, NO_DEADLINE};
use crate::error::{Error, Result};

/// No slot: the end of a list.
pub(super) const NIL: u32 = u32::MAX;
/// `key_len` of a free slot. Keys are therefore limited to `u32::MAX - 1` bytes.
pub(super) const VACANT: u32 = u32::MAX;
/// [`Slab::oldest_stamp`] of an empty list: later than any stamp, so never the oldest.
pub(super) const NO_STAMP: u64 = u64::MAX;

/// One entry. 48 bytes; key and value share one allocation.
pub(super) struct Node {
    /// The key's bytes followed by the value's.
    pub data: Box<[u8]>,
    pub key_len: u32,
    /// Towards the most recently used end (or the next free slot, for a free slot).
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
    /// The cache-wide touch stamp; orders entries across shards for eviction.
    pub stamp: u64,
    pub deadline: MonoDeadline,
    /// The caller's flags word, stored and returned untouched.
    pub flags: u32,
}

impl Node {
    pub fn new(data: Box<[u8]>, key_len: u32, deadline: MonoDeadline, flags: u32) -> Self {
        Node {
            data,
            key_len,
            prev: NIL,
            next: NIL,
            stamp: 0,
            deadline,
            flags,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    pub fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    pub fn is_vacant(&self) -> bool {
        self.key_len == VACANT
    }
}

/// The slab and its recency list.
pub(super) struct Slab {
    nodes: Vec<Node>,
    free_head: u32,
    /// Most recently used linked entry.
    head: u32,
    /// Least recently used linked entry.
    tail: u32,
    /// The tail's stamp ([`NO_STAMP`] when the list is empty), kept up to date where the
    /// tail's neighbour is already in cache, so reading it never touches the coldest node.
    oldest_stamp: u64,
}

impl Slab {
    pub fn new() -> Self {
        Slab {
            nodes: Vec::new(),
            free_head: NIL,
            head: NIL,
            tail: NIL,
            oldest_stamp: NO_STAMP,
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

    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// The stamp of the least recently used linked entry; [`NO_STAMP`] when none.
    pub fn oldest_stamp(&self) -> u64 {
        self.oldest_stamp
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
            data: Box::default(),
            key_len: VACANT,
            prev: free_head,
            next: NIL,
            stamp: 0,
            deadline: NO_DEADLINE,
            flags: 0,
        };
        self.free_head = slot;
        std::mem::replace(n, vacant)
    }

    /// Takes `slot` out of the recency list.
    pub fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => {
                self.tail = prev;
                // The new tail was just written above, so its stamp is at hand.
                self.oldest_stamp = match prev {
                    NIL => NO_STAMP,
                    p => self.nodes[p as usize].stamp,
                };
            }
            n => self.nodes[n as usize].prev = prev,
        }
    }

    /// Links `slot` as the most recently used entry, with `stamp`.
    pub fn push_front(&mut self, slot: u32, stamp: u64) {
        let old_head = self.head;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = NIL;
            n.next = old_head;
            n.stamp = stamp;
        }
        match old_head {
            NIL => {
                self.tail = slot;
                self.oldest_stamp = stamp;
            }
            h => self.nodes[h as usize].prev = slot,
        }
        self.head = slot;
    }

    /// Makes the linked `slot` the most recently used entry, with `stamp`.
    pub fn move_to_front(&mut self, slot: u32, stamp: u64) {
        if self.head == slot {
            // Already the most recently used: only its stamp moves on.
            self.nodes[slot as usize].stamp = stamp;
            if self.tail == slot {
                self.oldest_stamp = stamp;
            }
            return;
        }
        self.unlink(slot);
        self.push_front(slot, stamp);
    }

    /// Drops every entry.
    pub fn reset(&mut self) {
        *self = Slab::new();
    }

    /// Checks the structure: `linked` says whether occupied slots are on the recency
    /// list. Returns the number of occupied slots, or what is wrong.
    pub fn check(&self, linked: bool) -> std::result::Result<u64, String> {
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
            return Ok(occupied);
        }
        let (mut count, mut prev, mut at, mut stamp) = (0u64, NIL, self.head, u64::MAX);
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
            if n.stamp > stamp {
                return Err(format!(
                    "slot {at}'s stamp {} is newer than the one before it",
                    n.stamp
                ));
            }
            count += 1;
            if count > occupied {
                return Err("the recency list loops".into());
            }
            (prev, stamp, at) = (at, n.stamp, n.next);
        }
        if prev != self.tail {
            return Err(format!(
                "the list ends at {prev}, the tail is {}",
                self.tail
            ));
        }
        if stamp != self.oldest_stamp {
            return Err(format!(
                "oldest stamp {} but the tail's is {stamp}",
                self.oldest_stamp
            ));
        }
        if count != occupied {
            return Err(format!("{count} linked of {occupied} occupied"));
        }
        Ok(occupied)
    }
}
