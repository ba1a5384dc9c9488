//! Steps through the manager: instances, events, recovery, upgrade, destroy.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Declared, Invalid, StepArgs};
use crate::fields::{EventKind, ExpectedError};

/// `mount_instance` / `umount_instance`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// A snapshot declared in the daemon's `instances`.
    #[schemars(with = "String")]
    pub snapshot: Spanned<String>,
    /// The step must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
    /// Success and failure both pass (random fault schedules, where later steps such as
    /// `expect_consistent` judge the outcome); the outcome goes into the journal.
    #[serde(default)]
    pub may_fail: bool,
}

/// `wait_event`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitEventStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Which event.
    pub event: EventKind,
    /// Deadline in milliseconds.
    #[serde(default = "default_event_ms")]
    pub timeout_ms: u64,
}

fn default_event_ms() -> u64 {
    10_000
}

/// `restart_manager`: what recovery must report (lists of daemon ids; unchecked if absent).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartManagerStep {
    /// Found running and watched again.
    #[serde(default)]
    pub live: Option<Vec<String>>,
    /// Found dead and started again.
    #[serde(default)]
    pub restarted: Option<Vec<String>>,
    /// Alive and answering but not RUNNING, left alone.
    #[serde(default)]
    pub not_running: Option<Vec<String>>,
    /// Stopped by a signal (SIGSTOP): left alone with its mounts, watched, and settled
    /// once it runs again (`resumed`).
    #[serde(default)]
    pub frozen: Option<Vec<String>>,
    /// Recovery failed.
    #[serde(default)]
    pub failed: Option<Vec<String>>,
}

/// `upgrade`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeStep {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// The git commit the new build reports (40 hex digits; mock target).
    #[serde(default = "default_next_build")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{40}$"))]
    pub git_commit: String,
    /// The step must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

fn default_next_build() -> String {
    "0123456789abcdef0123456789abcdef01234567".to_owned()
}

/// `mount_concurrently`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountConcurrentlyStep {
    /// Daemon id (shared).
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// A snapshot declared in the daemon's `instances`.
    #[schemars(with = "String")]
    pub snapshot: Spanned<String>,
    /// How many mounts race (at most 1024).
    pub count: crate::bounded::AtMost<{ crate::bounded::MAX_CONCURRENT }>,
    /// How many must succeed (the rest must fail).
    #[serde(default = "one")]
    pub successes: u32,
}

fn one() -> u32 {
    1
}

/// A declared instance of the daemon a step names, or where it is not.
fn check_declared(
    declared: &Declared<'_>,
    daemon: &Spanned<String>,
    snapshot: &Spanned<String>,
) -> Result<(), Invalid> {
    let declared = declared.instances_of(&daemon.value);
    if declared.contains(&snapshot.value.as_str()) {
        return Ok(());
    }
    let list = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
    Err(Invalid::at(
        snapshot,
        format!("daemon `{}` declares no instance `{}` (declared instances: {list})", daemon.value, snapshot.value),
    ))
}

impl StepArgs for InstanceStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }

    fn may_fail(&self) -> bool {
        self.may_fail
    }

    fn check(&self, declared: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        check_declared(declared, &self.daemon, &self.snapshot)
    }
}

impl StepArgs for MountConcurrentlyStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn check(&self, declared: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        check_declared(declared, &self.daemon, &self.snapshot)
    }
}

impl StepArgs for WaitEventStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }
}

impl StepArgs for RestartManagerStep {}

impl StepArgs for UpgradeStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }

    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        if self.git_commit.len() == 40 && self.git_commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(());
        }
        Err(Invalid::at(&self.daemon, format!("upgrade git_commit must be 40 hex digits, got {:?}", self.git_commit)))
    }
}
