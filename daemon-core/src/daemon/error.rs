//! Why a daemon operation failed, and errors as one line for reports.

use std::path::PathBuf;
use std::time::Duration;

use super::command::CommandError;
use super::process::ProcessError;
use crate::api::{ClientError, DaemonState};

/// Why a daemon operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An API call failed.
    #[error("daemon {id}: api call failed")]
    Client {
        /// Daemon id.
        id: String,
        /// The client error (boxed: it is large and errors should be cheap to move).
        #[source]
        source: Box<ClientError>,
    },
    /// The API socket did not accept connections in time.
    #[error("daemon {id}: {}", socket_timeout(socket, after, exited, last_words))]
    SocketTimeout {
        /// Daemon id.
        id: String,
        /// API socket path.
        socket: PathBuf,
        /// How long we waited.
        after: Duration,
        /// Exit status when the process died while we waited.
        exited: Option<String>,
        /// The last lines it printed (output and log), when it died.
        last_words: Option<String>,
    },
    /// The daemon did not reach a state in time.
    #[error("daemon {id}: state {expected} not reached within {after:?}; last observed {last_observed}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    StateTimeout {
        /// Daemon id.
        id: String,
        /// Wanted state.
        expected: DaemonState,
        /// The last state we saw (UNKNOWN if we could not ask).
        last_observed: DaemonState,
        /// How long we waited.
        after: Duration,
        /// The last error while asking, if the last attempt failed.
        last_error: Option<String>,
    },
    /// The command line could not be built.
    #[error("daemon {id}: cannot build nydusd command line")]
    Command {
        /// Daemon id.
        id: String,
        /// The builder's error.
        #[source]
        source: CommandError,
    },
    /// Spawning or signalling failed.
    #[error("daemon {id}: process error")]
    Process {
        /// Daemon id.
        id: String,
        /// The process error.
        #[source]
        source: ProcessError,
    },
    /// The process did not exit within the deadline, even after SIGKILL when one was sent
    /// (a process stuck in the kernel, for example in a dead FUSE mount).
    #[error("daemon {id}: pid {pid} still running {after:?} after {signal}")]
    ExitTimeout {
        /// Daemon id.
        id: String,
        /// The process.
        pid: u32,
        /// The wait that ran out.
        after: Duration,
        /// The last signal sent, or "its death was reported" when none was sent.
        signal: String,
    },
    /// The daemon has no process to act on.
    #[error("daemon {id}: no nydusd process is running")]
    NoProcess {
        /// Daemon id.
        id: String,
    },
    /// A directory or file could not be created or removed.
    #[error("daemon {id}: cannot {action} {}", path.display())]
    Io {
        /// Daemon id.
        id: String,
        /// What we tried.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A socket path of the daemon would not fit a Unix socket address (`sun_path`: 107
    /// bytes and a NUL); nydusd could not bind it, and would only time out.
    #[error("daemon {id}: its socket {} is {len} bytes long, past the {max} a Unix socket path may have; use a shorter root", path.display())]
    SocketPathTooLong {
        /// Daemon id.
        id: String,
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most a path may have.
        max: usize,
    },
    /// The id cannot be used in a path.
    #[error("daemon id {0:?} is not usable in a path (allowed: 1-64 of [A-Za-z0-9_.-], not . or ..)")]
    InvalidId(String),
    /// The pid on record now belongs to another process (or a process we cannot verify).
    #[error("daemon {id}: pid {pid} is not this daemon's nydusd any more ({why}); not signalling it")]
    NotOurProcess {
        /// Daemon id.
        id: String,
        /// The recorded pid.
        pid: u32,
        /// What did not match.
        why: String,
    },
    /// An instance's bootstrap is missing.
    #[error("daemon {id}: no bootstrap for instance {snapshot} under {}", dir.display())]
    NoBootstrap {
        /// Daemon id.
        id: String,
        /// Snapshot id.
        snapshot: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A host mount failed.
    #[error("daemon {id}: mount error")]
    Mount {
        /// Daemon id.
        id: String,
        /// The mount error.
        #[source]
        source: crate::mount::MountError,
    },
    /// A supervisor transfer failed.
    #[error("daemon {id}: supervisor error")]
    Supervisor {
        /// Daemon id.
        id: String,
        /// The supervisor error.
        #[source]
        source: crate::supervisor::SupervisorError,
    },
}

/// A socket wait that ended at its deadline, or early because the process died (then the
/// deadline is beside the point, and what it printed is the news).
fn socket_timeout(
    socket: &std::path::Path,
    after: &Duration,
    exited: &Option<String>,
    words: &Option<String>,
) -> String {
    let words = words.as_ref().map(|w| format!("; it printed: {w}")).unwrap_or_default();
    match exited {
        Some(status) => {
            format!("the process exited ({status}) before its api socket {} was ready{words}", socket.display())
        }
        None => format!("api socket {} not ready after {after:?}{words}", socket.display()),
    }
}

impl DaemonError {
    /// Whether the daemon may have carried out the call although it failed (see
    /// [`ClientError::is_ambiguous`]).
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Client { source, .. } if source.is_ambiguous())
    }

    /// The kind of the API call's failure, when an API call failed.
    pub fn client_kind(&self) -> Option<crate::api::ErrorKind> {
        match self {
            Self::Client { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// An error and its sources on one line, for reports.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
