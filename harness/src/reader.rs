//! A workload for failover tests: read one file through a FUSE mount over and over and
//! report how it went. It must run in a process of its own: a thread blocked in a FUSE
//! read can hold its process's memory-map lock, and the next fork (or even `ps` reading
//! that process's command line) then waits for the daemon too.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use mock_nydusd::pattern_byte;

/// What the reader saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderStats {
    /// Complete reads with the right content.
    pub reads: u64,
    /// Reads that failed or returned wrong bytes.
    pub failures: u64,
    /// Longest time between two completed reads, in microseconds.
    pub longest_stall_us: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Reads `file` until `stop` exists; `size` checks length and pattern content (0: any
/// content is fine).
pub fn run(file: &Path, size: u64, stop: &Path) -> ReaderStats {
    let mut stats = ReaderStats::default();
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while !stop.exists() {
        match std::fs::read(file) {
            Ok(data)
                if size == 0
                    || (data.len() as u64 == size
                        && data.iter().enumerate().all(|(i, b)| *b == pattern_byte(i as u64))) =>
            {
                stats.reads += 1
            }
            Ok(data) => {
                stats.failures += 1;
                stats.first_error.get_or_insert(format!("wrong content ({} bytes)", data.len()));
            }
            Err(e) => {
                stats.failures += 1;
                stats.first_error.get_or_insert(e.to_string());
            }
        }
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    stats.longest_stall_us = longest.as_micros() as u64;
    stats
}

/// The one-string form a reader process is started with: `<file>\n<size>\n<stop file>`.
pub fn spec(file: &Path, size: u64, stop: &Path) -> String {
    format!("{}\n{size}\n{}", file.display(), stop.display())
}

/// Runs the reader described by [`spec`] and returns its stats as one JSON line.
pub fn run_spec(spec: &str) -> String {
    let mut parts = spec.lines();
    let (file, size, stop) = (parts.next().unwrap_or(""), parts.next().unwrap_or("0"), parts.next().unwrap_or(""));
    let stats = run(Path::new(file), size.parse().unwrap_or(0), Path::new(stop));
    serde_json::to_string(&stats).expect("stats serialise")
}
