//! One nydusd daemon: its persisted state, its process, and the API calls made to it
//! (Go `pkg/daemon.Daemon`).

pub mod command;
pub mod id;
pub mod process;
pub mod state;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::api::{BuildTimeInfo, ClientError, DaemonState, MountRequest, NydusdClient};
use crate::layout::Layout;
use crate::procfs;
use crate::wait::{Backoff, Timeouts};
use command::{CommandError, CommandInputs, NydusdCommand};
use process::{NydusdProcess, ProcessError, SpawnSpec};
pub use state::{ConfigState, DaemonMode, FailoverPolicy, FsDriver};

/// The API socket's file name (later ones after hot upgrades are `api1.sock`, ...).
pub const API_SOCKET_FILE_NAME: &str = "api.sock";

/// Why a daemon operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An API call failed.
    #[error("daemon {id}: api call failed")]
    Client {
        /// Daemon id.
        id: String,
        /// The client error (boxed: it is large and errors should be cheap to move).
        #[source]
        source: Box<ClientError>,
    },
    /// The API socket did not accept connections in time.
    #[error("daemon {id}: api socket {} not ready after {after:?}{}", socket.display(), exit_note(.exited))]
    SocketTimeout {
        /// Daemon id.
        id: String,
        /// API socket path.
        socket: PathBuf,
        /// How long we waited.
        after: Duration,
        /// Exit status when the process died while we waited.
        exited: Option<String>,
    },
    /// The daemon did not reach a state in time.
    #[error("daemon {id}: state {expected} not reached within {after:?}; last observed {last_observed}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    StateTimeout {
        /// Daemon id.
        id: String,
        /// Wanted state.
        expected: DaemonState,
        /// The last state we saw (UNKNOWN if we could not ask).
        last_observed: DaemonState,
        /// How long we waited.
        after: Duration,
        /// The last error while asking, if the last attempt failed.
        last_error: Option<String>,
    },
    /// The command line could not be built.
    #[error("daemon {id}: cannot build nydusd command line")]
    Command {
        /// Daemon id.
        id: String,
        /// The builder's error.
        #[source]
        source: CommandError,
    },
    /// Spawning or signalling failed.
    #[error("daemon {id}: process error")]
    Process {
        /// Daemon id.
        id: String,
        /// The process error.
        #[source]
        source: ProcessError,
    },
    /// The daemon has no process to act on.
    #[error("daemon {id}: no nydusd process is running")]
    NoProcess {
        /// Daemon id.
        id: String,
    },
    /// A directory or file could not be created or removed.
    #[error("daemon {id}: cannot {action} {}", path.display())]
    Io {
        /// Daemon id.
        id: String,
        /// What we tried.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The id cannot be used in a path.
    #[error("daemon id {0:?} is not usable in a path (allowed: 1-64 of [A-Za-z0-9_.-], not . or ..)")]
    InvalidId(String),
}

fn exit_note(exited: &Option<String>) -> String {
    exited.as_ref().map(|s| format!("; the process exited first ({s})")).unwrap_or_default()
}

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
    pub failover_policy: Option<FailoverPolicy>,
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
    states: Mutex<ConfigState>,
    observed: Mutex<Observed>,
    client: tokio::sync::Mutex<Option<NydusdClient>>,
    process: Mutex<Option<std::sync::Arc<NydusdProcess>>>,
    refs: AtomicI32,
    timeouts: Timeouts,
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
        for dir in [&socket_dir, &config_dir, &log_dir] {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
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
        let state = ConfigState {
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
        };
        Ok(Self::from_state(state, options.refs, timeouts))
    }

    /// A daemon object for an existing record (recovery), with no process attached.
    pub fn from_state(state: ConfigState, refs: i32, timeouts: Timeouts) -> Self {
        Self {
            states: Mutex::new(state),
            observed: Mutex::new(Observed::default()),
            client: tokio::sync::Mutex::new(None),
            process: Mutex::new(None),
            refs: AtomicI32::new(refs),
            timeouts,
        }
    }

    /// The daemon id.
    pub fn id(&self) -> String {
        self.lock_states().id.clone()
    }

    /// The pid of the current process, 0 when none was started.
    pub fn pid(&self) -> u32 {
        self.lock_states().process_id
    }

    /// The API socket path.
    pub fn api_socket(&self) -> PathBuf {
        self.lock_states().api_socket.clone()
    }

    /// The host mountpoint.
    pub fn host_mountpoint(&self) -> PathBuf {
        self.lock_states().mountpoint.clone()
    }

    /// A copy of the persisted state.
    pub fn states(&self) -> ConfigState {
        self.lock_states().clone()
    }

    /// Changes the persisted state under the lock.
    pub fn update_states(&self, f: impl FnOnce(&mut ConfigState)) {
        f(&mut self.lock_states());
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

    fn lock_states(&self) -> std::sync::MutexGuard<'_, ConfigState> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current_process(&self) -> Option<std::sync::Arc<NydusdProcess>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last state seen, without I/O (UNKNOWN before the first successful ask).
    pub fn state(&self) -> DaemonState {
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

    /// Asks nydusd for its state and caches it with the build info; UNKNOWN on failure.
    pub async fn get_state(&self) -> Result<DaemonState, DaemonError> {
        let client = self.client().await?;
        match client.get_daemon_info().await {
            Ok(info) => {
                let mut observed = self.lock_observed();
                observed.state = Some(info.state);
                observed.version = Some(info.version);
                Ok(info.state)
            }
            Err(source) => Err(DaemonError::Client { id: self.id(), source: Box::new(source) }),
        }
    }

    /// Waits until nydusd reports `expected`, for at most [`Timeouts::state`] plus the socket wait.
    pub async fn wait_until_state(&self, expected: DaemonState) -> Result<(), DaemonError> {
        self.wait_until_state_within(expected, self.timeouts.state).await
    }

    /// [`Daemon::wait_until_state`] with an explicit deadline.
    pub async fn wait_until_state_within(&self, expected: DaemonState, within: Duration) -> Result<(), DaemonError> {
        if self.state() == expected {
            return Ok(());
        }
        let mut backoff = Backoff::new(&self.timeouts, within);
        let mut last_error: Option<String>;
        loop {
            match self.get_state().await {
                Ok(state) if state == expected => return Ok(()),
                Ok(_) => last_error = None,
                Err(err) => last_error = Some(error_chain(&err)),
            }
            if !backoff.wait().await {
                return Err(DaemonError::StateTimeout {
                    id: self.id(),
                    expected,
                    last_observed: self.state(),
                    after: within,
                    last_error,
                });
            }
        }
    }

    /// The API client, waiting for the socket to accept connections first if none exists yet.
    ///
    /// Unlike upstream, which only checks that a socket *file* exists, this connects: a
    /// stale socket left by a killed daemon does not count as ready. The wait ends early if
    /// the process exits or is a zombie.
    pub async fn client(&self) -> Result<NydusdClient, DaemonError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let socket = self.api_socket();
        self.wait_for_socket(&socket).await?;
        let client = NydusdClient::new(socket).with_timeout(self.timeouts.request);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn wait_for_socket(&self, socket: &Path) -> Result<(), DaemonError> {
        let mut backoff = Backoff::new(&self.timeouts, self.timeouts.socket);
        loop {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            let exited = match self.current_process() {
                Some(p) if p.has_exited() => {
                    Some(p.wait().await.map(|s| s.to_string()).unwrap_or_else(|| "exited".into()))
                }
                None if self.pid() > 0 && procfs::process_state(self.pid()) == Some('Z') => Some("zombie".into()),
                _ => None,
            };
            if exited.is_some() || !backoff.wait().await {
                return Err(DaemonError::SocketTimeout {
                    id: self.id(),
                    socket: socket.to_owned(),
                    after: self.timeouts.socket,
                    exited,
                });
            }
        }
    }

    /// Drops the cached client, so the next call waits for the socket again.
    pub async fn reset_client(&self) {
        *self.client.lock().await = None;
    }

    /// Starts nydusd (or a compatible binary) with the command line built from this
    /// daemon's state, and records its pid. Any previous process handle is replaced.
    pub async fn spawn(&self, binary: &Path, inputs: &CommandInputs, extra: SpawnExtras) -> Result<u32, DaemonError> {
        let states = self.states();
        let command = NydusdCommand::build(&states, inputs)
            .map_err(|source| DaemonError::Command { id: states.id.clone(), source })?;
        let mut args = command.args();
        args.extend(extra.args);
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
        *self.process.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(process));
        self.update_states(|s| s.process_id = pid);
        self.reset_client().await;
        self.reset_state();
        Ok(pid)
    }

    /// Sends `signal` to the daemon process this object started.
    pub fn signal(&self, signal: Signal) -> Result<(), DaemonError> {
        let process = self.current_process().ok_or_else(|| DaemonError::NoProcess { id: self.id() })?;
        process.signal(signal).map_err(|source| DaemonError::Process { id: self.id(), source })
    }

    /// SIGTERM (Go `Terminate`). A daemon without a process is a no-op.
    pub fn terminate(&self) -> Result<(), DaemonError> {
        match self.signal(Signal::SIGTERM) {
            Err(DaemonError::NoProcess { .. }) => Ok(()),
            other => other,
        }
    }

    /// Whether the process this object started is still alive (not exited, not a zombie).
    pub fn is_alive(&self) -> bool {
        self.current_process().is_some_and(|p| !p.has_exited())
    }

    /// Waits for the process to exit and reaps it; `None` when there is no process.
    pub async fn wait(&self) -> Option<ExitStatus> {
        let process = self.current_process()?;
        process.wait().await
    }

    /// Removes what a dead daemon leaves behind so that a fresh start is not mistaken for
    /// a crash recovery: the API socket file, and the cached client.
    pub async fn clear_vestige(&self) -> Result<(), DaemonError> {
        let socket = self.api_socket();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DaemonError::Io { id: self.id(), action: "remove socket", path: socket, source });
            }
        }
        self.reset_client().await;
        Ok(())
    }

    async fn api<T>(&self, call: impl AsyncFnOnce(NydusdClient) -> Result<T, ClientError>) -> Result<T, DaemonError> {
        let client = self.client().await?;
        call(client).await.map_err(|source| DaemonError::Client { id: self.id(), source: Box::new(source) })
    }

    /// `PUT /api/v1/daemon/start`.
    pub async fn start(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.start().await).await
    }

    /// `PUT /api/v1/daemon/exit`.
    pub async fn exit(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.exit().await).await
    }

    /// `PUT /api/v1/daemon/fuse/takeover`.
    pub async fn takeover(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.takeover().await).await
    }

    /// `PUT /api/v1/daemon/fuse/sendfd`.
    pub async fn send_fd(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.send_fd().await).await
    }

    /// `POST /api/v1/mount` at the in-FUSE path `mountpoint`.
    pub async fn mount(&self, mountpoint: &str, request: &MountRequest) -> Result<(), DaemonError> {
        self.api(async |c| c.mount(mountpoint, request).await).await
    }

    /// `DELETE /api/v1/mount` at the in-FUSE path `mountpoint`.
    pub async fn umount(&self, mountpoint: &str) -> Result<(), DaemonError> {
        self.api(async |c| c.umount(mountpoint).await).await
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
}

/// An error and its sources on one line, for reports.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = d.states();
        assert_eq!(s.api_socket, layout.socket_dir().join("d1/api.sock"));
        assert_eq!(s.mountpoint, layout.shared_mountpoint());
        assert!(layout.config_dir().join("d1").is_dir());
        assert!(layout.log_dir().join("d1").is_dir());
        assert_eq!(s.log_level, "info");
        assert_eq!(d.state(), DaemonState::Unknown);
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
        let d = Daemon::from_state(ConfigState::default(), 0, Timeouts::default());
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
