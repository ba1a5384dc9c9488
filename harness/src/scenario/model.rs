//! The scenario file format, version 1. Documented for users in `scenarios/README.md`.

pub use daemon_core::daemon::{DaemonMode as Mode, FsDriver};
pub use daemon_core::manager::RecoverPolicy;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The only format version this harness reads.
pub const FORMAT_VERSION: u32 = 1;

/// One scenario file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Format version; must be 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Short name, shown in reports.
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

/// Schema of ids used in paths (daemon ids, snapshot ids); the loader checks the same
/// with `daemon_core::daemon::id::is_valid_id`. A `${var}` placeholder is allowed as
/// written, for editors; its value is checked after substitution.
struct Id;

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
const INSTANCE_PATH_PATTERN: &str = r"^/?(?:(?!\.{1,2}(?:/|$))[^/\x00]{1,255}/)*(?!\.{1,2}$)[^/\x00]{1,255}$";

/// Schema of host paths relative to the scenario's root (`paths::host_path_error`).
struct HostPath;

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
struct OneLine;

impl JsonSchema for OneLine {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OneLine".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "one line of text", "type": "string", "pattern": "^[^\\r\\n]*$" })
    }
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
    /// `/dev/cachefiles` (fscache on-demand mode).
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

/// nydusd's `--failover-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailoverPolicySpec {
    /// Leave them.
    None,
    /// Ask the kernel to queue them again (FUSE_NOTIFY_RESEND, Linux 6.9).
    Resend,
    /// Ask the kernel to end them (a sysfs file mainline kernels do not have).
    Flush,
}

impl From<FailoverPolicySpec> for daemon_core::daemon::FailoverPolicy {
    fn from(p: FailoverPolicySpec) -> Self {
        match p {
            FailoverPolicySpec::None => Self::None,
            FailoverPolicySpec::Resend => Self::Resend,
            FailoverPolicySpec::Flush => Self::Flush,
        }
    }
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
    pub failover_policy: Option<FailoverPolicySpec>,
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
    /// Bytes of filler added to the configuration, to make the daemon's saved state large
    /// (for example beyond nydusd's 32 KiB first read on takeover); at most 16 MiB.
    #[serde(default)]
    pub padding: super::bounded::AtMost<{ super::bounded::MAX_PADDING }>,
    /// Files the mock serves for this instance over FUSE: a path inside the instance (no
    /// `..`, `.` or empty components, no NUL) and its text, or `{size: N}` for N bytes of a
    /// fixed pattern.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, FileSpec>")]
    #[schemars(extend("propertyNames" = { "pattern": INSTANCE_PATH_PATTERN }))]
    pub tree: Tree,
}

/// An instance's files, sorted by path, each path with where it was written.
#[derive(Debug, Clone, Default)]
pub struct Tree(pub Vec<(Spanned<String>, FileSpec)>);

impl Tree {
    /// The files, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileSpec)> {
        self.0.iter().map(|(path, file)| (path.value.as_str(), file))
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let files: std::collections::HashMap<Spanned<String>, FileSpec> = Deserialize::deserialize(deserializer)?;
        let mut files: Vec<_> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.value.cmp(&b.0.value));
        Ok(Self(files))
    }
}

/// A file served over FUSE.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum FileSpec {
    /// Text content.
    Text(String),
    /// `size` bytes of the mock's pattern.
    Sized {
        /// Length in bytes, at most 256 MiB.
        size: super::bounded::AtMost<{ super::bounded::MAX_FILE_SIZE }>,
    },
}

/// By hand rather than `untagged`: serde's untagged enums replace the inner error (a size
/// past its bound) with "data did not match any variant", which names nothing.
impl<'de> Deserialize<'de> for FileSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the file's text, or `{ size: N }`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileSpec, E> {
                Ok(FileSpec::Text(text.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileSpec, A::Error> {
                let mut size = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "size" if size.is_none() => size = Some(map.next_value()?),
                        "size" => return Err(serde::de::Error::duplicate_field("size")),
                        other => return Err(serde::de::Error::unknown_field(other, &["size"])),
                    }
                }
                size.map(|size| FileSpec::Sized { size }).ok_or_else(|| serde::de::Error::missing_field("size"))
            }
        }
        deserializer.deserialize_any(Visitor)
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

/// One step. Each is a single-key map, e.g. `- start: { daemon: d1 }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Spawn the daemon's process with the command line built from its state.
    ///
    /// Example: `- start: { daemon: d1 }`
    Start(StartStep),
    /// Wait until the daemon reports a state.
    ///
    /// Example: `- wait_state: { daemon: d1, state: RUNNING, timeout_ms: 2000 }`
    WaitState(WaitStateStep),
    /// Ask once and compare.
    ///
    /// Example: `- expect_state: { daemon: d1, state: RUNNING }`
    ExpectState(ExpectStateStep),
    /// `POST /api/v1/mount`.
    ///
    /// Example: `- mount: { daemon: d1, mountpoint: /a }`
    Mount(MountStep),
    /// `DELETE /api/v1/mount`.
    ///
    /// Example: `- umount: { daemon: d1, mountpoint: /a }`
    Umount(UmountStep),
    /// A lifecycle API call.
    ///
    /// Example: `- api: { daemon: d1, call: start, expect_error: { status: 400 } }`
    Api(ApiStep),
    /// Send a signal to the daemon process.
    ///
    /// Example: `- signal: { daemon: d1, signal: SIGKILL }`
    Signal(SignalStep),
    /// Wait for the process to exit, optionally checking how.
    ///
    /// Example: `- wait_exit: { daemon: d1, status: { signal: SIGKILL } }`
    WaitExit(WaitExitStep),
    /// Send a recording's client side (`harness record`) to the daemon again, in its
    /// connections, pieces and order, and fail on any difference from the recorded replies
    /// (`harness replay` writes such a scenario beside its mock script).
    ///
    /// Example: `- replay_client: { daemon: d1, recording: recording.jsonl, speed: 1.0 }`
    ReplayClient(ReplayClientStep),
    /// Check whether the API socket file exists.
    ///
    /// Example: `- expect_socket: { daemon: d1, present: true }`
    ExpectSocket(ExpectSocketStep),
    /// Check whether the process is alive.
    ///
    /// Example: `- expect_alive: { daemon: d1, alive: false }`
    ExpectAlive(ExpectAliveStep),
    /// Check the set of mounted instances nydusd reports.
    ///
    /// Example: `- expect_mounts: { daemon: d1, mountpoints: [/a] }`
    ExpectMounts(ExpectMountsStep),
    /// Pause.
    ///
    /// Example: `- sleep: { ms: 50 }`
    Sleep(SleepStep),
    /// The manager's StartDaemon: spawn, then socket, monitor, RUNNING, supervisor state.
    ///
    /// Example: `- start_daemon: { daemon: d1 }`
    StartDaemon(DaemonRef),
    /// Mount a declared instance: shared daemons through the API; a dedicated daemon's
    /// instance is recorded (its process mounts it from the command line).
    ///
    /// Example: `- mount_instance: { daemon: d1, snapshot: a }`
    MountInstance(InstanceStep),
    /// Unmount a shared daemon's instance and drop its record.
    ///
    /// Example: `- umount_instance: { daemon: d1, snapshot: a }`
    UmountInstance(InstanceStep),
    /// Wait for a manager event about a daemon.
    ///
    /// Example: `- wait_event: { daemon: d1, event: failed_over, timeout_ms: 5000 }`
    WaitEvent(WaitEventStep),
    /// No such manager event arrives for the daemon within `timeout_ms`.
    ///
    /// Example: `- expect_no_event: { daemon: d1, event: died, timeout_ms: 200 }`
    ExpectNoEvent(WaitEventStep),
    /// Kill the manager (daemons keep running, as when the snapshotter crashes).
    ///
    /// Example: `- kill_manager: {}`
    KillManager(Empty),
    /// Start a new manager on the same root and recover from the store.
    ///
    /// Example: `- restart_manager: { live: [d1] }`
    RestartManager(RestartManagerStep),
    /// Hot upgrade to a build reporting another git commit.
    ///
    /// Example: `- upgrade: { daemon: d1 }`
    Upgrade(UpgradeStep),
    /// The manager's DestroyDaemon.
    ///
    /// Example: `- destroy: { daemon: d1 }`
    Destroy(DaemonRef),
    /// Replace the daemon's mock script: on the running process (control socket) and for
    /// processes started later.
    ///
    /// Example: `- script: { daemon: d1, script: { rules: [{ when: { path: /api/v1/daemon }, then: [hang] }] } }`
    Script(ScriptStep),
    /// The mock journal contains these requests/events, in this order (other entries may
    /// come between them).
    ///
    /// Example: `- expect_journal: { daemon: d1, sequence: [{ method: POST, path: /api/v1/mount }] }`
    ExpectJournal(ExpectJournalStep),
    /// The store holds exactly these daemons and instances.
    ///
    /// Example: `- expect_store: { daemons: [d1], instances: [a] }`
    ExpectStore(ExpectStoreStep),
    /// A host path is (or is not) a mountpoint.
    ///
    /// Example: `- expect_mounted: { path: mnt/d1, mounted: true }`
    ExpectMounted(ExpectMountedStep),
    /// A file's content (through a mountpoint, for example).
    ///
    /// Example: `- read_file: { path: mnt/d1/a/f.txt, contains: hello }`
    ReadFile(ReadFileStep),
    /// A directory's entries.
    ///
    /// Example: `- list_dir: { path: mnt/d1/a, contains: [f.txt] }`
    ListDir(ListDirStep),
    /// Start a process that reads a file over and over (a workload during faults).
    ///
    /// Example: `- start_reader: { name: r, path: mnt/d1/a/f.txt }`
    StartReader(StartReaderStep),
    /// Stop a reader and check what it saw.
    ///
    /// Example: `- stop_reader: { name: r, max_failures: 0 }`
    StopReader(StopReaderStep),
    /// The mock's FUSE session takes READ requests from /dev/fuse and answers none from
    /// now on, as a daemon dying in the middle of serving them; the step waits until
    /// `until_held` reads are held (a reader must be reading). Mock only.
    ///
    /// Example: `- hold_fuse_reads: { daemon: d1, until_held: 1 }`
    HoldFuseReads(HoldFuseReadsStep),
    /// Build an erofs image of `tree` with mkfs.erofs and mount it read-only at `path`:
    /// from the file where the kernel can (Linux 6.12), else through a loop device. The
    /// report notes which. Needs root, erofs and mkfs.erofs.
    ///
    /// Example: `- mount_erofs_image: { path: img, tree: { etc/os-release: "NAME=x\n" } }`
    MountErofsImage(MountErofsImageStep),
    /// Mount one instance from `count` tasks at once: exactly `successes` must succeed.
    ///
    /// Example: `- mount_concurrently: { daemon: d1, snapshot: a, count: 8, successes: 1 }`
    MountConcurrently(MountConcurrentlyStep),
    /// No process, mount or socket of the scenario survives beyond what its manager manages.
    ///
    /// Example: `- expect_no_leaks: {}`
    ExpectNoLeaks(Empty),
    /// The daemon is RUNNING and serves exactly the instances the store records for it.
    ///
    /// Example: `- expect_consistent: { daemon: d1 }`
    ExpectConsistent(DaemonRef),
    /// Go's DeleteDaemon alone: the record and cache entry go, the monitor is not told
    /// (how a death event for an unknown daemon arises).
    ///
    /// Example: `- forget_daemon: { daemon: d1 }`
    ForgetDaemon(DaemonRef),
    /// The harness, a process other than the daemon, connects to the daemon's supervisor
    /// socket (retrying for up to 3 s until one listens), as an intruder planting or taking
    /// a FUSE fd would, and waits up to 1 s for the supervisor to close the connection.
    ///
    /// Example: `- intrude_supervisor: { daemon: d1 }`
    IntrudeSupervisor(DaemonRef),
}

/// A step with no fields: `- kill_manager: {}`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A step naming one daemon.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonRef {
    /// Daemon id.
    #[schemars(with = "String")]
    pub daemon: Spanned<String>,
    /// The step must fail like this.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

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
    /// Fewest complete reads expected.
    #[serde(default = "one_u64")]
    pub min_reads: u64,
    /// Longest allowed gap between two completed reads, in ms (unchecked when absent).
    #[serde(default)]
    pub max_stall_ms: Option<u64>,
    /// Whether a read may still be waiting in the kernel when the reader stops.
    #[serde(default)]
    pub stuck: StuckReads,
    /// How long a read in progress at the stop may still take before it counts as stuck,
    /// in ms.
    #[serde(default = "two_thousand")]
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
    #[serde(default = "one_u64")]
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

fn one_u64() -> u64 {
    1
}

fn two_thousand() -> u64 {
    2_000
}

/// `list_dir`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDirStep {
    /// A host path relative to the scenario's root (not absolute, no `..`, no NUL).
    #[schemars(with = "HostPath")]
    pub path: Spanned<String>,
    /// Names that must be among the entries.
    pub contains: Vec<String>,
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
    pub count: super::bounded::AtMost<{ super::bounded::MAX_CONCURRENT }>,
    /// How many must succeed (the rest must fail).
    #[serde(default = "one")]
    pub successes: u32,
}

fn one() -> u32 {
    1
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

/// `sleep`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    /// Milliseconds.
    pub ms: u64,
}
