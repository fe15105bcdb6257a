//! Checks for the pointer arguments of exported functions. Each returns a `Failure`
//! naming the argument, so every function reports a NULL the same way.

use super::boundary::Failure;
use super::handle::cache_t;

/// The handle behind `c`.
///
/// # Safety
/// `c` must be NULL or a handle from an open function that has not been freed.
pub(crate) unsafe fn handle<'a>(c: *const cache_t) -> Result<&'a cache_t, Failure> {
    // SAFETY: the caller guarantees a non-NULL `c` is a live handle.
    match unsafe { c.as_ref() } {
        Some(c) => Ok(c),
        None => Err(null("the cache handle")),
    }
}

/// The failure for a refused argument, built out of line so a check's passing path
/// stays a compare and a branch: a memory get is a few hundred instructions, and every
/// one between its cache misses and the next get's counts (see `memory::read_live`).
#[cold]
#[inline(never)]
fn refused(message: String) -> Failure {
    Failure::invalid_arg(message)
}

/// As [`refused`], for a NULL `name`.
#[cold]
#[inline(never)]
fn null(name: &str) -> Failure {
    refused(format!("{name} is NULL"))
}

/// As [`refused`], for a length no object can have.
#[cold]
#[inline(never)]
fn impossibly_large(name: &str, len: usize) -> Failure {
    refused(format!("{name}_len {len} is impossibly large"))
}

/// As [`refused`], for a NULL `name` given with a non-zero `name_len`.
#[cold]
#[inline(never)]
fn null_bytes(name: &str, len: usize) -> Failure {
    refused(format!("{name} is NULL but {name}_len is {len}"))
}

/// As [`refused`], for a NULL pointer given with a non-zero length.
#[cold]
#[inline(never)]
fn null_with_length(name: &str, length_name: &str, len: usize) -> Failure {
    refused(format!("{name} is NULL but {length_name} is {len}"))
}

/// The `len` bytes at `ptr`; NULL is allowed only when `len` is 0.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable bytes that outlive `'a`.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null_bytes(name, len));
    }
    if len > isize::MAX as usize {
        return Err(impossibly_large(name, len));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The out-parameter at `ptr`, which must not be NULL.
///
/// # Safety
/// A non-NULL `ptr` must be valid for writes of a `T`.
pub(crate) unsafe fn out<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller guarantees a non-NULL `ptr` is writable.
    match unsafe { ptr.as_mut() } {
        Some(out) => Ok(out),
        None => Err(null(name)),
    }
}

/// A writable buffer of `cap` bytes at `ptr`; NULL is allowed only when `cap` is 0.
///
/// # Safety
/// A non-NULL `ptr` must be valid for writes of `cap` bytes.
pub(crate) unsafe fn buffer<'a>(
    ptr: *mut u8,
    cap: usize,
    name: &str,
) -> Result<&'a mut [u8], Failure> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(null_with_length(name, "cap", cap));
    }
    // SAFETY: non-NULL, and the caller guarantees `cap` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, cap) })
}

/// The NUL-terminated path at `ptr`; NULL and "" are rejected.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string.
pub(crate) unsafe fn path<'a>(
    ptr: *const std::ffi::c_char,
    name: &str,
) -> Result<&'a std::path::Path, Failure> {
    use std::os::unix::ffi::OsStrExt;
    if ptr.is_null() {
        return Err(Failure::invalid_arg(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
    let bytes = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_bytes();
    if bytes.is_empty() {
        return Err(Failure::invalid_arg(format!("{name} is an empty path")));
    }
    Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// The array of `n` items at `ptr`; NULL is allowed only when `n` is 0.
///
/// # Safety
/// A non-NULL `ptr` must point to `n` initialised items that outlive `'a`.
pub(crate) unsafe fn array<'a, T>(ptr: *const T, n: usize, name: &str) -> Result<&'a [T], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null_with_length(name, "n", n));
    }
    // SAFETY: non-NULL, and the caller guarantees `n` items.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// The writable array of `n` items at `ptr`; NULL is allowed only when `n` is 0.
///
/// # Safety
/// A non-NULL `ptr` must be valid for writes of `n` items for `'a`.
pub(crate) unsafe fn array_out<'a, T>(
    ptr: *mut T,
    n: usize,
    name: &str,
) -> Result<&'a mut [T], Failure> {
    if n == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(null_with_length(name, "n", n));
    }
    // SAFETY: non-NULL, and the caller guarantees `n` writable items. The items may be
    // uninitialised: they are only written through `std::ptr::write`-like assignment
    // of plain-old-data types (no drop of the old value matters).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, n) })
}
