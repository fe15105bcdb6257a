//! Coverage-guided fuzzing of the C ABI: each input is a program of operations (sets,
//! gets, pops, deletes, clears, lengths, and bad calls: NULL pointers, NaN TTLs, calls
//! on a closed handle) run on one of the four backends and on a reference map. Every
//! status and every value read back is checked against the map.

#![no_main]

use duckcache::ffi::{self, cache_buf, cache_status::*, cache_t};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// One open handle per backend for the whole run (opening a store per input would be
/// most of the work); each input starts with a clear.
struct Handles([usize; 4]);

fn handles() -> &'static Mutex<Handles> {
    static HANDLES: OnceLock<Mutex<Handles>> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("duckcache-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut out = [0usize; 4];
        for (i, slot) in out.iter_mut().enumerate() {
            let mut c: *mut cache_t = std::ptr::null_mut();
            let dir = std::ffi::CString::new(base.join(i.to_string()).to_str().unwrap()).unwrap();
            let status = unsafe {
                match i {
                    0 => ffi::cache_open_memory(0, &mut c),
                    1 => ffi::cache_open_file(dir.as_ptr(), 0, &mut c),
                    2 => ffi::cache_open_sharded(dir.as_ptr(), 4096, 2, &mut c),
                    _ => ffi::cache_open_folder(dir.as_ptr(), 0, &mut c),
                }
            };
            assert_eq!(status, CACHE_OK);
            *slot = c as usize;
        }
        Mutex::new(Handles(out))
    })
}

/// Reads the input as a stream of small numbers.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.byte().unwrap_or(0) as usize).min(max).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
}

fn get(c: *mut cache_t, key: &[u8], pop: bool) -> (ffi::cache_status, Option<(Vec<u8>, u32)>) {
    let mut buf = cache_buf {
        data: std::ptr::null_mut(),
        len: 0,
    };
    let mut flags = 0u32;
    let status = unsafe {
        if pop {
            ffi::cache_pop_flagged(c, key.as_ptr(), key.len(), &mut buf, &mut flags)
        } else {
            ffi::cache_get_flagged(c, key.as_ptr(), key.len(), &mut buf, &mut flags)
        }
    };
    let value = (status == CACHE_OK).then(|| {
        let v = if buf.len == 0 {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(buf.data, buf.len) }.to_vec()
        };
        (v, flags)
    });
    unsafe { ffi::cache_buf_free(&mut buf) };
    (status, value)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(which) = input.byte() else { return };
    let guard = handles().lock().unwrap();
    let c = guard.0[which as usize % 4] as *mut cache_t;
    assert_eq!(unsafe { ffi::cache_clear(c) }, CACHE_OK);
    let mut model: HashMap<Vec<u8>, (Vec<u8>, u32)> = HashMap::new();
    // Keys are drawn from a few to make operations meet; the key's bytes come next.
    let key = |input: &mut Input| -> Vec<u8> {
        let k = input.byte().unwrap_or(0) % 6;
        if k == 5 {
            input.bytes(40)
        } else {
            vec![b'k', k]
        }
    };
    for _ in 0..64 {
        let Some(op) = input.byte() else { break };
        match op % 10 {
            0 | 1 => {
                let k = key(&mut input);
                let mut v = input.bytes(200);
                if op & 0x80 != 0 {
                    // Sometimes large: past the file cache's inline limit.
                    v = v.repeat(1 + (40_000 / (v.len() + 1)));
                }
                let flags = u32::from(input.byte().unwrap_or(0));
                let status = unsafe {
                    ffi::cache_set_flagged(c, k.as_ptr(), k.len(), v.as_ptr(), v.len(), -1.0, flags)
                };
                if status == CACHE_OK {
                    model.insert(k, (v, flags));
                } else {
                    // Only the sharded cache may refuse: a value past its 4 KiB shards.
                    assert_eq!(status, CACHE_ERR_TOO_LARGE);
                    assert!(k.len() + v.len() > 4096);
                }
            }
            2 | 3 => {
                let k = key(&mut input);
                let (status, value) = get(c, &k, false);
                let want = model.get(&k).cloned();
                assert_eq!(status, if want.is_some() { CACHE_OK } else { CACHE_NOT_FOUND });
                assert_eq!(value, want);
            }
            4 => {
                let k = key(&mut input);
                let (status, value) = get(c, &k, true);
                let want = model.remove(&k);
                assert_eq!(status, if want.is_some() { CACHE_OK } else { CACHE_NOT_FOUND });
                assert_eq!(value, want);
            }
            5 => {
                let k = key(&mut input);
                assert_eq!(unsafe { ffi::cache_delete(c, k.as_ptr(), k.len()) }, CACHE_OK);
                model.remove(&k);
            }
            6 => {
                let k = key(&mut input);
                let want = if model.contains_key(&k) { CACHE_OK } else { CACHE_NOT_FOUND };
                assert_eq!(unsafe { ffi::cache_has(c, k.as_ptr(), k.len()) }, want);
            }
            7 => {
                let mut n = u64::MAX;
                assert_eq!(unsafe { ffi::cache_len(c, &mut n) }, CACHE_OK);
                assert_eq!(n, model.len() as u64);
            }
            8 => {
                // Bad calls: each must be refused and change nothing.
                let k = key(&mut input);
                let bad = unsafe {
                    [
                        ffi::cache_set(c, std::ptr::null(), 3, b"v".as_ptr(), 1, -1.0),
                        ffi::cache_set(c, k.as_ptr(), k.len(), std::ptr::null(), 9, -1.0),
                        ffi::cache_set(c, k.as_ptr(), k.len(), b"v".as_ptr(), 1, f64::NAN),
                        ffi::cache_get(c, k.as_ptr(), k.len(), std::ptr::null_mut()),
                        ffi::cache_get(std::ptr::null_mut(), k.as_ptr(), k.len(), std::ptr::null_mut()),
                    ]
                };
                assert!(bad.iter().all(|&s| s == CACHE_ERR_INVALID_ARG), "{bad:?}");
            }
            _ => {
                assert_eq!(unsafe { ffi::cache_clear(c) }, CACHE_OK);
                model.clear();
            }
        }
    }
});
