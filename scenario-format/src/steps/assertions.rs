//! Steps that only look: journals, the store, mounts.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Declared, Invalid, StepArgs};
use crate::fields::HostPath;

/// One expected journal entry; every given field must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalPattern {
    /// `event` (`request`, `state`, `script`, `signal`, ...).
    #[serde(default)]
    pub event: Option<String>,
    /// Request method.
    #[serde(default)]
    pub method: Option<String>,
    /// Request path.
    #[serde(default)]
    pub path: Option<String>,
    /// Reply status.
    #[serde(default)]
    pub status: Option<u16>,
    /// State change target.
    #[serde(default)]
    pub to: Option<String>,
}

/// `expect_journal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectJournalStep {
    /// Only entries of this daemon's processes (all daemons when absent).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub daemon: Option<Spanned<String>>,
    /// The ordered subsequence.
    #[serde(default)]
    pub sequence: Vec<JournalPattern>,
    /// Entries matching this pattern must not appear at all.
    #[serde(default)]
    pub absent: Vec<JournalPattern>,
    /// Wait up to this long for the sequence to appear (a step of another lane is on its
    /// way to the daemon); `absent` is checked once it has. Absent: checked once, now.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `expect_store`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectStoreStep {
    /// Daemon ids, any order.
    #[serde(default)]
    pub daemons: Option<Vec<String>>,
    /// Snapshot ids, in sequence order.
    #[serde(default)]
    pub instances: Option<Vec<String>>,
}

/// `expect_mounted`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectMountedStep {
    /// A host path relative to the scenario's root (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// Whether it must be a mountpoint.
    pub mounted: bool,
}

/// The journal step names a daemon only when it is about one.
impl StepArgs for ExpectJournalStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        self.daemon.as_ref()
    }
}

impl StepArgs for ExpectStoreStep {}

impl StepArgs for ExpectMountedStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }
}

/// `expect_fds`: the session fds the manager holds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectFdsStep {
    /// How many saved states (each with its session fd) the manager's supervisors and
    /// their transfers hold: one per daemon whose state was saved; a superseded one that
    /// lingers after a failover or upgrade makes more (snapshotter PR #783).
    pub supervisor_held: usize,
}

/// `expect_fuse_connection`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectFuseConnectionStep {
    /// A path on a FUSE mount (its mountpoint or below), relative to the scenario's root
    /// (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// Whether its connection answers (`true`), or is gone or aborted (`false`: the
    /// kernel answers ENOTCONN or ECONNABORTED).
    pub alive: bool,
}

/// `expect_instance_files`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectInstanceFilesStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// A snapshot declared in the daemon's `instances`, mounted.
    #[schemars(with = "String")]
    pub snapshot: Spanned<String>,
}

impl StepArgs for ExpectInstanceFilesStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn check(&self, declared: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::manager::check_declared(declared, &self.daemon, &self.snapshot)
    }
}

impl StepArgs for ExpectFdsStep {}

impl StepArgs for ExpectFuseConnectionStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }
}
