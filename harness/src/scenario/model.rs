//! The scenario file format, version 1. Documented for users in `scenarios/README.md`.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The only format version this harness reads.
pub const FORMAT_VERSION: u32 = 1;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Format version; must be 1.
    pub version: u32,
    /// Short name, shown in reports.
    pub name: String,
    /// What the scenario shows, and which upstream problem it guards against.
    #[serde(default)]
    pub description: String,
    /// Free-form labels for `--filter`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Deadline for the whole scenario, in milliseconds.
    #[serde(default = "default_scenario_timeout")]
    pub timeout_ms: u64,
    /// The daemons the scenario manages.
    #[serde(default)]
    pub daemons: Vec<DaemonSpec>,
    /// Steps, run in order; the first failure ends the scenario.
    pub steps: Vec<Spanned<Step>>,
}

fn default_scenario_timeout() -> u64 {
    30_000
}

/// A daemon of the topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// Name used by steps; also the daemon id.
    pub id: String,
    /// `dedicated` (one instance, mounted by nydusd from argv) or `shared`.
    #[serde(default)]
    pub mode: Mode,
    /// `--thread-num`.
    #[serde(default)]
    pub thread_num: u32,
    /// Give the daemon a supervisor socket.
    #[serde(default)]
    pub supervisor: bool,
}

/// Daemon mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One instance per daemon.
    #[default]
    Dedicated,
    /// Many instances over the API.
    Shared,
}

/// A daemon state in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// One step. Each is a single-key map, e.g. `- start: { daemon: d1 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Spawn the daemon's process with the command line built from its state.
    Start(StartStep),
    /// Wait until the daemon reports a state.
    WaitState(WaitStateStep),
    /// Ask once and compare.
    ExpectState(ExpectStateStep),
    /// `POST /api/v1/mount`.
    Mount(MountStep),
    /// `DELETE /api/v1/mount`.
    Umount(UmountStep),
    /// A lifecycle API call.
    Api(ApiStep),
    /// Send a signal to the daemon process.
    Signal(SignalStep),
    /// Wait for the process to exit, optionally checking how.
    WaitExit(WaitExitStep),
    /// Check whether the API socket file exists.
    ExpectSocket(ExpectSocketStep),
    /// Check whether the process is alive.
    ExpectAlive(ExpectAliveStep),
    /// Check the set of mounted instances nydusd reports.
    ExpectMounts(ExpectMountsStep),
    /// Pause.
    Sleep(SleepStep),
}

/// `start`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Pass `--upgrade`.
    #[serde(default)]
    pub upgrade: bool,
    /// Remove the previous process's socket first (Go `ClearVestige`).
    #[serde(default)]
    pub clear_vestige: bool,
}

/// `wait_state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitStateStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Wanted state.
    pub state: State,
    /// Deadline in milliseconds.
    #[serde(default = "default_wait_ms")]
    pub timeout_ms: u64,
}

fn default_wait_ms() -> u64 {
    2_000
}

/// `expect_state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStateStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Expected state.
    pub state: State,
}

/// What a failing call must look like.
#[derive(Debug, Clone, Default, Deserialize)]
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
}

/// `mount`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// In-FUSE path, e.g. `/snap1`.
    pub mountpoint: String,
    /// `fs_type` field (default `rafs`).
    #[serde(default = "default_fs_type")]
    pub fs_type: String,
    /// Bootstrap path (default: `<root>/snapshots/<mountpoint>/image.boot`; the mock does not read it).
    #[serde(default)]
    pub source: Option<String>,
    /// RAFS config JSON text (default `{}`).
    #[serde(default)]
    pub config: Option<String>,
    /// The call must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

fn default_fs_type() -> String {
    "rafs".to_owned()
}

/// `umount`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UmountStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// In-FUSE path.
    pub mountpoint: String,
    /// The call must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// Lifecycle calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiCall {
    /// `PUT /api/v1/daemon/start`.
    Start,
    /// `PUT /api/v1/daemon/exit`.
    Exit,
    /// `PUT /api/v1/daemon/fuse/takeover`.
    Takeover,
    /// `PUT /api/v1/daemon/fuse/sendfd`.
    Sendfd,
}

/// `api`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Which call.
    pub call: ApiCall,
    /// The call must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// `signal`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Which signal.
    pub signal: SignalName,
}

/// How a process ended.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitExpectation {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(SignalName),
}

/// `wait_exit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitExitStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Deadline in milliseconds.
    #[serde(default = "default_exit_ms")]
    pub timeout_ms: u64,
    /// How it must have ended.
    #[serde(default)]
    pub status: Option<ExitExpectation>,
}

fn default_exit_ms() -> u64 {
    5_000
}

/// `expect_socket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSocketStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Whether the socket file must exist.
    pub present: bool,
    /// If present: whether it must accept connections (a stale one refuses).
    #[serde(default)]
    pub connectable: Option<bool>,
}

/// `expect_alive`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectAliveStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// Whether the process must be alive.
    pub alive: bool,
}

/// `expect_mounts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectMountsStep {
    /// Daemon id.
    pub daemon: Spanned<String>,
    /// The exact set of in-FUSE paths in `backend_collection`.
    pub mountpoints: Vec<String>,
}

/// `sleep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    /// Milliseconds.
    pub ms: u64,
}

impl Step {
    /// The step's keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::Start(_) => "start",
            Step::WaitState(_) => "wait_state",
            Step::ExpectState(_) => "expect_state",
            Step::Mount(_) => "mount",
            Step::Umount(_) => "umount",
            Step::Api(_) => "api",
            Step::Signal(_) => "signal",
            Step::WaitExit(_) => "wait_exit",
            Step::ExpectSocket(_) => "expect_socket",
            Step::ExpectAlive(_) => "expect_alive",
            Step::ExpectMounts(_) => "expect_mounts",
            Step::Sleep(_) => "sleep",
        }
    }

    /// The daemon the step names, if any.
    pub fn daemon(&self) -> Option<&Spanned<String>> {
        match self {
            Step::Start(s) => Some(&s.daemon),
            Step::WaitState(s) => Some(&s.daemon),
            Step::ExpectState(s) => Some(&s.daemon),
            Step::Mount(s) => Some(&s.daemon),
            Step::Umount(s) => Some(&s.daemon),
            Step::Api(s) => Some(&s.daemon),
            Step::Signal(s) => Some(&s.daemon),
            Step::WaitExit(s) => Some(&s.daemon),
            Step::ExpectSocket(s) => Some(&s.daemon),
            Step::ExpectAlive(s) => Some(&s.daemon),
            Step::ExpectMounts(s) => Some(&s.daemon),
            Step::Sleep(_) => None,
        }
    }
}
