//! Steps on one daemon's process and API, and on the mock's sockets.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{Declared, Invalid, StepArgs};
use crate::fields::{ExpectedError, HostPath, SignalName, State};

/// `start`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Pass `--upgrade`.
    #[serde(default)]
    pub upgrade: bool,
    /// Remove the previous process's socket first (Go `ClearVestige`).
    #[serde(default)]
    pub clear_vestige: bool,
}

/// `wait_state`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitStateStep {
    /// Daemon id.
    #[schemars(with = "String")]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectStateStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Expected state.
    pub state: State,
}

/// `mount`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// In-FUSE path, e.g. `/snap1`.
    pub mountpoint: String,
    /// `fs_type` field (default `rafs`).
    #[serde(default = "default_fs_type")]
    pub fs_type: String,
    /// Bootstrap path (default: `<root>/snapshots/<mountpoint>/fs/image/image.boot`, written as the
    /// mock's stand-in for an empty image when no instance put one there).
    #[serde(default)]
    pub source: Option<String>,
    /// RAFS config JSON text (default: the configuration instances get, which nydusd accepts).
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UmountStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// In-FUSE path.
    pub mountpoint: String,
    /// The call must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// Lifecycle calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// `GET /api/v1/daemon`.
    DaemonInfo,
    /// `GET /api/v1/metrics` (every instance).
    FsMetrics,
    /// `GET /api/v1/metrics/blobcache`.
    CacheMetrics,
    /// `GET /api/v1/metrics/inflight`.
    InflightMetrics,
}

/// `api`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Which call.
    pub call: ApiCall,
    /// The query's `id` for `fs_metrics` and `cache_metrics`, sent as written: `/a` is
    /// how nydusd names instance `a`, and `a` is how a client got it wrong (snapshotter
    /// PR #743). Absent: no `id`.
    #[serde(default)]
    pub id: Option<String>,
    /// The call must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
    /// Success and failure both pass, as for `mount_instance`: for a call made only to
    /// trigger a scripted fault, whose effect later steps check (a request may wait behind
    /// one an earlier rule delays, and time out before it fires).
    #[serde(default)]
    pub may_fail: bool,
}

/// `signal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Which signal.
    pub signal: SignalName,
}

/// How a process ended.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitExpectation {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(SignalName),
}

/// `wait_exit`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitExitStep {
    /// Daemon id.
    #[schemars(with = "String")]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectSocketStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Whether the socket file must exist.
    pub present: bool,
    /// If present: whether it must accept connections (a stale one refuses).
    #[serde(default)]
    pub connectable: Option<bool>,
}

/// `expect_alive`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectAliveStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Whether the process must be alive. `false` gives a process that has died 1 s to be
    /// reaped: a death is reported as soon as the daemon's socket hangs up.
    pub alive: bool,
}

/// `expect_mounts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectMountsStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// The exact set of in-FUSE paths in `backend_collection`.
    pub mountpoints: Vec<String>,
}

/// `script`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// The new script (empty: no rules).
    #[serde(default)]
    pub script: mock_nydusd::script::Script,
}

/// `replay_client`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayClientStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// The recording (`recording.jsonl`), relative to the scenario file's directory (not
    /// absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub recording: Spanned<String>,
    /// Time runs this many times as fast as recorded; the script's delays must have been
    /// written for the same speed (`harness replay --speed`).
    #[serde(default = "default_speed")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub speed: f64,
}

fn default_speed() -> f64 {
    1.0
}

/// `hold_fuse_reads`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldFuseReadsStep {
    /// Daemon id (a mock serving FUSE).
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Reads held before the step ends.
    #[serde(default = "one_u64")]
    pub until_held: u64,
}

pub(super) fn one_u64() -> u64 {
    1
}

pub(super) fn two_thousand() -> u64 {
    2_000
}

impl StepArgs for StartStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for WaitStateStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for ExpectStateStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for SignalStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for WaitExitStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for ExpectSocketStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for ExpectAliveStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for ExpectMountsStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for HoldFuseReadsStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for MountStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }
}

impl StepArgs for UmountStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }
}

impl StepArgs for ApiStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }

    fn may_fail(&self) -> bool {
        self.may_fail
    }

    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        match (&self.id, self.call) {
            (Some(_), call) if !matches!(call, ApiCall::FsMetrics | ApiCall::CacheMetrics) => Err(Invalid::at(
                &self.daemon,
                format!("`id` is for the calls fs_metrics and cache_metrics, not {}", crate::spelled(&call)),
            )),
            _ => Ok(()),
        }
    }
}

impl StepArgs for ScriptStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn check(&self, _: &Declared<'_>, origin: &str) -> Result<(), Invalid> {
        super::check_script(&self.script, origin)
    }
}

impl StepArgs for ReplayClientStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        match crate::paths::host_path_error(&self.recording.value) {
            Some(why) => Err(Invalid::at(
                &self.recording,
                format!(
                    "recording {:?} {why}: it must stay inside the scenario file's directory (relative, without `..`)",
                    self.recording.value
                ),
            )),
            None => Ok(()),
        }
    }
}
