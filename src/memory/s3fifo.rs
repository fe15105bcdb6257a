//! S3-FIFO ("FIFO queues are all you need for cache eviction", SOSP'23), across shards.
//!
//! Three FIFO queues: a small one (a tenth of the cache) that every new key enters, a
//! main one (the rest), and a ghost queue of keys recently evicted from the small one
//! (hashes only, as many as nine tenths of the cache). A hit only raises the entry's
//! two-bit access count: no list moves, no shared counter, so a get touches the entry's
//! node and nothing else. Eviction:
//! - from the small queue (while it holds its tenth and main is within its share): its
//!   oldest entry moves to main if it was accessed at least twice, else it leaves and
//!   its key goes to the ghost queue; repeated until one entry left;
//! - from the main queue: its oldest entry, if accessed since it was last looked at,
//!   goes back to main's head with its count lowered by one (a two-bit CLOCK); repeated
//!   until one with count 0 leaves.
//!
//! A new key found in the ghost queue enters main directly (it was evicted too early).
//! Before the cache first fills, a new key also enters main once the small queue is full
//! (libCacheSim's S3FIFO does the same; it keeps the early keys a little longer).
//!
//! The queues are global, as in the paper, though entries live in shards: each shard
//! keeps its part of each queue as a list ordered by the cache-wide stamp, and the
//! evictor takes the queue's oldest entry over all shards by comparing the stamps each
//! shard publishes (the LRU policy's method, [`super`]). The ghost queue is one FIFO of
//! key hashes behind its own lock, taken after a shard's lock, never before.

use crate::sync::fork::{ForkLocks, ForkMutex};
use crate::sync::Mutex;
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// Moves from small to main at this many accesses (libCacheSim's default).
pub(super) const PROMOTE_AT: u8 = 2;

/// The queues' shares and the counters the policy decides by; one per cache.
pub(super) struct S3Fifo {
    /// The small queue's share of each bound (0 = that bound is not set).
    small_keys: i64,
    small_bytes: i64,
    /// The main queue's share of each bound.
    main_keys: i64,
    main_bytes: i64,
    /// Entries and bytes in the small queue now (over all shards).
    pub in_small: AtomicI64,
    pub small_held: AtomicI64,
    /// Set by the first eviction: from then on a new key always enters the small queue.
    pub has_evicted: AtomicBool,
    pub ghost: Mutex<Ghost>,
}

impl S3Fifo {
    /// Shares of `max_keys` and `max_bytes` (0 = not bounded that way).
    pub fn new(max_keys: u64, max_bytes: u64) -> Self {
        let share = |max: u64| -> (i64, i64) {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            if max == 0 {
                return (0, 0);
            }
            let small = (max / 10).max(1);
            (small, max - small)
        };
        let (small_keys, main_keys) = share(max_keys);
        let (small_bytes, main_bytes) = share(max_bytes);
        let ghost_of = |max: u64| max.saturating_mul(9) / 10;
        S3Fifo {
            small_keys,
            small_bytes,
            main_keys,
            main_bytes,
            in_small: AtomicI64::new(0),
            small_held: AtomicI64::new(0),
            has_evicted: AtomicBool::new(false),
            ghost: Mutex::new(Ghost::new(ghost_of(max_keys), ghost_of(max_bytes))),
        }
    }

    /// True when the small queue holds its share (of either bound).
    pub fn small_is_full(&self) -> bool {
        (self.small_keys != 0 && self.in_small.load(Relaxed) >= self.small_keys)
            || (self.small_bytes != 0 && self.small_held.load(Relaxed) >= self.small_bytes)
    }

    /// True when the main queue holds more than its share, given the cache's totals.
    pub fn main_is_over(&self, entries: i64, bytes: i64) -> bool {
        let (in_main, main_held) = (
            entries - self.in_small.load(Relaxed),
            bytes - self.small_held.load(Relaxed),
        );
        (self.main_keys != 0 && in_main > self.main_keys)
            || (self.main_bytes != 0 && main_held > self.main_bytes)
    }

    /// Counts an entry of `size` bytes joining (+1) or leaving (-1) the small queue.
    pub fn small_changed(&self, sign: i64, size: u64) {
        self.in_small.fetch_add(sign, Relaxed);
        self.small_held.fetch_add(sign * size as i64, Relaxed);
    }
}

impl ForkLocks for S3Fifo {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        vec![&self.ghost]
    }
}

/// The ghost queue: hashes of keys evicted from the small queue, oldest first, bounded
/// by count and bytes like the cache (0 = no such bound).
pub(super) struct Ghost {
    max_keys: u64,
    max_bytes: u64,
    /// (hash, sequence number), oldest first; an element whose hash maps to another
    /// sequence number was taken out early (a ghost hit) and is skipped.
    queue: VecDeque<(u64, u64)>,
    /// The keys remembered: hash -> (sequence number, entry size).
    live: HashMap<u64, (u64, u64)>,
    live_bytes: u64,
    next_seq: u64,
}

impl Ghost {
    fn new(max_keys: u64, max_bytes: u64) -> Self {
        Ghost {
            max_keys,
            max_bytes,
            queue: VecDeque::new(),
            live: HashMap::new(),
            live_bytes: 0,
            next_seq: 0,
        }
    }

    /// Remembers the key of `hash` (an entry of `size` bytes), forgetting the oldest
    /// keys beyond the bounds.
    pub fn insert(&mut self, hash: u64, size: u64) {
        if self.max_keys == 0 && self.max_bytes == 0 {
            return;
        }
        if self.live.contains_key(&hash) {
            return; // already remembered: stays where it is, as libCacheSim's ghost does
        }
        self.next_seq += 1;
        self.live.insert(hash, (self.next_seq, size));
        self.queue.push_back((hash, self.next_seq));
        self.live_bytes += size;
        while self.over() {
            let Some((old, seq)) = self.queue.pop_front() else {
                break;
            };
            if let Some(&(live_seq, size)) = self.live.get(&old) {
                if live_seq == seq {
                    self.live.remove(&old);
                    self.live_bytes -= size;
                }
            }
        }
        // Taken-out elements linger until they reach the front; drop them when they
        // outnumber the live ones, so the queue stays within twice its bound.
        if self.queue.len() > 2 * self.live.len() + 16 {
            let live = &self.live;
            self.queue
                .retain(|(h, seq)| live.get(h).is_some_and(|(s, _)| s == seq));
        }
    }

    fn over(&self) -> bool {
        (self.max_keys != 0 && self.live.len() as u64 > self.max_keys)
            || (self.max_bytes != 0 && self.live_bytes > self.max_bytes)
    }

    /// Takes the key of `hash` out if it is remembered; true when it was (a ghost hit).
    pub fn take(&mut self, hash: u64) -> bool {
        match self.live.remove(&hash) {
            Some((_, size)) => {
                self.live_bytes -= size;
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.live.clear();
        self.live_bytes = 0;
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ghost_forgets_its_oldest_keys_beyond_its_bound_and_hits_take_keys_out() {
        let mut ghost = Ghost::new(3, 0);
        for h in 1..=5 {
            ghost.insert(h, 10);
        }
        assert_eq!(ghost.len(), 3);
        assert!(!ghost.take(1) && !ghost.take(2));
        assert!(ghost.take(4));
        assert!(!ghost.take(4), "a ghost hit takes the key out");
        ghost.insert(6, 10);
        ghost.insert(7, 10);
        assert!(ghost.take(5) && ghost.take(6) && ghost.take(7) && !ghost.take(3));
        assert_eq!(ghost.len(), 0);
        assert_eq!(ghost.live_bytes, 0);
    }

    #[test]
    fn the_ghost_bounded_in_bytes_and_its_queue_stays_small_under_many_hits() {
        let mut ghost = Ghost::new(0, 100);
        for h in 0..1000u64 {
            ghost.insert(h, 30);
            assert!(ghost.live_bytes <= 100);
            if h % 2 == 0 {
                ghost.take(h);
            }
        }
        assert!(ghost.queue.len() <= 2 * ghost.live.len() + 16);
    }

    use super::super::{MemoryCache, Policy};
    use crate::backend::Backend;
    use crate::ttl::Ttl;

    /// A 10-key S3-FIFO cache over 4 shards: small holds 1 key, main 9, the ghost 9.
    fn cache() -> MemoryCache {
        MemoryCache::with_policy_and_shards(10, 0, Policy::S3Fifo, 4)
    }

    fn set(c: &MemoryCache, k: &str) {
        c.set(k.as_bytes(), b"v", Ttl::Never).unwrap();
    }

    fn hit(c: &MemoryCache, k: &str) -> bool {
        c.get_flagged(k.as_bytes(), &mut |_, _| ()).unwrap()
    }

    fn has(c: &MemoryCache, k: &str) -> bool {
        c.has(k.as_bytes()).unwrap()
    }

    /// Fills the cache past full with keys `prefix0..`, so evictions have begun.
    fn fill(c: &MemoryCache, prefix: &str, n: usize) {
        for i in 0..n {
            set(c, &format!("{prefix}{i}"));
        }
    }

    #[test]
    fn a_one_hit_wonder_leaves_through_the_small_queue_and_main_is_kept() {
        let c = cache();
        fill(&c, "hot", 10); // the first 10 fill the cache (small, then main)
                             // A scan of keys seen once: each enters small and leaves from there, the next
                             // one pushing it out; main's keys are never touched.
        fill(&c, "scan", 100);
        let kept = (0..10).filter(|i| has(&c, &format!("hot{i}"))).count();
        assert!(
            kept >= 9,
            "main kept its keys through the scan: {kept} of 10"
        );
        assert!(!has(&c, "scan0") && !has(&c, "scan98") && has(&c, "scan99"));
        c.check_invariants().unwrap();
    }

    #[test]
    fn a_key_seen_twice_in_small_is_promoted_to_main() {
        let c = cache();
        fill(&c, "old", 20); // evictions have begun; small holds old19
        set(&c, "twice");
        assert!(hit(&c, "twice") && hit(&c, "twice")); // two accesses while in small
                                                       // The next new key evicts from small: "twice" moves to main instead of leaving.
        fill(&c, "new", 5);
        assert!(has(&c, "twice"), "promoted to main");
        let ghost = c.s3.as_ref().unwrap().ghost.lock().len();
        assert!(
            ghost >= 4,
            "the keys seen once went to the ghost queue ({ghost})"
        );
        c.check_invariants().unwrap();
    }

    #[test]
    fn a_ghost_hit_goes_to_main() {
        let c = cache();
        fill(&c, "k", 20);
        set(&c, "once");
        set(&c, "push"); // evicts "once" from small into the ghost queue
        assert!(!has(&c, "once"));
        // A ghost hit: room is made first (small's only key, "push", leaves), then
        // "once" goes straight into main.
        set(&c, "once");
        assert!(has(&c, "once") && !has(&c, "push"));
        let in_small = c.s3.as_ref().unwrap().in_small.load(Relaxed);
        assert_eq!(in_small, 0, "\"once\" is not in small");
        fill(&c, "later", 5); // small's churn cannot evict it
        assert!(has(&c, "once"));
        c.check_invariants().unwrap();
    }

    #[test]
    fn hits_raise_the_count_only_to_three_and_main_gives_second_chances() {
        let c = cache();
        fill(&c, "m", 10); // all of these reach main while the cache first fills
        for _ in 0..10 {
            assert!(hit(&c, "m5"));
        }
        // Each pass over main lowers m5's count by one; 3 passes, then it may go. Nine
        // new keys each evict one main entry without touching m5 as long as it has a count.
        fill(&c, "n", 9);
        assert!(has(&c, "m5"));
        c.check_invariants().unwrap();
    }

    #[test]
    fn shares_are_a_tenth_and_the_rest() {
        let s = S3Fifo::new(100, 0);
        assert_eq!((s.small_keys, s.main_keys, s.small_bytes), (10, 90, 0));
        let s = S3Fifo::new(5, 1000);
        assert_eq!((s.small_keys, s.main_keys), (1, 4));
        assert_eq!((s.small_bytes, s.main_bytes), (100, 900));
    }
}
