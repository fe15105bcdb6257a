//! The two macros every exported function is written with.
//!
//! [`exported!`] is the whole preamble of a function that returns a status: it names the
//! function (from the code, never a typed string), runs the body inside the panic
//! [`boundary`](super::boundary::boundary), and turns each pointer argument into a
//! checked Rust value the same way everywhere:
//!
//! ```ignore
//! pub unsafe extern "C" fn cache_set(c: *mut cache_t, key: *const u8, key_len: usize, …) -> cache_status {
//!     exported!(handle c, bytes key[key_len], bytes value[value_len] => {
//!         c.backend.set(key, value, Ttl::from_seconds(ttl_seconds)?)?;
//!         Ok(CACHE_OK)
//!     })
//! }
//! ```
//!
//! The argument forms (each rebinding the name to the checked value):
//! - `handle c`: the `&cache_t` behind `c`; NULL is `CACHE_ERR_INVALID_ARG`.
//! - `bytes p[len]`: the `&[u8]` of `len` bytes at `p`; NULL only with `len` 0.
//! - `owned p[len]`: as `bytes`, copied into a `Vec<u8>` (for queued jobs).
//! - `out p`: the `&mut T` at `p`; NULL is refused.
//! - `maybe_out p`: the `Option<&mut T>` at `p`; NULL means the caller does not want it.
//! - `buffer p[cap]`: the `&mut [u8]` of `cap` writable bytes at `p`.
//! - `path p`: the `&Path` of the NUL-terminated string at `p`; NULL and "" are refused.
//! - `array p[n]`: the `&[T]` of `n` items at `p`; NULL only with `n` 0.
//! - `array_out p[n]`: the `&mut [T]` of `n` writable items at `p`; NULL only with `n` 0.
//! - `maybe_array_out p[n]`: as `array_out`, or None when `p` is NULL (not wanted).
//!
//! The signatures stay plain `extern "C"` items, so cbindgen reads them as written.
//! Every `unsafe` these expansions contain relies on the pointer rules the C contract
//! states once for all functions (see the [`ffi`](super) module).

/// The name of the enclosing function, e.g. `cache_set`, from the type name of an item
/// declared inside it (closures around the call are skipped). A [`FunctionName`]: the
/// type name is a constant, and is cut down to the function's name only when a failure
/// is reported, so naming costs a successful call nothing.
macro_rules! function_name {
    () => {{
        fn here() {}
        $crate::ffi::macros::FunctionName(::std::any::type_name_of_val(&here))
    }};
}

/// The body of an exported function returning `cache_status`; see the module docs.
macro_rules! exported {
    ($($form:ident $arg:ident $([$len:ident])?),* => $body:expr) => {
        $crate::ffi::boundary::boundary($crate::ffi::macros::function_name!(), || {
            $(let $arg = $crate::ffi::macros::exported!(@take $form $arg $([$len])?);)*
            $body
        })
    };
    // Each form below relies on the C contract's pointer rules (the `ffi` module's
    // Safety section): a pointer argument is NULL or valid as its documented type and
    // length for the whole call. The `args` helpers check NULL and lengths.
    (@take handle $c:ident) => {{
        // SAFETY: `c` is NULL (refused by `args::handle`) or a live handle.
        unsafe { $crate::ffi::args::handle($c) }?
    }};
    (@take bytes $p:ident [$len:ident]) => {{
        // SAFETY: `p` is NULL or `len` readable bytes for the call.
        unsafe { $crate::ffi::args::bytes($p, $len, stringify!($p)) }?
    }};
    (@take owned $p:ident [$len:ident]) => {{
        // SAFETY: `p` is NULL or `len` readable bytes for the call; copied before return.
        let borrowed = unsafe { $crate::ffi::args::bytes($p, $len, stringify!($p)) }?;
        $crate::error::try_copy(borrowed)?
    }};
    (@take out $p:ident) => {{
        // SAFETY: `p` is NULL (refused) or valid for writes of its type.
        unsafe { $crate::ffi::args::out($p, stringify!($p)) }?
    }};
    (@take maybe_out $p:ident) => {{
        // SAFETY: `p` is NULL (not wanted) or valid for writes of its type.
        unsafe { $p.as_mut() }
    }};
    (@take buffer $p:ident [$cap:ident]) => {{
        // SAFETY: `p` is NULL or `cap` writable bytes for the call.
        unsafe { $crate::ffi::args::buffer($p, $cap, stringify!($p)) }?
    }};
    (@take array $p:ident [$len:ident]) => {{
        // SAFETY: `p` is NULL or `len` readable items for the call.
        unsafe { $crate::ffi::args::array($p, $len, stringify!($p)) }?
    }};
    (@take array_out $p:ident [$len:ident]) => {{
        // SAFETY: `p` is NULL or `len` writable items for the call.
        unsafe { $crate::ffi::args::array_out($p, $len, stringify!($p)) }?
    }};
    (@take maybe_array_out $p:ident [$len:ident]) => {{
        if $p.is_null() {
            None
        } else {
            // SAFETY: `p` is not NULL, so `len` writable items for the call.
            Some(unsafe { $crate::ffi::args::array_out($p, $len, stringify!($p)) }?)
        }
    }};
    (@take path $p:ident) => {{
        // SAFETY: `p` is NULL (refused) or a NUL-terminated string.
        unsafe { $crate::ffi::args::path($p, stringify!($p)) }?
    }};
}

/// The body of an exported function with no status to return (`cache_free`,
/// `cache_buf_free`): a panic is recorded for `cache_last_error`, never unwound into C.
macro_rules! exported_void {
    ($body:block) => {
        $crate::ffi::boundary::boundary_void($crate::ffi::macros::function_name!(), || $body)
    };
}

pub(crate) use {exported, exported_void, function_name};

/// An exported function's name, held as the type path of an item inside it.
#[derive(Clone, Copy)]
pub(crate) struct FunctionName(pub &'static str);

impl FunctionName {
    /// `"duckcache::ffi::ops::cache_set::{{closure}}::here"` → `"cache_set"`.
    pub fn get(self) -> &'static str {
        let path = self.0;
        path.rsplit("::")
            .find(|segment| *segment != "here" && !segment.starts_with('{'))
            .unwrap_or(path)
    }
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_function_name_comes_from_the_code() {
        fn cache_example() -> &'static str {
            let inner = || function_name!().get();
            assert_eq!(inner(), "cache_example");
            function_name!().get()
        }
        assert_eq!(cache_example(), "cache_example");
    }
}
