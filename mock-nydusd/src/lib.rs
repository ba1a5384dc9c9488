//! mock-nydusd: a stand-in for nydusd that daemon code cannot tell from the real one on
//! its API socket and supervisor socket, and that can be scripted to misbehave.
//!
//! ```text
//!   argv ─► cli ─► start-up decision (RUNNING / INIT on --upgrade or detected crash)
//!                     │
//!   UnixListener ─► server (one request at a time) ─► http::parse ─► routes::route
//!                                                          │
//!                        model::Model (fsm::Machine, mounts, held fd) ◄─┘
//!                                 │ sendfd / takeover
//!                                 ▼
//!                         upgrade (SCM_RIGHTS to/from --supervisor)
//! ```

pub mod blob_cache;
pub mod build_info;
pub mod cli;
pub mod fsm;
pub mod http;
pub mod instance;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod routes;
pub mod runtime_config;
pub mod server;
pub mod time;
pub mod upgrade;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use daemon_core::MountRequest;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use cli::{Cli, Command};
use journal::Journal;
use model::{Mode, Model, ModelOptions};
use server::Shared;

/// Runs the mock with a full argv (program name first) and returns its exit code:
/// 0 after a graceful shutdown, 1 for start-up errors, 2 for usage errors.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let build = build_info::build_info(cli.mock_git_commit.as_deref());
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
    let file = cli.log_file.as_ref().and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    match file {
        Some(f) => {
            let _ = builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init();
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}

/// nydusd's crash test (§3.4): the mountpoint is still mounted and a socket file exists at
/// `--apisock` that refuses connections.
fn predecessor_crashed(mountpoint: &Path, apisock: &Path) -> bool {
    let mounted = daemon_core::procfs::is_mounted(mountpoint).unwrap_or(false);
    mounted && apisock.exists() && std::os::unix::net::UnixStream::connect(apisock).is_err()
}

async fn run_daemon(cli: Cli, build: daemon_core::api::BuildTimeInfo) -> Result<(), String> {
    let journal = match &cli.mock_journal {
        Some(path) => Journal::open(path).map_err(|e| format!("cannot open journal {}: {e:?}", path.display()))?,
        None => Journal::default(),
    };
    let (mode, fscache_dir) = match &cli.command {
        Some(Command::Singleton { fscache, .. }) => (Mode::Singleton, fscache.clone()),
        _ => (Mode::Fuse, None),
    };
    let options = ModelOptions {
        id: cli.id.clone(),
        supervisor: cli.supervisor.clone(),
        mode,
        build,
        abort_like_nydusd: !cli.mock_no_abort,
        fscache_dir,
    };
    let mut model = Model::new(options, cli.log_level.clone());
    let apisock = cli.apisock.clone();

    let wait_for_takeover = match mode {
        Mode::Fuse => {
            let mountpoint = cli.mountpoint.as_ref().ok_or("Invalid argument: mountpoint is required in FUSE mode")?;
            let canonical = std::fs::canonicalize(mountpoint).map_err(|e| format!("{e:?}"))?;
            apisock.is_some() && (cli.upgrade || apisock.as_deref().is_some_and(|s| predecessor_crashed(&canonical, s)))
        }
        Mode::Singleton => {
            let device_ok = std::fs::OpenOptions::new().read(true).write(true).open(&cli.mock_cachefiles).is_ok();
            let stale =
                apisock.as_deref().is_some_and(|s| s.exists() && std::os::unix::net::UnixStream::connect(s).is_err());
            if apisock.is_some() && !cli.upgrade && !device_ok && !stale {
                // nydusd flattens "fscache unsupported" into a bare EINVAL at start-up.
                return Err(r#"Os { code: 22, kind: InvalidInput, message: "Invalid argument" }"#.to_owned());
            }
            apisock.is_some() && (cli.upgrade || (!device_ok && stale))
        }
    };
    if !wait_for_takeover {
        let bootstrap = match (&cli.bootstrap, mode) {
            (Some(b), Mode::Fuse) => {
                let config = match &cli.config {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{e:?}"))?,
                    None => return Err("Invalid argument: --bootstrap needs --config or --localfs-dir".into()),
                };
                Some(MountRequest::rafs(b.display().to_string(), config))
            }
            _ => None,
        };
        model.start_normally(bootstrap)?;
    }
    journal.record("start", json!({ "state": model.state().as_str(), "argv": std::env::args().collect::<Vec<_>>() }));

    let Some(apisock) = apisock else {
        // Without an API socket nydusd just serves until signalled.
        wait_for_signal().await;
        return Ok(());
    };
    match std::fs::remove_file(&apisock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{e:?}")),
    }
    let listener = tokio::net::UnixListener::bind(&apisock).map_err(|e| format!("{e:?}"))?;
    let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared { model: tokio::sync::Mutex::new(model), journal, shutdown });
    tokio::spawn(server::serve(listener, shared.clone(), cli.mock_max_connections));

    tokio::select! {
        signal = wait_for_signal() => {
            shared.journal.record("signal", json!({ "signal": signal }));
            let mut model = shared.model.lock().await;
            let before = model.state();
            let unmounted = model.stop();
            shared.journal.record("state", json!({ "from": before.as_str(), "to": model.state().as_str(), "unmount": unmounted }));
        }
        _ = shutdown_rx.wait_for(|stop| *stop) => {
            shared.journal.record("exit", json!({}));
        }
    }
    let _ = std::fs::remove_file(&apisock);
    shared.journal.record("socket_removed", json!({ "path": apisock }));
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        unreachable!("pending never resolves");
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
