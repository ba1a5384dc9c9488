//! What the harness's integration tests share: the binary run as a user runs it.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository's root, where the binary is run from.
pub fn repo() -> PathBuf {
    testkit::manifest_dir!().join("..")
}

/// Runs `harness args` from the repository root: its exit code and everything it printed.
/// A `run` gets a bundles directory of its own: repro bundles of deliberately failing runs
/// go with the test, not into `<tmp>/harness-failures`, where every test run used to
/// leave them.
pub fn harness(args: &[&str]) -> (i32, String) {
    let (code, text, _) = harness_timed(args);
    (code, text)
}

/// [`harness`], and how long it took.
pub fn harness_timed(args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let bundles = tempfile::tempdir().unwrap();
    let mut command = Command::new(testkit::bin_exe!("harness"));
    command.args(args);
    if args.first() == Some(&"run") && !args.contains(&"--bundles") {
        command.arg("--bundles").arg(bundles.path());
    }
    let out = command.current_dir(repo()).output().expect("harness runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text, started.elapsed())
}
