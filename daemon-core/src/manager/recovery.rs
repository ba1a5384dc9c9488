//! Death handling (`snapshotter-lifecycle.md` §8.5): the restart and failover policies.

use std::sync::Arc;

use super::upgrade::Handover;
use super::{Manager, ManagerError, ManagerEvent, RecoverPolicy};
use crate::crash_point;
use crate::daemon::{Daemon, error_chain};
use crate::monitor::DeathEvent;

/// One death event. Runs on the event loop, so it never blocks: recovery goes to a task
/// of its own, and an unknown daemon is reported and skipped (upstream's loop once
/// returned there and never handled another death, fixed by d646992).
pub(super) fn on_death(manager: Manager, death: DeathEvent) {
    let Some(daemon) = manager.get_daemon(&death.daemon_id) else {
        manager.emit(ManagerEvent::UnknownDied { id: death.daemon_id });
        return;
    };
    daemon.reset_state();
    manager.emit(ManagerEvent::Died { id: death.daemon_id.clone() });
    let policy = manager.config().recover_policy;
    if policy == RecoverPolicy::None {
        return;
    }
    tokio::spawn(async move {
        let id = daemon.id();
        let outcome = match policy {
            RecoverPolicy::Restart => {
                restart(&manager, &daemon).await.map(|pid| ManagerEvent::Restarted { id: id.clone(), pid })
            }
            RecoverPolicy::Failover => {
                failover(&manager, &daemon).await.map(|pid| ManagerEvent::FailedOver { id: id.clone(), pid })
            }
            RecoverPolicy::None => return,
        };
        match outcome {
            Ok(event) => manager.emit(event),
            Err(e) => manager.emit(ManagerEvent::RecoveryFailed { id, policy, error: error_chain(&e) }),
        }
    });
}

/// Restart: wait for the old process and its mount to go, clear what it left (a live
/// mount plus a dead socket would make nydusd think it is a takeover), start fresh,
/// and mount the shared instances again in sequence order (upstream uses map order).
pub(super) async fn restart(manager: &Manager, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
    let _ = daemon.wait_for_process_exit().await;
    let _ = manager.monitor().unsubscribe(&daemon.id());
    crash_point::reached("restart.exited");
    daemon.clear_vestige().await?;
    crash_point::reached("restart.cleared");
    let pid = manager.spawn(daemon, false).await?;
    manager.verify_started(daemon).await?;
    daemon.recover_rafs_instances().await?;
    crash_point::reached("restart.remounted");
    Ok(pid)
}

/// Failover: offer the supervisor's saved state, start a new nydusd, let it take over,
/// start it. Differences from upstream: the new daemon gets `--upgrade`, so it waits for
/// the takeover whether or not it detects the crash by itself (upstream relies on that
/// detection, PR #784); and the offer only serves the new process's pid.
pub(super) async fn failover(manager: &Manager, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
    let _ = daemon.wait_for_process_exit().await;
    let id = daemon.id();
    let _ = manager.monitor().unsubscribe(&id);
    crash_point::reached("failover.exited");
    let supervisor = daemon.supervisor().ok_or_else(|| ManagerError::NoSupervisor(id.clone()))?;
    let pid = manager.take_over(daemon, &supervisor, Handover::Failover).await?;
    daemon.start().await?;
    crash_point::reached("failover.started");
    manager.verify_started(daemon).await?;
    // The state blob is as old as the last sendfd that worked; what changed since is in
    // the records only.
    manager.reconcile_mounts(daemon).await?;
    Ok(pid)
}
