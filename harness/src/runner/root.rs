//! A scenario's temporary root: the directories under it, and the ledger of every process
//! started in it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use daemon_core::Layout;

use crate::containment::{Ledger, Root};

/// One scenario's root.
pub(crate) struct ScenarioRoot {
    /// The directories under it, as daemon-core lays them out.
    pub layout: Layout,
    /// The directory, removed when the last holder lets go: the run, or a manager open
    /// still under way on a blocking thread after the run was dropped (which would
    /// otherwise make the root again, `Store::open` creating what it opens in).
    pub dir: Arc<Root>,
    /// Every process the run started, so teardown ends exactly those.
    pub ledger: Arc<Ledger>,
}

impl ScenarioRoot {
    pub fn new(dir: Arc<Root>, ledger: Arc<Ledger>) -> Self {
        Self { layout: Layout::new(dir.path()), dir, ledger }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        self.layout.root()
    }

    /// Mock scripts, one per daemon (`scripts/<id>.json`).
    pub fn script_file(&self, id: &str) -> PathBuf {
        self.path().join("scripts").join(format!("{id}.json"))
    }

    /// A mock's control socket.
    pub fn control_socket(&self, id: &str) -> PathBuf {
        self.path().join("control").join(format!("{id}.sock"))
    }

    /// The fscache work directory.
    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// What a singleton mock probes instead of `/dev/cachefiles`.
    pub fn cachefiles(&self) -> PathBuf {
        self.path().join("cachefiles")
    }

    /// Creates what the mock and the steps write into.
    pub fn prepare(&self) -> std::io::Result<()> {
        for dir in ["scripts", "control", "cache"] {
            std::fs::create_dir_all(self.path().join(dir))?;
        }
        std::fs::write(self.cachefiles(), b"")
    }

    /// Detaches every mount under the root, deepest first.
    pub fn detach_mounts(&self) {
        for mount in super::teardown::mounts_under(self.path()).iter().rev() {
            let _ = daemon_core::mount::umount_lazy(mount);
        }
    }
}
