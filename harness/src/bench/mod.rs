//! `harness bench`: how fast the lifecycle is on the mock, printed as a table and written
//! as JSON. Numbers, never pass/fail: timing goals do not belong in tests.
//!
//! Each measurement runs the real flow through daemon-core's manager against mock-nydusd
//! processes in a temporary root: failover and restart from SIGKILL to RUNNING, death
//! detection, and the reaction of a state wait; the failover flow again with upstream's
//! retry timing (100 ms between attempts) for comparison; and N daemons at once.
//!
//! * [`lifecycle`]: recovery, detection, state waits, scale and the leak check.
//! * [`api`]: API latency through daemon-core's client and over a raw connection, with
//!   and without a recorder in front.
//! * [`library`]: the scenario library's wall time and a live reader's stall.
//! * [`table`]: the results as text.

mod api;
mod library;
mod lifecycle;
mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_core::daemon::{DaemonMode, SpawnExtras};
use daemon_core::manager::{Manager, ManagerConfig, ManagerError, ManagerEvent, PerDaemonArgs, RecoverPolicy};
use daemon_core::{ClientError, Daemon, DaemonError, DaemonOptions, Layout, Timeouts};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use api::{api_latency, raw_api};
use library::{library, read_stall};
use lifecycle::{detection, recovery, scale, state_reaction};

pub use lifecycle::leak_check;
pub use table::table;

/// Why a measurement could not be taken. The library's errors are boxed: they are large,
/// and every measurement returns this.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The manager refused or failed.
    #[error(transparent)]
    Manager(Box<ManagerError>),
    /// A daemon could not be created, started or signalled.
    #[error(transparent)]
    Daemon(Box<DaemonError>),
    /// An API call failed.
    #[error(transparent)]
    Client(Box<ClientError>),
    /// A scenario of the library could not be read.
    #[error(transparent)]
    Scenario(Box<crate::scenario::LoadError>),
    /// A file, socket or process the measurement needs.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The measured flow did not do what it is measured doing.
    #[error("{0}")]
    Measurement(String),
    /// A measurement's task panicked or was cancelled.
    #[error("a measurement's task failed")]
    Task(#[from] tokio::task::JoinError),
}

macro_rules! boxed_from {
    ($($variant:ident($error:ty)),*) => {$(
        impl From<$error> for BenchError {
            fn from(e: $error) -> Self {
                Self::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(Manager(ManagerError), Daemon(DaemonError), Client(ClientError), Scenario(crate::scenario::LoadError));

/// What an I/O failure was doing, for [`BenchError::Io`].
trait Doing<T> {
    fn doing(self, what: impl std::fmt::Display) -> Result<T, BenchError>;
}

impl<T> Doing<T> for std::io::Result<T> {
    fn doing(self, what: impl std::fmt::Display) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Io { what: what.to_string(), source })
    }
}

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The harness binary (the mock).
    pub mock: PathBuf,
    /// Runs per latency measurement.
    pub runs: usize,
    /// Daemon counts for the scale measurement.
    pub scales: Vec<usize>,
    /// Consecutive failovers of the leak check (0: skip it).
    pub leak_runs: usize,
    /// A real nydusd, with its extra arguments, to measure beside the mock.
    pub real: Option<(PathBuf, Vec<std::ffi::OsString>)>,
    /// The scenario library: its wall time, and its live-reader failover for the read stall.
    pub scenarios: Option<PathBuf>,
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(rank).map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
}

fn summary(mut samples: Vec<Duration>) -> Value {
    json!({
        "runs": samples.len(),
        "p50_ms": percentile(&mut samples, 0.5),
        "p99_ms": percentile(&mut samples, 0.99),
        "max_ms": percentile(&mut samples, 1.0),
    })
}

/// A temporary root with the mock linked in, and a manager over it.
struct Bed {
    _root: testkit::MockRoot,
    /// The root's owner and the daemons started in it, for the sweep after a SIGKILL.
    _ledger: std::sync::Arc<crate::containment::Ledger>,
    layout: Layout,
    manager: Manager,
    events: broadcast::Receiver<ManagerEvent>,
}

impl Bed {
    fn new(mock: &Path, policy: RecoverPolicy, timeouts: Timeouts) -> Result<Self, BenchError> {
        Self::with(mock, vec!["--mock-no-abort".into()], policy, timeouts)
    }

    /// A bed running `binary` with `args` appended to every daemon's command line.
    fn with(
        binary: &Path,
        args: Vec<std::ffi::OsString>,
        policy: RecoverPolicy,
        timeouts: Timeouts,
    ) -> Result<Self, BenchError> {
        // Named and owned as a scenario root: the sweep removes it after a SIGKILL.
        let prefix = format!("{}bench-", crate::containment::ROOT_PREFIX);
        let root = testkit::MockRoot::new(&prefix, binary).doing("a root for the measurement")?;
        let ledger = std::sync::Arc::new(
            crate::containment::Ledger::claim(root.path()).doing("the owner file of the measurement's root")?,
        );
        let layout = Layout::new(root.path());
        std::fs::create_dir_all(layout.shared_mountpoint())
            .doing(format!("creating {}", layout.shared_mountpoint().display()))?;
        let config = ManagerConfig {
            layout: layout.clone(),
            nydusd: root.nydusd().to_owned(),
            fs_driver: daemon_core::daemon::FsDriver::Fusedev,
            recover_policy: policy,
            timeouts,
            spawn: SpawnExtras {
                args,
                kill_on_drop: true,
                observer: Some({
                    let ledger = ledger.clone();
                    daemon_core::daemon::SpawnObserver::new(move |_, pid| ledger.started(pid))
                }),
                ..SpawnExtras::default()
            },
            fscache_dir: None,
            per_daemon_args: PerDaemonArgs::default(),
            exchange_observer: None,
            recovery: Default::default(),
            reply_limit: daemon_core::api::client::DEFAULT_REPLY_LIMIT,
        };
        let manager = Manager::open(config)?;
        let events = manager.subscribe();
        Ok(Self { _root: root, _ledger: ledger, layout, manager, events })
    }

    async fn daemon(&self, id: &str, timeouts: Timeouts) -> Result<std::sync::Arc<Daemon>, BenchError> {
        let options = DaemonOptions { id: Some(id.into()), mode: DaemonMode::Shared, ..DaemonOptions::default() };
        let daemon = self.manager.add_daemon(Daemon::create(&self.layout, options, timeouts)?)?;
        self.manager.start_daemon_and_wait(&daemon).await?;
        Ok(daemon)
    }

    async fn next(&mut self, wanted: impl Fn(&ManagerEvent) -> bool) -> Result<ManagerEvent, BenchError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(event)) if wanted(&event) => return Ok(event),
                Ok(Ok(ManagerEvent::RecoveryFailed { error, .. })) => {
                    return Err(BenchError::Measurement(format!("recovery failed: {error}")));
                }
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => return Err(BenchError::Measurement(format!("events: {e}"))),
                Err(_) => return Err(BenchError::Measurement("no event within 30 s".into())),
            }
        }
    }
}

fn upstream_timeouts() -> Timeouts {
    // Upstream retries every 100 ms plus up to 100 ms of jitter; the lower bound is used,
    // which favours upstream.
    Timeouts {
        backoff_initial: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(100),
        ..Timeouts::default()
    }
}

/// Runs every measurement and returns the results as JSON.
pub async fn run(options: &BenchOptions) -> Result<Value, BenchError> {
    let mock = &options.mock;
    let ours = Timeouts::default();
    let failover = recovery(mock, RecoverPolicy::Failover, ours, options.runs).await?;
    let failover_upstream = recovery(mock, RecoverPolicy::Failover, upstream_timeouts(), options.runs.min(20)).await?;
    let restart = recovery(mock, RecoverPolicy::Restart, ours, options.runs).await?;
    let detect = detection(mock, options.runs).await?;
    let mut scales = Vec::new();
    for n in &options.scales {
        scales.push(scale(mock, *n).await?);
    }
    let leaks = if options.leak_runs > 0 { Some(leak_check(mock, options.leak_runs).await?) } else { None };
    let reaction = summary(state_reaction(mock, ours, options.runs).await?);
    let reaction_upstream = summary(state_reaction(mock, upstream_timeouts(), options.runs.min(20)).await?);
    let latency_mock = api_latency(mock, vec!["--mock-no-abort".into()], 2000).await?;
    let latency_real = match &options.real {
        Some((binary, args)) => Some(api_latency(binary, args.clone(), 2000).await?),
        None => None,
    };
    let raw = raw_api(mock, options.real.as_ref()).await?;
    let (library, stall) = match &options.scenarios {
        Some(dir) => (Some(library(mock, dir).await?), Some(read_stall(mock, dir, options.runs.min(20)).await?)),
        None => (None, None),
    };
    let f = summary(failover);
    let u = summary(failover_upstream);
    let ratio = u["p50_ms"].as_f64().unwrap_or(f64::NAN) / f["p50_ms"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "failover_sigkill_to_running": f,
        "failover_with_upstream_retry_timing": u,
        "upstream_over_ours_p50": ratio,
        "restart_sigkill_to_running": summary(restart),
        "death_detection": summary(detect),
        "scale": scales,
        "leak_check": leaks,
        "state_wait_reaction": reaction,
        "state_wait_reaction_upstream_timing": reaction_upstream,
        "api_latency_mock": latency_mock,
        "api_latency_real_nydusd": latency_real,
        "api_raw_client": raw,
        "read_stall_during_fuse_failover": stall,
        "scenario_library": library,
    }))
}
