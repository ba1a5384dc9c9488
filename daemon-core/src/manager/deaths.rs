//! Death handling (`snapshotter-lifecycle.md` §8.5): the restart and failover policies.

use std::sync::Arc;

use nix::sys::signal::Signal;

use super::takeover::Handover;
use super::{Manager, ManagerError, ManagerEvent, RecoverPolicy, Serves};
use crate::crash_point;
use crate::daemon::Daemon;
use crate::monitor::DeathEvent;

/// One death event. Runs on the event loop, so it never blocks: recovery goes to a task
/// of its own, and an unknown daemon is reported and skipped (upstream's loop once
/// returned there and never handled another death, fixed by d646992).
///
/// A death belongs to one process: an event about a predecessor of the daemon's current
/// process is dropped, and a death while the daemon's recovery runs is handed to that
/// recovery, which goes on if it is about the process it ended with.
pub(super) fn on_death(manager: Manager, death: DeathEvent) {
    let Some(daemon) = manager.get_daemon(&death.daemon_id) else {
        manager.emit(ManagerEvent::UnknownDied { id: death.daemon_id });
        return;
    };
    if death.pid != 0 && death.pid != daemon.pid() {
        return;
    }
    recover_in_background(manager, daemon, death.pid);
}

/// Starts the recovery of a daemon whose process `pid` is dead, unless one is running
/// already; that one is told of the death instead.
pub(super) fn recover_in_background(manager: Manager, daemon: Arc<Daemon>, pid: u32) {
    {
        let mut recovering = manager.inner.recovering.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = recovering.get_mut(&daemon.id()) {
            *pending = Some(pid);
            return;
        }
        recovering.insert(daemon.id(), None);
    }
    tokio::spawn(recover_until_settled(manager, daemon));
}

/// Recovers `daemon` under the configured policy, and again when the process it ended
/// with was reported dead meanwhile (the death of every replacement is seen); then
/// releases the daemon for the next death. Deaths of replacements that failed an attempt
/// were the recovery's own doing and start nothing.
async fn recover_until_settled(manager: Manager, daemon: Arc<Daemon>) {
    let id = daemon.id();
    let policy = manager.config().recover_policy;
    loop {
        daemon.reset_state();
        manager.emit(ManagerEvent::Died { id: id.clone() });
        let mut recovered = false;
        if policy != RecoverPolicy::None {
            let event = match recover_with_retries(&manager, &daemon, policy).await {
                Ok(pid) if policy == RecoverPolicy::Restart => ManagerEvent::Restarted { id: id.clone(), pid },
                Ok(pid) => ManagerEvent::FailedOver { id: id.clone(), pid },
                Err(error) => ManagerEvent::RecoveryFailed { id: id.clone(), policy, error: Arc::new(error) },
            };
            recovered = !matches!(event, ManagerEvent::RecoveryFailed { .. });
            manager.emit(event);
        }
        let mut recovering = manager.inner.recovering.lock().unwrap_or_else(|e| e.into_inner());
        match recovering.get(&id) {
            Some(Some(pid)) if recovered && *pid == daemon.pid() => {
                recovering.insert(id.clone(), None);
            }
            _ => {
                recovering.remove(&id);
                return;
            }
        }
    }
}

/// The policy's recovery, tried up to [`super::RecoveryRetry::attempts`] times. A failed
/// attempt's replacement is stopped with SIGKILL and reaped before the next one (SIGKILL,
/// not SIGTERM: nydusd unmounts on SIGTERM, and failover exists to keep the mount).
async fn recover_with_retries(
    manager: &Manager,
    daemon: &Arc<Daemon>,
    policy: RecoverPolicy,
) -> Result<u32, ManagerError> {
    let retry = manager.config().recovery;
    let mut causes = Vec::new();
    for attempt in 1..=retry.attempts.max(1) {
        let outcome = match policy {
            RecoverPolicy::Restart => restart(manager, daemon).await,
            RecoverPolicy::Failover => failover(manager, daemon).await,
            RecoverPolicy::None => unreachable!("no recovery runs under the none policy"),
        };
        match outcome {
            Ok(pid) => return Ok(pid),
            Err(error) => {
                causes.push(error.with_cleanup(manager.abandon_process(daemon, Signal::SIGKILL).await));
                if attempt < retry.attempts {
                    tokio::time::sleep(retry.gap_after(attempt)).await;
                }
            }
        }
    }
    Err(ManagerError::RecoveryExhausted { id: daemon.id(), policy, causes })
}

/// Restart: wait for the old process and its mount to go, clear what it left (a live
/// mount plus a dead socket would make nydusd think it is a takeover), start fresh,
/// and mount the shared instances again in sequence order (upstream uses map order).
pub(super) async fn restart(manager: &Manager, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
    let _ = manager.monitor().unsubscribe(&daemon.id());
    // The API hung up, so the process is dying; one that lingers (stopped, hung) is killed.
    daemon.stop_process(None).await?;
    crash_point::reached("restart.exited");
    daemon.clear_vestige().await?;
    crash_point::reached("restart.cleared");
    let pid = manager.spawn(daemon, false).await?;
    manager.verify_started(daemon).await?;
    manager.reconcile_mounts(daemon, Serves::Nothing).await?;
    crash_point::reached("restart.remounted");
    Ok(pid)
}

/// Failover: offer the supervisor's saved state, start a new nydusd, let it take over,
/// start it. Differences from upstream: the new daemon gets `--upgrade`, so it waits for
/// the takeover whether or not it detects the crash by itself (upstream relies on that
/// detection, PR #784); and the offer only serves the new process's pid.
pub(super) async fn failover(manager: &Manager, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
    let id = daemon.id();
    let _ = manager.monitor().unsubscribe(&id);
    // Two processes must never serve one FUSE connection: a lingering one is killed.
    daemon.stop_process(None).await?;
    crash_point::reached("failover.exited");
    let supervisor = daemon.supervisor().ok_or_else(|| ManagerError::NoSupervisor(id.clone()))?;
    let pid = manager.take_over_from_supervisor(daemon, &supervisor, Handover::Failover).await?;
    daemon.start().await?;
    crash_point::reached("failover.started");
    manager.verify_started(daemon).await?;
    // The state blob is as old as the last sendfd that worked; what changed since is in
    // the records only.
    manager.reconcile_mounts(daemon, Serves::AsReported).await?;
    Ok(pid)
}
