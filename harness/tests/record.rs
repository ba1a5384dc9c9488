//! `harness record` as a proxy between a client and a real daemon process (the mock):
//! what passes is byte for byte what the daemon sent, split as the client split it; the
//! recording holds every piece; credentials never reach it; signals and a daemon's death
//! end the recording and leave no socket of the proxy behind.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::MockProcess;

/// The harness binary linked into `dir` under the name `mock-nydusd`, which makes it the
/// mock (the link goes with the test's own directory).
fn mock_in(dir: &Path) -> PathBuf {
    let link = dir.join("mock-nydusd");
    std::os::unix::fs::symlink(testkit::bin_exe!("harness"), &link).unwrap();
    link
}

/// Waits for the recorder in `out` to listen: its first line is written after its socket
/// listens (the socket file alone appears at bind(), before listen()).
fn wait_for_recorder(out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(out.join("recording.jsonl")).is_ok_and(|t| t.contains(r#""event":"recording""#)) {
        assert!(Instant::now() < deadline, "the recorder in {} never listened", out.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Recorder(Child);

impl Drop for Recorder {
    /// SIGTERM first: the recorder then ends the daemon it started, which a SIGKILL to
    /// the recorder would leave running (seen after a failed test).
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn record(args: &[&std::ffi::OsStr]) -> Recorder {
    let child = Command::new(testkit::bin_exe!("harness"))
        .arg("record")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Recorder(child)
}

fn lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("recording.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes `pieces` with a pause between them and reads until `replies` replies came.
fn converse(sock: &Path, pieces: &[&[u8]], replies: usize) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in pieces {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(9).filter(|w| w == b"HTTP/1.1 ").count() < replies || !complete(&got, replies) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Whether `bytes` hold `replies` whole replies (headers and Content-Length bodies).
fn complete(bytes: &[u8], replies: usize) -> bool {
    let mut rest = bytes;
    for _ in 0..replies {
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
        let head = String::from_utf8_lossy(&rest[..end]);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if rest.len() < end + 4 + len {
            return false;
        }
        rest = &rest[end + 4 + len..];
    }
    true
}

/// A mock daemon, and a recorder in front of it: the daemon, the directory holding the
/// proxy's socket and the recording, the socket, the recording's directory, the recorder.
fn proxied_mock() -> (MockProcess, tempfile::TempDir, PathBuf, PathBuf, Recorder) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = MockProcess::start(&mock_in(dir.path()), &[]);
    let (listen, out) = (dir.path().join("proxy.sock"), dir.path().join("rec"));
    let recorder = record(&[
        "--upstream".as_ref(),
        daemon.sock.as_os_str(),
        "--listen".as_ref(),
        listen.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    wait_for_recorder(&out);
    (daemon, dir, listen, out, recorder)
}

#[test]
fn what_passes_is_what_the_daemon_sent_split_as_the_client_split_it() {
    let (daemon, _dir, listen, out, _recorder) = proxied_mock();
    // A request in three writes (nydusd answers each partial read with a 500 first), then
    // two pipelined in one: the same bytes must come back through the proxy as directly.
    let split: &[&[u8]] = &[b"GET /api/v1/dae", b"mon HTTP/1.1\r\n", b"\r\n"];
    let direct = converse(&daemon.sock, split, 3);
    let proxied = converse(&listen, split, 3);
    assert_eq!(String::from_utf8_lossy(&proxied), String::from_utf8_lossy(&direct));
    assert!(String::from_utf8_lossy(&proxied).starts_with("HTTP/1.1 500 "), "the split reached the daemon split");
    let pipelined: &[&[u8]] = &[b"GET /api/v1/daemon/events HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"];
    assert_eq!(converse(&listen, pipelined, 2), converse(&daemon.sock, pipelined, 2));
    let recording = lines(&out);
    assert_eq!(recording[0]["event"], "recording");
    assert_eq!(recording[0]["version"], 1);
    let requests: Vec<&str> = recording
        .iter()
        .filter(|l| l["event"] == "data" && l["conn"] == 1 && l["dir"] == "request")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(requests, ["GET /api/v1/dae", "mon HTTP/1.1\r\n", "\r\n"]);
    let replies: String = recording
        .iter()
        .filter(|l| l["event"] == "data" && l["conn"] == 1 && l["dir"] == "reply")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(replies.as_bytes(), &proxied[..]);
    // A request's pieces are written once it is whole (to redact it), so lines are in time
    // order within a connection's direction; readers order the rest by their stamps.
    for dir in ["request", "reply"] {
        let times: Vec<u64> = recording
            .iter()
            .filter(|l| l["event"] == "data" && l["conn"] == 1 && l["dir"] == dir)
            .map(|l| l["t_ns"].as_u64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{dir}s in the order they passed: {times:?}");
    }
    let read = harness::record::Recording::read(&out).unwrap();
    assert!(read.entries.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "read back in time order");
    assert!(recording.iter().any(|l| l["event"] == "close" && l["conn"] == 1 && l["side"] == "client"));
}

#[test]
fn credentials_never_reach_the_recording_and_a_signal_ends_it_cleanly() {
    let (_daemon, _dir, listen, out, mut recorder) = proxied_mock();
    let secret = "c2VjcmV0LXBsYW50ZWQtaW4tdGhlLXRlc3Q";
    let config = serde_json::json!({ "device": { "backend": { "type": "registry", "config": { "host": "r.example", "repo": "r", "auth": secret } } }, "mode": "direct" }).to_string();
    let boot = testkit::write_stand_in(&_dir.path().join("boot")).unwrap();
    let body = serde_json::json!({ "source": boot, "fs_type": "rafs", "config": config }).to_string();
    let request = format!("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let reply = converse(&listen, &[request.as_bytes()], 1);
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 204 "), "{}", String::from_utf8_lossy(&reply));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(recorder.0.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let status = recorder.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!listen.exists(), "the proxy's socket outlived it");
    let text = std::fs::read_to_string(out.join("recording.jsonl")).unwrap();
    assert!(!text.contains(secret), "the planted credential is in the recording");
    // Meant to leave the host, but only as its owner decides.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&out), mode(&out.join("recording.jsonl"))), (0o700, 0o600));
    assert!(text.contains(r#"\\\"auth\\\":\\\"*"#), "{text}");
    assert!(text.contains("r.example"), "only the credential went: {text}");
}

/// `harness record --out <dir>/rec -- <mock as nydusd> fuse --apisock <dir>/api.sock
/// --mountpoint <dir>/mnt`, once the socket is there: the socket, the recording's
/// directory and the recorder.
fn record_mock_command(dir: &Path) -> (PathBuf, PathBuf, Recorder) {
    record_mock(dir, "rec", "api.sock", &[], &[])
}

/// `harness record <recorder_flags> --out <dir>/<out> -- <mock as nydusd> fuse --apisock
/// <dir>/<sock> --mountpoint <dir>/mnt <daemon_flags>`, once it listens: the socket, the
/// recording's directory and the recorder.
fn record_mock(
    dir: &Path,
    out: &str,
    sock: &str,
    recorder_flags: &[&str],
    daemon_flags: &[&std::ffi::OsStr],
) -> (PathBuf, PathBuf, Recorder) {
    let (sock, mnt, out) = (dir.join(sock), dir.join("mnt"), dir.join(out));
    std::fs::create_dir_all(&mnt).unwrap();
    let link = dir.join("nydusd");
    if !link.exists() {
        std::os::unix::fs::symlink(testkit::bin_exe!("harness"), &link).unwrap();
    }
    let mut args: Vec<&std::ffi::OsStr> = recorder_flags.iter().map(std::ffi::OsStr::new).collect();
    args.extend([
        "--out".as_ref(),
        out.as_os_str(),
        "--".as_ref(),
        link.as_os_str(),
        "fuse".as_ref(),
        "--apisock".as_ref(),
        sock.as_os_str(),
        "--mountpoint".as_ref(),
        mnt.as_os_str(),
    ]);
    args.extend(daemon_flags);
    let recorder = record(&args);
    wait_for_recorder(&out);
    (sock, out, recorder)
}

#[test]
fn a_recorded_command_has_its_socket_taken_over_and_its_death_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, out, recorder) = record_mock_command(dir.path());
    // Clients use the path the command line named; the daemon listens in the recording.
    let reply = converse(&sock, &[b"GET /api/v1/daemon HTTP/1.1\r\n\r\n"], 1);
    assert!(String::from_utf8_lossy(&reply).contains(r#""state":"RUNNING""#));
    let moved: PathBuf = out.join("upstream.sock");
    assert!(moved.exists());
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(moved.to_str().unwrap()))
        })
        .expect("the daemon runs with the moved socket");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut recorder = recorder;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = recorder.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the recorder outlived its daemon by 10 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the proxy's socket outlived the recording");
    let mut recording = lines(&out);
    // The socket's life: the daemon listening on it before any client came, and still
    // there (the SIGKILLed daemon did not remove it) at the end.
    assert_eq!(recording[1]["event"], "daemon_listening", "{:?}", recording[1]);
    assert_eq!(recording[1]["socket"], moved.to_str().unwrap());
    assert!(recording[1]["after_ns"].as_u64().unwrap() > 0);
    assert_eq!(recording[2]["event"], "open");
    let last = recording.pop().unwrap();
    assert_eq!((last["event"].as_str(), last["signal"].as_i64()), (Some("daemon_exit"), Some(9)));
    assert_eq!(last["socket_left"], true);
}

fn replay(dir: &Path, speed: &str) -> std::process::Output {
    Command::new(testkit::bin_exe!("harness"))
        .args(["replay".as_ref(), dir.as_os_str(), "--speed".as_ref(), speed.as_ref()])
        .output()
        .unwrap()
}

/// A session of the mock (a request split in three writes and the 500s nydusd gives its
/// partial reads, a mount carrying a credential, two pipelined requests, an umount that
/// fails, a connection left idle as daemon-core's liveness monitor leaves one, and a
/// SIGKILL) is recorded, then replayed on a mock that plays the recorded daemon from its
/// script: every exchange and the death compare equal, and nothing of the replay runs on.
#[test]
fn a_recorded_session_replays_on_the_mock_with_no_difference_and_nothing_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, out, mut recorder) = record_mock_command(dir.path());
    let idle = UnixStream::connect(&sock).unwrap();
    converse(&sock, &[b"GET /api/v1/dae", b"mon HTTP/1.1\r\n", b"\r\n"], 3);
    let secret = "cGxhbnRlZC1pbi10aGUtcmVwbGF5LXRlc3Q";
    let config = serde_json::json!({ "device": { "backend": { "type": "registry", "config": { "auth": secret } } } });
    let body = serde_json::json!({ "source": "/b", "fs_type": "rafs", "config": config.to_string() }).to_string();
    let mount = format!("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    converse(&sock, &[mount.as_bytes()], 1);
    converse(&sock, &[b"GET /api/v1/daemon HTTP/1.1\r\n\r\nGET /api/v1/metrics HTTP/1.1\r\n\r\n"], 2);
    let failed = converse(&sock, &[b"DELETE /api/v1/mount?mountpoint=/nope HTTP/1.1\r\n\r\n"], 1);
    assert!(String::from_utf8_lossy(&failed).starts_with("HTTP/1.1 500 "));
    let moved = out.join("upstream.sock");
    let [pid] = testkit::pids_naming(moved.to_str().unwrap())[..] else {
        panic!("one daemon runs on the moved socket")
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(recorder.0.wait().unwrap().code(), Some(0));
    drop(idle);

    let output = replay(&out, "4");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("compared 5 exchanges: 0 differences"), "{stdout}");
    let script = std::fs::read_to_string(out.join("mock-script.json")).unwrap();
    assert!(script.contains("connection 5 request 1: DELETE /api/v1/mount?mountpoint=/nope"), "{script}");
    assert!(script.contains(r#""signal": "SIGKILL""#), "the death is scripted: {script}");
    let replayed = std::fs::read_to_string(out.join("replay/recording.jsonl")).unwrap();
    assert!(replayed.contains(r#""event":"daemon_exit""#) && replayed.contains(r#""signal":9"#), "{replayed}");
    for file in ["recording.jsonl", "mock-script.json", "replay/recording.jsonl"] {
        assert!(!std::fs::read_to_string(out.join(file)).unwrap().contains(secret), "the credential is in {file}");
    }
    assert!(testkit::pids_naming(out.join("replay").to_str().unwrap()).is_empty(), "a replay process runs on");
    assert!(!out.join("replay/api.sock").exists() && !out.join("replay/mock-nydusd").exists());

    // The scenario written beside it replays the same through `harness run`, the death
    // included (`wait_exit` for SIGKILL).
    let scenario = std::fs::read_to_string(out.join("replay.yaml")).unwrap();
    assert!(scenario.contains("replay_client") && scenario.contains("SIGKILL"), "{scenario}");
    let run = harness_run(&out.join("replay.yaml"));
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stdout));
    assert!(String::from_utf8_lossy(&run.stdout).contains("1 passed, 0 failed"));

    // `harness diff` holds the recording and its replay to each other as well.
    let diff = diff_recordings(&out, &out.join("replay"), "4");
    assert_eq!(diff.status.code(), Some(0), "{}", String::from_utf8_lossy(&diff.stdout));
    assert!(String::from_utf8_lossy(&diff.stdout).contains("compared 5 exchanges: 0 differences"));
}

/// `harness diff --recordings RECORDED REPLAYED --speed SPEED`.
fn diff_recordings(recorded: &Path, replayed: &Path, speed: &str) -> std::process::Output {
    Command::new(testkit::bin_exe!("harness"))
        .args(["diff".as_ref(), "--recordings".as_ref(), recorded.as_os_str(), replayed.as_os_str()])
        .args(["--speed", speed])
        .output()
        .unwrap()
}

/// `harness run <scenario>`, a failure's repro bundle kept beside the scenario.
fn harness_run(scenario: &Path) -> std::process::Output {
    let bundles = scenario.with_file_name("bundles");
    Command::new(testkit::bin_exe!("harness"))
        .args(["run".as_ref(), scenario.as_os_str(), "--color".as_ref(), "never".as_ref(), "--bundles".as_ref()])
        .arg(bundles)
        .output()
        .unwrap()
}

/// The comparison can fail: a recorded reply header the mock does not send is reported,
/// located, and fails the replay.
#[test]
fn a_replay_that_differs_from_its_recording_names_the_difference_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let reply =
        "HTTP/1.1 200 OK\r\nX-Recorded-Only: 1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let lines = [
        serde_json::json!({ "event": "recording", "version": 1, "t_ns": 1 }),
        serde_json::json!({ "event": "open", "conn": 1, "t_ns": 2 }),
        serde_json::json!({ "event": "data", "conn": 1, "dir": "request", "len": 32, "text": "GET /api/v1/daemon HTTP/1.1\r\n\r\n", "t_ns": 3 }),
        serde_json::json!({ "event": "data", "conn": 1, "dir": "reply", "len": reply.len(), "text": reply, "t_ns": 4 }),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("recording.jsonl"), text).unwrap();
    let output = replay(dir.path(), "1");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("DIFF connection 1 request 1: GET /api/v1/daemon: headers"), "{stdout}");
    assert!(stdout.contains("X-Recorded-Only: 1"), "{stdout}");
    assert!(stdout.contains("compared 1 exchanges: 1 differences"), "{stdout}");
    // The scenario written beside it fails the same way, naming the difference.
    let run = harness_run(&dir.path().join("replay.yaml"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("step 2 `replay_client`") && stdout.contains("X-Recorded-Only: 1"), "{stdout}");
    // So does `harness diff` between the recording and what the replay's client saw.
    let json = dir.path().join("diff.json");
    let diff = Command::new(testkit::bin_exe!("harness"))
        .args(["diff".as_ref(), "--recordings".as_ref(), dir.path().as_os_str()])
        .arg(dir.path().join("replay/recording.jsonl"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&diff.stderr));
    assert!(stdout.contains("DIFF connection 1 request 1: GET /api/v1/daemon: headers"), "{stdout}");
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(written["differences"][0]["what"], "headers", "{written}");
    // A recording that is not one is named, with its line, and nothing is compared.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"event\": \"open\"}\n").unwrap();
    let bad = diff_recordings(&dir.path().join("bad.jsonl"), dir.path(), "1");
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stdout));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bad.jsonl:1:"), "{stderr}");
}

/// A recording that cannot be read is refused with the file and line, before anything runs.
#[test]
fn a_bad_recording_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("recording.jsonl"),
        "{\"event\":\"recording\",\"version\":1,\"t_ns\":1}\nnot json\n{}\n",
    )
    .unwrap();
    let output = replay(dir.path(), "1");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("recording.jsonl:2: not JSON"), "{stdout}");
    assert!(!dir.path().join("replay").join("api.sock").exists());
    for speed in ["0", "1e-300", "NaN", "1e300"] {
        let bad_speed = replay(dir.path(), speed);
        let said = String::from_utf8_lossy(&bad_speed.stdout);
        assert_eq!(bad_speed.status.code(), Some(2), "{speed}: {said}");
        assert!(
            said.contains(&format!("--speed {}", speed.parse::<f64>().unwrap())) && said.contains("is outside"),
            "{said}"
        );
    }
}

/// A recorded mock whose supervisor socket is recorded too (`--id d1`, `extra` after).
fn record_with_supervisor(dir: &Path, name: &str, supervisor: &Path, extra: &[&str]) -> (PathBuf, PathBuf, Recorder) {
    let mut flags: Vec<&std::ffi::OsStr> =
        vec!["--supervisor".as_ref(), supervisor.as_os_str(), "--id".as_ref(), "d1".as_ref()];
    flags.extend(extra.iter().map(std::ffi::OsStr::new));
    record_mock(dir, name, &format!("{name}.sock"), &["--supervisor"], &flags)
}

/// The supervisor pieces of a recording: (flow, bytes, fds) summed per flow, and whether
/// any line holds more than sizes.
fn supervisor_traffic(out: &Path) -> (Vec<(String, u64, u64)>, bool) {
    let mut flows: Vec<(String, u64, u64)> = Vec::new();
    let mut content = false;
    for line in lines(out).iter().filter(|l| l["event"] == "supervisor_data") {
        content |= line.get("text").is_some() || line.get("base64").is_some();
        let flow = line["flow"].as_str().unwrap().to_owned();
        let (len, fds) = (line["len"].as_u64().unwrap(), line["fds"].as_u64().unwrap());
        match flows.iter_mut().find(|(f, ..)| *f == flow) {
            Some(entry) => (entry.1, entry.2) = (entry.1 + len, entry.2 + fds),
            None => flows.push((flow, len, fds)),
        }
    }
    (flows, content)
}

/// A failover's two legs through recorders: the daemon's sendfd reaches daemon-core's
/// supervisor with its state and fd, and the takeover hands them to a new daemon, which
/// serves the old one's instance. Each recording holds the sizes and fd counts, never the
/// state, and the relay's socket goes with its recorder.
#[test]
fn a_failover_through_recorders_is_relayed_with_its_fd_and_recorded_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let supervisors = daemon_core::supervisor::SupervisorSet::new(dir.path().join("supervisors")).unwrap();
    let supervisor = supervisors.create("d1");
    let (sock, out, recorder) = record_with_supervisor(dir.path(), "old", supervisor.socket(), &[]);
    let boot = testkit::write_stand_in(&sock.with_file_name("boot")).unwrap();
    let body = serde_json::json!({ "source": boot, "fs_type": "rafs", "config": testkit::ACCEPTED_CONFIG }).to_string();
    let mount = format!("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    converse(&sock, &[mount.as_bytes()], 1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = daemon_core::api::NydusdClient::new(&sock);
    // The peer the supervisor sees is the recorder, which relays the daemon's connection.
    let relay_pid = recorder.0.id();
    runtime.block_on(supervisor.fetch(relay_pid, client.send_fd(), Duration::from_secs(5))).unwrap();
    let saved = supervisor.saved().expect("the state was saved");
    assert!(String::from_utf8_lossy(&saved.data).contains("/a"), "the state names the instance");
    nix::sys::stat::fstat(&saved.fd).expect("the fd that came through is open");
    let (flows, content) = supervisor_traffic(&out);
    assert_eq!(flows, [("to_supervisor".to_owned(), saved.data.len() as u64, 1)]);
    assert!(!content, "a supervisor piece's content reached the recording");
    drop(recorder);

    let (new_sock, new_out, new_recorder) =
        record_with_supervisor(dir.path(), "new", supervisor.socket(), &["--upgrade"]);
    let new_client = daemon_core::api::NydusdClient::new(&new_sock);
    runtime.block_on(async {
        let offer = supervisor.offer(Duration::from_secs(5)).await.unwrap();
        offer.allow(new_recorder.0.id());
        new_client.takeover().await.unwrap();
        assert_eq!(offer.finished().await.unwrap(), new_recorder.0.id());
        new_client.start().await.unwrap();
        let info = new_client.get_daemon_info().await.unwrap();
        assert!(info.backend_collection.unwrap_or_default().contains_key("/a"), "the new daemon took over /a");
    });
    let (flows, content) = supervisor_traffic(&new_out);
    assert_eq!(flows, [("to_daemon".to_owned(), saved.data.len() as u64, 1)]);
    assert!(!content);
    let text = std::fs::read_to_string(new_out.join("recording.jsonl")).unwrap();
    assert!(text.contains(r#""event":"supervisor_close""#), "{text}");
    drop(new_recorder);
    assert!(!new_out.join("supervisor.sock").exists() && !out.join("supervisor.sock").exists());
}

/// CPU time (user + system, in clock ticks) the process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_recorder_polls_only_right_after_a_piece_and_spends_no_cpu_on_a_quiet_connection() {
    let (_daemon, _dir, listen, _out, recorder) = proxied_mock();
    let mut s = UnixStream::connect(&listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).unwrap() > 0);
    // The connection stays open and quiet; past the polling window the recorder sleeps.
    std::thread::sleep(Duration::from_millis(50));
    let before = cpu_ticks(recorder.0.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(recorder.0.id()) - before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    assert!(spent * 50 <= hz, "the recorder spent {spent} ticks (of {hz} a second) on a quiet connection");
    drop(s);
}

/// A small recording (one exchange) written by hand into `dir`.
fn small_recording(dir: &Path) {
    let request = "GET /api/v1/daemon HTTP/1.1\r\n\r\n";
    let reply = "HTTP/1.1 200 \r\nServer: Nydus API\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let lines = [
        serde_json::json!({"event": "recording", "version": 1, "t_ns": 1}),
        serde_json::json!({"event": "open", "conn": 1, "t_ns": 2}),
        serde_json::json!({"event": "data", "conn": 1, "dir": "request", "len": request.len(), "text": request, "t_ns": 3}),
        serde_json::json!({"event": "data", "conn": 1, "dir": "reply", "len": reply.len(), "text": reply, "t_ns": 4}),
        serde_json::json!({"event": "close", "conn": 1, "side": "client", "t_ns": 5}),
    ];
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    std::fs::write(dir.join("recording.jsonl"), text).unwrap();
}

/// A recording shared by someone else cannot make a replay write or delete through a
/// link (issue 26): before, a `mock-script.yaml` or `replay.yaml` link overwrote its
/// target and a `replay` link to a directory had `mock-nydusd` and `api.sock` deleted there.
#[test]
fn a_shared_recording_with_links_in_it_harms_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, victim) = (dir.path().join("rec"), dir.path().join("victim"));
    std::fs::create_dir_all(&rec).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    small_recording(&rec);
    for name in ["precious.txt", "mock-nydusd", "api.sock"] {
        std::fs::write(victim.join(name), name).unwrap();
    }
    // Each link is refused, naming it, and nothing behind it is touched.
    for (name, target) in [
        ("mock-script.json", victim.join("precious.txt")),
        ("replay.yaml", victim.join("precious.txt")),
        ("replay", victim.clone()),
    ] {
        std::os::unix::fs::symlink(&target, rec.join(name)).unwrap();
        let output = replay(&rec, "1");
        let said = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(2), "{name}: {said}");
        assert!(said.contains(&format!("{name} is a symbolic link")), "{said}");
        for file in ["precious.txt", "mock-nydusd", "api.sock"] {
            assert_eq!(std::fs::read_to_string(victim.join(file)).unwrap(), file, "{name}: {file} was touched");
        }
        std::fs::remove_file(rec.join(name)).unwrap();
    }
    // Inside `replay/` too; and the mock's own link is never left behind by a refusal.
    for name in ["recording.jsonl", "mock.log", "api.sock", "mnt", "mock-nydusd"] {
        let work = rec.join("replay");
        std::fs::create_dir_all(&work).unwrap();
        std::os::unix::fs::symlink(victim.join("precious.txt"), work.join(name)).unwrap();
        let output = replay(&rec, "1");
        let said = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(2), "replay/{name}: {said}");
        assert!(said.contains(&format!("{name} is a symbolic link")), "{said}");
        assert_eq!(std::fs::read_to_string(victim.join("precious.txt")).unwrap(), "precious.txt");
        let left: Vec<_> = std::fs::read_dir(&work).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from(name)], "replay/{name}: the refusal left {left:?}");
        std::fs::remove_dir_all(&work).unwrap();
    }
    // Without the links the same recording replays (the hand-made reply differs from the
    // mock's in its headers, which is beside the point here).
    let output = replay(&rec, "1");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("compared 1 exchanges"), "{said}");
}

/// A session of 20 000 calls on four keep-alive connections (a busy hour's polling)
/// replays with no difference (issue 26): before, its script was past the mock's size
/// limit and the replay waited about 2 s per event before blaming the daemon.
#[test]
fn a_session_of_twenty_thousand_calls_replays_with_no_difference() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, out, mut recorder) = record_mock_command(dir.path());
    let mut connections: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..20_000 {
        let s = &mut connections[i % 4];
        s.write_all(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").unwrap();
        let mut got = Vec::new();
        while !complete(&got, 1) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    }
    drop(connections);
    let moved = out.join("upstream.sock");
    let [pid] = testkit::pids_naming(moved.to_str().unwrap())[..] else { panic!("one daemon") };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(recorder.0.wait().unwrap().code(), Some(0));
    let output = replay(&out, "1");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("compared 20000 exchanges: 0 differences"), "{stdout}");
}

/// A recording stops at --max-bytes with a clear message and a last line saying so
/// (issue 26): before, one 50 MB request made a 9.1 GB recording.
#[test]
fn a_recording_stops_at_its_limit_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, out, mut recorder) = record_mock(dir.path(), "rec", "api.sock", &["--max-bytes", "4096"], &[]);
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Calls until the recorder stops (the proxy's socket goes with it).
    while recorder.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the recorder never stopped");
        if s.write_all(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").is_err() || s.read(&mut buf).unwrap_or(0) == 0 {
            break;
        }
    }
    let status = recorder.0.wait().unwrap();
    assert_eq!(status.code(), Some(4));
    let text = std::fs::read_to_string(out.join("recording.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!((last["event"].as_str(), last["max_bytes"].as_u64()), (Some("limit_reached"), Some(4096)), "{text}");
    assert!(text.len() < 4096 + 200, "{} bytes", text.len());
}
