//! Latency of `GET /api/v1/daemon` over one keep-alive connection, and requests per second.
//! A benchmark that prints numbers, not a test: `cargo bench -p mock-nydusd --bench api_latency`.
//! `BENCH_NYDUSD=/path/to/nydusd` measures another binary with the same command line (for
//! example real nydusd, for comparison with `real-nydusd-2.2.md`: p50 54–59 µs there).
//! `BENCH_REQUESTS` sets the number of measured requests (default 20 000).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads one response: headers, then `Content-Length` bytes.
fn read_reply(stream: &mut UnixStream, buf: &mut Vec<u8>) {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "daemon closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|v| v.trim().parse().expect("length"))
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).expect("read body");
                assert!(n > 0, "daemon closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn main() {
    let binary = std::env::var("BENCH_NYDUSD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mock-nydusd").to_owned());
    let requests: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mountpoint");
    let child = Command::new(&binary)
        .args(["fuse", "--rlimit-nofile", "0", "--log-level", "error", "--apisock"])
        .arg(&sock)
        .arg("--mountpoint")
        .arg(&mnt)
        .spawn()
        .expect("spawn daemon");
    let _daemon = Daemon(child);
    let start = Instant::now();
    let mut stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("daemon socket never appeared: {e}"),
        }
    };
    let mut buf = Vec::with_capacity(1024);
    for _ in 0..1_000 {
        stream.write_all(REQUEST).expect("write");
        read_reply(&mut stream, &mut buf);
    }
    let mut samples = Vec::with_capacity(requests);
    let all = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        stream.write_all(REQUEST).expect("write");
        read_reply(&mut stream, &mut buf);
        samples.push(t.elapsed());
    }
    let total = all.elapsed();
    samples.sort();
    println!("daemon: {binary}");
    println!("GET /api/v1/daemon, {requests} sequential requests on one keep-alive connection (after 1000 warm-up)");
    println!(
        "p50 {:.1} µs   p99 {:.1} µs   max {:.1} µs   {:.0} requests/s",
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().expect("samples").as_secs_f64() * 1e6,
        requests as f64 / total.as_secs_f64()
    );
}
