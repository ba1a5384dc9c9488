//! SIGINT, SIGTERM and SIGHUP to a command that runs daemons: each ends it with 128 + the
//! signal, and leaves no daemon process, no mount and no temporary root behind. `run` is
//! tried on a scenario serving a real FUSE mount (root and /dev/fuse; listed as ignored,
//! with the reason, elsewhere) and on a plain one, `chaos` on its own schedules.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use host_facts::{Requirement, unmet};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::Signal;

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// A daemon: its pid, its command line, and its scenario root.
type Daemon = (u32, Vec<String>, PathBuf);

/// The daemons the harness `ancestor` started: its descendants with an API socket (as
/// root, the run is a child of the process started, in a PID namespace of its own).
fn daemons_of(ancestor: u32) -> Vec<Daemon> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| descends_from(*pid, ancestor))
        .filter_map(|pid| {
            let args = host_facts::process::cmdline(pid)?;
            let socket = args.iter().skip_while(|a| *a != "--apisock").nth(1)?;
            // <root>/socket/<id>/api.sock
            let root = Path::new(socket).parent()?.parent()?.parent()?.to_owned();
            Some((pid, args, root))
        })
        .collect()
}

fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        match parent_of(at) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => at = p,
            _ => return false,
        }
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a process seen earlier still runs (the same pid with the same command line).
fn still_runs((pid, args, _): &Daemon) -> bool {
    host_facts::process::cmdline(*pid).is_some_and(|now| &now == args)
}

fn private(path: &Path, wanted: u32) -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode == wanted { Ok(()) } else { Err(format!("{} has mode {mode:o}, not {wanted:o}", path.display()).into()) }
}

/// Mounts under `root`, as this process sees them and as process `seen_from` (a daemon
/// of the run, in its mount namespace) does while it lives.
fn mounts_under(root: &Path, seen_from: u32) -> Vec<PathBuf> {
    let theirs = std::fs::read_to_string(format!("/proc/{seen_from}/mountinfo")).unwrap_or_default();
    let mut mounts: Vec<PathBuf> = host_facts::mountinfo::parse(&theirs).map(|m| m.mount_point).collect();
    mounts.extend(host_facts::mountinfo::under(root).into_iter().map(|m| m.mount_point));
    mounts.retain(|m| m.starts_with(root));
    mounts
}

/// Starts the harness with `args`, waits for a daemon (and, with `fuse`, its mount), sends
/// `signal`, and checks the exit code and that nothing of the run is left.
fn interrupt(args: &[&str], signal: Signal, fuse: bool) -> Result<(), Failed> {
    // Stdout goes to a file (a pipe nobody reads could fill), shown when the test fails.
    let stdout = tempfile::NamedTempFile::new()?;
    // Bundles (and the directory for them) go with the test, not into <tmp>.
    let bundles = tempfile::tempdir()?;
    let mut child = Command::new(testkit::bin_exe!("harness"))
        .args(args)
        .args(if args.first() == Some(&"run") {
            vec!["--bundles".as_ref(), bundles.path().as_os_str()]
        } else {
            vec![]
        })
        .current_dir(testkit::manifest_dir!().join(".."))
        .stdout(stdout.reopen()?)
        .stderr(Stdio::piped())
        .spawn()?;
    let harness = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let found = daemons_of(harness);
        if found.first().is_some_and(|(pid, _, root)| !fuse || !mounts_under(root, *pid).is_empty()) {
            break found;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the scenario's daemon (and mount) never appeared".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Least privilege while it runs: the root is its owner's only, and so are the store,
    // the logs and the journals in it.
    for (_, _, root) in &seen {
        private(root, 0o700)?;
        for file in ["nydus.db", "logs/daemons.log", "logs/mock.jsonl", "logs/harness.jsonl"] {
            let path = root.join(file);
            if path.exists() {
                private(&path, 0o600)?;
            }
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(harness as i32), signal)?;
    let status = child.wait()?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().ok_or("stderr")?, &mut stderr)?;
    // Before the fix, SIGTERM and SIGHUP killed the harness (status by signal) and left
    // its daemons, mounts and root behind.
    if status.code() != Some(128 + signal as i32) {
        let out = std::fs::read_to_string(stdout.path()).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        // A chaos failure is named on its FAIL line and the two after it, long before the tail.
        let failure: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("FAIL ")).take(3).collect();
        return Err(format!(
            "{signal}: exit status {status}, not {}; stderr:\n{stderr}\nstdout (failure):\n{}\nstdout (last lines):\n{}",
            128 + signal as i32,
            failure.join("\n"),
            tail.join("\n")
        )
        .into());
    }
    // Daemons started after the snapshot were cleaned up by the same path.
    let left: Vec<&Daemon> = seen.iter().filter(|d| still_runs(d)).collect();
    if !left.is_empty() {
        return Err(format!("{signal}: daemons outlived the run: {left:?}").into());
    }
    for (pid, _, root) in &seen {
        let mounts = mounts_under(root, *pid);
        if !mounts.is_empty() {
            return Err(format!("{signal}: mounts left: {mounts:?}").into());
        }
        if root.exists() {
            return Err(format!("{signal}: the scenario root {} is left", root.display()).into());
        }
    }
    if !stderr.contains(&format!("interrupted by {signal}")) {
        return Err(format!("{signal}: no word of the interruption; stderr:\n{stderr}").into());
    }
    Ok(())
}

/// Which processes a SIGKILL hits.
#[derive(Debug, Clone, Copy)]
enum Killed {
    /// The process the user started and its process group (`timeout -s KILL`, a CI
    /// job's cancellation, the OOM killer choosing it).
    TheHarnessAndItsGroup,
    /// The run inside the PID namespace (the OOM killer choosing it).
    TheRun,
    /// Both at once: nothing of the harness is left to clean up; the next run does.
    Both,
}

/// `harness run` on a FUSE scenario, SIGKILLed once its daemon serves the mount: within
/// 1 s no process, mount or root of the run is left (for `Both`, once the next run has
/// started, which says what it removed).
fn sigkill(killed: Killed) -> Result<(), Failed> {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir()?;
    let bundles = tempfile::tempdir()?;
    let run = |scenario: &str| {
        Command::new(testkit::bin_exe!("harness"))
            .args(["run", scenario, "--bundles"])
            .arg(bundles.path())
            .env("TMPDIR", tmp.path())
            .current_dir(testkit::manifest_dir!().join(".."))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
    };
    let mut child = run("harness/tests/fixtures/long-sleep-fuse.yaml")?;
    let harness = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let found = daemons_of(harness);
        if found.first().is_some_and(|(pid, _, root)| !mounts_under(root, *pid).is_empty()) {
            break found;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the scenario's daemon and mount never appeared".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let run_pid = (2..64)
        .map(|_| ())
        .find_map(|()| {
            let Ok(entries) = std::fs::read_dir("/proc") else { return None };
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .find(|pid| parent_of(*pid) == Some(harness))
        })
        .ok_or("the run's process (the namespace's init) not found")?;
    let kill = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    match killed {
        Killed::TheHarnessAndItsGroup => kill(-(harness as i32))?,
        Killed::TheRun => kill(run_pid as i32)?,
        Killed::Both => {
            kill(run_pid as i32)?;
            kill(harness as i32)?;
        }
    }
    let _ = child.wait();
    let killed_at = Instant::now();
    if let Killed::Both = killed {
        // Nothing was left to clean up: the next command does, and says so.
        let mut next = run("harness/tests/fixtures/wrong-state.yaml")?;
        let status = next.wait()?;
        let mut stderr = String::new();
        std::io::Read::read_to_string(next.stderr.as_mut().ok_or("stderr")?, &mut stderr)?;
        if status.code() != Some(1) || !stderr.contains("removed what 1 killed harness run(s) left") {
            return Err(format!("the next run did not report the sweep ({status}): {stderr}").into());
        }
    }
    loop {
        let processes: Vec<&Daemon> = seen.iter().filter(|d| still_runs(d)).collect();
        let roots: Vec<PathBuf> = std::fs::read_dir(tmp.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nydus-harness-")))
            .collect();
        let mounts: Vec<PathBuf> =
            seen.iter().flat_map(|(_, _, root)| host_facts::mountinfo::under(root)).map(|m| m.mount_point).collect();
        let namespace_left =
            host_facts::process::state(run_pid).is_some_and(|s| s != 'Z') && parent_of(run_pid) == Some(harness);
        if processes.is_empty() && roots.is_empty() && mounts.is_empty() && !namespace_left {
            return Ok(());
        }
        if killed_at.elapsed() > Duration::from_secs(1) && !matches!(killed, Killed::Both) {
            return Err(format!(
                "{killed:?}: 1 s after the SIGKILL: processes {processes:?}, roots {roots:?}, mounts {mounts:?}"
            )
            .into());
        }
        if killed_at.elapsed() > Duration::from_secs(10) {
            return Err(format!("{killed:?}: left {processes:?}, roots {roots:?}, mounts {mounts:?}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A SIGKILLed `harness bench` (the command and its namespace's process at once, as a
/// machine's restart or the OOM killer may) leaves its beds (roots with daemons) and
/// scratch directories; the next command that starts daemons removes them and says so.
/// Before, bench roots had no owner file and stayed in the temporary directory for good.
fn sigkill_of_a_bench_run() -> Result<(), Failed> {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir()?;
    let harness = |args: &[&str]| {
        Command::new(testkit::bin_exe!("harness"))
            .args(args)
            .env("TMPDIR", tmp.path())
            .current_dir(testkit::manifest_dir!().join(".."))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
    };
    let roots = || -> Vec<PathBuf> {
        std::fs::read_dir(tmp.path())
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    let mut bench =
        harness(&["bench", "--runs", "100000", "--scale", "10", "--leak-runs", "0", "--scenarios", "/nonexistent"])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !roots().iter().any(|r| r.to_string_lossy().contains("nydus-harness-bench-")) {
        if Instant::now() > deadline {
            let _ = bench.kill();
            return Err("the bench never made a root".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Both the command and the process it runs in its namespace (if any): a SIGKILL of
    // the first alone lets the second clean up, as it should.
    let harness_pid = bench.id();
    let inner: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(harness_pid))
        .collect();
    for pid in inner {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(-(harness_pid as i32)), Signal::SIGKILL)?;
    let _ = bench.wait();
    let mut next = harness(&["run", "harness/tests/fixtures/wrong-state.yaml"])?;
    let status = next.wait()?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(next.stderr.as_mut().ok_or("stderr")?, &mut stderr)?;
    if status.code() != Some(1) || !stderr.contains("killed harness run(s) left") {
        return Err(format!("the next run did not report the sweep ({status}): {stderr}").into());
    }
    // The failing second run's repro bundle is its own, and meant to stay.
    let left: Vec<PathBuf> = roots().into_iter().filter(|r| !r.ends_with("harness-failures")).collect();
    if !left.is_empty() {
        return Err(format!("left in the temporary directory: {left:?}").into());
    }
    Ok(())
}

/// Environment variable marking the processes of one try of [`sigkill_as_it_starts`]:
/// every process the harness starts inherits it, wherever it is reparented.
const MARK: &str = "SIGNALS_TEST_MARK";

/// The pids of processes whose environment holds `MARK=mark`.
fn marked(mark: &str) -> Vec<u32> {
    let wanted = format!("{MARK}={mark}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| host_facts::process::state(*pid).is_some_and(|s| s != 'Z'))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|entry| entry == wanted.as_bytes()))
        })
        .collect()
}

/// `harness run` SIGKILLed alone (as `timeout -s KILL` does) in its first milliseconds,
/// every 3 ms from 0 to 60: while the run is setting up its namespace and before it has
/// its signal handlers. Each time, within 2 s no process of the run and no root is left,
/// and no report says it passed. The run's init used to miss the death signal in that
/// window (an init drops a SIGTERM it has no handler for) and go on to a green report.
fn sigkill_as_it_starts() -> Result<(), Failed> {
    for delay_ms in (0..=60).step_by(3) {
        let tmp = tempfile::tempdir()?;
        let json = tmp.path().join("report.json");
        let mark = format!("{}-{delay_ms}", std::process::id());
        let mut child = Command::new(testkit::bin_exe!("harness"))
            .args(["run", "harness/tests/fixtures/long-sleep.yaml", "--json"])
            .arg(&json)
            .env("TMPDIR", tmp.path())
            .env(MARK, &mark)
            .current_dir(testkit::manifest_dir!().join(".."))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        let _ = child.wait();
        let killed_at = Instant::now();
        loop {
            let left = marked(&mark);
            let roots: Vec<PathBuf> = std::fs::read_dir(tmp.path())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nydus-harness-")))
                .collect();
            if left.is_empty() && roots.is_empty() {
                break;
            }
            if killed_at.elapsed() > Duration::from_secs(2) {
                for pid in &left {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL);
                }
                return Err(format!(
                    "SIGKILL {delay_ms} ms after the start: 2 s later processes {left:?} still run, roots {roots:?}"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = std::fs::read_to_string(&json).unwrap_or_default();
        if let Ok(report) = serde_json::from_str::<serde_json::Value>(&report)
            && report["summary"]["passed"] != 0
        {
            return Err(format!("SIGKILL {delay_ms} ms after the start: the report says it passed: {report}").into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let fuse_unmet = unmet(&[Requirement::Root, Requirement::Fuse]);
    let mut trials = Vec::new();
    for signal in SIGNALS {
        let name = signal.as_str().to_lowercase();
        trials.push(Trial::test(format!("run::{name}"), move || {
            interrupt(&["run", "harness/tests/fixtures/long-sleep.yaml"], signal, false)
        }));
        let reason = fuse_unmet.clone();
        trials.push(
            Trial::test(format!("privileged::run_with_a_fuse_mount::{name}"), move || match reason {
                Some(reason) => Err(format!("skipped: {reason}").into()),
                None => interrupt(&["run", "harness/tests/fixtures/long-sleep-fuse.yaml"], signal, true),
            })
            .with_ignored_flag(fuse_unmet.is_some()),
        );
        trials.push(Trial::test(format!("chaos::{name}"), move || {
            interrupt(&["chaos", "--seed", "7", "--runs", "1000", "--ops", "30"], signal, false)
        }));
    }
    for (name, killed) in [
        ("the_harness_and_its_group", Killed::TheHarnessAndItsGroup),
        ("the_run", Killed::TheRun),
        ("both_then_the_next_run_sweeps", Killed::Both),
    ] {
        let reason = fuse_unmet.clone();
        trials.push(
            Trial::test(format!("privileged::sigkill_of::{name}"), move || match reason {
                Some(reason) => Err(format!("skipped: {reason}").into()),
                None => sigkill(killed),
            })
            .with_ignored_flag(fuse_unmet.is_some()),
        );
    }
    trials.push(Trial::test("sigkill_of::a_bench_run_then_the_next_command_sweeps", sigkill_of_a_bench_run));
    let root_unmet = unmet(&[Requirement::Root]);
    trials.push(
        Trial::test("privileged::sigkill_of::the_harness_as_it_starts", move || match root_unmet {
            Some(reason) => Err(format!("skipped: {reason}").into()),
            None => sigkill_as_it_starts(),
        })
        .with_ignored_flag(unmet(&[Requirement::Root]).is_some()),
    );
    if let Some(reason) = &fuse_unmet {
        eprintln!("skipping privileged::run_with_a_fuse_mount::* and privileged::sigkill_of::*: {reason}");
    }
    libtest_mimic::run(&args, trials).exit();
}
