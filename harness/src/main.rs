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
    harness::cli::main(std::env::args_os())
}
