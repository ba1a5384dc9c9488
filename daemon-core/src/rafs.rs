//! RAFS instances (`snapshotter-lifecycle.md` §2): one image mounted for one snapshot, and
//! the per-daemon cache of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::daemon::record::FsDriver;

/// Annotation set by an fscache mount: the blob-cache domain.
pub const ANNOTATION_FSCACHE_DOMAIN_ID: &str = "fscache.domainid";
/// Annotation set by an fscache mount: the fscache id (`fsid`).
pub const ANNOTATION_FSCACHE_ID: &str = "fscache.id";

/// One RAFS instance, persisted with the Go field names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rafs {
    /// Store sequence number: the order instances are re-mounted in on recovery.
    #[serde(rename = "Seq")]
    pub seq: u64,
    /// Image reference.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// The daemon serving it.
    #[serde(rename = "DaemonID")]
    pub daemon_id: String,
    /// fusedev or fscache.
    #[serde(rename = "FsDriver")]
    pub fs_driver: FsDriver,
    /// The key: a snapshot id (or `<id>-userns-<uid>`).
    #[serde(rename = "SnapshotID")]
    pub snapshot_id: String,
    /// `<root>/snapshots/<SnapshotID>`.
    #[serde(rename = "SnapshotDir")]
    pub snapshot_dir: PathBuf,
    /// Snapshot whose bootstrap is used, when the key is a derivative.
    #[serde(rename = "SourceSnapshotID", default)]
    pub source_snapshot_id: String,
    /// Cache blob files (from cache metrics).
    #[serde(rename = "UnderlyingFiles", default)]
    pub underlying_files: Vec<String>,
    /// Where the instance is visible on the host.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    /// Free-form annotations (fscache ids, ...).
    #[serde(rename = "Annotations", default)]
    pub annotations: BTreeMap<String, String>,
}

impl Rafs {
    /// A new instance record for snapshot `snapshot_id` under `snapshots_dir`.
    pub fn new(snapshots_dir: &Path, snapshot_id: &str, image_id: &str, fs_driver: FsDriver) -> Self {
        Self {
            image_id: image_id.to_owned(),
            fs_driver,
            snapshot_id: snapshot_id.to_owned(),
            snapshot_dir: snapshots_dir.join(snapshot_id),
            ..Self::default()
        }
    }

    /// The path inside a shared FUSE mount: `/<SnapshotID>`.
    pub fn relative_mountpoint(&self) -> String {
        format!("/{}", self.snapshot_id)
    }

    /// `<SnapshotDir>/fs`: the fscache work directory and the bootstrap's home.
    pub fn fscache_work_dir(&self) -> PathBuf {
        self.snapshot_dir.join("fs")
    }

    /// The bootstrap: `<snapshots>/<source or self>/fs/image/image.boot`, else the legacy
    /// `.../fs/image.boot`; `None` when neither exists.
    pub fn bootstrap_file(&self) -> Option<PathBuf> {
        let owner = if self.source_snapshot_id.is_empty() { &self.snapshot_id } else { &self.source_snapshot_id };
        let base = self.snapshot_dir.parent().unwrap_or(Path::new("/")).join(owner).join("fs");
        [base.join("image/image.boot"), base.join("image.boot")].into_iter().find(|p| p.is_file())
    }
}

/// A daemon's instances by snapshot id. `list` returns copies, as upstream's deep copy.
#[derive(Debug, Default)]
pub struct RafsCache {
    instances: std::sync::Mutex<BTreeMap<String, Rafs>>,
}

impl RafsCache {
    /// Inserts or replaces; returns whether the key was new.
    pub fn add(&self, rafs: Rafs) -> bool {
        self.lock().insert(rafs.snapshot_id.clone(), rafs).is_none()
    }

    /// Removes; returns the instance if it was there.
    pub fn remove(&self, snapshot_id: &str) -> Option<Rafs> {
        self.lock().remove(snapshot_id)
    }

    /// A copy of one instance.
    pub fn get(&self, snapshot_id: &str) -> Option<Rafs> {
        self.lock().get(snapshot_id).cloned()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Some instance (a dedicated daemon's only one).
    pub fn head(&self) -> Option<Rafs> {
        self.lock().values().next().cloned()
    }

    /// Copies of every instance, ordered by `seq` (the order to re-mount them in).
    pub fn list_by_seq(&self) -> Vec<Rafs> {
        let mut all: Vec<Rafs> = self.lock().values().cloned().collect();
        all.sort_by_key(|r| r.seq);
        all
    }

    /// Replaces every instance.
    pub fn set(&self, instances: Vec<Rafs>) {
        *self.lock() = instances.into_iter().map(|r| (r.snapshot_id.clone(), r)).collect();
    }

    /// Changes one instance in place under the lock; `false` when absent.
    pub fn update(&self, snapshot_id: &str, f: impl FnOnce(&mut Rafs)) -> bool {
        match self.lock().get_mut(snapshot_id) {
            Some(r) => {
                f(r);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Rafs>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_snapshotter_layout() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        let mut r = Rafs::new(&snapshots, "42", "img", FsDriver::Fusedev);
        assert_eq!(r.relative_mountpoint(), "/42");
        assert_eq!(r.fscache_work_dir(), snapshots.join("42/fs"));
        assert_eq!(r.bootstrap_file(), None);
        std::fs::create_dir_all(snapshots.join("42/fs")).unwrap();
        std::fs::write(snapshots.join("42/fs/image.boot"), b"legacy").unwrap();
        assert_eq!(r.bootstrap_file(), Some(snapshots.join("42/fs/image.boot")));
        std::fs::create_dir_all(snapshots.join("42/fs/image")).unwrap();
        std::fs::write(snapshots.join("42/fs/image/image.boot"), b"new").unwrap();
        assert_eq!(r.bootstrap_file(), Some(snapshots.join("42/fs/image/image.boot")));
        // A derivative (id-mapped) key uses its source snapshot's bootstrap.
        r.snapshot_id = "42-userns-1000".into();
        r.snapshot_dir = snapshots.join("42-userns-1000");
        r.source_snapshot_id = "42".into();
        assert_eq!(r.bootstrap_file(), Some(snapshots.join("42/fs/image/image.boot")));
    }

    #[test]
    fn the_cache_lists_copies_in_sequence_order() {
        let cache = RafsCache::default();
        for (id, seq) in [("b", 2), ("a", 3), ("c", 1)] {
            assert!(cache.add(Rafs { snapshot_id: id.into(), seq, ..Rafs::default() }));
        }
        assert!(!cache.add(Rafs { snapshot_id: "a".into(), seq: 3, ..Rafs::default() }));
        let order: Vec<String> = cache.list_by_seq().into_iter().map(|r| r.snapshot_id).collect();
        assert_eq!(order, ["c", "b", "a"]);
        let mut copy = cache.get("a").unwrap();
        copy.image_id = "changed".into();
        assert_eq!(cache.get("a").unwrap().image_id, "", "listed items are copies");
        assert!(cache.update("a", |r| r.image_id = "x".into()));
        assert_eq!(cache.remove("a").unwrap().image_id, "x");
        assert_eq!(cache.len(), 2);
    }
}
