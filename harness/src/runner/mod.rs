//! Runs one scenario in a temporary root of its own, against mock-nydusd (the harness
//! binary itself, linked in as `nydusd`) or a real nydusd, through daemon-core's manager.
//!
//! Every process the scenario starts is recorded in the root's ledger (pid and start
//! time, `containment`) and killed with its process group at the end, and every mount
//! under the root is detached, on every exit path: pass, failure, deadline, panic of a
//! step, or Ctrl-C. A SIGKILLed harness leaves the ledger for the next run's sweep.

mod bundle;
mod error;
mod event_log;
pub mod image;
mod lanes;
mod outcome;
mod root;
mod rule_counts;
mod scenario_state;
mod setup;
mod steps;
mod target;
pub(crate) mod teardown;
pub mod timeline;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_core::api::Exchange;
use daemon_core::manager::Manager;
use serde_json::json;

use crate::scenario::model::{Scenario, Target as TargetName};
use error::RunError;
use event_log::EventLog;
use root::ScenarioRoot;
use scenario_state::ScenarioState;

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

/// The end of one log a scenario's daemons wrote (JUnit's `system-err`, the JSON report's
/// `failure.logs`).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogTail {
    /// The file, relative to the run's `logs/` (`daemons.log`: every daemon's output).
    pub name: String,
    /// Its whole size in bytes.
    pub bytes: u64,
    /// Its end, from the start of a line, lossily decoded.
    pub text: String,
}

/// How much of each daemon log a report keeps.
pub const LOG_TAIL_BYTES: u64 = 16 * 1024;

struct Tail {
    total: u64,
    text: String,
}

/// The last `max` bytes of `path`, from the first line that starts inside them.
fn read_tail(path: &Path, max: u64) -> std::io::Result<Tail> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let total = file.metadata()?.len();
    let from = total.saturating_sub(max);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    let start = if from > 0 { bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1) } else { 0 };
    Ok(Tail { total, text: withhold_secrets(&String::from_utf8_lossy(&bytes[start..])) })
}

/// `text` with every line that may hold a credential (a daemon logging its configuration)
/// withheld: the tail goes into reports, which leave the host.
fn withhold_secrets(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            if session_record::redact::may_hold_a_secret(line.as_bytes()) {
                let end = if line.ends_with('\n') { "\n" } else { "" };
                format!("[line withheld: it may hold a credential]{end}")
            } else {
                line.to_owned()
            }
        })
        .collect()
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

/// `/dev/cachefiles` has one opener at a time (EBUSY for the next), as nydusd has one
/// fscache daemon per host: scenarios whose daemons bind it run one after another, in this
/// process (this lock) and across harness processes ([`lock_cachefiles_across_processes`]).
static CACHEFILES_DEVICE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An exclusive flock on the cachefiles module's sysfs directory, which every host with
/// on-demand fscache has and nothing else locks: another harness process waits for it
/// instead of failing to open the device (no file is created for it). `None` where the
/// module is built in (no such directory), leaving the in-process lock only.
async fn lock_cachefiles_across_processes() -> Option<nix::fcntl::Flock<std::fs::File>> {
    let dir = std::fs::File::open("/sys/module/cachefiles").ok()?;
    let locked = tokio::task::spawn_blocking(move || nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive));
    locked.await.ok()?.ok()
}

/// Whether the scenario's daemons bind the kernel's `/dev/cachefiles` here.
fn binds_cachefiles(scenario: &Scenario) -> bool {
    scenario.manager.fs_driver == daemon_core::daemon::FsDriver::Fscache
        && !scenario.daemons.is_empty()
        && host_facts::Requirement::Cachefiles.check().is_ok()
}

/// Runs `scenario` (loaded from `path`). Nothing it started survives this call.
pub async fn run_scenario(path: &Path, scenario: &Scenario, config: &RunConfig) -> ScenarioResult {
    let _device = if binds_cachefiles(scenario) {
        Some((CACHEFILES_DEVICE.lock().await, lock_cachefiles_across_processes().await))
    } else {
        None
    };
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
                let mut run = Run::new(ScenarioRoot::new(Arc::new(root), Arc::new(ledger)), config, scenario, path);
                let deadline = Duration::from_millis(scenario.timeout_ms);
                let outcome = tokio::time::timeout(deadline, run.execute()).await;
                let mut failure = match outcome {
                    Ok(outcome) => outcome.err(),
                    Err(_) => Some(run.activities.deadline_passed(scenario.timeout_ms)),
                };
                if let Some(f) = failure.as_mut() {
                    run.log.journal.record("step_failed", json!({ "n": f.step, "message": f.message }));
                    f.timeline = run.timeline();
                    f.logs = run.log_tails();
                    if let Some(dir) = &config.bundles {
                        f.bundle = run.bundle(dir, path).ok();
                    }
                }
                run.teardown().await;
                result.exchanges = std::mem::take(&mut *run.log.exchanges.lock().unwrap_or_else(|e| e.into_inner()));
                let state = run.state.get_mut().unwrap_or_else(|e| e.into_inner());
                result.readers = std::mem::take(&mut state.reader_stats);
                result.notes = std::mem::take(&mut state.notes);
                failure
            }
        },
    };
    result.duration = started.elapsed();
    result
}

/// One scenario run: what it runs (the scenario, the target), where (its root), what it
/// has running (its state) and what it saw (its log).
pub(crate) struct Run<'a> {
    config: &'a RunConfig,
    scenario: &'a Scenario,
    /// The scenario's file: paths such as a recording's are relative to its directory.
    scenario_path: &'a Path,
    /// The daemons' binary on this target.
    binary: PathBuf,
    pub(crate) root: ScenarioRoot,
    /// What it has running; every lane's steps share it, each lock held for a moment.
    pub(crate) state: std::sync::Mutex<ScenarioState>,
    /// How managers are configured: the scenario's `manager` section, as the last
    /// `restart_manager` changed it.
    manager_spec: std::sync::Mutex<crate::scenario::model::ManagerSpec>,
    pub(crate) log: EventLog,
    /// What each lane is doing, for the report when the deadline passes.
    activities: lanes::Activities,
    /// The scenario's background groups: started, finished.
    groups: lanes::Groups,
    /// Bumped when a step kills or closes the manager: the manager's operations still
    /// running in other lanes end with it, as a crash ends them.
    manager_ended: tokio::sync::watch::Sender<u64>,
    /// Each daemon's mock script as last set, for the rules' `times`.
    scripts: rule_counts::Scripts,
}

impl<'a> Run<'a> {
    fn new(root: ScenarioRoot, config: &'a RunConfig, scenario: &'a Scenario, scenario_path: &'a Path) -> Self {
        let log = EventLog::open(&root.layout.log_dir());
        Self {
            config,
            scenario,
            scenario_path,
            binary: config.nydusd.clone(),
            root,
            state: Default::default(),
            manager_spec: std::sync::Mutex::new(scenario.manager.clone()),
            log,
            activities: lanes::Activities::default(),
            groups: lanes::Groups::of(&scenario.steps),
            manager_ended: tokio::sync::watch::channel(0).0,
            scripts: rule_counts::Scripts::default(),
        }
    }

    /// The scenario's running parts, for a moment: never held across an await.
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, ScenarioState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How the next manager is configured.
    pub(crate) fn manager_spec(&self) -> crate::scenario::model::ManagerSpec {
        self.manager_spec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn manager(&self) -> Result<Manager, RunError> {
        self.state().manager().cloned()
    }

    /// The daemon `id`: the manager's object, or the last one the scenario saw.
    pub(crate) fn daemon(&self, id: &str) -> Result<Arc<daemon_core::Daemon>, RunError> {
        self.state().daemon(id)
    }

    async fn execute(&mut self) -> Result<(), Failure> {
        let setup = |e: &dyn std::error::Error| Failure::setup(daemon_core::daemon::error_chain(e));
        self.root.prepare().map_err(|e| setup(&RunError::io("prepare", self.root.path())(e)))?;
        self.binary = self
            .target()
            .daemon_binary(&self.root.layout, &self.config.nydusd)
            .map_err(|e| setup(&RunError::io("install the daemon binary under", self.root.path())(e)))?;
        self.activities.set_up("opening the manager's store".into(), 0);
        self.open_manager().await.map_err(|e| setup(&e))?;
        for spec in &self.scenario.daemons {
            let (id, line) = (&spec.id.value, spec.id.referenced.line());
            self.activities.set_up(format!("creating daemon {id}"), line);
            // Between daemons the deadline gets its chance even when every creation is quick.
            tokio::task::yield_now().await;
            self.create_daemon(spec).await.map_err(|e| Failure { line, ..setup(&e) })?;
        }
        self.state().remember_daemons();
        self.run_steps().await?;
        self.log.drain();
        if let Some(failure) = self.never_event_seen() {
            return Err(failure);
        }
        self.rules_fired_wrongly().map_or(Ok(()), Err)
    }

    /// The whole merged timeline: the harness's steps, the manager's events, each daemon
    /// process's journal (the injector's in front of a real nydusd) and the client's
    /// requests that got no reply.
    fn timeline(&self) -> Vec<timeline::TimelineEntry> {
        let harness = self.root.layout.log_dir().join("harness.jsonl");
        let daemons = self.target().daemon_journal(&self.root.layout);
        let mut all = timeline::merge(&[&harness, &daemons]);
        all.extend(timeline::client_failures(&self.root.layout.log_dir().join("client.jsonl")));
        all.sort_by_key(|e| e["t_ns"].as_u64().unwrap_or(0));
        timeline::entries(&all, self.log.started_ns)
    }

    /// The end of each log the daemons wrote (their output, their `--log-file`), for the
    /// reports: at most [`LOG_TAIL_BYTES`] of each, from a line's start.
    fn log_tails(&self) -> Vec<LogTail> {
        let dir = self.root.layout.log_dir();
        let mut files = Vec::new();
        let mut pending = vec![dir.clone()];
        while let Some(at) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&at) else { continue };
            for entry in entries.flatten() {
                let (path, kind) = (entry.path(), entry.file_type());
                // Directories one level down (a daemon's own); the journals are the timeline's.
                match kind {
                    Ok(k) if k.is_dir() && at == dir => pending.push(path),
                    Ok(k) if k.is_file() && path.extension().is_none_or(|e| e != "jsonl") => files.push(path),
                    _ => {}
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|path| {
                let tail = read_tail(&path, LOG_TAIL_BYTES).ok()?;
                let name = path.strip_prefix(&dir).unwrap_or(&path).display().to_string();
                (!tail.text.is_empty()).then_some(LogTail { name, bytes: tail.total, text: tail.text })
            })
            .collect()
    }
}

#[cfg(test)]
mod log_tail_tests {
    /// A log line naming a credential's key never reaches a report; the others do.
    #[test]
    fn lines_that_may_hold_a_credential_are_withheld() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("nydusd.log");
        let mut text = "x".repeat(100) + "\n";
        text += "INFO rafs config {\"auth\":\"dXNlcjpzZWNyZXQ=\"}\nINFO mounted /app\n";
        std::fs::write(&log, &text).unwrap();
        let tail = super::read_tail(&log, 80).unwrap();
        assert_eq!(tail.total, text.len() as u64);
        assert_eq!(tail.text, "[line withheld: it may hold a credential]\nINFO mounted /app\n");
    }
}
