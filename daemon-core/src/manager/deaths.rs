//! Death handling (`snapshotter-lifecycle.md` §8.5): the restart and failover policies.

use std::sync::Arc;

use nix::sys::signal::Signal;

use super::takeover::Handover;
use super::tasks::Owner;
use super::{Manager, ManagerError, ManagerEvent, Serves};
use crate::crash_point;
use crate::daemon::{Daemon, error_chain};
use crate::monitor::DeathEvent;

/// What the manager does when a daemon dies (`snapshotter-lifecycle.md` §6.3).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoverPolicy {
    /// Leave it dead.
    #[default]
    None,
    /// Start a fresh daemon and re-mount its instances (running containers lose their
    /// FUSE mount: only failover keeps it).
    Restart,
    /// Hand the dead daemon's state and FUSE fd to a new daemon through the supervisor.
    Failover,
}

/// The retry budget of one recovery (restart or failover): a replacement that dies or fails
/// at any step is stopped, and the policy is tried again after a backoff that doubles from
/// `backoff` up to `backoff_cap`, `attempts` times in all; only then `RecoveryFailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryRetry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Gap before the second attempt.
    pub backoff: std::time::Duration,
    /// Largest gap between attempts.
    pub backoff_cap: std::time::Duration,
}

impl Default for RecoveryRetry {
    fn default() -> Self {
        // Three attempts cover a replacement that dies once or twice on its way up (a
        // crash loop ends in RecoveryFailed within about a second of backoff).
        Self {
            attempts: 3,
            backoff: std::time::Duration::from_millis(100),
            backoff_cap: std::time::Duration::from_secs(1),
        }
    }
}

impl RecoveryRetry {
    /// The gap after failed attempt `n` (1-based).
    pub fn gap_after(&self, n: u32) -> std::time::Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.backoff_cap)
    }
}

/// One death event. Runs on the event loop, so it never blocks: recovery goes to a task
/// of its own, and an unknown daemon is reported and skipped (upstream's loop once
/// returned there and never handled another death, fixed by d646992).
///
/// A death belongs to one process: an event about a predecessor of the daemon's current
/// process is dropped, and a death while the daemon's recovery runs is handed to that
/// recovery, which goes on if it is about the process it ended with. The death of a
/// destroyed daemon is dropped without a word: its `destroyed` event was its last.
pub(super) fn on_death(manager: Manager, death: DeathEvent) {
    let Some(daemon) = manager.get_daemon(&death.daemon_id) else {
        if !manager.is_retired(&death.daemon_id) {
            manager.emit(ManagerEvent::UnknownDied { id: death.daemon_id });
        }
        return;
    };
    if death.pid != 0 && death.pid != daemon.pid() {
        return;
    }
    recover_in_background(manager, daemon, death.pid);
}

/// How a policy recovers a daemon; `None` leaves it dead. The one place a policy is
/// matched, so a new policy must say here what it does and what its success is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    Restart,
    Failover,
}

impl Recovery {
    fn of(policy: RecoverPolicy) -> Option<Self> {
        match policy {
            RecoverPolicy::None => None,
            RecoverPolicy::Restart => Some(Self::Restart),
            RecoverPolicy::Failover => Some(Self::Failover),
        }
    }

    async fn attempt(self, manager: &Manager, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
        match self {
            Self::Restart => restart(manager, daemon).await,
            Self::Failover => failover(manager, daemon).await,
        }
    }

    fn succeeded(self, id: String, pid: u32) -> ManagerEvent {
        match self {
            Self::Restart => ManagerEvent::Restarted { id, pid },
            Self::Failover => ManagerEvent::FailedOver { id, pid },
        }
    }
}

/// A running recovery: its serial (so that only it releases its entry) and the pid of a
/// death reported meanwhile.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recovering {
    serial: u64,
    pending: Option<u32>,
}

/// Starts the recovery of a daemon whose process `pid` is dead, unless one is running
/// already; that one is told of the death instead. The recovery is a task of the daemon:
/// its destroy ends it.
pub(super) fn recover_in_background(manager: Manager, daemon: Arc<Daemon>, pid: u32) {
    let serial = {
        let mut recovering = manager.inner.recovering.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = recovering.get_mut(&daemon.id()) {
            running.pending = Some(pid);
            return;
        }
        let serial = manager.inner.serials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        recovering.insert(daemon.id(), Recovering { serial, pending: None });
        serial
    };
    let owner = Owner::Daemon(daemon.id());
    let tasks = manager.inner.tasks.clone();
    drop(tasks.spawn(owner, recover_until_settled(manager, daemon, serial)));
}

/// Releases a daemon's recovery entry when the recovery ends, however it ends (a destroy
/// or a crash drops it mid-way), unless a later recovery owns the entry by then.
struct ReleaseOnDrop {
    manager: Manager,
    id: String,
    serial: u64,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let mut recovering = self.manager.inner.recovering.lock().unwrap_or_else(|e| e.into_inner());
        if recovering.get(&self.id).is_some_and(|r| r.serial == self.serial) {
            recovering.remove(&self.id);
        }
    }
}

/// Recovers `daemon` under the configured policy, and again when the process it ended
/// with was reported dead meanwhile (the death of every replacement is seen); then
/// releases the daemon for the next death. Deaths of replacements that failed an attempt
/// were the recovery's own doing and start nothing.
async fn recover_until_settled(manager: Manager, daemon: Arc<Daemon>, serial: u64) {
    let id = daemon.id();
    let _release = ReleaseOnDrop { manager: manager.clone(), id: id.clone(), serial };
    let recovery = Recovery::of(manager.config().recover_policy);
    loop {
        daemon.reset_state();
        manager.emit(ManagerEvent::Died { id: id.clone() });
        let mut recovered = false;
        if let Some(recovery) = recovery {
            let event = match recover_with_retries(&manager, &daemon, recovery).await {
                Ok(pid) => {
                    recovered = true;
                    recovery.succeeded(id.clone(), pid)
                }
                Err(error) => ManagerEvent::RecoveryFailed {
                    id: id.clone(),
                    policy: manager.config().recover_policy,
                    error: Arc::new(error),
                },
            };
            manager.emit(event);
        }
        let mut recovering = manager.inner.recovering.lock().unwrap_or_else(|e| e.into_inner());
        match recovering.get_mut(&id) {
            Some(running) if recovered && running.pending == Some(daemon.pid()) => running.pending = None,
            _ => return,
        }
    }
}

/// The policy's recovery, tried up to [`super::RecoveryRetry::attempts`] times. A failed
/// attempt's replacement is stopped with SIGKILL and reaped before the next one (SIGKILL,
/// not SIGTERM: nydusd unmounts on SIGTERM, and failover exists to keep the mount).
async fn recover_with_retries(
    manager: &Manager,
    daemon: &Arc<Daemon>,
    recovery: Recovery,
) -> Result<u32, ManagerError> {
    let retry = manager.config().recovery;
    let mut causes = Vec::new();
    for attempt in 1..=retry.attempts.max(1) {
        match recovery.attempt(manager, daemon).await {
            Ok(pid) => return Ok(pid),
            Err(error) => {
                let pid = daemon.pid();
                let stopped = manager.abandon_process(daemon, Signal::SIGKILL, "its recovery attempt failed").await;
                let error = error.with_cleanup(stopped);
                let retry_in = (attempt < retry.attempts).then(|| retry.gap_after(attempt));
                manager.emit(ManagerEvent::AttemptFailed {
                    id: daemon.id(),
                    attempt,
                    pid,
                    error: error_chain(&error),
                    retry_in,
                });
                causes.push(error);
                if let Some(gap) = retry_in {
                    tokio::time::sleep(gap).await;
                }
            }
        }
    }
    Err(ManagerError::RecoveryExhausted { id: daemon.id(), policy: manager.config().recover_policy, causes })
}

/// Restart: wait for the old process and its mount to go, clear what it left (a live
/// mount plus a dead socket would make nydusd think it is a takeover), start fresh,
/// and mount the shared instances again in sequence order (upstream uses map order).
pub(super) async fn restart(manager: &Manager, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
    let _ = manager.monitor().unsubscribe(&daemon.id());
    // The API hung up, so the process is dying; one that lingers (stopped, hung) is killed.
    manager.stop_reported_dead(daemon).await?;
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
    manager.stop_reported_dead(daemon).await?;
    crash_point::reached("failover.exited");
    let supervisor =
        daemon.supervisor().ok_or_else(|| ManagerError::NoSupervisor { id: id.clone(), operation: "failover" })?;
    let pid = manager.take_over_from_supervisor(daemon, &supervisor, Handover::Failover).await?;
    daemon.start().await?;
    crash_point::reached("failover.started");
    manager.verify_started(daemon).await?;
    // The state blob is as old as the last sendfd that worked; what changed since is in
    // the records only.
    manager.reconcile_mounts(daemon, Serves::AsReported).await?;
    Ok(pid)
}
