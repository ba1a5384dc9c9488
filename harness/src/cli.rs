//! The `harness` command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::runner::{RunConfig, ScenarioResult, run_scenario};
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios (files or directories).
    Run {
        /// Scenario files or directories (default: scenarios).
        paths: Vec<PathBuf>,
        /// Binary to start for each daemon (default: the built-in mock).
        #[arg(long)]
        nydusd: Option<PathBuf>,
        /// Extra argument for every daemon (repeatable), e.g. `--daemon-arg=--rlimit-nofile --daemon-arg=0`.
        #[arg(long = "daemon-arg", allow_hyphen_values = true)]
        daemon_args: Vec<OsString>,
        /// Only scenarios whose path or name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Scenarios run at once (default: number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Check scenario files without running them.
    Validate {
        /// Scenario files or directories (default: scenarios).
        paths: Vec<PathBuf>,
    },
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
        Command::Run { paths, nydusd, daemon_args, filter, jobs } => {
            let config = match nydusd {
                Some(path) => RunConfig { nydusd: path, is_mock: false, extra_args: daemon_args },
                None => match std::env::current_exe() {
                    Ok(exe) => RunConfig { nydusd: exe, is_mock: true, extra_args: daemon_args },
                    Err(e) => {
                        eprintln!("error: cannot locate the harness binary to run the built-in mock: {e}");
                        return ExitCode::from(exit_code::SETUP_ERROR);
                    }
                },
            };
            run(&default_paths(paths), &config, filter.as_deref(), jobs)
        }
    }
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
    ExitCode::from(if bad > 0 { exit_code::INVALID_SCENARIO } else { exit_code::OK })
}

fn run(paths: &[PathBuf], config: &RunConfig, filter: Option<&str>, jobs: Option<usize>) -> ExitCode {
    let files = match scenario::discover(paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let mut loaded = Vec::new();
    for file in files {
        match scenario::load(&file) {
            Ok(s) => {
                let selected = filter.is_none_or(|f| file.display().to_string().contains(f) || s.name.contains(f));
                if selected {
                    loaded.push((file, s));
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit_code::INVALID_SCENARIO);
            }
        }
    }
    if loaded.is_empty() {
        eprintln!("error: no scenario selected");
        return ExitCode::from(exit_code::NONE_RAN);
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::SETUP_ERROR);
        }
    };
    let base = common_base(paths);
    let started = std::time::Instant::now();
    let results = runtime.block_on(run_all(loaded, config.clone(), jobs, &base));
    println!("ran {} scenarios in {:.2} s", results.len(), started.elapsed().as_secs_f64());
    println!("{}", report::summary(&results));
    let failed = results.iter().any(|r| r.failure.is_some());
    ExitCode::from(if failed { exit_code::SCENARIO_FAILED } else { exit_code::OK })
}

fn common_base(paths: &[PathBuf]) -> PathBuf {
    match paths {
        [single] if single.is_dir() => single.clone(),
        _ => PathBuf::new(),
    }
}

async fn run_all(
    scenarios: Vec<(PathBuf, scenario::Scenario)>,
    config: RunConfig,
    jobs: usize,
    base: &Path,
) -> Vec<ScenarioResult> {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs));
    let config = std::sync::Arc::new(config);
    let mut set = tokio::task::JoinSet::new();
    for (index, (path, scenario)) in scenarios.into_iter().enumerate() {
        let limit = limit.clone();
        let config = config.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closes");
            (index, run_scenario(&path, &scenario, &config).await)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((index, result)) => {
                print!("{}", report::scenario_report(&result, base));
                results.push((index, result));
            }
            Err(e) => eprintln!("error: a scenario task panicked: {e}"),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
