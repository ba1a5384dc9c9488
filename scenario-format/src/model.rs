//! The scenario file format, version 1: the file, its manager, its daemons and their
//! instances. The steps are in [`crate::steps`], common field types in [`crate::fields`]. Documented for users in `scenarios/README.md`.

pub use daemon_core::daemon::{DaemonMode as Mode, FsDriver};
pub use daemon_core::manager::RecoverPolicy;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::fields::{EventKind, HostPath, INSTANCE_PATH_PATTERN, Id, OneLine};
use crate::steps::Step;
use crate::tree::{FileSpec, Tree};

/// The only format version this harness reads.
pub const FORMAT_VERSION: u32 = 1;

/// One scenario file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Format version; must be 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Short name, shown in reports: one line (a line break in it would start a line of
    /// its own in the console and in CI logs, where `::warning …` is a command).
    #[schemars(with = "crate::fields::OneLine")]
    pub name: String,
    /// What the scenario shows, and which upstream problem it guards against.
    #[serde(default)]
    pub description: String,
    /// The upstream problem the scenario guards against (issue, PR or commit), if any.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Free-form labels for `--filter`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What the host must offer; unmet requirements skip the scenario with the reason.
    #[serde(default)]
    pub requires: Vec<Requirement>,
    /// The targets the scenario applies to (default: both).
    #[serde(default = "all_targets")]
    pub targets: Vec<Target>,
    /// Lowest real nydusd version the scenario applies to, e.g. `"2.4"` (sendfd/takeover
    /// are no-ops in 2.2); on an older real nydusd it is skipped with that reason.
    #[serde(default)]
    pub min_nydusd: Option<String>,
    /// The nydusd release the mock behaves as (mock target): `"2.4"` or `"2.2"`, crates.io's
    /// build, whose sendfd and takeover hand nothing over. Absent: 2.4, or in `harness diff`
    /// the release of the real nydusd compared with. Example: `mock_nydusd: "2.2"`.
    #[serde(default)]
    pub mock_nydusd: Option<mock_nydusd::version::NydusdVersion>,
    /// One-line values substituted for `${name}` anywhere in the file before it is read,
    /// e.g. `vars: { daemon: d1 }` and then `daemon: "${daemon}"` (quote it inside `{ }`, where
    /// `{` would otherwise start a mapping); `$${` is a literal `${`.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, OneLine>")]
    pub vars: std::collections::BTreeMap<String, String>,
    /// YAML anchors to reuse (`x-anchors: { boot: &boot {...} }`); ignored otherwise.
    #[serde(default, rename = "x-anchors")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub anchors: Option<serde::de::IgnoredAny>,
    /// How the scenario's manager runs daemons.
    #[serde(default)]
    pub manager: ManagerSpec,
    /// Deadline for the whole scenario, in milliseconds.
    #[serde(default = "default_scenario_timeout")]
    pub timeout_ms: u64,
    /// Runs again after a failure, up to this many times (at most 10): a scenario that
    /// passes on a retry is reported FLAKY, not failed. `harness run --retries N` overrides
    /// it. Example: `retries: 2`.
    #[serde(default)]
    pub retries: Option<crate::bounded::AtMost<{ crate::bounded::MAX_RETRIES }>>,
    /// The daemons the scenario manages.
    #[serde(default)]
    pub daemons: Vec<DaemonSpec>,
    /// Steps, run in order; the first failure ends the scenario.
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
    /// Manager events that must not happen at any time during the scenario, under any of
    /// its managers: checked once the steps have passed, over every event of the run
    /// (`wait_event` and `expect_no_event` only see events from their own start).
    /// Example: `expect_never: [{ event: supervisor_peer_refused }, { event: restarted, daemon: d1 }]`.
    #[serde(default)]
    #[schemars(with = "Vec<NeverEvent>")]
    pub expect_never: Vec<Spanned<NeverEvent>>,
}

/// One entry of `expect_never`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeverEvent {
    /// The event.
    pub event: EventKind,
    /// About this daemon only; about any daemon when absent.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub daemon: Option<Spanned<String>>,
}

fn default_scenario_timeout() -> u64 {
    30_000
}

fn all_targets() -> Vec<Target> {
    vec![Target::Mock, Target::Real]
}

/// Host capabilities a scenario may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Requirement {
    /// Running as root.
    Root,
    /// `/dev/fuse`.
    Fuse,
    /// The kernel's erofs.
    Erofs,
    /// `mkfs.erofs` on PATH.
    MkfsErofs,
    /// erofs over fscache in on-demand mode (probed with an erofs mount with `fsid=`).
    Fscache,
}

impl From<Requirement> for host_facts::Requirement {
    fn from(r: Requirement) -> Self {
        use host_facts::Requirement as H;
        match r {
            Requirement::Root => H::Root,
            Requirement::Fuse => H::Fuse,
            Requirement::Erofs => H::Erofs,
            Requirement::MkfsErofs => H::MkfsErofs,
            Requirement::Fscache => H::Cachefiles,
        }
    }
}

/// What daemons run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// mock-nydusd (the harness binary itself).
    Mock,
    /// A real nydusd given with `--nydusd`.
    Real,
}

/// The manager of the scenario's daemons.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerSpec {
    /// What the manager does when a daemon dies.
    #[serde(default)]
    pub recover_policy: RecoverPolicy,
    /// fusedev or fscache: the driver of every daemon of the scenario.
    #[serde(default)]
    pub fs_driver: FsDriver,
    /// How long the socket may take to appear (default 5000).
    #[serde(default = "default_socket_ms")]
    pub socket_timeout_ms: u64,
    /// How long a state wait may take (default 5000).
    #[serde(default = "default_socket_ms")]
    pub state_timeout_ms: u64,
    /// How long one API request may take (default 5000).
    #[serde(default = "default_socket_ms")]
    pub request_timeout_ms: u64,
    /// How long a supervisor transfer may take (default 5000).
    #[serde(default = "default_socket_ms")]
    pub supervisor_timeout_ms: u64,
    /// How long a process may take to exit before SIGKILL follows (default 10000).
    #[serde(default = "default_exit_timeout_ms")]
    pub exit_timeout_ms: u64,
    /// How many times a restart or failover is tried before `recovery_failed` (default 3).
    #[serde(default = "default_recovery_attempts")]
    pub recovery_attempts: std::num::NonZeroU32,
    /// The gap before a recovery's second attempt; it doubles after each (default 100).
    #[serde(default = "default_recovery_backoff_ms")]
    pub recovery_backoff_ms: u64,
}

impl Default for ManagerSpec {
    fn default() -> Self {
        Self {
            recover_policy: RecoverPolicy::None,
            fs_driver: FsDriver::Fusedev,
            socket_timeout_ms: default_socket_ms(),
            state_timeout_ms: default_socket_ms(),
            request_timeout_ms: default_socket_ms(),
            supervisor_timeout_ms: default_socket_ms(),
            exit_timeout_ms: default_exit_timeout_ms(),
            recovery_attempts: default_recovery_attempts(),
            recovery_backoff_ms: default_recovery_backoff_ms(),
        }
    }
}

fn default_socket_ms() -> u64 {
    5_000
}

fn default_exit_timeout_ms() -> u64 {
    10_000
}

fn default_recovery_attempts() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(daemon_core::manager::RecoveryRetry::default().attempts)
        .unwrap_or(std::num::NonZeroU32::MIN)
}

fn default_recovery_backoff_ms() -> u64 {
    daemon_core::manager::RecoveryRetry::default().backoff.as_millis() as u64
}

/// A daemon of the topology.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// Name used by steps; also the daemon id (1-64 of `[A-Za-z0-9_.-]`, not `.` or `..`).
    #[schemars(with = "Id")]
    pub id: Spanned<String>,
    /// `dedicated` (one instance, mounted by nydusd from argv) or `shared`.
    #[serde(default)]
    pub mode: Mode,
    /// `--thread-num`.
    #[serde(default)]
    pub thread_num: u32,
    /// Give the daemon a supervisor socket (implied by the failover policy).
    #[serde(default)]
    pub supervisor: bool,
    /// The mock's script for every process of this daemon (mock target only).
    #[serde(default)]
    pub script: Option<mock_nydusd::script::Script>,
    /// The mock's script as a file of its own, relative to the scenario file's directory
    /// (not absolute, no `..`): for scripts too large to sit in a scenario file, such as
    /// the one `harness replay` writes for a recorded session. Not with `script`.
    #[serde(default)]
    #[schemars(with = "Option<HostPath>")]
    pub script_file: Option<Spanned<String>>,
    /// Mount a real FUSE session (mock target; add `requires: [root, fuse]`).
    #[serde(default)]
    pub fuse: bool,
    /// `--failover-policy`: what a successor does about FUSE requests the dead daemon
    /// read but never answered (nydusd's default, `resend`, when absent).
    #[serde(default)]
    pub failover_policy: Option<nydusd_api::PendingRequestPolicy>,
    /// RAFS instances; a dedicated daemon's first one is mounted from its command line.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
}

/// A RAFS instance of a daemon.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Snapshot id (the instance key; `/<snapshot>` inside a shared daemon; 1-64 of
    /// `[A-Za-z0-9_.-]`, not `.` or `..`).
    #[schemars(with = "Id")]
    pub snapshot: Spanned<String>,
    /// Instance configuration (JSON text); a localfs backend by default.
    #[serde(default)]
    pub config: Option<String>,
    /// fscache only: the blob-cache domain (erofs `domain_id`) the instance's bootstrap is
    /// bound in; instances naming the same domain share it. Default: a domain of its own,
    /// named like its fsid, as the snapshotter binds without domain sharing (1-64 of
    /// `[A-Za-z0-9_.-]`, not `.` or `..`).
    #[serde(default)]
    #[schemars(with = "Option<Id>")]
    pub domain: Option<Spanned<String>>,
    /// Bytes of filler added to the configuration, to make the daemon's saved state large
    /// (for example beyond nydusd's 32 KiB first read on takeover); at most 16 MiB.
    #[serde(default)]
    pub padding: crate::bounded::AtMost<{ crate::bounded::MAX_PADDING }>,
    /// Files the mock serves for this instance over FUSE: a path inside the instance (no
    /// `..`, `.` or empty components, no NUL) and its text, or `{size: N}` for N bytes of a
    /// fixed pattern.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, FileSpec>")]
    #[schemars(extend("propertyNames" = { "pattern": INSTANCE_PATH_PATTERN }))]
    pub tree: Tree,
}
