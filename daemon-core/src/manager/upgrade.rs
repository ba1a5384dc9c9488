//! Hot upgrade (`snapshotter-lifecycle.md` §8.7): a new nydusd binary takes over a live
//! daemon through its supervisor, on the next API socket (`api.sock` → `api1.sock` → ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::Signal;

use super::takeover::Handover;
use super::tasks::Owner;
use super::{Manager, ManagerError, ManagerEvent};
use crate::crash_point;
use crate::daemon::Daemon;

/// Go `buildNextAPISocket`: the first run of digits in the stem plus one (none: 1).
pub fn next_api_socket(current: &Path) -> Result<PathBuf, ManagerError> {
    let name = current.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let bad = || ManagerError::SocketName(name.to_owned());
    let mut parts = name.split('.');
    let (Some(stem), Some(ext), None) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let start = stem.find(|c: char| c.is_ascii_digit());
    let (prefix, number) = match start {
        Some(i) => {
            let digits: String = stem[i..].chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits.parse().map_err(|_| bad())?;
            (&stem[..i], n + 1)
        }
        None => (stem, 1),
    };
    if prefix.is_empty() {
        return Err(bad());
    }
    Ok(current.with_file_name(format!("{prefix}{number}.{ext}")))
}

impl Manager {
    /// Go `DoDaemonUpgrade`: moves a live daemon to `binary` without unmounting anything.
    /// The new daemon restores the instances from the state blob, so (unlike upstream)
    /// they are not mounted again through the API afterwards, which nydusd would answer
    /// with "already exists". Later starts use `binary` too.
    ///
    /// The store names the new daemon from the moment it holds the state (READY): before
    /// that a failure, or a manager crash, leaves the old daemon in charge and the new
    /// process is killed (here, or by the next manager's recovery); after it the upgrade
    /// only goes forward, and a new daemon that then fails to start is recovered under the
    /// configured policy, as after a death.
    ///
    /// The upgrade is a task of the daemon: a destroy meanwhile ends it (and stops its new
    /// process), and it returns [`ManagerError::Destroyed`].
    pub async fn upgrade_daemon(&self, old: &Arc<Daemon>, binary: &Path) -> Result<Arc<Daemon>, ManagerError> {
        let id = old.id();
        let work = {
            let (manager, old, binary) = (self.clone(), old.clone(), binary.to_owned());
            async move { manager.upgrade_now(&old, &binary).await }
        };
        let outcome = self.inner.tasks.spawn(Owner::Daemon(id.clone()), work).finished().await;
        self.inner.successors.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        outcome.unwrap_or(Err(ManagerError::Destroyed(id)))
    }

    async fn upgrade_now(&self, old: &Arc<Daemon>, binary: &Path) -> Result<Arc<Daemon>, ManagerError> {
        let id = old.id();
        let supervisor =
            old.supervisor().ok_or_else(|| ManagerError::NoSupervisor { id: id.clone(), operation: "hot upgrade" })?;
        // The state to hand over is the live one, taken now.
        old.send_states().await?;
        crash_point::reached("upgrade.states_sent");
        let mut states = old.record();
        states.api_socket = next_api_socket(&states.api_socket)?;
        let new = Arc::new(Daemon::from_state(states, 0, *old.timeouts()));
        new.set_supervisor(Some(supervisor.clone()));
        new.set_exchange_observer(old.exchange_observer());
        new.set_reply_limit(old.reply_limit());
        new.clone_rafs_instances(old);

        *self.inner.nydusd.lock().unwrap_or_else(|e| e.into_inner()) = binary.to_owned();
        self.inner.successors.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), new.clone());
        if let Err(e) = self.take_over_from_supervisor(&new, &supervisor, Handover::Upgrade).await {
            // The old daemon still serves; the half-started new one must not linger.
            let stopped = self.stop_process(&new, Some(Signal::SIGKILL), "its upgrade failed").await;
            return Err(e.with_cleanup(stopped));
        }

        let _ = self.monitor().unsubscribe(&id);
        self.replace_daemon(new.clone())?;
        self.inner.successors.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        crash_point::reached("upgrade.committed");
        if old.exit().await.is_err() {
            // The new daemon holds the state already; the old one only has to go.
            let why = "it did not take the exit request after its upgrade";
            self.emit(ManagerEvent::Signalled { id: id.clone(), pid: old.pid(), signal: "SIGKILL", why: why.into() });
            let _ = old.signal(Signal::SIGKILL);
        }
        // The old process must be gone before the new one starts serving; a failure to
        // observe that is reported but does not undo the upgrade.
        let old_gone = old.wait_for_process_exit().await;
        crash_point::reached("upgrade.old_exited");
        let started = async {
            new.start().await?;
            crash_point::reached("upgrade.started");
            self.verify_started(&new).await
        };
        if let Err(e) = started.await {
            // Past the commit the new daemon is the daemon and the old one is gone, so a
            // failure to start it is a death like any other: recovered under the policy
            // (before, it was only returned, and the daemon stayed dead and unwatched).
            // SIGKILL, not SIGTERM: nydusd unmounts on SIGTERM, and failover keeps the mount.
            let pid = new.pid();
            let stopped = self.abandon_process(&new, Signal::SIGKILL, "its start after the upgrade failed").await;
            super::deaths::recover_in_background(self.clone(), new.clone(), pid);
            return Err(e.with_cleanup(stopped));
        }
        self.emit(ManagerEvent::Upgraded { id, pid: new.pid(), socket: new.api_socket() });
        old_gone?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_socket_names_count_up() {
        let next = |s: &str| next_api_socket(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(next("/r/socket/d1/api.sock").unwrap(), "/r/socket/d1/api1.sock");
        assert_eq!(next("/r/api1.sock").unwrap(), "/r/api2.sock");
        assert_eq!(next("/r/api9.sock").unwrap(), "/r/api10.sock");
        assert!(next("/r/api.sock.old").is_err());
        assert!(next("/r/apisock").is_err());
        assert!(next("/r/7.sock").is_err());
    }
}
