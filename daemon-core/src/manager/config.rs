//! How a manager runs its daemons.

use std::path::PathBuf;
use std::sync::Arc;

use super::{RecoverPolicy, RecoveryRetry};
use crate::daemon::{FsDriver, SpawnExtras};
use crate::layout::Layout;
use crate::wait::Timeouts;

/// How the manager runs daemons.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The snapshotter root.
    pub layout: Layout,
    /// The nydusd binary.
    pub nydusd: PathBuf,
    /// fusedev or fscache: the manager owns daemons of this driver only.
    pub fs_driver: FsDriver,
    /// What to do when a daemon dies.
    pub recover_policy: RecoverPolicy,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Arguments, output and process options beyond nydusd's command line.
    pub spawn: SpawnExtras,
    /// fscache cache directory (`--fscache`).
    pub fscache_dir: Option<PathBuf>,
    /// Arguments for one daemon's process only (a test harness gives each mock its script).
    pub per_daemon_args: PerDaemonArgs,
    /// Sees every API exchange of every managed daemon (a test harness records them).
    pub exchange_observer: Option<crate::api::ExchangeObserver>,
    /// How often, and how far apart, a failed restart or failover is tried again.
    pub recovery: RecoveryRetry,
    /// The largest reply body accepted from a daemon
    /// ([`crate::api::client::DEFAULT_REPLY_LIMIT`] is a sane value).
    pub reply_limit: usize,
}

/// A function from a daemon id to extra arguments for its processes.
#[derive(Clone, Default)]
pub struct PerDaemonArgs(Option<Arc<ArgsFor>>);

/// The function behind [`PerDaemonArgs`].
type ArgsFor = dyn Fn(&str) -> Vec<std::ffi::OsString> + Send + Sync;

impl PerDaemonArgs {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&str) -> Vec<std::ffi::OsString> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    pub(super) fn args(&self, id: &str) -> Vec<std::ffi::OsString> {
        self.0.as_ref().map(|f| f(id)).unwrap_or_default()
    }
}

impl std::fmt::Debug for PerDaemonArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "PerDaemonArgs(set)" } else { "PerDaemonArgs(none)" })
    }
}
