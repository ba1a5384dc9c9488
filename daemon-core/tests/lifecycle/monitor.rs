//! The liveness monitor watching real mock processes.

use std::time::{Duration, Instant};

use daemon_core::DaemonState;
use daemon_core::monitor::{DeathEvent, LivenessMonitor};
use libtest_mimic::Trial;
use tokio::sync::mpsc::Receiver;

use crate::support::{Env, TestResult, ensure, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("monitor::a_killed_daemon_is_reported_dead", &[], killed),
        trial("monitor::a_daemon_leaving_through_the_exit_api_is_reported_dead", &[], exited),
        trial("monitor::a_busy_daemon_that_stays_up_is_not_reported", &[], busy),
    ]
}

/// Waits for the next death event, failing the test after 10 s (a safety net, not a goal).
async fn next_death(events: &mut Receiver<DeathEvent>) -> Result<DeathEvent, String> {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .map_err(|_| "no death event within 10 s".to_owned())?
        .ok_or_else(|| "monitor channel closed".to_owned())
}

/// A running mock daemon `d1` and a monitor watching it (keep the env and monitor alive).
async fn watched_daemon()
-> Result<(Env, daemon_core::Daemon, LivenessMonitor, Receiver<DeathEvent>), libtest_mimic::Failed> {
    let env = Env::new()?;
    let daemon = env.shared_daemon("d1")?;
    env.spawn(&daemon, false).await?;
    daemon.wait_until_state(DaemonState::Running).await?;
    let (monitor, events) = LivenessMonitor::new(Env::timeouts());
    monitor.subscribe("d1", &daemon.api_socket(), daemon.pid()).await?;
    Ok((env, daemon, monitor, events))
}

async fn killed() -> TestResult {
    let (_env, daemon, _monitor, mut events) = watched_daemon().await?;
    let killed_at = Instant::now();
    daemon.signal_child(nix::sys::signal::Signal::SIGKILL)?;
    let event = next_death(&mut events).await?;
    eprintln!("death event {:?} after SIGKILL", killed_at.elapsed());
    ensure(event.daemon_id == "d1" && event.socket == daemon.api_socket(), format!("{event:?}"))
}

async fn exited() -> TestResult {
    let (_env, daemon, _monitor, mut events) = watched_daemon().await?;
    daemon.exit().await?;
    let event = next_death(&mut events).await?;
    ensure(event.daemon_id == "d1", format!("{event:?}"))?;
    let status = daemon.wait_child().await.ok_or("no process")?;
    ensure(status.success(), format!("exit API ends with status 0, got {status}"))
}

async fn busy() -> TestResult {
    let (_env, daemon, _monitor, mut events) = watched_daemon().await?;
    // Many requests on other connections, some of them failing, must not disturb the watch.
    let client = daemon.client().await?;
    for _ in 0..50 {
        client.get_daemon_info().await?;
        let _ = client.start().await;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(200), events.recv()).await.is_err();
    ensure(quiet, "a live daemon was reported dead")
}
