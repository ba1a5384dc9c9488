//! Scenarios whose bug showed in some runs only, run many times: one pass proves little
//! when the old code passed three runs in four.

use std::process::Command;

/// `scenarios/faults/late-mount-after-sigcont.yaml` failed 5 of 20 runs before the doubt
/// needed a second quiet reconciliation; 12 passing runs in a row had a 3 % chance then.
#[test]
fn a_late_mount_after_sigcont_is_reconciled_in_every_run() {
    // A directory of its own for repro bundles: a run makes the directory before it starts.
    let bundles = tempfile::tempdir().unwrap();
    for run in 1..=12 {
        let out = Command::new(testkit::bin_exe!("harness"))
            .args(["run", "scenarios/faults/late-mount-after-sigcont.yaml", "--bundles"])
            .arg(bundles.path())
            .current_dir(testkit::manifest_dir!().join(".."))
            .output()
            .expect("harness runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}:\n{text}");
    }
}
