//! The states nydusd reports (`nydusd-api.md` §3.1).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A state as nydusd reports it in `GET /api/v1/daemon`. nydusd has no other: the
/// client's labels for a daemon it could not ask, or one that died, are the client's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum State {
    /// Waiting for a takeover (upgrade or failover start-up).
    Init,
    /// Taken over, not yet serving.
    Ready,
    /// Serving.
    Running,
    /// The state machine has terminated; the process is about to exit.
    Stopped,
}

impl State {
    /// Every state, in the order nydusd goes through them.
    pub const ALL: [State; 4] = [Self::Init, Self::Ready, Self::Running, Self::Stopped];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Ready => "READY",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
