//! Gives the shared library the SONAME distributions expect, `libduckcache.so.MAJOR`, so a
//! program linked against it records the major version only and keeps working across
//! compatible updates (as cargo-c sets it for rustls-ffi, librsvg and rav1e).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets it");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libduckcache.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
