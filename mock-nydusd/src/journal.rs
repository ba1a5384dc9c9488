//! An append-only JSON-lines record of every request and lifecycle event, flushed per line
//! so that it survives SIGKILL. Timestamps are CLOCK_MONOTONIC nanoseconds, comparable
//! across processes on one machine, so the harness can merge journals into one timeline.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

/// The journal; a no-op when no file was given.
#[derive(Debug, Default)]
pub struct Journal {
    file: Option<Mutex<File>>,
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
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Some(Mutex::new(file)) })
    }

    /// Appends one event with extra fields.
    pub fn record(&self, event: &str, fields: Value) {
        let Some(file) = &self.file else { return };
        let mut line = json!({ "t_ns": monotonic_ns(), "pid": std::process::id(), "source": "mock", "event": event });
        if let (Value::Object(map), Value::Object(extra)) = (&mut line, fields) {
            map.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: an append-mode write is atomic with respect to other writers.
        let _ = file.write_all(text.as_bytes());
    }
}
