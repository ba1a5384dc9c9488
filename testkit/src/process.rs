//! One mock-nydusd process started directly, killed on drop.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A mock in a temporary directory of its own: `api.sock`, `journal.jsonl`,
/// `control.sock` (always enabled) and, in FUSE mode, `mnt`.
#[derive(Debug)]
pub struct MockProcess {
    /// The process.
    pub child: Child,
    /// Its directory, removed on drop.
    pub dir: tempfile::TempDir,
    /// The API socket.
    pub sock: PathBuf,
    /// The journal file (`--mock-journal`).
    pub journal: PathBuf,
    /// The control socket (`--mock-control`).
    pub control: PathBuf,
    program: PathBuf,
}

impl MockProcess {
    /// Starts `mock-nydusd fuse --apisock <dir>/api.sock --mountpoint <dir>/mnt <extra>`.
    pub fn start(program: &Path, extra: &[&str]) -> Self {
        Self::start_mode(program, "fuse", extra)
    }

    /// Starts `mock-nydusd singleton --apisock <dir>/api.sock <extra>` with a stand-in for
    /// `/dev/cachefiles` (any file it can open read-write) so that start-up succeeds.
    pub fn start_singleton(program: &Path, extra: &[&str]) -> Self {
        Self::start_mode(program, "singleton", extra)
    }

    /// Starts a FUSE mock running `script`, without waiting for the API socket (a script
    /// may delay or withhold it); waits for the control socket instead.
    pub fn start_scripted(program: &Path, script: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.yaml");
        std::fs::write(&path, script).unwrap();
        let mut args = vec!["--mock-script", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mock = Self::spawn(program, "fuse", dir, &args);
        wait_for(&mock.control, "control socket");
        mock
    }

    /// Starts a FUSE mock in a prepared directory (its `api.sock` may be a predecessor's
    /// leftover); `extra` may name another `--mountpoint`.
    pub fn start_in(program: &Path, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let mock = Self::spawn(program, "fuse", dir, extra);
        mock.wait_for_socket();
        mock
    }

    fn start_mode(program: &Path, mode: &str, extra: &[&str]) -> Self {
        let mock = Self::spawn(program, mode, tempfile::tempdir().unwrap(), extra);
        mock.wait_for_socket();
        mock
    }

    fn spawn(program: &Path, mode: &str, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let mnt = dir.path().join("mnt");
        if !mnt.exists() {
            std::fs::create_dir(&mnt).unwrap();
        }
        let sock = dir.path().join("api.sock");
        let journal = dir.path().join("journal.jsonl");
        let control = dir.path().join("control.sock");
        let mut command = Command::new(program);
        command.arg(mode).arg("--apisock").arg(&sock).arg("--mock-journal").arg(&journal);
        command.arg("--mock-control").arg(&control);
        if mode == "fuse" && !extra.contains(&"--mountpoint") {
            command.arg("--mountpoint").arg(&mnt);
        } else {
            let device = dir.path().join("cachefiles");
            std::fs::write(&device, b"").unwrap();
            command.arg("--mock-cachefiles").arg(device);
        }
        let child = command.args(extra).spawn().unwrap();
        Self { child, dir, sock, journal, control, program: program.to_owned() }
    }

    /// The binary this mock runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Waits for the API socket to accept connections.
    pub fn wait_for_socket(&self) {
        wait_for(&self.sock, "mock API socket");
    }

    /// One request on the control socket.
    pub fn control(&self, method: &str, path: &str, body: &str) -> String {
        let raw = format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        exchange(&self.control, raw.as_bytes())
    }

    /// The journal's events so far, read from the file.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// A path in the mock's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A connection to the API socket, with a 5 s read timeout.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed FUSE mock leaves its mount; detach it so the directory can go.
        let _ = nix::mount::umount2(&self.dir.path().join("mnt"), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Waits up to 10 s for a socket at `path` to accept connections.
pub fn wait_for(path: &Path, what: &str) {
    let start = Instant::now();
    while UnixStream::connect(path).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what} never appeared at {}", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads exactly one response (headers plus Content-Length body) from `stream`.
pub fn read_response(stream: &mut UnixStream) -> String {
    try_read_response(stream).unwrap_or_else(|why| panic!("{why}"))
}

/// Reads exactly one response from `stream`, or says why there is none: the peer closed
/// (or the read failed or timed out) before a whole reply came.
pub fn try_read_response(stream: &mut UnixStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).map_err(|e| format!("read: {e}"))?;
        if n != 1 {
            return Err(format!("connection closed mid-headers: {:?}", String::from_utf8_lossy(&buf)));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse::<usize>().map_err(|e| format!("Content-Length: {e}")))
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(|e| format!("body of {len} bytes: {e}"))?;
    Ok(head + &String::from_utf8_lossy(&body))
}

/// Reads one response into `buf` (cleared first) with as few reads as the peer allows:
/// what latency measurements use, where `read_response`'s byte-at-a-time reads would be
/// what they measure. Panics when the peer closes mid-response.
pub fn read_reply_into(stream: &mut UnixStream, buf: &mut Vec<u8>) {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the daemon closed the connection");
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
                assert!(n > 0, "the daemon closed the connection mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return;
        }
    }
}

/// Resident memory of `pid` in kB (`VmRSS` of `/proc/<pid>/status`), 0 when unknown.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sends raw bytes on a fresh connection and returns the one reply.
pub fn exchange(sock: &Path, raw: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut s)
}

/// Sends raw bytes on a fresh connection and returns the one reply, or `None` when the
/// daemon closed the connection (or went quiet for five seconds) without a whole one.
pub fn exchange_or_closed(sock: &Path, raw: &[u8]) -> Option<String> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    try_read_response(&mut s).ok()
}

/// The state the daemon at `sock` reports, read off the wire as nydusd sends it.
pub fn reported_state(sock: &Path) -> nydusd_api::State {
    let reply = exchange(sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    let body = reply.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    let info: nydusd_api::DaemonInfo = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}"));
    info.state
}

/// The pids of processes, this one excepted, whose command line contains `needle`: what a
/// test started and should have ended, found by a path only it uses.
pub fn pids_naming(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}
