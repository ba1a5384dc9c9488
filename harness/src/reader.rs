//! A workload for failover tests: read one file through a FUSE mount over and over and
//! report how it went. It must run in a process of its own: a thread blocked in a FUSE
//! read can hold its process's memory-map lock, and the next fork (or even `ps` reading
//! that process's command line) then waits for the daemon too.
//!
//! The reads run on a thread of their own, so the reader can report even when one of them
//! never returns: a FUSE request the dead daemon had taken from the device, on a kernel
//! that cannot resend it, waits for an answer until the connection ends, and not even
//! SIGKILL ends that wait. The stop file says how long the reading thread has to finish
//! the read in progress (its content, in ms; [`DEFAULT_STUCK_AFTER`] when empty); if it
//! does not, the reader reports the read as stuck (how long, and where in the kernel it
//! waits) and exits without it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Longest time between two completed reads (or since the last one, for a read that
    /// is stuck), in microseconds.
    pub longest_stall_us: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// A read that had not returned when the reader was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<StuckRead>,
}

/// A read that did not return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckRead {
    /// How long it had been waiting when the reader gave up on it, in ms.
    pub waiting_ms: u64,
    /// Where its thread waits in the kernel (`/proc/self/task/<tid>/wchan`), e.g.
    /// `request_wait_answer`.
    pub wchan: String,
}

/// The reading thread and what it shares with the reporting one.
#[derive(Default)]
struct Shared {
    stats: Mutex<ReaderStats>,
    stop: AtomicBool,
    /// CLOCK_MONOTONIC ns when the read in progress started; 0 between reads.
    reading_since_ns: AtomicU64,
    tid: AtomicI32,
}

/// How long a read may still take after the stop, when the stop file does not say.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(2);

/// Reads `file` until `stop` exists; `size` checks length and pattern content (0: any
/// content is fine). A read still in progress when the stop file's time has passed is
/// reported as [`StuckRead`].
pub fn run(file: &Path, size: u64, stop: &Path) -> ReaderStats {
    let shared = Arc::new(Shared::default());
    let reading = {
        let (shared, file) = (shared.clone(), file.to_owned());
        std::thread::spawn(move || read_until_stopped(&file, size, &shared))
    };
    while !stop.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let stuck_after = std::fs::read_to_string(stop)
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(DEFAULT_STUCK_AFTER, Duration::from_millis);
    let asked = Instant::now();
    while !reading.is_finished() && asked.elapsed() < stuck_after {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !reading.is_finished() {
        let since = shared.reading_since_ns.load(Ordering::SeqCst);
        let waiting = Duration::from_nanos(mock_nydusd::journal::monotonic_ns().saturating_sub(since));
        let tid = shared.tid.load(Ordering::SeqCst);
        let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).unwrap_or_default();
        stats.longest_stall_us = stats.longest_stall_us.max(waiting.as_micros() as u64);
        stats.stuck = Some(StuckRead { waiting_ms: waiting.as_millis() as u64, wchan: wchan.trim().to_owned() });
    }
    stats
}

fn read_until_stopped(file: &Path, size: u64, shared: &Shared) {
    shared.tid.store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
    let mut last = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        shared.reading_since_ns.store(mock_nydusd::journal::monotonic_ns(), Ordering::SeqCst);
        let read = std::fs::read(file);
        shared.reading_since_ns.store(0, Ordering::SeqCst);
        let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        match read {
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
        stats.longest_stall_us = stats.longest_stall_us.max(last.elapsed().as_micros() as u64);
        last = Instant::now();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO nobody writes blocks its reader's open, as a FUSE request nobody answers
    /// does: the reader reports that read as stuck, with where it waits, and returns.
    #[test]
    fn a_read_that_never_returns_is_reported_stuck_and_the_reader_still_ends() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let stop = dir.path().join("stop");
        let started = Instant::now();
        let reader = {
            let (fifo, stop) = (fifo.clone(), stop.clone());
            std::thread::spawn(move || run(&fifo, 0, &stop))
        };
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(&stop, b"300").unwrap();
        let stats = reader.join().unwrap();
        let stuck = stats.stuck.expect("the read on the FIFO is stuck");
        assert!(stuck.waiting_ms >= 400, "{stuck:?}");
        assert!(!stuck.wchan.is_empty(), "{stuck:?}");
        assert_eq!((stats.reads, stats.failures), (0, 0));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stuck thread is released so that the test leaves no thread behind.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }

    #[test]
    fn reads_that_return_are_counted_and_none_is_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, (0..4096u64).map(pattern_byte).collect::<Vec<u8>>()).unwrap();
        let stop = dir.path().join("stop");
        let reader = {
            let (file, stop) = (file.clone(), stop.clone());
            std::thread::spawn(move || run(&file, 4096, &stop))
        };
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&stop, b"").unwrap();
        let stats = reader.join().unwrap();
        assert!(stats.reads > 0 && stats.failures == 0 && stats.stuck.is_none(), "{stats:?}");
    }
}
