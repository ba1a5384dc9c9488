//! The injector (faults in front of a real nydusd) with the mock as the daemon behind it,
//! so every fact here is checked without privileges: what a rule answers never reaches the
//! daemon, a rule's signal reaches the daemon and the injector ends the same way, the
//! injector's own death takes the daemon with it, a graceful stop removes both sockets,
//! the socket is held back as `startup` says, and what only the mock can do is refused
//! naming the rule. The real target's scenarios (`real::` in tests/scenarios.rs) run the
//! same injector in front of nydusd.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// A private directory with the harness linked in as `nydusd` (the injector, given
/// `--inject-nydusd`) and as `mock-nydusd` (the daemon behind it).
struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in ["nydusd", "mock-nydusd"] {
            std::os::unix::fs::symlink(testkit::bin_exe!("harness"), dir.path().join(name)).unwrap();
        }
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sock(&self) -> PathBuf {
        self.path("api.sock")
    }

    /// Starts the injector with `script` (YAML) in front of the mock.
    fn start(&self, script: &str) -> Injector {
        std::fs::write(self.path("script.yaml"), script).unwrap();
        let child = Command::new(self.path("nydusd"))
            .args(["--inject-nydusd".as_ref(), self.path("mock-nydusd").as_os_str()])
            .args(["--inject-dir".as_ref(), self.path("inject").as_os_str()])
            .args(["--mock-journal".as_ref(), self.path("journal.jsonl").as_os_str()])
            .args(["--mock-script".as_ref(), self.path("script.yaml").as_os_str()])
            .args(["--apisock".as_ref(), self.sock().as_os_str()])
            .args(["--mountpoint".as_ref(), self.path("mnt").as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Injector(child)
    }

    fn journal(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.journal().iter().map(|e| e["event"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// The events once `name` is among them (5 s at most): the injector records an event
    /// just after it happens, so a socket can be seen before its record is written.
    fn events_through(&self, name: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let events = self.events();
            if events.iter().any(|e| e == name) || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid of the daemon behind the injector, from its journal.
    fn daemon_pid(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = self.journal().iter().find(|e| e["event"] == "nydusd_started") {
                return pid["nydusd_pid"].as_i64().unwrap() as i32;
            }
            assert!(Instant::now() < deadline, "the injector never started its daemon");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

struct Injector(Child);

impl Injector {
    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.id() as i32)
    }

    /// Waits at most `within` for the injector to end.
    fn ended_within(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the injector still runs after {within:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Injector {
    /// Waits for the injector to refuse to start (exit 1) and returns what it printed.
    fn refusal(&mut self) -> String {
        let status = self.ended_within(Duration::from_secs(5));
        assert_eq!(status.code(), Some(1), "{status:?}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        stderr
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gone_within(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if host_facts::process::state(pid as u32).is_none_or(|s| s == 'Z') {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn a_scripted_answer_never_reaches_the_daemon_and_the_rest_passes_through_unchanged() {
    let bed = Bed::new();
    let _injector = bed.start(
        "rules:\n  - when: { method: PUT, path: /api/v1/daemon/exit }\n    then: [{ respond: { status: 500, body: '{\"code\":\"UNDEFINED\",\"message\":\"busy\"}' } }]\n",
    );
    testkit::wait_for(&bed.sock(), "the injector's socket");
    let refused = testkit::exchange(&bed.sock(), b"PUT /api/v1/daemon/exit HTTP/1.1\r\n\r\n");
    assert_eq!(
        refused,
        "HTTP/1.1 500 \r\nServer: Nydus API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 37\r\n\r\n{\"code\":\"UNDEFINED\",\"message\":\"busy\"}"
    );
    // The daemon still runs (the exit never reached it) and answers through the injector.
    assert_eq!(testkit::reported_state(&bed.sock()), nydusd_api::State::Running);
    let journal = bed.journal();
    let script = journal.iter().find(|e| e["event"] == "script").expect("the rule fired");
    assert_eq!((script["rule"].as_u64(), script["path"].as_str()), (Some(1), Some("/api/v1/daemon/exit")));
    let requests: Vec<&str> =
        journal.iter().filter(|e| e["event"] == "request").map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(requests, ["/api/v1/daemon"], "only the state query was passed on");
    assert!(journal.iter().all(|e| e["source"] == "inject"), "{journal:?}");
}

#[test]
fn a_rules_signal_kills_the_daemon_and_the_injector_dies_the_same_way_leaving_the_socket() {
    let bed = Bed::new();
    let mut injector = bed.start(
        "rules:\n  - when: { method: GET, path: /api/v1/daemon, call: { nth: 2 } }\n    then: [{ signal: SIGKILL }]\n",
    );
    testkit::wait_for(&bed.sock(), "the injector's socket");
    let daemon = bed.daemon_pid();
    assert_eq!(testkit::reported_state(&bed.sock()), nydusd_api::State::Running);
    // The second query fires the rule: no reply, the connection closes with the death.
    let mut stream = std::os::unix::net::UnixStream::connect(bed.sock()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut rest).unwrap();
    assert!(rest.is_empty(), "nothing is answered: {}", String::from_utf8_lossy(&rest));
    let status = injector.ended_within(Duration::from_secs(2));
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
    assert!(gone_within(daemon, Duration::from_secs(1)), "the daemon {daemon} outlived its kill");
    assert!(bed.sock().exists(), "a killed daemon leaves its socket, and so does the injector");
    let events = bed.events();
    assert!(events.iter().any(|e| e == "raise"), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("nydusd_exited"), "{events:?}");
}

#[test]
fn the_injectors_own_death_takes_the_daemon_with_it() {
    let bed = Bed::new();
    let mut injector = bed.start("{}");
    testkit::wait_for(&bed.sock(), "the injector's socket");
    let daemon = bed.daemon_pid();
    nix::sys::signal::kill(injector.pid(), Signal::SIGKILL).unwrap();
    injector.ended_within(Duration::from_secs(1));
    assert!(gone_within(daemon, Duration::from_secs(1)), "the daemon {daemon} outlived the injector");
}

#[test]
fn sigterm_is_passed_on_and_a_graceful_stop_removes_both_sockets() {
    let bed = Bed::new();
    let mut injector = bed.start("{}");
    testkit::wait_for(&bed.sock(), "the injector's socket");
    let daemon = bed.daemon_pid();
    nix::sys::signal::kill(injector.pid(), Signal::SIGTERM).unwrap();
    let status = injector.ended_within(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(gone_within(daemon, Duration::from_secs(1)));
    assert!(!bed.sock().exists(), "the socket the manager knows is removed with the daemon's");
    let left: Vec<_> = std::fs::read_dir(bed.path("inject")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the injector's directory holds {left:?}");
    let events = bed.events();
    let at = |name: &str| events.iter().position(|e| e == name).unwrap_or_else(|| panic!("no {name}: {events:?}"));
    assert!(at("signal") < at("nydusd_exited") && at("nydusd_exited") < at("socket_removed"), "{events:?}");
}

#[test]
fn the_socket_is_held_back_as_the_script_says_while_the_daemon_runs() {
    let bed = Bed::new();
    let started = Instant::now();
    let _injector = bed.start("startup: { socket_delay_ms: 300 }\n");
    bed.daemon_pid();
    testkit::wait_for(&bed.sock(), "the injector's socket");
    assert!(started.elapsed() >= Duration::from_millis(300), "the socket came after {:?}", started.elapsed());
    let events = bed.events_through("socket_created");
    let at = |name: &str| events.iter().position(|e| e == name).unwrap_or_else(|| panic!("no {name}: {events:?}"));
    assert!(at("nydusd_listening") < at("socket_delayed") && at("socket_delayed") < at("socket_created"));
}

#[test]
fn what_only_the_mock_can_do_is_refused_naming_the_rule_and_nothing_is_started() {
    let bed = Bed::new();
    let mut injector =
        bed.start("rules:\n  - name: lie\n    when: { path: /api/v1/daemon }\n    then: [{ state: INIT }]\n");
    let stderr = injector.refusal();
    assert!(
        stderr.contains("rule 1 (lie): `state`: a real nydusd reports its own state"),
        "the refusal names the rule: {stderr}"
    );
    assert!(!bed.events().iter().any(|e| e == "nydusd_started"), "no daemon was started");
    assert!(!bed.sock().exists());
}

#[test]
fn the_supervisor_socket_is_relayed_yet_reported_as_the_one_the_manager_named() {
    let bed = Bed::new();
    let supervisor = bed.path("supervisor.sock");
    std::fs::write(bed.path("script.yaml"), "{}").unwrap();
    let child = Command::new(bed.path("nydusd"))
        .args(["--inject-nydusd".as_ref(), bed.path("mock-nydusd").as_os_str()])
        .args(["--inject-dir".as_ref(), bed.path("inject").as_os_str()])
        .args(["--apisock".as_ref(), bed.sock().as_os_str()])
        .args(["--mountpoint".as_ref(), bed.path("mnt").as_os_str()])
        .args(["--id", "d1", "--supervisor"])
        .arg(&supervisor)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _injector = Injector(child);
    testkit::wait_for(&bed.sock(), "the injector's socket");
    let reply = testkit::exchange(&bed.sock(), b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let info: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(info["supervisor"].as_str().map(Path::new), Some(supervisor.as_path()), "{reply}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "the length follows the body: {reply}");
}

#[test]
fn a_discarded_reply_leaves_the_work_done_and_the_client_without_an_answer() {
    let bed = Bed::new();
    let _injector =
        bed.start("rules:\n  - when: { method: POST, path: /api/v1/mount }\n    then: [discard_reply, close]\n");
    testkit::wait_for(&bed.sock(), "the injector's socket");
    let boot = testkit::write_stand_in(&bed.sock().with_file_name("boot")).unwrap();
    let body = serde_json::json!({ "source": boot, "fs_type": "rafs", "config": testkit::ACCEPTED_CONFIG }).to_string();
    let mount = format!("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let mut stream = std::os::unix::net::UnixStream::connect(bed.sock()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut stream, mount.as_bytes()).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).unwrap();
    assert!(answer.is_empty(), "the reply was thrown away: {}", String::from_utf8_lossy(&answer));
    let info = testkit::exchange(&bed.sock(), b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""mountpoint":"/a""#), "the daemon mounted all the same: {info}");
    let journal = bed.journal();
    let mounted = journal.iter().find(|e| e["event"] == "request" && e["path"] == "/api/v1/mount");
    assert_eq!(mounted.and_then(|e| e["status"].as_u64()), Some(204), "{journal:?}");
}

#[test]
fn a_socket_directory_open_to_others_is_refused_and_nothing_is_started() {
    use std::os::unix::fs::PermissionsExt;
    let bed = Bed::new();
    std::fs::create_dir(bed.path("inject")).unwrap();
    std::fs::set_permissions(bed.path("inject"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut injector = bed.start("{}");
    let stderr = injector.refusal();
    assert!(
        stderr.contains(&format!("{} is open to other users (mode 777)", bed.path("inject").display())),
        "the refusal names the directory and its mode: {stderr}"
    );
    assert!(!bed.events().iter().any(|e| e == "nydusd_started"), "no daemon was started");
}

#[test]
fn requests_that_never_frame_pass_through_unmatched_and_nydusd_answers_them() {
    let bed = Bed::new();
    let _injector = bed.start("rules:\n  - when: { path: '*' }\n    then: [{ respond: { status: 418 } }]\n");
    testkit::wait_for(&bed.sock(), "the injector's socket");
    // A head that is not text is the HTTP library's business: no rule sees it, and the
    // daemon's own 400 comes back.
    let reply = testkit::exchange(&bed.sock(), b"GET /api/v1/\xff\xfe HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(!bed.events().iter().any(|e| e == "script"), "no rule matched unframed bytes");
}

#[test]
fn a_command_line_with_no_api_socket_is_the_real_nydusds_alone() {
    let bed = Bed::new();
    // `--version` is what the manager compares builds by at a restart: it must be the
    // daemon's own, not the injector's (the harness's mock would answer another build).
    let through = Command::new(bed.path("nydusd"))
        .args(["--inject-nydusd".as_ref(), bed.path("mock-nydusd").as_os_str(), "--version".as_ref()])
        .output()
        .unwrap();
    let direct = Command::new(bed.path("mock-nydusd")).arg("--version").output().unwrap();
    assert!(through.status.success(), "{through:?}");
    assert_eq!(through.stdout, direct.stdout);
    assert!(!bed.path("inject").exists(), "nothing of the injector's was made");
}
