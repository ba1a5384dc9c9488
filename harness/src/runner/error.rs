//! Why a scenario's set-up, or the part of a step that is the harness's own, failed.

use std::path::PathBuf;

use daemon_core::DaemonError;
use daemon_core::manager::ManagerError;

/// Why the harness could not do its part: the manager, a daemon, a file under the root.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// An earlier step killed or closed the manager.
    #[error("the manager is not running (an earlier step killed or closed it)")]
    NoManager,
    /// Another lane killed or closed the manager while this operation of it ran.
    #[error("the manager was killed or closed by another lane while this operation ran")]
    ManagerEnded,
    /// The scenario names a daemon the run never had.
    #[error("daemon {0} is not managed")]
    NotManaged(String),
    /// The scenario names an instance its daemon does not declare.
    #[error("daemon {daemon} declares no instance {snapshot:?}")]
    NoInstance { daemon: String, snapshot: String },
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Opening the manager's store on its blocking thread panicked.
    #[error("opening the manager")]
    Opening(#[source] tokio::task::JoinError),
    /// A file or directory under the root.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path a scenario gives leaves the place it must stay in.
    #[error("{0}")]
    Outside(String),
    /// An instance's image could not be built.
    #[error(transparent)]
    Image(#[from] super::image::ImageError),
}

impl RunError {
    /// What an I/O error on `path` while doing `action` is.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
