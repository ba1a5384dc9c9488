//! Takeover when the supervisor is not there or never sends. A handoff that succeeds is
//! tested with daemon-core's supervisor on the other side (daemon-core's lifecycle test
//! `supervisor::fetch_and_offer_hand_a_mock_state_and_its_open_file_to_a_successor`), so
//! the two sides of the protocol are checked against each other and not against a copy.

mod common;

use std::path::Path;

use testkit::{MockProcess, exchange};

fn put(sock: &Path, path: &str) -> String {
    exchange(sock, format!("PUT {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes())
}

#[test]
fn takeover_with_no_supervisor_listening_fails_and_stays_init() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = dir.path().join("absent.sock");
    let new =
        MockProcess::start(common::mock(), &["--id", "d1", "--supervisor", supervisor.to_str().unwrap(), "--upgrade"]);
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
    let new =
        MockProcess::start(common::mock(), &["--id", "d1", "--supervisor", supervisor.to_str().unwrap(), "--upgrade"]);
    let started = std::time::Instant::now();
    // Before the fix this never returned, and no other API request was answered either.
    let mut stream = std::os::unix::net::UnixStream::connect(&new.sock).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(&mut stream, b"PUT /api/v1/daemon/fuse/takeover HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let reply = testkit::read_response(&mut stream);
    let took = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert!(reply.contains("UpgradeManager"), "{reply}");
    assert!(took >= mock_nydusd::upgrade::PULL_DEADLINE, "failed after {took:?}, before the deadline");
    assert!(took < mock_nydusd::upgrade::PULL_DEADLINE * 3, "took {took:?}");
    let info = exchange(&new.sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""state":"INIT""#), "the API answers again: {info}");
    drop(holder.join());
}
