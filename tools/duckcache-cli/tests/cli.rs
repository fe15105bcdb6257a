//! The `duckcache` command on every persistent kind (and Redis when make test provides a
//! server): each subcommand, --json parsed, damage planted for check to find and
//! --repair to fix, export/import between kinds, and bad usage.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn duckcache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_duckcache"))
        .args(args)
        .output()
        .expect("the command runs")
}

/// Runs it and returns standard output, checking the exit code.
fn ok(args: &[&str]) -> String {
    let out = duckcache(args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn json(args: &[&str]) -> Value {
    let mut with = args.to_vec();
    with.push("--json");
    serde_json::from_str(&ok(&with)).expect("--json prints JSON")
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("duckcache-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn at(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn every_subcommand(target: &str) {
    ok(&[target, "clear"]);
    ok(&[target, "set", "greeting", "hello"]);
    ok(&[target, "set", "user:1", "ada", "--ttl", "100"]);
    ok(&[target, "set", "gone", "soon", "--ttl", "0.01"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(ok(&[target, "get", "greeting"]), "hello");
    let got = json(&[target, "get", "user:1"]);
    assert_eq!(got["value"], "YWRh"); // base64 of "ada"
    assert!(got["ttl"].as_f64().unwrap() <= 100.0);
    assert_eq!(ok(&[target, "ls", "user:"]), "user:1\n");
    let keys = json(&[target, "ls"]);
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    let stats = json(&[target, "stats"]);
    assert_eq!(stats["entries"], 2, "{stats}");
    assert!(stats["kind"].is_string());
    let purged = json(&[target, "purge-expired"]);
    assert!(purged["removed"].as_u64().unwrap() <= 1);
    assert_eq!(json(&[target, "del", "user:1"])["deleted"], true);
    assert_eq!(ok(&[target, "del", "user:1"]), "not found\n");
    let missing = duckcache(&[target, "get", "user:1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    ok(&[target, "clear"]);
    assert_eq!(json(&[target, "stats"])["entries"], 0);
}

#[test]
fn every_subcommand_on_every_kind() {
    let s = Scratch::new("kinds");
    for uri in [
        format!("file:{}", s.at("file")),
        format!("sharded:{}", s.at("sharded")),
        format!("folder:{}", s.at("folder")),
    ] {
        every_subcommand(&uri);
        ok(&[&uri, "compact"]);
        assert_eq!(ok(&[&uri, "check"]), "no damage found\n");
    }
    // A plain folder finds its kind from what it holds.
    ok(&[&format!("file:{}", s.at("plain")), "set", "k", "v"]);
    assert_eq!(json(&[&s.at("plain"), "stats"])["kind"], "file");
    if let Ok(url) = std::env::var("DUCKCACHE_REDIS_URL") {
        let sep = if url.contains('?') { '&' } else { '?' };
        every_subcommand(&format!("{url}{sep}prefix=cli-{}:", std::process::id()));
    }
}

#[test]
fn export_and_import_between_kinds() {
    let s = Scratch::new("export");
    let file = format!("file:{}", s.at("file"));
    ok(&[&file, "set", "a", "1"]);
    ok(&[&file, "set", "b", "2", "--ttl", "1000"]);
    let dump = s.at("dump.jsonl");
    assert_eq!(ok(&[&file, "export", "-o", &dump]), "exported 2 entries\n");
    let folder = format!("folder:{}", s.at("folder"));
    assert_eq!(json(&[&folder, "import", &dump])["imported"], 2);
    assert_eq!(ok(&[&folder, "get", "a"]), "1");
    let b = json(&[&folder, "get", "b"]);
    let left = b["ttl"].as_f64().unwrap();
    assert!(
        left > 990.0 && left <= 1000.0,
        "the remaining TTL travels: {left}"
    );
    // Binary keys, values and flags round-trip: folder -> sharded -> compare.
    let raw = "{\"duckcache_export\":1}\n{\"key\":\"AP8=\",\"value\":\"AAEC\",\"flags\":7,\"ttl\":null}\n";
    let raw_path = s.at("raw.jsonl");
    std::fs::write(&raw_path, raw).unwrap();
    ok(&[&folder, "import", &raw_path]);
    let sharded = format!("sharded:{}", s.at("sharded"));
    let again = s.at("again.jsonl");
    ok(&[&folder, "export", "-o", &again]);
    ok(&[&sharded, "import", &again]);
    let text = ok(&[&sharded, "export"]);
    assert!(
        text.contains("\"key\":\"AP8=\"") && text.contains("\"flags\":7"),
        "{text}"
    );
    // Not an export: refused, naming the line.
    std::fs::write(s.at("bad.jsonl"), "{\"duckcache_export\":1}\nnot json\n").unwrap();
    let bad = duckcache(&[&folder, "import", &s.at("bad.jsonl")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 2"));
}

fn value_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("values"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn check_finds_planted_damage_and_repair_fixes_it() {
    let s = Scratch::new("check");
    let big = "x".repeat(40_000); // a value in a file of its own
                                  // File kind: a value file removed, and a file no entry names.
    let file = format!("file:{}", s.at("file"));
    ok(&[&file, "set", "big", &big]);
    ok(&[&file, "set", "small", "v"]);
    for f in value_files(&s.0.join("file")) {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::write(s.0.join("file/values/stray.val"), b"junk").unwrap();
    let found = duckcache(&[&file, "check"]);
    assert_eq!(found.status.code(), Some(1));
    let report = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        report.contains("key big") && report.contains("missing"),
        "{report}"
    );
    assert!(report.contains("stray.val"), "{report}");
    let repaired = json(&[&file, "check", "--repair"]);
    assert_eq!(
        repaired["problems"].as_array().unwrap().len(),
        2,
        "{repaired}"
    );
    assert_eq!(ok(&[&file, "check"]), "no damage found\n");
    assert_eq!(ok(&[&file, "get", "small"]), "v");
    // Sharded kind: the same damage inside a shard.
    let sharded = format!("sharded:{}", s.at("sharded"));
    ok(&[&sharded, "set", "big", &big]);
    let shard = s.0.join("sharded/shard-000001");
    for f in value_files(&shard) {
        std::fs::remove_file(f).unwrap();
    }
    let found = duckcache(&[&sharded, "check"]);
    assert_eq!(found.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&found.stdout).contains("shard-000001"));
    ok(&[&sharded, "check", "--repair"]);
    assert_eq!(ok(&[&sharded, "check"]), "no damage found\n");
    // ... and an index placing a key in a shard that lacks it.
    ok(&[&sharded, "set", "placed", "v"]);
    let db = rusqlite::Connection::open(shard.join("cache.db")).unwrap();
    db.execute("DELETE FROM entries WHERE key = CAST('placed' AS BLOB)", [])
        .unwrap();
    drop(db);
    let found = duckcache(&[&sharded, "check"]);
    assert_eq!(found.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&found.stdout).contains("key placed: the index places it"));
    ok(&[&sharded, "check", "--repair"]);
    assert_eq!(ok(&[&sharded, "check"]), "no damage found\n");
    assert_eq!(json(&[&sharded, "stats"])["entries"], 0);
    // Folder kind: damaged metadata, and a name that is no entry (left alone).
    let folder = format!("folder:{}", s.at("folder"));
    ok(&[&folder, "set", "k", "v"]);
    ok(&[&folder, "set", "j", "w"]);
    std::fs::write(s.0.join("folder/k/meta"), b"garbage").unwrap();
    std::fs::write(s.0.join("folder/notes.txt"), b"mine").unwrap();
    let found = duckcache(&[&folder, "check"]);
    assert_eq!(found.status.code(), Some(1));
    let report = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        report.contains("k: ") && report.contains("notes.txt"),
        "{report}"
    );
    ok(&[&folder, "check", "--repair"]);
    assert!(!s.0.join("folder/k").exists());
    assert!(s.0.join("folder/notes.txt").exists());
    assert_eq!(ok(&[&folder, "get", "j"]), "w");
}

#[test]
fn bad_usage_is_exit_code_2_and_failures_1() {
    let s = Scratch::new("usage");
    for args in [
        vec![],
        vec!["file:/tmp/x"],
        vec!["file:/tmp/x", "frob"],
        vec!["file:/tmp/x", "set", "k"],
    ] {
        let out = duckcache(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = duckcache(&[&s.at("no-such-folder"), "stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such cache folder"));
    // A URI the library refuses is bad usage too.
    let out = duckcache(&["file:/tmp/x?colour=red", "stats"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    let out = duckcache(&[
        &format!("file:{}", s.at("f")),
        "set",
        "k",
        "v",
        "--ttl",
        "NaN",
    ]);
    assert_eq!(out.status.code(), Some(1));
    for sub in ["stats", "ls", "get", "check", "export", "import"] {
        assert!(ok(&["x", sub, "--help"]).contains("Usage"), "{sub}");
    }
}

#[test]
fn a_folder_that_is_not_a_store_is_refused_and_its_files_kept() {
    let s = Scratch::new("not-a-store");
    let user = s.0.join("user");
    std::fs::create_dir_all(user.join("photos")).unwrap();
    std::fs::write(user.join("photos/img.jpg"), "a").unwrap();
    std::fs::write(user.join("notes.txt"), "n").unwrap();
    let target = s.at("user");
    for sub in [vec!["clear"], vec!["check", "--repair"], vec!["stats"]] {
        let mut args = vec![target.as_str()];
        args.extend(sub.iter().copied());
        let out = duckcache(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a duckcache store"));
    }
    assert!(user.join("photos/img.jpg").exists() && user.join("notes.txt").exists());

    // Another kind's store named as a folder cache: refused, its database kept.
    let file = format!("file:{}", s.at("filestore"));
    ok(&[&file, "set", "k", "v"]);
    let out = duckcache(&[&format!("folder:{}", s.at("filestore")), "clear"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds a file cache"));
    assert_eq!(ok(&[&file, "get", "k"]), "v");

    // Named explicitly as a folder cache, the folder becomes one; clear and repair
    // touch entries only: a user's file, a folder of files, a folder holding a file
    // named `value` all stay.
    std::fs::create_dir_all(user.join("mine")).unwrap();
    std::fs::write(user.join("mine/value"), "not an entry").unwrap();
    let folder = format!("folder:{target}");
    ok(&[&folder, "set", "entry", "1"]);
    ok(&[&folder, "check", "--repair"]);
    ok(&[&folder, "clear"]);
    assert!(duckcache(&[&folder, "get", "entry"]).status.code() == Some(1));
    assert!(user.join("photos/img.jpg").exists() && user.join("notes.txt").exists());
    assert!(user.join("mine/value").exists());
    // Marked now: the plain path finds it.
    assert_eq!(json(&[&target, "stats"])["kind"], "folder");
}

#[test]
fn import_refuses_bad_flags_and_leaves_expired_entries_out() {
    let s = Scratch::new("import-strict");
    let target = format!("file:{}", s.at("store"));
    for (flags, shown) in [
        ("4294967301", "4294967301"),
        ("-1", "-1"),
        ("\"7\"", "\"7\""),
        ("1.5", "1.5"),
    ] {
        let path = s.at("bad.jsonl");
        std::fs::write(
            &path,
            format!("{{\"duckcache_export\":1}}\n{{\"key\":\"aw==\",\"value\":\"dg==\",\"flags\":{flags},\"ttl\":null}}\n"),
        )
        .unwrap();
        let out = duckcache(&[&target, "import", &path]);
        assert_eq!(out.status.code(), Some(1), "flags {flags}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("line 2") && err.contains(shown), "{err}");
    }
    assert_eq!(
        duckcache(&[&target, "get", "k"]).status.code(),
        Some(1),
        "nothing stored"
    );
    let path = s.at("expired.jsonl");
    std::fs::write(
        &path,
        "{\"duckcache_export\":1}\n\
         {\"key\":\"Z29uZQ==\",\"value\":\"dg==\",\"flags\":0,\"ttl\":-3.5}\n\
         {\"key\":\"a2VwdA==\",\"value\":\"dg==\",\"ttl\":100}\n",
    )
    .unwrap();
    assert_eq!(json(&[&target, "import", &path])["imported"], 1);
    assert_eq!(
        duckcache(&[&target, "get", "gone"]).status.code(),
        Some(1),
        "expired stays out"
    );
    assert_eq!(ok(&[&target, "get", "kept"]), "v");
}
