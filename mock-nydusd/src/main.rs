//! `mock-nydusd`: starts wherever `nydusd` would, with the same argv.

fn main() -> std::process::ExitCode {
    mock_nydusd::run(std::env::args_os())
}
