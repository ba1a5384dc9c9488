//! Whole sessions recorded through `harness record` and replayed with `harness replay`:
//! daemon-core's client starts a daemon, mounts two instances, reads metrics, fails an
//! umount and SIGKILLs it, against the mock (`mock::`) and a real nydusd (`real::`, 2.2
//! from crates.io; `real24::`, `$NYDUSD_2_4`); nydusctl talks through the proxy
//! (`*::nydusctl_session`). Each replay must show no difference, the nydusctl one must
//! print what nydusctl printed against the recorded daemon, and nothing of either may run
//! on or stay mounted. Real peers are listed as skipped, with the reason, where they are
//! missing; `real::` tests mount FUSE and run in nextest's privileged group.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_core::api::{ErrorKind, NydusdClient};
use host_facts::requirement::{Requirement, installed_nydusd, nydusd_2_4, unmet};
use libtest_mimic::{Arguments, Failed, Trial};
use nydusd_api::MountRequest;

/// A daemon under test: the program, the flags it needs here, whether it builds real images.
#[derive(Clone)]
struct Peer {
    program: PathBuf,
    real: bool,
}

impl Peer {
    fn mock() -> Self {
        Self { program: testkit::bin_exe!("harness"), real: false }
    }

    /// The command line of a FUSE daemon on `dir`'s api.sock and mnt/.
    fn command(&self, dir: &Path) -> Vec<std::ffi::OsString> {
        // The harness binary is the mock when started as `nydusd`; a link in `dir` goes
        // with the test's directory.
        let program = if self.real {
            self.program.clone()
        } else {
            let link = dir.join("nydusd");
            std::os::unix::fs::symlink(&self.program, &link).unwrap();
            link
        };
        let mut argv: Vec<std::ffi::OsString> = vec![
            program.into(),
            "fuse".into(),
            "--apisock".into(),
            dir.join("api.sock").into(),
            "--mountpoint".into(),
            dir.join("mnt").into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if self.real {
            // Root here lacks CAP_SYS_RESOURCE, so real nydusd must not raise its fd limit.
            argv.extend(["--rlimit-nofile".into(), "0".into()]);
        }
        argv
    }
}

/// `harness record --out dir/rec -- <command>`, its output in dir/recorder.log. Dropping
/// it sends SIGTERM (the recorder then ends its daemon), SIGKILL after 5 s, and detaches
/// whatever is still mounted under the directory.
struct Recorder {
    child: Child,
    dir: PathBuf,
}

impl Recorder {
    fn start(dir: &Path, command: &[std::ffi::OsString]) -> Self {
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        let log = std::fs::File::create(dir.join("recorder.log")).unwrap();
        let child = Command::new(testkit::bin_exe!("harness"))
            .arg("record")
            .arg("--out")
            .arg(dir.join("rec"))
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let recorder = Self { child, dir: dir.to_owned() };
        // Its first line is written once it listens.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(dir.join("rec/recording.jsonl"))
            .is_ok_and(|t| t.contains(r#""event":"recording""#))
        {
            assert!(Instant::now() < deadline, "the recorder never listened: {}", recorder.log());
            std::thread::sleep(Duration::from_millis(5));
        }
        recorder
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("recorder.log")).unwrap_or_default()
    }

    /// The pid of the daemon the recorder started, from the recording's first line.
    fn daemon_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.dir.join("rec/recording.jsonl")).unwrap();
        let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        header["pid"].as_i64().expect("the recording names the daemon's pid") as i32
    }

    /// Waits (at most 10 s) for the recorder to end by itself, as it does when its daemon dies.
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the recorder outlived its daemon by 10 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        detach_mounts_under(&self.dir);
    }
}

/// A SIGKILLed FUSE daemon leaves its mount behind, its connection dead.
fn detach_mounts_under(dir: &Path) {
    for mount in host_facts::mountinfo::under(dir) {
        let _ = nix::mount::umount2(&mount.mount_point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Two instance images under `dir/images`: RAFS v6 built by `nydus-image` for a real
/// daemon, the mock's stand-ins for the mock. Returns the
/// bootstraps and the instance configuration.
fn images(peer: &Peer, dir: &Path) -> Result<(Vec<PathBuf>, String), Failed> {
    let store = harness::runner::image::ImageStore::under(&dir.join("images"));
    let mut bootstraps = Vec::new();
    for name in ["a", "b"] {
        let source = dir.join("images").join(format!("{name}-source"));
        std::fs::create_dir_all(source.join("etc")).unwrap();
        std::fs::write(source.join("etc/hostname"), format!("{name}\n")).unwrap();
        std::fs::create_dir_all(&store.blobs).unwrap();
        std::fs::create_dir_all(&store.cache).unwrap();
        let bootstrap = dir.join("images").join(format!("{name}.boot"));
        if peer.real {
            let builder = harness::runner::image::nydus_image_for(&peer.program);
            let output = Command::new(&builder)
                .args(["create", "-t", "dir-rafs", "-v", "6", "--log-level", "warn", "--bootstrap"])
                .arg(&bootstrap)
                .arg("--blob-dir")
                .arg(&store.blobs)
                .arg(&source)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", builder.display()))?;
            if !output.status.success() {
                return Err(format!("nydus-image failed: {}", String::from_utf8_lossy(&output.stderr)).into());
            }
        } else {
            testkit::write_stand_in(&bootstrap).unwrap();
        }
        bootstraps.push(bootstrap);
    }
    Ok((bootstraps, store.config()))
}

/// The credentials planted in [`TOML_CONFIG`] and [`ESCAPED_CONFIG`].
const PLANTED: [&str; 4] = ["dG9tbC1hdXRoLXNlY3JldA", "tomlregistrytoken77", "ZXNjYXBlZC1hdXRo", "escapedpassword42"];

/// A registry configuration in TOML, as nydusd reads one.
const TOML_CONFIG: &str = "[device.backend]\ntype = \"registry\"\n[device.backend.config]\nhost = \"registry.example\"\nrepo = \"library/x\"\nauth = \"dG9tbC1hdXRoLXNlY3JldA\"\n\"registry_token\" = 'tomlregistrytoken77'\n";

/// A JSON configuration whose secret keys are spelled with `\u` escapes.
const ESCAPED_CONFIG: &str = r#"{"device":{"backend":{"type":"registry","config":{"host":"registry.example","repo":"library/x","\u0061uth":"ZXNjYXBlZC1hdXRo","pass\u0077ord":"escapedpassword42"}}}}"#;

/// No byte sequence of a planted credential in any file under `dir` (the recording, the
/// script, the scenario, the replay's own recording and logs).
fn no_planted_secret_under(dir: &Path) -> Result<(), Failed> {
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at)?.flatten() {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path)?;
                for secret in PLANTED {
                    if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                        return Err(format!("{secret} is in {}", path.display()).into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// `harness replay DIR --speed 1`: its exit code and stdout.
fn replay(rec: &Path) -> (Option<i32>, String) {
    let output = Command::new(testkit::bin_exe!("harness"))
        .args(["replay".as_ref(), rec.as_os_str(), "--speed".as_ref(), "1".as_ref()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// What is left of a replay or a recording under `dir`: processes and mounts.
fn leftovers(dir: &Path) -> Result<(), Failed> {
    let processes = testkit::pids_naming(&dir.to_string_lossy());
    let mounts: Vec<PathBuf> = host_facts::mountinfo::under(dir).into_iter().map(|m| m.mount_point).collect();
    if processes.is_empty() && mounts.is_empty() {
        Ok(())
    } else {
        Err(format!("left running {processes:?}, left mounted {mounts:?}").into())
    }
}

/// SIGKILLs the recorded daemon, which ends the recording (the recorder exits 0), and
/// replays it: no difference is allowed. Returns the recording's directory.
fn kill_and_replay(recorder: &mut Recorder) -> Result<PathBuf, Failed> {
    let pid = recorder.daemon_pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = recorder.wait();
    if status.code() != Some(0) {
        return Err(format!("the recorder ended {status}: {}", recorder.log()).into());
    }
    detach_mounts_under(&recorder.dir);
    let rec = recorder.dir.join("rec");
    let (code, report) = replay(&rec);
    if code != Some(0) || !report.contains(" 0 differences") {
        return Err(format!("replay exit {code:?}:\n{report}").into());
    }
    Ok(rec)
}

/// daemon-core's client drives the daemon through the recorder: state, two mounts,
/// metrics, an umount that fails, then the daemon is SIGKILLed; the replay of the
/// recording must not differ from it in anything but the listed volatile fields.
fn daemon_core_session(peer: Peer) -> Result<(), Failed> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (bootstraps, config) = images(&peer, dir)?;
    let mut recorder = Recorder::start(dir, &peer.command(dir));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = NydusdClient::new(dir.join("api.sock")).with_timeout(Duration::from_secs(10));
        let info = client.get_daemon_info().await.map_err(|e| format!("GET /api/v1/daemon: {e}"))?;
        if info.state.to_string() != "RUNNING" {
            return Err(format!("the daemon is {} before any mount", info.state));
        }
        for (mountpoint, bootstrap) in ["/a", "/b"].iter().zip(&bootstraps) {
            let request = MountRequest {
                source: bootstrap.to_string_lossy().into_owned(),
                fs_type: "rafs".into(),
                config: config.clone(),
                prefetch_files: None,
            };
            client.mount(mountpoint, &request).await.map_err(|e| format!("mount {mountpoint}: {e}"))?;
        }
        client.fs_metrics(Some("/a")).await.map_err(|e| format!("metrics of /a: {e}"))?;
        let info = client.get_daemon_info().await.map_err(|e| format!("GET /api/v1/daemon: {e}"))?;
        // nydusd keeps its instances in a hash map: any order.
        let mut mounted: Vec<&String> = info.backend_collection.iter().flat_map(|c| c.keys()).collect();
        mounted.sort();
        if mounted != ["/a", "/b"] {
            return Err(format!("the daemon serves {mounted:?} after two mounts"));
        }
        // Credentials as nydusd also reads them: a TOML configuration, and JSON keys
        // spelled with escapes. Whether the daemon takes them does not matter here; the
        // recording must keep none of them.
        for (mountpoint, config) in [("/c", TOML_CONFIG), ("/d", ESCAPED_CONFIG)] {
            let request = MountRequest {
                source: bootstraps[0].to_string_lossy().into_owned(),
                fs_type: "rafs".into(),
                config: config.to_owned(),
                prefetch_files: None,
            };
            let _ = client.mount(mountpoint, &request).await;
        }
        match client.umount("/nope").await {
            // nydusd says the instance "doesn't exist", with status 500.
            Err(e) if e.kind() == ErrorKind::NotFound && e.status() == Some(500) => Ok(()),
            other => Err(format!("umount of an instance never mounted: {other:?}, not NotFound with status 500")),
        }
    })?;
    let rec = kill_and_replay(&mut recorder)?;
    no_planted_secret_under(&rec)?;
    let script = std::fs::read_to_string(rec.join("mock-script.json")).unwrap();
    for expected in
        ["POST /api/v1/mount?mountpoint=/b", "DELETE /api/v1/mount?mountpoint=/nope", r#""signal": "SIGKILL""#]
    {
        if !script.contains(expected) {
            return Err(format!("the script lacks {expected:?}:\n{script}").into());
        }
    }
    drop(recorder);
    leftovers(dir)
}

/// A nydusctl session: information, a mount, metrics, an umount that fails, information
/// again; each invocation with its arguments after `--sock <socket>`.
fn nydusctl_commands(bootstrap: &Path, config: &Path) -> Vec<Vec<std::ffi::OsString>> {
    let words = |w: &[&str]| w.iter().map(Into::into).collect::<Vec<std::ffi::OsString>>();
    let mut mount = words(&["mount", "-t", "rafs", "-m", "/a", "-s"]);
    mount.extend([bootstrap.into(), "-c".into(), config.into()]);
    vec![
        words(&["info"]),
        mount,
        words(&["metrics", "fsstats"]),
        words(&["metrics", "backend"]),
        words(&["umount", "-m", "/nope"]),
        words(&["--raw", "info"]),
    ]
}

/// What one nydusctl invocation gave: exit code, stdout, stderr.
type Printed = (Option<i32>, String, String);

/// Runs each of `commands` against `sock`.
fn nydusctl_session(nydusctl: &Path, sock: &Path, commands: &[Vec<std::ffi::OsString>]) -> Vec<Printed> {
    commands
        .iter()
        .map(|args| {
            let output = Command::new(nydusctl).arg("--sock").arg(sock).args(args).output().unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (output.status.code(), text(&output.stdout), text(&output.stderr))
        })
        .collect()
}

/// nydusctl talks to the daemon through the recorder; the replay shows no difference, and
/// nydusctl run again against the mock playing the generated script prints the same.
fn nydusctl_session_replays(peer: Peer, nydusctl: PathBuf) -> Result<(), Failed> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (bootstraps, config) = images(&peer, dir)?;
    let config_file = dir.join("images/config.json");
    std::fs::write(&config_file, config).unwrap();
    let commands = nydusctl_commands(&bootstraps[0], &config_file);
    let mut recorder = Recorder::start(dir, &peer.command(dir));
    let recorded = nydusctl_session(&nydusctl, &dir.join("api.sock"), &commands);
    // The session did what it says: a mount that took, an umount that did not.
    let (mounted, failed, last) = (&recorded[1], &recorded[4], &recorded[5]);
    if mounted.0 != Some(0) || failed.0 == Some(0) || !last.1.contains(r#""/a""#) {
        return Err(format!("nydusctl against the recorded daemon: {recorded:#?}").into());
    }
    let rec = kill_and_replay(&mut recorder)?;
    // nydusctl against the mock on the generated script, without its death (nydusctl's
    // last call would be answered by the death otherwise, as the daemon was after it).
    let script = std::fs::read_to_string(rec.join("mock-script.json")).unwrap();
    let without_death = script.replace(r#""signal": "SIGKILL""#, r#""delay_ms": 0"#);
    let replayed_dir = dir.join("again");
    std::fs::create_dir_all(replayed_dir.join("mnt")).unwrap();
    std::fs::write(replayed_dir.join("script.json"), without_death).unwrap();
    let link = replayed_dir.join("mock-nydusd");
    std::os::unix::fs::symlink(testkit::bin_exe!("harness"), &link).unwrap();
    let sock = replayed_dir.join("api.sock");
    let mut mock = Command::new(&link)
        .args(["fuse".as_ref(), "--apisock".as_ref(), sock.as_os_str(), "--mountpoint".as_ref()])
        .arg(replayed_dir.join("mnt"))
        .arg("--mock-script")
        .arg(replayed_dir.join("script.json"))
        .arg("--mock-nydusd-version")
        .arg(if peer.real { "2.2" } else { "2.4" })
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let again = nydusctl_session(&nydusctl, &sock, &commands);
    let _ = mock.kill();
    let _ = mock.wait();
    for ((args, a), b) in commands.iter().zip(&recorded).zip(&again) {
        if a != b {
            return Err(format!(
                "nydusctl {args:?} printed\n{a:?}\nagainst the recorded daemon, and\n{b:?}\nagainst its replay"
            )
            .into());
        }
    }
    drop(recorder);
    leftovers(dir)
}

/// nydusctl beside the installed nydusd, else on PATH.
fn nydusctl_for(nydusd: &Path) -> Result<PathBuf, String> {
    let sibling = nydusd.with_file_name("nydusctl");
    if sibling.is_file() {
        Ok(sibling)
    } else if host_facts::requirement::on_path("nydusctl") {
        Ok(PathBuf::from("nydusctl"))
    } else {
        Err("needs nydusctl (installed with nydus-rs: `cargo install nydus-rs --locked`)".into())
    }
}

/// A trial, listed as ignored (with the reason printed) when `skip` holds one.
fn listed(name: &str, skip: Option<String>, body: impl FnOnce() -> Result<(), Failed> + Send + 'static) -> Trial {
    if let Some(reason) = &skip {
        eprintln!("skipping {name}: {reason}");
    }
    Trial::test(name, body).with_ignored_flag(skip.is_some())
}

/// A real peer from `found`, or why it cannot run here (a real FUSE daemon needs root
/// and /dev/fuse).
fn real_peer(found: Result<PathBuf, String>) -> (Peer, Option<String>) {
    let skip = found.as_ref().err().cloned().or_else(|| unmet(&[Requirement::Root, Requirement::Fuse]));
    (Peer { program: found.unwrap_or_default(), real: true }, skip)
}

fn main() {
    let args = Arguments::from_args();
    let (real, real_skip) = real_peer(installed_nydusd());
    let (real24, real24_skip) = real_peer(nydusd_2_4());
    let nydusctl = installed_nydusd().and_then(|d| nydusctl_for(&d));
    let nydusctl_skip = nydusctl.as_ref().err().cloned();
    let nydusctl = nydusctl.unwrap_or_default();
    let mut trials = vec![listed("mock::daemon_core_session", None, || daemon_core_session(Peer::mock()))];
    {
        let nydusctl = nydusctl.clone();
        trials.push(listed("mock::nydusctl_session", nydusctl_skip.clone(), move || {
            nydusctl_session_replays(Peer::mock(), nydusctl)
        }));
    }
    {
        let real = real.clone();
        trials.push(listed("real::daemon_core_session", real_skip.clone(), move || daemon_core_session(real)));
    }
    trials.push(listed("real::nydusctl_session", real_skip.or(nydusctl_skip), move || {
        nydusctl_session_replays(real, nydusctl)
    }));
    trials.push(listed("real24::daemon_core_session", real24_skip, move || daemon_core_session(real24)));
    libtest_mimic::run(&args, trials).exit();
}
