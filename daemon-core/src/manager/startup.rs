//! Recovery when the manager itself starts again (`snapshotter-lifecycle.md` §8.8): the
//! stored daemons are sorted into live ones (watched again) and dead ones (started
//! fresh, instances mounted again); no record is deleted while recovering.

use std::path::Path;
use std::sync::Arc;

use super::{Manager, ManagerError};
use crate::DaemonState;
use crate::daemon::{Daemon, error_chain};

/// What recovery found and did, by daemon id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Running and watched again.
    pub live: Vec<String>,
    /// Dead, and started again.
    pub restarted: Vec<String>,
    /// Alive but not RUNNING: left alone, as upstream does.
    pub not_running: Vec<(String, DaemonState)>,
    /// Live daemons moved to the configured binary because they ran another build.
    pub upgraded: Vec<String>,
    /// Recovery failed; the record stays for the next attempt.
    pub failed: Vec<(String, String)>,
}

/// `Git Commit:` from `<binary> --version`, as upstream's `GetDaemonGitCommit`.
pub fn binary_git_commit(binary: &Path) -> Option<String> {
    let output = std::process::Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().find_map(|l| l.split_once("Git Commit:").map(|(_, c)| c.trim().to_owned()))
}

impl Manager {
    /// Recovers the daemons and instances of this manager's driver from the store.
    pub async fn recover(&self) -> Result<RecoveryReport, ManagerError> {
        let mut report = RecoveryReport::default();
        let driver = self.config().fs_driver;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for state in self.store().daemons()?.into_iter().filter(|s| s.fs_driver == driver) {
            let daemon = Daemon::from_state(state, 0, self.config().timeouts);
            self.attach_supervisor(&daemon);
            let daemon = Arc::new(daemon);
            self.cache().insert(daemon.id(), daemon.clone());
            // A dead process is known at once from its pidfd; only live ones are asked,
            // so recovery does not wait out a socket timeout per dead daemon.
            if !daemon.is_alive() {
                dead.push(daemon);
                continue;
            }
            match daemon.get_state().await {
                Ok(DaemonState::Running) => live.push(daemon),
                Ok(state) => report.not_running.push((daemon.id(), state)),
                Err(_) => dead.push(daemon),
            }
        }
        for rafs in self.store().instances()?.into_iter().filter(|r| r.fs_driver == driver) {
            if let Some(daemon) = self.get_daemon(&rafs.daemon_id) {
                daemon.add_rafs_instance(rafs);
            }
        }
        for daemon in &live {
            self.monitor().subscribe(&daemon.id(), &daemon.api_socket()).await?;
            // The supervisor's copy died with the previous manager; fetch a fresh one.
            let _ = daemon.send_states().await;
            report.live.push(daemon.id());
        }
        let restarts: Vec<_> = dead
            .into_iter()
            .map(|daemon| {
                let manager = self.clone();
                tokio::spawn(async move {
                    let outcome = super::recovery::restart(&manager, &daemon).await;
                    (daemon.id(), outcome.map_err(|e| error_chain(&e)))
                })
            })
            .collect();
        for task in restarts {
            match task.await {
                Ok((id, Ok(_))) => report.restarted.push(id),
                Ok((id, Err(e))) => report.failed.push((id, e)),
                Err(e) => report.failed.push((String::new(), e.to_string())),
            }
        }
        let Some(wanted) = binary_git_commit(&self.nydusd()) else { return Ok(report) };
        for daemon in live {
            let running = daemon.version().map(|v| v.git_commit);
            if running.as_deref() == Some(wanted.as_str()) || daemon.supervisor().is_none() {
                continue;
            }
            match self.upgrade_daemon(&daemon, &self.nydusd()).await {
                Ok(_) => report.upgraded.push(daemon.id()),
                Err(e) => report.failed.push((daemon.id(), error_chain(&e))),
            }
        }
        Ok(report)
    }
}
