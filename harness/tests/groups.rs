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
    let expected = format!("step 2 `within` at {}:6: 2 steps did not end within 300 ms", file.display());
    assert!(text.contains(&expected), "{text}");
    assert!(took < Duration::from_secs(10), "took {took:?}: the bound did not cut the steps short");
}
