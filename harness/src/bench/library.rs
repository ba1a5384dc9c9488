//! The scenario library as `harness run` runs it, and a live reader's stall during a FUSE
//! failover.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BenchError, Doing, summary};
use crate::runner::run_scenario;

pub(super) fn mock_config(mock: &Path) -> crate::runner::RunConfig {
    crate::runner::RunConfig {
        nydusd: mock.to_owned(),
        target: crate::scenario::model::Target::Mock,
        extra_args: Vec::new(),
        bundles: None,
    }
}

/// The whole scenario library on the mock, as `harness run` runs it (one scenario per
/// CPU at a time): wall time, and how many passed.
pub(super) async fn library(mock: &Path, dir: &Path) -> Result<Value, BenchError> {
    let files = crate::scenario::discover(&[dir.to_owned()]).doing(format!("reading {}", dir.display()))?;
    let mut scenarios = Vec::new();
    for file in files.into_iter().filter(|f| !f.starts_with(dir.join("invalid"))) {
        let scenario = crate::scenario::load(&file)?;
        scenarios.push((file, scenario));
    }
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs));
    let config = std::sync::Arc::new(mock_config(mock));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (file, scenario) in scenarios {
        let (permits, config) = (permits.clone(), config.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            run_scenario(&file, &scenario, &config).await
        });
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    while let Some(result) = tasks.join_next().await {
        let result = result?;
        match (&result.failure, &result.skipped) {
            (Some(_), _) => failed += 1,
            (None, Some(_)) => skipped += 1,
            (None, None) => passed += 1,
        }
    }
    Ok(json!({
        "scenarios": passed + failed + skipped,
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "wall_ms": started.elapsed().as_secs_f64() * 1e3,
        "jobs": jobs,
    }))
}

/// The longest gap a live reader sees between two reads while its daemon is SIGKILLed
/// and failed over (the privileged `failover-live-reader` scenario, `runs` times).
pub(super) async fn read_stall(mock: &Path, dir: &Path, runs: usize) -> Result<Value, BenchError> {
    let file = dir.join("privileged/failover-live-reader.yaml");
    let scenario = crate::scenario::load(&file)?;
    let config = mock_config(mock);
    if let Some(reason) = crate::runner::skip_reason(&scenario, &config) {
        return Ok(json!({ "skipped": reason }));
    }
    let mut stalls = Vec::with_capacity(runs);
    let (mut reads, mut failures) = (0, 0);
    for _ in 0..runs {
        let result = run_scenario(&file, &scenario, &config).await;
        if let Some(failure) = result.failure {
            return Err(BenchError::Measurement(format!("{}: {}", file.display(), failure.message)));
        }
        for stats in &result.readers {
            stalls.push(Duration::from_micros(stats.longest_stall_us));
            reads += stats.reads;
            failures += stats.failures;
        }
    }
    let mut value = summary(stalls);
    value["reads"] = json!(reads);
    value["failed_reads"] = json!(failures);
    Ok(value)
}
