//! The harness binary as a user runs it.

mod common;

use common::harness;
use std::process::Command;

#[test]
fn a_wrong_expectation_names_file_step_expected_and_observed() {
    let (code, text) = harness(&["run", "harness/tests/fixtures/wrong-state.yaml"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL harness/tests/fixtures/wrong-state.yaml"), "{text}");
    assert!(text.contains("step 3 `wait_state` at harness/tests/fixtures/wrong-state.yaml:13"), "{text}");
    assert!(text.contains("expected: READY"), "{text}");
    assert!(text.contains("observed: RUNNING"), "{text}");
    assert!(text.lines().any(|l| l == "0 passed, 1 failed, 0 skipped"), "{text}");
}

/// Before d1d4772 the step wrote the file for later processes, ignored the running one it
/// could not reach, and passed.
#[test]
fn a_script_step_that_cannot_reach_the_running_mock_fails() {
    let (code, text) = harness(&["run", "harness/tests/fixtures/script-to-a-stopped-mock.yaml"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("step 3 `script` at harness/tests/fixtures/script-to-a-stopped-mock.yaml:13: daemon d1 runs, but its control socket"),
        "{text}"
    );
}

#[test]
fn validate_reports_every_invalid_file_with_its_location() {
    let (code, text) = harness(&["validate", "scenarios/invalid"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("scenarios/invalid/unknown-key.yaml:6:26: unknown field `colour`"), "{text}");
    assert!(text.contains("scenarios/invalid/dangling-daemon.yaml:7:27: unknown daemon `d2`"), "{text}");
    assert!(text.contains("scenarios/invalid/wrong-type.yaml:6:18:"), "{text}");
    // serde alone read "100" as 100; the schema, and so the loader, do not.
    assert!(
        text.contains("scenarios/invalid/number-in-quotes.yaml:9:18: steps[0].sleep.ms: \"100\" is not of type \"integer\" (scenarios/schema.json)"),
        "{text}"
    );
    // Paths that would leave the scenario's root, located at the offending key or value.
    assert!(
        text.contains("scenarios/invalid/tree-path-escapes-the-instance.yaml:12:11: file path \"../../../../tmp/x/escape\" of instance a has a `..` component"),
        "{text}"
    );
    assert!(text.contains("scenarios/invalid/read-file-escapes-the-root.yaml:8:24: path \"mnt/../../../etc/shadow\" has a `..` component"), "{text}");
    assert!(text.contains("scenarios/invalid/ids-not-usable-in-a-path.yaml:8:19: snapshot id \"../a\""), "{text}");
    // The bound is named (before: "data did not match any variant of untagged enum FileSpec").
    assert!(
        text.contains("scenarios/invalid/file-size-past-its-bound.yaml:9:30: invalid value: integer `1099511627776`, expected at most 268435456"),
        "{text}"
    );
}

/// One run names every mistake of a file, each where it stands, in the file's order:
/// before, `validate` reported one per run (the file's first three took three rounds),
/// and a missing `version` was reported at the end of the file.
#[test]
fn validate_reports_every_mistake_of_a_file_in_one_run() {
    let (code, text) = harness(&["validate", "scenarios/invalid/several-mistakes.yaml"]);
    assert_eq!(code, 3, "{text}");
    let file = "scenarios/invalid/several-mistakes.yaml";
    let wanted = [
        // The mapping that lacks it starts after the comments.
        format!("bad  {file}:3:1: missing field `version`"),
        format!("bad  {file}:10:38: unknown variant `RUNING`, expected one of INIT, READY, RUNNING, STOPPED, UNKNOWN"),
        format!("bad  {file}:11:45: daemon `d1` declares no instance `b` (declared instances: a)"),
        format!("bad  {file}:12:18: invalid u64 for field `ms`"),
        format!("bad  {file}:14:7: missing field `mountpoint`"),
        format!("bad  {file}:15:29: unknown daemon `d2` (declared daemons: d1)"),
        format!("bad  {file}:16:18: steps[6].sleep.ms: \"100\" is not of type \"integer\" (scenarios/schema.json)"),
        "0 valid, 1 invalid".to_owned(),
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), wanted, "{text}");
}

#[test]
fn run_with_an_invalid_file_refuses_to_start() {
    let (code, text) = harness(&["run", "scenarios/invalid/unknown-key.yaml"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("unknown-key.yaml:6:26"), "{text}");
}

/// A broken file under a directory is reported as itself, with its location, and the
/// directory's other scenarios are still listed and run; the exit code says a file was
/// invalid, and the reports carry it as a failed entry.
#[test]
fn a_broken_file_in_a_directory_is_reported_and_the_others_go_on() {
    // Written here, not copied from the library: the archived suite runs without the source.
    let dir = tempfile::tempdir().unwrap();
    let good = "version: 1\nname: vars-and-anchors\ndaemons:\n  - { id: d1, mode: dedicated }\nsteps:\n  - start: { daemon: d1 }\n  - wait_state: { daemon: d1, state: RUNNING }\n";
    std::fs::write(dir.path().join("good.yaml"), good).unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "version: 1\nname: x\nsteps: [\n").unwrap();
    let path = dir.path().to_str().unwrap();
    let (code, text) = harness(&["list", path]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("broken.yaml:3:8: unclosed bracket") && text.contains("vars-and-anchors"), "{text}");
    let json = dir.path().join("report.json");
    let (code, text) = harness(&["run", path, "--json", json.to_str().unwrap()]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("PASS good.yaml"), "the valid scenario ran: {text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let entries = report["scenarios"].as_array().unwrap();
    let status = |name: &str| entries.iter().find(|e| e["name"] == name).map(|e| e["status"].clone());
    assert_eq!(status("vars-and-anchors"), Some(serde_json::json!("pass")), "{report}");
    let broken = entries.iter().find(|e| e["name"] == "broken").unwrap();
    assert_eq!(broken["status"], "fail");
    assert!(broken["reason"].as_str().unwrap().contains("broken.yaml:3:8"), "{broken}");
}

#[test]
fn the_binary_runs_the_mock_when_named_mock_nydusd() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("mock-nydusd");
    std::os::unix::fs::symlink(testkit::bin_exe!("harness"), &link).unwrap();
    let out = Command::new(&link).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nydusd \rVersion: \t"));
}

#[test]
fn explain_renders_text_and_mermaid() {
    let (code, text) = harness(&["explain", "scenarios/recovery/failover-after-sigkill.yaml"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("guards against: doDaemonFailover"), "{text}");
    assert!(text.contains(" 4. harness → d1: SIGKILL"), "{text}");
    let (code, text) = harness(&["explain", "--mermaid", "scenarios/recovery/failover-after-sigkill.yaml"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("sequenceDiagram\n"), "{text}");
    assert!(text.contains("M->>H: 6. failed_over of d1"), "{text}");
}

#[test]
fn a_failure_leaves_a_repro_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text) =
        harness(&["run", "harness/tests/fixtures/wrong-state.yaml", "--bundles", dir.path().to_str().unwrap()]);
    let bundle = std::fs::read_dir(dir.path()).unwrap().next().expect("a bundle").unwrap().path();
    assert!(text.contains(&format!("repro bundle: {}", bundle.display())), "{text}");
    for file in ["wrong-state.yaml", "timeline.txt", "logs/mock.jsonl", "logs/harness.jsonl", "nydus.db"] {
        assert!(bundle.join(file).exists(), "{file} missing in {}", bundle.display());
    }
}

#[test]
fn every_library_scenario_validates_and_doctor_explains_skips() {
    let (code, text) = harness(&["validate", "scenarios"]);
    assert_eq!(code, 0, "{text}");
    let valid: usize = text.lines().last().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(valid >= 30, "the library has {valid} scenarios");
    let (code, text) = harness(&["doctor"]);
    assert_eq!(code, 0);
    assert!(text.contains("fscache"), "{text}");
}

#[test]
fn ctrl_c_cleans_up_running_scenarios() {
    // A marker in the daemon's command line finds it among all processes afterwards.
    let marker = format!("{:040x}", std::process::id() as u128 * 7919);
    let bundles = tempfile::tempdir().unwrap();
    let mut child = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "harness/tests/fixtures/long-sleep.yaml", "--daemon-arg=--mock-git-commit", "--bundles"])
        .arg(bundles.path())
        .arg(format!("--daemon-arg={marker}"))
        .current_dir(testkit::manifest_dir!().join(".."))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let harness_pid = child.id().to_string();
    // Processes other than the harness itself that carry the marker: its daemons.
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != harness_pid.as_str())
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while running() == 0 {
        assert!(std::time::Instant::now() < deadline, "the scenario's daemon never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(running(), 0, "a daemon outlived the interrupted run");
}

#[test]
fn chaos_schedules_run_and_keep_the_invariants() {
    // Seeds 1-10 with every fault kind; a regression in the fault handling fails here,
    // and the output then holds the shrunk scenario.
    let (code, out) = harness(&["chaos", "--seed", "1", "--runs", "10", "--ops", "16"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("PASS seed").count(), 10, "{out}");
}

#[test]
fn files_that_are_not_regular_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Before the fix the FIFO blocked `validate` for ever and /dev/zero was read at a
    // gigabyte a second; both end at once now.
    let started = std::time::Instant::now();
    let (code, text) = harness(&["validate", fifo.to_str().unwrap(), "/dev/zero"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("x.yaml: cannot read: a FIFO, not a regular file"), "{text}");
    assert!(text.contains("/dev/zero: cannot read: a device, not a regular file"), "{text}");
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let (code, text) = harness(&["validate", big.to_str().unwrap()]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("big.yaml: cannot read: 2097152 bytes; the limit is 1048576"), "{text}");
}

#[test]
fn discovery_lists_each_file_once_through_symlink_loops() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("a/b");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::copy(testkit::manifest_dir!().join("tests/fixtures/long-sleep.yaml"), inner.join("one.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.path(), inner.join("loop")).unwrap();
    std::os::unix::fs::symlink(inner.join("one.yaml"), dir.path().join("again.yaml")).unwrap();
    let (code, text) = harness(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    // Before the fix the loop listed the scenario 41 times.
    assert_eq!(text.matches("ok   ").count(), 1, "{text}");
}

#[test]
fn validate_and_run_agree_that_an_empty_selection_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (validate, text) = harness(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(validate, 5, "{text}");
    let (run, text) = harness(&["run", dir.path().to_str().unwrap()]);
    assert_eq!(run, validate, "{text}");
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::io::BufRead;
    let bundles = tempfile::tempdir().unwrap();
    let mut child = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "scenarios", "--jobs", "1", "--bundles"])
        .arg(bundles.path())
        .current_dir(testkit::manifest_dir!().join(".."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // The reader goes away, as `head -1` does.
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // Before the fix: a panic in print! and exit status 101.
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(141), "{stderr}");
}

#[test]
fn unwritable_report_paths_are_usage_errors_before_anything_runs() {
    for flag in ["--junit", "--json", "--bundles"] {
        let (code, text) =
            harness(&["run", "harness/tests/fixtures/long-sleep.yaml", flag, "/proc/no-such-dir/report"]);
        // Before the fix: a line on stderr after the run, and exit 0.
        assert_eq!(code, 2, "{flag}: {text}");
        assert!(text.contains(&format!("error: {flag} /proc/no-such-dir/report: cannot be written")), "{text}");
        assert!(!text.contains("PASS"), "{flag}: nothing ran: {text}");
    }
}

/// Roots live in the temporary directory, and mountinfo writes a space in a path as
/// `\040`: a reader that matched the raw text never saw such a root's mounts. The FUSE
/// scenarios mount under the root and check it (`expect_mounted`, the leak check after
/// each scenario), so they pass only when every reader unescapes.
#[test]
fn a_temporary_directory_with_a_space_in_its_path_is_served_and_left_empty() {
    let tmp = tempfile::Builder::new().prefix("harness tmp ").tempdir().unwrap();
    let out = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "scenarios/privileged", "scenarios/lifecycle"])
        .env("TMPDIR", tmp.path())
        .current_dir(testkit::manifest_dir!().join(".."))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Nothing at all: no root, and no bundle directory (made only when a bundle is
    // written; nothing failed).
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, Vec::<std::path::PathBuf>::new(), "left in the temporary directory");
}

#[test]
fn a_wait_for_one_recovery_ends_when_another_one_came() {
    let started = std::time::Instant::now();
    let (code, text) = harness(&["run", "harness/tests/fixtures/wait-for-the-wrong-recovery.yaml"]);
    // Before, the step waited its whole 30 s timeout although `restarted` had come.
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "took {:?}:\n{text}", started.elapsed());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("step 3 `wait_event` at harness/tests/fixtures/wait-for-the-wrong-recovery.yaml:14: waited for failed_over of d1, but restarted came instead"),
        "{text}"
    );
    assert!(text.contains("       expected: failed_over of d1\n       observed: restarted of d1 (pid "), "{text}");
}

/// A real nydusd that cannot start is the largest difference there is (issue 25). Before,
/// each such scenario was a SKIP and the run ended "0 unexplained differences", exit 0,
/// with the reason (what nydusd printed) only in a log on disk.
#[test]
fn diff_against_a_nydusd_that_cannot_start_fails_and_quotes_its_last_words() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nydusd");
    let script =
        "#!/bin/sh\necho 'Error: Os { code: 24, kind: Uncategorized, message: \"Too many open files\" }' >&2\nexit 1\n";
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_string_lossy().into_owned();
    let (code, text) = harness(&["diff", "--nydusd", &fake, "scenarios/lifecycle/sigstop-sigcont.yaml"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DIFF scenarios/lifecycle/sigstop-sigcont.yaml"), "{text}");
    assert!(text.contains("mock: passed"), "{text}");
    assert!(text.contains("real: failed at step 1 `start_daemon` (line 16): start_daemon d1 failed"), "{text}");
    assert!(text.contains("the process exited (exit status: 1) before its api socket"), "{text}");
    assert!(
        text.contains("it printed: Error: Os { code: 24, kind: Uncategorized, message: \"Too many open files\" }"),
        "{text}"
    );
    assert!(text.contains("1 unexplained differences"), "{text}");
    // The same daemon under `run --target real`: a failure naming why, not a bare timeout.
    let (code, text) =
        harness(&["run", "--target", "real", "--nydusd", &fake, "scenarios/lifecycle/sigstop-sigcont.yaml"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Too many open files"), "{text}");
}

/// Teardown ends the processes the run started, by pid and start time, never a process
/// that merely names the root (issue 26): a user's `tail -f ROOT/logs/daemons.log` in
/// another terminal was SIGKILLed with its process group when the scenario passed.
#[test]
fn teardown_spares_a_bystander_that_names_the_root() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("short.yaml");
    std::fs::write(
        &scenario,
        "version: 1\nname: short\ntargets: [mock]\ndaemons: [{ id: d1, mode: shared }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - sleep: { ms: 1500 }\n",
    )
    .unwrap();
    let bundles = tempfile::tempdir().unwrap();
    // Without the namespaces: the bystander must be within the run's reach to be spared.
    let mut run = Command::new(testkit::bin_exe!("harness"))
        .args(["run", scenario.to_str().unwrap(), "--bundles"])
        .arg(bundles.path())
        .env("HARNESS_NO_NAMESPACE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let root = loop {
        let found = testkit::pids_naming("/socket/d1/api.sock").into_iter().find_map(|pid| {
            let args = host_facts::process::cmdline(pid as u32)?;
            let socket = args.iter().skip_while(|a| *a != "--apisock").nth(1)?;
            Some(std::path::Path::new(socket).parent()?.parent()?.parent()?.to_owned())
        });
        if let Some(root) = found.filter(|r| r.starts_with(std::env::temp_dir())) {
            break root;
        }
        assert!(std::time::Instant::now() < deadline, "the scenario's daemon never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut bystander = Command::new("tail")
        .arg("-f")
        .arg(root.join("logs/daemons.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(0));
    let alive = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(alive, "the run's teardown killed a process it did not start");
}

/// Hostile input and output paths end with a clear error and an exit code, before any
/// work and never in a panic (issue 26).
#[test]
fn bad_paths_and_numbers_are_refused_up_front_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let unwritable = "/proc/no-such-dir/report.json";
    for args in [
        vec!["bench", "--runs", "1", "--json", unwritable],
        vec!["diff", "--json", unwritable, "scenarios/lifecycle/start-running.yaml"],
    ] {
        let started = std::time::Instant::now();
        let (code, text) = harness(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(&format!("--json {unwritable}: cannot be written")), "{args:?}: {text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{args:?} worked first");
    }
    // A FIFO where the kernel should be, and a timeout past any clock.
    let fifo = dir.path().join("kernel");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (code, text) =
        harness(&["vm", "--kernel", fifo.to_str().unwrap(), "--timeout", "18446744073709551615", "--", "list"]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("is not a regular file") && !text.contains("panicked"), "{text}");
    // A device given to --copy: refused by name, not read for ever.
    let kernel = dir.path().join("bzImage");
    let mut image = vec![0u8; 0x202];
    image.extend_from_slice(b"HdrS");
    std::fs::write(&kernel, image).unwrap();
    let (code, text) = harness(&["vm", "--kernel", kernel.to_str().unwrap(), "--copy", "/dev/zero", "--", "list"]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("--copy /dev/zero: not a regular file or a directory"), "{text}");
    // A temporary directory too long for the sockets under it.
    let long = dir.path().join("t".repeat(100));
    std::fs::create_dir(&long).unwrap();
    let out = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "scenarios/lifecycle/start-running.yaml", "--bundles"])
        .arg(dir.path().join("b"))
        .env("TMPDIR", &long)
        .current_dir(testkit::manifest_dir!().join(".."))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("past the 107 a Unix socket path may have"), "{text}");
}

/// Repeats of a failing scenario each keep their own repro bundle (issue 26): before,
/// they shared one, and a flake hunt kept only the last failure.
#[test]
fn every_failing_run_keeps_a_bundle_of_its_own() {
    let bundles = tempfile::tempdir().unwrap();
    let (code, text) = harness(&[
        "run",
        "harness/tests/fixtures/wrong-state.yaml",
        "--repeat",
        "3",
        "--keep-going",
        "--bundles",
        bundles.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    let made: Vec<_> = std::fs::read_dir(bundles.path()).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(made.len(), 3, "{text}");
}

/// A SIGKILLed `harness vm` leaves its work directory (the kernel unpacked, the guest's
/// root: 137 MB with the scenario library) to the next command, which removes it and says
/// so (issue 26): before, it stayed in the temporary directory for good.
#[test]
fn the_next_command_removes_what_a_killed_vm_run_left() {
    let tmp = tempfile::tempdir().unwrap();
    // Taken for a kernel image (the boot protocol's magic), so the preparation goes on
    // to copy /usr/lib, which takes long enough to be killed during.
    let kernel = tmp.path().join("vmlinuz");
    let mut image = vec![0u8; 4096];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&kernel, image).unwrap();
    let mut vm = Command::new(testkit::bin_exe!("harness"))
        .args(["vm", "--kernel", kernel.to_str().unwrap(), "--copy", "/usr/lib", "--timeout", "60", "--", "list"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let work = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("harness-vm-")))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while work().iter().all(|w| !w.join("owner.json").exists()) {
        assert!(std::time::Instant::now() < deadline, "the VM's work directory never appeared");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    vm.kill().unwrap();
    vm.wait().unwrap();
    assert_eq!(work().len(), 1, "the killed run left its work directory");
    let out = Command::new(testkit::bin_exe!("harness"))
        .args(["vm", "--kernel", "/nonexistent/vmlinuz", "--", "list"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("removed what 1 killed harness run(s) left"), "{said}");
    assert!(work().is_empty(), "{said}");
}

/// With few file descriptors (`ulimit -n`), scenarios fail with the reason, and no root
/// is left behind (issue 26): before, roots were left silently.
#[test]
fn no_root_is_left_when_file_descriptors_run_out() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let bundles = tempfile::tempdir().unwrap();
    let mut command = Command::new(testkit::bin_exe!("harness"));
    command
        .args(["run", "scenarios/recovery", "--keep-going", "--bundles"])
        .arg(bundles.path())
        .env("TMPDIR", tmp.path())
        .current_dir(testkit::manifest_dir!().join(".."));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 14, 14)
                .map_err(std::io::Error::from)
        });
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Too many open files") || text.contains("unable to open"), "{text}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().starts_with("nydus-harness-"))
        .collect();
    assert!(left.is_empty(), "roots left: {left:?}\n{text}");
}

/// The paths `harness list --json` prints for `args`, in order.
fn listed(args: &[&str]) -> Vec<String> {
    let mut all = vec!["list", "scenarios", "--json"];
    all.extend_from_slice(args);
    let (code, text) = harness(&all);
    assert_eq!(code, 0, "{text}");
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].as_str().unwrap().to_owned())
        .collect()
}

/// The N shards of the library, by either dealing, hold each scenario exactly once, and
/// `count` deals them evenly (a CI matrix of N `harness run --partition` jobs runs the
/// library once).
#[test]
fn the_partitions_of_the_library_hold_each_scenario_once() {
    let whole = listed(&[]);
    assert!(whole.len() > 50, "{whole:?}");
    for how in ["count", "hash"] {
        for of in [2, 3] {
            let mut union = Vec::new();
            for shard in 1..=of {
                let part = listed(&["--partition", &format!("{how}:{shard}/{of}")]);
                if how == "count" {
                    assert!(part.len().abs_diff(whole.len() / of) <= 1, "{how}:{shard}/{of}: {}", part.len());
                }
                union.extend(part);
            }
            union.sort();
            let mut expected = whole.clone();
            expected.sort();
            assert_eq!(union, expected, "{how} over {of}");
        }
    }
}

/// "Everything except privileged" can be said, and says what it means; a mistake in an
/// expression is a usage error at its character.
#[test]
fn a_filter_expression_selects_what_it_says() {
    let (code, text) = harness(&["list", "scenarios", "--json"]);
    assert_eq!(code, 0, "{text}");
    let all: Vec<serde_json::Value> =
        text.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let unprivileged: Vec<String> = all
        .iter()
        .filter(|s| !s["requires"].as_array().unwrap().iter().any(|r| r == "root"))
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(unprivileged.len() < all.len(), "the library has privileged scenarios");
    assert_eq!(listed(&["-E", "not requires(=root)"]), unprivileged);
    // Two expressions select what either selects; with --filter, both must hold.
    let faults = listed(&["-E", "path(/^faults//)"]);
    assert!(!faults.is_empty() && faults.iter().all(|p| p.starts_with("faults/")), "{faults:?}");
    let either = listed(&["-E", "path(/^faults//)", "-E", "path(/^mounts//)"]);
    assert!(either.iter().all(|p| p.starts_with("faults/") || p.starts_with("mounts/")), "{either:?}");
    assert!(either.len() > faults.len());
    let both = listed(&["-E", "path(/^faults//)", "--filter", "hang"]);
    assert!(!both.is_empty() && both.iter().all(|p| p.starts_with("faults/") && p.contains("hang")), "{both:?}");
    let (code, text) = harness(&["list", "scenarios", "-E", "tag(failover) and"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("'tag(failover) and' for '--expr <EXPR>': at character 18: expected a function"), "{text}");
}

/// A profile gives what the command line leaves out (here a filter expression, retries
/// and a report path relative to the directory holding .config/); the command line wins
/// over it; an unknown profile or a broken file is a usage error naming it.
#[test]
fn a_profile_fills_in_what_the_command_line_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".config")).unwrap();
    let config = dir.path().join(".config/harness.toml");
    std::fs::write(
        &config,
        "[profile.default]\nretries = 1\n\n[profile.one]\nexpr = [\"name(=start-reaches-running)\"]\njson = \"out/report.json\"\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let (code, text) = harness(&["run", "scenarios/lifecycle", "--config", config_arg, "--profile", "one"]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/report.json")).unwrap()).unwrap();
    let names: Vec<&str> =
        report["scenarios"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["start-reaches-running"], "{report}");
    // The command line's report path wins over the profile's.
    let elsewhere = dir.path().join("elsewhere.json");
    let (code, text) = harness(&[
        "run",
        "scenarios/lifecycle",
        "--config",
        config_arg,
        "--profile",
        "one",
        "--json",
        elsewhere.to_str().unwrap(),
        "-E",
        "name(=destroy-daemon)",
    ]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&elsewhere).unwrap()).unwrap();
    let names: Vec<&str> =
        report["scenarios"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["destroy-daemon"], "{report}");
    let (code, text) = harness(&["run", "scenarios/lifecycle", "--config", config_arg, "--profile", "two"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("error: no profile `two` in {config_arg} (profiles: default, one)")), "{text}");
    std::fs::write(&config, "[profile.one]\nexpr = [\"nmae(x)\"]\n").unwrap();
    let (code, text) = harness(&["run", "scenarios/lifecycle", "--config", config_arg, "--profile", "one"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("error: profile one: expr \"nmae(x)\": at character 1: expected a function"), "{text}");
}

/// The repository's own profiles load, and `laptop` leaves out what needs root.
#[test]
fn the_repository_s_laptop_profile_leaves_out_privileged_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (code, text) = harness(&[
        "run",
        "scenarios/privileged",
        "scenarios/lifecycle/start-running.yaml",
        "--profile",
        "laptop",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let paths: Vec<&str> =
        report["scenarios"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["scenarios/lifecycle/start-running.yaml"], "{report}");
}

/// Found by an adversarial trial: `--slow-after 1e308` (or `inf` in a profile) panicked
/// converting to a Duration, and a line break in a scenario's name split the console's
/// lines, so a name could print `::warning …` as a line of its own under GitHub Actions.
#[test]
fn out_of_range_seconds_and_multi_line_names_are_refused() {
    for seconds in ["1e308", "inf", "NaN", "-1"] {
        let (code, text) =
            harness(&["run", "scenarios/lifecycle/start-running.yaml", &format!("--slow-after={seconds}")]);
        assert_eq!(code, 2, "{seconds}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("h.toml");
    // A quick run under profile `p` of `toml`: its exit code and output.
    let under_profile = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        let config = config.to_str().unwrap();
        harness(&["run", "scenarios/lifecycle/start-running.yaml", "--config", config, "--profile", "p"])
    };
    let (code, text) = under_profile("[profile.p]\nslow-after = inf\n");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("profile p: slow-after: inf seconds: give 0 to 86400"), "{text}");
    let (code, text) = under_profile("[profile.p]\nkeep-going = true\nmax-fail = 2\n");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("profile p: give keep-going or max-fail, not both"), "{text}");
    let file = dir.path().join("s.yaml");
    std::fs::write(&file, "version: 1\nname: \"ok\\n::warning file=x,line=1::INJECTED\"\nsteps: []\n").unwrap();
    let (code, text) = harness(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains(":2:7: name: "), "{text}");
}
