//! Section `read cache`: Zipf(0.99) gets of 1 KiB and 100 KiB values over 10,000 keys
//! while another process sets one key every 100 operations, file and sharded, with and
//! without `read_cache`.

use crate::harness::*;
use std::hint::black_box;
use std::time::Instant;

/// Another process that sets keys in a store when asked, one at a time (lockstep over
/// a pair of pipes), so a benchmark's reads meet commits that are not their own.
struct OtherWriter {
    pid: libc::pid_t,
    ask: std::fs::File,
    done: std::fs::File,
}

impl OtherWriter {
    /// Forks a process that opens `uri` and, for each key index it is sent, sets that
    /// key to a `size`-byte value.
    fn start(uri: &str, size: usize) -> OtherWriter {
        use std::io::{Read, Write};
        use std::os::fd::FromRawFd;
        let pipe = || {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            unsafe {
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            }
        };
        let ((mut ask_rx, ask_tx), (done_rx, mut done_tx)) = (pipe(), pipe());
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // The parent's ends: the request pipe must reach end-of-file when the
            // parent closes its end.
            drop((ask_tx, done_rx));
            let c = open_uri(uri);
            let value = vec![9u8; size];
            let mut index = [0u8; 8];
            while ask_rx.read_exact(&mut index).is_ok() {
                c.set(&key(u64::from_le_bytes(index)), &value);
                done_tx.write_all(&[1]).unwrap();
            }
            drop(c);
            unsafe { libc::_exit(0) };
        }
        drop((ask_rx, done_tx));
        OtherWriter {
            pid,
            ask: ask_tx,
            done: done_rx,
        }
    }

    /// Has key `i` set, and returns once the set is acknowledged.
    fn set(&mut self, i: u64) {
        use std::io::{Read, Write};
        self.ask.write_all(&i.to_le_bytes()).unwrap();
        self.done.read_exact(&mut [0u8; 1]).unwrap();
    }
}

impl Drop for OtherWriter {
    fn drop(&mut self) {
        // Closing the request pipe ends the child's loop.
        let ask = std::mem::replace(&mut self.ask, std::fs::File::open("/dev/null").unwrap());
        drop(ask);
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// The read cache's workload (issue 17): Zipf(0.99) gets over 10,000 keys, one
/// operation in every 100 a set of a key of the same distribution from another process
/// (acknowledged before the next get). Gets alone are timed.
pub(crate) fn bench_read_cache() {
    println!(
        "== read cache: Zipf(0.99) gets over 10,000 keys, 1 operation in 100 a set from another process; \
         targets: with read_cache 1 KiB >= 3x, 100 KiB >= 20x faster"
    );
    const KEYS: u64 = 10_000;
    const OPS: usize = 20_000;
    for kind in ["file", "sharded"] {
        for (label, size) in [("1 KiB", 1024usize), ("100 KiB", 100 * 1024)] {
            let base = scratch_dir("read-cache");
            let location = format!("{kind}:{}", base.display());
            {
                let c = open_uri(&location);
                let value = vec![7u8; size];
                for i in 0..KEYS {
                    c.set(&key(i), &value);
                }
            }
            // Room for every key: what a hot set that fits looks like.
            let room = KEYS * (size as u64 + 64);
            let order = zipf_order(KEYS, 0.99, OPS, 23);
            let mut writer = OtherWriter::start(&location, size);
            let mut timed = |uri: &str| {
                let c = open_uri(uri);
                median_ns_per_op(|| {
                    let mut spent = 0.0;
                    let mut gets = 0u64;
                    for batch in order.chunks(100) {
                        let (reads, written) = batch.split_at(batch.len() - 1);
                        let t = Instant::now();
                        for &i in reads {
                            black_box(c.get(&key(i)));
                        }
                        spent += t.elapsed().as_secs_f64();
                        gets += reads.len() as u64;
                        writer.set(written[0]);
                    }
                    (gets, spent)
                })
            };
            let without = timed(&location);
            let with = timed(&format!("{location}?read_cache={room}"));
            print_row(
                &format!("{kind} get {label}, read_cache={}MiB", room >> 20),
                with,
                without,
                "without",
            );
            // The floor: the same gets from the memory kind, which also copies each
            // value into a new caller's buffer (cache_get's contract).
            let memory = CHandle::memory(0);
            let value = vec![7u8; size];
            for i in 0..KEYS {
                memory.set(&key(i), &value);
            }
            let floor = median_ns_per_op(|| {
                let t = Instant::now();
                for &i in &order {
                    black_box(memory.get(&key(i)));
                }
                (order.len() as u64, t.elapsed().as_secs_f64())
            });
            print_row(
                &format!("{kind} get {label}, read_cache vs the memory kind"),
                with,
                floor,
                "memory",
            );
            drop(writer);
            let _ = std::fs::remove_dir_all(&base);
        }
    }
}
