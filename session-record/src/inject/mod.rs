//! Faults in front of a real nydusd: the injector.
//!
//! The harness puts the injector where the manager expects nydusd (the harness binary,
//! started as `nydusd` with [`options::NYDUSD_FLAG`]). It takes its own flags out of the
//! command line, starts the real nydusd with the rest, its API socket moved into a private
//! directory and, when the line names one, its supervisor socket relayed with its fds
//! ([`crate::supervisor::Relay`]); then it listens where the manager expects the API
//! socket and passes each request on, applying the mock's script rules
//! (`mock_nydusd::script`) as the mock applies them:
//!
//! * requests are taken one at a time over all connections, as nydusd's one API thread
//!   (and the mock's lock) takes them, so a `delay_ms` holds every request behind it;
//! * `reply` passes the request on and the daemon's reply back; `discard_reply` passes it
//!   on and throws the reply away (the lost reply); `respond` and `raw` answer instead,
//!   and the request never reaches nydusd unless a `reply` comes too; `hang`,
//!   `close` and `hang_up_all` act on the client's connections; `signal` is sent to nydusd
//!   and `exit` kills it (SIGKILL) and ends the injector with the code;
//! * `when.state` is the state nydusd last reported (`GET /api/v1/daemon`); before any
//!   report, INIT for a daemon started with `--upgrade` and RUNNING otherwise;
//! * `startup.socket_delay_ms` and `startup.no_socket` hold back the socket the manager
//!   sees (nydusd's own is up); `startup.die_after` signals nydusd (or kills it and exits).
//!
//! What a proxy cannot make a real nydusd do is refused when the injector starts, naming
//! the rule: a reported state other than its own (`state`, `startup.hold`) and the mock's
//! fscache service faults.
//!
//! The injector is the process the manager knows: the monitor's and the supervisor's
//! `SO_PEERCRED` checks see its pid. nydusd is its child in its process group, killed
//! with it (`PR_SET_PDEATHSIG`); signals the injector can catch are passed on, and when
//! nydusd ends the injector ends the same way (the same exit code, or the same signal),
//! leaving the API socket behind exactly when nydusd left its own. The journal is the
//! mock's format (`source: inject`): `start`, `request`, `script`, `raise`, `signal`,
//! `socket_*`, `exit`, plus `nydusd_started`, `nydusd_listening` and `nydusd_exited`.

mod control;
pub mod options;
mod relay;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_nydusd::journal::Journal;
use mock_nydusd::script::{Action, Script, ScriptRunner, SignalName, State};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::watch;

pub use options::{InjectOptions, requested};

use super::argv::{move_apisock, move_supervisor};
use super::supervisor::{Gate, Relay};

/// What the injector could not do.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The command line is not one the injector understands.
    #[error("usage: {0}")]
    Usage(String),
    /// The command line names no API socket to stand on.
    #[error("the command line names no --apisock")]
    NoApisock,
    /// The script cannot be read or is invalid.
    #[error(transparent)]
    Script(#[from] mock_nydusd::script::ScriptError),
    /// The sockets' directory is open to other users.
    #[error(
        "{} is open to other users (mode {mode:o}); its sockets would let them steer nydusd or plant a FUSE fd: give a new directory, or `chmod 700` this one",
        path.display()
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The script asks for what only the mock can do.
    #[error("{0}")]
    MockOnly(String),
    /// A file or socket could not be made or opened.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was tried.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// What the injector shares with the recorder failed: its private directory (not a
    /// directory), the supervisor relay.
    #[error(transparent)]
    Recorder(#[from] super::RecordError),
}

/// How the injector ends: as nydusd ended, or as a script said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Exit with this code.
    Code(i32),
    /// Die by this signal.
    Signal(Signal),
}

/// What the injector's parts share.
pub(crate) struct Injector {
    journal: Journal,
    script: std::sync::Mutex<ScriptRunner>,
    /// One request at a time, over every connection.
    turn: tokio::sync::Mutex<()>,
    started: Instant,
    process: u32,
    /// The state nydusd last reported.
    state: std::sync::Mutex<State>,
    /// Bumped to hang up every client connection (`hang_up_all`).
    hang_up: watch::Sender<u64>,
    /// Set when a stop signal came: a scripted delay ends unanswered, as in the mock.
    stopping: watch::Sender<bool>,
    /// nydusd's moved API socket.
    upstream: PathBuf,
    /// Holds API replies back while a supervisor connection is being relayed.
    gate: Option<Gate>,
    /// The supervisor socket nydusd was given (the relay's) and the one the manager named,
    /// as JSON strings: nydusd reports the one it was given in `GET /api/v1/daemon`.
    supervisor_paths: Option<(String, String)>,
    /// nydusd, for signals that no reused pid can redirect.
    daemon: host_facts::pidfd::PidFd,
    /// A scripted end (`exit`), carried out by the main loop.
    end: tokio::sync::mpsc::UnboundedSender<End>,
    /// Set when a fatal action fired (a fatal signal, `exit`): nydusd is dying, and no
    /// request is passed on any more, as nothing is answered once the mock raised it.
    dying: std::sync::atomic::AtomicBool,
    /// Client connections with a connection to nydusd open: when nydusd ends, the
    /// injector waits for them to pass on what nydusd sent last (the exit API's reply).
    relaying: watch::Sender<usize>,
}

impl Injector {
    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A scripted exit (a rule's `exit`, `startup.die_after.exit`): nothing more is
    /// answered, and the main loop kills nydusd and ends with `code`.
    fn exit(&self, code: i32) {
        self.journal.record("exit", json!({ "code": code, "scripted": true }));
        self.dying.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.end.send(End::Code(code));
    }

    /// A scripted signal to nydusd, journalled as `raise` with `fields`; after a fatal one
    /// nothing more is answered.
    fn raise(&self, signal: SignalName, fields: serde_json::Value) {
        self.journal.record("raise", fields);
        if signal.is_fatal() {
            self.dying.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.signal_daemon(signal.signal());
    }

    fn signal_daemon(&self, signal: Signal) {
        if let Err(e) = self.daemon.send_signal(signal) {
            self.journal.record("signal_failed", json!({ "signal": signal.as_str(), "error": e.to_string() }));
        }
    }
}

/// Runs the injector on `argv` (program first) and ends the process as nydusd ended.
pub fn main(argv: Vec<OsString>) -> std::process::ExitCode {
    let options = match InjectOptions::parse(&argv) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("nydusd (injector): {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // A command line with no API socket is no daemon to stand in front of (`--version`,
    // which the manager reads at a restart to compare builds; `--help`): it is nydusd's
    // alone, so nydusd replaces the injector.
    if move_apisock(&options.daemon_args, Path::new("/")).is_none() {
        use std::os::unix::process::CommandExt;
        let error = std::process::Command::new(&options.nydusd).args(&options.daemon_args).exec();
        eprintln!("nydusd (injector): cannot run {}: {error}", options.nydusd.display());
        return std::process::ExitCode::from(1);
    }
    // One thread: nydusd is spawned from it, and PR_SET_PDEATHSIG fires when the thread
    // that forked ends, not the process.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nydusd (injector): cannot start a runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let ended = runtime.block_on(run(options));
    // Every connection closes with the runtime, before the process ends as nydusd did.
    drop(runtime);
    match ended {
        Ok(End::Code(code)) => std::process::exit(code),
        Ok(End::Signal(signal)) => die_by(signal),
        Err(e) => {
            eprintln!("nydusd (injector): {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Ends this process by `signal`, as nydusd ended (core dumps off: a deliberate crash
/// leaves no file).
fn die_by(signal: Signal) -> ! {
    use nix::sys::signal::{SigHandler, raise};
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: resetting a disposition to SIG_DFL has no memory-safety requirements.
    let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&nix::sys::signal::SigSet::from(signal)),
        None,
    );
    let _ = raise(signal);
    // A signal whose default is not to end the process (it cannot come from a death).
    let _ = raise(Signal::SIGKILL);
    unreachable!("SIGKILL ends the process")
}

/// Refuses what only the mock can do, naming the rule.
fn refuse_mock_only(script: &Script, origin: &str) -> Result<(), InjectError> {
    if script.startup.hold.is_some() {
        return Err(InjectError::MockOnly(format!(
            "{origin}: startup.hold: a real nydusd reports its own state; only the mock can be made to report another"
        )));
    }
    if !script.fscache.is_empty() {
        return Err(InjectError::MockOnly(format!(
            "{origin}: fscache: the faults in answering the kernel's fscache requests are the mock's; a real nydusd answers them itself"
        )));
    }
    for (i, rule) in script.rules.iter().enumerate() {
        if rule.value.then.iter().any(|a| matches!(a, Action::State(_))) {
            return Err(InjectError::MockOnly(format!(
                "{origin}: {}: `state`: a real nydusd reports its own state; only the mock can be made to report another",
                mock_nydusd::script::rule_label(i, rule.value.name.as_deref())
            )));
        }
    }
    Ok(())
}

async fn run(options: InjectOptions) -> Result<End, InjectError> {
    let script = match &options.script {
        Some(path) => Script::load(path)?,
        None => Script::default(),
    };
    refuse_mock_only(&script, &options.script.as_ref().map(|p| p.display().to_string()).unwrap_or_default())?;
    let journal = match &options.journal {
        Some(path) => Journal::open_as(path, "inject").map_err(|source| InjectError::Io {
            action: "open the journal",
            path: path.clone(),
            source,
        })?,
        None => Journal::default(),
    };
    let dir = options.dir.clone().ok_or_else(|| InjectError::Usage("--inject-dir is required".into()))?;
    crate::proxy::private_dir(&dir).map_err(|e| match e {
        super::RecordError::NotPrivate { path, mode } => InjectError::NotPrivate { path, mode },
        other => other.into(),
    })?;
    let me = std::process::id();
    let upstream = dir.join(format!("{me}.api.sock"));
    let command: Vec<OsString> =
        std::iter::once(options.nydusd.clone().into_os_string()).chain(options.daemon_args.iter().cloned()).collect();
    let (mut command, listen) = move_apisock(&command, &upstream).ok_or(InjectError::NoApisock)?;
    let relayed = dir.join(format!("{me}.supervisor.sock"));
    let mut supervisor_paths = None;
    let relay = match move_supervisor(&command, &relayed) {
        Some((moved, original)) => {
            command = moved;
            let json = |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("strings serialise");
            supervisor_paths = Some((json(&relayed), json(&original)));
            Some(Relay::bind(&relayed, original)?)
        }
        None => None,
    };
    let upgrade = command.iter().any(|a| a == "--upgrade");
    let argv: Vec<String> = options.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    journal.record("start", json!({ "argv": argv, "nydusd": options.nydusd, "process": options.process }));

    // nydusd decides how to start by what it finds at its API socket's path (a stale
    // socket and a mounted mountpoint mean a takeover): it finds what is at the path the
    // manager named, through a link.
    if std::fs::symlink_metadata(&listen).is_ok() {
        std::os::unix::fs::symlink(&listen, &upstream).map_err(|source| InjectError::Io {
            action: "link the socket left at",
            path: listen.clone(),
            source,
        })?;
    }
    let mut child = spawn(&command)?;
    let pid = child.id().unwrap_or(0);
    journal.record("nydusd_started", json!({ "nydusd_pid": pid }));
    let daemon = host_facts::pidfd::PidFd::open(pid).map_err(|e| InjectError::Io {
        action: "open a pidfd for",
        path: options.nydusd.clone(),
        source: e.into(),
    })?;
    let (end_tx, mut end_rx) = tokio::sync::mpsc::unbounded_channel();
    let startup = script.startup.clone();
    let injector = Arc::new(Injector {
        journal,
        script: std::sync::Mutex::new(ScriptRunner::new(script)),
        turn: tokio::sync::Mutex::new(()),
        started: Instant::now(),
        process: options.process,
        state: std::sync::Mutex::new(if upgrade { State::Init } else { State::Running }),
        hang_up: watch::channel(0).0,
        stopping: watch::channel(false).0,
        upstream: upstream.clone(),
        gate: relay.as_ref().map(Relay::gate),
        supervisor_paths,
        daemon,
        end: end_tx,
        dying: std::sync::atomic::AtomicBool::new(false),
        relaying: watch::channel(0).0,
    });
    forward_signals(&injector)?;
    if let Some(death) = startup.die_after.clone() {
        let injector = injector.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(death.ms)).await;
            match death.exit {
                Some(code) => injector.exit(code),
                None => {
                    let signal = death.signal.unwrap_or(SignalName::Kill);
                    injector.raise(signal, json!({ "signal": signal, "scripted": true }));
                }
            }
        });
    }
    if let Some(path) = &options.control {
        let listener = bind(path)?;
        tokio::spawn(control::serve(listener, injector.clone()));
    }
    // Boxed, to be dropped (with its listener) the moment nydusd ends.
    let mut serving = Box::pin(serve_api(injector.clone(), listen.clone(), startup));
    let supervisor = async {
        match relay {
            Some(relay) => {
                let log = dir.join(format!("{me}.supervisor.jsonl"));
                let sink = super::recording::Sink::create(&log).map_err(|source| InjectError::Io {
                    action: "create",
                    path: log,
                    source,
                })?;
                Ok::<_, InjectError>(relay.serve(sink).await?)
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(supervisor);
    let status = tokio::select! {
        status = child.wait() => status.map_err(|source| InjectError::Io { action: "wait for", path: options.nydusd.clone(), source })?,
        Some(end) = end_rx.recv() => {
            // A scripted exit: nydusd dies at once, as a process that exits leaves its
            // mounts and sockets behind.
            injector.signal_daemon(Signal::SIGKILL);
            let _ = child.wait().await;
            injector.journal.record("nydusd_exited", json!({ "signal": "SIGKILL", "scripted": true }));
            let _ = std::fs::remove_file(&upstream);
            return Ok(end);
        }
        served = &mut serving => {
            let e = match served {
                Ok(never) => match never {},
                Err(e) => e,
            };
            injector.signal_daemon(Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(e);
        }
        served = &mut supervisor => {
            let e = match served {
                Ok(never) => match never {},
                Err(e) => e,
            };
            injector.signal_daemon(Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(e);
        }
    };
    // nydusd is gone: nothing more is accepted (a client now finds the socket refusing, as
    // nydusd's own would), and the relays of open connections see nydusd's close.
    drop(serving);
    // What nydusd wrote before it ended (the exit API's 204) is still on its way to the
    // client: every connection ends once it read nydusd's close, within a bound for one
    // held by a `hang`.
    let mut relaying = injector.relaying.subscribe();
    let _ = tokio::time::timeout(Duration::from_millis(500), relaying.wait_for(|open| *open == 0)).await;
    let signal = status.signal().and_then(|s| Signal::try_from(s).ok());
    injector.journal.record(
        "nydusd_exited",
        json!({ "code": status.code(), "signal": signal.map(Signal::as_str), "socket_left": upstream.exists() }),
    );
    // nydusd removes its socket when it stops in order; then so does the injector. A
    // death leaves both, as the manager would find nydusd's.
    if !upstream.exists() && listen.exists() {
        let _ = std::fs::remove_file(&listen);
        injector.journal.record("socket_removed", json!({ "path": listen }));
    }
    let _ = std::fs::remove_file(&upstream);
    Ok(match (status.code(), signal) {
        (Some(code), _) => End::Code(code),
        (None, Some(signal)) => End::Signal(signal),
        (None, None) => End::Code(1),
    })
}

/// Starts nydusd in the injector's process group, killed when the injector dies.
fn spawn(command: &[OsString]) -> Result<tokio::process::Child, InjectError> {
    let (program, args) = command.split_first().ok_or(InjectError::Usage("no nydusd to start".into()))?;
    let parent = std::process::id();
    let mut nydusd = tokio::process::Command::new(program);
    nydusd.args(args).kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls are made: prctl and
    // getppid.
    unsafe {
        nydusd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The injector may have died before the death signal was armed.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("the injector is gone"));
            }
            Ok(())
        });
    }
    nydusd.spawn().map_err(|source| InjectError::Io { action: "start", path: program.into(), source })
}

/// Signals the injector can catch are passed on to nydusd, and journalled as the mock
/// journals those it gets; a stop signal also ends a scripted delay unanswered.
fn forward_signals(injector: &Arc<Injector>) -> Result<(), InjectError> {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, forwarded, stops) in [
        (SignalKind::terminate(), Signal::SIGTERM, true),
        (SignalKind::interrupt(), Signal::SIGINT, true),
        (SignalKind::hangup(), Signal::SIGHUP, false),
        (SignalKind::quit(), Signal::SIGQUIT, true),
        (SignalKind::user_defined1(), Signal::SIGUSR1, false),
        (SignalKind::user_defined2(), Signal::SIGUSR2, false),
        (SignalKind::from_raw(Signal::SIGCONT as i32), Signal::SIGCONT, false),
    ] {
        let mut stream = signal(kind).map_err(|source| InjectError::Io {
            action: "handle signals of",
            path: PathBuf::from(forwarded.as_str()),
            source,
        })?;
        let injector = injector.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                injector.journal.record("signal", json!({ "signal": forwarded.as_str() }));
                if stops {
                    injector.stopping.send_replace(true);
                }
                injector.signal_daemon(forwarded);
            }
        });
    }
    Ok(())
}

fn bind(path: &Path) -> Result<tokio::net::UnixListener, InjectError> {
    let listen = |source| InjectError::Io { action: "listen on", path: path.to_owned(), source };
    let listener = host_facts::unix_socket::bind_private(path).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    tokio::net::UnixListener::from_std(listener).map_err(listen)
}

/// Waits for nydusd to listen, holds the socket back as the script says, then listens
/// where the manager expects nydusd and relays each connection.
async fn serve_api(
    injector: Arc<Injector>,
    listen: PathBuf,
    startup: mock_nydusd::script::Startup,
) -> Result<std::convert::Infallible, InjectError> {
    // The socket file appears at bind(), before listen(): a probe connection that is
    // accepted (and closed at once) shows nydusd listens. Not through the link to what the
    // manager's path held (see `run`): a live socket there is another process's.
    let nydusd_listens = |path: &Path| {
        std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            && std::os::unix::net::UnixStream::connect(path).is_ok()
    };
    while !nydusd_listens(&injector.upstream) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    injector.journal.record("nydusd_listening", json!({ "after_ms": injector.started.elapsed().as_millis() as u64 }));
    if startup.no_socket {
        injector.journal.record("socket_withheld", json!({ "scripted": true }));
        return std::future::pending().await;
    }
    if let Some(ms) = startup.socket_delay_ms {
        injector.journal.record("socket_delayed", json!({ "ms": ms }));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let listener = bind(&listen)?;
    injector.journal.record("socket_created", json!({ "path": listen }));
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(relay::connection(client, injector.clone()));
            }
            Err(e) => {
                injector.journal.record("accept_failed", json!({ "error": e.to_string() }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
