//! The cache-speedtest binary: its JSON covers every backend and operation, bad
//! arguments are refused with a reason, and it leaves nothing behind in --dir.

mod common;

use common::TempDir;
use std::process::Command;

fn speedtest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cache-speedtest"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_covers_every_backend_and_operation() {
    let dir = TempDir::new("speedtest");
    let dir_arg = dir.path().to_str().unwrap();
    let out = speedtest(&[
        "--ops",
        "200",
        "--value-size",
        "100",
        "--threads",
        "2",
        "--dir",
        dir_arg,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(
        json.starts_with("{\"ops\":200,\"value_size\":100,\"threads\":2,"),
        "{json}"
    );
    for backend in ["memory", "file", "sharded", "folder"] {
        assert!(
            json.contains(&format!("\"{backend}\":{{\"open\":")),
            "{backend}: {json}"
        );
    }
    for op in [
        "open", "set", "get hit", "get miss", "delete", "pop", "clear",
    ] {
        assert_eq!(
            json.matches(&format!("\"{op}\":{{\"median_ns\":")).count(),
            4,
            "{op}"
        );
        assert!(
            json.contains(&format!("\"{op}\":\"")),
            "fastest for {op}: {json}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch removed"
    );
}

#[test]
fn tables_for_a_chosen_backend() {
    let out = speedtest(&["--ops", "50", "--backends", "memory,file"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("summary: median latency per operation"),
        "{text}"
    );
    assert!(
        text.contains("fastest") && !text.contains("folder"),
        "{text}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, reason) in [
        (&["--ops", "0"][..], "--ops must be"),
        (&["--ops", "x"], "--ops must be"),
        (&["--backends", "memory,nope"], "unknown backend"),
        (&["--threads", "5", "--ops", "2"], "more than --ops"),
        (&["--value-size"], "needs a value"),
        (&["--bogus"], "unknown argument"),
    ] {
        let out = speedtest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(reason) && err.contains("usage:"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn an_unusable_dir_is_an_error_not_a_crash() {
    let dir = TempDir::new("speedtest-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = speedtest(&["--ops", "10", "--dir", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot create"));
}
