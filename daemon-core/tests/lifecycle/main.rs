//! daemon-core against real mock-nydusd processes.
//!
//! This test binary is also the mock: started under the name `nydusd` (a symlink each
//! test makes in its temporary root) it runs `mock_nydusd::run`, so every daemon is a
//! separate process with real sockets and signals, and no other binary has to be built
//! first. Tests that need more than an unprivileged host are listed as ignored, with the
//! reason printed, when the host lacks it.

mod client;
mod crash_points;
mod daemon_api;
mod guarantees;
mod manager;
mod monitor;
mod mounts;
mod store;
mod supervisor;
mod support;

use libtest_mimic::{Arguments, Trial};

fn main() -> std::process::ExitCode {
    if testkit::invoked_as_mock(&std::env::args_os().next().unwrap_or_default()) {
        return mock_nydusd::run(std::env::args_os());
    }
    if let Ok(workflow) = std::env::var(crash_points::WORKFLOW_ROLE) {
        return crash_points::workflow_role(&workflow);
    }
    if let Some(root) = std::env::var_os(store::WRITER_ROLE) {
        return store::writer(std::path::Path::new(&root));
    }
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = Vec::new();
    trials.extend(client::tests());
    trials.extend(supervisor::tests());
    trials.extend(manager::tests());
    trials.extend(guarantees::tests());
    trials.extend(daemon_api::tests());
    trials.extend(monitor::tests());
    trials.extend(store::tests());
    trials.extend(mounts::tests());
    trials.extend(crash_points::tests());
    libtest_mimic::run(&args, trials).exit_code()
}
