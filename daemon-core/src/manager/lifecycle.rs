//! One daemon's process under the manager: spawn, verify, start, stop, and destroy.

use std::sync::Arc;

use super::tasks::Owner;
use super::{Manager, ManagerError, ManagerEvent};
use crate::DaemonState;
use crate::crash_point;
use crate::daemon::command::CommandInputs;
use crate::daemon::{Daemon, DaemonError, FsDriver};

impl Manager {
    pub(super) fn command_inputs(&self, daemon: &Daemon, upgrade: bool) -> CommandInputs {
        let states = daemon.record();
        let bootstrap = (!states.is_shared() && states.fs_driver == FsDriver::Fusedev)
            .then(|| daemon.instances().head().and_then(|r| r.bootstrap_file()))
            .flatten();
        CommandInputs { upgrade, bootstrap, fscache_dir: self.inner.config.fscache_dir.clone() }
    }

    /// Spawns the daemon's nydusd and records the new pid (the first half of Go's
    /// `StartDaemon`), without waiting for it.
    pub async fn spawn(&self, daemon: &Daemon, upgrade: bool) -> Result<u32, ManagerError> {
        let pid = self.spawn_unrecorded(daemon, upgrade).await?;
        // As upstream, a failed record update does not stop the start; the pid is in memory.
        if self.inner.store.update_daemon(&daemon.record()).is_ok() {
            crash_point::reached("spawn.recorded");
        }
        Ok(pid)
    }

    /// Spawns without recording the pid: a process the store does not name yet is killed
    /// by the next manager's recovery (see `startup::sweep_strays`), licensed by the
    /// daemon's record, which exists before any of its spawns (`add_daemon`) and names
    /// another process. No separate intent is written: it would cost a sync per start.
    pub(super) async fn spawn_unrecorded(&self, daemon: &Daemon, upgrade: bool) -> Result<u32, ManagerError> {
        let inputs = self.command_inputs(daemon, upgrade);
        let mut extras = self.inner.config.spawn.clone();
        extras.args.extend(self.inner.config.per_daemon_args.args(&daemon.id()));
        let pid = daemon.spawn(&self.nydusd(), &inputs, extras).await?;
        crash_point::reached("spawn.spawned");
        Ok(pid)
    }

    /// The second half of Go's `StartDaemon`: socket, monitor, RUNNING, supervisor state.
    /// Unlike upstream, a daemon that fails here is not left running unobserved: the
    /// error is returned (and the callers stop the process). The watch is for this
    /// process: one left from a predecessor is dropped first, so it is never mistaken for
    /// the new one (upstream's `AlreadySubscribed` is taken as success). The watch starts
    /// once the daemon is RUNNING: a hang-up before that is this start's failure, not a
    /// death to recover from while the start is still being undone.
    pub async fn verify_started(&self, daemon: &Daemon) -> Result<(), ManagerError> {
        daemon.client().await?;
        let id = daemon.id();
        let _ = self.inner.monitor.unsubscribe(&id);
        daemon.wait_until_state(DaemonState::Running).await?;
        self.inner.monitor.subscribe(&id, &daemon.api_socket(), daemon.pid()).await?;
        crash_point::reached("verify.running");
        // As upstream, a daemon that cannot send its state still counts as started: the
        // failure only means a later failover has nothing (new) to restore.
        let _ = daemon.send_states().await;
        crash_point::reached("verify.states_sent");
        Ok(())
    }

    /// Undoes a start that failed after its spawn: the process is stopped (`first`, then
    /// SIGKILL) and reaped, and its watch and client go, so that nothing outlives the
    /// failure and a retried start talks to its own process only.
    pub(crate) async fn abandon_process(
        &self,
        daemon: &Daemon,
        first: nix::sys::signal::Signal,
        why: &str,
    ) -> Result<(), ManagerError> {
        let _ = self.inner.monitor.unsubscribe(&daemon.id());
        let stopped = self.stop_process(daemon, Some(first), why).await;
        daemon.reset_client().await;
        daemon.reset_state();
        stopped.map_err(Into::into)
    }

    /// [`Daemon::stop_process`], each signal to a live process reported as
    /// [`ManagerEvent::Signalled`] with `why` (or why the deadline's SIGKILL came).
    pub(crate) async fn stop_process(
        &self,
        daemon: &Daemon,
        first: Option<nix::sys::signal::Signal>,
        why: &str,
    ) -> Result<(), DaemonError> {
        let (id, pid) = (daemon.id(), daemon.pid());
        daemon
            .stop_process_telling(first, |signal, escalation| {
                let why = escalation.unwrap_or_else(|| why.to_owned());
                self.emit(ManagerEvent::Signalled { id: id.clone(), pid, signal: signal.as_str(), why });
            })
            .await
    }

    /// Waits for a process whose death the monitor reported, killing one that lingers.
    pub(crate) async fn stop_reported_dead(&self, daemon: &Daemon) -> Result<(), DaemonError> {
        self.stop_process(daemon, None, "its death was reported").await
    }

    /// [`Manager::verify_started`], stopping the process when it fails.
    pub(super) async fn verify_or_stop(&self, daemon: &Daemon) -> Result<(), ManagerError> {
        match self.verify_started(daemon).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let stopped = self.abandon_process(daemon, nix::sys::signal::Signal::SIGTERM, "its start failed").await;
                Err(e.with_cleanup(stopped))
            }
        }
    }

    /// Go `StartDaemon`: spawns nydusd, then verifies it in the background and reports
    /// [`ManagerEvent::Started`] or [`ManagerEvent::StartFailed`] (after stopping the
    /// process). Returns the pid.
    pub async fn start_daemon(&self, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
        let pid = self.spawn(daemon, false).await?;
        let manager = self.clone();
        let daemon = daemon.clone();
        drop(self.inner.tasks.spawn(Owner::Daemon(daemon.id()), async move {
            match manager.verify_or_stop(&daemon).await {
                Ok(()) => manager.emit(ManagerEvent::Started { id: daemon.id(), pid }),
                Err(e) => manager.emit(ManagerEvent::StartFailed { id: daemon.id(), error: Arc::new(e) }),
            }
        }));
        Ok(pid)
    }

    /// Starts a daemon and waits until it is verified; a daemon that fails verification
    /// is stopped and reaped before the error returns.
    pub async fn start_daemon_and_wait(&self, daemon: &Arc<Daemon>) -> Result<u32, ManagerError> {
        let pid = self.spawn(daemon, false).await?;
        self.verify_or_stop(daemon).await?;
        self.emit(ManagerEvent::Started { id: daemon.id(), pid });
        Ok(pid)
    }

    /// Go `DestroyDaemon`. The records go first, so a failure below cannot leave a record
    /// that would be restarted forever (66dad99); unlike upstream, the daemon's instance
    /// records go in the same transaction, so a crash cannot leave instances without
    /// their daemon (the process left running is a stray the next recovery kills).
    ///
    /// Then whatever works for the daemon ends, and has ended when this goes on: a
    /// recovery between or inside its attempts, a start's verification, a reconciliation,
    /// an upgrade in flight (whose new process is stopped too). A late death event of the
    /// daemon is dropped, so [`ManagerEvent::Destroyed`] is its last event (upstream
    /// fixed recoveries that resurrected destroyed daemons twice: 1ffa1d9, PR #774).
    ///
    /// A shared daemon's instances are then unmounted through the API (upstream empties
    /// the instance cache first, which makes its unmount loop a no-op), and the process
    /// is stopped. What failed of the clean-up is returned, each failure kept
    /// ([`ManagerError::DestroyIncomplete`]); the daemon is destroyed either way.
    pub async fn destroy_daemon(&self, daemon: &Arc<Daemon>) -> Result<(), ManagerError> {
        let id = daemon.id();
        // An upgrade may have replaced the caller's object: the current one runs.
        let daemon = self.get_daemon(&id).unwrap_or_else(|| daemon.clone());
        let instances = daemon.instances().list_by_seq();
        self.inner.store.delete_daemon_and_instances(&id, instances.iter().map(|r| r.snapshot_id.as_str()))?;
        self.inner.retired.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
        self.cache().remove(&id);
        crash_point::reached("destroy.deleted");
        // Read before the recovery is ended, which releases its entry.
        let was_recovering = self.inner.recovering.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id);
        self.inner.tasks.cancel_daemon(&id).await;
        let successor = self.inner.successors.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let mut failures: Vec<ManagerError> = Vec::new();
        if let Some(successor) = successor {
            // The upgrade ended before its commit: its new process serves nothing yet.
            let why = "its daemon was destroyed during the upgrade";
            if let Err(e) = self.stop_process(&successor, Some(nix::sys::signal::Signal::SIGKILL), why).await {
                failures.push(e.into());
            }
        }
        // A process the ended recovery had started (a replacement, a failover's new
        // process) does not serve the instances yet, and is stopped next with its mount:
        // asking it to unmount them failed with "doesn't exist" or a reset connection,
        // and the destroy, complete in every way, was reported as failed.
        let serves_its_instances = daemon.is_alive() && !was_recovering;
        for rafs in instances {
            if serves_its_instances
                && daemon.record().is_shared()
                && let Err(e) = daemon.umount_rafs_instance(&rafs).await
                // Not a failure: nothing mounted there, or a process that died meanwhile
                // (killed just before the destroy), whose mounts went with it.
                && e.client_kind() != Some(crate::api::ErrorKind::NotFound)
                && daemon.is_alive()
            {
                failures.push(e.into());
            }
            daemon.remove_rafs_instance(&rafs.snapshot_id);
            crash_point::reached("destroy.instance_unmounted");
        }
        let _ = self.inner.monitor.unsubscribe(&id);
        if let Some(set) = &self.inner.supervisors {
            // Every daemon of a failover manager has one; none is not a failure.
            let _ = set.destroy(&id);
        }
        daemon.set_supervisor(None);
        // SIGTERM lets nydusd unmount; a stopped or hung one gets SIGKILL at the deadline.
        let waited = match self.stop_process(&daemon, Some(nix::sys::signal::Signal::SIGTERM), "destroy").await {
            Ok(()) => self.wait_for_unmount_or_detach(&daemon).await,
            Err(e) => Err(e),
        };
        crash_point::reached("destroy.exited");
        if waited.is_ok()
            && let Err(e) = self.inner.store.clear_intent(&id)
        {
            failures.push(e.into());
        }
        let states = daemon.record();
        let mut dirs = vec![states.config_dir.clone(), states.log_dir.clone()];
        if !states.is_shared() {
            if let Some(socket_dir) = states.api_socket.parent() {
                dirs.push(socket_dir.to_owned());
            }
            dirs.push(states.mountpoint.clone());
        }
        for dir in dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => failures.push(
                    DaemonError::Io { id: id.clone(), action: "remove directory", path: dir.clone(), source }.into(),
                ),
            }
        }
        self.emit(ManagerEvent::Destroyed { id: id.clone() });
        waited?;
        if failures.is_empty() { Ok(()) } else { Err(ManagerError::DestroyIncomplete { id, failures }) }
    }

    /// After a destroy's stop: a FUSE daemon's host mount goes with its process, which
    /// nydusd unmounts on SIGTERM; a mount still there once the process has gone belongs
    /// to a dead daemon (killed, or crashed earlier and kept for a failover that will not
    /// come), so it is detached instead of waited for.
    pub(super) async fn wait_for_unmount_or_detach(&self, daemon: &Daemon) -> Result<(), DaemonError> {
        daemon.wait_for_process_exit().await?;
        let states = daemon.record();
        if states.fs_driver != FsDriver::Fusedev || states.mountpoint.as_os_str().is_empty() {
            return Ok(());
        }
        let settle = std::time::Duration::from_millis(200).min(daemon.timeouts().exit);
        let mount_error = |source| DaemonError::Mount { id: states.id.clone(), source };
        if crate::mount::wait_until_unmounted(&states.mountpoint, daemon.timeouts(), settle).await.is_ok() {
            return Ok(());
        }
        crate::mount::umount_lazy(&states.mountpoint).map_err(mount_error)
    }
}
