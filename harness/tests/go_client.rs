//! The snapshotter's own Go client against the mock and against real nydusd: this project's
//! driver (`ci/go-client/main.go`), compiled against containerd/nydus-snapshotter's
//! `pkg/daemon/client.go`, `pkg/daemon/types`, `pkg/daemon/command` and `pkg/supervisor`
//! from a local checkout, runs every client method and the snapshotter's hot-upgrade
//! sequence against the mock and against the real release it stands for; every step must
//! give the same result, or its difference must be explained in `docs/diff-explained.yaml`
//! (`scenario: go-client`, `request: <step>`).
//!
//! Needs (each absence is the listed reason for skipping, as in CI, which has none of them):
//! - `NYDUS_SNAPSHOTTER_SRC`: a checkout of containerd/nydus-snapshotter;
//! - `CONTAINERD_GO_SRC`: a directory holding `log` (containerd/log v0.1.0) and `errdefs`
//!   (containerd/errdefs) sources, which Debian does not package;
//! - `go` on PATH and Debian's golang-github-pkg-errors-dev, golang-github-sirupsen-logrus-dev,
//!   golang-golang-x-sys-dev and golang-golang-x-sync-dev under /usr/share/gocode;
//! - root and /dev/fuse, and the real daemons: nydusd 2.2 (`$NYDUSD`, PATH or
//!   `~/.cargo/bin`) and 2.4 (`$NYDUSD_2_4`).
//!
//! Nothing of the snapshotter is copied into this repository: the GOPATH is assembled from
//! links in a temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use host_facts::{Requirement, installed_nydusd, nydusd_2_4, unmet};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

/// The snapshotter's packages the driver imports, and the ones they import in turn.
const SNAPSHOTTER_PACKAGES: [&str; 6] =
    ["daemon/types", "daemon/command", "supervisor", "errdefs", "metrics/tool", "utils/retry"];
/// Debian's Go library packages, as their import paths under /usr/share/gocode/src.
const DEBIAN_GO: [&str; 4] =
    ["github.com/pkg/errors", "github.com/sirupsen/logrus", "golang.org/x/sys", "golang.org/x/sync"];

/// What building the driver takes, found without building anything (skips are decided
/// when the tests are listed), or why it is not here.
#[derive(Clone)]
struct Inputs {
    snapshotter: PathBuf,
    containerd: PathBuf,
    go: PathBuf,
}

fn inputs() -> Result<Inputs, String> {
    let var = |name: &str| -> Result<PathBuf, String> {
        let path = std::env::var_os(name).map(PathBuf::from).ok_or_else(|| format!("${name} is not set"))?;
        if path.is_dir() { Ok(path) } else { Err(format!("${name}={} is not a directory", path.display())) }
    };
    let snapshotter = var("NYDUS_SNAPSHOTTER_SRC")?;
    let containerd = var("CONTAINERD_GO_SRC")?;
    let go = host_facts::find_on_path("go").ok_or("no `go` on PATH (Debian: golang-go)")?;
    for package in DEBIAN_GO {
        if !Path::new("/usr/share/gocode/src").join(package).is_dir() {
            return Err(format!("{package} is not under /usr/share/gocode/src (Debian's Go library packages)"));
        }
    }
    if !snapshotter.join("pkg/daemon/client.go").is_file() {
        return Err(format!(
            "{} holds no pkg/daemon/client.go: not a nydus-snapshotter checkout",
            snapshotter.display()
        ));
    }
    for name in ["log", "errdefs"] {
        if !containerd.join(name).is_dir() {
            return Err(format!("$CONTAINERD_GO_SRC={} holds no {name}/", containerd.display()));
        }
    }
    Ok(Inputs { snapshotter, containerd, go })
}

/// Builds the driver under `out` in GOPATH mode; Go's build cache is kept in Cargo's
/// temporary directory, so the second build is quick.
fn build_driver(inputs: &Inputs, out: &Path) -> Result<PathBuf, String> {
    let Inputs { snapshotter, containerd, go } = inputs;
    let client = snapshotter.join("pkg/daemon/client.go");
    let gopath = out.join("gopath");
    let pkg = gopath.join("src/github.com/containerd/nydus-snapshotter/pkg");
    let link = |from: &Path, to: &Path| -> Result<(), String> {
        std::fs::create_dir_all(to.parent().expect("has a parent")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(from, to).map_err(|e| format!("link {}: {e}", to.display()))
    };
    // Only client.go of pkg/daemon: the rest of that package pulls in containerd itself.
    link(&client, &pkg.join("daemon/client.go"))?;
    for package in SNAPSHOTTER_PACKAGES {
        link(&snapshotter.join("pkg").join(package), &pkg.join(package))?;
    }
    for name in ["log", "errdefs"] {
        link(&containerd.join(name), &gopath.join("src/github.com/containerd").join(name))?;
    }
    let driver_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/go-client/main.go");
    link(&driver_src, &gopath.join("src/go-client/main.go"))?;
    let binary = out.join("go-client");
    let output = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(".")
        .current_dir(gopath.join("src/go-client"))
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
        .env("GOCACHE", Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-client-cache"))
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !output.status.success() {
        return Err(format!("go build failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(binary)
}

/// One run of the driver against `nydusd` (with `daemon_args`): step name → result.
fn run_driver(driver: &Path, nydusd: &Path, daemon_args: &str) -> Result<Vec<(String, Value)>, Failed> {
    let root = tempfile::tempdir()?;
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mock-nydusd/tests/fixtures/rafs");
    let output = Command::new(driver)
        .args(["-nydusd".as_ref(), nydusd.as_os_str(), "-root".as_ref(), root.path().as_os_str()])
        .args(["-images".as_ref(), images.as_os_str()])
        .env("GO_CLIENT_DAEMON_ARGS", daemon_args)
        .output();
    // The daemons exit without unmounting, as a snapshotter's upgrade leaves them.
    let _ = nix::mount::umount2(&root.path().join("mnt"), nix::mount::MntFlags::MNT_DETACH);
    let output = output?;
    if !output.status.success() {
        return Err(format!("the driver failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let mut steps = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let step: Value = serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
        let name = step["step"].as_str().ok_or_else(|| format!("no step name in {line}"))?.to_owned();
        steps.push((name, step));
    }
    Ok(steps)
}

/// Runs the driver against the mock as `release` and against the real `nydusd`; fails on
/// any step that differs without an explanation.
fn compare(driver: &Path, release: &str, nydusd: &Path) -> Result<(), Failed> {
    let mock_root = testkit::MockRoot::new("go-client ", &testkit::bin_exe!("harness"))?;
    let fuse = if unmet(&[Requirement::Root, Requirement::Fuse]).is_none() { " --mock-fuse" } else { "" };
    let mock = run_driver(driver, mock_root.nydusd(), &format!("--mock-nydusd-version {release}{fuse}"))?;
    let real = run_driver(driver, nydusd, "--rlimit-nofile 0")?;
    let real_by_step: BTreeMap<&str, &Value> = real.iter().map(|(n, v)| (n.as_str(), v)).collect();
    if mock.len() != real.len() {
        return Err(format!("{} steps against the mock, {} against nydusd {release}", mock.len(), real.len()).into());
    }
    let explained = harness::diff::Explained::shipped();
    let mut unexplained = Vec::new();
    for (name, on_mock) in &mock {
        let on_real = real_by_step.get(name.as_str()).copied().unwrap_or(&Value::Null);
        if on_mock != on_real && explained.why("go-client", name).is_none() {
            unexplained.push(format!("{name}:\n  mock:   {on_mock}\n  nydusd: {on_real}"));
        }
    }
    if unexplained.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {} steps differ unexplained:\n{}", unexplained.len(), mock.len(), unexplained.join("\n"))
            .into())
    }
}

/// Root and /dev/fuse for a real daemon's FUSE mount, and the daemon itself.
fn real(found: Result<PathBuf, String>) -> Result<PathBuf, String> {
    let binary = found?;
    match unmet(&[Requirement::Root, Requirement::Fuse]) {
        Some(reason) => Err(reason),
        None => Ok(binary),
    }
}

fn main() {
    let args = Arguments::from_args();
    let inputs = inputs();
    let mut trials = Vec::new();
    for (release, found) in [("2.4", nydusd_2_4()), ("2.2", installed_nydusd())] {
        let real = real(found);
        let skip = inputs.as_ref().err().or(real.as_ref().err()).cloned();
        let name = format!("go_client::mock_vs_nydusd_{}", release.replace('.', "_"));
        if let Some(reason) = &skip {
            eprintln!("{name} skipped: {reason}");
        }
        let inputs = inputs.clone();
        let trial = Trial::test(name, move || {
            let inputs = inputs.map_err(|reason| format!("skipped: {reason}"))?;
            let nydusd = real.map_err(|reason| format!("skipped: {reason}"))?;
            let out = tempfile::tempdir()?;
            let driver = build_driver(&inputs, out.path())?;
            compare(&driver, release, &nydusd)
        });
        trials.push(trial.with_ignored_flag(skip.is_some()));
    }
    libtest_mimic::run(&args, trials).exit();
}
