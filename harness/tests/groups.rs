//! Steps beside steps: `background`/`join` and `concurrently` really overlap, a failure in
//! any lane fails the scenario at once naming the lane and the step's line, and the
//! scenario deadline covers every lane, saying what each was doing.

mod common;

use common::harness_timed as harness;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A lane that waits for an event another lane causes passes only if both run at once:
/// run one after the other, the wait would come first and time out.
#[test]
fn lanes_run_at_the_same_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "lanes.yaml",
        "version: 1\nname: lanes\ntimeout_ms: 20000\ndaemons: [{ id: d1 }]\nsteps:\n  - concurrently:\n      - - wait_event: { daemon: d1, event: started, timeout_ms: 5000 }\n      - - sleep: { ms: 100 }\n        - start_daemon: { daemon: d1 }\n  - background:\n      name: w\n      steps:\n        - wait_event: { daemon: d1, event: died, timeout_ms: 5000 }\n  - signal: { daemon: d1, signal: SIGKILL }\n  - join: { name: w }\n",
    );
    let (code, text, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}: a lane waited for its deadline");
}

/// A background group's failure ends the scenario while the scenario's own steps still
/// run (their 20 s sleep is cut short), reported at the failing step's line and lane.
#[test]
fn a_failure_in_a_background_group_fails_the_scenario_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bg-fails.yaml",
        "version: 1\nname: bg-fails\ndaemons: [{ id: d1 }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - background:\n      name: checking\n      steps:\n        - sleep: { ms: 50 }\n        - expect_state: { daemon: d1, state: READY }\n  - sleep: { ms: 20000 }\n",
    );
    let (code, text, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let expected = format!("step 2 `expect_state` in background checking at {}:10:", file.display());
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains("step 2 `expect_state` in background checking (line 10)"),
        "the timeline names the lane: {text}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: the failure waited for the other lane");
}

/// The first failing lane of `concurrently` ends the other lanes; the report names the lane.
#[test]
fn a_failing_lane_ends_the_others_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "lane-fails.yaml",
        "version: 1\nname: lane-fails\ndaemons: [{ id: d1 }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - concurrently:\n      - - sleep: { ms: 20000 }\n      - - expect_alive: { daemon: d1, alive: false }\n",
    );
    let (code, text, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let expected = format!("step 2 `expect_alive` in lane 2 at {}:8:", file.display());
    assert!(text.contains(&expected), "{text}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// The scenario's deadline covers a group still running after the scenario's own steps;
/// the report says which lane was at which step.
#[test]
fn the_deadline_covers_a_background_group_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bg-slow.yaml",
        "version: 1\nname: bg-slow\ntimeout_ms: 500\nsteps:\n  - background:\n      name: slow\n      steps:\n        - sleep: { ms: 20000 }\n  - sleep: { ms: 1 }\n",
    );
    let (code, text, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let expected = format!(
        "step 1 `sleep` in background slow at {}:8: scenario deadline of 500 ms passed while this step ran",
        file.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// `within` bounds how long successful steps may take: steps that end in time pass, and
/// ones still running at the bound are cut short there and fail, saying so.
#[test]
fn within_bounds_the_time_steps_may_take() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "within.yaml",
        "version: 1\nname: within\ndaemons: [{ id: d1 }]\nsteps:\n  - within: { ms: 5000, steps: [{ start_daemon: { daemon: d1 } }] }\n  - within:\n      ms: 300\n      steps:\n        - expect_state: { daemon: d1, state: RUNNING }\n        - sleep: { ms: 20000 }\n",
    );
    let (code, text, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let expected = format!(
        "step 2 `within` at {}:6: the steps did not all end within 300 ms: cut short at `sleep` (line 10)",
        file.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(took < Duration::from_secs(10), "took {took:?}: the bound did not cut the steps short");
}

/// Runs `text` as a scenario file; its exit code, output and duration.
fn run_text(name: &str, text: &str) -> (i32, String, Duration, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), name, text);
    let (code, out, took) = harness(&["run", file.to_str().unwrap()]);
    (code, out, took, dir)
}

const SHARED_D1: &str = "version: 1\nname: x\ntargets: [mock]\ndaemons: [{ id: d1, mode: shared }]\n";

/// Found by the adversarial trial of the groups; each failed before its fix.
mod adversarial {
    use super::*;

    /// One event is consumed once, by one of the lanes waiting for it: two lanes waiting
    /// for the same single death both passed.
    #[test]
    fn two_lanes_cannot_both_consume_one_event() {
        let (code, out, _, _dir) = run_text(
            "two-waits.yaml",
            &format!(
                "{SHARED_D1}steps:\n  - start_daemon: {{ daemon: d1 }}\n  - concurrently:\n    - - wait_event: {{ daemon: d1, event: died, timeout_ms: 1500 }}\n    - - wait_event: {{ daemon: d1, event: died, timeout_ms: 1500 }}\n    - - signal: {{ daemon: d1, signal: SIGKILL }}\n"
            ),
        );
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("no died of d1 within 1500 ms"), "{out}");
    }

    /// A control-socket request to a stopped daemon no longer blocks every lane: the other
    /// lane resumes the daemon and the request completes. Before, the scenario froze for
    /// the 5 s read timeout and failed.
    #[test]
    fn a_stopped_daemon_blocks_only_the_lane_that_waits_for_it() {
        let (code, out, took, _dir) = run_text(
            "stopped.yaml",
            &format!(
                "{SHARED_D1}steps:\n  - start_daemon: {{ daemon: d1 }}\n  - signal: {{ daemon: d1, signal: SIGSTOP }}\n  - concurrently:\n    - - script: {{ daemon: d1, script: {{ rules: [] }} }}\n    - - sleep: {{ ms: 100 }}\n      - signal: {{ daemon: d1, signal: SIGCONT }}\n"
            ),
        );
        assert_eq!(code, 0, "{out}");
        assert!(took < Duration::from_secs(4), "took {took:?}");
    }

    /// `kill_manager` ends the manager's operations other lanes have in flight, as a crash
    /// would; before, the mount went on in the "killed" manager, which kept the store, and
    /// the next manager could not open it.
    #[test]
    fn kill_manager_ends_what_other_lanes_have_in_flight() {
        let (code, out, _, _dir) = run_text(
            "kill-mid-mount.yaml",
            "version: 1\nname: x\ntargets: [mock]\nmanager: { recover_policy: failover }\ndaemons: [{ id: d1, mode: shared, instances: [{ snapshot: a }], script: { rules: [{ when: { method: POST, path: /api/v1/mount, process: 1 }, then: [{ delay_ms: 500 }, reply] }] } }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - concurrently:\n    - - mount_instance: { daemon: d1, snapshot: a, may_fail: true }\n    - - expect_journal: { daemon: d1, sequence: [{ event: script, path: /api/v1/mount }], timeout_ms: 3000 }\n      - kill_manager: {}\n      - restart_manager: {}\n  - expect_consistent: { daemon: d1 }\n  - expect_no_leaks: {}\n",
        );
        assert_eq!(code, 0, "{out}");
    }

    /// A wait goes on across a manager restart in another lane; before, it failed at once
    /// with "no restarted within 5000 ms" when the manager was briefly gone.
    #[test]
    fn a_wait_goes_on_across_a_manager_restart_in_another_lane() {
        let (code, out, _, _dir) = run_text(
            "wait-across.yaml",
            "version: 1\nname: x\ntargets: [mock]\nmanager: { recover_policy: restart }\ndaemons: [{ id: d1, mode: shared }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - concurrently:\n    - - wait_event: { daemon: d1, event: restarted, timeout_ms: 5000 }\n    - - sleep: { ms: 100 }\n      - kill_manager: {}\n      - restart_manager: {}\n      - signal: { daemon: d1, signal: SIGKILL }\n",
        );
        assert_eq!(code, 0, "{out}");
    }

    /// A script set while no process runs counts from then: its rule did not inherit the
    /// old rule's firings. Before, the scenario passed although the rule never fired.
    #[test]
    fn times_count_from_when_the_script_was_set() {
        let (code, out, _, _dir) = run_text(
            "times.yaml",
            "version: 1\nname: x\ntargets: [mock]\ndaemons: [{ id: d1, mode: shared, script: { rules: [{ when: { method: GET, path: /api/v1/daemon }, then: [reply] }] } }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - destroy: { daemon: d1 }\n  - script: { daemon: d1, script: { rules: [{ name: never-sent, when: { method: PUT, path: /api/v1/daemon/fuse/takeover }, then: [reply], times: { min: 1 } }] } }\n",
        );
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("script rule 1 (never-sent) of d1 fired 0 times"), "{out}");
        assert!(out.contains("the daemon had no request since the script was set"), "{out}");
    }

    /// The harness's own files under the root (ledger, owner, scripts, journals) are not a
    /// scenario's to damage: removing the ledger made a SIGKILLed run's sweep miss its
    /// daemons, and an emptied script file switched `times` off.
    #[test]
    fn the_harness_s_own_files_are_refused_to_steps() {
        for (step, owned) in [
            ("remove_file: { path: processes.jsonl }", "processes.jsonl"),
            ("remove_file: { path: owner.json }", "owner.json"),
            ("corrupt_file: { path: scripts/d1.json, to: empty }", "scripts"),
            ("corrupt_file: { path: ./logs/harness.jsonl }", "logs/harness.jsonl"),
        ] {
            let (code, out, _, _dir) =
                run_text("owned.yaml", &format!("{SHARED_D1}steps:\n  - start_daemon: {{ daemon: d1 }}\n  - {step}\n"));
            assert_eq!(code, 1, "{out}");
            assert!(out.contains(&format!("is the harness's own ({owned})")), "{step}: {out}");
        }
    }

    /// Groups nested to the limit run (the step future is boxed; 8 levels overflowed the
    /// stack before); deeper ones are refused where they stand.
    #[test]
    fn nested_groups_run_to_the_limit_and_are_refused_beyond() {
        fn nest(n: usize) -> String {
            if n == 0 {
                return "{ sleep: { ms: 1 } }".to_owned();
            }
            format!(
                "{{ within: {{ ms: 5000, steps: [{{ concurrently: [[{}], [{{ sleep: {{ ms: 1 }} }}]] }}] }} }}",
                nest(n - 1)
            )
        }
        let (code, out, _, _dir) = run_text("deep.yaml", &format!("{SHARED_D1}steps:\n  - {}\n", nest(3)));
        assert_eq!(code, 0, "{out}");
        let (code, out, _, _dir) = run_text("deeper.yaml", &format!("{SHARED_D1}steps:\n  - {}\n", nest(4)));
        assert_eq!(code, 3, "a file that does not load: {out}");
        assert!(out.contains("nests groups 7 deep here; at most 6 levels"), "{out}");
    }
}
