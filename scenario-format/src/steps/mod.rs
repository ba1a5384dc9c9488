//! The steps of the format. Each is an args struct in the file of its family, beside the
//! runner's code for it in the file of the same name (`harness/src/runner/steps/`), and one
//! entry in the list below: [`for_each_step!`] makes the [`Step`] enum here (its keyword,
//! its doc, which is the schema's and the editor's, written once) and the runner's
//! dispatch and `explain`. What a step's fields say beyond their types (paths that must
//! stay inside the root, the instances it names, an embedded script) each args type
//! checks itself ([`StepArgs::check`]), so the loader has no per-step code.
//!
//! * [`daemon`]: one daemon's process and API, and the mock's sockets.
//! * [`manager`]: the manager's operations and events.
//! * [`assertions`]: steps that only look.
//! * [`workloads`]: what a container would do.
//! * [`groups`]: steps that run steps beside the scenario's own: `background`, `join`,
//!   `concurrently`.

pub mod assertions;
pub mod daemon;
pub mod groups;
pub mod manager;
pub mod workloads;

pub use assertions::*;
pub use daemon::*;
pub use groups::*;
pub use manager::*;
pub use workloads::*;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::fields::ExpectedError;

/// The one list of steps, by family: each step's doc (with its example), its variant, the
/// type of its fields and its keyword. `for_each_step!(m)` expands to `m! { list }`; the
/// [`Step`] enum is made from it here, and the runner's dispatch there.
#[macro_export]
macro_rules! for_each_step {
    ($callback:ident) => {
        $callback! {
            daemon: [
                /// Spawn the daemon's process with the command line built from its state.
                ///
                /// Example: `- start: { daemon: d1 }`
                Start(StartStep) = "start",
                /// The manager's StartDaemon: spawn, then socket, monitor, RUNNING, supervisor state.
                ///
                /// Example: `- start_daemon: { daemon: d1 }`
                StartDaemon(DaemonRef) = "start_daemon",
                /// Wait until the daemon reports a state.
                ///
                /// Example: `- wait_state: { daemon: d1, state: RUNNING, timeout_ms: 2000 }`
                WaitState(WaitStateStep) = "wait_state",
                /// Ask once and compare.
                ///
                /// Example: `- expect_state: { daemon: d1, state: RUNNING }`
                ExpectState(ExpectStateStep) = "expect_state",
                /// `POST /api/v1/mount`.
                ///
                /// Example: `- mount: { daemon: d1, mountpoint: /a }`
                Mount(MountStep) = "mount",
                /// `DELETE /api/v1/mount`.
                ///
                /// Example: `- umount: { daemon: d1, mountpoint: /a }`
                Umount(UmountStep) = "umount",
                /// A lifecycle API call.
                ///
                /// Example: `- api: { daemon: d1, call: start, expect_error: { status: 400 } }`
                Api(ApiStep) = "api",
                /// Send a signal to the daemon process.
                ///
                /// Example: `- signal: { daemon: d1, signal: SIGKILL }`
                Signal(SignalStep) = "signal",
                /// Wait for the process to exit, optionally checking how.
                ///
                /// Example: `- wait_exit: { daemon: d1, status: { signal: SIGKILL } }`
                WaitExit(WaitExitStep) = "wait_exit",
                /// Check whether the API socket file exists.
                ///
                /// Example: `- expect_socket: { daemon: d1, present: true }`
                ExpectSocket(ExpectSocketStep) = "expect_socket",
                /// Check whether the process is alive.
                ///
                /// Example: `- expect_alive: { daemon: d1, alive: false }`
                ExpectAlive(ExpectAliveStep) = "expect_alive",
                /// Check the set of mounted instances nydusd reports.
                ///
                /// Example: `- expect_mounts: { daemon: d1, mountpoints: [/a] }`
                ExpectMounts(ExpectMountsStep) = "expect_mounts",
                /// Replace the daemon's mock script: on the running process (control socket) and for
                /// processes started later.
                ///
                /// Example: `- script: { daemon: d1, script: { rules: [{ when: { path: /api/v1/daemon }, then: [hang] }] } }`
                Script(ScriptStep) = "script",
                /// The harness, a process other than the daemon, connects to the daemon's supervisor
                /// socket (retrying for up to 3 s until one listens), as an intruder planting or taking
                /// a FUSE fd would, and waits up to 1 s for the supervisor to close the connection.
                ///
                /// Example: `- intrude_supervisor: { daemon: d1 }`
                IntrudeSupervisor(DaemonRef) = "intrude_supervisor",
                /// Send a recording's client side (`harness record`) to the daemon again, in its
                /// connections, pieces and order, and fail on any difference from the recorded replies
                /// (`harness replay` writes such a scenario beside its mock script).
                ///
                /// Example: `- replay_client: { daemon: d1, recording: recording.jsonl, speed: 1.0 }`
                ReplayClient(ReplayClientStep) = "replay_client",
                /// The mock's FUSE session takes READ requests from /dev/fuse and answers none from
                /// now on, as a daemon dying in the middle of serving them; the step waits until
                /// `until_held` reads are held (a reader must be reading). Mock only.
                ///
                /// Example: `- hold_fuse_reads: { daemon: d1, until_held: 1 }`
                HoldFuseReads(HoldFuseReadsStep) = "hold_fuse_reads",
            ],
            manager: [
                /// Mount a declared instance: shared daemons through the API; a dedicated daemon's
                /// instance is recorded (its process mounts it from the command line).
                ///
                /// Example: `- mount_instance: { daemon: d1, snapshot: a }`
                MountInstance(InstanceStep) = "mount_instance",
                /// Unmount a shared daemon's instance and drop its record.
                ///
                /// Example: `- umount_instance: { daemon: d1, snapshot: a }`
                UmountInstance(InstanceStep) = "umount_instance",
                /// Mount one instance from `count` tasks at once: exactly `successes` must succeed.
                ///
                /// Example: `- mount_concurrently: { daemon: d1, snapshot: a, count: 8, successes: 1 }`
                MountConcurrently(MountConcurrentlyStep) = "mount_concurrently",
                /// Wait for a manager event about a daemon.
                ///
                /// Example: `- wait_event: { daemon: d1, event: failed_over, timeout_ms: 5000 }`
                WaitEvent(WaitEventStep) = "wait_event",
                /// No such manager event arrives for the daemon within `timeout_ms`.
                ///
                /// Example: `- expect_no_event: { daemon: d1, event: died, timeout_ms: 200 }`
                ExpectNoEvent(WaitEventStep) = "expect_no_event",
                /// Kill the manager (daemons keep running, as when the snapshotter crashes).
                ///
                /// Example: `- kill_manager: {}`
                KillManager(Empty) = "kill_manager",
                /// Shut the manager down gracefully, as the snapshotter's `Close`: unmount every
                /// instance when `cleanup`, destroy each shared daemon that serves nothing, end the
                /// manager's tasks; daemons that serve instances keep running.
                ///
                /// Example: `- close_manager: { stopped: [d1], kept: [] }`
                CloseManager(CloseManagerStep) = "close_manager",
                /// Start a new manager on the same root and recover from the store.
                ///
                /// Example: `- restart_manager: { live: [d1] }`
                RestartManager(RestartManagerStep) = "restart_manager",
                /// Hot upgrade to a build reporting another git commit.
                ///
                /// Example: `- upgrade: { daemon: d1 }`
                Upgrade(UpgradeStep) = "upgrade",
                /// The manager's DestroyDaemon.
                ///
                /// Example: `- destroy: { daemon: d1 }`
                Destroy(DaemonRef) = "destroy",
                /// Go's DeleteDaemon alone: the record and cache entry go, the monitor is not told
                /// (how a death event for an unknown daemon arises).
                ///
                /// Example: `- forget_daemon: { daemon: d1 }`
                ForgetDaemon(DaemonRef) = "forget_daemon",
            ],
            assertions: [
                /// The mock journal contains these requests/events, in this order (other entries may
                /// come between them).
                ///
                /// Example: `- expect_journal: { daemon: d1, sequence: [{ method: POST, path: /api/v1/mount }] }`
                ExpectJournal(ExpectJournalStep) = "expect_journal",
                /// The store holds exactly these daemons and instances.
                ///
                /// Example: `- expect_store: { daemons: [d1], instances: [a] }`
                ExpectStore(ExpectStoreStep) = "expect_store",
                /// A host path is (or is not) a mountpoint.
                ///
                /// Example: `- expect_mounted: { path: mnt/d1, mounted: true }`
                ExpectMounted(ExpectMountedStep) = "expect_mounted",
                /// No process, mount or socket of the scenario survives beyond what its manager manages.
                ///
                /// Example: `- expect_no_leaks: {}`
                ExpectNoLeaks(Empty) = "expect_no_leaks",
                /// The daemon is RUNNING and serves exactly the instances the store records for it.
                ///
                /// Example: `- expect_consistent: { daemon: d1 }`
                ExpectConsistent(DaemonRef) = "expect_consistent",
                /// The session fds the manager holds: how many saved states its supervisors keep.
                ///
                /// Example: `- expect_fds: { supervisor_held: 1 }`
                ExpectFds(ExpectFdsStep) = "expect_fds",
                /// Whether the FUSE connection behind a mountpoint answers, or is gone or aborted.
                ///
                /// Example: `- expect_fuse_connection: { path: mnt, alive: true }`
                ExpectFuseConnection(ExpectFuseConnectionStep) = "expect_fuse_connection",
                /// Every file of a mounted instance's `tree`, read through its mountpoint (FUSE,
                /// or erofs over fscache), has exactly the declared content, and nothing else is
                /// there.
                ///
                /// Example: `- expect_instance_files: { daemon: d1, snapshot: a }`
                ExpectInstanceFiles(ExpectInstanceFilesStep) = "expect_instance_files",
            ],
            workloads: [
                /// Pause.
                ///
                /// Example: `- sleep: { ms: 50 }`
                Sleep(SleepStep) = "sleep",
                /// A file's content (through a mountpoint, for example).
                ///
                /// Example: `- read_file: { path: mnt/d1/a/f.txt, contains: hello }`
                ReadFile(ReadFileStep) = "read_file",
                /// A directory's entries: names it must have, names it must not.
                ///
                /// Example: `- list_dir: { path: mnt/d1/a, contains: [f.txt], absent: [g.txt] }`
                ListDir(ListDirStep) = "list_dir",
                /// Remove a file under the root behind the manager's back: a daemon's record or config,
                /// an instance's config, a socket (a damaged root, as a disk or an operator leaves it).
                ///
                /// Example: `- remove_file: { path: config/d1/config.json }`
                RemoveFile(RemoveFileStep) = "remove_file",
                /// Damage a file under the root behind the manager's back: torn to its first half,
                /// emptied, or overwritten with bytes that are not JSON (a record or config after a
                /// crash or a full disk).
                ///
                /// Example: `- corrupt_file: { path: config/d1/config.json, to: torn }`
                CorruptFile(CorruptFileStep) = "corrupt_file",
                /// Start a process that reads a file over and over (a workload during faults).
                ///
                /// Example: `- start_reader: { name: r, path: mnt/d1/a/f.txt }`
                StartReader(StartReaderStep) = "start_reader",
                /// Stop a reader and check what it saw.
                ///
                /// Example: `- stop_reader: { name: r, max_failures: 0 }`
                StopReader(StopReaderStep) = "stop_reader",
                /// Build an erofs image of `tree` with mkfs.erofs and mount it read-only at `path`:
                /// from the file where the kernel can (Linux 6.12), else through a loop device. The
                /// report notes which. Needs root, erofs and mkfs.erofs.
                ///
                /// Example: `- mount_erofs_image: { path: img, tree: { etc/os-release: "NAME=x\n" } }`
                MountErofsImage(MountErofsImageStep) = "mount_erofs_image",
            ],
            groups: [
                /// Start the group's steps and go on at once with the next step: they run beside the
                /// steps after this one until `join` names the group (or the scenario's steps end,
                /// which waits for it too). A failure inside fails the scenario when it happens,
                /// naming the group and the step's line.
                ///
                /// Example: `- background: { name: upgrading, steps: [{ upgrade: { daemon: d1 } }] }`
                Background(BackgroundStep) = "background",
                /// Wait until a background group started earlier has run all its steps.
                ///
                /// Example: `- join: { name: upgrading }`
                Join(JoinStep) = "join",
                /// Run two or more lanes of steps at the same time; the next step starts when all
                /// have ended. The first failure in any lane ends the others and fails the scenario.
                ///
                /// Example: `- concurrently: [[{ upgrade: { daemon: d1 } }], [{ mount_instance: { daemon: d1, snapshot: a } }]]`
                Concurrently(ConcurrentlyStep) = "concurrently",
                /// Run the steps in order, here, and fail when they have not all ended within `ms`
                /// (the steps are cut short then): how long a successful step may take.
                ///
                /// Example: `- within: { ms: 500, steps: [{ start_daemon: { daemon: d1 } }] }`
                Within(WithinStep) = "within",
            ],
        }
    };
}

/// The [`Step`] enum, its keyword and fields by variant, and every keyword, from the list.
macro_rules! step_enum {
    ($($family:ident: [$($(#[$doc:meta])* $variant:ident($args:ty) = $keyword:literal),* $(,)?]),* $(,)?) => {
        /// One step. Each is a single-key map, e.g. `- start: { daemon: d1 }`.
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub enum Step {
            $($( $(#[$doc])* #[serde(rename = $keyword)] #[schemars(title = $keyword)] $variant($args), )*)*
        }

        impl Step {
            /// The step's keyword in scenario files.
            pub fn keyword(&self) -> &'static str {
                match self { $($(Step::$variant(_) => $keyword,)*)* }
            }

            /// The step's fields, as every step's answer what they say.
            pub fn args(&self) -> &dyn StepArgs {
                match self { $($(Step::$variant(s) => s,)*)* }
            }
        }

        /// Every keyword, in the order of the list.
        pub const KEYWORDS: &[&str] = &[$($($keyword,)*)*];
    };
}

for_each_step!(step_enum);

impl Step {
    /// The daemon the step names, if any.
    pub fn daemon(&self) -> Option<&Spanned<String>> {
        self.args().daemon()
    }

    /// How the step must fail, for the steps that can say so.
    pub fn expected_error(&self) -> Option<&ExpectedError> {
        self.args().expected_error()
    }

    /// Whether success and failure both pass.
    pub fn may_fail(&self) -> bool {
        self.args().may_fail()
    }
}

/// What a scenario file says wrong, where (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Invalid {
    /// `message` at the value `at`.
    pub fn at(at: &Spanned<String>, message: String) -> Self {
        Self { line: at.referenced.line(), column: at.referenced.column(), message }
    }
}

/// What a step's fields say about it, whichever step they belong to (`DaemonRef`, for
/// one, is the fields of five).
pub trait StepArgs {
    /// The daemon the step names, if any.
    fn daemon(&self) -> Option<&Spanned<String>> {
        None
    }

    /// How the step must fail, for the steps that can say so.
    fn expected_error(&self) -> Option<&ExpectedError> {
        None
    }

    /// Whether success and failure both pass (`may_fail: true`).
    fn may_fail(&self) -> bool {
        false
    }

    /// What the fields say beyond their types, checked when the file is loaded: paths
    /// that must stay where they belong, instances the scenario must declare, an
    /// embedded script. `origin` names the file in a script's own errors.
    fn check(&self, _declared: &Declared<'_>, _origin: &str) -> Result<(), Invalid> {
        Ok(())
    }
}

/// What a scenario declares that its steps refer to: each daemon's id and the snapshot
/// ids of its instances.
#[derive(Debug, Default)]
pub struct Declared<'a> {
    pub daemons: Vec<(&'a str, Vec<&'a str>)>,
}

impl Declared<'_> {
    /// The instances `daemon` declares (none when it is not declared).
    pub fn instances_of(&self, daemon: &str) -> Vec<&str> {
        self.daemons.iter().filter(|(id, _)| *id == daemon).flat_map(|(_, i)| i.iter().copied()).collect()
    }
}

/// A path relative to the scenario's root that must stay inside it.
pub(crate) fn check_host_path(path: &Spanned<String>) -> Result<(), Invalid> {
    match crate::paths::host_path_error(&path.value) {
        Some(why) => Err(Invalid::at(
            path,
            format!("path {:?} {why}: it must stay inside the scenario's root (relative, without `..`)", path.value),
        )),
        None => Ok(()),
    }
}

/// An embedded mock script, checked as the mock will.
pub(crate) fn check_script(script: &mock_nydusd::script::Script, origin: &str) -> Result<(), Invalid> {
    script.validate(origin).map_err(|e| {
        let (line, column) = e.location.unwrap_or((0, 0));
        let rule = e.rule.map(|r| format!("{r}: ")).unwrap_or_default();
        Invalid { line, column, message: format!("mock script: {rule}{}", e.message) }
    })
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

impl StepArgs for Empty {}

impl StepArgs for DaemonRef {
    fn daemon(&self) -> Option<&Spanned<String>> {
        Some(&self.daemon)
    }

    fn expected_error(&self) -> Option<&ExpectedError> {
        self.expect_error.as_ref()
    }
}

#[cfg(test)]
mod tests {
    /// A keyword is what serde reads: the schema's name for the variant.
    #[test]
    fn every_keyword_is_the_name_scenario_files_use() {
        let schema = serde_json::to_value(schemars::schema_for!(super::Step)).unwrap();
        let mut names: Vec<String> = schema["oneOf"]
            .as_array()
            .expect("Step is a oneOf")
            .iter()
            .filter_map(|v| v["required"][0].as_str().map(str::to_owned))
            .collect();
        let mut keywords: Vec<String> = super::KEYWORDS.iter().map(|k| (*k).to_owned()).collect();
        names.sort();
        keywords.sort();
        assert_eq!(keywords, names);
    }
}

#[cfg(test)]
mod documented {
    /// Every step has its row in the scenario guide's step tables and an example in its
    /// doc (which the schema, and so the editor's hover, shows): a step added without
    /// them fails here.
    #[test]
    fn every_step_has_a_row_in_the_guide_and_an_example() {
        let guide = include_str!("../../../scenarios/README.md");
        let schema = serde_json::to_value(schemars::schema_for!(super::Step)).unwrap();
        for keyword in super::KEYWORDS {
            assert!(guide.contains(&format!("| `{keyword}` |")), "scenarios/README.md has no row for `{keyword}`");
            let branch = schema["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["required"][0] == *keyword)
                .unwrap_or_else(|| panic!("no schema branch for {keyword}"));
            let doc = branch["description"].as_str().unwrap_or_default();
            assert!(doc.contains(&format!("Example: `- {keyword}:")), "the doc of `{keyword}` has no example: {doc:?}");
            assert_eq!(branch["title"], *keyword, "the branch of `{keyword}` is titled with its keyword");
        }
    }
}
