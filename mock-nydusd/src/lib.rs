//! mock-nydusd: a stand-in for nydusd that daemon code cannot tell from the real one on
//! its API socket and supervisor socket, and that can be scripted to misbehave.
//!
//! ```text
//!   argv ─► cli ─► start-up decision (RUNNING / INIT on --upgrade or detected crash)
//!                     │
//!   UnixListener ─► server (one request at a time) ─► framing ─► routes::route
//!                                                       │
//!                        model::Model (fsm::Machine, mounts, held fd) ◄─┘
//!                                 │ sendfd / takeover
//!                                 ▼
//!                         upgrade (SCM_RIGHTS to/from --supervisor)
//! ```

// The public surface: `run`, the script format, the journal format, and the content of
// sized files. Everything else is the mock's own; the fuzz targets and this crate's
// integration tests reach it through the `internals` feature, which promises nothing.
pub mod journal;
pub mod script;
pub mod version;

pub use environment::VARIABLES as ENVIRONMENT_VARIABLES;
pub use fuse::tree::pattern_byte;

/// Declares modules that are public only with the `internals` feature.
macro_rules! internal {
    ($($(#[$meta:meta])* $name:ident;)*) => {$(
        $(#[$meta])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal! {
    blob_cache;
    bootstrap;
    build_info;
    cli;
    config_v2;
    control;
    death;
    device;
    environment;
    fscache;
    framing;
    fsm;
    fuse;
    http;
    instance;
    metrics;
    model;
    nydusd_error;
    query;
    rafs_config;
    routes;
    runtime_config;
    server;
    startup;
    time;
    upgrade;
    yaml;
}

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use nydusd_api::MountRequest;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use cli::{Cli, Command};
use journal::Journal;
use model::{Mode, Model, ModelOptions};
use nydusd_error::NydusdError;
use script::{Script, ScriptRunner};
use server::Shared;

/// Runs the mock with a full argv (program name first) and returns its exit code:
/// 0 after a graceful shutdown, 1 for start-up errors, 2 for usage errors.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    // A program that starts the mock with nydusd's command line sets it up this way.
    if let Err(e) = environment::apply(&mut cli, |name| std::env::var_os(name)) {
        eprintln!("Error: {}", fscache::chain(&e));
        return ExitCode::from(2);
    }
    let version = cli.mock_nydusd_version.unwrap_or_default();
    if cli.failover_policy.as_deref() == Some("none") && !version.accepts_failover_policy_none() {
        // nydusd 2.2's clap knows only `resend` and `flush`.
        let e = clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            "invalid value 'none' for '--failover-policy <failover-policy>'\n  [possible values: resend, flush]\n",
        );
        let _ = e.print();
        return ExitCode::from(2);
    }
    let build = build_info::build_info(version, cli.mock_git_commit.as_deref());
    if cli.version {
        print!("{}", build_info::version_text(&build));
        return ExitCode::SUCCESS;
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e:?}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run_daemon(cli, build)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &Cli) {
    let builder = tracing_subscriber::fmt().with_max_level(match cli.log_level.as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    });
    let file = cli.log_file.as_ref().and_then(|p| {
        std::os::unix::fs::OpenOptionsExt::mode(&mut std::fs::OpenOptions::new(), 0o600)
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    match file {
        Some(f) => {
            let _ = builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init();
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}

async fn run_daemon(cli: Cli, build: nydusd_api::BuildTimeInfo) -> Result<(), NydusdError> {
    let started = Instant::now();
    let mut signals = Signals::new()?;
    let script = match &cli.mock_script {
        Some(path) => Script::load(path).map_err(|e| NydusdError::words(e.to_string()))?,
        None => Script::default(),
    };
    let journal = match &cli.mock_journal {
        Some(path) => Journal::open_limited(path, cli.mock_journal_limit)
            .map_err(|e| NydusdError::words(format!("cannot open journal {}: {e:?}", path.display())))?,
        None => Journal::default(),
    };
    let (mode, fscache_dir) = match &cli.command {
        Some(Command::Singleton { fscache, .. }) => (Mode::Singleton, fscache.clone()),
        _ => (Mode::Fuse, None),
    };
    // The FUSE session reports the end of its kernel connection here (the mount is gone).
    let (fuse_gone_tx, fuse_gone) = tokio::sync::mpsc::unbounded_channel::<()>();
    // A bound (or taken-over) /dev/cachefiles is served once the daemon's state exists.
    let (fscache_tx, fscache_rx) = tokio::sync::mpsc::unbounded_channel();
    let serves_fscache = mode == Mode::Singleton && fscache_dir.is_some() && fscache::is_device(&cli.mock_cachefiles);
    let options = ModelOptions {
        version: cli.mock_nydusd_version.unwrap_or_default(),
        shuffle_maps: cli.mock_shuffle_maps,
        id: cli.id.clone(),
        supervisor: cli.supervisor.clone(),
        mode,
        build,
        abort_like_nydusd: !cli.mock_no_abort,
        fscache_dir: fscache_dir.clone(),
        fuse: fuse_config(&cli, mode, fuse_gone_tx)?,
        fscache_service: serves_fscache.then_some(fscache_tx),
    };
    let mut model = Model::new(options, cli.log_level.clone());
    start_model(&cli, mode, serves_fscache, &mut model)?;
    let startup = script.startup.clone();
    let hold = startup.hold.as_ref().map(|hold| {
        let saved = model.machine().clone();
        model.force_state(hold.state);
        (hold.clone(), saved)
    });
    journal.record("start", json!({ "state": model.state().as_str(), "argv": std::env::args().collect::<Vec<_>>() }));
    // Watched from now on: `send` changes nothing while nobody watches.
    let partial_read_grace = (!cli.mock_no_partial_read_500).then_some(server::PARTIAL_READ_GRACE);
    let (shared, shutdown_requested) =
        Shared::new(model, journal, ScriptRunner::new(script), cli.mock_process.unwrap_or(1), partial_read_grace);
    let shared = Arc::new(Shared { started, ..shared });
    let fscache_scratch =
        fscache_dir.as_ref().map(|dir| dir.join(format!(".mock-nydusd-images-{}", std::process::id())));
    if let Some(scratch) = &fscache_scratch {
        tokio::spawn(serve_fscache(fscache_rx, shared.clone(), scratch.clone()));
    }
    if let Some(death) = startup.die_after.clone() {
        tokio::spawn(die_later(shared.clone(), death));
    }
    if let Some(path) = &cli.mock_control {
        let listener = bind_fresh(path)?;
        tokio::spawn(control::serve(listener, shared.clone()));
    }
    let api_bound = Arc::new(AtomicBool::new(false));
    let serving = serve_api(&cli, shared.clone(), startup, hold, api_bound.clone());
    // The control socket and scratch files go on every way out, a failed start included.
    let served = serve_until_stopped(&shared, &mut signals, shutdown_requested, fuse_gone, serving).await;
    if let Some(path) = &cli.mock_control {
        let _ = std::fs::remove_file(path);
    }
    if let Some(scratch) = &fscache_scratch {
        let _ = std::fs::remove_dir_all(scratch);
    }
    if let (Some(apisock), true) = (&cli.apisock, api_bound.load(Ordering::SeqCst)) {
        let _ = std::fs::remove_file(apisock);
        shared.journal.record("socket_removed", json!({ "path": apisock }));
    }
    served
}

/// The FUSE session to serve, when the mock serves one (`--mock-fuse` in FUSE mode).
fn fuse_config(
    cli: &Cli,
    mode: Mode,
    gone: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<Option<fuse::FuseConfig>, NydusdError> {
    let (Some(mountpoint), true, Mode::Fuse) = (&cli.mountpoint, cli.mock_fuse, mode) else { return Ok(None) };
    Ok(Some(fuse::FuseConfig {
        // Made absolute without touching it: a dead predecessor's mount would hang a stat.
        mountpoint: std::path::absolute(mountpoint).map_err(|e| NydusdError::debug(&e))?,
        threads: cli.fuse_threads.unwrap_or(1) as usize,
        // nydusd's default when the flag is absent.
        policy: cli
            .failover_policy
            .as_deref()
            .and_then(nydusd_api::PendingRequestPolicy::parse)
            .unwrap_or(nydusd_api::PendingRequestPolicy::Resend),
        on_end: fuse::OnEnd(Arc::new(move || {
            let _ = gone.send(());
        })),
    }))
}

/// What nydusd checks before it serves, and the start-up it decides on: serve (mounting
/// the bootstrap, if given), or wait for a takeover (`--upgrade`), or refuse.
/// `serves_fscache`: a singleton on a kernel with on-demand fscache, which binds the
/// device when it serves.
fn start_model(cli: &Cli, mode: Mode, serves_fscache: bool, model: &mut Model) -> Result<(), NydusdError> {
    let mountpoint_mounted = match mode {
        Mode::Fuse => {
            let mountpoint = cli
                .mountpoint
                .as_ref()
                .ok_or(NydusdError::words("Invalid argument: mountpoint is required in FUSE mode"))?;
            // Not canonicalize: stat on a crashed predecessor's FUSE mount blocks forever. A
            // path that is mounted exists; only an unmounted one is checked on disk.
            let absolute = std::path::absolute(mountpoint).map_err(|e| NydusdError::debug(&e))?;
            let mounted = host_facts::mountinfo::is_mounted(&absolute).unwrap_or(false);
            if !mounted {
                std::fs::metadata(&absolute).map_err(|e| NydusdError::debug(&e))?;
            }
            mounted
        }
        Mode::Singleton => false,
    };
    let observed = startup::Observed {
        mode,
        api_socket: cli.apisock.as_deref().map(startup::ApiSocket::observe),
        upgrade: cli.upgrade,
        mountpoint_mounted,
        cachefiles_opens: mode == Mode::Singleton
            && std::fs::OpenOptions::new().read(true).write(true).open(&cli.mock_cachefiles).is_ok(),
    };
    match startup::decide(&observed) {
        startup::Decision::Serve if serves_fscache => bind_cachefiles(cli, model)?,
        startup::Decision::Serve => {}
        startup::Decision::AwaitTakeover => return Ok(()),
        startup::Decision::Refuse(message) => return Err(NydusdError::words(message)),
    }
    let bootstrap = match (&cli.bootstrap, mode) {
        (Some(b), Mode::Fuse) => {
            let config = match &cli.config {
                // Not UTF-8: the read fails with nydusd's `InvalidData` words.
                Some(path) => std::fs::read_to_string(path).map_err(|e| NydusdError::debug(&e))?,
                None => {
                    return Err(NydusdError::words("Invalid argument: --bootstrap needs --config or --localfs-dir"));
                }
            };
            // nydusd reads its configuration as JSON or TOML; a torn or garbled one ends the
            // start with EINVAL (2.2: `Failed in starting daemon: Invalid argument (os error 22)`).
            let parses = serde_json::from_str::<serde_json::Value>(&config).is_ok()
                || toml::from_str::<toml::Table>(&config).is_ok();
            if !parses {
                return Err(NydusdError::debug(&std::io::Error::from_raw_os_error(nix::libc::EINVAL)));
            }
            Some(MountRequest::rafs(b.display().to_string(), config))
        }
        _ => None,
    };
    model.start_normally(bootstrap)
}

/// A singleton with `--fscache` on a kernel with on-demand fscache binds the device, as
/// nydusd does; a kernel that refuses (no on-demand mode; a cache directory on tmpfs) ends
/// the start with its error.
fn bind_cachefiles(cli: &Cli, model: &mut Model) -> Result<(), NydusdError> {
    let Some(Command::Singleton { fscache: Some(dir), fscache_tag, .. }) = &cli.command else { return Ok(()) };
    let failed = |e: fscache::DeviceError| NydusdError::words(fscache::chain(&e));
    let device = fscache::open(&cli.mock_cachefiles).map_err(failed)?;
    fscache::bind(&device, dir, fscache_tag.as_deref()).map_err(failed)?;
    model.hold_cachefiles(device)
}

/// Serves each cachefiles fd the model hands over (the bound one; one taken over).
async fn serve_fscache(
    mut devices: tokio::sync::mpsc::UnboundedReceiver<std::os::fd::OwnedFd>,
    shared: Arc<Shared>,
    scratch: std::path::PathBuf,
) {
    while let Some(device) = devices.recv().await {
        shared.journal.record("fscache_serving", json!({}));
        tokio::spawn(fscache::serve(device, shared.clone(), scratch.clone()));
    }
}

/// Serves until a signal, `PUT /daemon/exit`, the end of the FUSE connection, or a
/// failure of the API socket.
async fn serve_until_stopped(
    shared: &Shared,
    signals: &mut Signals,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut fuse_gone: tokio::sync::mpsc::UnboundedReceiver<()>,
    serving: impl std::future::Future<Output = NydusdError>,
) -> Result<(), NydusdError> {
    tokio::select! {
        signal = signals.recv() => {
            shared.journal.record("signal", json!({ "signal": signal }));
            shared.stopping.send_replace(true);
            let mut model = shared.model.lock().await;
            let before = model.state();
            let unmounted = model.stop();
            shared.journal.record("state", json!({ "from": before.as_str(), "to": model.state().as_str(), "unmount": unmounted }));
        }
        _ = shutdown.wait_for(|stop| *stop) => {
            shared.journal.record("exit", json!({}));
        }
        Some(()) = fuse_gone.recv() => {
            // nydusd leaves as if signalled when its FUSE mount disappears (checklist 55).
            shared.journal.record("fuse_connection_ended", json!({}));
            let mut model = shared.model.lock().await;
            let before = model.state();
            model.stop();
            shared.journal.record("state", json!({ "from": before.as_str(), "to": model.state().as_str() }));
        }
        failed = serving => return Err(failed),
    }
    Ok(())
}

/// Binds a Unix socket at `path`, replacing a stale file as nydusd does.
fn bind_fresh(path: &Path) -> Result<tokio::net::UnixListener, NydusdError> {
    let listener = host_facts::unix_socket::bind_private(path).map_err(|e| NydusdError::debug(&e))?;
    listener.set_nonblocking(true).map_err(|e| NydusdError::debug(&e))?;
    tokio::net::UnixListener::from_std(listener).map_err(|e| NydusdError::debug(&e))
}

/// Creates the API socket (late, or never, if scripted) and serves it; returns only on
/// failure. Without `--apisock` nydusd serves no API and just runs until signalled.
async fn serve_api(
    cli: &Cli,
    shared: Arc<Shared>,
    startup: script::Startup,
    hold: Option<(script::Hold, fsm::Machine)>,
    bound: Arc<AtomicBool>,
) -> NydusdError {
    let Some(apisock) = cli.apisock.clone().filter(|_| !startup.no_socket) else {
        if startup.no_socket {
            shared.journal.record("socket_withheld", json!({ "scripted": true }));
        }
        return std::future::pending().await;
    };
    if let Some(ms) = startup.socket_delay_ms {
        shared.journal.record("socket_delayed", json!({ "ms": ms }));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let listener = match bind_fresh(&apisock) {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    bound.store(true, Ordering::SeqCst);
    shared.journal.record("socket_created", json!({ "path": apisock }));
    tokio::spawn(server::serve(listener, shared.clone(), cli.mock_max_connections));
    if let Some((hold, saved)) = hold {
        tokio::time::sleep(Duration::from_millis(hold.ms)).await;
        let mut model = shared.model.lock().await;
        // Only if nothing (a request, a script) moved the state during the hold.
        if model.state() == hold.state {
            let before = model.state();
            model.restore_machine(saved);
            shared
                .journal
                .record("state", json!({ "from": before.as_str(), "to": model.state().as_str(), "hold_ended": true }));
        }
    }
    std::future::pending().await
}

/// `startup.die_after`.
async fn die_later(shared: Arc<Shared>, death: script::Death) {
    let deadline = shared.started + Duration::from_millis(death.ms);
    tokio::time::sleep_until(deadline.into()).await;
    match (death.exit, death.signal) {
        (Some(code), _) => {
            shared.journal.record("exit", json!({ "code": code, "scripted": true }));
            std::process::exit(code);
        }
        (None, signal) => {
            let signal = signal.unwrap_or(script::SignalName::Kill);
            shared.journal.record("raise", json!({ "signal": signal, "scripted": true }));
            death::raise_signal(signal.signal());
        }
    }
}

/// SIGTERM and SIGINT, caught from the start so that a stop during start-up is graceful.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, NydusdError> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(|e| NydusdError::debug(&e))?,
            int: signal(SignalKind::interrupt()).map_err(|e| NydusdError::debug(&e))?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
