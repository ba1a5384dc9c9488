//! What a manager tells those who follow it.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ManagerError, RecoverPolicy};

/// Things that happened, for callers and tests that want to follow the manager.
#[derive(Debug, Clone)]
pub enum ManagerEvent {
    /// A daemon was started and reached RUNNING.
    Started {
        /// Daemon id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// Starting or verifying a daemon failed.
    StartFailed {
        /// Daemon id.
        id: String,
        /// Why (the process was stopped and reaped before this was sent).
        error: Arc<ManagerError>,
    },
    /// The monitor reported a daemon dead.
    Died {
        /// Daemon id.
        id: String,
    },
    /// A death event named a daemon the manager does not know; the loop went on.
    UnknownDied {
        /// The id in the event.
        id: String,
    },
    /// Restart policy: a fresh daemon runs and its instances are mounted again.
    Restarted {
        /// Daemon id.
        id: String,
        /// New pid.
        pid: u32,
    },
    /// Failover policy: a new daemon took over the state and fd.
    FailedOver {
        /// Daemon id.
        id: String,
        /// New pid.
        pid: u32,
    },
    /// A restart or failover gave up after its last attempt.
    RecoveryFailed {
        /// Daemon id.
        id: String,
        /// The policy that was tried.
        policy: RecoverPolicy,
        /// Why: [`ManagerError::RecoveryExhausted`], with the cause of every attempt.
        error: Arc<ManagerError>,
    },
    /// Hot upgrade finished.
    Upgraded {
        /// Daemon id.
        id: String,
        /// New pid.
        pid: u32,
        /// New API socket.
        socket: PathBuf,
    },
    /// A daemon was destroyed: the last event about it (whatever worked for it was
    /// ended first).
    Destroyed {
        /// Daemon id.
        id: String,
    },
    /// A daemon found frozen at start-up runs again and was settled (see
    /// [`RecoveryReport::frozen`]).
    Resumed {
        /// Daemon id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// The manager signalled a daemon's process, and why.
    Signalled {
        /// Daemon id.
        id: String,
        /// The process.
        pid: u32,
        /// The signal's name (`SIGTERM`, `SIGKILL`).
        signal: &'static str,
        /// Why it was sent.
        why: String,
    },
    /// One attempt of a restart or failover failed; its replacement was stopped.
    AttemptFailed {
        /// Daemon id.
        id: String,
        /// The attempt, from 1.
        attempt: u32,
        /// The replacement it had started (0: none got that far).
        pid: u32,
        /// Why, as one line.
        error: String,
        /// When the next attempt starts; `None` after the last one.
        retry_in: Option<std::time::Duration>,
    },
    /// A daemon's supervisor closed a connection from another process than the daemon it
    /// expected, unanswered (someone tried to plant or take the FUSE fd).
    SupervisorPeerRefused {
        /// Daemon id.
        id: String,
        /// The connecting process.
        pid: u32,
        /// Its user.
        uid: u32,
        /// The pid the supervisor expected (0: none allowed yet).
        expected: u32,
    },
}
