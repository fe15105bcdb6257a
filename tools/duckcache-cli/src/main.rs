//! `duckcache`: look into and operate a cache from the shell.
//!
//! The target is any `cache_open` URI (`file:/var/cache/app`, `sharded:…`, `folder:…`,
//! `redis://…`) or a plain folder, whose kind is found from what it holds (`cache.db`: a
//! file cache; `index.db`: a sharded cache; `.duckcache-folder`: a folder cache; anything
//! else is refused, so a folder of someone's files is never taken for a cache and
//! cleared). Tables for people,
//! `--json` for scripts; exit codes: 0 done, 1 the operation failed or found damage, 2 bad
//! usage.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{CommandFactory, Parser, Subcommand};
use duckcache::backend::{EntryRef, Remaining};
use duckcache::uri::{open_kind, Opened};
use duckcache::{Backend, Ttl};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "duckcache",
    version,
    about = "Look into and operate a duckcache cache",
    override_usage = "duckcache [OPTIONS] TARGET COMMAND\n       duckcache --completions SHELL"
)]
struct Cli {
    /// A cache URI (file:DIR, sharded:DIR, folder:DIR, redis://…) or a cache folder.
    #[arg(required_unless_present = "completions")]
    target: Option<String>,
    /// Prints the completion script for SHELL (bash, zsh, fish, elvish, powershell) and
    /// exits; `make install` installs the bash and zsh ones.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    completions: Option<clap_complete::Shell>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Entries, bytes, expired entries, shards, value files, size on disk.
    Stats,
    /// The live keys (starting with PREFIX).
    Ls { prefix: Option<String> },
    /// Writes the value of KEY to standard output.
    Get { key: String },
    /// Stores VALUE under KEY.
    Set {
        key: String,
        value: String,
        /// Seconds until it expires (default: never).
        #[arg(long)]
        ttl: Option<f64>,
    },
    /// Removes KEY.
    Del { key: String },
    /// Removes every expired entry now.
    PurgeExpired,
    /// Removes every entry.
    Clear,
    /// Checks the store for damage (SQLite integrity, value files, the shard index,
    /// entry folders); --repair fixes what can be fixed and says what it dropped.
    Check {
        #[arg(long)]
        repair: bool,
    },
    /// Reclaims free space (SQLite VACUUM).
    Compact,
    /// Writes every live entry as JSON lines (keys, values, flags, remaining TTLs).
    Export {
        /// The file to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Reads entries written by export (from FILE, or "-" for standard input).
    Import { file: PathBuf },
}

/// A failure: its message, and exit code 1.
struct Failed(String);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed(e.to_string())
    }
}

/// A target that is not a store of the kind asked: said, and exit code 2 (bad usage).
struct NotAStore(String);

/// Why `run` stopped.
enum Stop {
    Failed(Failed),
    NotAStore(NotAStore),
}

impl From<Failed> for Stop {
    fn from(f: Failed) -> Self {
        Stop::Failed(f)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "duckcache", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let (Some(target), Some(command)) = (&cli.target, &cli.command) else {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is needed after the target (see --help)",
            )
            .exit()
    };
    let opened = match open_target(target) {
        Ok(opened) => opened,
        Err(Stop::NotAStore(NotAStore(message))) => {
            eprintln!("duckcache: {message}");
            return ExitCode::from(2);
        }
        Err(Stop::Failed(Failed(message))) => {
            eprintln!("duckcache: {message}");
            return ExitCode::from(1);
        }
    };
    match run(command, cli.json, opened) {
        Ok(code) => code,
        Err(Failed(message)) => {
            eprintln!("duckcache: {message}");
            ExitCode::from(1)
        }
    }
}

/// Opens the target: a URI as cache_open reads it, or a folder by what it holds.
fn open_target(target: &str) -> Result<Opened, Stop> {
    let scheme = target.split_once(':').map(|(s, _)| s);
    let uri = match scheme {
        Some("memory" | "file" | "sharded" | "folder" | "redis" | "rediss" | "redis+unix") => {
            target.to_owned()
        }
        _ => {
            let dir = Path::new(target);
            if !dir.is_dir() {
                return Err(Failed(format!(
                    "{target}: no such cache folder (give a folder or a URI such as file:/var/cache/app)"
                ))
                .into());
            }
            let kind = if dir.join("cache.db").is_file() {
                "file"
            } else if dir.join("index.db").is_file() {
                "sharded"
            } else if dir.join(duckcache::folder::STORE_MARK).is_file() {
                "folder"
            } else {
                return Err(Stop::NotAStore(NotAStore(format!(
                    "{target} is not a duckcache store (it has no cache.db, index.db or {}); \
                     to use it as one, name the kind: folder:{target}, file:{target} or sharded:{target}",
                    duckcache::folder::STORE_MARK
                ))));
            };
            let path = dir
                .to_str()
                .ok_or_else(|| Failed(format!("{target}: not a UTF-8 path")))?;
            let escaped = path.replace('%', "%25").replace('?', "%3F");
            format!("{kind}:{escaped}")
        }
    };
    open_kind(&uri).map_err(|e| match e.kind() {
        // Refused by the store itself: another kind's directory, a bad URI.
        duckcache::ErrorKind::InvalidArg => Stop::NotAStore(NotAStore(e.to_string())),
        _ => Stop::Failed(e.into()),
    })
}

fn kind_name(opened: &Opened) -> &'static str {
    match opened {
        Opened::File(_) => "file",
        Opened::Sharded(_) => "sharded",
        Opened::Folder(_) => "folder",
        Opened::Other(_) => "memory or redis",
    }
}

/// A key as text: UTF-8 as it is, other bytes as \xNN.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect(),
    }
}

/// A progress bar on standard error, shown only when standard output is a terminal.
fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Bytes in the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn count_files(dir: &Path, filter: impl Fn(&str) -> bool) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_str().is_some_and(&filter))
            .count() as u64
    })
}

fn run(command: &Command, json: bool, opened: Opened) -> Result<ExitCode, Failed> {
    let cache = opened.backend();
    let out = &mut std::io::stdout().lock();
    match command {
        Command::Stats => {
            let stats = cache.stats()?;
            let mut report = json!({
                "kind": kind_name(&opened),
                "entries": stats.entries,
                "bytes": stats.bytes,
            });
            let dir = match &opened {
                Opened::File(c) => {
                    report["expired"] = c.expired_entries()?.into();
                    report["value_files"] =
                        count_files(&c.dir().join("values"), |n| n.ends_with(".val")).into();
                    Some(c.dir().to_owned())
                }
                Opened::Sharded(c) => {
                    report["expired"] = c.expired_entries()?.into();
                    report["shards"] = c.shard_count()?.into();
                    Some(c.dir().to_owned())
                }
                Opened::Folder(c) => {
                    report["expired"] = c.expired_entries()?.into();
                    Some(c.dir().to_owned())
                }
                Opened::Other(_) => None,
            };
            if let Some(dir) = dir {
                report["disk_bytes"] = disk_bytes(&dir).into();
            }
            if json {
                writeln!(out, "{report}")?;
            } else if let Value::Object(fields) = &report {
                for (name, value) in fields {
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    writeln!(out, "{name:<12} {value}")?;
                }
            }
        }
        Command::Ls { prefix } => {
            let prefix = prefix.as_deref().unwrap_or("").as_bytes();
            let bar = progress(None, "keys");
            let mut keys = Vec::new();
            let mut failed = None;
            cache.keys(prefix, &mut |k| {
                bar.inc(1);
                if json {
                    keys.push(Value::String(show(k)));
                } else if let Err(e) = writeln!(out, "{}", show(k)) {
                    failed = Some(e);
                    return false;
                }
                true
            })?;
            bar.finish_and_clear();
            if let Some(e) = failed {
                return Err(e.into());
            }
            if json {
                writeln!(out, "{}", Value::Array(keys))?;
            }
        }
        Command::Get { key } => {
            let mut value = None;
            cache.get_flagged(key.as_bytes(), &mut |v, f| value = Some((v.to_vec(), f)))?;
            let Some((value, flags)) = value else {
                return Err(Failed(format!("{key}: not found")));
            };
            if json {
                let ttl = match cache.ttl(key.as_bytes())? {
                    Some(Remaining::Seconds(s)) => json!(s),
                    _ => Value::Null,
                };
                writeln!(
                    out,
                    "{}",
                    json!({"key": key, "value": B64.encode(&value), "flags": flags, "ttl": ttl})
                )?;
            } else {
                out.write_all(&value)?;
            }
        }
        Command::Set { key, value, ttl } => {
            let ttl = match ttl {
                None => Ttl::Never,
                Some(s) => Ttl::from_seconds(*s)?,
            };
            cache.set(key.as_bytes(), value.as_bytes(), ttl)?;
            if json {
                writeln!(out, "{}", json!({"stored": true}))?;
            }
        }
        Command::Del { key } => {
            let deleted = cache.delete_counted(key.as_bytes())?;
            if json {
                writeln!(out, "{}", json!({"deleted": deleted}))?;
            } else {
                writeln!(out, "{}", if deleted { "deleted" } else { "not found" })?;
            }
        }
        Command::PurgeExpired => {
            let removed = cache.purge_expired()?;
            if json {
                writeln!(out, "{}", json!({"removed": removed}))?;
            } else {
                writeln!(out, "removed {removed} expired entries")?;
            }
        }
        Command::Clear => {
            cache.clear()?;
            if json {
                writeln!(out, "{}", json!({"cleared": true}))?;
            }
        }
        Command::Check { repair } => {
            let found = match &opened {
                Opened::File(c) => c.check(*repair)?,
                Opened::Sharded(c) => c.check(*repair)?,
                Opened::Folder(c) => c.check(*repair)?,
                Opened::Other(_) => {
                    return Err(Failed(
                        "check is for the file, sharded and folder kinds".into(),
                    ))
                }
            };
            if json {
                writeln!(out, "{}", json!({"problems": found, "repaired": repair}))?;
            } else if found.is_empty() {
                writeln!(out, "no damage found")?;
            } else {
                for line in &found {
                    writeln!(out, "{line}")?;
                }
            }
            if !found.is_empty() && !repair {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Compact => {
            match &opened {
                Opened::File(c) => c.compact()?,
                Opened::Sharded(c) => c.compact()?,
                Opened::Folder(_) | Opened::Other(_) => {}
            }
            if json {
                writeln!(out, "{}", json!({"compacted": true}))?;
            }
        }
        Command::Export { output } => {
            let mut sink: Box<dyn Write> = match output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let count = export(cache, &mut sink)?;
            sink.flush()?;
            if output.is_some() {
                if json {
                    writeln!(out, "{}", json!({"exported": count}))?;
                } else {
                    writeln!(out, "exported {count} entries")?;
                }
            }
        }
        Command::Import { file } => {
            let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(std::fs::File::open(file)?))
            };
            let count = import(cache, reader)?;
            if json {
                writeln!(out, "{}", json!({"imported": count}))?;
            } else {
                writeln!(out, "imported {count} entries")?;
            }
        }
    }
    cache.close()?;
    Ok(ExitCode::SUCCESS)
}

/// The export format, version 1: a first line `{"duckcache_export": 1}`, then one JSON
/// object per entry: `key` and `value` in base64, `flags`, and `ttl`, the seconds it had
/// left (null: never expires). Entries that expire during the export are left out.
fn export(cache: &dyn Backend, sink: &mut dyn Write) -> Result<u64, Failed> {
    writeln!(sink, "{}", json!({"duckcache_export": 1}))?;
    let bar = progress(cache.len().ok(), "exporting");
    let mut count = 0;
    let mut failed: Option<Failed> = None;
    cache.keys(b"", &mut |key| {
        let mut found = None;
        let step = (|| -> Result<(), Failed> {
            let left = cache.get_flagged_ttl(key, &mut |v, f| found = Some((v.to_vec(), f)))?;
            if let (Some((value, flags)), Some(left)) = (found.take(), left) {
                let ttl = match left {
                    Remaining::Forever => Value::Null,
                    Remaining::Seconds(s) => json!(s),
                };
                let line = json!({"key": B64.encode(key), "value": B64.encode(&value), "flags": flags, "ttl": ttl});
                writeln!(sink, "{line}")?;
                count += 1;
            }
            Ok(())
        })();
        bar.inc(1);
        match step {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    bar.finish_and_clear();
    match failed {
        Some(e) => Err(e),
        None => Ok(count),
    }
}

/// Reads an export and stores it, 1000 entries per set_many (one transaction each on the
/// persistent kinds). A line that is not an entry of this format stops the import,
/// naming the line.
fn import(cache: &dyn Backend, reader: Box<dyn BufRead>) -> Result<u64, Failed> {
    let mut lines = reader.lines();
    let header: Value = serde_json::from_str(
        &lines
            .next()
            .ok_or_else(|| Failed("the file is empty".into()))??,
    )
    .map_err(|e| Failed(format!("line 1: not a duckcache export: {e}")))?;
    if header.get("duckcache_export") != Some(&json!(1)) {
        return Err(Failed("line 1: not a duckcache export (version 1)".into()));
    }
    let bar = progress(None, "importing");
    let mut batch: Vec<(Vec<u8>, Vec<u8>, Ttl, u32)> = Vec::new();
    let mut count = 0;
    let flush = |batch: &mut Vec<(Vec<u8>, Vec<u8>, Ttl, u32)>| -> Result<(), Failed> {
        let entries: Vec<EntryRef> = batch
            .iter()
            .map(|(k, v, ttl, flags)| EntryRef {
                key: k,
                value: v,
                ttl: *ttl,
                flags: *flags,
            })
            .collect();
        cache.set_many(&entries)?;
        batch.clear();
        Ok(())
    };
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = n + 2;
        let entry: Value =
            serde_json::from_str(&line).map_err(|e| Failed(format!("line {at}: {e}")))?;
        let bytes = |field: &str| -> Result<Vec<u8>, Failed> {
            let text = entry[field]
                .as_str()
                .ok_or_else(|| Failed(format!("line {at}: no {field}")))?;
            B64.decode(text)
                .map_err(|e| Failed(format!("line {at}: {field}: {e}")))
        };
        // Absent: 0. Anything but a whole number from 0 to 2^32-1 stops the import (it
        // was read as 0 before: a value's meaning silently changed).
        let flags = match &entry["flags"] {
            Value::Null => 0,
            f => f
                .as_u64()
                .and_then(|f| u32::try_from(f).ok())
                .ok_or_else(|| {
                    Failed(format!(
                        "line {at}: flags must be a whole number from 0 to 4294967295, not {f}"
                    ))
                })?,
        };
        // The seconds the entry had left when exported; null: it never expires. None
        // left (0 or less): it had expired, and is not brought back.
        let ttl = match &entry["ttl"] {
            Value::Null => Ttl::Never,
            t => match t.as_f64() {
                Some(left) if left.is_finite() && left <= 0.0 => continue,
                Some(left) if !left.is_nan() => Ttl::from_seconds(left)?,
                _ => return Err(Failed(format!("line {at}: ttl is not a number: {t}"))),
            },
        };
        batch.push((bytes("key")?, bytes("value")?, ttl, flags));
        count += 1;
        bar.inc(1);
        if batch.len() == 1000 {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    bar.finish_and_clear();
    Ok(count)
}
