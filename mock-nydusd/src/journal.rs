//! An append-only JSON-lines record of every request and lifecycle event, flushed per line
//! so that it survives SIGKILL. Timestamps are CLOCK_MONOTONIC nanoseconds, comparable
//! across processes on one machine, so the harness can merge journals into one timeline.
//! The newest entries are also kept in memory for the control socket.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Entries kept in memory; older ones are only in the file.
pub const MEMORY_ENTRIES: usize = 100_000;

/// The journal: the file when one was given, and the newest entries in memory.
#[derive(Debug)]
pub struct Journal {
    file: Option<Mutex<File>>,
    recent: Mutex<VecDeque<Value>>,
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
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        // 0600: the journal records requests, mount configurations included.
        let file = std::os::unix::fs::OpenOptionsExt::mode(&mut std::fs::OpenOptions::new(), 0o600)
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { file: Some(Mutex::new(file)), recent: Mutex::default(), source: "mock" })
    }

    /// A journal for another writer of this format, whose entries say `source`.
    pub fn open_as(path: &Path, source: &'static str) -> std::io::Result<Self> {
        Ok(Self { source, ..Self::open(path)? })
    }

    /// Appends one event with extra fields.
    pub fn record(&self, event: &str, fields: Value) {
        let mut line =
            json!({ "t_ns": monotonic_ns(), "pid": std::process::id(), "source": self.source, "event": event });
        if let (Value::Object(map), Value::Object(extra)) = (&mut line, fields) {
            map.extend(extra);
        }
        if let Some(file) = &self.file {
            let mut text = line.to_string();
            text.push('\n');
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            // One write per line: an append-mode write is atomic with respect to other writers.
            let _ = file.write_all(text.as_bytes());
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == MEMORY_ENTRIES {
            recent.pop_front();
        }
        recent.push_back(line);
    }

    /// The entries in memory, oldest first.
    pub fn recent(&self) -> Vec<Value> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}
