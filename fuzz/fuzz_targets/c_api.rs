//! Coverage-guided fuzzing of the C ABI: each input is a program of operations (sets,
//! gets, pops, deletes, clears, lengths, the version 2 calls: add, incr, touch, ttl,
//! get_many, set_many, delete_many, keys, delete_prefix, purge_expired; and bad calls:
//! NULL pointers, NaN TTLs) run on one of the four backends and on a reference map.
//! Every status and every value read back is checked against the map.

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
        match op % 20 {
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
            9 => {
                assert_eq!(unsafe { ffi::cache_clear(c) }, CACHE_OK);
                model.clear();
            }
            10 => {
                let k = key(&mut input);
                let v = input.bytes(100);
                let flags = u32::from(input.byte().unwrap_or(0));
                let status = unsafe {
                    ffi::cache_add_flagged(c, k.as_ptr(), k.len(), v.as_ptr(), v.len(), -1.0, flags)
                };
                if model.contains_key(&k) {
                    assert_eq!(status, CACHE_EXISTS);
                } else if status == CACHE_OK {
                    model.insert(k, (v, flags));
                } else {
                    assert_eq!(status, CACHE_ERR_TOO_LARGE);
                }
            }
            11 => {
                let k = key(&mut input);
                let delta = i64::from(input.byte().unwrap_or(0) as i8) * if op & 0x80 != 0 { i64::MAX / 128 } else { 1 };
                let mut out = 0i64;
                let status = unsafe { ffi::cache_incr(c, k.as_ptr(), k.len(), delta, -1.0, &mut out) };
                let base = match model.get(&k) {
                    None => Some(0),
                    Some((v, _)) => std::str::from_utf8(v).ok().filter(|s| !s.starts_with('+')).and_then(|s| s.parse::<i64>().ok()),
                };
                match base.and_then(|b| b.checked_add(delta)) {
                    Some(sum) => {
                        assert_eq!((status, out), (CACHE_OK, sum));
                        model.insert(k, (sum.to_string().into_bytes(), 0));
                    }
                    None => assert_eq!(status, CACHE_ERR_NOT_NUMERIC),
                }
            }
            12 => {
                let k = key(&mut input);
                let want = if model.contains_key(&k) { CACHE_OK } else { CACHE_NOT_FOUND };
                assert_eq!(unsafe { ffi::cache_touch(c, k.as_ptr(), k.len(), -1.0) }, want);
                let mut left = 0.0;
                assert_eq!(unsafe { ffi::cache_ttl(c, k.as_ptr(), k.len(), &mut left) }, want);
                if want == CACHE_OK {
                    assert_eq!(left, ffi::CACHE_NO_TTL);
                }
            }
            13 => {
                let n = input.byte().unwrap_or(0) as usize % 6;
                let keys: Vec<Vec<u8>> = (0..n).map(|_| key(&mut input)).collect();
                let slices: Vec<ffi::cache_slice> = keys.iter().map(|k| ffi::cache_slice { data: k.as_ptr(), len: k.len() }).collect();
                let mut values: Vec<cache_buf> = (0..n).map(|_| cache_buf { data: std::ptr::null_mut(), len: 0 }).collect();
                let mut statuses = vec![CACHE_ERR_INTERNAL; n];
                let mut flags = vec![0u32; n];
                let status = unsafe {
                    ffi::cache_get_many(c, slices.as_ptr(), n, values.as_mut_ptr(), statuses.as_mut_ptr(), flags.as_mut_ptr())
                };
                assert_eq!(status, CACHE_OK);
                for i in 0..n {
                    let got = (statuses[i] == CACHE_OK).then(|| {
                        let v = if values[i].len == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(values[i].data, values[i].len) }.to_vec() };
                        (v, flags[i])
                    });
                    unsafe { ffi::cache_buf_free(&mut values[i]) };
                    assert_eq!(got, model.get(&keys[i]).cloned());
                }
            }
            14 => {
                let n = input.byte().unwrap_or(0) as usize % 6;
                let items: Vec<(Vec<u8>, Vec<u8>, u32)> =
                    (0..n).map(|_| (key(&mut input), input.bytes(100), u32::from(input.byte().unwrap_or(0)))).collect();
                let entries: Vec<ffi::cache_entry> = items
                    .iter()
                    .map(|(k, v, f)| ffi::cache_entry {
                        key: ffi::cache_slice { data: k.as_ptr(), len: k.len() },
                        value: ffi::cache_slice { data: v.as_ptr(), len: v.len() },
                        ttl_seconds: -1.0,
                        flags: *f,
                    })
                    .collect();
                let status = unsafe { ffi::cache_set_many(c, entries.as_ptr(), n) };
                if status == CACHE_OK {
                    for (k, v, f) in items {
                        model.insert(k, (v, f));
                    }
                } else {
                    assert_eq!(status, CACHE_ERR_TOO_LARGE); // and then nothing changed
                }
            }
            15 => {
                let n = input.byte().unwrap_or(0) as usize % 6;
                let keys: Vec<Vec<u8>> = (0..n).map(|_| key(&mut input)).collect();
                let slices: Vec<ffi::cache_slice> = keys.iter().map(|k| ffi::cache_slice { data: k.as_ptr(), len: k.len() }).collect();
                let mut deleted = u64::MAX;
                assert_eq!(unsafe { ffi::cache_delete_many(c, slices.as_ptr(), n, &mut deleted) }, CACHE_OK);
                let want = keys.iter().filter(|k| model.remove(*k).is_some()).count();
                assert_eq!(deleted, want as u64);
            }
            16 | 17 => {
                let prefix = input.bytes(3);
                let mut want: Vec<Vec<u8>> = model.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
                want.sort();
                if op % 20 == 16 {
                    unsafe extern "C" fn collect(user: *mut std::ffi::c_void, key: *const u8, len: usize) -> std::ffi::c_int {
                        let seen = unsafe { &mut *(user as *mut Vec<Vec<u8>>) };
                        seen.push(if len == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(key, len) }.to_vec() });
                        0
                    }
                    let mut seen: Vec<Vec<u8>> = Vec::new();
                    let status = unsafe {
                        ffi::cache_keys(c, prefix.as_ptr(), prefix.len(), Some(collect), &mut seen as *mut _ as *mut std::ffi::c_void)
                    };
                    assert_eq!(status, CACHE_OK);
                    seen.sort();
                    assert_eq!(seen, want);
                } else {
                    let mut deleted = u64::MAX;
                    assert_eq!(unsafe { ffi::cache_delete_prefix(c, prefix.as_ptr(), prefix.len(), &mut deleted) }, CACHE_OK);
                    assert_eq!(deleted, want.len() as u64);
                    model.retain(|k, _| !k.starts_with(&prefix));
                }
            }
            _ => {
                let mut removed = u64::MAX;
                assert_eq!(unsafe { ffi::cache_purge_expired(c, &mut removed) }, CACHE_OK);
                assert_eq!(removed, 0);
            }
        }
    }
});
