//! An append-only JSON-lines record of every request and lifecycle event, flushed per line
//! so that it survives SIGKILL. Timestamps are CLOCK_MONOTONIC nanoseconds, comparable
//! across processes on one machine, so the harness can merge journals into one timeline.
//! The newest entries are also kept in memory for the control socket.
//!
//! Everything is bounded: in an entry longer than [`MAX_ENTRY_BYTES`] the long text fields
//! are cut short (the small ones, such as a request's method, path and status, stay), and
//! one still too long is replaced by a stub naming its event and size; memory holds the newest entries up to [`MEMORY_BYTES`], as
//! serialized lines (a `serde_json::Value` per entry cost about 3.4 KB); the file stops at
//! its limit with one last `journal_truncated` record, so a long run cannot fill the disk.
//!
//! # Format
//!
//! The journal is read by other processes (the harness merges the journals of every
//! daemon of a scenario, and of itself, into one timeline), so its lines are a format:
//! one JSON object per line, UTF-8, `\n`-terminated, never rewritten. Every object has
//!
//! | key      | value                                                              |
//! |----------|--------------------------------------------------------------------|
//! | `t_ns`   | CLOCK_MONOTONIC nanoseconds when the entry was made                |
//! | `pid`    | the writing process                                                |
//! | `source` | who wrote it: `mock` for the mock, or the name a writer gave       |
//! | `event`  | what happened: `start`, `request`, `state`, `socket_created`, ... |
//!
//! and then the event's own fields. In an entry over [`MAX_ENTRY_BYTES`], each text field
//! longer than [`KEPT_TEXT_BYTES`] keeps its beginning and gains `<field>_bytes`, its full
//! length; an entry still over the bound keeps only the four and adds `elided_bytes` (the
//! size of the entry it stands for); the last line of a full
//! file is a `journal_truncated` event with `limit_bytes` and `written_bytes`. Readers ignore events and
//! fields they do not know, so adding one is compatible.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Longest entry kept whole, in the file and in memory.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;
/// What an over-long entry keeps of each long text field.
pub const KEPT_TEXT_BYTES: usize = 512;
/// Memory for the newest entries; older ones are only in the file. 1 MiB is some 7000
/// requests, more than any reader of the control socket asks for; at 8 MiB the mock's
/// resident memory after 100 000 requests was twice a real nydusd's (16.2 against 8.3 MB).
pub const MEMORY_BYTES: usize = 1024 * 1024;
/// Default limit of the journal file.
pub const DEFAULT_FILE_LIMIT: u64 = 256 * 1024 * 1024;
/// Smallest file limit accepted: room for a few entries and the truncation record.
pub const MIN_FILE_LIMIT: u64 = 4096;
/// Room kept below the file limit for the truncation record.
const TRUNCATION_RESERVE: u64 = 512;
/// What one entry in memory costs beyond its text (the `Arc` and the queue slot).
const ENTRY_OVERHEAD: usize = 32;

/// The journal file and how much of its limit is used.
#[derive(Debug)]
struct Sink {
    file: File,
    written: u64,
    limit: u64,
    truncated: bool,
}

/// The newest entries, oldest first, and their cost.
#[derive(Debug, Default)]
struct Recent {
    lines: VecDeque<Arc<str>>,
    bytes: usize,
}

/// The journal: the file when one was given, and the newest entries in memory.
#[derive(Debug)]
pub struct Journal {
    file: Option<Mutex<Sink>>,
    recent: Mutex<Recent>,
    /// `source` of every entry: `mock`, or another writer sharing the format (the harness).
    source: &'static str,
}

impl Default for Journal {
    fn default() -> Self {
        Self { file: None, recent: Mutex::default(), source: "mock" }
    }
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

impl Journal {
    /// Opens `path` for appending (created if missing), with the default file limit.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_limited(path, DEFAULT_FILE_LIMIT)
    }

    /// Opens `path` for appending; the file stops growing at `limit` bytes, counting what
    /// it held when opened (a successor process appends to its predecessor's journal).
    pub fn open_limited(path: &Path, limit: u64) -> std::io::Result<Self> {
        // 0600: the journal records requests, mount configurations included.
        let file = std::os::unix::fs::OpenOptionsExt::mode(&mut std::fs::OpenOptions::new(), 0o600)
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        let sink = Sink { file, written, limit: limit.max(MIN_FILE_LIMIT), truncated: false };
        Ok(Self { file: Some(Mutex::new(sink)), recent: Mutex::default(), source: "mock" })
    }

    /// A journal for another writer of this format, whose entries say `source`.
    pub fn open_as(path: &Path, source: &'static str) -> std::io::Result<Self> {
        Ok(Self { source, ..Self::open(path)? })
    }

    /// Appends one event with extra fields.
    pub fn record(&self, event: &str, fields: Value) {
        let header =
            || json!({ "t_ns": monotonic_ns(), "pid": std::process::id(), "source": self.source, "event": event });
        let mut entry = header();
        if let (Value::Object(map), Value::Object(extra)) = (&mut entry, fields) {
            map.extend(extra);
        }
        let mut line = entry.to_string();
        if line.len() > MAX_ENTRY_BYTES
            && let Value::Object(map) = &mut entry
        {
            // A 20 KB mount body must not cost the request its method, path and status.
            let long: Vec<String> = map
                .iter()
                .filter(|(_, v)| v.as_str().is_some_and(|t| t.len() > KEPT_TEXT_BYTES))
                .map(|(k, _)| k.clone())
                .collect();
            for key in long {
                let Some(Value::String(text)) = map.get(&key) else { continue };
                let full = text.len();
                let mut cut = KEPT_TEXT_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let kept = text[..cut].to_owned();
                map.insert(key.clone(), kept.into());
                map.insert(format!("{key}_bytes"), full.into());
            }
            line = entry.to_string();
        }
        if line.len() > MAX_ENTRY_BYTES {
            let mut stub = header();
            stub["elided_bytes"] = json!(line.len());
            line = stub.to_string();
        }
        if let Some(sink) = &self.file {
            let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
            self.append(&mut sink, &line);
        }
        let line: Arc<str> = line.into();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.bytes += line.len() + ENTRY_OVERHEAD;
        recent.lines.push_back(line);
        while recent.bytes > MEMORY_BYTES {
            let Some(oldest) = recent.lines.pop_front() else { break };
            recent.bytes -= oldest.len() + ENTRY_OVERHEAD;
        }
    }

    fn append(&self, sink: &mut Sink, line: &str) {
        if sink.truncated {
            return;
        }
        let room = sink.limit.saturating_sub(TRUNCATION_RESERVE);
        let text = if sink.written + (line.len() as u64) < room {
            format!("{line}\n")
        } else {
            sink.truncated = true;
            let record = json!({
                "t_ns": monotonic_ns(), "pid": std::process::id(), "source": self.source,
                "event": "journal_truncated", "limit_bytes": sink.limit, "written_bytes": sink.written,
            });
            format!("{record}\n")
        };
        // One write per line: an append-mode write is atomic with respect to other writers.
        if sink.file.write_all(text.as_bytes()).is_ok() {
            sink.written += text.len() as u64;
        }
    }

    /// The entries in memory, oldest first, as JSON lines (shared, not copied).
    pub fn recent_lines(&self) -> Vec<Arc<str>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).lines.iter().cloned().collect()
    }

    /// The entries in memory, oldest first.
    pub fn recent(&self) -> Vec<Value> {
        self.recent_lines().iter().map(|l| serde_json::from_str(l).expect("journal lines are JSON")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn the_file_stops_at_its_limit_with_a_truncation_record_and_memory_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let journal = Journal::open_limited(&path, MIN_FILE_LIMIT).unwrap();
        for i in 0..200 {
            journal.record("request", json!({ "i": i, "path": "/api/v1/daemon" }));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= MIN_FILE_LIMIT, "{size} bytes");
        let written = lines(&path);
        let last = written.last().unwrap();
        assert_eq!(last["event"], "journal_truncated");
        assert_eq!(last["limit_bytes"], MIN_FILE_LIMIT);
        assert_eq!(written.iter().filter(|e| e["event"] == "journal_truncated").count(), 1);
        assert!(written.len() > 10);
        assert_eq!(journal.recent().len(), 200);
        assert_eq!(journal.recent().last().unwrap()["i"], 199);
    }

    #[test]
    fn the_limit_counts_what_the_file_held_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, format!("{}\n", json!({ "event": "x", "pad": "p".repeat(3500) }))).unwrap();
        let journal = Journal::open_limited(&path, MIN_FILE_LIMIT).unwrap();
        journal.record("request", json!({ "pad": "q".repeat(200) }));
        let written = lines(&path);
        assert_eq!(written.len(), 2);
        assert_eq!(written[1]["event"], "journal_truncated");
    }

    #[test]
    fn an_over_long_entry_keeps_its_small_fields_and_the_start_of_its_long_ones() {
        let journal = Journal::default();
        journal.record(
            "exchange",
            json!({ "method": "POST", "path": "/api/v1/mount", "status": 204, "request": "r".repeat(20_000) }),
        );
        let entry = &journal.recent()[0];
        // Before, the whole entry became a stub and the exchange lost its method and status.
        assert_eq!((entry["method"].as_str(), entry["status"].as_u64()), (Some("POST"), Some(204)));
        assert_eq!(entry["request"].as_str().map(str::len), Some(KEPT_TEXT_BYTES));
        assert_eq!(entry["request_bytes"], 20_000);
    }

    #[test]
    fn an_entry_too_long_even_then_is_replaced_by_a_stub_with_its_event_and_size() {
        let journal = Journal::default();
        let many: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k{i}"), json!("v".repeat(400)))).collect();
        journal.record("script", Value::Object(many));
        let entry = &journal.recent()[0];
        assert_eq!(entry["event"], "script");
        assert!(entry["elided_bytes"].as_u64().unwrap() > 40_000);
        assert!(entry.get("k1").is_none());
    }

    #[test]
    fn memory_keeps_the_newest_entries_within_its_budget() {
        let journal = Journal::default();
        let pad = "p".repeat(1000);
        let total = 2 * MEMORY_BYTES / 1000;
        for i in 0..total {
            journal.record("request", json!({ "i": i, "pad": pad }));
        }
        let kept = journal.recent_lines();
        let bytes: usize = kept.iter().map(|l| l.len() + ENTRY_OVERHEAD).sum();
        assert!(bytes <= MEMORY_BYTES);
        assert!(kept.len() < total && kept.len() > total / 3);
        let newest: Value = serde_json::from_str(kept.last().unwrap()).unwrap();
        assert_eq!(newest["i"], total - 1);
    }
}
