//! The snapshotter's graceful shutdown (`Close`): optionally unmount every instance
//! (`cleanup_on_close`), then stop each shared daemon that serves nothing (upstream
//! `TryStopSharedDaemon`; issue #135: an idle shared daemon was left running), and end
//! the manager's own tasks. Daemons that still serve instances keep running for the next
//! manager to recover, as after a crash.

use std::sync::Arc;

use super::{Manager, ManagerError};
use crate::Daemon;

/// What a graceful shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Instances unmounted (snapshot ids), when cleaning up.
    pub unmounted: Vec<String>,
    /// Daemons destroyed: shared ones that served nothing, and, when cleaning up,
    /// dedicated ones whose instance went.
    pub stopped: Vec<String>,
    /// Daemons left running (they serve instances).
    pub kept: Vec<String>,
}

impl Manager {
    /// Shuts the manager down as the snapshotter does at a graceful exit; see the module
    /// doc. Failures to unmount or destroy are collected, and the rest still happens: a
    /// daemon that could not be stopped is reported as kept.
    pub async fn close(&self, cleanup: bool) -> Result<CloseReport, ManagerError> {
        let mut report = CloseReport::default();
        let mut failures = Vec::new();
        for daemon in self.list_daemons() {
            let shared = daemon.record().is_shared();
            if cleanup && shared {
                self.unmount_all(&daemon, &mut report, &mut failures).await;
            }
            // A dedicated daemon serves its one instance; cleaning up destroys it with it.
            let stop = if shared { daemon.instances().is_empty() } else { cleanup };
            if !stop {
                report.kept.push(daemon.id());
                continue;
            }
            let instances = daemon.instances().list_by_seq();
            match self.destroy_daemon(&daemon).await {
                Ok(()) => {
                    report.unmounted.extend(instances.into_iter().map(|r| r.snapshot_id));
                    report.stopped.push(daemon.id());
                }
                Err(e) => {
                    failures.push(e);
                    report.kept.push(daemon.id());
                }
            }
        }
        self.abort().await;
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(ManagerError::CloseIncomplete { report: Box::new(report), failures })
        }
    }

    /// Unmounts every instance of the shared `daemon`.
    async fn unmount_all(&self, daemon: &Arc<Daemon>, report: &mut CloseReport, failures: &mut Vec<ManagerError>) {
        for rafs in daemon.instances().list_by_seq() {
            match self.umount_shared_instance(daemon, &rafs.snapshot_id).await {
                Ok(()) => report.unmounted.push(rafs.snapshot_id),
                Err(e) => failures.push(e),
            }
        }
    }
}
