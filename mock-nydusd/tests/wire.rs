//! The raw bytes of every reply the mock serves, pinned by insta snapshots. Each snapshot
//! was checked against nydusd's framing (`nydusd-api.md` §1.3, `real-nydusd-2.2.md` §4).

mod common;

use common::{MockProcess, exchange, redact};

fn body_req(method: &str, target: &str, body: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn bare_req(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: unix\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

#[test]
fn wire_replies_of_every_endpoint() {
    let mock = MockProcess::start(&[]);
    let mount = r#"{"source":"/boot","fs_type":"rafs","config":"{\"device\":{}}"}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("get_daemon_v1", bare_req("GET", "/api/v1/daemon")),
        ("get_daemon_v2", bare_req("GET", "/api/v2/daemon")),
        ("put_daemon_log_level", body_req("PUT", "/api/v1/daemon", r#"{"log_level":"debug"}"#)),
        ("put_daemon_bad_level", body_req("PUT", "/api/v2/daemon", r#"{"log_level":"loud"}"#)),
        ("get_events", bare_req("GET", "/api/v1/daemon/events")),
        ("mount", body_req("POST", "/api/v1/mount?mountpoint=/snap1", mount)),
        ("get_daemon_with_mount", bare_req("GET", "/api/v1/daemon")),
        ("mount_again", body_req("POST", "/api/v1/mount?mountpoint=/snap1", mount)),
        ("mount_missing_source", body_req("POST", "/api/v1/mount?mountpoint=/snap2", r#"{"config":"{}"}"#)),
        ("mount_no_mountpoint", body_req("POST", "/api/v1/mount", mount)),
        ("remount", body_req("PUT", "/api/v1/mount?mountpoint=/snap1", mount)),
        ("umount", bare_req("DELETE", "/api/v1/mount?mountpoint=/snap1")),
        ("umount_again", bare_req("DELETE", "/api/v1/mount?mountpoint=/snap1")),
        ("start_while_running", bare_req("PUT", "/api/v1/daemon/start")),
        ("takeover_while_running", bare_req("PUT", "/api/v1/daemon/fuse/takeover")),
        ("start_with_body", body_req("PUT", "/api/v1/daemon/start", "{}")),
        ("head_daemon", bare_req("HEAD", "/api/v1/daemon")),
        ("trailing_slash", bare_req("GET", "/api/v1/daemon/")),
        ("relative_target", bare_req("GET", "api/v1/daemon")),
        ("unknown_method", b"FOO /api/v1/daemon HTTP/1.1\r\n\r\n".to_vec()),
        ("bad_version", b"GET /api/v1/daemon HTTP/2.0\r\n\r\n".to_vec()),
        ("header_without_colon", b"GET /api/v1/daemon/events HTTP/1.1\r\nBadHeader\r\n\r\n".to_vec()),
        ("bad_content_length", b"PUT /api/v1/daemon HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec()),
        ("body_too_large", b"PUT /api/v1/daemon HTTP/1.1\r\nContent-Length: 51201\r\n\r\n".to_vec()),
        ("chunked_body", b"PUT /api/v1/daemon HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n15\r\n{\"log_level\":\"info\"}\r\n0\r\n\r\n".to_vec()),
    ];
    let mut transcript = String::new();
    for (name, raw) in cases {
        let reply = redact(&exchange(&mock.sock, &raw));
        transcript.push_str(&format!("=== {name}\n{}\n\n", reply.replace("\r\n", "\\r\\n\n")));
    }
    insta::assert_snapshot!(transcript);
}

#[test]
fn exit_replies_then_removes_the_socket_and_exits_zero() {
    let mut mock = MockProcess::start(&[]);
    let reply = exchange(&mock.sock, &bare_req("PUT", "/api/v1/daemon/exit"));
    assert_eq!(reply, "HTTP/1.1 204 \r\nServer: Nydus API\r\nConnection: keep-alive\r\n\r\n");
    let status = mock.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!mock.sock.exists());
}
