//! One nydusd daemon: its persisted state, its process, and the API calls made to it
//! (Go `pkg/daemon.Daemon`).

mod api_calls;
pub mod command;
mod error;
pub mod id;
mod instances;
mod last_words;
pub mod process;
pub mod record;
mod signals;
mod waits;

pub use error::{DaemonError, error_chain};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::api::{BuildTimeInfo, DaemonState, NydusdClient};
use crate::layout::Layout;
use crate::wait::Timeouts;
use command::{CommandInputs, NydusdCommand};
use process::{NydusdProcess, SpawnSpec};
pub use record::{DaemonMode, DaemonRecord, FsDriver};

/// The API socket's file name (later ones after hot upgrades are `api1.sock`, ...).
pub const API_SOCKET_FILE_NAME: &str = "api.sock";

/// The longest path a Unix socket may be bound at (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// How to create a daemon (Go's `NewDaemon` options).
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// A fixed id; a fresh one is generated when `None`.
    pub id: Option<String>,
    /// Dedicated or shared.
    pub mode: DaemonMode,
    /// fusedev or fscache.
    pub fs_driver: FsDriver,
    /// Host mountpoint; defaults to `<root>/mnt` for shared daemons.
    pub mountpoint: Option<PathBuf>,
    /// `--log-level`; `info` when empty.
    pub log_level: String,
    /// Log to stdout instead of `<logs>/<id>/nydusd.log`.
    pub log_to_stdout: bool,
    /// `--thread-num`.
    pub thread_num: u32,
    /// `--failover-policy` (fusedev only).
    pub failover_policy: Option<nydusd_api::PendingRequestPolicy>,
    /// Give the daemon a supervisor socket at `<root>/supervisor/<id>.sock`.
    pub supervisor: bool,
    /// Initial reference count.
    pub refs: i32,
}

#[derive(Debug, Default)]
struct Observed {
    state: Option<DaemonState>,
    version: Option<BuildTimeInfo>,
}

/// One nydusd daemon.
#[derive(Debug)]
pub struct Daemon {
    states: Mutex<DaemonRecord>,
    observed: Mutex<Observed>,
    client: tokio::sync::Mutex<Option<NydusdClient>>,
    process: Mutex<Option<std::sync::Arc<NydusdProcess>>>,
    refs: AtomicI32,
    timeouts: Timeouts,
    instances: crate::rafs::RafsCache,
    supervisor: Mutex<Option<std::sync::Arc<crate::supervisor::Supervisor>>>,
    observer: Mutex<Option<crate::api::ExchangeObserver>>,
    reply_limit: std::sync::atomic::AtomicUsize,
    /// Where the current process's output and log stood at its spawn.
    output_marks: Mutex<last_words::OutputMarks>,
}

impl Daemon {
    /// Creates a daemon under `layout`, making its socket, config and log directories.
    pub fn create(layout: &Layout, options: DaemonOptions, timeouts: Timeouts) -> Result<Self, DaemonError> {
        let id = options.id.unwrap_or_else(id::new_id);
        if !id::is_valid_id(&id) {
            return Err(DaemonError::InvalidId(id));
        }
        let socket_dir = layout.socket_dir().join(&id);
        let config_dir = layout.config_dir().join(&id);
        let log_dir = layout.log_dir().join(&id);
        // Checked before anything is made: the longest API socket it will have (after nine
        // hot upgrades, `api9.sock`) and its supervisor socket.
        let longest = [socket_dir.join("api99.sock"), layout.supervisor_dir().join(format!("{id}.sock"))];
        if let Some(path) = longest.into_iter().find(|p| p.as_os_str().len() > MAX_SOCKET_PATH) {
            let len = path.as_os_str().len();
            return Err(DaemonError::SocketPathTooLong { id, path, len, max: MAX_SOCKET_PATH });
        }
        for dir in [&socket_dir, &config_dir, &log_dir] {
            // 0700: the API socket controls the daemon, and configs may hold registry auth.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| DaemonError::Io {
                id: id.clone(),
                action: "create directory",
                path: dir.clone(),
                source,
            })?;
        }
        let mountpoint = options.mountpoint.unwrap_or_else(|| match options.mode {
            DaemonMode::Shared => layout.shared_mountpoint(),
            DaemonMode::Dedicated => layout.snapshots_dir().join(&id).join("mnt"),
        });
        let supervisor_path =
            if options.supervisor { layout.supervisor_dir().join(format!("{id}.sock")) } else { PathBuf::new() };
        let state = DaemonRecord {
            id,
            process_id: 0,
            api_socket: socket_dir.join(API_SOCKET_FILE_NAME),
            daemon_mode: options.mode,
            fs_driver: options.fs_driver,
            log_dir,
            log_level: if options.log_level.is_empty() { "info".to_owned() } else { options.log_level },
            log_rotation_size: 0,
            log_to_stdout: options.log_to_stdout,
            mountpoint,
            supervisor_path,
            thread_num: options.thread_num,
            failover_policy: match options.fs_driver {
                FsDriver::Fusedev => options.failover_policy,
                FsDriver::Fscache => None,
            },
            config_dir,
            process_start_time: None,
        };
        Ok(Self::from_state(state, options.refs, timeouts))
    }

    /// A daemon object for an existing record (recovery), with no process attached.
    pub fn from_state(state: DaemonRecord, refs: i32, timeouts: Timeouts) -> Self {
        Self {
            states: Mutex::new(state),
            observed: Mutex::new(Observed::default()),
            client: tokio::sync::Mutex::new(None),
            process: Mutex::new(None),
            refs: AtomicI32::new(refs),
            timeouts,
            instances: crate::rafs::RafsCache::default(),
            supervisor: Mutex::new(None),
            observer: Mutex::new(None),
            reply_limit: std::sync::atomic::AtomicUsize::new(crate::api::client::DEFAULT_REPLY_LIMIT),
            output_marks: Mutex::default(),
        }
    }

    /// The last lines the current process wrote to its output and its log file, when it
    /// wrote any (what nydusd says when it exits at once).
    pub fn last_words(&self) -> Option<String> {
        self.output_marks.lock().unwrap_or_else(|e| e.into_inner()).last_words()
    }

    /// Caps the reply bodies of this daemon's client from its next connection on.
    pub fn set_reply_limit(&self, limit: usize) {
        self.reply_limit.store(limit, Ordering::SeqCst);
    }

    /// The cap given to [`Daemon::set_reply_limit`].
    pub fn reply_limit(&self) -> usize {
        self.reply_limit.load(Ordering::SeqCst)
    }

    /// Reports every API exchange of this daemon's client from now on.
    pub fn set_exchange_observer(&self, observer: Option<crate::api::ExchangeObserver>) {
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = observer;
    }

    /// The observer given to [`Daemon::set_exchange_observer`].
    pub fn exchange_observer(&self) -> Option<crate::api::ExchangeObserver> {
        self.observer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The daemon id.
    pub fn id(&self) -> String {
        self.lock_record().id.clone()
    }

    /// The pid of the current process, 0 when none was started.
    pub fn pid(&self) -> u32 {
        self.lock_record().process_id
    }

    /// The API socket path.
    pub fn api_socket(&self) -> PathBuf {
        self.lock_record().api_socket.clone()
    }

    /// The host mountpoint.
    pub fn host_mountpoint(&self) -> PathBuf {
        self.lock_record().mountpoint.clone()
    }

    /// A copy of the persisted state.
    pub fn record(&self) -> DaemonRecord {
        self.lock_record().clone()
    }

    /// Changes the persisted state under the lock.
    pub fn update_record(&self, f: impl FnOnce(&mut DaemonRecord)) {
        f(&mut self.lock_record());
    }

    /// The waits' deadlines.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// +1 on the reference count; returns the new count.
    pub fn inc_ref(&self) -> i32 {
        self.refs.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// -1 on the reference count; returns the new count.
    pub fn dec_ref(&self) -> i32 {
        self.refs.fetch_sub(1, Ordering::SeqCst) - 1
    }

    /// The reference count.
    pub fn get_ref(&self) -> i32 {
        self.refs.load(Ordering::SeqCst)
    }

    fn lock_record(&self) -> std::sync::MutexGuard<'_, DaemonRecord> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current_process(&self) -> Option<std::sync::Arc<NydusdProcess>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last state seen, without I/O (UNKNOWN before the first successful ask).
    pub fn last_observed_state(&self) -> DaemonState {
        self.lock_observed().state.unwrap_or(DaemonState::Unknown)
    }

    /// The build info nydusd last reported.
    pub fn version(&self) -> Option<BuildTimeInfo> {
        self.lock_observed().version.clone()
    }

    /// Forgets the cached state.
    pub fn reset_state(&self) {
        self.lock_observed().state = Some(DaemonState::Unknown);
    }

    /// Starts nydusd (or a compatible binary) with the command line built from this
    /// daemon's state, and records its pid. Any previous process handle is replaced.
    pub async fn spawn(&self, binary: &Path, inputs: &CommandInputs, extra: SpawnExtras) -> Result<u32, DaemonError> {
        let states = self.record();
        let command = NydusdCommand::build(&states, inputs)
            .map_err(|source| DaemonError::Command { id: states.id.clone(), source })?;
        let mut args = command.args();
        args.extend(extra.args);
        let log_file = (!states.log_to_stdout).then(|| states.log_file());
        // The log first: what nydusd prints to stderr on its way out comes after its last log line.
        let marks = last_words::OutputMarks::at_spawn(log_file.into_iter().chain(extra.output.iter().cloned()));
        *self.output_marks.lock().unwrap_or_else(|e| e.into_inner()) = marks;
        let spec = SpawnSpec {
            binary: binary.to_owned(),
            args,
            env: extra.env,
            output: extra.output,
            kill_on_drop: extra.kill_on_drop,
        };
        let process =
            NydusdProcess::spawn(&spec).map_err(|source| DaemonError::Process { id: states.id.clone(), source })?;
        let pid = process.pid();
        if let Some(observer) = &extra.observer {
            observer.spawned(&states.id, pid);
        }
        *self.process.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(process));
        let start_time = host_facts::process::start_time(pid);
        self.update_record(|s| {
            s.process_id = pid;
            s.process_start_time = start_time;
        });
        self.reset_client().await;
        self.reset_state();
        Ok(pid)
    }
}

/// Process options beyond the nydusd command line.
#[derive(Debug, Clone, Default)]
pub struct SpawnExtras {
    /// Arguments appended after nydusd's own (e.g. `--rlimit-nofile 0`, mock flags).
    pub args: Vec<std::ffi::OsString>,
    /// Extra environment.
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// File for stdout and stderr.
    pub output: Option<PathBuf>,
    /// Kill the process when its handle is dropped.
    pub kill_on_drop: bool,
    /// Told of each process right after it is spawned (a test harness keeps a ledger of
    /// what it must end).
    pub observer: Option<SpawnObserver>,
}

/// Told of every daemon process spawned: the daemon's id and the pid.
#[derive(Clone)]
pub struct SpawnObserver(std::sync::Arc<SpawnedFn>);

/// The function behind [`SpawnObserver`].
type SpawnedFn = dyn Fn(&str, u32) + Send + Sync;

impl SpawnObserver {
    /// Calls `f` for each spawn.
    pub fn new(f: impl Fn(&str, u32) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    fn spawned(&self, id: &str, pid: u32) {
        (self.0)(id, pid);
    }
}

impl std::fmt::Debug for SpawnObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpawnObserver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        (dir, layout)
    }

    #[test]
    fn create_lays_out_directories_under_the_root() {
        let (_dir, layout) = layout();
        let d = Daemon::create(
            &layout,
            DaemonOptions { id: Some("d1".into()), mode: DaemonMode::Shared, ..Default::default() },
            Timeouts::default(),
        )
        .unwrap();
        let s = d.record();
        assert_eq!(s.api_socket, layout.socket_dir().join("d1/api.sock"));
        assert_eq!(s.mountpoint, layout.shared_mountpoint());
        assert!(layout.config_dir().join("d1").is_dir());
        assert!(layout.log_dir().join("d1").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(layout.socket_dir().join("d1")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the socket directory is private");
        assert_eq!(s.log_level, "info");
        assert_eq!(d.last_observed_state(), DaemonState::Unknown);
    }

    #[test]
    fn ids_that_escape_the_root_are_rejected_before_touching_the_disk() {
        let (_dir, layout) = layout();
        let err = Daemon::create(
            &layout,
            DaemonOptions { id: Some("../x".into()), ..Default::default() },
            Timeouts::default(),
        )
        .unwrap_err();
        assert!(matches!(err, DaemonError::InvalidId(_)));
        assert!(!layout.socket_dir().exists());
    }

    #[test]
    fn reference_counting() {
        let d = Daemon::from_state(DaemonRecord::default(), 0, Timeouts::default());
        assert_eq!(d.inc_ref(), 1);
        assert_eq!(d.inc_ref(), 2);
        assert_eq!(d.dec_ref(), 1);
        assert_eq!(d.get_ref(), 1);
    }

    #[tokio::test]
    async fn socket_wait_gives_up_at_once_when_the_process_exits() {
        let (_dir, layout) = layout();
        let timeouts = Timeouts { socket: Duration::from_secs(30), ..Default::default() };
        let d = Daemon::create(&layout, DaemonOptions { mode: DaemonMode::Shared, ..Default::default() }, timeouts)
            .unwrap();
        // `false` ignores its arguments and exits 1 without creating a socket.
        d.spawn(Path::new("false"), &CommandInputs::default(), SpawnExtras::default()).await.unwrap();
        let started = std::time::Instant::now();
        let err = d.client().await.unwrap_err();
        assert!(matches!(err, DaemonError::SocketTimeout { exited: Some(_), .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn socket_wait_for_a_recovered_daemon_stops_when_its_recorded_process_is_gone() {
        let (_dir, layout) = layout();
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = sleeper.id();
        let mut state = Daemon::create(&layout, DaemonOptions::default(), Timeouts::default()).unwrap().record();
        state.process_id = pid;
        state.process_start_time = host_facts::process::start_time(pid);
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        let timeouts = Timeouts { socket: Duration::from_secs(2), ..Default::default() };
        let recovered = Daemon::from_state(state, 0, timeouts);
        let err = recovered.client().await.unwrap_err();
        // Before the fix this waited the whole socket timeout and reported no exit.
        assert!(matches!(err, DaemonError::SocketTimeout { exited: Some(_), .. }), "{err}");
    }

    #[tokio::test]
    async fn state_wait_ends_when_the_process_is_gone() {
        let (_dir, layout) = layout();
        let timeouts =
            Timeouts { socket: Duration::from_millis(50), state: Duration::from_secs(30), ..Default::default() };
        let d = Daemon::create(&layout, DaemonOptions { mode: DaemonMode::Shared, ..Default::default() }, timeouts)
            .unwrap();
        d.spawn(Path::new("false"), &CommandInputs::default(), SpawnExtras::default()).await.unwrap();
        d.wait_child().await;
        let started = std::time::Instant::now();
        let err = d.wait_until_state(DaemonState::Running).await.unwrap_err();
        // Before the fix this retried until the 30 s deadline.
        assert!(started.elapsed() < Duration::from_secs(30), "{err}");
        assert!(error_chain(&err).contains("the process has exited"), "{err}");
    }

    #[tokio::test]
    async fn state_wait_reports_the_last_error_on_timeout() {
        let (_dir, layout) = layout();
        let timeouts =
            Timeouts { socket: Duration::from_millis(20), state: Duration::from_millis(20), ..Default::default() };
        let d = Daemon::create(&layout, DaemonOptions::default(), timeouts).unwrap();
        let err = d.wait_until_state(DaemonState::Running).await.unwrap_err();
        match err {
            DaemonError::StateTimeout { expected, last_observed, last_error, .. } => {
                assert_eq!(expected, DaemonState::Running);
                assert_eq!(last_observed, DaemonState::Unknown);
                assert!(last_error.unwrap().contains("not ready"));
            }
            other => panic!("unexpected {other}"),
        }
    }
}
