//! The `harness` command line.

mod filterset;
mod list;
mod partition;
mod profile;
mod progress;
mod run;
mod selection;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::runner::RunConfig;
use crate::scenario;
use crate::scenario::model::Target;
use selection::Selection;

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
    /// `harness vm`: the command inside did not end (deadline, kernel panic, power off).
    pub const VM_FAILED: u8 = 6;
}

/// Shown under `--help`: what the exit status of every command means.
const EXIT_CODES: &str = "\
Exit codes:
  0    success: every selected scenario passed or was skipped (run), no unexplained
       difference (diff), every schedule kept the invariants (chaos)
  1    a scenario failed or did not run after a failure (run), an unexplained difference
       or a scenario that could not be compared although it applies (diff), a schedule
       broke an invariant (chaos)
  2    usage error (bad flag, unwritable report path)
  3    a scenario file is invalid (its file:line:column is printed; list and run still
       list and run the valid ones, and a failed scenario makes run's code 1)
  4    the harness could not set up (temporary root, runtime, mock binary, report write)
  5    no scenario was selected
  6    the VM's command did not end: deadline, kernel panic (vm; otherwise vm exits
       with the command's own code)
  129  interrupted by SIGHUP, after cleaning up every process, mount and temporary root
  130  interrupted by SIGINT (Ctrl-C), likewise
  141  standard output was closed (SIGPIPE, `harness run | head`), likewise
  143  interrupted by SIGTERM, likewise";

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Runs nydusd lifecycle scenarios against mock-nydusd or a real nydusd",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Colour the PASS, FAIL, SKIP and SLOW words: `auto` on a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, global = true, default_value = "auto")]
    color: progress::ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TargetArg {
    Mock,
    Real,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios (files or directories).
    Run(run::RunArgs),
    /// List the scenarios a run would select: name, path, tags, targets, requirements, and
    /// why each would be skipped on this host.
    List(list::ListArgs),
    /// Print a shell completion script (e.g. `harness completions bash > /etc/bash_completion.d/harness`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `harness man | man -l -`.
    Man,
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
    /// Print the JSON Schema (draft-07) of scenario files, or of the JSON report.
    Schema {
        /// The schema of `harness run --json` reports instead.
        #[arg(long)]
        report: bool,
    },
    /// Measure failover, restart, death detection and scale on the mock (prints a table).
    Bench(BenchArgs),
    /// Show what this host offers to privileged scenarios, and why not where it does not.
    Doctor,
    /// Record a nydusd API session through a transparent proxy on its socket: every byte
    /// both ways, with connections and timings (`--upstream S --listen P`, or
    /// `-- <nydusd command line>`, whose --apisock the proxy takes the place of).
    Record(RecordArgs),
    /// Replay a recording on the mock: write the script that plays the recorded daemon
    /// (`DIR/mock-script.json`), run the mock on it, send the recorded client side again in
    /// the recorded pieces and order, and report every difference from the recording (exit
    /// 1 on one). What came back is kept in `DIR/replay/`.
    Replay {
        /// The recording's directory (`harness record --out DIR`).
        dir: PathBuf,
        /// Time runs this many times as fast as recorded (delays and gaps divided by it),
        /// between 0.001 and 1000000.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Refuse, before starting, a replay that would take longer than this many seconds
        /// (the recording's span divided by the speed).
        #[arg(long, default_value_t = crate::record::replay_dir::DEFAULT_MAX_DURATION.as_secs())]
        max_duration: u64,
    },
    /// Run scenarios on the mock and on a real nydusd (or on two real builds) and report
    /// every difference in what the client sent and got back (exit 1 on an unexplained one).
    Diff(DiffArgs),
    /// Run a harness command as root inside a VM booted with another kernel (a Debian
    /// `linux-image-*` package): `harness vm --kernel K.deb -- run scenarios --filter
    /// privileged`. Prints what the command prints and exits with its code; the guest's
    /// `/results` (give `--junit /results/junit.xml` and the like) comes back to
    /// `OUT/results`, with `OUT/console.log` and `OUT/vm.json`.
    Vm(VmArgs),
    /// Run seeded random fault schedules on the mock; shrink and print the first failing one
    /// as a scenario file (exit 1).
    Chaos(ChaosArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
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
}

#[derive(Debug, clap::Args)]
struct ChaosArgs {
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
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    /// nydusd's API socket, to forward to (with --listen).
    #[arg(long, requires = "listen", conflicts_with = "command")]
    upstream: Option<PathBuf>,
    /// Where clients connect instead (with --upstream).
    #[arg(long, requires = "upstream")]
    listen: Option<PathBuf>,
    /// Directory of the recording (`recording.jsonl`); created, and must not hold one.
    #[arg(long)]
    out: PathBuf,
    /// Also relay and record the command line's `--supervisor` socket: each piece's size
    /// and fd count (not its content), so sendfd and takeover are in the recording.
    #[arg(long, conflicts_with = "upstream")]
    supervisor: bool,
    /// Stop recording (and the recorder) once the recording would grow past this many
    /// bytes; the default is the most `harness replay` reads back.
    #[arg(long, default_value_t = crate::record::recording::MAX_RECORDING_BYTES)]
    max_bytes: u64,
    /// A nydusd command line to start: its `--apisock` moves into --out and the proxy
    /// listens where it said.
    #[arg(last = true, required_unless_present = "upstream")]
    command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
struct VmArgs {
    /// The kernel: a Debian `linux-image-*` package (its FUSE, erofs, cachefiles and loop
    /// modules are loaded), or a kernel image with them built in.
    #[arg(long)]
    kernel: PathBuf,
    /// A kernel module (`NAME.ko`, built for that kernel) loaded in place of the package's
    /// module NAME (repeatable): `ci/vm-modules.sh K.deb` builds cachefiles and erofs with
    /// on-demand fscache, which Debian's kernels lack.
    #[arg(long = "module", value_name = "FILE.ko")]
    modules: Vec<PathBuf>,
    /// A host program put in the guest's `/bin` under its name, with its shared libraries
    /// (repeatable): a real nydusd for `--target real` (and `nydus-image` beside it).
    #[arg(long = "binary", value_name = "PROGRAM")]
    binaries: Vec<PathBuf>,
    /// Run `/bin/NAME`, the name of a --binary, instead of the harness, with the arguments
    /// after `--`: a test binary, such as daemon-core's kernel tests.
    #[arg(long = "exec", value_name = "NAME")]
    exec: Option<String>,
    /// Console log, `vm.json` and the guest's `/results` go here.
    #[arg(long, default_value = "target/vm")]
    out: PathBuf,
    /// Host file or directory copied to `/work/<its name>`, where the command runs
    /// (repeatable; default: `scenarios`).
    #[arg(long)]
    copy: Vec<PathBuf>,
    /// How the guest's CPU runs: `auto` uses KVM only when a probe guest boots under it.
    #[arg(long, value_enum, default_value = "auto")]
    accel: crate::vm::Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Seconds the whole run may take, boot included; then qemu is killed (exit 6).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// The harness command line to run inside.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    #[command(flatten)]
    selection: Selection,
    /// The real nydusd (default: `nydusd` on PATH). Given twice, the two builds are
    /// compared with each other instead of with the mock: what changed in nydusd's API
    /// between them (exit 1 when anything did).
    #[arg(long)]
    nydusd: Vec<PathBuf>,
    /// Extra argument for every real daemon (repeatable), e.g. `--daemon-arg=--rlimit-nofile --daemon-arg=0`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<OsString>,
    /// Explained differences and volatile fields (default: the built-in docs/diff-explained.yaml).
    #[arg(long)]
    explained: Option<PathBuf>,
    /// Write the differences as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compare two recordings instead of running scenarios: a session recorded by
    /// `harness record` and its replay (`DIR DIR/replay`), or any two recordings of one
    /// session. Each is a `recording.jsonl` or the directory holding one.
    #[arg(long, num_args = 2, value_names = ["RECORDED", "REPLAYED"], conflicts_with_all = ["nydusd", "daemon_args", "paths", "filters"])]
    recordings: Option<Vec<PathBuf>>,
    /// With --recordings: the replay ran this many times as fast as the recording, so
    /// recorded delays are divided by it before the drift is reported.
    #[arg(long, requires = "recordings", default_value_t = 1.0)]
    speed: f64,
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
    if matches!(
        cli.command,
        Command::Run(_) | Command::Replay { .. } | Command::Chaos { .. } | Command::Bench { .. } | Command::Diff(_)
    ) {
        // Commands that start daemons: nothing they start may outlive them, and what a
        // killed run left is cleaned up first (see `containment`).
        // Swept first, with the host's view of its processes.
        crate::containment::sweep_and_report();
        crate::containment::contain();
    }
    let code = match cli.command {
        Command::Validate { paths } => validate(&default_paths(paths)),
        Command::Explain { path, mermaid } => explain(&path, mermaid),
        Command::Schema { report } => {
            say(&format!("{}\n", if report { crate::report::json_schema() } else { scenario::schema_json() }));
            ExitCode::from(exit_code::OK)
        }
        Command::List(args) => list::list(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "harness", &mut std::io::stdout());
            ExitCode::from(exit_code::OK)
        }
        Command::Man => man(),
        Command::Bench(args) => bench(args),
        Command::Doctor => {
            print!("{}", doctor());
            ExitCode::from(exit_code::OK)
        }
        Command::Diff(args) => diff(args),
        Command::Vm(args) => vm(args),
        Command::Record(args) => record(args),
        Command::Replay { dir, speed, max_duration } => {
            let max_duration = std::time::Duration::from_secs(max_duration);
            replay(&dir, crate::record::replay_dir::ReplaySettings { speed, max_duration })
        }
        Command::Chaos(args) => chaos(args),
        Command::Run(args) => run::run(args, progress::Painter::new(cli.color)),
    };
    // Roots a scenario could not remove while others held files (`ulimit -n`) go now.
    crate::containment::remove_pending_roots();
    code
}

/// `harness explain`.
fn explain(path: &std::path::Path, mermaid: bool) -> ExitCode {
    match scenario::load(path) {
        Ok(s) => {
            print!("{}", if mermaid { crate::explain::mermaid(&s) } else { crate::explain::text(&s) });
            ExitCode::from(exit_code::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code::INVALID_SCENARIO)
        }
    }
}

/// `harness man`.
fn man() -> ExitCode {
    let mut page = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut page) {
        Ok(()) => {
            say(&String::from_utf8_lossy(&page));
            ExitCode::from(exit_code::OK)
        }
        Err(e) => {
            eprintln!("error: cannot render the man page: {e}");
            ExitCode::from(exit_code::SETUP_ERROR)
        }
    }
}

/// `harness bench`.
fn bench(args: BenchArgs) -> ExitCode {
    let BenchArgs { runs, scale, json, leak_runs, nydusd, daemon_args, scenarios } = args;
    if let Err(code) = writable("--json", json.as_deref()) {
        return code;
    }
    let (mock, runtime) = match mock_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let real = nydusd.map(|path| (path, daemon_args));
    let scenarios = scenarios.is_dir().then_some(scenarios);
    let options = crate::bench::BenchOptions { mock, runs: runs.max(1), scales: scale, leak_runs, real, scenarios };
    match runtime.block_on(crate::termination::unless_signalled(crate::bench::run(&options))) {
        Err(signal) => interrupted_by(signal),
        Ok(Ok(results)) => {
            print!("{}", crate::bench::table(&results));
            let text = serde_json::to_string_pretty(&results).unwrap_or_default();
            write_output("--json", json.as_deref(), &text)
        }
        Ok(Err(e)) => {
            eprintln!("error: {}", daemon_core::daemon::error_chain(&e));
            ExitCode::from(exit_code::SETUP_ERROR)
        }
    }
}

/// `harness chaos`.
fn chaos(args: ChaosArgs) -> ExitCode {
    let (mock, runtime) = match mock_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let options =
        crate::chaos::ChaosOptions { mock, seed: args.seed, runs: args.runs, ops: args.ops.max(1), out: args.out };
    match runtime.block_on(crate::termination::unless_signalled(crate::chaos::run(&options))) {
        Err(signal) => interrupted_by(signal),
        Ok(Ok(true)) => ExitCode::from(exit_code::OK),
        Ok(Ok(false)) => ExitCode::from(exit_code::SCENARIO_FAILED),
        Ok(Err(e)) => {
            eprintln!("error: {}", daemon_core::daemon::error_chain(&e));
            ExitCode::from(exit_code::SETUP_ERROR)
        }
    }
}

/// Writes `text` to standard output; `false` when it is closed (`harness run | head`),
/// where `print!` would panic.
fn say(text: &str) -> bool {
    use std::io::Write;
    if CONSOLE_ON_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        let mut out = std::io::stderr().lock();
        return out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok();
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok()
}

/// Whether the console's lines go to stderr: standard output carries a report (`--json -`).
static CONSOLE_ON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, what the command says goes to stderr.
fn console_on_stderr() {
    CONSOLE_ON_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
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
        None => crate::diff::Explained::parse(crate::diff::DEFAULT_EXPLAINED, "docs/diff-explained.yaml")
            .map_err(|e| daemon_core::daemon::error_chain(&e)),
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display())).and_then(|text| {
                crate::diff::Explained::parse(&text, &path.display().to_string())
                    .map_err(|e| daemon_core::daemon::error_chain(&e))
            })
        }
    };
    let explained = match explained {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    if let Err(code) = writable("--json", args.json.as_deref()) {
        return code;
    }
    if let Some([recorded, replayed]) = args.recordings.as_deref() {
        return diff_recordings(recorded, replayed, args.speed, &explained, args.json.as_deref());
    }
    let (exe, runtime) = match mock_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let real = |nydusd: PathBuf| RunConfig {
        nydusd,
        target: Target::Real,
        extra_args: args.daemon_args.clone(),
        bundles: None,
    };
    let mock = RunConfig { nydusd: exe, target: Target::Mock, extra_args: Vec::new(), bundles: None };
    let (first, second, builds) = match args.nydusd.as_slice() {
        [] => (mock, real(PathBuf::from("nydusd")), false),
        [one] => (mock, real(one.clone()), false),
        [a, b] => (real(a.clone()), real(b.clone()), true),
        _ => {
            eprintln!(
                "error: --nydusd: give one real nydusd (compared with the mock) or two (compared with each other)"
            );
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let scenarios = match args.selection.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let diffs = runtime.block_on(crate::termination::unless_signalled(async {
        let mut out = Vec::new();
        for (path, scenario) in &scenarios {
            out.push(if builds {
                crate::diff::diff_builds(path, scenario, &first, &second, &explained).await
            } else {
                crate::diff::diff_scenario(path, scenario, &first, &second, &explained).await
            });
        }
        out
    }));
    let diffs: Vec<crate::diff::ScenarioDiff> = match diffs {
        Ok(diffs) => diffs,
        Err(signal) => return interrupted_by(signal),
    };
    print!("{}", crate::diff::report(&diffs));
    let written =
        write_output("--json", args.json.as_deref(), &serde_json::to_string_pretty(&diffs).unwrap_or_default());
    if written != ExitCode::from(exit_code::OK) {
        return written;
    }
    let failing = diffs.iter().any(crate::diff::ScenarioDiff::fails);
    ExitCode::from(if failing { exit_code::SCENARIO_FAILED } else { exit_code::OK })
}

/// Checks, before any work, that an output file named by `flag` can be written: a path
/// that cannot is a usage error now, not a silent loss (exit 0) after the work.
fn writable(flag: &str, path: Option<&std::path::Path>) -> Result<(), ExitCode> {
    let Some(path) = path else { return Ok(()) };
    crate::report::check_writable(path).map_err(|why| {
        eprintln!("error: {flag} {}: cannot be written: {why}", path.display());
        ExitCode::from(exit_code::USAGE)
    })
}

/// Writes an output file whole (see `report::write_atomically`); the exit code: OK, or
/// SETUP_ERROR after saying why it could not.
fn write_output(flag: &str, path: Option<&std::path::Path>, text: &str) -> ExitCode {
    let Some(path) = path else { return ExitCode::from(exit_code::OK) };
    match crate::report::write_atomically(path, text.as_bytes()) {
        Ok(()) => ExitCode::from(exit_code::OK),
        Err(e) => {
            eprintln!("error: {flag} {}: cannot write: {e}", path.display());
            ExitCode::from(exit_code::SETUP_ERROR)
        }
    }
}

/// `harness diff --recordings`: every difference between two recordings of a session,
/// without the volatile fields of `explained`.
fn diff_recordings(
    recorded: &std::path::Path,
    replayed: &std::path::Path,
    speed: f64,
    explained: &crate::diff::Explained,
    json: Option<&std::path::Path>,
) -> ExitCode {
    if !(speed.is_finite() && speed > 0.0) {
        eprintln!("error: --speed must be a positive number, not {speed}");
        return ExitCode::from(exit_code::USAGE);
    }
    let read = |path: &std::path::Path| crate::record::Recording::read(path).map_err(|e| format!("{e}"));
    let (a, b) = match (read(recorded), read(replayed)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let comparison = crate::record::compare::compare(&a, &b, speed, &explained.volatile);
    print!("{}", comparison.report());
    let written = write_output("--json", json, &serde_json::to_string_pretty(&comparison).unwrap_or_default());
    if written != ExitCode::from(exit_code::OK) {
        return written;
    }
    ExitCode::from(if comparison.differences.is_empty() { exit_code::OK } else { exit_code::SCENARIO_FAILED })
}

fn vm(args: VmArgs) -> ExitCode {
    let harness = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find the harness binary to put in the guest: {e}");
            return ExitCode::from(exit_code::SETUP_ERROR);
        }
    };
    let copy = if args.copy.is_empty() { vec![PathBuf::from("scenarios")] } else { args.copy };
    crate::containment::sweep_and_report();
    // The work directory is owned like a scenario root: a SIGKILLed `harness vm` leaves it
    // for the next command's sweep, which removes it.
    let work = match tempfile::Builder::new().prefix(crate::containment::VM_PREFIX).tempdir() {
        Ok(work) => work,
        Err(e) => {
            eprintln!("error: cannot create the VM's work directory in {}: {e}", std::env::temp_dir().display());
            return ExitCode::from(exit_code::SETUP_ERROR);
        }
    };
    if let Err(e) = crate::containment::Ledger::claim(work.path()) {
        eprintln!("error: cannot claim the VM's work directory {}: {e}", work.path().display());
        return ExitCode::from(exit_code::SETUP_ERROR);
    }
    let options = crate::vm::VmOptions {
        kernel: args.kernel,
        harness,
        copy,
        binaries: args.binaries,
        program: args.exec,
        modules: args.modules,
        command: args.command,
        out: args.out,
        work: work.path().to_owned(),
        accel: args.accel,
        memory_mb: args.memory,
        cpus: args.cpus,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::SETUP_ERROR);
        }
    };
    let outcome = runtime.block_on(crate::termination::unless_signalled(crate::vm::run(&options, |line| {
        println!("{line}");
    })));
    // A preparation abandoned at the deadline or on a signal (a read that never returns)
    // must not hold the exit.
    runtime.shutdown_background();
    match outcome {
        Err(signal) => {
            eprintln!("vm: ended by {}; qemu was killed", crate::termination::name(signal));
            ExitCode::from(crate::termination::exit_code(signal))
        }
        Ok(Err(e)) => {
            eprintln!("error: {}", daemon_core::daemon::error_chain(&e));
            ExitCode::from(exit_code::SETUP_ERROR)
        }
        Ok(Ok(outcome)) => vm_ended(&outcome, &options.out),
    }
}

/// Says how a VM run went; the guest command's exit code, or VM_FAILED when it did not end.
fn vm_ended(outcome: &crate::vm::VmOutcome, out: &std::path::Path) -> ExitCode {
    let boot = outcome.boot_ms.map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1e3));
    let result = match (outcome.exit_code, &outcome.failure) {
        (Some(code), _) => format!("the command exited {code}"),
        (None, Some(why)) => why.clone(),
        (None, None) => "the command did not end".into(),
    };
    eprintln!(
        "vm: kernel {} ({}), boot {boot}, {result}, wall {:.1} s; results in {}",
        outcome.kernel,
        outcome.accel.as_str(),
        outcome.wall_ms as f64 / 1e3,
        out.join("results").display()
    );
    if !outcome.modules_missing.is_empty() {
        eprintln!("vm: the kernel has no {}", outcome.modules_missing.join(", "));
    }
    if !outcome.modules_replaced.is_empty() {
        eprintln!("vm: loaded {} from --module in place of the package's", outcome.modules_replaced.join(", "));
    }
    match outcome.exit_code {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(exit_code::SCENARIO_FAILED)),
        None => ExitCode::from(exit_code::VM_FAILED),
    }
}

fn replay(dir: &std::path::Path, settings: crate::record::replay_dir::ReplaySettings) -> ExitCode {
    let (harness, runtime) = match mock_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(crate::termination::unless_signalled(crate::record::replay_dir::replay_on_mock(
        dir, &harness, settings,
    )));
    match outcome {
        Err(signal) => {
            eprintln!("replay of {} ended by {}", dir.display(), crate::termination::name(signal));
            ExitCode::from(crate::termination::exit_code(signal))
        }
        Ok(Ok(replayed)) => {
            for note in &replayed.notes {
                println!("not replayed: {note}");
            }
            let comparison = replayed.comparison;
            print!("{}", comparison.report());
            ExitCode::from(if comparison.differences.is_empty() { exit_code::OK } else { exit_code::SCENARIO_FAILED })
        }
        Ok(Err(e)) => {
            use crate::record::replay_dir::ReplayError as E;
            // On stdout, where the comparison would have been: the cause, whole.
            println!("replay of {} failed: {}", dir.display(), daemon_core::daemon::error_chain(&e));
            let usage = matches!(
                e,
                E::Speed(_) | E::Recording(_) | E::Timestamp { .. } | E::TooLong { .. } | E::Symlink { .. }
            );
            ExitCode::from(if usage { exit_code::USAGE } else { exit_code::SETUP_ERROR })
        }
    }
}

fn record(args: RecordArgs) -> ExitCode {
    // One thread: a piece read on one side is written to the other without waking a
    // second worker, which cost the proxy about 60 µs per call on 2 cores (harness bench).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::SETUP_ERROR);
        }
    };
    let out = args.out.clone();
    let outcome = runtime.block_on(crate::termination::unless_signalled(async move {
        match (&args.upstream, &args.listen) {
            (Some(upstream), Some(listen)) => {
                let options = crate::record::RecordOptions {
                    upstream: upstream.clone(),
                    listen: listen.clone(),
                    out: args.out.clone(),
                    max_bytes: args.max_bytes,
                };
                crate::record::serve(&options).await.map(|never| match never {})
            }
            _ => crate::record::record_command(&args.command, &args.out, args.supervisor, args.max_bytes).await,
        }
    }));
    match outcome {
        Err(signal) => {
            eprintln!("recording in {} ended by {}", out.display(), crate::termination::name(signal));
            ExitCode::from(crate::termination::exit_code(signal))
        }
        Ok(Ok(status)) => {
            eprintln!("recording in {}: the daemon ended ({status})", out.display());
            ExitCode::from(exit_code::OK)
        }
        Ok(Err(e)) => {
            eprintln!("error: {}", daemon_core::daemon::error_chain(&e));
            ExitCode::from(exit_code::SETUP_ERROR)
        }
    }
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
            // Every error of the file, one line each.
            Err(e) => {
                bad += 1;
                e.to_string().lines().for_each(|line| println!("bad  {line}"));
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
