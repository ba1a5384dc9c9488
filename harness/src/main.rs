//! `harness`, and `mock-nydusd` when started under that name (or as `nydusd`).

fn main() -> std::process::ExitCode {
    if let Some(ended) = harness::run_injector_role() {
        return ended;
    }
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if testkit::invoked_as_mock(&argv0) {
        return mock_nydusd::run(std::env::args_os());
    }
    if harness::run_reader_role() {
        return std::process::ExitCode::SUCCESS;
    }
    for name in mock_nydusd::ENVIRONMENT_VARIABLES {
        // SAFETY: no other thread exists yet (the runtime is built in `cli::main`). The
        // harness gives its mock daemons every setting by flag; a variable meant for a
        // snapshotter's mock would add a script or journal to them behind its back.
        unsafe { std::env::remove_var(name) };
    }
    harness::cli::main(std::env::args_os())
}
