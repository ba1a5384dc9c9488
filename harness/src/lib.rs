//! harness: runs YAML lifecycle scenarios against mock-nydusd or a real nydusd.
//!
//! ```text
//!   scenarios/**/*.yaml ─► scenario::load (file:line:column errors)
//!                              │
//!                              ▼
//!   runner::run_scenario ─► daemon-core (Daemon, NydusdClient) ─► nydusd / mock-nydusd processes
//!                              │
//!                              ▼
//!   report (PASS/FAIL lines, expected vs observed, journal tails, `N passed, N failed`)
//! ```
//!
//! * [`scenario`]: the file format and its loader; [`runner`]: one scenario's run, its
//!   steps and targets; [`report`]: the reports; [`explain`]: scenarios as text or diagrams.
//! * [`bench`](mod@bench), [`chaos`], [`diff`]: the commands beyond `run`; [`cli`]: all of them.
//! * [`reader`]: the read workload; [`termination`]: the signals that end a command.
//! * [`record`](mod@record): `harness record`, the recording proxy on nydusd's API socket.
//! * [`vm`]: `harness vm`, a harness command inside a VM with another kernel.
//!
//! The harness binary is also mock-nydusd: started under the name `nydusd` or
//! `mock-nydusd` (a symlink in each scenario's root), it runs the mock. That way
//! `cargo run -p harness` needs no second binary to be built first.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod containment;
pub mod diff;
pub mod explain;
pub mod reader;
/// Record and replay (the `session-record` crate), under the name the harness uses.
pub use session_record as record;
pub mod report;
pub mod runner;
/// The scenario format (the `scenario-format` crate), under the name the harness uses.
pub use scenario_format as scenario;
pub mod termination;
/// Runs in a VM (the `vm-runner` crate), under the name the harness uses.
pub use vm_runner as vm;

/// Environment variable that makes the harness binary a reader workload (see
/// [`reader`]): `<file>\n<size>\n<stop file>`.
pub const READER_ROLE: &str = "HARNESS_READER";

/// Runs the injector (faults in front of a real nydusd, [`record::inject`]) if this
/// process was started as one: with `--inject-nydusd` first, or as `nydusd` with it
/// anywhere. The real target starts the running binary so, so every binary that runs real
/// scenarios calls this first.
pub fn run_injector_role() -> Option<std::process::ExitCode> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flag_first = argv.get(1).is_some_and(|a| a == record::inject::options::NYDUSD_FLAG);
    let invoked_as_nydusd = argv.first().is_some_and(|a| testkit::invoked_as_mock(a));
    (flag_first || (invoked_as_nydusd && record::inject::requested(&argv))).then(|| record::inject::main(argv))
}

/// Runs the reader workload if this process was started as one; prints its stats as JSON.
pub fn run_reader_role() -> bool {
    let Ok(spec) = std::env::var(READER_ROLE) else { return false };
    println!("{}", crate::reader::run_spec(&spec));
    true
}
