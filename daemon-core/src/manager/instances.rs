//! A daemon's instances: records, mounts and umounts one at a time, and bringing the
//! mounts in line with the records when they are in doubt (a call whose outcome nobody
//! could tell).

use std::sync::Arc;

use super::tasks::Owner;
use super::{Manager, ManagerError};
use crate::crash_point;
use crate::daemon::{Daemon, FsDriver};
use crate::rafs::Rafs;

/// How long the manager keeps asking a daemon whose mounts are in doubt.
const RECONCILE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A daemon whose mounts are in doubt: since when reconciliations have found nothing to fix.
/// What a daemon serves when its mounts are brought in line with its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// A fresh process serves nothing yet: every recorded instance is mounted.
    Nothing,
    /// Ask the daemon (`backend_collection`).
    AsReported,
}

#[derive(Debug, Default)]
pub(super) struct Doubt {
    quiet_since: Option<tokio::time::Instant>,
}

/// How long a daemon's mounts must stay as recorded before a doubt ends: its request
/// deadline (at least 200 ms), time enough for requests queued on other connections to land.
fn doubt_settle(daemon: &Daemon) -> std::time::Duration {
    daemon.timeouts().request.max(std::time::Duration::from_millis(200))
}

impl Manager {
    /// Go `AddRafsInstance`: stores the instance under the next sequence number and adds
    /// it to its daemon.
    pub fn add_rafs_instance(&self, daemon: &Daemon, mut rafs: Rafs) -> Result<Rafs, ManagerError> {
        // The snapshot id becomes a path under the root (snapshot and config directories).
        if !crate::daemon::id::is_valid_id(&rafs.snapshot_id) {
            return Err(ManagerError::InvalidSnapshot(rafs.snapshot_id));
        }
        rafs.daemon_id = daemon.id();
        self.inner.store.add_instance(&mut rafs)?;
        daemon.add_rafs_instance(rafs.clone());
        Ok(rafs)
    }

    /// Stores an instance record again (after its annotations changed, for example).
    pub fn update_rafs_instance(&self, daemon: &Daemon, rafs: &Rafs) -> Result<(), ManagerError> {
        self.inner.store.update_instance(rafs)?;
        daemon.update_rafs_instance(rafs.clone());
        Ok(())
    }

    /// Go `RemoveRafsInstance`: drops the record and the daemon's reference.
    pub fn remove_rafs_instance(&self, daemon: &Daemon, snapshot_id: &str) -> Result<(), ManagerError> {
        self.inner.store.delete_instance(snapshot_id)?;
        daemon.remove_rafs_instance(snapshot_id);
        Ok(())
    }

    /// Mounts an instance in a shared daemon and records it (the fs layer's `Mount` for
    /// shared daemons: add, then mount; the record is removed again if the mount fails).
    pub async fn mount_shared_instance(&self, daemon: &Daemon, rafs: Rafs) -> Result<Rafs, ManagerError> {
        let ops = self.instance_ops(&daemon.id());
        let _one_at_a_time = ops.lock().await;
        self.settle_doubt(daemon).await;
        let mut rafs = self.add_rafs_instance(daemon, rafs)?;
        crash_point::reached("mount.recorded");
        if let Err(e) = daemon.shared_mount(&mut rafs).await {
            // The daemon serves it already (an earlier mount whose reply was lost took
            // effect): the mount is done, and the record stays with it.
            if e.client_kind() == Some(crate::api::ErrorKind::AlreadyExists) {
                self.update_rafs_instance(daemon, &rafs)?;
                return Ok(rafs);
            }
            // A lost reply says nothing about the mount: the daemon is asked instead, so
            // that the record follows what it serves.
            if e.is_ambiguous() {
                match self.serves(daemon, &rafs).await {
                    Some(true) => {
                        self.update_rafs_instance(daemon, &rafs)?;
                        return Ok(rafs);
                    }
                    Some(false) => {}
                    // The daemon cannot say yet (still busy, or stopped): the record goes,
                    // and the daemon is brought in line with the records once it answers.
                    None => self.reconcile_in_background(daemon),
                }
            }
            let _ = self.remove_rafs_instance(daemon, &rafs.snapshot_id);
            return Err(e.into());
        }
        crash_point::reached("mount.mounted");
        self.update_rafs_instance(daemon, &rafs)?;
        crash_point::reached("mount.updated");
        Ok(rafs)
    }

    /// Unmounts an instance of a shared daemon and removes its record.
    pub async fn umount_shared_instance(&self, daemon: &Daemon, snapshot_id: &str) -> Result<(), ManagerError> {
        let ops = self.instance_ops(&daemon.id());
        let _one_at_a_time = ops.lock().await;
        self.settle_doubt(daemon).await;
        let rafs = daemon.instances().get(snapshot_id).ok_or_else(|| ManagerError::NotFound(snapshot_id.to_owned()))?;
        if let Err(e) = daemon.shared_umount(&rafs).await {
            // The daemon does not serve it (an earlier umount whose reply was lost took
            // effect): the umount is done. As for mounts, after a lost reply the
            // daemon's own list decides; when it cannot tell yet, the record stays and
            // the daemon is brought in line with it once it answers.
            let gone = e.client_kind() == Some(crate::api::ErrorKind::NotFound)
                || (e.is_ambiguous()
                    && match self.serves(daemon, &rafs).await {
                        Some(served) => !served,
                        None => {
                            self.reconcile_in_background(daemon);
                            false
                        }
                    });
            if !gone {
                return Err(e.into());
            }
        }
        crash_point::reached("umount.unmounted");
        self.remove_rafs_instance(daemon, snapshot_id)?;
        crash_point::reached("umount.removed");
        // As upstream's fs layer: the instance's configuration goes with it (a crash
        // before this line leaves it for the recovery's sweep).
        remove_instance_config(daemon, snapshot_id);
        Ok(())
    }

    /// Removes the configuration directories of `daemon` that name no instance of it
    /// (snapshotter PR #782): left by a crash between writing an instance's configuration
    /// and recording it, or between dropping its record and removing it. Returns the
    /// snapshot ids whose directories went.
    pub(super) fn sweep_instance_configs(&self, daemon: &Daemon) -> Vec<String> {
        let dir = daemon.record().config_dir.clone();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let recorded = daemon.instances().list_by_seq();
        let mut swept = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only directories: the daemon's own config.json stays.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !recorded.iter().any(|r| r.snapshot_id == name) {
                remove_instance_config(daemon, &name);
                swept.push(name);
            }
        }
        swept
    }

    /// Whether a shared fusedev daemon serves `rafs` now, by its `backend_collection`;
    /// `None` when it cannot tell (no answer, or a driver without that list). nydusd
    /// handles one API request at a time, so the answer comes after any request still
    /// in progress.
    pub(super) async fn serves(&self, daemon: &Daemon, rafs: &Rafs) -> Option<bool> {
        if daemon.record().fs_driver != FsDriver::Fusedev {
            return None;
        }
        let served = daemon.daemon_info().await.ok()?.backend_collection?;
        Some(served.contains_key(&rafs.relative_mountpoint()))
    }

    /// Brings a shared daemon's mounts in line with its instance records, the one re-mount
    /// algorithm of restart, failover and start-up recovery: mounts each recorded instance
    /// it does not serve, in sequence order (the order they were first mounted in; the
    /// instance at the host mountpoint is the daemon's own), and unmounts what it serves
    /// without a record; returns the snapshots mounted and the mountpoints unmounted.
    /// What it serves is [`Serves::Nothing`] for a fresh process (restart), or asked
    /// ([`Serves::AsReported`]) where mounts may have drifted from the records: after a
    /// manager restart, and after a takeover, whose state blob is as old as the last
    /// successful sendfd. Only FUSE daemons report a mount list (`backend_collection`),
    /// so a live fscache daemon is left as it is.
    pub async fn reconcile_mounts(
        &self,
        daemon: &Daemon,
        serves: Serves,
    ) -> Result<(Vec<String>, Vec<String>), ManagerError> {
        let ops = self.instance_ops(&daemon.id());
        let _one_at_a_time = ops.lock().await;
        self.reconcile_mounts_locked(daemon, serves).await
    }

    /// Before an instance operation on a daemon whose mounts are in doubt, brings them in
    /// line with the records (best effort: the operation goes on either way).
    pub(super) async fn settle_doubt(&self, daemon: &Daemon) {
        if self.is_doubtful(&daemon.id()) {
            let _ = self.reconcile_mounts_locked(daemon, Serves::AsReported).await;
        }
    }

    /// [`Manager::reconcile_mounts`], with the daemon's instance lock already held.
    pub(super) async fn reconcile_mounts_locked(
        &self,
        daemon: &Daemon,
        serves: Serves,
    ) -> Result<(Vec<String>, Vec<String>), ManagerError> {
        let started = tokio::time::Instant::now();
        let outcome = self.compare_and_fix_mounts(daemon, serves).await;
        if let Ok((remounted, unmounted)) = &outcome {
            let quiet = remounted.is_empty() && unmounted.is_empty();
            self.note_reconciled(&daemon.id(), quiet, started, doubt_settle(daemon));
        }
        outcome
    }

    pub(super) fn is_doubtful(&self, id: &str) -> bool {
        self.inner.doubtful.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// A doubt ends with two reconciliations that found nothing to fix, the second begun
    /// at least `settle` after the first ended. One is not enough: once a stopped nydusd
    /// continues, its connections are served in no set order, so the question can be
    /// answered before the request in doubt, which then lands unrecorded (found by
    /// `harness chaos --seed 1000`, run 1172).
    pub(super) fn note_reconciled(
        &self,
        id: &str,
        quiet: bool,
        started: tokio::time::Instant,
        settle: std::time::Duration,
    ) {
        let mut doubtful = self.inner.doubtful.lock().unwrap_or_else(|e| e.into_inner());
        let Some(doubt) = doubtful.get_mut(id) else { return };
        match doubt.quiet_since {
            _ if !quiet => doubt.quiet_since = None,
            Some(since) if started >= since + settle => {
                doubtful.remove(id);
            }
            Some(_) => {}
            None => doubt.quiet_since = Some(tokio::time::Instant::now()),
        }
    }

    pub(super) async fn compare_and_fix_mounts(
        &self,
        daemon: &Daemon,
        serves: Serves,
    ) -> Result<(Vec<String>, Vec<String>), ManagerError> {
        let (mut remounted, mut unmounted) = (Vec::new(), Vec::new());
        let record = daemon.record();
        if !record.is_shared() {
            return Ok((remounted, unmounted));
        }
        let served = match serves {
            Serves::Nothing => serde_json::Map::new(),
            Serves::AsReported if record.fs_driver != FsDriver::Fusedev => return Ok((remounted, unmounted)),
            Serves::AsReported => match daemon.daemon_info().await?.backend_collection {
                Some(served) => served,
                None => return Ok((remounted, unmounted)),
            },
        };
        let host = daemon.host_mountpoint();
        let recorded = daemon.instances().list_by_seq();
        for mut rafs in recorded.iter().filter(|r| r.mountpoint != host).cloned() {
            if served.contains_key(&rafs.relative_mountpoint()) {
                continue;
            }
            daemon.shared_mount(&mut rafs).await?;
            daemon.instances().add(rafs.clone());
            remounted.push(rafs.snapshot_id);
            crate::crash_point::reached("remount.instance");
        }
        for mountpoint in served.keys() {
            if recorded.iter().any(|r| &r.relative_mountpoint() == mountpoint) {
                continue;
            }
            daemon.umount(mountpoint).await?;
            unmounted.push(mountpoint.clone());
        }
        Ok((remounted, unmounted))
    }

    pub(super) fn instance_ops(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.instance_ops.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// After a mount or umount whose outcome nobody could tell (no reply, and no answer to
    /// the question that followed), reconciles the daemon's mounts with its records as
    /// soon as it answers again, with a backoff doubling up to 1 s, for at most
    /// [`RECONCILE_PATIENCE`] (or ten request deadlines, if longer); past that, the next
    /// mount or umount of the daemon reconciles first.
    /// Stops when the daemon is gone or replaced (a failover reconciles by itself).
    /// Requests on different connections of a stopped nydusd run in no set order once it
    /// continues, so nothing short of asking again settles the doubt.
    pub(super) fn reconcile_in_background(&self, daemon: &Daemon) {
        self.inner.doubtful.lock().unwrap_or_else(|e| e.into_inner()).insert(daemon.id(), Doubt::default());
        // Weak: a manager dropped meanwhile is not kept alive by its own upkeep.
        let weak = Arc::downgrade(&self.inner);
        let id = daemon.id();
        let pid = daemon.pid();
        let patience = daemon.timeouts().request.saturating_mul(10).max(RECONCILE_PATIENCE);
        drop(self.inner.tasks.spawn(Owner::Daemon(id.clone()), async move {
            let deadline = tokio::time::Instant::now() + patience;
            let mut gap = std::time::Duration::from_millis(20);
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(gap).await;
                gap = (gap * 2).min(std::time::Duration::from_secs(1));
                let Some(inner) = weak.upgrade() else { return };
                let manager = Manager { inner };
                let Some(daemon) = manager.get_daemon(&id) else { return };
                if daemon.pid() != pid || !daemon.is_alive() {
                    return;
                }
                if manager.reconcile_mounts(&daemon, Serves::AsReported).await.is_ok() && !manager.is_doubtful(&id) {
                    return;
                }
            }
        }));
    }
}

/// Removes the configuration directory of `daemon`'s instance `snapshot_id`. A failure
/// is not the umount's: the instance is unmounted and its record gone, and the next
/// recovery sweeps what is left.
fn remove_instance_config(daemon: &Daemon, snapshot_id: &str) {
    let _ = std::fs::remove_dir_all(daemon.record().config_dir.join(snapshot_id));
}
