//! Every scripted fault, observed from outside the process: on the API socket, by exit
//! status, and in the journal. What daemon-core's client makes of them is daemon-core's
//! lifecycle test `client::`.

mod common;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nydusd_api::State;
use testkit::{MockProcess, exchange, read_response};

const GET_INFO: &[u8] = b"GET /api/v1/daemon HTTP/1.1\r\n\r\n";
const GET_EVENTS: &[u8] = b"GET /api/v1/daemon/events HTTP/1.1\r\n\r\n";

fn rule(when: &str, then: &str) -> String {
    format!("rules:\n  - name: under-test\n    when: {when}\n    then: {then}\n")
}

/// The events the mock journalled with this name.
fn events_named(mock: &MockProcess, name: &str) -> Vec<serde_json::Value> {
    mock.events().into_iter().filter(|e| e["event"] == name).collect()
}

/// Reads until EOF and returns what came.
fn read_to_eof(stream: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn delay_holds_the_request_lock_so_other_connections_wait_too() {
    let mock = MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/daemon}", "[{delay_ms: 300}]"), &[]);
    mock.wait_for_socket();
    let mut slow = mock.connect();
    let mut other = mock.connect();
    let start = Instant::now();
    slow.write_all(GET_INFO).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    other.write_all(GET_EVENTS).unwrap();
    assert!(read_response(&mut other).starts_with("HTTP/1.1 200 "));
    // The events request is not scripted, but it waited for the delayed one.
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    assert!(read_response(&mut slow).contains(r#""state":"RUNNING""#));
    let fired = events_named(&mock, "script");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["name"], "under-test");
}

#[test]
fn respond_replaces_the_reply_with_nydusd_framing() {
    let mock = MockProcess::start_scripted(
        common::mock(),
        &rule(
            "{method: PUT, path: /api/v1/daemon/start}",
            r#"[{respond: {status: 503, body: '{"code":"UNDEFINED","message":"Busy"}'}}]"#,
        ),
        &[],
    );
    mock.wait_for_socket();
    let reply = exchange(&mock.sock, b"PUT /api/v1/daemon/start HTTP/1.1\r\n\r\n");
    assert_eq!(
        reply,
        "HTTP/1.1 503 \r\nServer: Nydus API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 37\r\n\r\n{\"code\":\"UNDEFINED\",\"message\":\"Busy\"}"
    );
    // The daemon never saw the request: no state change, no request entry.
    assert!(events_named(&mock, "request").is_empty());
}

#[test]
fn a_truncated_body_then_close_ends_mid_body() {
    let mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{path: /api/v1/daemon}", "[{respond: {status: 200, body: '{\"state\":', content_length: 200}}, close]"),
        &[],
    );
    mock.wait_for_socket();
    let mut raw = mock.connect();
    raw.write_all(GET_INFO).unwrap();
    let bytes = read_to_eof(&mut raw);
    assert!(String::from_utf8_lossy(&bytes).ends_with("Content-Length: 200\r\n\r\n{\"state\":"));
}

#[test]
fn a_short_content_length_leaves_garbage_before_the_next_reply() {
    let mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{path: /api/v1/daemon, call: {nth: 1}}", "[{respond: {status: 200, body: '{}XYZ', content_length: 2}}]"),
        &[],
    );
    mock.wait_for_socket();
    let mut s = mock.connect();
    s.write_all(GET_INFO).unwrap();
    assert!(read_response(&mut s).ends_with("\r\n\r\n{}"));
    s.write_all(GET_INFO).unwrap();
    let mut next = [0u8; 3];
    s.read_exact(&mut next).unwrap();
    assert_eq!(&next, b"XYZ", "the extra body bytes come first on the connection");
}

#[test]
fn raw_bytes_are_written_verbatim() {
    let mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{}", r#"[{raw: "HTTP/1.0 418 I'm a teapot\r\n\r\n"}]"#),
        &[],
    );
    mock.wait_for_socket();
    let mut s = mock.connect();
    s.write_all(GET_INFO).unwrap();
    let mut head = [0u8; 29];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.0 418 I'm a teapot\r\n\r\n");
}

#[test]
fn hang_never_answers_that_connection_but_serves_the_others() {
    let mock = MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/daemon}", "[hang]"), &[]);
    mock.wait_for_socket();
    let mut hung = mock.connect();
    hung.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    hung.write_all(GET_INFO).unwrap();
    let mut byte = [0u8; 1];
    let err = hung.read(&mut byte).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "the connection is open and silent");
    assert!(exchange(&mock.sock, GET_EVENTS).starts_with("HTTP/1.1 200 "));
}

#[test]
fn close_drops_the_connection_without_a_reply() {
    let mock = MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/daemon}", "[close]"), &[]);
    mock.wait_for_socket();
    let mut s = mock.connect();
    s.write_all(GET_INFO).unwrap();
    assert!(read_to_eof(&mut s).is_empty());
}

#[test]
fn discard_reply_does_the_work_and_the_client_gets_only_what_follows() {
    let mut mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{method: PUT, path: /api/v1/daemon/exit}", "[discard_reply, {respond: {status: 500}}]"),
        &[],
    );
    mock.wait_for_socket();
    let mut stream = mock.connect();
    stream.write_all(b"PUT /api/v1/daemon/exit HTTP/1.1\r\n\r\n").unwrap();
    // The scripted 500 is all the client sees; the daemon exited all the same.
    assert_eq!(read_response(&mut stream), "HTTP/1.1 500 \r\nServer: Nydus API\r\nConnection: keep-alive\r\n\r\n");
    let status = mock.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let handled = events_named(&mock, "request");
    assert_eq!(handled.iter().map(|e| e["status"].as_u64()).collect::<Vec<_>>(), [Some(204)], "{handled:?}");
}

#[test]
fn discard_reply_alone_leaves_the_client_waiting_on_that_connection() {
    let mock =
        MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/daemon/events}", "[discard_reply]"), &[]);
    mock.wait_for_socket();
    let mut stream = mock.connect();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    stream.write_all(GET_EVENTS).unwrap();
    let mut byte = [0u8; 1];
    let waited = stream.read(&mut byte).unwrap_err();
    assert_eq!(waited.kind(), std::io::ErrorKind::WouldBlock, "nothing comes, the connection stays open");
    // Other connections are served.
    assert!(exchange(&mock.sock, GET_INFO).starts_with("HTTP/1.1 200 "));
    assert_eq!(events_named(&mock, "request").iter().filter(|e| e["path"] == "/api/v1/daemon/events").count(), 1);
}

#[test]
fn a_scripted_state_moves_the_state_machine_too() {
    let mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{method: GET, path: /api/v1/daemon, call: {nth: 1}}", "[{state: READY}]"),
        &[],
    );
    mock.wait_for_socket();
    // The state changes before the daemon answers the same request.
    assert_eq!(testkit::reported_state(&mock.sock), State::Ready);
    assert!(exchange(&mock.sock, b"PUT /api/v1/daemon/start HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 204 "));
    assert_eq!(testkit::reported_state(&mock.sock), State::Running);
}

/// A stop signal does not wait behind a scripted delay (issue 26): before, SIGTERM waited
/// for the request lock the delay held, so a destroy waited out the delay.
#[test]
fn sigterm_during_a_scripted_delay_stops_at_once_without_answering_it() {
    let mut mock =
        MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/daemon}", "[{delay_ms: 30000}]"), &[]);
    mock.wait_for_socket();
    let mut slow = mock.connect();
    slow.write_all(GET_INFO).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mock.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = mock.child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "stopped after {:?}", started.elapsed());
    assert_eq!(status.code(), Some(0), "a graceful stop");
    assert!(read_to_eof(&mut slow).is_empty(), "the delayed request got no reply");
    assert!(!mock.sock.exists(), "the socket was removed as on any graceful stop");
}

#[test]
fn exit_ends_the_process_with_the_code_and_leaves_the_socket() {
    let mut mock =
        MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/daemon/start}", "[{exit: 7}]"), &[]);
    mock.wait_for_socket();
    let mut s = mock.connect();
    s.write_all(b"PUT /api/v1/daemon/start HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_to_eof(&mut s).is_empty());
    assert_eq!(mock.child.wait().unwrap().code(), Some(7));
    assert!(mock.sock.exists());
}

#[test]
fn sigkill_before_acting_gives_no_reply() {
    let mut mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{path: /api/v1/daemon/fuse/sendfd}", "[{signal: SIGKILL}]"),
        &[],
    );
    mock.wait_for_socket();
    let mut s = mock.connect();
    s.write_all(b"PUT /api/v1/daemon/fuse/sendfd HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_to_eof(&mut s).is_empty());
    assert_eq!(mock.child.wait().unwrap().signal(), Some(9));
    let raised = events_named(&mock, "raise");
    assert_eq!(raised[0]["signal"], "SIGKILL", "the journal names the death before it happens");
}

#[test]
fn sigkill_after_acting_delivers_the_reply_first() {
    let mut mock =
        MockProcess::start_scripted(common::mock(), &rule("{path: /api/v1/mount}", "[reply, {signal: SIGKILL}]"), &[]);
    mock.wait_for_socket();
    let mut s = mock.connect();
    let boot = testkit::write_stand_in(&mock.path("boot")).unwrap();
    let body = serde_json::json!({ "source": boot, "fs_type": "rafs", "config": testkit::ACCEPTED_CONFIG }).to_string();
    write!(s, "POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let bytes = read_to_eof(&mut s);
    assert!(bytes.starts_with(b"HTTP/1.1 204 "), "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(mock.child.wait().unwrap().signal(), Some(9));
}

#[test]
fn abort_dies_by_sigabrt_like_a_nydusd_panic() {
    let mut mock = MockProcess::start_scripted(common::mock(), &rule("{}", "[{signal: SIGABRT}]"), &[]);
    mock.wait_for_socket();
    let mut s = mock.connect();
    s.write_all(GET_INFO).unwrap();
    assert!(read_to_eof(&mut s).is_empty());
    assert_eq!(mock.child.wait().unwrap().signal(), Some(nix::libc::SIGABRT));
}

#[test]
fn sigterm_from_a_rule_is_a_graceful_stop_after_the_reply() {
    let mut mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{path: /api/v1/daemon/events}", "[reply, {signal: SIGTERM}]"),
        &[],
    );
    mock.wait_for_socket();
    assert!(exchange(&mock.sock, GET_EVENTS).starts_with("HTTP/1.1 200 "));
    assert_eq!(mock.child.wait().unwrap().code(), Some(0));
    assert!(!mock.sock.exists(), "a graceful stop removes the socket");
}

#[test]
fn a_withheld_socket_never_appears_but_the_control_socket_answers() {
    let mock = MockProcess::start_scripted(common::mock(), "startup: {no_socket: true}\n", &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!mock.sock.exists());
    let state = mock.control("GET", "/state", "");
    assert!(state.contains(r#""state":"RUNNING""#), "{state}");
    assert_eq!(events_named(&mock, "socket_withheld").len(), 1);
}

#[test]
fn a_late_socket_appears_after_the_delay() {
    let started = Instant::now();
    let mock = MockProcess::start_scripted(common::mock(), "startup: {socket_delay_ms: 400}\n", &[]);
    assert!(!mock.sock.exists(), "the control socket is up before the API socket");
    mock.wait_for_socket();
    assert!(started.elapsed() >= Duration::from_millis(400));
    // The socket accepts connections as soon as it is bound; its journal line follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    let names = loop {
        let names: Vec<_> = mock.events().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
        if names.len() >= 3 || Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(names, ["start", "socket_delayed", "socket_created"]);
}

#[test]
fn a_startup_hold_reports_the_held_state_then_the_real_one() {
    let mock = MockProcess::start_scripted(common::mock(), "startup: {hold: {state: INIT, ms: 300}}\n", &[]);
    mock.wait_for_socket();
    assert_eq!(testkit::reported_state(&mock.sock), State::Init);
    let deadline = Instant::now() + Duration::from_secs(10);
    while testkit::reported_state(&mock.sock) != State::Running {
        assert!(Instant::now() < deadline, "the hold never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ended: Vec<_> = events_named(&mock, "state").into_iter().filter(|e| e["hold_ended"] == true).collect();
    assert_eq!(ended.len(), 1);
}

#[test]
fn die_after_kills_the_daemon_on_schedule() {
    let mut killed = MockProcess::start_scripted(common::mock(), "startup: {die_after: {ms: 200}}\n", &[]);
    assert_eq!(killed.child.wait().unwrap().signal(), Some(9), "SIGKILL unless told otherwise");
    let mut exited = MockProcess::start_scripted(common::mock(), "startup: {die_after: {ms: 100, exit: 3}}\n", &[]);
    assert_eq!(exited.child.wait().unwrap().code(), Some(3));
}

#[test]
fn the_control_socket_replaces_the_script_and_serves_the_journal() {
    let mock = MockProcess::start_scripted(common::mock(), "rules: []\n", &[]);
    mock.wait_for_socket();
    assert!(exchange(&mock.sock, GET_EVENTS).starts_with("HTTP/1.1 200 "));

    let replaced = mock.control("PUT", "/script", &rule("{path: /api/v1/daemon/events}", "[close]"));
    assert!(replaced.starts_with("HTTP/1.1 204 "), "{replaced}");
    let mut s = mock.connect();
    s.write_all(GET_EVENTS).unwrap();
    assert!(read_to_eof(&mut s).is_empty(), "the new rule applies at once");
    let current = mock.control("GET", "/script", "");
    assert!(
        current
            .ends_with(r#"{"rules":[{"name":"under-test","when":{"path":"/api/v1/daemon/events"},"then":["close"]}]}"#),
        "{current}"
    );

    let rejected = mock.control("PUT", "/script", "rules:\n  - name: bad\n    then: [{delay_ms: soon}]\n");
    assert!(rejected.starts_with("HTTP/1.1 400 "), "{rejected}");
    assert!(rejected.contains("control socket:3:23: rule 1 (bad): invalid u64 for field `delay_ms`"), "{rejected}");
    // The rejected script did not replace the working one.
    let mut s = mock.connect();
    s.write_all(GET_EVENTS).unwrap();
    assert!(read_to_eof(&mut s).is_empty());

    assert!(mock.control("DELETE", "/script", "").starts_with("HTTP/1.1 204 "));
    assert!(exchange(&mock.sock, GET_EVENTS).starts_with("HTTP/1.1 200 "));

    let journal = mock.control("GET", "/journal", "");
    let body = &journal[journal.find("\r\n\r\n").unwrap() + 4..];
    let entries: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["start", "socket_created", "request", "script_replaced", "script", "script", "script_replaced", "request"]
    );
    assert_eq!(entries, mock.events(), "memory and file hold the same entries");
}

#[test]
fn a_malformed_script_file_is_a_start_up_error_naming_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.yaml");
    std::fs::write(
        &script,
        "rules:\n  - name: ok\n    then: [reply]\n  - name: typo\n    when: {metod: GET}\n    then: [reply]\n",
    )
    .unwrap();
    let sock = dir.path().join("api.sock");
    let output = std::process::Command::new(testkit::bin_exe!("mock-nydusd"))
        .args([
            "fuse",
            "--mountpoint",
            "/tmp",
            "--apisock",
            sock.to_str().unwrap(),
            "--mock-script",
            script.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml:5:12: rule 2 (typo): unknown field `metod`"), "{stderr}");
    assert!(!sock.exists());
}

#[test]
fn call_and_state_conditions_select_requests_on_the_wire() {
    let mock = MockProcess::start_scripted(
        common::mock(),
        "rules:\n  - when: {path: /api/v1/daemon/events, call: {every: 2}}\n    then: [close]\n  - when: {state: INIT}\n    then: [close]\n",
        &[],
    );
    mock.wait_for_socket();
    // A connection that is answered stays open; a closed one reads EOF at once.
    let outcomes: Vec<bool> = (0..4)
        .map(|_| {
            let mut s = mock.connect();
            s.write_all(GET_EVENTS).unwrap();
            let mut first = [0u8; 1];
            s.read(&mut first).unwrap() == 1
        })
        .collect();
    assert_eq!(outcomes, [true, false, true, false]);
}

#[test]
fn hang_up_all_closes_every_connection_but_the_process_lives_and_serves_new_ones() {
    let mut mock = MockProcess::start_scripted(
        common::mock(),
        &rule("{method: PUT, path: /api/v1/daemon/start}", "[hang_up_all]"),
        &[],
    );
    mock.wait_for_socket();
    // An idle connection, as the liveness monitor holds one (used once, so it is accepted).
    let mut idle = mock.connect();
    idle.write_all(GET_INFO).unwrap();
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200 "));
    let mut trigger = mock.connect();
    trigger.write_all(b"PUT /api/v1/daemon/start HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_to_eof(&mut trigger).is_empty(), "the triggering request gets no reply");
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_to_eof(&mut idle).is_empty(), "the idle connection hung up too");
    assert!(mock.child.try_wait().unwrap().is_none(), "the process lives");
    assert!(exchange(&mock.sock, GET_INFO).starts_with("HTTP/1.1 200 "), "a new connection is served");
    assert_eq!(events_named(&mock, "hang_up_all").len(), 1);
}

#[test]
fn a_rule_scoped_to_another_process_does_not_fire_here() {
    let script = rule("{path: /api/v1/daemon, process: 2}", r#"[{respond: {status: 500, body: "{}"}}]"#);
    let first = MockProcess::start_scripted(common::mock(), &script, &[]);
    first.wait_for_socket();
    assert!(exchange(&first.sock, GET_INFO).starts_with("HTTP/1.1 200 "), "process 1 answers normally");
    let second = MockProcess::start_scripted(common::mock(), &script, &["--mock-process", "2"]);
    second.wait_for_socket();
    assert!(exchange(&second.sock, GET_INFO).starts_with("HTTP/1.1 500 "), "process 2 obeys the rule");
}

/// Out of fds, the control socket's accept fails (EMFILE); once fds are free again it
/// serves. Before, the first accept error ended its accept loop for good.
#[test]
fn the_control_socket_serves_again_after_running_out_of_fds() {
    let mock = MockProcess::start(common::mock(), &[]);
    let pid = mock.child.id() as i32;
    let set_soft_limit = |soft: Option<u64>| {
        let mut old = nix::libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: reads the current limits into `old`; a null new-limit pointer changes nothing.
        let rc = unsafe { nix::libc::prlimit(pid, nix::libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        // Only the soft limit moves: raising a hard limit needs CAP_SYS_RESOURCE.
        let new = nix::libc::rlimit { rlim_cur: soft.unwrap_or(old.rlim_max), rlim_max: old.rlim_max };
        // SAFETY: reads `new`; a null old-limit pointer writes nothing.
        let rc = unsafe { nix::libc::prlimit(pid, nix::libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    set_soft_limit(Some(open_now + 4));
    // Connections queue in the backlog whether or not the mock can accept them.
    let held: Vec<_> = (0..20).map(|_| std::os::unix::net::UnixStream::connect(&mock.control).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mock.events().iter().any(|e| e["event"] == "control_accept_failed") {
        assert!(Instant::now() < deadline, "the mock never ran out of fds");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(held);
    set_soft_limit(None);
    let state = mock.control("GET", "/state", "");
    assert!(state.starts_with("HTTP/1.1 200 ") && state.contains(r#""state":"RUNNING""#), "{state}");
}
