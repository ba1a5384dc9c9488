//! `harness vm` booting a real kernel under qemu (TCG: it needs no KVM and no root): the
//! smoke test runs a FUSE restart scenario inside and gets its reports back naming the
//! guest's kernel; the kernel run holds every privileged scenario to what that kernel
//! promises; the others hold the runner to its clean-up,
//! whichever way it ends (deadline, SIGTERM, a failing command): no qemu runs on and no
//! work directory stays. They need qemu-system-x86_64, busybox and a Debian kernel
//! package in `$HARNESS_VM_KERNEL` (`ci/vm-kernels.sh` downloads them), and are listed
//! as skipped, with the reason, without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

fn harness() -> PathBuf {
    testkit::bin_exe!("harness")
}

fn scenarios() -> PathBuf {
    testkit::manifest_dir!().join("../scenarios")
}

/// A `harness vm` run in a directory of its own, which is also its TMPDIR: what the run
/// leaves behind is in there.
struct VmRun {
    dir: tempfile::TempDir,
}

impl VmRun {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Self { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn command(&self, kernel: &Path, timeout: u64, inside: &[&str]) -> Command {
        self.command_with(kernel, timeout, &[], inside)
    }

    /// With `vm_args` (`--module`, `--binary`) given to `harness vm` itself.
    fn command_with(&self, kernel: &Path, timeout: u64, vm_args: &[std::ffi::OsString], inside: &[&str]) -> Command {
        let mut command = Command::new(harness());
        command
            .arg("vm")
            .arg("--kernel")
            .arg(kernel)
            .arg("--out")
            .arg(self.out())
            .arg("--copy")
            .arg(scenarios())
            .args(vm_args)
            .args(["--accel", "tcg", "--memory", "1024", "--timeout", &timeout.to_string(), "--"])
            .args(inside)
            .env("TMPDIR", self.tmp())
            .stdin(Stdio::null());
        command
    }

    /// Nothing of the run is left: no process names its work directory, and that
    /// directory is gone.
    fn assert_nothing_left(&self) -> Result<(), Failed> {
        let needle = self.tmp();
        let running = testkit::pids_naming(needle.to_str().unwrap());
        if !running.is_empty() {
            return Err(format!("processes of the VM run on: {running:?}").into());
        }
        let left: Vec<_> = std::fs::read_dir(self.tmp()).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
        if !left.is_empty() {
            return Err(format!("the VM's work directory stayed: {left:?}").into());
        }
        Ok(())
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(what().into()) }
}

/// Boots the kernel, loads FUSE, runs a scenario that mounts FUSE, kills the daemon and
/// mounts again, and brings back its JUnit and JSON reports, which name the guest's kernel, not the host's.
fn smoke(kernel: PathBuf) -> Result<(), Failed> {
    let run = VmRun::new();
    let output = run
        .command(
            &kernel,
            100,
            &[
                "run",
                "scenarios/privileged/restart-loses-the-mount.yaml",
                "--junit",
                "/results/junit.xml",
                "--json",
                "/results/report.json",
            ],
        )
        .output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    check(output.status.code() == Some(0), || format!("exit {:?}\n{stdout}{stderr}", output.status.code()))?;
    check(stdout.contains("PASS scenarios/privileged/restart-loses-the-mount.yaml"), || stdout.to_string())?;
    check(stdout.contains("1 passed, 0 failed, 0 skipped"), || stdout.to_string())?;
    let vm: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.out().join("vm.json"))?)?;
    let guest = vm["kernel"].as_str().unwrap_or_default().to_owned();
    let host = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
    check(!guest.is_empty() && guest != host, || format!("the guest's kernel {guest:?} (host {host})"))?;
    check(vm["exit_code"] == 0 && vm["accel"] == "tcg", || vm.to_string())?;
    check(stdout.contains(&format!("on kernel {guest}")), || stdout.to_string())?;
    let junit = std::fs::read_to_string(run.out().join("results/junit.xml"))?;
    check(junit.contains(&format!(r#"<property name="kernel" value="{guest}"/>"#)), || junit.clone())?;
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.out().join("results/report.json"))?)?;
    check(report["kernel"] == guest.as_str(), || format!("report.json kernel: {}", report["kernel"]))?;
    check(stderr.contains(&format!("vm: kernel {guest} (tcg)")), || stderr.to_string())?;
    run.assert_nothing_left()
}

/// The kernel run of CI: every privileged scenario inside the guest passes, and what the
/// reports say matches the kernel: a read in flight at a failover is resent from 6.9
/// (FUSE_NOTIFY_RESEND) and stays stuck in `request_wait_answer` before; the erofs image
/// is mounted one way or the other; fscache skips with its reason.
fn privileged_group(kernel: PathBuf) -> Result<(), Failed> {
    let run = VmRun::new();
    let output = run
        .command(
            &kernel,
            100,
            &[
                "run",
                "scenarios",
                "--filter",
                "privileged",
                "--keep-going",
                "--json",
                "/results/report.json",
                "--bundles",
                "/results/bundles",
            ],
        )
        .output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    check(output.status.code() == Some(0), || format!("exit {:?}\n{stdout}{stderr}", output.status.code()))?;
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.out().join("results/report.json"))?)?;
    let scenario = |name: &str| {
        report["scenarios"].as_array().into_iter().flatten().find(|s| s["name"] == name).cloned().unwrap_or_default()
    };
    for name in [
        "failover-with-a-live-reader",
        "failover-with-a-read-in-flight",
        "restart-replaces-the-fuse-mount",
        "crash-leftovers-mean-takeover",
        "erofs-image-mounts-read-only",
    ] {
        check(scenario(name)["status"] == "pass", || format!("{name}: {}", scenario(name)))?;
    }
    check(scenario("fscache-bind-mount-unbind")["status"] == "skip", || stdout.to_string())?;
    let guest = report["kernel"].as_str().unwrap_or_default().to_owned();
    let in_flight = scenario("failover-with-a-read-in-flight")["notes"][0].as_str().unwrap_or_default().to_owned();
    if kernel_at_least(&guest, 6, 9) {
        check(in_flight.contains("FUSE_NOTIFY_RESEND: accepted") && !in_flight.contains("stuck"), || {
            in_flight.clone()
        })?;
    } else {
        check(
            in_flight.contains("did not take d1's failover policy resend")
                && in_flight.contains("in the kernel at request_wait_answer"),
            || in_flight.clone(),
        )?;
    }
    let erofs = scenario("erofs-image-mounts-read-only")["notes"][0].as_str().unwrap_or_default().to_owned();
    check(erofs.contains("mounted from its file") || erofs.contains("mounted through /dev/loop"), || erofs.clone())?;
    run.assert_nothing_left()
}

/// erofs over fscache for real, on the stock kernel with cachefiles and erofs rebuilt with
/// on-demand mode (`$HARNESS_VM_MODULES`, from `ci/vm-modules.sh`): against `target`,
/// every fscache scenario that applies passes (file contents compared through the kernel),
/// none skips for want of fscache, and the report names the out-of-tree modules it ran on.
fn fscache_group(kernel: &Path, modules: &[PathBuf], target: &[&str], binaries: &[PathBuf]) -> Result<(), Failed> {
    let run = VmRun::new();
    let mut inside = vec!["run", "scenarios", "--filter", "fscache", "--keep-going", "--json", "/results/report.json"];
    inside.extend_from_slice(target);
    let mut vm_args: Vec<std::ffi::OsString> = Vec::new();
    for module in modules {
        vm_args.extend(["--module".into(), module.into()]);
    }
    for binary in binaries {
        vm_args.extend(["--binary".into(), binary.into()]);
    }
    let mut command = run.command_with(kernel, 300, &vm_args, &inside);
    let output = command.stdin(Stdio::null()).output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    check(output.status.code() == Some(0), || format!("exit {:?}\n{stdout}{stderr}", output.status.code()))?;
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.out().join("results/report.json"))?)?;
    let scenarios = report["scenarios"].as_array().cloned().unwrap_or_default();
    check(scenarios.len() >= 6, || format!("{} fscache scenarios", scenarios.len()))?;
    let real = target.contains(&"real");
    for scenario in &scenarios {
        let (status, reason) = (scenario["status"].as_str().unwrap_or_default(), scenario["reason"].as_str());
        // Against a real nydusd only what cannot apply to it skips: the mock's faults, and
        // failovers where nydusd 2.2's sendfd and takeover are stubs.
        let not_for_this_nydusd = real
            && status == "skip"
            && reason.is_some_and(|r| r == "applies to mock only" || r.starts_with("needs nydusd 2.3 or later"));
        check(status == "pass" || not_for_this_nydusd, || format!("{}: {scenario}", scenario["name"]))?;
    }
    let passed = scenarios.iter().filter(|s| s["status"] == "pass").count();
    check(passed >= if real { 3 } else { 6 }, || format!("only {passed} passed\n{stdout}"))?;
    let modules = report["fscache_modules"].as_str().unwrap_or_default().to_owned();
    check(
        modules.starts_with("cachefiles build ")
            && modules.contains(", erofs build ")
            && modules.matches("(out of tree)").count() == 2,
        || format!("fscache_modules: {modules:?}"),
    )?;
    check(stdout.contains(&format!("({modules})")), || stdout.to_string())?;
    check(stderr.contains("vm: loaded cachefiles, erofs from --module"), || stderr.to_string())?;
    run.assert_nothing_left()
}

/// The modules `ci/vm-modules.sh` built for the kernel, from `$HARNESS_VM_MODULES`
/// (paths separated by `:`), or why there are none.
fn fscache_modules() -> Result<Vec<PathBuf>, String> {
    let listed = std::env::var("HARNESS_VM_MODULES").map_err(|_| {
        "HARNESS_VM_MODULES names no modules (ci/vm-modules.sh builds cachefiles and erofs with on-demand fscache)"
            .to_owned()
    })?;
    let modules: Vec<PathBuf> = listed.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
    if let Some(missing) = modules.iter().find(|m| !m.is_file()) {
        return Err(format!("HARNESS_VM_MODULES: {}: no such file", missing.display()));
    }
    if modules.len() != 2 {
        return Err(format!("HARNESS_VM_MODULES names {} modules, not cachefiles and erofs", modules.len()));
    }
    Ok(modules)
}

/// A real nydusd with nydus-image beside it, for the guest.
fn nydusd_with_its_builder() -> Result<Vec<PathBuf>, String> {
    let nydusd = host_facts::requirement::installed_nydusd()?;
    let builder = nydusd.with_file_name("nydus-image");
    if !builder.is_file() {
        return Err(format!("no nydus-image beside {}", nydusd.display()));
    }
    Ok(vec![nydusd, builder])
}

/// Whether a `uname -r` release is at least `major.minor`.
fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// A command that never ends is cut off at the deadline: exit 6, the reason, within the
/// deadline and a few seconds, with qemu and the work directory gone.
fn deadline(kernel: PathBuf) -> Result<(), Failed> {
    let run = VmRun::new();
    let started = Instant::now();
    // A recorder in front of a daemon that never comes waits for clients forever.
    let output = run
        .command(
            &kernel,
            20,
            &["record", "--upstream", "/nowhere.sock", "--listen", "/tmp/p.sock", "--out", "/tmp/rec"],
        )
        .output()?;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    check(output.status.code() == Some(6), || format!("exit {:?}: {stderr}", output.status.code()))?;
    check(stderr.contains("the VM did not finish within 20 s; qemu was killed"), || stderr.to_string())?;
    check(took < Duration::from_secs(30), || format!("ended {took:?} after a 20 s deadline"))?;
    let vm: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.out().join("vm.json"))?)?;
    check(vm["exit_code"].is_null() && vm["failure"].is_string(), || vm.to_string())?;
    check(run.out().join("console.log").exists(), || "no console log".into())?;
    check(!run.out().join("results").exists(), || "results of a command that never ended".into())?;
    run.assert_nothing_left()
}

/// SIGTERM while the guest runs: exit 143, and no qemu or work directory left.
fn sigterm(kernel: PathBuf) -> Result<(), Failed> {
    let run = VmRun::new();
    let mut child = run
        .command(
            &kernel,
            120,
            &["record", "--upstream", "/nowhere.sock", "--listen", "/tmp/p.sock", "--out", "/tmp/rec"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // qemu runs once the console log has a line.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(run.out().join("console.log")).map_or(true, |t| t.is_empty()) {
        check(Instant::now() < deadline, || "the guest printed nothing within 60 s".into())?;
        check(child.try_wait()?.is_none(), || "harness vm ended before the guest printed".into())?;
        std::thread::sleep(Duration::from_millis(50));
    }
    check(!testkit::pids_naming(run.tmp().to_str().unwrap()).is_empty(), || "no qemu runs".into())?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            return Err("harness vm outlived SIGTERM by 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    check(status.code() == Some(143), || format!("exit {status:?}"))?;
    run.assert_nothing_left()
}

/// The command's own exit code comes back (5: no scenario selected), with its output.
fn failing_command(kernel: PathBuf) -> Result<(), Failed> {
    let run = VmRun::new();
    let output = run.command(&kernel, 100, &["run", "scenarios", "--filter", "no-such-scenario"]).output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    check(output.status.code() == Some(5), || format!("exit {:?}\n{stdout}{stderr}", output.status.code()))?;
    check(stdout.contains("no-such-scenario"), || format!("the command's message is not passed on:\n{stdout}"))?;
    check(stderr.contains("the command exited 5"), || stderr.to_string())?;
    run.assert_nothing_left()
}

/// A `--binary` the guest already has a program of that name for (here, the harness
/// itself) is refused before anything boots, naming it: the archive would keep the first
/// and `--exec` run another program than the one given.
fn binary_collision(kernel: PathBuf) -> Result<(), Failed> {
    let run = VmRun::new();
    let impostor = run.dir.path().join("harness");
    std::fs::write(&impostor, "#!/bin/sh\necho FAKE\n")?;
    let output =
        run.command_with(&kernel, 60, &["--binary".into(), impostor.clone().into()], &["--version"]).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    check(output.status.code() == Some(4), || format!("exit {:?}: {stderr}", output.status.code()))?;
    let said = format!("--binary {}: the guest already has /bin/harness", impostor.display());
    check(stderr.contains(&said), || stderr.to_string())?;
    check(!run.out().join("console.log").exists(), || "a VM was booted".into())?;
    run.assert_nothing_left()
}

/// One VM test, given the kernel package.
type VmTest = fn(PathBuf) -> Result<(), Failed>;

/// Why VM tests cannot run here, if they cannot.
fn unmet() -> Result<PathBuf, String> {
    if !host_facts::on_path("qemu-system-x86_64") {
        return Err("qemu-system-x86_64 is not on PATH (Debian: qemu-system-x86)".into());
    }
    if !host_facts::on_path("busybox") {
        return Err("busybox is not on PATH (Debian: busybox-static)".into());
    }
    let kernel = std::env::var_os("HARNESS_VM_KERNEL")
        .map(PathBuf::from)
        .ok_or("HARNESS_VM_KERNEL names no kernel package (ci/vm-kernels.sh downloads Debian's)")?;
    if !kernel.is_file() {
        return Err(format!("HARNESS_VM_KERNEL={}: no such file", kernel.display()));
    }
    Ok(kernel)
}

fn main() {
    let args = Arguments::from_args();
    let found = unmet();
    let skip = found.as_ref().err().cloned();
    if let Some(reason) = &skip {
        eprintln!("skipping vm tests: {reason}");
    }
    let kernel = found.unwrap_or_default();
    let modules = skip.clone().map_or_else(fscache_modules, Err);
    let nydusd = modules.clone().and_then(|_| nydusd_with_its_builder());
    let mut trials: Vec<Trial> = Vec::new();
    for (name, needs) in [
        ("vm::fscache_on_demand_serves_every_file_from_the_mock", &modules.clone().map(|_| Vec::new())),
        ("vm::fscache_on_demand_serves_every_file_from_nydusd_2_2", &nydusd),
    ] {
        let (kernel, modules) = (kernel.clone(), modules.clone().unwrap_or_default());
        let binaries = needs.clone().unwrap_or_default();
        let reason = needs.as_ref().err().cloned();
        if let Some(reason) = &reason {
            eprintln!("skipping {name}: {reason}");
        }
        let real = !binaries.is_empty();
        trials.push(
            Trial::test(name, move || {
                let target: &[&str] = if real { &["--target", "real"] } else { &[] };
                fscache_group(&kernel, &modules, target, &binaries)
            })
            .with_ignored_flag(reason.is_some()),
        );
    }
    let tests: [(&str, VmTest); 6] = [
        ("vm::a_binary_the_guest_already_has_is_refused_before_boot", binary_collision),
        ("vm::smoke_fuse_restart_in_the_guest", smoke),
        ("vm::the_privileged_scenarios_hold_on_the_guest_kernel", privileged_group),
        ("vm::a_command_past_its_deadline_is_killed_with_its_vm", deadline),
        ("vm::sigterm_kills_the_vm_and_removes_its_work", sigterm),
        ("vm::the_command_exit_code_and_output_come_back", failing_command),
    ];
    trials.extend(tests.into_iter().map(|(name, body)| {
        let kernel = kernel.clone();
        Trial::test(name, move || body(kernel)).with_ignored_flag(skip.is_some())
    }));
    libtest_mimic::run(&args, trials).exit();
}
