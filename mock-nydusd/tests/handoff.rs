//! sendfd and takeover between two real mock processes through a supervisor socket played
//! by the test: the successor must restore the mounts and hold the very same open file.

mod common;

use std::io::{Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use common::{MockProcess, exchange};

/// Accepts one connection and reads the blob to EOF with the fd it carries.
fn receive(listener: &UnixListener) -> (Vec<u8>, OwnedFd) {
    let (conn, _) = listener.accept().unwrap();
    let (data, fds) = daemon_core::fdpass::receive(&conn, 256 * 1024, 64 * 1024 * 1024).unwrap();
    assert_eq!(fds.len(), 1, "exactly one fd per transfer");
    (data, fds.into_iter().next().unwrap())
}

/// Accepts one connection and sends `blob` with `fd`, then closes.
fn offer(listener: &UnixListener, blob: &[u8], fd: &OwnedFd) {
    let (mut conn, _) = listener.accept().unwrap();
    daemon_core::fdpass::send(&mut conn, blob, fd.as_fd()).unwrap();
}

fn put(sock: &Path, path: &str) -> String {
    exchange(sock, format!("PUT {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes())
}

#[test]
fn takeover_restores_mounts_and_the_same_open_file() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = dir.path().join("d1.sock");
    let sup = supervisor.to_str().unwrap();

    let old = MockProcess::start(&["--id", "d1", "--supervisor", sup]);
    let mount = r#"{"source":"/boot","fs_type":"rafs","config":"{}"}"#;
    let reply = exchange(
        &old.sock,
        format!("POST /api/v1/mount?mountpoint=/snap HTTP/1.1\r\nContent-Length: {}\r\n\r\n{mount}", mount.len())
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 204 "), "{reply}");

    // Push leg: the old daemon connects to the supervisor during sendfd.
    let listener = UnixListener::bind(&supervisor).unwrap();
    let fetch = std::thread::spawn(move || (receive(&listener), listener));
    assert!(put(&old.sock, "/api/v1/daemon/fuse/sendfd").starts_with("HTTP/1.1 204 "));
    let ((blob, held), listener) = fetch.join().unwrap();
    assert!(String::from_utf8_lossy(&blob).contains("/snap"));

    // Pull leg: a new daemon in --upgrade mode takes over from the supervisor.
    let new = MockProcess::start(&["--id", "d1", "--supervisor", sup, "--upgrade"]);
    let served = std::thread::scope(|s| {
        s.spawn(|| offer(&listener, &blob, &held));
        put(&new.sock, "/api/v1/daemon/fuse/takeover")
    });
    assert!(served.starts_with("HTTP/1.1 204 "), "{served}");
    let info = exchange(&new.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""state":"READY""#), "{info}");
    assert!(info.contains(r#""/snap":{"backend_type":"Rafs""#), "{info}");

    // The successor can hand the fd on again; it must be the same open file description:
    // a write through the supervisor's copy moves the offset seen through the new one.
    let refetch = std::thread::spawn(move || receive(&listener));
    assert!(put(&new.sock, "/api/v1/daemon/fuse/sendfd").starts_with("HTTP/1.1 204 "));
    let (_, again) = refetch.join().unwrap();
    let mut through_held = std::fs::File::from(held);
    let mut through_again = std::fs::File::from(again);
    let before = through_again.stream_position().unwrap();
    through_held.write_all(b"0123456789").unwrap();
    assert_eq!(through_again.stream_position().unwrap(), before + 10);

    assert!(put(&new.sock, "/api/v1/daemon/start").starts_with("HTTP/1.1 204 "));
    let info = exchange(&new.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""state":"RUNNING""#), "{info}");
}

#[test]
fn takeover_with_no_supervisor_listening_fails_and_stays_init() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = dir.path().join("absent.sock");
    let new = MockProcess::start(&["--id", "d1", "--supervisor", supervisor.to_str().unwrap(), "--upgrade"]);
    let reply = put(&new.sock, "/api/v1/daemon/fuse/takeover");
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert!(reply.contains(r#"CreateUnixStream(Os { code: 2, kind: NotFound"#), "{reply}");
    let info = exchange(&new.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""state":"INIT""#), "{info}");
    // The FSM already moved to Ready: a retry is an unexpected event (nydusd's quirk).
    assert!(put(&new.sock, "/api/v1/daemon/fuse/takeover").starts_with("HTTP/1.1 400 "));
}

#[test]
fn takeover_from_a_silent_supervisor_fails_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = dir.path().join("silent.sock");
    // Accepts the connection and never writes.
    let listener = std::os::unix::net::UnixListener::bind(&supervisor).unwrap();
    let holder = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let new = MockProcess::start(&["--id", "d1", "--supervisor", supervisor.to_str().unwrap(), "--upgrade"]);
    let started = std::time::Instant::now();
    // Before the fix this never returned, and no other API request was answered either.
    let mut stream = std::os::unix::net::UnixStream::connect(&new.sock).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(&mut stream, b"PUT /api/v1/daemon/fuse/takeover HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let reply = common::read_response(&mut stream);
    let took = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert!(reply.contains("UpgradeManager"), "{reply}");
    assert!(took >= mock_nydusd::upgrade::PULL_DEADLINE, "failed after {took:?}, before the deadline");
    assert!(took < mock_nydusd::upgrade::PULL_DEADLINE * 3, "took {took:?}");
    let info = exchange(&new.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""state":"INIT""#), "the API answers again: {info}");
    drop(holder.join());
}
