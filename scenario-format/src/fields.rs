//! Field types shared by the file and its steps: ids and paths as the schema spells
//! them, daemon states, signals, manager events, and how a step must fail.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Schema of ids used in paths (daemon ids, snapshot ids); the loader checks the same
/// with `daemon_core::daemon::id::is_valid_id`. A `${var}` placeholder is allowed as
/// written, for editors; its value is checked after substitution.
pub(crate) struct Id;

impl JsonSchema for Id {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Id".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "1-64 of [A-Za-z0-9_.-], not `.` or `..` (used in paths)",
            "type": "string",
            "pattern": "^(?:[A-Za-z0-9_.-]{1,64}|.*\\$\\{[^}]+\\}.*)$",
            "not": { "enum": [".", ".."] }
        })
    }
}

/// A path inside an instance (a `tree` key): `/` or relative, components of 1-255 bytes
/// that are not `.` or `..`, no NUL (as `paths::instance_path_error`).
pub(crate) const INSTANCE_PATH_PATTERN: &str =
    r"^/?(?:(?!\.{1,2}(?:/|$))[^/\x00]{1,255}/)*(?!\.{1,2}$)[^/\x00]{1,255}$";

/// Schema of host paths relative to the scenario's root (`paths::host_path_error`).
pub(crate) struct HostPath;

impl JsonSchema for HostPath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HostPath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "relative to the scenario's root: not absolute, no `..` component, no NUL",
            "type": "string",
            "pattern": "^(?!/)(?!(?:.*/)?\\.\\.(?:/|$))[^\\x00]*$"
        })
    }
}

/// Schema of a one-line text (`vars` values).
pub(crate) struct OneLine;

impl JsonSchema for OneLine {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OneLine".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "one line of text", "type": "string", "pattern": "^[^\\r\\n]*$" })
    }
}

/// A daemon state in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum State {
    /// INIT.
    #[serde(rename = "INIT")]
    Init,
    /// READY.
    #[serde(rename = "READY")]
    Ready,
    /// RUNNING.
    #[serde(rename = "RUNNING")]
    Running,
    /// STOPPED.
    #[serde(rename = "STOPPED")]
    Stopped,
    /// UNKNOWN (could not ask).
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl From<State> for daemon_core::DaemonState {
    fn from(s: State) -> Self {
        match s {
            State::Init => Self::Init,
            State::Ready => Self::Ready,
            State::Running => Self::Running,
            State::Stopped => Self::Stopped,
            State::Unknown => Self::Unknown,
        }
    }
}

/// A signal a step can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum SignalName {
    /// Graceful stop.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Graceful stop.
    #[serde(rename = "SIGINT")]
    Int,
    /// Crash.
    #[serde(rename = "SIGKILL")]
    Kill,
    /// Freeze.
    #[serde(rename = "SIGSTOP")]
    Stop,
    /// Thaw.
    #[serde(rename = "SIGCONT")]
    Cont,
}

impl From<SignalName> for nix::sys::signal::Signal {
    fn from(s: SignalName) -> Self {
        use nix::sys::signal::Signal;
        match s {
            SignalName::Term => Signal::SIGTERM,
            SignalName::Int => Signal::SIGINT,
            SignalName::Kill => Signal::SIGKILL,
            SignalName::Stop => Signal::SIGSTOP,
            SignalName::Cont => Signal::SIGCONT,
        }
    }
}

/// Manager events a scenario can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Started and verified.
    Started,
    /// Verification after start failed.
    StartFailed,
    /// The monitor reported the daemon dead.
    Died,
    /// A death event for a daemon the manager does not know.
    UnknownDied,
    /// Restart policy finished.
    Restarted,
    /// Failover policy finished.
    FailedOver,
    /// Restart or failover gave up.
    RecoveryFailed,
    /// Hot upgrade finished.
    Upgraded,
    /// Destroyed.
    Destroyed,
    /// Its supervisor refused a connection from another process than the daemon.
    SupervisorPeerRefused,
    /// The manager signalled its process (the event says which signal and why).
    Signalled,
    /// One attempt of a restart or failover failed (the event says when the next starts).
    AttemptFailed,
    /// A daemon found frozen when the manager restarted runs again and was settled.
    Resumed,
}

/// What a failing call must look like.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// HTTP status nydusd must answer with.
    #[serde(default)]
    pub status: Option<u16>,
    /// Error kind.
    #[serde(default)]
    pub kind: Option<daemon_core::api::ErrorKind>,
    /// Text the error (message or chain) must contain.
    #[serde(default)]
    pub message_contains: Option<String>,
    /// The step must have failed within this many milliseconds of its start.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub within_ms: Option<u64>,
}
