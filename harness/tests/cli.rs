//! The harness binary as a user runs it.

use std::path::Path;
use std::process::Command;

fn harness(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("harness runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

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

#[test]
fn validate_reports_every_invalid_file_with_its_location() {
    let (code, text) = harness(&["validate", "scenarios/invalid"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("scenarios/invalid/unknown-key.yaml:6:26: unknown field `colour`"), "{text}");
    assert!(text.contains("scenarios/invalid/dangling-daemon.yaml:7:27: unknown daemon `d2`"), "{text}");
    assert!(text.contains("scenarios/invalid/wrong-type.yaml:6:18:"), "{text}");
}

#[test]
fn run_with_an_invalid_file_refuses_to_start() {
    let (code, text) = harness(&["run", "scenarios/invalid/unknown-key.yaml"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("unknown-key.yaml:6:26"), "{text}");
}

#[test]
fn the_binary_runs_the_mock_when_named_mock_nydusd() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("mock-nydusd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_harness"), &link).unwrap();
    let out = Command::new(&link).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nydusd \rVersion: \t"));
}
