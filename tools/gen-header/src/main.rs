//! Generates include/duckcache.h from the crate's sources with cbindgen.
//!
//!   cargo run -p gen-header            write the header (only if it changed)
//!   cargo run -p gen-header -- --verify  fail if the committed header is stale

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let verify = std::env::args().any(|a| a == "--verify");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().expect("repository root");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = match cbindgen::Builder::new()
        .with_src(root.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gen-header: cbindgen failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = root.join("include/duckcache.h");
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed == generated {
        println!("gen-header: {} is up to date", path.display());
        return ExitCode::SUCCESS;
    }
    if verify {
        eprintln!(
            "gen-header: {} differs from what cbindgen generates from the sources;\n\
             run `make header` and commit the result",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    std::fs::write(&path, generated).expect("write header");
    println!("gen-header: wrote {}", path.display());
    ExitCode::SUCCESS
}
