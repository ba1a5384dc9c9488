//! Every scenario file is one test (libtest-mimic), so nextest lists, filters, runs and
//! reports scenarios individually. Files in `scenarios/invalid/` are tests too: each must be
//! rejected at load time with a located error.

use std::path::{Path, PathBuf};

use harness::runner::{RunConfig, run_scenario};
use harness::scenario;
use libtest_mimic::{Arguments, Failed, Trial};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn test_name(path: &Path) -> String {
    let rel = path.strip_prefix(scenarios_dir()).unwrap_or(path);
    rel.with_extension("").to_string_lossy().replace('/', "::")
}

fn run_one(path: &Path) -> Result<(), Failed> {
    let scenario = scenario::load(path).map_err(|e| Failed::from(e.to_string()))?;
    let config =
        RunConfig { nydusd: PathBuf::from(env!("CARGO_BIN_EXE_harness")), is_mock: true, extra_args: Vec::new() };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failed::from(e.to_string()))?;
    let result = runtime.block_on(run_scenario(path, &scenario, &config));
    match result.failure {
        None => Ok(()),
        Some(_) => Err(harness::report::scenario_report(&result, &scenarios_dir()).into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    let dir = scenarios_dir();
    let mut trials = Vec::new();
    for path in scenario::discover(std::slice::from_ref(&dir)).expect("scenarios/ is readable") {
        let name = test_name(&path);
        trials.push(Trial::test(name, move || run_one(&path)));
    }
    let invalid = dir.join("invalid");
    for path in scenario::discover(std::slice::from_ref(&invalid)).expect("scenarios/invalid is readable") {
        let name = test_name(&path);
        trials.push(Trial::test(name, move || match scenario::load(&path) {
            Ok(_) => Err("an invalid scenario was accepted".into()),
            Err(e) => {
                let text = e.to_string();
                let located = text.split(':').nth(1).and_then(|l| l.parse::<u32>().ok()).is_some_and(|l| l > 0);
                if located { Ok(()) } else { Err(format!("error has no line number: {text}").into()) }
            }
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
