//! Runs one scenario in a temporary root of its own, against mock-nydusd (the harness
//! binary itself, linked in as `nydusd`) or a real nydusd, through daemon-core's manager.
//!
//! Every process the scenario starts is recorded in the root's ledger (pid and start
//! time, `containment`) and killed with its process group at the end, and every mount
//! under the root is detached, on every exit path: pass, failure, deadline, panic of a
//! step, or Ctrl-C. A SIGKILLed harness leaves the ledger for the next run's sweep.

pub mod image;
mod outcome;
mod steps;
mod target;
pub mod timeline;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_core::api::{Exchange, ExchangeObserver};
use daemon_core::daemon::{DaemonMode, SpawnExtras, error_chain};
use daemon_core::manager::{Manager, ManagerConfig, ManagerEvent, PerDaemonArgs};
use daemon_core::rafs::Rafs;
use daemon_core::{Daemon, DaemonOptions, Layout, Timeouts};
use mock_nydusd::journal::Journal;
use serde_json::json;
use tokio::sync::broadcast;

use crate::scenario::model::{DaemonSpec, InstanceSpec, Scenario, Target as TargetName};
use target::Target;

pub use outcome::Failure;
pub(crate) use outcome::describe_expected;
pub use steps::Explained;
pub(crate) use steps::explain as explain_step;

/// What to run scenarios against.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The binary started for each daemon.
    pub nydusd: PathBuf,
    /// Mock or real.
    pub target: TargetName,
    /// Arguments appended to every daemon's command line.
    pub extra_args: Vec<OsString>,
    /// Where failing scenarios leave a repro bundle (`None`: nowhere).
    pub bundles: Option<PathBuf>,
}

/// How one scenario ended.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The file.
    pub path: PathBuf,
    /// The scenario's name.
    pub name: String,
    /// How long it took.
    pub duration: Duration,
    /// `None` when it passed (or was skipped).
    pub failure: Option<Failure>,
    /// Why it did not run.
    pub skipped: Option<String>,
    /// Every API exchange daemon-core had with the daemons, in order.
    pub exchanges: Vec<Exchange>,
    /// What each stopped reader workload saw, in order.
    pub readers: Vec<crate::reader::ReaderStats>,
    /// What the run noted beyond pass or fail, e.g. which kernel case a reader's promise
    /// came from; every report shows them.
    pub notes: Vec<String>,
}

/// Why `scenario` cannot run here, decided before running (and when tests are listed).
pub fn skip_reason(scenario: &Scenario, config: &RunConfig) -> Option<String> {
    if !scenario.targets.contains(&config.target) {
        let names: Vec<String> = scenario.targets.iter().map(|t| format!("{t:?}").to_lowercase()).collect();
        return Some(format!("applies to {} only", names.join(", ")));
    }
    let requirements: Vec<host_facts::Requirement> = scenario.requires.iter().map(|r| (*r).into()).collect();
    if let Some(reason) = host_facts::unmet(&requirements) {
        return Some(reason);
    }
    if let (TargetName::Real, Some(min)) = (config.target, &scenario.min_nydusd) {
        let version = nydusd_version(&config.nydusd);
        let too_old = version.as_ref().is_none_or(|v| version_less(v, min));
        if too_old {
            return Some(format!(
                "needs nydusd {min} or later; {} is {}",
                config.nydusd.display(),
                version.as_deref().unwrap_or("of unknown version")
            ));
        }
    }
    None
}

/// Why scenarios cannot run under the temporary directory `tmp`: a socket of theirs
/// (API, control, supervisor) would be longer than a Unix socket path may be, so every
/// daemon would fail to bind it and its start time out. Checked before anything runs.
pub fn socket_room_error(tmp: &Path, scenarios: &[&Scenario]) -> Option<String> {
    let longest_id = scenarios.iter().flat_map(|s| s.daemons.iter()).map(|d| d.id.value.len()).max()?;
    let root = tmp.join(format!("nydus-harness-{}", "X".repeat(6)));
    let id = "x".repeat(longest_id);
    let longest = [
        root.join("socket").join(&id).join("api99.sock"),
        root.join("control").join(format!("{id}.sock")),
        root.join("supervisor").join(format!("{id}.sock")),
    ]
    .into_iter()
    .map(|p| p.as_os_str().len())
    .max()?;
    let max = daemon_core::daemon::MAX_SOCKET_PATH;
    (longest > max).then(|| {
        format!(
            "the temporary directory {} ({} bytes) is too long: a daemon's socket under it would be {longest} bytes, past the {max} a Unix socket path may have; set TMPDIR to a directory of at most {} bytes",
            tmp.display(),
            tmp.as_os_str().len(),
            tmp.as_os_str().len().saturating_sub(longest - max)
        )
    })
}

/// The release the mock should behave as to stand beside the real nydusd `binary`: 2.2
/// for crates.io's build (which reports `unknown`) and any 2.2.x, else 2.4.
pub fn mock_version_for(binary: &Path) -> mock_nydusd::version::NydusdVersion {
    use mock_nydusd::version::NydusdVersion;
    match nydusd_version(binary) {
        None => NydusdVersion::V2_2,
        Some(v) if version_less(&v, "2.3") => NydusdVersion::V2_2,
        Some(_) => NydusdVersion::V2_4,
    }
}

/// `Version:` from `nydusd --version` (e.g. `v2.2.5` → `2.2.5`).
fn nydusd_version(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary).arg("--version").output().ok()?;
    let version = nydusd_api::version_output::parse(&String::from_utf8_lossy(&out.stdout)).package_ver;
    let v = version.trim_start_matches('v');
    let number = v.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
    // nydus-rs from crates.io reports `Version: unknown`.
    (!number.is_empty()).then(|| number.to_owned())
}

fn version_less(have: &str, min: &str) -> bool {
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    parse(have) < parse(min)
}

impl ScenarioResult {
    /// A scenario whose task panicked: a failure at set-up level carrying the message.
    pub fn panicked(path: PathBuf, name: String, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Self {
            path,
            name,
            duration: Duration::ZERO,
            failure: Some(Failure {
                keyword: "panic".into(),
                ..Failure::setup(format!("the harness panicked: {message}"))
            }),
            skipped: None,
            exchanges: Vec::new(),
            readers: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Runs `scenario` (loaded from `path`). Nothing it started survives this call.
pub async fn run_scenario(path: &Path, scenario: &Scenario, config: &RunConfig) -> ScenarioResult {
    let started = Instant::now();
    let mut result = ScenarioResult {
        path: path.to_owned(),
        name: scenario.name.clone(),
        duration: Duration::ZERO,
        failure: None,
        skipped: skip_reason(scenario, config),
        exchanges: Vec::new(),
        readers: Vec::new(),
        notes: Vec::new(),
    };
    if result.skipped.is_some() {
        return result;
    }
    result.failure = match crate::containment::Root::create() {
        Err(e) => Some(Failure::setup(format!("cannot create a temporary root: {e}"))),
        Ok(root) => match crate::containment::Ledger::claim(root.path()) {
            Err(e) => Some(Failure::setup(format!("cannot write the run's ledger in {}: {e}", root.path().display()))),
            Ok(ledger) => {
                let mut run = Run::new(Arc::new(root), Arc::new(ledger), config, scenario, path);
                let deadline = Duration::from_millis(scenario.timeout_ms);
                let outcome = tokio::time::timeout(deadline, run.execute()).await;
                let mut failure = match outcome {
                    Ok(outcome) => outcome.err(),
                    Err(_) => Some(run.activity.deadline_passed(scenario.timeout_ms)),
                };
                if let Some(f) = failure.as_mut() {
                    run.journal.record("step_failed", json!({ "n": f.step, "message": f.message }));
                    f.timeline = run.timeline(25);
                    if let Some(dir) = &config.bundles {
                        f.bundle = run.bundle(dir, path).ok();
                    }
                }
                run.teardown().await;
                result.exchanges = std::mem::take(&mut *run.exchanges.lock().unwrap_or_else(|e| e.into_inner()));
                result.readers = std::mem::take(&mut run.reader_stats);
                result.notes = std::mem::take(&mut run.notes);
                failure
            }
        },
    };
    result.duration = started.elapsed();
    result
}

/// Everything one scenario run holds.
pub(crate) struct Run<'a> {
    root: Layout,
    /// The root's directory, removed when the last holder lets go: the run, or a manager
    /// open still under way on a blocking thread after the run was dropped (which would
    /// otherwise make the root again, `Store::open` creating what it opens in).
    root_dir: Arc<crate::containment::Root>,
    /// Every process the run started, so teardown ends exactly those.
    pub(crate) ledger: Arc<crate::containment::Ledger>,
    config: &'a RunConfig,
    scenario: &'a Scenario,
    /// The scenario's file: paths such as a recording's are relative to its directory.
    scenario_path: &'a Path,
    binary: PathBuf,
    manager: Option<Manager>,
    events: Option<broadcast::Receiver<ManagerEvent>>,
    /// Every manager event received, in order, and how far `wait_event` has consumed it.
    seen: Vec<ManagerEvent>,
    /// Where the current manager's events begin in `seen`: a manager knows nothing of what
    /// an earlier one gave up on.
    current_manager_from: usize,
    consumed: BTreeMap<String, usize>,
    /// The events a `wait_event` has matched, by position in `seen`: an outcome some wait
    /// already accounted for cannot end a later one.
    claimed: std::collections::BTreeSet<usize>,
    journal: Journal,
    started_ns: u64,
    /// Every daemon object the scenario has had, by id (also after the manager forgot it).
    known: BTreeMap<String, Arc<Daemon>>,
    /// Running reader workloads: the process and its stop file.
    pub(crate) readers: BTreeMap<String, (std::process::Child, PathBuf)>,
    /// Every API exchange daemon-core had with the daemons, in order.
    exchanges: Arc<std::sync::Mutex<Vec<Exchange>>>,
    /// What each stopped reader saw.
    pub(crate) reader_stats: Vec<crate::reader::ReaderStats>,
    /// Readers that reported and stopped reading, but whose process could not end: a
    /// thread waits in the kernel for a FUSE answer. They end with the connection, at
    /// teardown.
    pub(crate) stuck_readers: Vec<std::process::Child>,
    /// See [`ScenarioResult::notes`].
    pub(crate) notes: Vec<String>,
    exchange_journal: Arc<Journal>,
    /// How many processes each daemon has had, across managers (`--mock-process`).
    spawned: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
    /// What the run is doing, for the report when the deadline passes.
    activity: Activity,
}

/// What a run is doing: a part of set-up, or a step.
#[derive(Debug, Clone)]
enum Activity {
    /// Set-up: `what`, for the declaration at `line` (0: none in particular).
    SetUp { what: String, line: u64 },
    /// Step `n` (1-based) at `line`.
    Step { n: usize, line: u64, keyword: &'static str },
}

impl Activity {
    /// The failure of a run whose deadline passed while it did this.
    fn deadline_passed(&self, timeout_ms: u64) -> Failure {
        let passed = format!("scenario deadline of {timeout_ms} ms passed");
        match self {
            Self::SetUp { what, line } => {
                Failure { line: *line, ..Failure::setup(format!("{passed} during set-up: {what}")) }
            }
            Self::Step { n, line, keyword } => {
                Failure::at_step(*n, *line, keyword, outcome::StepError::new(format!("{passed} while this step ran")))
            }
        }
    }
}

impl<'a> Run<'a> {
    fn new(
        root_dir: Arc<crate::containment::Root>,
        ledger: Arc<crate::containment::Ledger>,
        config: &'a RunConfig,
        scenario: &'a Scenario,
        scenario_path: &'a Path,
    ) -> Self {
        let root = Layout::new(root_dir.path());
        let logs = root.log_dir();
        let _ = std::fs::create_dir_all(&logs);
        let journal = Journal::open_as(&logs.join("harness.jsonl"), "harness").unwrap_or_default();
        Self {
            binary: config.nydusd.clone(),
            root,
            root_dir,
            ledger,
            config,
            scenario,
            scenario_path,
            manager: None,
            events: None,
            seen: Vec::new(),
            current_manager_from: 0,
            consumed: BTreeMap::new(),
            claimed: Default::default(),
            journal,
            started_ns: mock_nydusd::journal::monotonic_ns(),
            known: BTreeMap::new(),
            readers: BTreeMap::new(),
            exchanges: Arc::default(),
            reader_stats: Vec::new(),
            stuck_readers: Vec::new(),
            notes: Vec::new(),
            exchange_journal: Arc::new(
                Journal::open_as(&logs.join("client.jsonl"), "client").unwrap_or_else(|_| Journal::default()),
            ),
            spawned: Arc::default(),
            activity: Activity::SetUp { what: "preparing the root".into(), line: 0 },
        }
    }

    /// Records each exchange in memory and in `logs/client.jsonl`.
    fn exchange_observer(&self) -> ExchangeObserver {
        let (all, journal) = (self.exchanges.clone(), self.exchange_journal.clone());
        ExchangeObserver::new(move |exchange: Exchange| {
            let fields = serde_json::to_value(&exchange).unwrap_or_default();
            journal.record("exchange", fields);
            all.lock().unwrap_or_else(|e| e.into_inner()).push(exchange);
        })
    }

    fn mock_journal(&self) -> PathBuf {
        target::Mock.daemon_journal(&self.root)
    }

    /// What differs on this run's target.
    fn target(&self) -> &'static dyn Target {
        match self.config.target {
            TargetName::Mock => &target::Mock,
            TargetName::Real => &target::Real,
        }
    }

    fn script_file(&self, id: &str) -> PathBuf {
        self.root.root().join("scripts").join(format!("{id}.json"))
    }

    fn control_socket(&self, id: &str) -> PathBuf {
        self.root.root().join("control").join(format!("{id}.sock"))
    }

    /// Deadlines for daemon waits, from the scenario's manager section.
    fn timeouts(&self) -> Timeouts {
        let m = &self.scenario.manager;
        Timeouts {
            socket: Duration::from_millis(m.socket_timeout_ms),
            state: Duration::from_millis(m.state_timeout_ms),
            request: Duration::from_millis(m.request_timeout_ms),
            supervisor: Duration::from_millis(m.supervisor_timeout_ms),
            exit: Duration::from_millis(m.exit_timeout_ms),
            ..Timeouts::default()
        }
    }

    fn fs_driver(&self) -> daemon_core::daemon::FsDriver {
        self.scenario.manager.fs_driver
    }

    /// The mock's flags: one journal, no deliberate aborts, a stand-in for
    /// `/dev/cachefiles`; per daemon, its control socket, its process count, FUSE when the
    /// scenario asks, and its script.
    fn mock_args(&self) -> (Vec<OsString>, PerDaemonArgs) {
        let mut args: Vec<OsString> = vec![];
        args.extend(["--mock-journal".into(), self.mock_journal().into(), "--mock-no-abort".into()]);
        // After the run's own arguments (`harness diff` names the real nydusd's release), so
        // that a scenario's pin wins: the mock takes the last of the flag.
        if let Some(version) = self.scenario.mock_nydusd {
            args.extend(["--mock-nydusd-version".into(), version.as_str().into()]);
        }
        // A singleton mock probes this file instead of /dev/cachefiles at start-up.
        args.extend(["--mock-cachefiles".into(), self.root.root().join("cachefiles").into()]);
        let scripts = self.root.root().join("scripts");
        let controls = self.root.root().join("control");
        let fuse: Vec<String> = self.scenario.daemons.iter().filter(|d| d.fuse).map(|d| d.id.value.clone()).collect();
        let spawned = self.spawned.clone();
        let per_daemon = PerDaemonArgs::new(move |id| {
            let process = {
                let mut counts = spawned.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(id.to_owned()).or_default();
                *n += 1;
                *n
            };
            let mut extra: Vec<OsString> = vec![
                "--mock-control".into(),
                controls.join(format!("{id}.sock")).into(),
                "--mock-process".into(),
                process.to_string().into(),
            ];
            if fuse.iter().any(|f| f == id) {
                extra.push("--mock-fuse".into());
            }
            let script = scripts.join(format!("{id}.json"));
            if script.exists() {
                extra.extend(["--mock-script".into(), script.into()]);
            }
            extra
        });
        (args, per_daemon)
    }

    fn manager_config(&self) -> ManagerConfig {
        let (target_args, per_daemon) = self.target().daemon_args(self);
        let mut args = self.config.extra_args.clone();
        args.extend(target_args);
        ManagerConfig {
            layout: self.root.clone(),
            nydusd: self.binary.clone(),
            fs_driver: self.fs_driver(),
            recover_policy: self.scenario.manager.recover_policy,
            timeouts: self.timeouts(),
            spawn: SpawnExtras {
                args,
                output: Some(self.root.log_dir().join("daemons.log")),
                // Daemons outlive a killed manager; teardown kills them from the ledger.
                kill_on_drop: false,
                observer: Some({
                    let ledger = self.ledger.clone();
                    daemon_core::daemon::SpawnObserver::new(move |_, pid| ledger.started(pid))
                }),
                ..SpawnExtras::default()
            },
            fscache_dir: Some(self.root.root().join("cache")),
            per_daemon_args: per_daemon,
            exchange_observer: Some(self.exchange_observer()),
            recovery: daemon_core::manager::RecoveryRetry {
                attempts: self.scenario.manager.recovery_attempts.get(),
                backoff: Duration::from_millis(self.scenario.manager.recovery_backoff_ms),
                ..Default::default()
            },
            reply_limit: daemon_core::api::client::DEFAULT_REPLY_LIMIT,
        }
    }

    /// Opens the manager on the root's store, off the async workers: opening a store can
    /// block (a FIFO where the database should be), and the deadline must still fire.
    pub(crate) async fn open_manager(&mut self) -> Result<(), String> {
        let config = self.manager_config();
        let root_dir = self.root_dir.clone();
        // The root goes with the result: after the manager (the store's files) when this
        // wait is abandoned and the result dropped unread.
        let (manager, _root_dir) = tokio::task::spawn_blocking(move || (Manager::open(config), root_dir))
            .await
            .map_err(|e| format!("opening the manager: {e}"))?;
        let manager = manager.map_err(|e| error_chain(&e))?;
        self.current_manager_from = self.seen.len();
        self.events = Some(manager.subscribe());
        self.manager = Some(manager);
        Ok(())
    }

    pub(crate) fn manager(&self) -> Result<&Manager, String> {
        self.manager.as_ref().ok_or_else(|| "the manager is not running (killed by an earlier step)".to_owned())
    }

    /// The daemon `id`: the manager's object, or the last one the scenario saw if the
    /// manager no longer has it (forgotten, destroyed, or the manager was killed).
    pub(crate) fn daemon(&self, id: &str) -> Result<Arc<Daemon>, String> {
        self.manager
            .as_ref()
            .and_then(|m| m.get_daemon(id))
            .or_else(|| self.known.get(id).cloned())
            .ok_or_else(|| format!("daemon {id} is not managed"))
    }

    fn remember_daemons(&mut self) {
        if let Some(manager) = &self.manager {
            for daemon in manager.list_daemons() {
                self.known.insert(daemon.id(), daemon);
            }
        }
    }

    async fn execute(&mut self) -> Result<(), Failure> {
        let setup = |e: String| Failure::setup(e);
        std::fs::create_dir_all(self.root.root().join("scripts")).map_err(|e| setup(e.to_string()))?;
        std::fs::create_dir_all(self.root.root().join("control")).map_err(|e| setup(e.to_string()))?;
        std::fs::create_dir_all(self.root.root().join("cache")).map_err(|e| setup(e.to_string()))?;
        std::fs::write(self.root.root().join("cachefiles"), b"").map_err(|e| setup(e.to_string()))?;
        self.binary = self.target().daemon_binary(&self.root, &self.config.nydusd).map_err(|e| setup(e.to_string()))?;
        self.activity = Activity::SetUp { what: "opening the manager's store".into(), line: 0 };
        self.open_manager().await.map_err(setup)?;
        for spec in &self.scenario.daemons {
            let (id, line) = (&spec.id.value, spec.id.referenced.line());
            self.activity = Activity::SetUp { what: format!("creating daemon {id}"), line };
            // Between daemons the deadline gets its chance even when every creation is quick.
            tokio::task::yield_now().await;
            self.create_daemon(spec).await.map_err(|e| Failure { line, ..setup(format!("daemon {id}: {e}")) })?;
        }
        self.remember_daemons();
        for (index, step) in self.scenario.steps.iter().enumerate() {
            let n = index + 1;
            let line = step.referenced.line();
            self.activity = Activity::Step { n, line, keyword: step.value.keyword() };
            self.journal.record("step", json!({ "n": n, "keyword": step.value.keyword(), "line": line }));
            let began = std::time::Instant::now();
            let done = self.step(&step.value).await;
            let what = steps::what(&step.value);
            let mut outcome =
                outcome::judge(&what, done, step.value.expected_error(), step.value.may_fail(), &self.journal);
            if let (Ok(()), Some(within)) = (&outcome, step.value.expected_error().and_then(|e| e.within_ms)) {
                let took = began.elapsed();
                if took > Duration::from_millis(within) {
                    outcome = Err(outcome::StepError::mismatch(
                        format!("{} failed as expected, but too late", step.value.keyword()),
                        format!("within {within} ms"),
                        format!("after {} ms", took.as_millis()),
                    ));
                }
            }
            self.drain_events();
            self.remember_daemons();
            if let Err(e) = outcome {
                return Err(Failure::at_step(n, line, step.value.keyword(), e));
            }
        }
        self.drain_events();
        self.never_event_seen().map_or(Ok(()), Err)
    }

    /// Moves manager events into `seen`, journaling each.
    pub(crate) fn drain_events(&mut self) {
        let Some(events) = self.events.as_mut() else { return };
        loop {
            match events.try_recv() {
                Ok(event) => {
                    self.journal.record("manager", json!({ "what": steps::describe_event(&event) }));
                    self.seen.push(event);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// Receives one more event, up to `deadline`.
    pub(crate) async fn next_event(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(events) = self.events.as_mut() else { return false };
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                self.journal.record("manager", json!({ "what": steps::describe_event(&event) }));
                self.seen.push(event);
                true
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => true,
            _ => false,
        }
    }

    async fn write_instance_files(&self, daemon: &Daemon, spec: &InstanceSpec) -> Result<Rafs, String> {
        let io = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
        let rafs = Rafs::new(
            &self.root.snapshots_dir(),
            &spec.snapshot.value,
            "registry.example/scenario:1",
            daemon.record().fs_driver,
        );
        let boot = rafs.snapshot_dir.join("fs/image/image.boot");
        std::fs::create_dir_all(boot.parent().expect("has a parent")).map_err(|e| io(&boot, e))?;
        let fscache = daemon.record().fs_driver == daemon_core::daemon::FsDriver::Fscache;
        if self.target().builds_images() && !fscache {
            let images = image::ImageStore::under(self.root.root());
            let source = self.root.root().join("trees").join(&spec.snapshot.value);
            images.build(&image::nydus_image_for(&self.binary), &spec.tree, &source, &boot).await?;
            let config = spec.config.clone().unwrap_or_else(|| images.config());
            return self.write_instance_config(daemon, spec, rafs, config);
        }
        // The mock serves the instance's files from this JSON stand-in for a RAFS bootstrap.
        let files: serde_json::Map<String, serde_json::Value> = spec
            .tree
            .files()
            .map(|(path, file)| {
                let value = match file {
                    crate::scenario::tree::FileSpec::Text(t) => serde_json::Value::from(t.as_str()),
                    crate::scenario::tree::FileSpec::Sized { size } => json!({ "size": size.get() }),
                };
                (path.to_owned(), value)
            })
            .collect();
        std::fs::write(&boot, json!({ "mock_tree": files }).to_string()).map_err(|e| io(&boot, e))?;
        let config = spec.config.clone().unwrap_or_else(|| {
            if fscache {
                // The blob-cache entry the snapshotter binds for an fscache instance.
                serde_json::json!({
                    "type": "bootstrap", "id": spec.snapshot, "domain_id": spec.snapshot,
                    "config": {"id": spec.snapshot, "backend_type": "localfs",
                               "backend_config": {"dir": "/var/lib/blobs"}, "cache_type": "fscache",
                               "cache_config": {"work_dir": self.root.root().join("cache")}, "metadata_path": boot}
                })
                .to_string()
            } else {
                // What the real target uses too, so that differential runs compare like with like.
                image::ImageStore::under(self.root.root()).config()
            }
        });
        self.write_instance_config(daemon, spec, rafs, config)
    }

    /// Writes an instance's configuration (with the scenario's padding) where its daemon
    /// reads it, and gives the instance its mountpoint.
    fn write_instance_config(
        &self,
        daemon: &Daemon,
        spec: &InstanceSpec,
        rafs: Rafs,
        mut config: String,
    ) -> Result<Rafs, String> {
        let io = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
        let fscache = daemon.record().fs_driver == daemon_core::daemon::FsDriver::Fscache;
        if spec.padding.get() > 0
            && let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(&config)
        {
            map.insert("padding".into(), serde_json::Value::String("x".repeat(spec.padding.as_usize())));
            config = serde_json::Value::Object(map).to_string();
        }
        let file = daemon.record().config_file(Some(&spec.snapshot.value));
        std::fs::create_dir_all(file.parent().expect("has a parent")).map_err(|e| io(&file, e))?;
        std::fs::write(&file, &config).map_err(|e| io(&file, e))?;
        let mountpoint = if fscache {
            rafs.snapshot_dir.join("mnt")
        } else if daemon.record().is_shared() {
            daemon.host_mountpoint().join(&spec.snapshot.value)
        } else {
            // A dedicated daemon's instance is its host mount; it also gets the config.
            std::fs::write(daemon.record().config_file(None), &config).map_err(|e| io(&file, e))?;
            daemon.host_mountpoint()
        };
        Ok(Rafs { mountpoint, ..rafs })
    }

    pub(crate) async fn instance(&self, daemon: &Daemon, spec_daemon: &str, snapshot: &str) -> Result<Rafs, String> {
        let spec = self
            .scenario
            .daemons
            .iter()
            .find(|d| d.id.value == spec_daemon)
            .and_then(|d| d.instances.iter().find(|i| i.snapshot.value == snapshot))
            .ok_or_else(|| format!("daemon {spec_daemon} declares no instance {snapshot:?}"))?;
        self.write_instance_files(daemon, spec).await
    }

    async fn create_daemon(&mut self, spec: &DaemonSpec) -> Result<(), String> {
        let mode = spec.mode;
        let options = DaemonOptions {
            id: Some(spec.id.value.clone()),
            mode,
            fs_driver: self.fs_driver(),
            thread_num: spec.thread_num,
            supervisor: spec.supervisor,
            failover_policy: spec.failover_policy.map(Into::into),
            ..Default::default()
        };
        let daemon = Daemon::create(&self.root, options, self.timeouts()).map_err(|e| error_chain(&e))?;
        let mountpoint = daemon.host_mountpoint();
        std::fs::create_dir_all(&mountpoint).map_err(|e| format!("cannot create {}: {e}", mountpoint.display()))?;
        if spec.supervisor {
            let dir = self.root.supervisor_dir();
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        if let Some(script) = &spec.script {
            self.write_script(&spec.id.value, script)?;
        }
        if let Some(file) = &spec.script_file {
            // Copied, not linked: a `script` step later writes this file, and must never
            // write through a link into the scenario's directory.
            let dir = self.scenario_path.parent().unwrap_or(Path::new("."));
            let source = crate::scenario::paths::join_inside(dir, &file.value)?;
            let copy = self.script_file(&spec.id.value);
            std::fs::copy(&source, &copy)
                .map_err(|e| format!("cannot copy {} to {}: {e}", source.display(), copy.display()))?;
        }
        let manager = self.manager()?.clone();
        let daemon = manager.add_daemon(daemon).map_err(|e| error_chain(&e))?;
        if mode == DaemonMode::Dedicated && self.fs_driver() == daemon_core::daemon::FsDriver::Fusedev {
            // nydusd mounts a dedicated daemon's instance from its command line, so the
            // instance must be known before the first start; one is made up if none is given.
            let default = InstanceSpec {
                snapshot: spec.id.clone(),
                config: None,
                padding: Default::default(),
                tree: Default::default(),
            };
            let first = spec.instances.first().unwrap_or(&default);
            let rafs = self.write_instance_files(&daemon, first).await?;
            manager.add_rafs_instance(&daemon, rafs).map_err(|e| error_chain(&e))?;
        }
        Ok(())
    }

    pub(crate) fn write_script(&self, id: &str, script: &mock_nydusd::script::Script) -> Result<(), String> {
        let file = self.script_file(id);
        let text = serde_json::to_string_pretty(script).map_err(|e| e.to_string())?;
        std::fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))
    }

    /// The merged timeline's last `lines` entries, formatted. A mock journals each request
    /// itself; for a real nydusd the client's side of the conversation stands in.
    fn timeline(&self, lines: usize) -> Vec<String> {
        let harness = self.root.log_dir().join("harness.jsonl");
        let daemons = self.target().daemon_journal(&self.root);
        let all = timeline::describe_all(&timeline::merge(&[&harness, &daemons]), self.started_ns);
        all[all.len().saturating_sub(lines)..].to_vec()
    }

    /// Copies what a reader needs to reproduce a failure: the scenario, every journal and
    /// log, the scripts, and the store.
    fn bundle(&self, dir: &Path, scenario: &Path) -> std::io::Result<PathBuf> {
        let name: String =
            self.scenario.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        // One bundle per failing run, never shared: repeats of one scenario and scenarios
        // whose names sanitise alike each get their own.
        std::fs::create_dir_all(dir)?;
        let target = loop {
            let n = BUNDLES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let target = dir.join(format!("{name}-{}-run{n}", std::process::id()));
            match std::fs::create_dir(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                created => break created.map(|()| target)?,
            }
        };
        std::fs::copy(scenario, target.join(scenario.file_name().unwrap_or_default()))?;
        copy_tree(&self.root.log_dir(), &target.join("logs"))?;
        copy_tree(&self.root.root().join("scripts"), &target.join("scripts"))?;
        let timeline = self.timeline(usize::MAX).join("\n");
        std::fs::write(target.join("timeline.txt"), timeline + "\n")?;
        for db in ["nydus.db", "nydus.db-wal"] {
            let _ = std::fs::copy(self.root.root().join(db), target.join(db));
        }
        Ok(target)
    }

    /// Kills every process the run started (its ledger: pid and start time, with its
    /// process group, so anything it forked goes too; never a process that merely names
    /// the root), reaps what is ours, and detaches every mount under the root, deepest
    /// first.
    async fn teardown(&mut self) {
        // As a crash: the manager's tasks end before its daemons are killed, so no
        // recovery starts another one behind the sweep.
        if let Some(manager) = self.manager.take() {
            manager.abort().await;
        }
        self.kill_everything();
        // Reaping is done by daemon-core's per-process reaper tasks; give them a moment so
        // no zombie outlives the scenario, without waiting on anything that cannot end.
        // Whatever appears meanwhile is killed too: a restart or failover task of the
        // dropped manager runs until the runtime stops, and may spawn one more daemon.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.ledger.kill_all() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.detach_mounts();
    }

    /// Drops the manager, stops readers, aborts FUSE connections under the root (nothing
    /// stays blocked on a dead daemon) and SIGKILLs every process the run started.
    ///
    /// Readers are reaped only after the abort: a reader waiting for the answer to a
    /// request a dead daemon had read cannot even be killed until its connection ends.
    fn kill_everything(&mut self) {
        self.manager = None;
        self.events = None;
        let mut readers: Vec<std::process::Child> = std::mem::take(&mut self.stuck_readers);
        for (_, (mut reader, stop)) in std::mem::take(&mut self.readers) {
            let _ = std::fs::write(&stop, b"");
            let _ = reader.kill();
            readers.push(reader);
        }
        daemon_core::mount::abort_fuse_connections_under(self.root.root());
        self.ledger.kill_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        for mut reader in readers {
            let _ = reader.kill();
            while matches!(reader.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    fn detach_mounts(&self) {
        for mount in mounts_under(self.root.root()).iter().rev() {
            let _ = daemon_core::mount::umount_lazy(mount);
        }
    }
}

impl Drop for Run<'_> {
    /// The last line of defence when a scenario's future is dropped without teardown
    /// (Ctrl-C aborts it): the same clean-up, synchronously.
    fn drop(&mut self) {
        self.kill_everything();
        // The dropped manager's tasks run on other worker threads until the runtime stops
        // (seen once: Ctrl-C during chaos left a daemon a failover spawned just after the
        // sweep). Sweep until the root has been quiet for QUIET, for at most DROP_SWEEP.
        const QUIET: Duration = Duration::from_millis(20);
        const DROP_SWEEP: Duration = Duration::from_millis(300);
        let (started, mut quiet_since) = (Instant::now(), Instant::now());
        while started.elapsed() < DROP_SWEEP && quiet_since.elapsed() < QUIET {
            std::thread::sleep(Duration::from_millis(5));
            if self.ledger.kill_all() > 0 {
                quiet_since = Instant::now();
            }
        }
        self.detach_mounts();
    }
}

/// How many repro bundles this process has written.
static BUNDLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()))?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Live (non-zombie) processes whose command line contains `text`.
pub(crate) fn processes_naming(text: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| host_facts::process::state(*pid).is_some_and(|s| s != 'Z'))
        .filter(|pid| host_facts::process::cmdline(*pid).is_some_and(|args| args.iter().any(|a| a.contains(text))))
        .collect()
}

/// Mountpoints at or under `root`, in mountinfo order.
pub(crate) fn mounts_under(root: &Path) -> Vec<PathBuf> {
    host_facts::mountinfo::under(root).into_iter().map(|m| m.mount_point).collect()
}
