//! One nydusd daemon: its persisted state, its process, and the API calls made to it
//! (Go `pkg/daemon.Daemon`).

pub mod command;
pub mod id;
mod instances;
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
    /// The process did not exit within the deadline, even after SIGKILL when one was sent
    /// (a process stuck in the kernel, for example in a dead FUSE mount).
    #[error("daemon {id}: pid {pid} still running {after:?} after {signal}")]
    ExitTimeout {
        /// Daemon id.
        id: String,
        /// The process.
        pid: u32,
        /// The wait that ran out.
        after: Duration,
        /// The last signal sent, or "its death was reported" when none was sent.
        signal: String,
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
    /// The pid on record now belongs to another process (or a process we cannot verify).
    #[error("daemon {id}: pid {pid} is not this daemon's nydusd any more ({why}); not signalling it")]
    NotOurProcess {
        /// Daemon id.
        id: String,
        /// The recorded pid.
        pid: u32,
        /// What did not match.
        why: String,
    },
    /// An instance's bootstrap is missing.
    #[error("daemon {id}: no bootstrap for instance {snapshot} under {}", dir.display())]
    NoBootstrap {
        /// Daemon id.
        id: String,
        /// Snapshot id.
        snapshot: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A host mount failed.
    #[error("daemon {id}: mount error")]
    Mount {
        /// Daemon id.
        id: String,
        /// The mount error.
        #[source]
        source: crate::mount::MountError,
    },
    /// A supervisor transfer failed.
    #[error("daemon {id}: supervisor error")]
    Supervisor {
        /// Daemon id.
        id: String,
        /// The supervisor error.
        #[source]
        source: crate::supervisor::SupervisorError,
    },
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
    instances: crate::rafs::RafsCache,
    supervisor: Mutex<Option<std::sync::Arc<crate::supervisor::Supervisor>>>,
    observer: Mutex<Option<crate::api::ExchangeObserver>>,
    reply_limit: std::sync::atomic::AtomicUsize,
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
            process_start_time: None,
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
            instances: crate::rafs::RafsCache::default(),
            supervisor: Mutex::new(None),
            observer: Mutex::new(None),
            reply_limit: std::sync::atomic::AtomicUsize::new(crate::api::client::DEFAULT_REPLY_LIMIT),
        }
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
            // A process that is gone will not reach any state: say so now, not at the deadline.
            let gone = last_error.is_some() && self.pid() > 0 && !self.is_alive();
            if gone || !backoff.wait().await {
                if gone {
                    last_error = last_error.map(|e| format!("{e}; the process has exited"));
                }
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
        let client = NydusdClient::new(socket)
            .with_timeout(self.timeouts.request)
            .with_reply_limit(self.reply_limit())
            .with_observer(self.exchange_observer());
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
                Some(_) => None,
                // A daemon recovered from the store: watch the recorded process itself.
                None if self.pid() > 0 => match self.recorded_process() {
                    Ok(Some(pidfd)) if !pidfd.has_exited() => None,
                    Ok(_) => Some("exited".into()),
                    Err(e) => Some(e.to_string()),
                },
                None => None,
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
        let start_time = host_facts::process::start_time(pid);
        self.update_states(|s| {
            s.process_id = pid;
            s.process_start_time = start_time;
        });
        self.reset_client().await;
        self.reset_state();
        Ok(pid)
    }

    /// Sends `signal` to the daemon process this object started.
    pub fn signal(&self, signal: Signal) -> Result<(), DaemonError> {
        let process = self.current_process().ok_or_else(|| DaemonError::NoProcess { id: self.id() })?;
        process.signal(signal).map_err(|source| DaemonError::Process { id: self.id(), source })
    }

    /// SIGTERM (Go `Terminate`). The process this object started is signalled through its
    /// pidfd; a recorded pid from before a manager restart only after checking that it is
    /// still the same process (its start time, or its command line naming our API socket),
    /// so a recycled pid is never signalled (upstream PR #789). No pid is a no-op.
    pub fn terminate(&self) -> Result<(), DaemonError> {
        self.signal_any(Signal::SIGTERM)
    }

    /// Sends `signal` to the daemon's process, whether this object started it or it was
    /// recovered from the store (with the identity check of [`Daemon::terminate`]).
    pub fn signal_any(&self, signal: Signal) -> Result<(), DaemonError> {
        match self.signal(signal) {
            Err(DaemonError::NoProcess { .. }) => {}
            other => return other,
        }
        let Some(pidfd) = self.recorded_process()? else { return Ok(()) };
        pidfd.send_signal(signal).map(drop).map_err(|e| DaemonError::Process {
            id: self.id(),
            source: ProcessError::Signal { pid: pidfd.pid(), signal, source: e },
        })
    }

    /// A pidfd for the recorded pid if it still names this daemon's nydusd.
    fn recorded_process(&self) -> Result<Option<crate::pidfd::PidFd>, DaemonError> {
        let states = self.states();
        if states.process_id == 0 {
            return Ok(None);
        }
        let pid = states.process_id;
        // Opened first: from here on the pidfd names one process even if the pid is reused,
        // so the identity checked below is the identity signalled.
        let pidfd = match crate::pidfd::PidFd::open(pid) {
            Ok(fd) => fd,
            Err(nix::Error::ESRCH) => return Ok(None),
            Err(e) => {
                return Err(DaemonError::Process { id: states.id, source: ProcessError::PidFd { pid, source: e } });
            }
        };
        let not_ours = |why: String| DaemonError::NotOurProcess { id: states.id.clone(), pid, why };
        match states.process_start_time {
            Some(recorded) => match host_facts::process::start_time(pid) {
                Some(now) if now == recorded => Ok(Some(pidfd)),
                Some(now) => Err(not_ours(format!("started at tick {now}, ours at {recorded}"))),
                None => Ok(None),
            },
            None => {
                let socket = states.api_socket.to_string_lossy().into_owned();
                match host_facts::process::cmdline(pid) {
                    Some(args) if args.iter().any(|a| a == &socket) => Ok(Some(pidfd)),
                    Some(_) => Err(not_ours(format!("its command line does not name {socket}"))),
                    None => Ok(None),
                }
            }
        }
    }

    /// Whether the daemon's process is alive: the one this object started (not exited,
    /// not a zombie), or the recorded one from before a manager restart.
    pub fn is_alive(&self) -> bool {
        match self.current_process() {
            Some(p) => !p.has_exited(),
            None => matches!(self.recorded_process(), Ok(Some(fd)) if !fd.has_exited()),
        }
    }

    /// Waits for the process this object started to exit and reaps it; `None` when there
    /// is no such process.
    pub async fn wait(&self) -> Option<ExitStatus> {
        let process = self.current_process()?;
        process.wait().await
    }

    /// Go `Wait`: waits for the daemon's process to end (reaping it when it is our child,
    /// otherwise watching its pidfd), then, for fusedev, until the host mountpoint is
    /// unmounted, within [`Timeouts::exit`]. Unlike upstream, no lock is held meanwhile,
    /// so state queries on the daemon are not blocked.
    pub async fn wait_for_exit(&self) -> Result<(), DaemonError> {
        self.wait_for_process_exit().await?;
        let states = self.states();
        if states.fs_driver == FsDriver::Fusedev && !states.mountpoint.as_os_str().is_empty() {
            crate::mount::wait_until_unmounted(&states.mountpoint, &self.timeouts, self.timeouts.exit)
                .await
                .map_err(|source| DaemonError::Mount { id: states.id.clone(), source })?;
        }
        Ok(())
    }

    /// Waits for the daemon's process to end, for at most [`Timeouts::exit`], without
    /// waiting for its mount to go: after a crash the FUSE mount stays (failover keeps it on
    /// purpose; restart detaches it). Upstream waits for its own child without a deadline,
    /// so a stopped or hung daemon blocks destroy, restart and failover for ever.
    pub async fn wait_for_process_exit(&self) -> Result<(), DaemonError> {
        self.wait_for_process_exit_after("its death was reported").await
    }

    async fn wait_for_process_exit_after(&self, signal: &str) -> Result<(), DaemonError> {
        let after = self.timeouts.exit;
        let timed_out = |pid: u32| DaemonError::ExitTimeout { id: self.id(), pid, after, signal: signal.to_owned() };
        if let Some(process) = self.current_process() {
            if tokio::time::timeout(after, process.wait()).await.is_err() {
                return Err(timed_out(process.pid()));
            }
        } else if let Ok(Some(pidfd)) = self.recorded_process()
            && tokio::time::timeout(after, pidfd.exited()).await.is_err()
        {
            return Err(timed_out(pidfd.pid()));
        }
        Ok(())
    }

    /// Ends the daemon's process and waits until it is gone (reaped when it is our child):
    /// sends `first` (none: its death was already reported, so it is only waited for),
    /// then SIGKILL when it is still there after [`Timeouts::exit`], as a stopped or hung
    /// daemon ignores SIGTERM. An error only when even SIGKILL did not end it within
    /// another [`Timeouts::exit`]. No process is a no-op.
    pub async fn stop_process(&self, first: Option<Signal>) -> Result<(), DaemonError> {
        let first_name = match first {
            Some(signal) => {
                self.signal_any(signal)?;
                signal.as_str()
            }
            None => "its death was reported",
        };
        match self.wait_for_process_exit_after(first_name).await {
            Err(DaemonError::ExitTimeout { .. }) if first != Some(Signal::SIGKILL) => {
                self.signal_any(Signal::SIGKILL)?;
                self.wait_for_process_exit_after(Signal::SIGKILL.as_str()).await
            }
            other => other,
        }
    }

    /// Removes what a dead daemon leaves behind so that a fresh start is not mistaken for
    /// a crash recovery (nydusd takes "mountpoint still mounted + dead socket" for one):
    /// the host mount (fusedev) or every instance mount (fscache), detached lazily because
    /// a dead FUSE mount may still have open files; the API socket file; the cached client.
    pub async fn clear_vestige(&self) -> Result<(), DaemonError> {
        let states = self.states();
        let mountpoints = match states.fs_driver {
            FsDriver::Fusedev => vec![states.mountpoint.clone()],
            FsDriver::Fscache => self.instances().list_by_seq().into_iter().map(|r| r.mountpoint).collect(),
        };
        for mountpoint in mountpoints.iter().filter(|m| !m.as_os_str().is_empty()) {
            crate::mount::umount_lazy(mountpoint)
                .map_err(|source| DaemonError::Mount { id: states.id.clone(), source })?;
        }
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

impl DaemonError {
    /// Whether the daemon may have carried out the call although it failed (see
    /// [`ClientError::is_ambiguous`]).
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Client { source, .. } if source.is_ambiguous())
    }

    /// The kind of the API call's failure, when an API call failed.
    pub fn client_kind(&self) -> Option<crate::api::ErrorKind> {
        match self {
            Self::Client { source, .. } => Some(source.kind()),
            _ => None,
        }
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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(layout.socket_dir().join("d1")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the socket directory is private");
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
    async fn socket_wait_for_a_recovered_daemon_stops_when_its_recorded_process_is_gone() {
        let (_dir, layout) = layout();
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = sleeper.id();
        let mut state = Daemon::create(&layout, DaemonOptions::default(), Timeouts::default()).unwrap().states();
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
        d.wait().await;
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
