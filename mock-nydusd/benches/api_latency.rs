//! Latency of `GET /api/v1/daemon` over one keep-alive connection, requests per second,
//! and resident memory afterwards. A benchmark that prints numbers, not a test:
//! `cargo bench -p mock-nydusd --bench api_latency`. `BENCH_NYDUSD=/path/to/nydusd`
//! measures a real nydusd beside the mock, round by round in turn. `BENCH_REQUESTS` sets
//! the requests per round (default 20 000), `BENCH_ROUNDS` the rounds (default 5).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A daemon and its FUSE mountpoint. Stopped with SIGTERM, on which a real nydusd
/// unmounts (a SIGKILL left a real one's mount dead under the temporary directory), then
/// SIGKILL after 2 s, and the mountpoint is detached either way.
struct Daemon(Child, std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = nix::mount::umount2(&self.1, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

/// A daemon serving one keep-alive connection, ready for requests.
struct Served {
    binary: String,
    daemon: Daemon,
    stream: UnixStream,
    _dir: tempfile::TempDir,
}

fn start(binary: &str) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mountpoint");
    let child = Command::new(binary)
        .args(["fuse", "--rlimit-nofile", "0", "--log-level", "error", "--apisock"])
        .arg(&sock)
        .arg("--mountpoint")
        .arg(&mnt)
        .spawn()
        .expect("spawn daemon");
    let daemon = Daemon(child, mnt.clone());
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("daemon socket never appeared: {e}"),
        }
    };
    Served { binary: binary.to_owned(), daemon, stream, _dir: dir }
}

/// `requests` sequential requests; the sorted latencies and the rate.
fn round(served: &mut Served, requests: usize) -> (Vec<Duration>, f64) {
    let mut buf = Vec::with_capacity(2048);
    let mut samples = Vec::with_capacity(requests);
    let all = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        served.stream.write_all(REQUEST).expect("write");
        testkit::read_reply_into(&mut served.stream, &mut buf);
        samples.push(t.elapsed());
    }
    let rate = requests as f64 / all.elapsed().as_secs_f64();
    samples.sort();
    (samples, rate)
}

fn main() {
    // The mock always; a real nydusd beside it when BENCH_NYDUSD names one. The daemons
    // take turns, round by round, so that both see the same machine.
    let mut binaries = vec![testkit::bin_exe!("mock-nydusd").to_string_lossy().into_owned()];
    binaries.extend(std::env::var("BENCH_NYDUSD").ok());
    let requests: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut served: Vec<Served> = binaries.iter().map(|b| start(b)).collect();
    for s in &mut served {
        round(s, 1_000);
    }
    println!(
        "GET /api/v1/daemon on one keep-alive connection, {rounds} rounds of {requests} requests each, daemons in turn"
    );
    for r in 1..=rounds {
        for s in &mut served {
            let (samples, rate) = round(s, requests);
            println!(
                "round {r}  {:<60} p50 {:>6.1} µs   p99 {:>6.1} µs   {:>7.0} requests/s",
                s.binary,
                percentile(&samples, 0.50).as_secs_f64() * 1e6,
                percentile(&samples, 0.99).as_secs_f64() * 1e6,
                rate
            );
        }
    }
    for s in &served {
        println!(
            "RSS after {} requests  {:<50} {:>6} kB",
            1_000 + rounds * requests,
            s.binary,
            testkit::rss_kb(s.daemon.0.id())
        );
    }
}
