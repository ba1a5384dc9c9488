//! Why a manager operation failed.

use std::path::PathBuf;

use super::RecoverPolicy;
use crate::daemon::{DaemonError, error_chain};
use crate::monitor::MonitorError;
use crate::store::StoreError;

/// Why a manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A daemon operation failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The monitor refused or failed.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The id is already managed.
    #[error("daemon {0} is already managed")]
    AlreadyExists(String),
    /// The id is not managed.
    #[error("daemon {0} is not managed")]
    NotFound(String),
    /// The supervisor directory could not be created.
    #[error("cannot create supervisor directory {}: {source}", path.display())]
    SupervisorDir {
        /// The directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A takeover (hot upgrade or failover) needs a supervisor, which only the failover
    /// policy gives a daemon.
    #[error("daemon {id} has no supervisor: {operation} needs one (the failover policy gives it)")]
    NoSupervisor {
        /// Daemon id.
        id: String,
        /// What needed it: `hot upgrade` or `failover`.
        operation: &'static str,
    },
    /// The daemon was destroyed while the operation ran, which ended it.
    #[error("daemon {0} was destroyed while this operation ran")]
    Destroyed(String),
    /// The daemon is destroyed (records, process, supervisor), but parts of its clean-up
    /// failed; each is kept.
    #[error("daemon {id} is destroyed, but {} of its clean-up failed: {}", failures.len(), numbered_steps(failures))]
    DestroyIncomplete {
        /// Daemon id.
        id: String,
        /// Each failed clean-up step, in order.
        failures: Vec<ManagerError>,
    },
    /// A graceful shutdown ended, but some of its unmounts or destroys failed; the
    /// report says what it did.
    #[error("the manager is closed, but {} of its steps failed: {}", failures.len(), numbered_steps(failures))]
    CloseIncomplete {
        /// What the shutdown did.
        report: Box<super::close::CloseReport>,
        /// Each failed unmount or destroy, in order.
        failures: Vec<ManagerError>,
    },
    /// A snapshot id that would make a path outside the root.
    #[error("snapshot id {0:?} is not usable in a path (allowed: 1-64 of [A-Za-z0-9_.-], not . or ..)")]
    InvalidSnapshot(String),
    /// The API socket name has no next one.
    #[error("cannot derive the next API socket from {0:?} (expected a name like api.sock or api3.sock)")]
    SocketName(String),
    /// The store is missing or empty, but daemons run under the root.
    #[error("store {} is missing or empty, but daemons run under this root ({}); refusing to start with no records, which would kill them as strays", path.display(), found.join(", "))]
    StoreLost {
        /// The store file.
        path: PathBuf,
        /// What was found running.
        found: Vec<String>,
    },
    /// An operation failed (the source), and so did the clean-up after it; both are kept.
    /// The message names the clean-up only: the first failure is the source, so a
    /// report's chain reads each once.
    #[error("cleaning up failed ({}) after", error_chain(cleanup))]
    CleanupFailed {
        /// What failed first.
        #[source]
        error: Box<ManagerError>,
        /// What failed while undoing it.
        cleanup: Box<ManagerError>,
    },
    /// Every attempt of a recovery failed.
    #[error("daemon {id}: {policy:?} failed {} times: {}", causes.len(), numbered(causes))]
    RecoveryExhausted {
        /// Daemon id.
        id: String,
        /// The policy.
        policy: RecoverPolicy,
        /// Each attempt's cause, in order.
        causes: Vec<ManagerError>,
    },
}

fn numbered_steps(failures: &[ManagerError]) -> String {
    let items: Vec<String> = failures.iter().map(|e| error_chain(e)).collect();
    items.join("; ")
}

fn numbered(causes: &[ManagerError]) -> String {
    let items: Vec<String> =
        causes.iter().enumerate().map(|(i, e)| format!("attempt {}: {}", i + 1, error_chain(e))).collect();
    items.join("; ")
}

impl ManagerError {
    /// `self`, with a failed clean-up kept beside it.
    pub(crate) fn with_cleanup(self, cleanup: Result<(), impl Into<ManagerError>>) -> Self {
        match cleanup {
            Ok(()) => self,
            Err(e) => Self::CleanupFailed { error: Box::new(self), cleanup: Box::new(e.into()) },
        }
    }
}
