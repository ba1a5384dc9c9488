//! Every scenario file is one test (libtest-mimic), so nextest lists, filters, runs and
//! reports scenarios individually. Files in `scenarios/invalid/` are tests too: each must be
//! rejected at load time with a located error.

use std::path::{Path, PathBuf};

use harness::runner::{RunConfig, run_scenario, skip_reason};
use harness::scenario;
use harness::scenario::model::Target;
use libtest_mimic::{Arguments, Failed, Trial};

fn scenarios_dir() -> PathBuf {
    testkit::manifest_dir!().join("../scenarios")
}

fn test_name(path: &Path) -> String {
    let rel = path.strip_prefix(scenarios_dir()).unwrap_or(path);
    rel.with_extension("").to_string_lossy().replace('/', "::")
}

fn config() -> RunConfig {
    RunConfig { nydusd: testkit::bin_exe!("harness"), target: Target::Mock, extra_args: Vec::new(), bundles: None }
}

fn real_config(nydusd: PathBuf) -> RunConfig {
    // Root here lacks CAP_SYS_RESOURCE, so real nydusd must not raise its fd limit.
    RunConfig { nydusd, target: Target::Real, extra_args: vec!["--rlimit-nofile".into(), "0".into()], bundles: None }
}

fn run_one(path: &Path) -> Result<(), Failed> {
    run_with(path, config())
}

fn run_with(path: &Path, config: RunConfig) -> Result<(), Failed> {
    let scenario = scenario::load(path).map_err(|e| Failed::from(e.to_string()))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failed::from(e.to_string()))?;
    let result = runtime.block_on(run_scenario(path, &scenario, &config));
    match (&result.failure, &result.skipped) {
        (None, None) => Ok(()),
        (None, Some(reason)) => Err(format!("skipped: {reason}").into()),
        (Some(_), _) => Err(harness::report::scenario_report(&result, &scenarios_dir()).into()),
    }
}

/// Runs `path` on the mock and on `real`; fails on any unexplained difference.
fn diff_one(path: &Path, real: RunConfig) -> Result<(), Failed> {
    use harness::diff::{DEFAULT_EXPLAINED, Explained, diff_scenario, report};
    let scenario = scenario::load(path).map_err(|e| Failed::from(e.to_string()))?;
    let explained = Explained::parse(DEFAULT_EXPLAINED, "docs/diff-explained.yaml")?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failed::from(e.to_string()))?;
    let diff = runtime.block_on(diff_scenario(path, &scenario, &config(), &real, &explained));
    if diff.not_compared.is_some() || diff.fails() {
        return Err(report(std::slice::from_ref(&diff)).into());
    }
    Ok(())
}

/// A trial, listed as ignored (with the reason printed) when `skip` holds one.
fn listed(name: String, skip: Option<String>, body: impl FnOnce() -> Result<(), Failed> + Send + 'static) -> Trial {
    if let Some(reason) = &skip {
        eprintln!("skipping {name}: {reason}");
    }
    Trial::test(name, body).with_ignored_flag(skip.is_some())
}

fn main() -> std::process::ExitCode {
    // Against a real nydusd the reader workload is this binary started again with
    // HARNESS_READER set (the mock target starts the harness binary instead). Without
    // this, the reader ran the whole test list again, real nydusd processes included,
    // and stop_reader waited for it until nextest killed the test, leaving all of them.
    if harness::run_reader_role() {
        return std::process::ExitCode::SUCCESS;
    }
    // The real target puts this binary, started as `nydusd`, in front of nydusd.
    if let Some(ended) = harness::run_injector_role() {
        return ended;
    }
    let args = Arguments::from_args();
    let dir = scenarios_dir();
    let mut trials = Vec::new();
    for path in scenario::discover(std::slice::from_ref(&dir)).expect("scenarios/ is readable") {
        // Skips are decided here, when tests are listed, so they show as skipped (ignored),
        // never as passed. Scenarios with requirements are named `privileged::…` so that
        // nextest runs them in their own test group (.config/nextest.toml).
        let loaded = scenario::load(&path).ok();
        let skip = loaded.as_ref().and_then(|s| skip_reason(s, &config()));
        let privileged = loaded.as_ref().is_some_and(|s| !s.requires.is_empty());
        let name = if privileged { format!("privileged::{}", test_name(&path)) } else { test_name(&path) };
        trials.push(listed(name, skip, move || run_one(&path)));
    }
    // The scenarios that apply to a real nydusd run against it too, as `real::…` tests (the
    // installed one, crates.io's 2.2) and `real24::…` (a 2.4 build named by $NYDUSD_2_4),
    // and those for both targets are also compared call by call (`real::diff::…`).
    for (prefix, real) in [("real", host_facts::installed_nydusd()), ("real24", host_facts::nydusd_2_4())] {
        for path in scenario::discover(std::slice::from_ref(&dir)).expect("scenarios/ is readable") {
            let Ok(loaded) = scenario::load(&path) else { continue };
            if !loaded.targets.contains(&Target::Real) {
                continue;
            }
            let real_skip = match &real {
                Err(reason) => Some(reason.clone()),
                Ok(nydusd) => skip_reason(&loaded, &real_config(nydusd.clone())),
            };
            let nydusd = real.clone().unwrap_or_default();
            let (file, on_real) = (path.clone(), real_config(nydusd.clone()));
            trials.push(listed(format!("{prefix}::{}", test_name(&path)), real_skip.clone(), move || {
                run_with(&file, on_real)
            }));
            if loaded.targets.contains(&Target::Mock) {
                let skip = real_skip.or_else(|| skip_reason(&loaded, &config()));
                let name = format!("{prefix}::diff::{}", test_name(&path));
                trials.push(listed(name, skip, move || diff_one(&path, real_config(nydusd))));
            }
        }
    }
    trials.push(Trial::test("schema_json_is_in_sync", || {
        let committed = std::fs::read_to_string(scenarios_dir().join("schema.json")).unwrap_or_default();
        if committed.trim() == scenario::schema_json().trim() {
            Ok(())
        } else {
            Err("scenarios/schema.json is out of date: run `cargo run -p harness -- schema > scenarios/schema.json`"
                .into())
        }
    }));
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
