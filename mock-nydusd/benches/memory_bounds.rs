//! Peak memory of the mock under the two loads that once grew it without limit: a million
//! journal entries (then the journal read back through the control socket), and a 100 MB
//! header section. A benchmark that prints numbers: `cargo bench -p mock-nydusd --bench
//! memory_bounds`. `BENCH_JOURNAL_ENTRIES` and `BENCH_HEADER_MB` change the loads (defaults
//! 1 000 000 and 100). Before the journal and framing rework the journal alone reached
//! about 350 MB at 100 000 entries, and 16 MB of headers took 34 s of CPU.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const EVENTS: &[u8] = b"GET /api/v1/daemon/events HTTP/1.1\r\n\r\n";

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: tempfile::TempDir) -> Daemon {
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let child = Command::new(testkit::bin_exe!("mock-nydusd"))
        .arg("fuse")
        .arg("--apisock")
        .arg(dir.path().join("api.sock"))
        .arg("--mountpoint")
        .arg(dir.path().join("mnt"))
        .arg("--mock-journal")
        .arg(dir.path().join("journal.jsonl"))
        .arg("--mock-control")
        .arg(dir.path().join("control.sock"))
        .arg("--log-level")
        .arg("error")
        .spawn()
        .expect("spawn mock-nydusd");
    let daemon = Daemon { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(daemon._dir.path().join("api.sock")).is_err() {
        assert!(Instant::now() < deadline, "the mock never opened its socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon
}

/// `VmHWM` (peak resident set) and `VmRSS` of `pid`, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// User plus system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Reads replies until `count` complete ones have arrived; returns how many were 200s.
fn read_replies(stream: &mut UnixStream, buf: &mut Vec<u8>, count: usize) -> usize {
    let mut ok = 0;
    let mut seen = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut start = 0;
    while seen < count {
        if let Some(end) = buf[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[start..start + end]).into_owned();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).map_or(0, |v| v.trim().parse().unwrap());
            let total = end + 4 + length;
            if buf.len() - start >= total {
                ok += usize::from(head.starts_with("HTTP/1.1 200 "));
                seen += 1;
                start += total;
                continue;
            }
        }
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the mock closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..start);
    ok
}

fn journal_load(entries: usize) {
    let daemon = start(tempfile::tempdir().unwrap());
    let pid = daemon.child.id();
    let mut stream = UnixStream::connect(daemon._dir.path().join("api.sock")).unwrap();
    let batch = 1000;
    let requests: Vec<u8> = EVENTS.repeat(batch);
    let mut buf = Vec::new();
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..entries.div_ceil(batch) {
        stream.write_all(&requests).unwrap();
        ok += read_replies(&mut stream, &mut buf, batch);
    }
    let elapsed = started.elapsed();
    let (peak, now) = rss_mb(pid);
    let file = std::fs::metadata(daemon._dir.path().join("journal.jsonl")).map_or(0, |m| m.len());
    println!(
        "journal: {ok} requests answered 200 in {:.1} s ({:.0}/s); journal file {:.1} MB; mock RSS now {now:.1} MB, peak {peak:.1} MB",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        file as f64 / 1e6,
    );
    let mut control = UnixStream::connect(daemon._dir.path().join("control.sock")).unwrap();
    control.write_all(b"GET /journal HTTP/1.1\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        control.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().trim().parse().unwrap();
    let mut body = vec![0u8; length];
    control.read_exact(&mut body).unwrap();
    let kept = serde_json::from_slice::<Vec<serde_json::Value>>(&body).expect("the journal is a JSON array").len();
    let (peak, now) = rss_mb(pid);
    println!(
        "journal: GET /journal returned {kept} entries ({:.1} MB); mock RSS now {now:.1} MB, peak {peak:.1} MB",
        length as f64 / 1e6
    );
}

fn header_load(megabytes: usize) {
    let daemon = start(tempfile::tempdir().unwrap());
    let pid = daemon.child.id();
    let mut stream = UnixStream::connect(daemon._dir.path().join("api.sock")).unwrap();
    let line = format!("X-Filler: {}\r\n", "a".repeat(88));
    let chunk = line.repeat(1024 * 1024 / line.len());
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    stream.write_all(b"GET /api/v1/daemon/events HTTP/1.1\r\n").unwrap();
    // Replies (spurious 500s when the mock outruns this writer) are drained by a reader
    // thread, so neither side's socket buffer fills.
    let mut reader = stream.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut replies = 0;
        loop {
            replies += 1;
            if read_replies(&mut reader, &mut buf, 1) == 1 {
                return replies;
            }
        }
    });
    let mut sent = 0usize;
    while sent < megabytes * 1024 * 1024 {
        stream.write_all(chunk.as_bytes()).unwrap();
        sent += chunk.len();
    }
    stream.write_all(b"\r\n").unwrap();
    let replies = drain.join().unwrap();
    let elapsed = started.elapsed();
    let (peak, now) = rss_mb(pid);
    println!(
        "headers: {:.0} MB of header lines in {:.1} s, {replies} replies (the last a 200); mock CPU {:.1} s; RSS now {now:.1} MB, peak {peak:.1} MB",
        sent as f64 / 1e6,
        elapsed.as_secs_f64(),
        cpu_seconds(pid) - cpu_before,
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    header_load(env_usize("BENCH_HEADER_MB", 100));
    journal_load(env_usize("BENCH_JOURNAL_ENTRIES", 1_000_000));
}
