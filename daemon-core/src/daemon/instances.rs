//! A daemon's RAFS instances: the cache, shared mounts for fusedev (through the API) and
//! fscache (blob binding plus an erofs mount), the supervisor refresh after each change,
//! and re-mounting on recovery (`snapshotter-lifecycle.md` §1.1).

use std::sync::Arc;

use serde_json::Value;

use super::{Daemon, DaemonError, FsDriver};
use crate::api::{ErrorKind, MountRequest};
use crate::mount;
use crate::rafs::{ANNOTATION_FSCACHE_DOMAIN_ID, ANNOTATION_FSCACHE_ID, Rafs, RafsCache};
use crate::supervisor::Supervisor;

/// The text the snapshotter tolerates on unbinding a missing blob-cache entry. Real nydusd
/// never sends it (its error keeps only the bare OS error, `nydusd-api.md` §2.2), so a
/// missing entry fails the umount there; kept for daemons that do.
const BLOB_ENTRY_NOT_FOUND: &str = "blob_cache: cache entry not found";

impl Daemon {
    /// The instances this daemon serves.
    pub fn instances(&self) -> &RafsCache {
        &self.instances
    }

    /// The supervisor holding this daemon's state for failover, if any.
    pub fn supervisor(&self) -> Option<Arc<Supervisor>> {
        self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Attaches (or detaches) a supervisor.
    pub fn set_supervisor(&self, supervisor: Option<Arc<Supervisor>>) {
        *self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = supervisor;
    }

    /// Adds an instance and takes a reference for it. Upstream takes one even when the key
    /// is already present, so one instance can hold two references; here a second add of
    /// the same key only replaces the record.
    pub fn add_rafs_instance(&self, mut rafs: Rafs) {
        rafs.daemon_id = self.id();
        if self.instances.add(rafs) {
            self.inc_ref();
        }
    }

    /// Replaces an instance record without touching the reference count.
    pub fn update_rafs_instance(&self, rafs: Rafs) {
        self.instances.add(rafs);
    }

    /// Removes an instance and drops its reference; a second removal is a no-op (#763).
    pub fn remove_rafs_instance(&self, snapshot_id: &str) -> Option<Rafs> {
        let removed = self.instances.remove(snapshot_id);
        if removed.is_some() {
            self.dec_ref();
        }
        removed
    }

    /// Replaces this daemon's instances with copies of `source`'s and adds its references
    /// (hot upgrade: the new daemon serves what the old one served).
    pub fn clone_rafs_instances(&self, source: &Daemon) {
        self.instances.set(source.instances.list_by_seq());
        for _ in 0..source.get_ref() {
            self.inc_ref();
        }
    }

    /// Mounts an instance in a shared daemon, then refreshes the supervisor's state
    /// (also when the mount failed, as upstream).
    pub async fn shared_mount(&self, rafs: &mut Rafs) -> Result<(), DaemonError> {
        let result = match self.record().fs_driver {
            FsDriver::Fusedev => self.shared_fusedev_mount(rafs).await,
            FsDriver::Fscache => self.shared_erofs_mount(rafs).await,
        };
        let _ = self.send_states().await;
        result
    }

    /// Unmounts an instance from a shared daemon, then refreshes the supervisor's state.
    pub async fn shared_umount(&self, rafs: &Rafs) -> Result<(), DaemonError> {
        let result = match self.record().fs_driver {
            FsDriver::Fusedev => self.umount(&rafs.relative_mountpoint()).await,
            FsDriver::Fscache => self.shared_erofs_umount(rafs).await,
        };
        let _ = self.send_states().await;
        result
    }

    /// Go `UmountRafsInstance`: shared daemons unmount through the API; a dedicated
    /// daemon's only instance goes away with its process.
    pub async fn umount_rafs_instance(&self, rafs: &Rafs) -> Result<(), DaemonError> {
        if self.record().is_shared() { self.shared_umount(rafs).await } else { Ok(()) }
    }

    /// Go `UmountRafsInstances`: every instance of a shared daemon, stopping at the first
    /// error.
    pub async fn umount_rafs_instances(&self) -> Result<(), DaemonError> {
        if !self.record().is_shared() {
            return Ok(());
        }
        for rafs in self.instances.list_by_seq() {
            self.shared_umount(&rafs).await?;
        }
        Ok(())
    }

    /// Go `SendStates`: has nydusd send its state and fd to the supervisor. Without a
    /// supervisor this does nothing.
    pub async fn send_states(&self) -> Result<(), DaemonError> {
        let Some(supervisor) = self.supervisor() else { return Ok(()) };
        // The daemon's process when it connects: a failover may replace it while this
        // fetch waits for the supervisor.
        supervisor
            .fetch_from(|| self.pid(), self.send_fd(), self.timeouts.supervisor)
            .await
            .map_err(|source| DaemonError::Supervisor { id: self.id(), source })
    }

    fn instance_config(&self, rafs: &Rafs) -> Result<String, DaemonError> {
        let path = self.record().config_file(Some(&rafs.snapshot_id));
        std::fs::read_to_string(&path).map_err(|source| DaemonError::Io {
            id: self.id(),
            action: "read instance configuration",
            path,
            source,
        })
    }

    async fn shared_fusedev_mount(&self, rafs: &Rafs) -> Result<(), DaemonError> {
        self.client().await?;
        let bootstrap = rafs.bootstrap_file().ok_or_else(|| DaemonError::NoBootstrap {
            id: self.id(),
            snapshot: rafs.snapshot_id.clone(),
            dir: rafs.snapshot_dir.clone(),
        })?;
        let config = self.instance_config(rafs)?;
        let request = MountRequest::rafs(bootstrap.display().to_string(), config);
        self.mount(&rafs.relative_mountpoint(), &request).await
    }

    async fn shared_erofs_mount(&self, rafs: &mut Rafs) -> Result<(), DaemonError> {
        let client = self.client().await?;
        let id = self.id();
        let io = |action, path: std::path::PathBuf| {
            let id = id.clone();
            move |source| DaemonError::Io { id, action, path, source }
        };
        let work_dir = rafs.fscache_work_dir();
        std::fs::create_dir_all(&work_dir).map_err(io("create fscache work directory", work_dir.clone()))?;
        let config = self.instance_config(rafs)?;
        client
            .bind_blob(config.as_bytes())
            .await
            .map_err(|source| DaemonError::Client { id: id.clone(), source: Box::new(source) })?;
        std::fs::create_dir_all(&rafs.mountpoint).map_err(io("create instance mountpoint", rafs.mountpoint.clone()))?;
        let fscache_id = mount::fscache_id(&rafs.snapshot_id);
        let domain_id = serde_json::from_str::<Value>(&config)
            .ok()
            .and_then(|v| v.get("domain_id").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        rafs.annotations.insert(ANNOTATION_FSCACHE_DOMAIN_ID.to_owned(), domain_id.clone());
        rafs.annotations.insert(ANNOTATION_FSCACHE_ID.to_owned(), fscache_id.clone());
        mount::mount_erofs_fscache(&domain_id, &fscache_id, &rafs.mountpoint)
            .map_err(|source| DaemonError::Mount { id, source })
    }

    async fn shared_erofs_umount(&self, rafs: &Rafs) -> Result<(), DaemonError> {
        let client = self.client().await?;
        let id = self.id();
        let annotation = |key: &str| rafs.annotations.get(key).cloned().unwrap_or_default();
        let (domain_id, fscache_id) = (annotation(ANNOTATION_FSCACHE_DOMAIN_ID), annotation(ANNOTATION_FSCACHE_ID));
        if let Err(e) = client.unbind_blob(&domain_id, &fscache_id).await {
            let tolerated =
                e.kind() == ErrorKind::NotFound || e.daemon_message().is_some_and(|m| m.contains(BLOB_ENTRY_NOT_FOUND));
            if !tolerated {
                return Err(DaemonError::Client { id, source: Box::new(e) });
            }
        }
        mount::umount(&rafs.mountpoint).map_err(|source| DaemonError::Mount { id: id.clone(), source })?;
        // Culls the bootstrap's cache files in every domain; best effort, as upstream.
        let _ = client.unbind_blob("", &fscache_id).await;
        Ok(())
    }

    /// `GET /api/v1/metrics?id=/<snapshot>` (shared) or without id (dedicated).
    pub async fn fs_metrics(&self, snapshot_id: Option<&str>) -> Result<Value, DaemonError> {
        let id = snapshot_id.map(|s| format!("/{s}"));
        self.api(async |c| c.fs_metrics(id.as_deref()).await).await
    }

    /// `GET /api/v1/metrics/blobcache?id=/<snapshot>`.
    pub async fn cache_metrics(&self, snapshot_id: Option<&str>) -> Result<Value, DaemonError> {
        let id = snapshot_id.map(|s| format!("/{s}"));
        self.api(async |c| c.cache_metrics(id.as_deref()).await).await
    }

    /// `GET /api/v1/metrics/inflight`; `None` when nothing is in flight.
    pub async fn inflight_metrics(&self) -> Result<Option<Value>, DaemonError> {
        self.api(async |c| c.inflight_metrics().await).await
    }

    /// `GET /api/v1/daemon`.
    pub async fn daemon_info(&self) -> Result<crate::api::DaemonInfo, DaemonError> {
        self.api(async |c| c.get_daemon_info().await).await
    }

    /// Go `UpdateAuthConfig` for basic auth: rewrites the instance's (shared) or daemon's
    /// (dedicated) configuration file with the new registry auth, atomically, then tells
    /// nydusd through `PUT /api/v1/config` (`id=/<snapshot>` or `id=/`).
    pub async fn update_registry_auth(&self, snapshot_id: &str, auth: &str) -> Result<(), DaemonError> {
        let states = self.record();
        let (path, api_id) = if states.is_shared() {
            (states.config_file(Some(snapshot_id)), format!("/{snapshot_id}"))
        } else {
            (states.config_file(None), "/".to_owned())
        };
        let io = |action, source| DaemonError::Io { id: states.id.clone(), action, path: path.clone(), source };
        let text = std::fs::read_to_string(&path).map_err(|e| io("read configuration", e))?;
        let mut config: Value = serde_json::from_str(&text)
            .map_err(|e| io("parse configuration", std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let pointer = if config.pointer("/device/backend/config").is_some() {
            "/device/backend/config"
        } else {
            "/backend/registry"
        };
        let settings = config.pointer_mut(pointer).and_then(Value::as_object_mut).ok_or_else(|| {
            io("find the registry backend in", std::io::Error::new(std::io::ErrorKind::InvalidData, "no backend"))
        })?;
        settings.insert("auth".to_owned(), Value::from(auth));
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(&config).expect("json"))
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|e| io("write configuration", e))?;
        self.api(async |c| c.update_registry_auth(&api_id, auth).await).await
    }
}
