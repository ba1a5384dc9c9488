//! The lifecycle through daemon-core's manager: recovery, death detection, the reaction
//! of a state wait, N daemons at once, and failovers in a row watched for leaks.

use std::path::Path;
use std::time::{Duration, Instant};

use daemon_core::daemon::DaemonMode;
use daemon_core::manager::{ManagerEvent, RecoverPolicy};
use daemon_core::{Daemon, DaemonOptions, DaemonState, Timeouts};
use serde_json::{Value, json};

use super::{Bed, BenchError, Doing};

/// SIGKILL to RUNNING again under `policy`, `runs` times.
pub(super) async fn recovery(
    mock: &Path,
    policy: RecoverPolicy,
    timeouts: Timeouts,
    runs: usize,
) -> Result<Vec<Duration>, BenchError> {
    let mut bed = Bed::new(mock, policy, timeouts)?;
    let daemon = bed.daemon("d1", timeouts).await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let killed = Instant::now();
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. } | ManagerEvent::Restarted { .. })).await?;
        samples.push(killed.elapsed());
        if daemon.last_observed_state() != DaemonState::Running {
            return Err(BenchError::Measurement("not RUNNING after recovery".into()));
        }
    }
    Ok(samples)
}

/// How long `wait_until_state` takes to return after the daemon changed state: the mock
/// holds INIT for 20 ms after start, and journals the change on the same clock
/// (CLOCK_MONOTONIC) the return is read on.
pub(super) async fn state_reaction(mock: &Path, timeouts: Timeouts, runs: usize) -> Result<Vec<Duration>, BenchError> {
    let (dir, _owned) = crate::containment::owned_tempdir("bench-state").doing("a directory for the script")?;
    let script = dir.path().join("hold.json");
    std::fs::write(&script, r#"{"startup":{"hold":{"state":"INIT","ms":20}}}"#)
        .doing(format!("writing {}", script.display()))?;
    let journal = dir.path().join("journal.jsonl");
    let args = vec![
        "--mock-no-abort".into(),
        "--mock-script".into(),
        script.into_os_string(),
        "--mock-journal".into(),
        journal.clone().into_os_string(),
    ];
    let bed = Bed::with(mock, args, RecoverPolicy::None, timeouts)?;
    let mut samples = Vec::with_capacity(runs);
    for n in 0..runs {
        let options = DaemonOptions { id: Some(format!("d{n}")), mode: DaemonMode::Shared, ..DaemonOptions::default() };
        let daemon = bed.manager.add_daemon(Daemon::create(&bed.layout, options, timeouts)?)?;
        bed.manager.spawn(&daemon, false).await?;
        daemon.wait_until_state(DaemonState::Running).await?;
        let returned = mock_nydusd::journal::monotonic_ns();
        let pid = u64::from(daemon.pid());
        let changed = std::fs::read_to_string(&journal)
            .doing(format!("reading {}", journal.display()))?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["pid"].as_u64() == Some(pid) && e["event"] == "state" && e["to"] == "RUNNING")
            .and_then(|e| e["t_ns"].as_u64())
            .ok_or_else(|| BenchError::Measurement("the mock journaled no change to RUNNING".into()))?;
        samples.push(Duration::from_nanos(returned.saturating_sub(changed)));
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
    }
    Ok(samples)
}

/// SIGKILL to the monitor's death event.
pub(super) async fn detection(mock: &Path, runs: usize) -> Result<Vec<Duration>, BenchError> {
    let timeouts = Timeouts::default();
    let mut bed = Bed::new(mock, RecoverPolicy::None, timeouts)?;
    let mut samples = Vec::with_capacity(runs);
    for n in 0..runs {
        let daemon = bed.daemon(&format!("d{n}"), timeouts).await?;
        let killed = Instant::now();
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::Died { .. })).await?;
        samples.push(killed.elapsed());
    }
    Ok(samples)
}

/// N daemons: time to start all, to fail all over, and memory.
pub(super) async fn scale(mock: &Path, n: usize) -> Result<Value, BenchError> {
    let timeouts = Timeouts { socket: Duration::from_secs(30), state: Duration::from_secs(30), ..Timeouts::default() };
    let mut bed = Bed::new(mock, RecoverPolicy::Failover, timeouts)?;
    let started = Instant::now();
    let mut daemons = Vec::with_capacity(n);
    for i in 0..n {
        let options = DaemonOptions { id: Some(format!("d{i}")), mode: DaemonMode::Shared, ..DaemonOptions::default() };
        daemons.push(bed.manager.add_daemon(Daemon::create(&bed.layout, options, timeouts)?)?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for d in &daemons {
        let (m, d) = (bed.manager.clone(), d.clone());
        tasks.spawn(async move { m.start_daemon_and_wait(&d).await.map(drop) });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let start_all = started.elapsed();
    let mock_rss: Vec<u64> = daemons.iter().filter_map(|d| rss_kb(d.pid())).collect();
    let killed = Instant::now();
    for d in &daemons {
        d.signal(nix::sys::signal::Signal::SIGKILL)?;
    }
    let mut done = 0;
    while done < n {
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. })).await?;
        done += 1;
    }
    let failover_all = killed.elapsed();
    Ok(json!({
        "daemons": n,
        "start_all_ms": start_all.as_secs_f64() * 1e3,
        "failover_all_ms": failover_all.as_secs_f64() * 1e3,
        "manager_rss_mb": rss_kb(std::process::id()).map(|k| k as f64 / 1024.0),
        "mock_rss_mb_per_daemon": mock_rss.iter().sum::<u64>() as f64 / mock_rss.len().max(1) as f64 / 1024.0,
    }))
}

pub(super) fn rss_kb(pid: u32) -> Option<u64> {
    Some(testkit::rss_kb(pid)).filter(|kb| *kb > 0)
}

pub(super) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

pub(super) fn child_processes() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().nth(1) == Some(me.as_str())))
                .unwrap_or(false)
        })
        .count()
}

/// `runs` failovers in a row: the manager's open files, child processes and memory before
/// and after (growth means a leak).
pub async fn leak_check(mock: &Path, runs: usize) -> Result<Value, BenchError> {
    let timeouts = Timeouts::default();
    let mut bed = Bed::new(mock, RecoverPolicy::Failover, timeouts)?;
    let daemon = bed.daemon("d1", timeouts).await?;
    // Warm up, so that pools and caches reach their steady size before the first sample.
    for _ in 0..20 {
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. })).await?;
    }
    let before = (open_fds(), child_processes(), rss_kb(std::process::id()).unwrap_or(0));
    for _ in 0..runs {
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. })).await?;
    }
    // A connection of the last failover may still be closing, and on a loaded machine
    // (the whole suite on 2 cores) a reaper may run late: a leak is what stays, so the
    // counts get up to 10 s to come back before they are read.
    let settle = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while (open_fds(), child_processes()) != (before.0, before.1) && tokio::time::Instant::now() < settle {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let after = (open_fds(), child_processes(), rss_kb(std::process::id()).unwrap_or(0));
    let mounts = host_facts::mountinfo::under(bed.layout.root()).len();
    Ok(json!({
        "failovers": runs,
        "fds": [before.0, after.0],
        "child_processes": [before.1, after.1],
        "rss_kb": [before.2, after.2],
        "mounts_under_root_after": mounts,
    }))
}
