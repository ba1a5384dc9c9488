//! Why a VM run could not be prepared, booted or brought back.

use std::path::PathBuf;

/// Why a VM run failed before its command's exit code was known.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file or directory the run needs could not be read or written.
    #[error("{what} {}", path.display())]
    Io {
        /// What was done with it (`--kernel`, `cannot write`).
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tool the run is built with could not run or failed (dpkg-deb, xz, ldd, tar,
    /// busybox, qemu), with what it said.
    #[error("{tool}: {detail}")]
    Tool { tool: &'static str, detail: String },
    /// What was given cannot be used: not a regular file, a module missing, modules that
    /// depend on each other in a circle.
    #[error("{0}")]
    Input(String),
    /// Unpacking the kernel and building the guest's root took the whole deadline.
    #[error("the VM was not ready within {secs} s (unpacking the kernel, building its root); nothing was booted")]
    NotReady { secs: u64 },
    /// The guest's results could not be read back.
    #[error("the guest's results {0}")]
    Results(String),
    /// The preparation on its blocking thread panicked or was cancelled.
    #[error("preparing the VM failed")]
    Preparation(#[source] tokio::task::JoinError),
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let (what, path) = (what.into(), path.into());
        move |source| Self::Io { what, path, source }
    }
}
