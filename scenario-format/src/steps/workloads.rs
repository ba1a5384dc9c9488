//! What a container would do: sleep, read and list files, run a reader, mount an image.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Declared, Invalid, StepArgs};
use crate::fields::INSTANCE_PATH_PATTERN;
use crate::fields::{ExpectedError, HostPath};
use crate::tree::{FileSpec, Tree};

/// `sleep`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    /// Milliseconds.
    pub ms: u64,
}

/// `read_file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileStep {
    /// A host path relative to the scenario's root (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// Text the file must contain.
    pub contains: String,
}

/// `list_dir`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDirStep {
    /// A host path relative to the scenario's root (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// Names that must be among the entries.
    #[serde(default)]
    pub contains: Vec<String>,
    /// Names that must not be among the entries (an orphan that should have been swept).
    #[serde(default)]
    pub absent: Vec<String>,
}

/// `remove_file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveFileStep {
    /// A host path relative to the scenario's root (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// The step must fail like this (a file that is not there: `message_contains: No such file`).
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// `corrupt_file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorruptFileStep {
    /// A host path relative to the scenario's root (not absolute, no `..`, no NUL); a
    /// link there is refused, never followed.
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// What the file becomes (default `torn`).
    #[serde(default)]
    pub to: Corruption,
    /// The step must fail like this (a file that is not there: `message_contains: No such file`).
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// What `corrupt_file` leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// Its first half: a write torn by a crash or a full disk.
    #[default]
    Torn,
    /// Nothing: a file created and never written.
    Empty,
    /// The same length of bytes that are neither JSON nor text.
    Garbage,
}

/// `start_reader`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReaderStep {
    /// Name used by `stop_reader`.
    pub name: String,
    /// The file, relative to the scenario's root (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// Expected size (pattern files); 0 accepts any content.
    #[serde(default)]
    pub size: u64,
}

/// `stop_reader`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopReaderStep {
    /// The reader's name.
    pub name: String,
    /// Most failed reads allowed.
    #[serde(default)]
    pub max_failures: u64,
    /// Fewest failed reads expected: a fault that must reach the reader.
    #[serde(default)]
    pub min_failures: u64,
    /// Fewest complete reads expected.
    #[serde(default = "super::daemon::one_u64")]
    pub min_reads: u64,
    /// Longest allowed gap between two completed reads, in ms (unchecked when absent).
    #[serde(default)]
    pub max_stall_ms: Option<u64>,
    /// Whether a read may still be waiting in the kernel when the reader stops.
    #[serde(default)]
    pub stuck: StuckReads,
    /// How long a read in progress at the stop may still take before it counts as stuck,
    /// in ms.
    #[serde(default = "super::daemon::two_thousand")]
    pub stuck_after_ms: u64,
    /// What the reader is promised instead when the kernel did not take the failover
    /// policy of `daemon`'s successor: requests the dead daemon had read were neither
    /// resent nor ended (FUSE_NOTIFY_RESEND needs Linux 6.9). The report notes which case
    /// applied.
    #[serde(default)]
    pub without_resend: Option<WithoutResend>,
}

/// `stop_reader`'s `without_resend`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WithoutResend {
    /// The daemon that failed over; its successor says what the kernel did (a mock's
    /// control socket; for a real nydusd, kernels from 6.9 are taken to resend).
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// Most failed reads allowed.
    #[serde(default)]
    pub max_failures: u64,
    /// Fewest complete reads expected.
    #[serde(default = "super::daemon::one_u64")]
    pub min_reads: u64,
    /// Longest allowed gap between two completed reads, in ms (unchecked when absent).
    #[serde(default)]
    pub max_stall_ms: Option<u64>,
    /// Whether a read may still be waiting in the kernel when the reader stops.
    #[serde(default)]
    pub stuck: StuckReads,
}

/// Whether a reader's read may be stuck in the kernel when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StuckReads {
    /// Every read returned: a stuck one fails the step.
    #[default]
    Forbidden,
    /// A stuck read is reported, and passes.
    Allowed,
    /// One read must be stuck.
    Expected,
}

/// `mount_erofs_image`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountErofsImageStep {
    /// The mountpoint, relative to the scenario's root (created).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// The image's files.
    #[schemars(with = "std::collections::BTreeMap<String, FileSpec>")]
    #[schemars(extend("propertyNames" = { "pattern": INSTANCE_PATH_PATTERN }))]
    pub tree: Tree,
}

impl StepArgs for SleepStep {}

impl StepArgs for ReadFileStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }
}

impl StepArgs for ListDirStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }
}

impl StepArgs for RemoveFileStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }
}

impl StepArgs for CorruptFileStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }
}

impl StepArgs for StartReaderStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)
    }
}

/// A reader's step names a daemon when its promise depends on that daemon's failover.
impl StepArgs for StopReaderStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        self.without_resend.as_ref().map(|w| &w.daemon)
    }

    /// A promise no reader can keep is refused at load time, not failed at run time.
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        if self.min_failures > self.max_failures {
            return Err(Invalid {
                line: 0,
                column: 0,
                message: format!(
                    "stop_reader {}: min_failures {} is over max_failures {}",
                    self.name, self.min_failures, self.max_failures
                ),
            });
        }
        Ok(())
    }
}

impl StepArgs for MountErofsImageStep {
    fn check(&self, _: &Declared<'_>, _: &str) -> Result<(), Invalid> {
        super::check_host_path(&self.path)?;
        for (file, _) in &self.tree.0 {
            if let Some(why) = crate::paths::instance_path_error(&file.value) {
                return Err(Invalid::at(
                    file,
                    format!("file path {:?} of the erofs image {why}: it must stay inside the image", file.value),
                ));
            }
        }
        Ok(())
    }
}
