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

/// `restart_manager`: what recovery must report (lists; each unchecked if absent), and how
/// the new manager is configured.
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
    /// Live daemons moved to the configured binary because they ran another build.
    #[serde(default)]
    pub upgraded: Option<Vec<String>>,
    /// Daemons whose process no record names was killed (the previous manager died while
    /// spawning, destroying or upgrading them).
    #[serde(default)]
    pub strays_killed: Option<Vec<String>>,
    /// Daemons with a process under the root that neither a record nor an intent names,
    /// left running.
    #[serde(default)]
    pub unrecorded_left: Option<Vec<String>>,
    /// Instances (snapshot ids) a live daemon had lost track of, mounted again.
    #[serde(default)]
    pub remounted: Option<Vec<String>>,
    /// Mountpoints a live daemon served that no record names, unmounted.
    #[serde(default)]
    pub unmounted: Option<Vec<String>>,
    /// Instances (snapshot ids) whose configuration directory no record named, removed.
    #[serde(default)]
    pub configs_swept: Option<Vec<String>>,
    /// The new manager's configuration where it differs from the scenario's `manager`
    /// section (and for every manager after it): another fs driver, recover policy or
    /// deadline, as a snapshotter restarted with another configuration.
    #[serde(default)]
    pub manager: Option<ManagerOverrides>,
}

/// Fields of the scenario's `manager` section that `restart_manager` changes; absent
/// ones keep their value.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerOverrides {
    /// What the manager does when a daemon dies.
    #[serde(default)]
    pub recover_policy: Option<crate::model::RecoverPolicy>,
    /// fusedev or fscache: the manager owns daemons of this driver only.
    #[serde(default)]
    pub fs_driver: Option<crate::model::FsDriver>,
    /// How long the socket may take to appear.
    #[serde(default)]
    pub socket_timeout_ms: Option<u64>,
    /// How long a state wait may take.
    #[serde(default)]
    pub state_timeout_ms: Option<u64>,
    /// How long one API request may take.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// How many times a restart or failover is tried before `recovery_failed`.
    #[serde(default)]
    pub recovery_attempts: Option<std::num::NonZeroU32>,
    /// The gap before a recovery's second attempt.
    #[serde(default)]
    pub recovery_backoff_ms: Option<u64>,
}

impl ManagerOverrides {
    /// `spec` with these fields changed.
    pub fn apply(&self, spec: &mut crate::model::ManagerSpec) {
        if let Some(v) = self.recover_policy {
            spec.recover_policy = v;
        }
        if let Some(v) = self.fs_driver {
            spec.fs_driver = v;
        }
        if let Some(v) = self.socket_timeout_ms {
            spec.socket_timeout_ms = v;
        }
        if let Some(v) = self.state_timeout_ms {
            spec.state_timeout_ms = v;
        }
        if let Some(v) = self.request_timeout_ms {
            spec.request_timeout_ms = v;
        }
        if let Some(v) = self.recovery_attempts {
            spec.recovery_attempts = v;
        }
        if let Some(v) = self.recovery_backoff_ms {
            spec.recovery_backoff_ms = v;
        }
    }
}

/// `close_manager`: what the graceful shutdown must report (lists; each unchecked if absent).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseManagerStep {
    /// Unmount every instance first, as the snapshotter's `cleanup_on_close` does.
    #[serde(default)]
    pub cleanup: bool,
    /// Daemons destroyed (shared ones serving nothing; dedicated ones when cleaning up).
    #[serde(default)]
    pub stopped: Option<Vec<String>>,
    /// Daemons left running for the next manager.
    #[serde(default)]
    pub kept: Option<Vec<String>>,
    /// Instances unmounted (snapshot ids).
    #[serde(default)]
    pub unmounted: Option<Vec<String>>,
    /// The step must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

impl StepArgs for CloseManagerStep {
    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }
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
pub(super) fn check_declared(
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
