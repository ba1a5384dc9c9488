//! Where things live under a manager's root directory (the snapshotter's ROOT).

use std::path::{Path, PathBuf};

/// The directory tree under one root: `socket/`, `config/`, `logs/`, `supervisor/`,
/// `mnt/`, `snapshots/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/socket`: one sub-directory per daemon holding `api.sock`.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    /// `<root>/config`: one sub-directory per daemon.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    /// `<root>/logs`: one sub-directory per daemon.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `<root>/supervisor`: `<id>.sock` per daemon with a supervisor.
    pub fn supervisor_dir(&self) -> PathBuf {
        self.root.join("supervisor")
    }

    /// `<root>/mnt`: the shared FUSE mountpoint.
    pub fn shared_mountpoint(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// `<root>/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
}
