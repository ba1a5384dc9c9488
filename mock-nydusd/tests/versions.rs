//! `--mock-nydusd-version`: the mock behaves as nydusd 2.4 by default and as crates.io's
//! 2.2 on request, each as `real-nydusd-2.2.md` and the 2.4 fidelity issue saw the real
//! build do: what it reports, which routes exist, what sendfd and takeover do, and where
//! 2.4's state blob stops.

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use testkit::{MockProcess, exchange};

fn mount(sock: &std::path::Path, mountpoint: &str, config_len: usize) -> String {
    let config =
        serde_json::json!({ "device": { "backend": { "type": "localfs", "config": { "dir": "/b" } } }, "mode": "direct", "pad": "x".repeat(config_len) })
            .to_string();
    let boot = testkit::write_stand_in(&sock.with_file_name("boot")).unwrap();
    let body = serde_json::json!({ "source": boot, "fs_type": "rafs", "config": config }).to_string();
    let request =
        format!("POST /api/v1/mount?mountpoint={mountpoint} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    exchange(sock, request.as_bytes())
}

/// A supervisor socket that records whether anyone connected.
fn listener(dir: &std::path::Path) -> (std::path::PathBuf, UnixListener) {
    let path = dir.join("supervisor.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    (path, listener)
}

fn nobody_connected(listener: &UnixListener) -> bool {
    std::thread::sleep(Duration::from_millis(100));
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn as_2_2_it_reports_unknown_and_has_no_config_route() {
    let mock = MockProcess::start(common::mock(), &["--mock-nydusd-version", "2.2"]);
    let info = exchange(&mock.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""package_ver":"unknown","git_commit":"unknown""#), "{info}");
    let config = exchange(&mock.sock, b"GET /api/v1/config HTTP/1.1\r\n\r\n");
    assert!(config.starts_with("HTTP/1.1 404 ") && config.ends_with(r#""message":"NoRoute"}"#), "{config}");
    let out = std::process::Command::new(common::mock())
        .args(["--mock-nydusd-version", "2.2", "--version"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nydusd \rVersion: \tunknown\nGit Commit: \tunknown\n"));
    // 2.4, the default, has the route.
    let current = MockProcess::start(common::mock(), &[]);
    assert!(exchange(&current.sock, b"GET /api/v1/config HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
}

#[test]
fn as_2_2_sendfd_answers_204_without_ever_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let (supervisor, listener) = listener(dir.path());
    let mock = MockProcess::start(
        common::mock(),
        &["--mock-nydusd-version", "2.2", "--id", "d1", "--supervisor", supervisor.to_str().unwrap()],
    );
    let reply = exchange(&mock.sock, b"PUT /api/v1/daemon/fuse/sendfd HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 204 "), "{reply}");
    assert!(nobody_connected(&listener), "2.2's sendfd connected to the supervisor");
}

#[test]
fn as_2_2_a_takeover_reaches_ready_with_nothing_and_the_start_after_it_fails() {
    let mock = MockProcess::start(common::mock(), &["--mock-nydusd-version", "2.2", "--upgrade"]);
    let reply = exchange(&mock.sock, b"PUT /api/v1/daemon/fuse/takeover HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 204 "), "{reply}");
    assert_eq!(testkit::reported_state(&mock.sock), nydusd_api::State::Ready);
    let start = exchange(&mock.sock, b"PUT /api/v1/daemon/start HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(start.starts_with("HTTP/1.1 500 "), "{start}");
    assert!(start.contains(r#"failed to start service, failed to create FUSE server, "#), "{start}");
    assert_eq!(testkit::reported_state(&mock.sock), nydusd_api::State::Ready);
}

#[test]
fn as_2_2_failover_policy_none_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let out = std::process::Command::new(common::mock())
        .args(["--mock-nydusd-version", "2.2", "fuse", "--failover-policy", "none", "--mountpoint"])
        .arg(dir.path())
        .arg("--apisock")
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'none' for '--failover-policy"));
    assert!(!sock.exists());
}

#[test]
fn as_2_4_sendfd_fails_past_versionize_string_limit_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (supervisor, listener) = listener(dir.path());
    let mock = MockProcess::start(common::mock(), &["--id", "d1", "--supervisor", supervisor.to_str().unwrap()]);
    assert!(mount(&mock.sock, "/small", 100).starts_with("HTTP/1.1 204 "));
    // A 20 000-byte pad makes a configuration of more than 16 KiB; the mount itself works.
    assert!(mount(&mock.sock, "/large", 20_000).starts_with("HTTP/1.1 204 "));
    let reply = exchange(&mock.sock, b"PUT /api/v1/daemon/fuse/sendfd HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert!(reply.contains(r#"Failed to save snapshot: Versionize(StringLength("#), "{reply}");
    assert!(nobody_connected(&listener), "a state past the limit still reached the supervisor");
    // Both instances are still served.
    let info = exchange(&mock.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""/large""#) && info.contains(r#""/small""#), "{info}");
}

#[test]
fn shuffled_maps_come_back_in_more_than_one_order() {
    let mock = MockProcess::start(common::mock(), &["--mock-shuffle-maps"]);
    for mountpoint in ["/s1", "/s2", "/s3"] {
        assert!(mount(&mock.sock, mountpoint, 0).starts_with("HTTP/1.1 204 "));
    }
    let order = || {
        let info = exchange(&mock.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
        let body = info.split("\r\n\r\n").nth(1).unwrap().to_owned();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        value["backend_collection"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    let orders: std::collections::BTreeSet<Vec<String>> = (0..30).map(|_| order()).collect();
    // 30 draws of 6 orders all alike has a chance of 6^-29.
    assert!(orders.len() > 1, "always {orders:?}");
    assert!(orders.iter().all(|o| o.len() == 3));
    // Without the flag the order is the sorted one, every time.
    let sorted = MockProcess::start(common::mock(), &[]);
    for mountpoint in ["/s2", "/s1", "/s3"] {
        assert!(mount(&sorted.sock, mountpoint, 0).starts_with("HTTP/1.1 204 "));
    }
    let info = exchange(&sorted.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    let (a, b, c) = (info.find(r#""/s1""#).unwrap(), info.find(r#""/s2""#).unwrap(), info.find(r#""/s3""#).unwrap());
    assert!(a < b && b < c, "{info}");
}
