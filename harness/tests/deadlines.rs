//! A scenario's `timeout_ms` covers everything it does, set-up included, and a run whose
//! deadline passes is reported at what was running, with its line. Each case failed on
//! 2638387: set-up ran to its end past the deadline (and passed), a blocked image build
//! held the run for ever, and every deadline was reported as `setup`, line 0.

mod common;

use common::harness_timed as harness;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_deadline_during_a_step_names_the_step_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "slow-step.yaml",
        "version: 1\nname: slow-step\ntimeout_ms: 300\ndaemons: [{ id: d1 }]\nsteps:\n  - start_daemon: { daemon: d1 }\n  - sleep: { ms: 20000 }\n",
    );
    let (code, text, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let expected =
        format!("step 2 `sleep` at {}:7: scenario deadline of 300 ms passed while this step ran", file.display());
    assert!(text.contains(&expected), "{text}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// 1000 daemons take several seconds to create; a 200 ms deadline ends the set-up at the
/// daemon being created, reported at its declaration.
#[test]
fn a_deadline_during_set_up_stops_it_and_names_the_daemon_being_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("version: 1\nname: many-daemons\ntimeout_ms: 200\ndaemons:\n");
    for i in 1..=1000 {
        text.push_str(&format!("  - id: d{i}\n"));
    }
    text.push_str("steps:\n  - start_daemon: { daemon: d1 }\n");
    let file = write(dir.path(), "many-daemons.yaml", &text);
    let (code, out, took) = harness(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| {
            l.contains("setup at ") && l.contains("scenario deadline of 200 ms passed during set-up: creating daemon d")
        })
        .unwrap_or_else(|| panic!("no set-up deadline in:\n{out}"));
    // The line named is the declaration of the daemon named: `  - id: dN` is line N + 4.
    let n: u64 = line.rsplit("creating daemon d").next().unwrap().trim().parse().unwrap();
    assert!(line.contains(&format!("{}:{}:", file.display(), n + 4)), "{line}");
    assert!(n < 1000, "set-up ran to its end: {line}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// On the real target the image builder runs `nydus-image`; one that never returns is
/// killed at the deadline, and the report names the set-up of the daemon it built for.
#[test]
fn a_blocked_image_build_is_killed_at_the_deadline() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A marker argument names this test's stand-in among the machine's processes.
    let marker = format!("{}", 600 + std::process::id() % 300);
    for name in ["nydusd", "nydus-image"] {
        let script = write(&bin, name, &format!("#!/bin/sh\nexec sleep {marker}\n"));
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = write(
        dir.path(),
        "blocked-build.yaml",
        "version: 1\nname: blocked-build\ntargets: [real]\ntimeout_ms: 500\ndaemons:\n  - id: d1\n    mode: dedicated\n    instances:\n      - snapshot: a\n        tree: { etc/os-release: \"NAME=x\\n\" }\nsteps:\n  - start_daemon: { daemon: d1 }\n",
    );
    let nydusd = bin.join("nydusd");
    let (code, out, took) =
        harness(&["run", "--target", "real", "--nydusd", nydusd.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let expected =
        format!("setup at {}:6: scenario deadline of 500 ms passed during set-up: creating daemon d1", file.display());
    assert!(out.contains(&expected), "{out}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| host_facts::process::state(*pid).is_some_and(|s| s != 'Z'))
            .filter(|pid| host_facts::process::cmdline(*pid).is_some_and(|c| c == ["sleep", marker.as_str()]))
            .count()
    };
    assert_eq!(sleeping(), 0, "the blocked nydus-image outlived the run");
}
