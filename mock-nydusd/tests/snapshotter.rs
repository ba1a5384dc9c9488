//! The mock as a snapshotter's `nydusd_path`: started the way containerd's nydus-snapshotter
//! starts nydusd (`pkg/manager/daemon_adaptor.go`, `BuildDaemonCommand`: its subcommand,
//! its flags in its order, no mock flag) and set up only through the environment
//! (`MOCK_NYDUSD_DIR`), as `mock-nydusd/README.md`'s how-to does it. No harness involved.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The snapshotter's root: `socket/<id>/api.sock`, `mnt/<id>`, `logs/<id>/nydusd.log`,
/// `config/<id>/config.json`, `supervisor/<id>.sock`; the mock's directory beside them.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        let root = Self { dir: tempfile::tempdir().unwrap() };
        std::fs::create_dir_all(root.mock_dir()).unwrap();
        root
    }

    fn path(&self, relative: &str) -> PathBuf {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    }

    fn mock_dir(&self) -> PathBuf {
        self.dir.path().join("mock")
    }

    fn sock(&self, id: &str) -> PathBuf {
        self.path(&format!("socket/{id}/api.sock"))
    }

    /// A shared FUSE daemon under the failover policy, as the builder lays out its flags:
    /// `fuse`, then `--id`, `--mountpoint`, `--apisock`, `--log-level`, `--supervisor`,
    /// `--log-file`, `--failover-policy` (struct field order), `--upgrade` for a successor.
    fn shared(&self, id: &str, upgrade: bool) -> Vec<String> {
        let mnt = self.path(&format!("mnt/{id}/x")).parent().unwrap().display().to_string();
        let mut args = vec!["fuse".to_owned()];
        if upgrade {
            args.push("--upgrade".into());
        }
        args.extend(["--id".into(), id.into(), "--mountpoint".into(), mnt]);
        args.extend(["--apisock".into(), self.sock(id).display().to_string(), "--log-level".into(), "info".into()]);
        args.extend(["--supervisor".into(), self.path(&format!("supervisor/{id}.sock")).display().to_string()]);
        args.extend(["--log-file".into(), self.path(&format!("logs/{id}/nydusd.log")).display().to_string()]);
        args.extend(["--failover-policy".into(), "resend".into()]);
        args
    }

    /// A dedicated daemon without a supervisor (recover policy none): `--thread-num`,
    /// `--config`, `--bootstrap`, `--mountpoint`, `--apisock`, `--log-level`,
    /// `--log-rotation-size`, `--log-file`, `--prefetch-files`, `--failover-policy`.
    fn dedicated(&self, id: &str) -> Vec<String> {
        let config = self.path(&format!("config/{id}/config.json"));
        std::fs::write(&config, testkit::ACCEPTED_CONFIG).unwrap();
        let boot = testkit::write_stand_in(&self.path(&format!("snapshots/{id}/image.boot"))).unwrap();
        let mnt = self.path(&format!("mnt/{id}/x")).parent().unwrap().display().to_string();
        let prefetch = self.path(&format!("prefetch/{id}"));
        std::fs::write(&prefetch, "/etc\n").unwrap();
        [
            "fuse",
            "--thread-num",
            "4",
            "--config",
            &config.display().to_string(),
            "--bootstrap",
            &boot,
            "--mountpoint",
            &mnt,
            "--apisock",
            &self.sock(id).display().to_string(),
            "--log-level",
            "info",
            "--log-rotation-size",
            "100",
            "--log-file",
            &self.path(&format!("logs/{id}/nydusd.log")).display().to_string(),
            "--prefetch-files",
            &prefetch.display().to_string(),
            "--failover-policy",
            "resend",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The mock as `nydusd_path` with `args`, its only setting `MOCK_NYDUSD_DIR` (none of
    /// this process's mock variables reach it).
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(common::mock());
        command.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        for name in mock_nydusd::ENVIRONMENT_VARIABLES {
            command.env_remove(name);
        }
        command.env("MOCK_NYDUSD_DIR", self.mock_dir());
        command
    }

    /// Starts [`Root::command`].
    fn spawn(&self, args: &[String]) -> Daemon {
        let child = self.command(args).spawn().unwrap();
        let apisock = args.iter().position(|a| a == "--apisock").map(|i| PathBuf::from(&args[i + 1])).unwrap();
        Daemon { child, sock: apisock }
    }

    fn journal(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.mock_dir().join(format!("{name}.journal.jsonl"))).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// A mount as the snapshotter's client sends it (`types.NewMountRequest`).
    fn mount_request(&self, mountpoint: &str) -> Vec<u8> {
        let boot = testkit::write_stand_in(&self.path(&format!("snapshots{mountpoint}/image.boot"))).unwrap();
        let body = json!({ "fs_type": "rafs", "source": boot, "config": testkit::ACCEPTED_CONFIG }).to_string();
        format!(
            "POST /api/v1/mount?mountpoint={mountpoint} HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

struct Daemon {
    child: Child,
    sock: PathBuf,
}

impl Daemon {
    fn wait_for_socket(&self) {
        testkit::wait_for(&self.sock, "the API socket");
    }

    /// The reply to `request` on a fresh connection, or "" when the daemon closed it unanswered.
    fn exchange(&self, request: &[u8]) -> String {
        testkit::exchange_or_closed(&self.sock, request).unwrap_or_default()
    }

    fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn requests<'a>(journal: &'a [Value], path: &str) -> Vec<&'a Value> {
    journal.iter().filter(|e| e["event"] == "request" && e["path"] == path).collect()
}

/// The how-to's example: of two daemons, d2 is scripted to die at its second mount. d1,
/// started the same way, is untouched; each daemon's journal holds its own requests.
#[test]
fn one_of_two_daemons_dies_at_its_second_mount_and_the_journals_say_so() {
    let root = Root::new();
    std::fs::write(
        root.mock_dir().join("d2.script.yaml"),
        "rules:\n  - name: die-at-the-second-mount\n    when: { method: POST, path: /api/v1/mount, call: { nth: 2 } }\n    then: [ { signal: SIGKILL } ]\n",
    )
    .unwrap();
    let d1 = root.spawn(&root.shared("d1", false));
    let mut d2 = root.spawn(&root.shared("d2", false));
    d1.wait_for_socket();
    d2.wait_for_socket();
    for mountpoint in ["/a", "/b"] {
        assert!(d1.exchange(&root.mount_request(mountpoint)).starts_with("HTTP/1.1 204 "), "d1 mounts {mountpoint}");
    }
    assert!(d2.exchange(&root.mount_request("/a")).starts_with("HTTP/1.1 204 "));
    assert_eq!(d2.exchange(&root.mount_request("/b")), "", "the second mount is never answered");
    assert_eq!(d2.wait(Duration::from_secs(5)).and_then(|s| s.signal()), Some(9), "d2 died by SIGKILL");
    assert!(d1.exchange(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").contains(r#""state":"RUNNING""#));

    let d1_journal = root.journal("d1");
    let d2_journal = root.journal("d2");
    let statuses = |journal: &[Value]| -> Vec<Value> {
        requests(journal, "/api/v1/mount").iter().map(|e| e["status"].clone()).collect()
    };
    assert_eq!(statuses(&d1_journal), [json!(204), json!(204)], "{d1_journal:?}");
    // d2: one mount answered, then the rule fired on the second and the daemon raised SIGKILL.
    assert_eq!(statuses(&d2_journal), [json!(204)], "{d2_journal:?}");
    let fired = d2_journal.iter().find(|e| e["event"] == "script").expect("the rule's record");
    assert_eq!(
        (&fired["name"], &fired["call"], &fired["path"]),
        (&json!("die-at-the-second-mount"), &json!(2), &json!("/api/v1/mount")),
        "{fired}"
    );
    assert!(d2_journal.iter().any(|e| e["event"] == "raise" && e["signal"] == "SIGKILL"), "{d2_journal:?}");
    // The start record holds the snapshotter's command line as given.
    let start = d2_journal.iter().find(|e| e["event"] == "start").expect("a start record");
    assert!(start["argv"].as_array().is_some_and(|argv| argv.iter().any(|a| a == "--failover-policy")), "{start}");
    // d1's own flags put nothing in its journal from d2, and no script applied to it.
    assert!(d1_journal.iter().all(|e| e["event"] != "script"), "{d1_journal:?}");
}

/// A successor started with `--upgrade` for the same id is the daemon's second process:
/// a rule scoped to `process: 2` fires in it and not in the first.
#[test]
fn a_successor_is_numbered_as_the_second_process_of_its_daemon() {
    let root = Root::new();
    std::fs::write(
        root.mock_dir().join("d1.script.yaml"),
        "rules:\n  - when: { method: GET, path: /api/v1/daemon, process: 2 }\n    then: [ { respond: { status: 503 } } ]\n",
    )
    .unwrap();
    let first = root.spawn(&root.shared("d1", false));
    first.wait_for_socket();
    assert!(first.exchange(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
    drop(first);
    let _ = std::fs::remove_file(root.sock("d1"));
    let second = root.spawn(&root.shared("d1", true));
    second.wait_for_socket();
    assert!(second.exchange(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503 "));
    let starts = std::fs::read_to_string(root.mock_dir().join("d1.starts")).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");
}

/// Every shape of command line the builder produces starts the mock and serves the API:
/// dedicated with its configuration, bootstrap and prefetch list (named by its socket's
/// directory, having no `--id`), and a singleton with `--fscache` and `--fscache-threads`.
#[test]
fn the_builders_command_lines_are_accepted() {
    let root = Root::new();
    let dedicated = root.spawn(&root.dedicated("d3"));
    dedicated.wait_for_socket();
    let info = dedicated.exchange(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    assert!(info.contains(r#""state":"RUNNING""#) && info.contains(r#""mountpoint":"/""#), "{info}");
    assert!(root.mock_dir().join("d3.journal.jsonl").is_file(), "named by its socket's directory");

    let cachefiles = root.path("cachefiles");
    std::fs::write(&cachefiles, b"").unwrap();
    let args: Vec<String> = [
        "singleton",
        "--fscache",
        &root.path("cache/x").parent().unwrap().display().to_string(),
        "--fscache-threads",
        "4",
        "--id",
        "s1",
        "--apisock",
        &root.sock("s1").display().to_string(),
        "--log-level",
        "info",
        "--supervisor",
        &root.path("supervisor/s1.sock").display().to_string(),
        "--log-file",
        &root.path("logs/s1/nydusd.log").display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let child = root.command(&args).env("MOCK_NYDUSD_CACHEFILES", &cachefiles).spawn().unwrap();
    let singleton = Daemon { child, sock: root.sock("s1") };
    singleton.wait_for_socket();
    assert!(singleton.exchange(b"GET /api/v1/daemon HTTP/1.1\r\n\r\n").contains(r#""state":"RUNNING""#));
    // Blob counters appear only when the kernel opens a blob: none yet.
    let metrics = singleton.exchange(b"GET /api/v1/metrics/blobcache HTTP/1.1\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 404 ") && metrics.contains("NoCounter"), "{metrics}");
}

/// A daemon that cannot start (its API socket's directory is missing) exits 1 and leaves
/// no control socket in the directory.
#[test]
fn a_failed_start_leaves_no_control_socket_behind() {
    let root = Root::new();
    let mountpoint = root.path("mnt/d9/x").parent().unwrap().display().to_string();
    let args = ["fuse", "--id", "d9", "--supervisor", "/nonexistent/s.sock", "--mountpoint", &mountpoint]
        .into_iter()
        .chain(["--apisock", "/nonexistent/dir/api.sock"])
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let status = root.command(&args).status().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(!root.mock_dir().join("d9.control.sock").exists(), "the control socket went with the daemon");
    assert!(root.mock_dir().join("d9.starts").is_file(), "the start was counted");
}

/// A bad value is refused before anything starts, naming the variable.
#[test]
fn a_bad_variable_is_a_usage_error_naming_it() {
    let out = Command::new(common::mock())
        .args(["fuse", "--mountpoint", "/nonexistent", "--apisock", "/nonexistent/api.sock"])
        .env("MOCK_NYDUSD_VERSION", "2.9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "Error: MOCK_NYDUSD_VERSION=\"2.9\": 2.2 or 2.4\n");
}
