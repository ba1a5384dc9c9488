//! `harness run`: runs the selected scenarios a few at a time, prints each as it ends,
//! and writes the reports, in which every selected scenario appears.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::progress::{Painter, Running};
use super::selection::Selection;
use super::{TargetArg, exit_code, interrupted_by, say};
use crate::report::{self, Entry, NotRun, RunReport};
use crate::runner::{RunConfig, ScenarioResult, run_scenario};
use crate::scenario::Scenario;
use crate::scenario::model::Target;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub daemons: Daemons,
    /// Extra argument for every daemon (repeatable), e.g. `--daemon-arg=--rlimit-nofile --daemon-arg=0`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    pub daemon_args: Vec<OsString>,
    /// Scenarios run at once (default: number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run every scenario even after a failure (default: stop starting new ones; those not
    /// started are reported as not run).
    #[arg(long)]
    pub keep_going: bool,
    /// Stop starting new scenarios after N failures (default 1; `--keep-going`: never).
    /// A scenario that passed on a retry is not a failure.
    #[arg(long, value_name = "N", conflicts_with = "keep_going", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fail: Option<u32>,
    /// Run a failed scenario again, up to N times (0-10), instead of each file's own
    /// `retries`: one that passes on a retry is FLAKY (counted as passed, and reported with
    /// every attempt).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=crate::scenario::bounded::MAX_RETRIES))]
    pub retries: Option<u64>,
    /// Run each selected scenario N times (hunting flakes); each run is its own test case,
    /// shown as `run k/N`, and the recap gives each scenario's pass rate [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: Option<u32>,
    /// Shuffle the order with this seed (printed, so a run can be repeated exactly).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print a SLOW line for a scenario still running after this many seconds [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub slow_after: Option<f64>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a JSON report here (its schema: `harness schema --report`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory for repro bundles of failing scenarios (default: <tmp>/harness-failures).
    #[arg(long)]
    pub bundles: Option<PathBuf>,
    /// Take the options this command line does not give from this profile of the
    /// configuration (`.config/harness.toml`; every profile inherits from `default`).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// The configuration file (default: `.config/harness.toml`, when there is one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The most seconds `--slow-after` takes: a day, past any scenario's deadline.
const MAX_SLOW_AFTER: f64 = 86_400.0;

/// Seconds from 0 to [`MAX_SLOW_AFTER`]: a float past `Duration`'s range (or NaN) panicked.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    check_seconds(seconds)
}

fn check_seconds(seconds: f64) -> Result<f64, String> {
    if (0.0..=MAX_SLOW_AFTER).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("{seconds} seconds: give 0 to {MAX_SLOW_AFTER}"))
    }
}

impl RunArgs {
    /// Runs of each scenario.
    fn repeat(&self) -> u32 {
        self.repeat.unwrap_or(1)
    }

    /// These options, with what the command line left out taken from the profile; a
    /// profile's expression that does not parse is refused with the profile named.
    fn with_profile(mut self) -> Result<Self, Refusal> {
        let usage = |why: String| Refusal::new(exit_code::USAGE, why);
        let profile = super::profile::resolve(self.config.as_deref(), self.profile.as_deref())
            .map_err(|e| usage(e.to_string()))?;
        let name = self.profile.clone().unwrap_or_else(|| "default".into());
        self.jobs = self.jobs.or(profile.jobs);
        self.retries = self.retries.or(profile.retries);
        if profile.keep_going == Some(true) && profile.max_fail.is_some() {
            return Err(usage(format!("profile {name}: give keep-going or max-fail, not both")));
        }
        if !self.keep_going && self.max_fail.is_none() {
            self.keep_going = profile.keep_going.unwrap_or(false);
            self.max_fail = if self.keep_going { None } else { profile.max_fail };
        }
        self.repeat = self.repeat.or(profile.repeat);
        if let Some(seconds) = profile.slow_after {
            check_seconds(seconds).map_err(|e| usage(format!("profile {name}: slow-after: {e}")))?;
        }
        self.slow_after = self.slow_after.or(profile.slow_after);
        self.junit = self.junit.take().or(profile.junit);
        self.json = self.json.take().or(profile.json);
        self.bundles = self.bundles.take().or(profile.bundles);
        if self.daemon_args.is_empty() {
            self.daemon_args = profile.daemon_args.unwrap_or_default().into_iter().map(OsString::from).collect();
        }
        self.daemons.target = self.daemons.target.or(profile.target.map(Into::into));
        self.daemons.nydusd = self.daemons.nydusd.take().or(profile.nydusd);
        if self.selection.filters.is_empty() {
            self.selection.filters = profile.filter.unwrap_or_default();
        }
        if self.selection.exprs.is_empty() {
            for text in profile.expr.unwrap_or_default() {
                let expr =
                    super::filterset::parse(&text).map_err(|e| usage(format!("profile {name}: expr {text:?}: {e}")))?;
                self.selection.exprs.push(expr);
            }
        }
        let retries_bound = crate::scenario::bounded::MAX_RETRIES;
        if self.retries.is_some_and(|r| r > retries_bound) {
            return Err(usage(format!("profile {name}: retries is at most {retries_bound}")));
        }
        if self.repeat == Some(0) || self.max_fail == Some(0) {
            return Err(usage(format!("profile {name}: repeat and max-fail are at least 1")));
        }
        Ok(self)
    }
}

fn lock(running: &std::sync::Mutex<Running>) -> std::sync::MutexGuard<'_, Running> {
    running.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a scenario's daemons run as.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Daemons {
    /// What daemons run as [default: mock].
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// nydusd binary for `--target real` (default: `nydusd` on PATH).
    #[arg(long)]
    pub nydusd: Option<PathBuf>,
}

impl Daemons {
    /// What daemons run as.
    pub fn target(&self) -> TargetArg {
        self.target.unwrap_or(TargetArg::Mock)
    }

    /// The run configuration; the error is the exit code, after the reason was printed.
    pub fn config(&self, extra_args: Vec<OsString>) -> Result<RunConfig, Refusal> {
        config_for(self.target(), self.nydusd.clone(), extra_args)
    }
}

/// How long blocking work may go on after the run, before it is abandoned.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// How often, off a terminal, the run says what is still running.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Why a command was refused before any scenario started, and its exit code.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: u8,
    pub why: String,
}

impl Refusal {
    fn new(code: u8, why: impl Into<String>) -> Self {
        Self { code, why: why.into() }
    }

    /// Says why on stderr; the command's exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.why);
        ExitCode::from(self.code)
    }
}

/// The daemons' binary and target for `args`.
fn config_for(target: TargetArg, nydusd: Option<PathBuf>, extra_args: Vec<OsString>) -> Result<RunConfig, Refusal> {
    match target {
        TargetArg::Real => Ok(RunConfig {
            nydusd: nydusd.unwrap_or_else(|| PathBuf::from("nydusd")),
            target: Target::Real,
            extra_args,
            bundles: None,
        }),
        TargetArg::Mock => match nydusd.map(Ok).unwrap_or_else(std::env::current_exe) {
            Ok(path) => Ok(RunConfig { nydusd: path, target: Target::Mock, extra_args, bundles: None }),
            Err(e) => Err(Refusal::new(
                exit_code::SETUP_ERROR,
                format!("cannot locate the harness binary to run the built-in mock: {e}"),
            )),
        },
    }
}

/// Checks, before anything runs, that the report files can be written and that the
/// repro-bundle directory can be made and written in: a report that cannot be written is
/// a usage error now, not a silent loss after the run. Nothing is created: a run refused
/// later leaves no empty report and no empty bundle directory.
fn check_outputs(args: &RunArgs, bundles: Option<&Path>) -> Result<(), Refusal> {
    let unwritable = |what: String| Refusal::new(exit_code::USAGE, what);
    if args.json.as_deref().is_some_and(is_stdout) && args.junit.as_deref().is_some_and(is_stdout) {
        return Err(unwritable("--json - and --junit -: only one report can go to standard output".into()));
    }
    for (flag, path) in [("--json", &args.json), ("--junit", &args.junit)] {
        let Some(path) = path.as_deref().filter(|p| !is_stdout(p)) else { continue };
        report::check_writable(path)
            .map_err(|e| unwritable(format!("{flag} {}: cannot be written: {e}", path.display())))?;
    }
    if let Some(dir) = bundles {
        // The nearest directory that exists: the bundles' is made when one is written.
        let existing = dir.ancestors().find(|d| d.is_dir()).unwrap_or(Path::new("."));
        tempfile::tempfile_in(existing)
            .map_err(|e| unwritable(format!("--bundles {}: cannot be written: {e}", dir.display())))?;
    }
    Ok(())
}

/// A small deterministic shuffle (xorshift), so `--seed` reproduces an order.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// One scenario to run, and which repetition of it.
#[derive(Debug, Clone)]
struct Planned {
    path: PathBuf,
    scenario: Scenario,
    repetition: u32,
    /// How many times a failure is run again.
    retries: u32,
}

/// What a run needs before its first scenario starts.
struct Prepared {
    config: RunConfig,
    planned: Vec<Planned>,
    /// Files under the paths that are not valid scenarios: reported, never run.
    broken: Vec<crate::scenario::LoadError>,
    jobs: usize,
    runtime: tokio::runtime::Runtime,
}

/// Everything that can refuse a run, before anything of it starts.
fn prepare(args: &RunArgs) -> Result<Prepared, Refusal> {
    let config = args.daemons.config(args.daemon_args.clone())?;
    let bundles = args.bundles.clone().unwrap_or_else(|| std::env::temp_dir().join("harness-failures"));
    let config = RunConfig { bundles: Some(bundles), ..config };
    check_outputs(args, config.bundles.as_deref())?;
    let loaded = args.selection.load_all().map_err(|e| Refusal { code: e.code(), why: e.to_string() })?;
    let (selected, broken) = (loaded.selected, loaded.broken);
    let scenarios: Vec<&Scenario> = selected.iter().map(|(_, s)| s).collect();
    if let Some(e) = crate::runner::socket_room_error(&std::env::temp_dir(), &scenarios) {
        return Err(Refusal::new(exit_code::USAGE, e));
    }
    let mut planned = Vec::new();
    for (path, scenario) in selected {
        let retries = args.retries.or(scenario.retries.map(|r| r.get())).unwrap_or(0);
        let retries = u32::try_from(retries).unwrap_or(u32::MAX);
        for repetition in 1..=args.repeat() {
            planned.push(Planned { path: path.clone(), scenario: scenario.clone(), repetition, retries });
        }
    }
    if let Some(seed) = args.seed {
        say(&format!("order shuffled with --seed {seed}\n"));
        shuffle(&mut planned, seed);
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Refusal::new(exit_code::SETUP_ERROR, format!("cannot start the async runtime: {e}")))?;
    Ok(Prepared { config, planned, broken, jobs, runtime })
}

/// A refused run's reports say so (each one that can be written), so that neither an
/// empty file nor the previous run's green report is left at their paths.
fn refuse(args: &RunArgs, refusal: Refusal) -> ExitCode {
    // Two reports cannot share standard output: neither goes there then.
    let both_on_stdout = args.json.as_deref().is_some_and(is_stdout) && args.junit.as_deref().is_some_and(is_stdout);
    let args = &RunArgs {
        json: args.json.clone().filter(|p| !(both_on_stdout && is_stdout(p))),
        junit: args.junit.clone().filter(|p| !(both_on_stdout && is_stdout(p))),
        ..args.clone()
    };
    let report = RunReport {
        entries: vec![Entry {
            path: args.selection.paths().into_iter().next().unwrap_or_default(),
            name: "harness run".into(),
            repetition: 1,
            outcome: Err(NotRun::Refused(refusal.why.clone())),
            retried: Vec::new(),
        }],
        started_at: SystemTime::now(),
        wall: Duration::ZERO,
        repeat: 1,
        target: format!("{:?}", args.daemons.target()).to_lowercase(),
        seed: args.seed,
        interrupted: None,
        base: PathBuf::new(),
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report::to_json(&report)).unwrap_or_default();
        let _ = write_report(path, json.as_bytes());
    }
    if let Some(path) = &args.junit
        && let Ok(xml) = report::to_junit(&report)
    {
        let _ = write_report(path, xml.as_bytes());
    }
    refusal.report()
}

pub(crate) fn run(args: RunArgs, painter: Painter) -> ExitCode {
    let args = &match args.clone().with_profile() {
        Ok(args) => args,
        // The reports the command line names say so; the profile's are unknown.
        Err(refusal) => return refuse(&args, refusal),
    };
    // A report on standard output keeps it for itself: the run's lines go to stderr.
    if [&args.json, &args.junit].into_iter().flatten().any(|p| is_stdout(p)) {
        super::console_on_stderr();
    }
    let Prepared { config, planned, broken, jobs, runtime } = match prepare(args) {
        Ok(prepared) => prepared,
        Err(refusal) => return refuse(args, refusal),
    };
    // A broken file is an entry of its own, first, with its location; the others run.
    let mut broken_entries = Vec::new();
    for e in &broken {
        eprintln!("error: {e}");
        broken_entries.push(Entry {
            path: e.path().to_owned(),
            name: e.path().file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            repetition: 1,
            outcome: Err(NotRun::Invalid(e.to_string())),
            retried: Vec::new(),
        });
    }
    let base = args.selection.base();
    let target = format!("{:?}", config.target).to_lowercase();
    let (started_at, started) = (SystemTime::now(), Instant::now());
    // Before anything runs, the reports say "not finished": a run killed before its end
    // leaves that, never the previous run's green report.
    let unfinished = RunReport {
        entries: broken_entries
            .iter()
            .cloned()
            .chain(planned.iter().map(|p| Entry {
                path: p.path.clone(),
                name: p.scenario.name.clone(),
                repetition: p.repetition,
                outcome: Err(NotRun::Unfinished),
                retried: Vec::new(),
            }))
            .collect(),
        started_at,
        wall: Duration::ZERO,
        repeat: args.repeat(),
        target: target.clone(),
        seed: args.seed,
        interrupted: Some("not finished".into()),
        base: base.clone(),
    };
    // Both previous reports go first: a kill between writing the one and the other would
    // otherwise leave the second as the previous run wrote it, green perhaps. Absent or
    // "not finished" is all a killed run can leave.
    for path in [&args.json, &args.junit].into_iter().flatten().filter(|p| !is_stdout(p)) {
        let _ = std::fs::remove_file(path);
    }
    if let Err(e) = write_reports(args, &unfinished, Stage::Before) {
        return refuse(args, Refusal::new(exit_code::USAGE, daemon_core::daemon::error_chain(&e)));
    }
    let options = Options {
        jobs,
        repeat: args.repeat(),
        max_fail: if args.keep_going { None } else { Some(args.max_fail.unwrap_or(1) as usize) },
        painter,
        slow_after: Duration::from_secs_f64(args.slow_after.unwrap_or(10.0).max(0.0)),
    };
    let (ran, interrupted) = runtime.block_on(run_all(planned, config, &base, options));
    let entries: Vec<Entry> = broken_entries.into_iter().chain(ran).collect();
    // Blocking work still under way (a manager's store being opened when a signal came)
    // holds its scenario's root until it ends, which it does in milliseconds: it is given
    // a moment, so the root goes with it. Work that never ends (an open of a FIFO) must
    // not hold the exit: it is abandoned, and its root left to the sweep.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    let report = RunReport {
        entries,
        started_at,
        wall: started.elapsed(),
        repeat: args.repeat(),
        target,
        seed: args.seed,
        interrupted: interrupted.map(crate::termination::name),
        base,
    };
    let modules = host_facts::kernel::fscache_modules().map(|m| format!(" ({m})")).unwrap_or_default();
    let plural = |n: usize, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
    let ran = if args.repeat() > 1 {
        let runs = report.entries.len();
        format!("{} of {}", plural(runs, "run"), plural(runs / args.repeat() as usize, "scenario"))
    } else {
        plural(report.entries.len(), "scenario")
    };
    say(&painter.paint(&format!(
        "ran {ran} in {:.2} s on kernel {}{modules}\n{}\n{}",
        report.wall.as_secs_f64(),
        report::host().1,
        report::summary(&report),
        report::recap(&report)
    )));
    if std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
        say(&report::github_annotations(&report));
    }
    let unwritten = match write_reports(args, &report, Stage::After) {
        Ok(()) => false,
        Err(e) => {
            eprintln!("error: {}", daemon_core::daemon::error_chain(&e));
            true
        }
    };
    if let Some(signal) = interrupted {
        return interrupted_by(signal);
    }
    if unwritten {
        return ExitCode::from(exit_code::SETUP_ERROR);
    }
    // A failed scenario says more than a broken file; a broken file alone is still not green.
    let counts = report.counts();
    let failed = counts.failed > broken.len() || counts.not_run > 0 || counts.interrupted > 0;
    ExitCode::from(if report.is_green() {
        exit_code::OK
    } else if !failed && !broken.is_empty() {
        exit_code::INVALID_SCENARIO
    } else {
        exit_code::SCENARIO_FAILED
    })
}

/// Writes the `--json` and `--junit` reports of `report`, each whole or not at all.
fn write_reports(args: &RunArgs, report: &RunReport, stage: Stage) -> Result<(), report::ReportError> {
    // Standard output gets the finished report only: it cannot be replaced later.
    let wanted = |path: &&PathBuf| stage == Stage::After || !is_stdout(path);
    if let Some(path) = args.json.as_ref().filter(wanted) {
        let json = serde_json::to_string_pretty(&report::to_json(report)).expect("a report is plain data");
        write_report(path, json.as_bytes())
            .map_err(|source| report::ReportError::Write { path: path.clone(), source })?;
    }
    if let Some(path) = args.junit.as_ref().filter(wanted) {
        let xml =
            report::to_junit(report).map_err(|source| report::ReportError::Junit { path: path.clone(), source })?;
        write_report(path, xml.as_bytes())
            .map_err(|source| report::ReportError::Write { path: path.clone(), source })?;
    }
    Ok(())
}

/// The report written before the run (saying "not finished") or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Before,
    After,
}

/// `-` names standard output.
fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A report to its file (whole or not at all), or to standard output for `-`.
fn write_report(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if !is_stdout(path) {
        return report::write_atomically(path, bytes);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush())
}

#[derive(Debug, Clone, Copy)]
struct Options {
    jobs: usize,
    /// `--repeat`, for the console's `run k/N`.
    repeat: u32,
    /// Failures after which no new scenario starts (`None`: `--keep-going`).
    max_fail: Option<usize>,
    painter: Painter,
    slow_after: Duration,
}

/// Runs scenarios `jobs` at a time; runs a failed one again while it has retries left;
/// stops starting new ones after `max_fail` failures; on a signal aborts the running
/// ones, whose drop cleans them up. Every planned scenario comes back, in plan order,
/// with its result (and its failed attempts) or why it has none.
async fn run_all(planned: Vec<Planned>, config: RunConfig, base: &Path, options: Options) -> (Vec<Entry>, Option<i32>) {
    use std::io::IsTerminal;
    let total = planned.len();
    let running = Arc::new(std::sync::Mutex::new(Running::new(options.slow_after, HEARTBEAT)));
    // Installed before any scenario starts a daemon.
    let mut termination = crate::termination::Termination::install().ok();
    let mut scheduler = Scheduler {
        planned: &planned,
        config: Arc::new(config),
        running: running.clone(),
        base,
        jobs: options.jobs,
        set: tokio::task::JoinSet::new(),
        tasks: std::collections::HashMap::new(),
        next: 0,
        retry: std::collections::VecDeque::new(),
        attempts: vec![0; total],
        stopped: false,
    };
    scheduler.start_more();
    let on_tty = std::io::stderr().is_terminal();
    let mut results: Vec<Option<ScenarioResult>> = vec![None; total];
    let mut retried: Vec<Vec<ScenarioResult>> = vec![Vec::new(); total];
    let mut failures = 0;
    let mut done = 0;
    let mut interrupted = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            joined = scheduler.set.join_next() => {
                let Some(joined) = joined else { break };
                let Some((index, result)) = scheduler.finished(joined) else { continue };
                lock(&running).finish(index);
                if on_tty {
                    eprint!("\r\x1b[K");
                }
                let allowed = planned[index].retries as usize + 1;
                // A failure with retries left runs again, unless the run is stopping.
                let again = result.failure.is_some()
                    && retried[index].len() + 1 < allowed
                    && !scheduler.stopped
                    && interrupted.is_none();
                let line = if again {
                    report::retry_line(&result, retried[index].len() + 1, allowed, base)
                } else {
                    let entry = Entry {
                        path: planned[index].path.clone(),
                        name: planned[index].scenario.name.clone(),
                        repetition: planned[index].repetition,
                        outcome: Ok(result.clone()),
                        retried: std::mem::take(&mut retried[index]),
                    };
                    let line = report::entry_report(&entry, options.repeat, base);
                    retried[index] = entry.retried;
                    line
                };
                if !say(&options.painter.paint(&line)) && interrupted.is_none() {
                    // Whoever read the output is gone: stop as if interrupted.
                    interrupted = Some(nix::sys::signal::Signal::SIGPIPE as i32);
                    scheduler.set.abort_all();
                }
                if again {
                    retried[index].push(result);
                    scheduler.retry.push_back(index);
                    if interrupted.is_none() {
                        scheduler.start_more();
                    }
                    continue;
                }
                if result.failure.is_some() {
                    failures += 1;
                    if options.max_fail.is_some_and(|max| failures >= max) {
                        scheduler.stopped = true;
                    }
                }
                results[index] = Some(result);
                done += 1;
                if interrupted.is_none() {
                    scheduler.start_more();
                }
            }
            _ = tick.tick() => show_progress(&mut lock(&running), on_tty, done, total, options.painter),
            Some(signal) = async { match termination.as_mut() { Some(t) => Some(t.next().await), None => None } }, if interrupted.is_none() => {
                interrupted = Some(signal);
                // Dropping a scenario's future runs its cleanup (see runner::Run's Drop).
                scheduler.set.abort_all();
            }
        }
    }
    if on_tty {
        eprint!("\r\x1b[K");
    }
    let not_run = results.iter().filter(|r| r.is_none()).count();
    if not_run > 0 && interrupted.is_none() {
        let after = if failures == 1 { "the first failure".to_owned() } else { format!("{failures} failures") };
        say(&format!("stopped after {after}; {not_run} scenarios not run (use --keep-going or --max-fail)\n"));
    }
    (entries(planned, results, retried, interrupted), interrupted)
}

/// Starts scenarios in plan order, at most `jobs` at a time: with tasks that raced for a
/// semaphore instead, `--jobs 1` ran them in any order, and one started after a failure
/// had already stopped the run.
struct Scheduler<'p> {
    planned: &'p [Planned],
    config: Arc<RunConfig>,
    running: Arc<std::sync::Mutex<Running>>,
    base: &'p Path,
    jobs: usize,
    set: tokio::task::JoinSet<(usize, ScenarioResult)>,
    /// Which scenario each task runs, so that a task that panics is still reported.
    tasks: std::collections::HashMap<tokio::task::Id, usize>,
    next: usize,
    /// Scenarios to run again after a failed attempt, before any new one.
    retry: std::collections::VecDeque<usize>,
    /// Attempts started, by scenario.
    attempts: Vec<u32>,
    /// No more scenarios start (`--max-fail` failures, 1 without `--keep-going`).
    stopped: bool,
}

impl Scheduler<'_> {
    fn start_more(&mut self) {
        while !self.stopped && self.set.len() < self.jobs {
            let index = match self.retry.pop_front() {
                Some(index) => index,
                None if self.next < self.planned.len() => {
                    self.next += 1;
                    self.next - 1
                }
                None => break,
            };
            self.attempts[index] += 1;
            let (config, running) = (self.config.clone(), self.running.clone());
            let (path, scenario) = (self.planned[index].path.clone(), self.planned[index].scenario.clone());
            let mut label = format!("{} ({})", path.strip_prefix(self.base).unwrap_or(&path).display(), scenario.name);
            if self.attempts[index] > 1 {
                label.push_str(&format!(" attempt {}", self.attempts[index]));
            }
            let handle = self.set.spawn(async move {
                lock(&running).start(index, label);
                (index, run_scenario(&path, &scenario, &config).await)
            });
            self.tasks.insert(handle.id(), index);
        }
    }

    /// The scenario a finished task ran and its result; a panic counts as the failure it
    /// is (the scenario's own clean-up ran while it unwound). `None` for a cancelled task.
    fn finished(
        &self,
        joined: Result<(usize, ScenarioResult), tokio::task::JoinError>,
    ) -> Option<(usize, ScenarioResult)> {
        match joined {
            Ok(done) => Some(done),
            Err(e) if e.is_cancelled() => None,
            Err(e) => {
                let index = *self.tasks.get(&e.id())?;
                let plan = &self.planned[index];
                let payload = e.into_panic();
                Some((index, ScenarioResult::panicked(plan.path.clone(), plan.scenario.name.clone(), payload.as_ref())))
            }
        }
    }
}

/// SLOW lines, and what still runs: on a terminal a status line, else a heartbeat.
fn show_progress(running: &mut Running, on_tty: bool, done: usize, total: usize, painter: Painter) {
    let slow = running.slow_lines();
    if on_tty {
        eprint!("\r\x1b[K");
    }
    if !slow.is_empty() {
        say(&painter.paint(&slow));
    }
    if on_tty {
        eprint!("[{done}/{total}] {}", running.names());
    } else if let Some(beat) = running.heartbeat(done, total) {
        say(&beat);
    }
}

/// Every planned scenario with its result and failed attempts, or why it has none.
fn entries(
    planned: Vec<Planned>,
    results: Vec<Option<ScenarioResult>>,
    retried: Vec<Vec<ScenarioResult>>,
    interrupted: Option<i32>,
) -> Vec<Entry> {
    let signal_name = interrupted.map(crate::termination::name);
    planned
        .into_iter()
        .zip(results)
        .zip(retried)
        .map(|((plan, result), mut retried)| {
            let outcome = match (result, &signal_name) {
                (Some(r), _) => Ok(r),
                // A retry the interruption cut short: the last failed attempt is the result.
                (None, _) if !retried.is_empty() => Ok(retried.pop().expect("not empty")),
                (None, Some(signal)) => Err(NotRun::Interrupted(signal.clone())),
                (None, None) => Err(NotRun::AfterFailure),
            };
            Entry { path: plan.path, name: plan.scenario.name, repetition: plan.repetition, outcome, retried }
        })
        .collect()
}
