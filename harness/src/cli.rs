//! The `harness` command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::runner::{RunConfig, ScenarioResult, run_scenario};
use crate::scenario::model::Target;
use crate::{report, scenario};

/// Exit codes.
pub mod exit_code {
    /// Every scenario passed.
    pub const OK: u8 = 0;
    /// At least one scenario failed.
    pub const SCENARIO_FAILED: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
    /// A scenario file is invalid.
    pub const INVALID_SCENARIO: u8 = 3;
    /// The harness itself could not set up (temp dirs, mock binary).
    pub const SETUP_ERROR: u8 = 4;
    /// No scenario was selected.
    pub const NONE_RAN: u8 = 5;
}

#[derive(Debug, Parser)]
#[command(name = "harness", version, about = "Runs nydusd lifecycle scenarios against mock-nydusd or a real nydusd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TargetArg {
    Mock,
    Real,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario files or directories (default: scenarios).
    paths: Vec<PathBuf>,
    /// What daemons run as.
    #[arg(long, value_enum, default_value = "mock")]
    target: TargetArg,
    /// nydusd binary for `--target real` (default: `nydusd` on PATH).
    #[arg(long)]
    nydusd: Option<PathBuf>,
    /// Extra argument for every daemon (repeatable), e.g. `--daemon-arg=--rlimit-nofile --daemon-arg=0`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<OsString>,
    /// Only scenarios whose path, name or tags contain this text.
    #[arg(long)]
    filter: Option<String>,
    /// Scenarios run at once (default: number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run every scenario even after a failure (default: stop starting new ones).
    #[arg(long)]
    keep_going: bool,
    /// Run each selected scenario N times (hunting flakes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Shuffle the order with this seed (printed, so a run can be repeated exactly).
    #[arg(long)]
    seed: Option<u64>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for repro bundles of failing scenarios (default: <tmp>/harness-failures).
    #[arg(long)]
    bundles: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios (files or directories).
    Run(RunArgs),
    /// Check scenario files without running them.
    Validate {
        /// Scenario files or directories (default: scenarios).
        paths: Vec<PathBuf>,
    },
    /// Show a scenario as a readable sequence (text, or a Mermaid sequence diagram).
    Explain {
        /// The scenario file.
        path: PathBuf,
        /// Print a Mermaid sequence diagram instead of text.
        #[arg(long)]
        mermaid: bool,
    },
    /// Print the JSON Schema (draft-07) of scenario files.
    Schema,
    /// Measure failover, restart, death detection and scale on the mock (prints a table).
    Bench {
        /// Runs per latency measurement.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Daemon counts for the scale measurement, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        scale: Vec<usize>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Consecutive failovers of the leak check (0 skips it).
        #[arg(long, default_value_t = 1000)]
        leak_runs: usize,
        /// A real nydusd whose API latency is measured beside the mock's.
        #[arg(long)]
        nydusd: Option<PathBuf>,
        /// Extra argument for the real nydusd (repeatable), e.g. `--daemon-arg=--rlimit-nofile --daemon-arg=0`.
        #[arg(long = "daemon-arg", allow_hyphen_values = true)]
        daemon_args: Vec<OsString>,
        /// The scenario library to time, and whose live-reader failover gives the read stall.
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
    },
    /// Show what this host offers to privileged scenarios, and why not where it does not.
    Doctor,
    /// Run scenarios on the mock and on a real nydusd and report every difference in what
    /// the client sent and got back (exit 1 on an unexplained one).
    Diff(DiffArgs),
    /// Run seeded random fault schedules on the mock; shrink and print the first failing one
    /// as a scenario file (exit 1).
    Chaos {
        /// Seed of the first schedule (run i uses seed + i).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Schedules to run.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Operations per schedule.
        #[arg(long, default_value_t = 12)]
        ops: usize,
        /// Write the shrunk scenario of a failure into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// Scenario files or directories (default: scenarios).
    paths: Vec<PathBuf>,
    /// The real nydusd (default: `nydusd` on PATH).
    #[arg(long)]
    nydusd: Option<PathBuf>,
    /// Extra argument for every real daemon (repeatable), e.g. `--daemon-arg=--rlimit-nofile --daemon-arg=0`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<OsString>,
    /// Only scenarios whose path, name or tags contain this text.
    #[arg(long)]
    filter: Option<String>,
    /// Explained differences and volatile fields (default: the built-in docs/diff-explained.yaml).
    #[arg(long)]
    explained: Option<PathBuf>,
    /// Write the differences as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Entry point of the `harness` binary (after the multi-call check).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit_code::USAGE } else { exit_code::OK });
        }
    };
    match cli.command {
        Command::Validate { paths } => validate(&default_paths(paths)),
        Command::Explain { path, mermaid } => match scenario::load(&path) {
            Ok(s) => {
                print!("{}", if mermaid { crate::explain::mermaid(&s) } else { crate::explain::text(&s) });
                ExitCode::from(exit_code::OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit_code::INVALID_SCENARIO)
            }
        },
        Command::Schema => {
            println!("{}", scenario::schema_json());
            ExitCode::from(exit_code::OK)
        }
        Command::Bench { runs, scale, json, leak_runs, nydusd, daemon_args, scenarios } => {
            let (mock, runtime) = match mock_and_runtime() {
                Ok(both) => both,
                Err(code) => return code,
            };
            let real = nydusd.map(|path| (path, daemon_args));
            let scenarios = scenarios.is_dir().then_some(scenarios);
            let options =
                crate::bench::BenchOptions { mock, runs: runs.max(1), scales: scale, leak_runs, real, scenarios };
            match runtime.block_on(crate::termination::unless_signalled(crate::bench::run(&options))) {
                Err(signal) => interrupted_by(signal),
                Ok(Ok(results)) => {
                    print!("{}", crate::bench::table(&results));
                    if let Some(path) = json
                        && let Err(e) =
                            std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap_or_default())
                    {
                        eprintln!("error: cannot write {}: {e}", path.display());
                    }
                    ExitCode::from(exit_code::OK)
                }
                Ok(Err(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(exit_code::SETUP_ERROR)
                }
            }
        }
        Command::Doctor => {
            print!("{}", doctor());
            ExitCode::from(exit_code::OK)
        }
        Command::Diff(args) => diff(args),
        Command::Chaos { seed, runs, ops, out } => {
            let (mock, runtime) = match mock_and_runtime() {
                Ok(both) => both,
                Err(code) => return code,
            };
            let options = crate::chaos::ChaosOptions { mock, seed, runs, ops: ops.max(1), out };
            match runtime.block_on(crate::termination::unless_signalled(crate::chaos::run(&options))) {
                Err(signal) => interrupted_by(signal),
                Ok(Ok(true)) => ExitCode::from(exit_code::OK),
                Ok(Ok(false)) => ExitCode::from(exit_code::SCENARIO_FAILED),
                Ok(Err(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(exit_code::SETUP_ERROR)
                }
            }
        }
        Command::Run(args) => {
            let config = match args.target {
                TargetArg::Real => RunConfig {
                    nydusd: args.nydusd.clone().unwrap_or_else(|| PathBuf::from("nydusd")),
                    target: Target::Real,
                    extra_args: args.daemon_args.clone(),
                    bundles: None,
                },
                TargetArg::Mock => match (args.nydusd.clone(), std::env::current_exe()) {
                    (Some(path), _) | (None, Ok(path)) => RunConfig {
                        nydusd: path,
                        target: Target::Mock,
                        extra_args: args.daemon_args.clone(),
                        bundles: None,
                    },
                    (None, Err(e)) => {
                        eprintln!("error: cannot locate the harness binary to run the built-in mock: {e}");
                        return ExitCode::from(exit_code::SETUP_ERROR);
                    }
                },
            };
            let bundles = args.bundles.clone().unwrap_or_else(|| std::env::temp_dir().join("harness-failures"));
            run(&args, RunConfig { bundles: Some(bundles), ..config })
        }
    }
}

/// Writes `text` to standard output; `false` when it is closed (`harness run | head`),
/// where `print!` would panic.
fn say(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok()
}

/// The end of a command stopped by `signal`, after its work was dropped and cleaned up.
fn interrupted_by(signal: i32) -> ExitCode {
    if signal == nix::sys::signal::Signal::SIGPIPE as i32 {
        // Quietly: nobody reads the output any more.
        return ExitCode::from(crate::termination::exit_code(signal));
    }
    eprintln!(
        "interrupted by {}: every process, mount and temporary root of the run was cleaned up",
        crate::termination::name(signal)
    );
    ExitCode::from(crate::termination::exit_code(signal))
}

/// The harness binary (which is also the mock) and a runtime for the async commands; the
/// error is the exit code, after the reason was printed.
fn mock_and_runtime() -> Result<(PathBuf, tokio::runtime::Runtime), ExitCode> {
    let mock = std::env::current_exe().map_err(|e| {
        eprintln!("error: cannot locate the harness binary to run the built-in mock: {e}");
        ExitCode::from(exit_code::SETUP_ERROR)
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(exit_code::SETUP_ERROR)
    })?;
    Ok((mock, runtime))
}

fn diff(args: DiffArgs) -> ExitCode {
    let explained = match &args.explained {
        None => crate::diff::Explained::parse(crate::diff::DEFAULT_EXPLAINED, "docs/diff-explained.yaml"),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| crate::diff::Explained::parse(&text, &path.display().to_string())),
    };
    let explained = match explained {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let (exe, runtime) = match mock_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let mock = RunConfig { nydusd: exe, target: Target::Mock, extra_args: Vec::new(), bundles: None };
    let real = RunConfig {
        nydusd: args.nydusd.unwrap_or_else(|| PathBuf::from("nydusd")),
        target: Target::Real,
        extra_args: args.daemon_args,
        bundles: None,
    };
    let scenarios = match load_selected(&default_paths(args.paths), args.filter.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let diffs = runtime.block_on(crate::termination::unless_signalled(async {
        let mut out = Vec::new();
        for (path, scenario) in &scenarios {
            out.push(crate::diff::diff_scenario(path, scenario, &mock, &real, &explained).await);
        }
        out
    }));
    let diffs: Vec<crate::diff::ScenarioDiff> = match diffs {
        Ok(diffs) => diffs,
        Err(signal) => return interrupted_by(signal),
    };
    print!("{}", crate::diff::report(&diffs));
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&diffs).unwrap_or_default())
    {
        eprintln!("error: cannot write {}: {e}", path.display());
    }
    let unexplained: usize = diffs.iter().map(crate::diff::ScenarioDiff::unexplained).sum();
    ExitCode::from(if unexplained > 0 { exit_code::SCENARIO_FAILED } else { exit_code::OK })
}

/// `harness doctor`: each requirement a scenario can name, and whether this host has it.
pub fn doctor() -> String {
    use host_facts::Requirement;
    let mut out = String::from("host capabilities for scenarios with `requires`:\n");
    for (name, requirement) in [
        ("root", Requirement::Root),
        ("fuse", Requirement::Fuse),
        ("erofs", Requirement::Erofs),
        ("mkfs-erofs", Requirement::MkfsErofs),
        ("fscache", Requirement::Cachefiles),
    ] {
        match requirement.check() {
            Ok(()) => out.push_str(&format!("  {name:<11} yes\n")),
            Err(reason) => out.push_str(&format!("  {name:<11} no: {reason}\n")),
        }
    }
    out.push_str(
        "scenarios and tests needing a missing capability are skipped (listed as ignored), with that reason\n",
    );
    out
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if paths.is_empty() { vec![PathBuf::from("scenarios")] } else { paths }
}

fn validate(paths: &[PathBuf]) -> ExitCode {
    let files = match scenario::discover(paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let mut bad = 0;
    for file in &files {
        match scenario::load(file) {
            Ok(_) => println!("ok   {}", file.display()),
            Err(e) => {
                bad += 1;
                println!("bad  {e}");
            }
        }
    }
    println!("{} valid, {bad} invalid", files.len() - bad);
    if files.is_empty() {
        // As `run` does: an empty selection is an error, not a success.
        eprintln!("error: no scenario file found");
        return ExitCode::from(exit_code::NONE_RAN);
    }
    ExitCode::from(if bad > 0 { exit_code::INVALID_SCENARIO } else { exit_code::OK })
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

/// Loads the scenarios under `paths` that `filter` selects (by path, name or tag); the
/// error is the exit code, after the reason was printed.
fn load_selected(paths: &[PathBuf], filter: Option<&str>) -> Result<Vec<(PathBuf, scenario::Scenario)>, ExitCode> {
    let files = scenario::discover(paths).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(exit_code::USAGE)
    })?;
    let mut loaded = Vec::new();
    for file in files {
        let s = scenario::load(&file).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(exit_code::INVALID_SCENARIO)
        })?;
        let selected = filter.is_none_or(|f| {
            file.display().to_string().contains(f) || s.name.contains(f) || s.tags.iter().any(|t| t == f)
        });
        if selected {
            loaded.push((file, s));
        }
    }
    if loaded.is_empty() {
        eprintln!("error: no scenario selected");
        return Err(ExitCode::from(exit_code::NONE_RAN));
    }
    Ok(loaded)
}

/// Checks, before anything runs, that the report files can be written and that the
/// repro-bundle directory can be made and written in: a report that cannot be written is
/// a usage error now, not a silent loss after the run.
fn check_outputs(args: &RunArgs, bundles: Option<&Path>) -> Result<(), String> {
    for (flag, path) in [("--json", &args.json), ("--junit", &args.junit)] {
        let Some(path) = path else { continue };
        if path.is_dir() {
            return Err(format!("{flag} {}: is a directory", path.display()));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("{flag} {}: cannot be written: {e}", path.display()))?;
    }
    if let Some(dir) = bundles {
        std::fs::create_dir_all(dir)
            .and_then(|()| tempfile::tempfile_in(dir).map(drop))
            .map_err(|e| format!("--bundles {}: cannot be written: {e}", dir.display()))?;
    }
    Ok(())
}

fn run(args: &RunArgs, config: RunConfig) -> ExitCode {
    if let Err(e) = check_outputs(args, config.bundles.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(exit_code::USAGE);
    }
    let paths = default_paths(args.paths.clone());
    let selected = match load_selected(&paths, args.filter.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut loaded = Vec::new();
    for scenario in selected {
        for _ in 0..args.repeat {
            loaded.push(scenario.clone());
        }
    }
    if let Some(seed) = args.seed {
        say(&format!("order shuffled with --seed {seed}\n"));
        shuffle(&mut loaded, seed);
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::SETUP_ERROR);
        }
    };
    let base = common_base(&paths);
    let started = std::time::Instant::now();
    let outcome = runtime.block_on(run_all(loaded, config, jobs, &base, args.keep_going));
    // Blocking work abandoned at a scenario's deadline (an open that never returns) must
    // not hold the exit; its root was removed already.
    runtime.shutdown_background();
    let (results, interrupted) = outcome;
    say(&format!(
        "ran {} scenarios in {:.2} s\n{}\n",
        results.len(),
        started.elapsed().as_secs_f64(),
        report::summary(&results)
    ));
    let mut unwritten = false;
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, report::to_json(&results, &base).to_string())
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        unwritten = true;
    }
    if let Some(path) = &args.junit
        && let Err(e) = std::fs::write(path, report::to_junit(&results, &base))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        unwritten = true;
    }
    if let Some(signal) = interrupted {
        return interrupted_by(signal);
    }
    if unwritten {
        return ExitCode::from(exit_code::SETUP_ERROR);
    }
    let failed = results.iter().any(|r| r.failure.is_some());
    ExitCode::from(if failed { exit_code::SCENARIO_FAILED } else { exit_code::OK })
}

fn common_base(paths: &[PathBuf]) -> PathBuf {
    match paths {
        [single] if single.is_dir() => single.clone(),
        _ => PathBuf::new(),
    }
}

/// Runs scenarios `jobs` at a time; stops starting new ones after a failure unless
/// `keep_going`; on Ctrl-C aborts the running ones, whose drop cleans them up.
async fn run_all(
    scenarios: Vec<(PathBuf, scenario::Scenario)>,
    config: RunConfig,
    jobs: usize,
    base: &Path,
    keep_going: bool,
) -> (Vec<ScenarioResult>, Option<i32>) {
    use std::io::IsTerminal;
    let total = scenarios.len();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = std::sync::Arc::new(config);
    // Installed before any scenario starts a daemon.
    let mut termination = crate::termination::Termination::install().ok();
    let mut set = tokio::task::JoinSet::new();
    // Which scenario each task runs, so that a task that panics is still reported.
    let mut tasks = std::collections::HashMap::new();
    for (index, (path, scenario)) in scenarios.into_iter().enumerate() {
        let (limit, config, stop) = (limit.clone(), config.clone(), stop.clone());
        let named = (index, path.clone(), scenario.name.clone());
        let handle = set.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closes");
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return (index, None);
            }
            (index, Some(run_scenario(&path, &scenario, &config).await))
        });
        tasks.insert(handle.id(), named);
    }
    let progress = std::io::stderr().is_terminal();
    let mut results = Vec::new();
    let mut interrupted = None;
    loop {
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                match joined {
                    Ok((index, Some(result))) => {
                        if progress {
                            eprint!("\r\x1b[K");
                        }
                        if !say(&report::scenario_report(&result, base)) && interrupted.is_none() {
                            // Whoever read the output is gone: stop as if interrupted.
                            interrupted = Some(nix::sys::signal::Signal::SIGPIPE as i32);
                            set.abort_all();
                        }
                        if result.failure.is_some() && !keep_going {
                            stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        results.push((index, result));
                        if progress {
                            eprint!("[{}/{total}] running…", results.len());
                        }
                    }
                    Ok((_, None)) => {}
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        // The scenario's own clean-up ran while the panic unwound; what
                        // is left to do is to count it as the failure it is.
                        let Some((index, path, name)) = tasks.remove(&e.id()) else { continue };
                        let result = ScenarioResult::panicked(path, name, &e.into_panic());
                        say(&report::scenario_report(&result, base));
                        if !keep_going {
                            stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        results.push((index, result));
                    }
                }
            }
            Some(signal) = async { match termination.as_mut() { Some(t) => Some(t.next().await), None => None } }, if interrupted.is_none() => {
                interrupted = Some(signal);
                // Dropping a scenario's future runs its cleanup (see runner::Run's Drop).
                set.abort_all();
            }
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    if stop.load(std::sync::atomic::Ordering::SeqCst) && results.len() < total {
        say(&format!(
            "stopped after the first failure; {} scenarios not run (use --keep-going)\n",
            total - results.len()
        ));
    }
    results.sort_by_key(|(i, _)| *i);
    (results.into_iter().map(|(_, r)| r).collect(), interrupted)
}
