//! `harness bench`: how fast the lifecycle is on the mock, printed as a table and written
//! as JSON. Numbers, never pass/fail: timing goals do not belong in tests.
//!
//! Each measurement runs the real flow through daemon-core's manager against mock-nydusd
//! processes in a temporary root: failover and restart from SIGKILL to RUNNING, death
//! detection, and the reaction of a state wait; the failover flow again with upstream's
//! retry timing (100 ms between attempts) for comparison; and N daemons at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon_core::daemon::{DaemonMode, SpawnExtras};
use daemon_core::manager::{Manager, ManagerConfig, ManagerEvent, PerDaemonArgs, RecoverPolicy};
use daemon_core::{Daemon, DaemonOptions, DaemonState, Layout, Timeouts};
use serde_json::{Value, json};

use crate::runner::run_scenario;
use tokio::sync::broadcast;

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The harness binary (the mock).
    pub mock: PathBuf,
    /// Runs per latency measurement.
    pub runs: usize,
    /// Daemon counts for the scale measurement.
    pub scales: Vec<usize>,
    /// Consecutive failovers of the leak check (0: skip it).
    pub leak_runs: usize,
    /// A real nydusd, with its extra arguments, to measure beside the mock.
    pub real: Option<(PathBuf, Vec<std::ffi::OsString>)>,
    /// The scenario library: its wall time, and its live-reader failover for the read stall.
    pub scenarios: Option<PathBuf>,
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(rank).map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
}

fn summary(mut samples: Vec<Duration>) -> Value {
    json!({
        "runs": samples.len(),
        "p50_ms": percentile(&mut samples, 0.5),
        "p99_ms": percentile(&mut samples, 0.99),
        "max_ms": percentile(&mut samples, 1.0),
    })
}

/// A temporary root with the mock linked in, and a manager over it.
struct Bed {
    _root: testkit::MockRoot,
    layout: Layout,
    manager: Manager,
    events: broadcast::Receiver<ManagerEvent>,
}

impl Bed {
    fn new(mock: &Path, policy: RecoverPolicy, timeouts: Timeouts) -> anyhow::Result<Self> {
        Self::with(mock, vec!["--mock-no-abort".into()], policy, timeouts)
    }

    /// A bed running `binary` with `args` appended to every daemon's command line.
    fn with(
        binary: &Path,
        args: Vec<std::ffi::OsString>,
        policy: RecoverPolicy,
        timeouts: Timeouts,
    ) -> anyhow::Result<Self> {
        let root = testkit::MockRoot::new("nydus-bench-", binary)?;
        let layout = Layout::new(root.path());
        std::fs::create_dir_all(layout.shared_mountpoint())?;
        let config = ManagerConfig {
            layout: layout.clone(),
            nydusd: root.nydusd().to_owned(),
            fs_driver: daemon_core::daemon::FsDriver::Fusedev,
            recover_policy: policy,
            timeouts,
            spawn: SpawnExtras { args, kill_on_drop: true, ..SpawnExtras::default() },
            fscache_dir: None,
            per_daemon_args: PerDaemonArgs::default(),
            exchange_observer: None,
            recovery: Default::default(),
            reply_limit: daemon_core::api::client::DEFAULT_REPLY_LIMIT,
        };
        let manager = Manager::open(config)?;
        let events = manager.subscribe();
        Ok(Self { _root: root, layout, manager, events })
    }

    async fn daemon(&self, id: &str, timeouts: Timeouts) -> anyhow::Result<std::sync::Arc<Daemon>> {
        let options = DaemonOptions { id: Some(id.into()), mode: DaemonMode::Shared, ..DaemonOptions::default() };
        let daemon = self.manager.add_daemon(Daemon::create(&self.layout, options, timeouts)?)?;
        self.manager.start_daemon_and_wait(&daemon).await?;
        Ok(daemon)
    }

    async fn next(&mut self, wanted: impl Fn(&ManagerEvent) -> bool) -> anyhow::Result<ManagerEvent> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(event)) if wanted(&event) => return Ok(event),
                Ok(Ok(ManagerEvent::RecoveryFailed { error, .. })) => anyhow::bail!("recovery failed: {error}"),
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => anyhow::bail!("events: {e}"),
                Err(_) => anyhow::bail!("no event within 30 s"),
            }
        }
    }
}

fn upstream_timeouts() -> Timeouts {
    // Upstream retries every 100 ms plus up to 100 ms of jitter; the lower bound is used,
    // which favours upstream.
    Timeouts {
        backoff_initial: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(100),
        ..Timeouts::default()
    }
}

/// SIGKILL to RUNNING again under `policy`, `runs` times.
async fn recovery(
    mock: &Path,
    policy: RecoverPolicy,
    timeouts: Timeouts,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut bed = Bed::new(mock, policy, timeouts)?;
    let daemon = bed.daemon("d1", timeouts).await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let killed = Instant::now();
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. } | ManagerEvent::Restarted { .. })).await?;
        samples.push(killed.elapsed());
        anyhow::ensure!(daemon.last_observed_state() == DaemonState::Running, "not RUNNING after recovery");
    }
    Ok(samples)
}

/// How long `wait_until_state` takes to return after the daemon changed state: the mock
/// holds INIT for 20 ms after start, and journals the change on the same clock
/// (CLOCK_MONOTONIC) the return is read on.
async fn state_reaction(mock: &Path, timeouts: Timeouts, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::Builder::new().prefix("nydus-bench-state-").tempdir()?;
    let script = dir.path().join("hold.json");
    std::fs::write(&script, r#"{"startup":{"hold":{"state":"INIT","ms":20}}}"#)?;
    let journal = dir.path().join("journal.jsonl");
    let args = vec![
        "--mock-no-abort".into(),
        "--mock-script".into(),
        script.into_os_string(),
        "--mock-journal".into(),
        journal.clone().into_os_string(),
    ];
    let bed = Bed::with(mock, args, RecoverPolicy::None, timeouts)?;
    let mut samples = Vec::with_capacity(runs);
    for n in 0..runs {
        let options = DaemonOptions { id: Some(format!("d{n}")), mode: DaemonMode::Shared, ..DaemonOptions::default() };
        let daemon = bed.manager.add_daemon(Daemon::create(&bed.layout, options, timeouts)?)?;
        bed.manager.spawn(&daemon, false).await?;
        daemon.wait_until_state(DaemonState::Running).await?;
        let returned = mock_nydusd::journal::monotonic_ns();
        let pid = u64::from(daemon.pid());
        let changed = std::fs::read_to_string(&journal)?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["pid"].as_u64() == Some(pid) && e["event"] == "state" && e["to"] == "RUNNING")
            .and_then(|e| e["t_ns"].as_u64())
            .ok_or_else(|| anyhow::anyhow!("the mock journaled no change to RUNNING"))?;
        samples.push(Duration::from_nanos(returned.saturating_sub(changed)));
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
    }
    Ok(samples)
}

/// `GET /api/v1/daemon` on one keep-alive connection of daemon-core's client, `requests`
/// times after a warm-up: the latency daemon-core sees, for the mock or a real nydusd.
async fn api_latency(binary: &Path, args: Vec<std::ffi::OsString>, requests: usize) -> anyhow::Result<Value> {
    let timeouts = Timeouts::default();
    let bed = Bed::with(binary, args, RecoverPolicy::None, timeouts)?;
    let daemon = bed.daemon("latency", timeouts).await?;
    let client = daemon.client().await?;
    for _ in 0..200 {
        client.get_daemon_info().await?;
    }
    let mut samples = Vec::with_capacity(requests);
    let all = Instant::now();
    for _ in 0..requests {
        let one = Instant::now();
        client.get_daemon_info().await?;
        samples.push(one.elapsed());
    }
    let per_second = requests as f64 / all.elapsed().as_secs_f64();
    // A graceful stop: a real nydusd unmounts its FUSE mountpoint on SIGTERM.
    daemon.terminate()?;
    let _ = daemon.wait_for_exit_and_unmount().await;
    let mut s = samples;
    Ok(json!({
        "requests": requests,
        "p50_us": percentile(&mut s, 0.5) * 1e3,
        "p99_us": percentile(&mut s, 0.99) * 1e3,
        "requests_per_second": per_second,
    }))
}

/// Requests of the raw-client measurement: five rounds of this many, then the RSS.
const RAW_ROUND: usize = 20_000;
const RAW_ROUNDS: usize = 5;

/// `GET /api/v1/daemon` over one raw keep-alive connection (no HTTP client library in the
/// way), for the mock and, when given, a real nydusd, each directly and through a
/// `harness record` proxy in front of it, in turns round by round so all see the same
/// machine; then each daemon's (or recorder's) resident memory after the 101 000 requests.
/// A proxied row carries `overhead_p50_us`: what the recorder adds to each call.
async fn raw_api(harness: &Path, real: Option<&(PathBuf, Vec<std::ffi::OsString>)>) -> anyhow::Result<Value> {
    let timeouts = Timeouts::default();
    let mut beds = vec![("mock", Bed::with(harness, vec!["--mock-no-abort".into()], RecoverPolicy::None, timeouts)?)];
    if let Some((binary, args)) = real {
        beds.push(("real nydusd", Bed::with(binary, args.clone(), RecoverPolicy::None, timeouts)?));
    }
    let mut served = Vec::new();
    for (name, bed) in &beds {
        let daemon = bed.daemon("raw", timeouts).await?;
        served.push((*name, daemon));
    }
    // Each target: its name, socket, the pid whose memory is reported, and which direct
    // target it proxies.
    let mut targets: Vec<(String, PathBuf, u32, Option<usize>)> =
        served.iter().map(|(n, d)| (n.to_string(), d.api_socket(), d.pid(), None)).collect();
    let recordings = tempfile::Builder::new().prefix("harness-bench-record-").tempdir()?;
    let mut recorders = Vec::new();
    for (i, (name, daemon)) in served.iter().enumerate() {
        let recorder = start_recorder(harness, &daemon.api_socket(), &recordings.path().join(format!("{i}"))).await?;
        let pid = recorder.0.id().unwrap_or(0);
        targets.push((format!("{name} through harness record"), recorder.1.clone(), pid, Some(i)));
        recorders.push(recorder);
    }
    let sockets: Vec<(PathBuf, u32)> = targets.iter().map(|(_, s, p, _)| (s.clone(), *p)).collect();
    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Vec<Duration>, Duration, u64)>> {
        use std::io::Write;
        let mut streams = Vec::new();
        for (socket, _) in &sockets {
            let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
            let mut buf = Vec::new();
            for _ in 0..1_000 {
                stream.write_all(b"GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
                testkit::read_reply_into(&mut stream, &mut buf);
            }
            streams.push(stream);
        }
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); sockets.len()];
        let mut busy = vec![Duration::ZERO; sockets.len()];
        let mut buf = Vec::with_capacity(2048);
        for _ in 0..RAW_ROUNDS {
            for (i, stream) in streams.iter_mut().enumerate() {
                let round = Instant::now();
                for _ in 0..RAW_ROUND {
                    let one = Instant::now();
                    stream.write_all(b"GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
                    testkit::read_reply_into(stream, &mut buf);
                    samples[i].push(one.elapsed());
                }
                busy[i] += round.elapsed();
            }
        }
        Ok(samples
            .into_iter()
            .zip(busy)
            .zip(&sockets)
            .map(|((s, b), (_, pid))| (s, b, rss_kb(*pid).unwrap_or(0)))
            .collect())
    })
    .await??;
    for (_, daemon) in &served {
        daemon.terminate()?;
        let _ = daemon.wait_for_exit_and_unmount().await;
    }
    for (mut child, _) in recorders {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let mut rows: Vec<Value> = targets
        .iter()
        .zip(measured)
        .map(|((name, _, _, _), (mut s, busy, rss))| {
            json!({
                "daemon": name,
                "requests": 1_000 + RAW_ROUNDS * RAW_ROUND,
                "p50_us": percentile(&mut s, 0.5) * 1e3,
                "p99_us": percentile(&mut s, 0.99) * 1e3,
                "requests_per_second": (RAW_ROUNDS * RAW_ROUND) as f64 / busy.as_secs_f64(),
                "rss_kb_after": rss,
            })
        })
        .collect();
    for (i, (.., proxied)) in targets.iter().enumerate() {
        if let Some(direct) = proxied {
            let added =
                rows[i]["p50_us"].as_f64().unwrap_or(f64::NAN) - rows[*direct]["p50_us"].as_f64().unwrap_or(f64::NAN);
            rows[i]["overhead_p50_us"] = added.into();
        }
    }
    Ok(Value::Array(rows))
}

/// `harness record --upstream <socket>` into `out`, once it listens: the process (killed
/// when dropped) and the socket it listens on.
async fn start_recorder(
    harness: &Path,
    upstream: &Path,
    out: &Path,
) -> anyhow::Result<(tokio::process::Child, PathBuf)> {
    let listen = out.with_extension("sock");
    let child = tokio::process::Command::new(harness)
        .arg("record")
        .arg("--upstream")
        .arg(upstream)
        .arg("--listen")
        .arg(&listen)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    // Its first line is written once it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(out.join(crate::record::recording::FILE_NAME))
        .is_ok_and(|t| t.contains(r#""event":"recording""#))
    {
        anyhow::ensure!(Instant::now() < deadline, "the recorder in front of {} never listened", upstream.display());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((child, listen))
}

fn mock_config(mock: &Path) -> crate::runner::RunConfig {
    crate::runner::RunConfig {
        nydusd: mock.to_owned(),
        target: crate::scenario::model::Target::Mock,
        extra_args: Vec::new(),
        bundles: None,
    }
}

/// The whole scenario library on the mock, as `harness run` runs it (one scenario per
/// CPU at a time): wall time, and how many passed.
async fn library(mock: &Path, dir: &Path) -> anyhow::Result<Value> {
    let files = crate::scenario::discover(&[dir.to_owned()])?;
    let mut scenarios = Vec::new();
    for file in files.into_iter().filter(|f| !f.starts_with(dir.join("invalid"))) {
        let scenario = crate::scenario::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
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
async fn read_stall(mock: &Path, dir: &Path, runs: usize) -> anyhow::Result<Value> {
    let file = dir.join("privileged/failover-live-reader.yaml");
    let scenario = crate::scenario::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = mock_config(mock);
    if let Some(reason) = crate::runner::skip_reason(&scenario, &config) {
        return Ok(json!({ "skipped": reason }));
    }
    let mut stalls = Vec::with_capacity(runs);
    let (mut reads, mut failures) = (0, 0);
    for _ in 0..runs {
        let result = run_scenario(&file, &scenario, &config).await;
        if let Some(failure) = result.failure {
            anyhow::bail!("{}: {}", file.display(), failure.message);
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

/// SIGKILL to the monitor's death event.
async fn detection(mock: &Path, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let timeouts = Timeouts::default();
    let mut bed = Bed::new(mock, RecoverPolicy::None, timeouts)?;
    let mut samples = Vec::with_capacity(runs);
    for n in 0..runs {
        let daemon = bed.daemon(&format!("d{n}"), timeouts).await?;
        let killed = Instant::now();
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::Died { .. })).await?;
        samples.push(killed.elapsed());
    }
    Ok(samples)
}

/// N daemons: time to start all, to fail all over, and memory.
async fn scale(mock: &Path, n: usize) -> anyhow::Result<Value> {
    let timeouts = Timeouts { socket: Duration::from_secs(30), state: Duration::from_secs(30), ..Timeouts::default() };
    let mut bed = Bed::new(mock, RecoverPolicy::Failover, timeouts)?;
    let started = Instant::now();
    let mut daemons = Vec::with_capacity(n);
    for i in 0..n {
        let options = DaemonOptions { id: Some(format!("d{i}")), mode: DaemonMode::Shared, ..DaemonOptions::default() };
        daemons.push(bed.manager.add_daemon(Daemon::create(&bed.layout, options, timeouts)?)?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for d in &daemons {
        let (m, d) = (bed.manager.clone(), d.clone());
        tasks.spawn(async move { m.start_daemon_and_wait(&d).await.map(drop) });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let start_all = started.elapsed();
    let mock_rss: Vec<u64> = daemons.iter().filter_map(|d| rss_kb(d.pid())).collect();
    let killed = Instant::now();
    for d in &daemons {
        d.signal(nix::sys::signal::Signal::SIGKILL)?;
    }
    let mut done = 0;
    while done < n {
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. })).await?;
        done += 1;
    }
    let failover_all = killed.elapsed();
    Ok(json!({
        "daemons": n,
        "start_all_ms": start_all.as_secs_f64() * 1e3,
        "failover_all_ms": failover_all.as_secs_f64() * 1e3,
        "manager_rss_mb": rss_kb(std::process::id()).map(|k| k as f64 / 1024.0),
        "mock_rss_mb_per_daemon": mock_rss.iter().sum::<u64>() as f64 / mock_rss.len().max(1) as f64 / 1024.0,
    }))
}

fn rss_kb(pid: u32) -> Option<u64> {
    Some(testkit::rss_kb(pid)).filter(|kb| *kb > 0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn child_processes() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().nth(1) == Some(me.as_str())))
                .unwrap_or(false)
        })
        .count()
}

/// `runs` failovers in a row: the manager's open files, child processes and memory before
/// and after (growth means a leak).
pub async fn leak_check(mock: &Path, runs: usize) -> anyhow::Result<Value> {
    let timeouts = Timeouts::default();
    let mut bed = Bed::new(mock, RecoverPolicy::Failover, timeouts)?;
    let daemon = bed.daemon("d1", timeouts).await?;
    // Warm up, so that pools and caches reach their steady size before the first sample.
    for _ in 0..20 {
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. })).await?;
    }
    let before = (open_fds(), child_processes(), rss_kb(std::process::id()).unwrap_or(0));
    for _ in 0..runs {
        daemon.signal(nix::sys::signal::Signal::SIGKILL)?;
        bed.next(|e| matches!(e, ManagerEvent::FailedOver { .. })).await?;
    }
    // A connection of the last failover may still be closing, and on a loaded machine
    // (the whole suite on 2 cores) a reaper may run late: a leak is what stays, so the
    // counts get up to 10 s to come back before they are read.
    let settle = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while (open_fds(), child_processes()) != (before.0, before.1) && tokio::time::Instant::now() < settle {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let after = (open_fds(), child_processes(), rss_kb(std::process::id()).unwrap_or(0));
    let mounts = host_facts::mountinfo::under(bed.layout.root()).len();
    Ok(json!({
        "failovers": runs,
        "fds": [before.0, after.0],
        "child_processes": [before.1, after.1],
        "rss_kb": [before.2, after.2],
        "mounts_under_root_after": mounts,
    }))
}

/// Runs every measurement and returns the results as JSON.
pub async fn run(options: &BenchOptions) -> anyhow::Result<Value> {
    let mock = &options.mock;
    let ours = Timeouts::default();
    let failover = recovery(mock, RecoverPolicy::Failover, ours, options.runs).await?;
    let failover_upstream = recovery(mock, RecoverPolicy::Failover, upstream_timeouts(), options.runs.min(20)).await?;
    let restart = recovery(mock, RecoverPolicy::Restart, ours, options.runs).await?;
    let detect = detection(mock, options.runs).await?;
    let mut scales = Vec::new();
    for n in &options.scales {
        scales.push(scale(mock, *n).await?);
    }
    let leaks = if options.leak_runs > 0 { Some(leak_check(mock, options.leak_runs).await?) } else { None };
    let reaction = summary(state_reaction(mock, ours, options.runs).await?);
    let reaction_upstream = summary(state_reaction(mock, upstream_timeouts(), options.runs.min(20)).await?);
    let latency_mock = api_latency(mock, vec!["--mock-no-abort".into()], 2000).await?;
    let latency_real = match &options.real {
        Some((binary, args)) => Some(api_latency(binary, args.clone(), 2000).await?),
        None => None,
    };
    let raw = raw_api(mock, options.real.as_ref()).await?;
    let (library, stall) = match &options.scenarios {
        Some(dir) => (Some(library(mock, dir).await?), Some(read_stall(mock, dir, options.runs.min(20)).await?)),
        None => (None, None),
    };
    let f = summary(failover);
    let u = summary(failover_upstream);
    let ratio = u["p50_ms"].as_f64().unwrap_or(f64::NAN) / f["p50_ms"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "failover_sigkill_to_running": f,
        "failover_with_upstream_retry_timing": u,
        "upstream_over_ours_p50": ratio,
        "restart_sigkill_to_running": summary(restart),
        "death_detection": summary(detect),
        "scale": scales,
        "leak_check": leaks,
        "state_wait_reaction": reaction,
        "state_wait_reaction_upstream_timing": reaction_upstream,
        "api_latency_mock": latency_mock,
        "api_latency_real_nydusd": latency_real,
        "api_raw_client": raw,
        "read_stall_during_fuse_failover": stall,
        "scenario_library": library,
    }))
}

/// The results as a table.
pub fn table(results: &Value) -> String {
    let row = |name: &str, v: &Value| {
        format!(
            "{name:<44} p50 {:>8.2} ms   p99 {:>8.2} ms   ({} runs)\n",
            v["p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["p99_ms"].as_f64().unwrap_or(f64::NAN),
            v["runs"]
        )
    };
    let mut out = String::new();
    out.push_str(&row("failover, SIGKILL to RUNNING", &results["failover_sigkill_to_running"]));
    out.push_str(&row("failover, upstream retry timing", &results["failover_with_upstream_retry_timing"]));
    out.push_str(&format!(
        "{:<44} {:.1}x\n",
        "upstream timing / ours (p50)",
        results["upstream_over_ours_p50"].as_f64().unwrap_or(f64::NAN)
    ));
    out.push_str(&row("restart, SIGKILL to RUNNING", &results["restart_sigkill_to_running"]));
    out.push_str(&row("death detection (SIGKILL to event)", &results["death_detection"]));
    out.push_str(&row("state wait reaction (change to return)", &results["state_wait_reaction"]));
    out.push_str(&row("state wait reaction, upstream retry timing", &results["state_wait_reaction_upstream_timing"]));
    for (name, key) in [("mock", "api_latency_mock"), ("real nydusd", "api_latency_real_nydusd")] {
        let l = &results[key];
        if l.is_null() {
            continue;
        }
        out.push_str(&format!(
            "{:<44} p50 {:>8.1} us   p99 {:>8.1} us   {:>8.0} requests/s\n",
            format!("GET /api/v1/daemon via daemon-core, {name}"),
            l["p50_us"].as_f64().unwrap_or(f64::NAN),
            l["p99_us"].as_f64().unwrap_or(f64::NAN),
            l["requests_per_second"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    for raw in results["api_raw_client"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<44} p50 {:>8.1} us   p99 {:>8.1} us   {:>8.0} requests/s   RSS after {} requests {:.1} MB\n",
            format!("GET /api/v1/daemon raw client, {}", raw["daemon"].as_str().unwrap_or("?")),
            raw["p50_us"].as_f64().unwrap_or(f64::NAN),
            raw["p99_us"].as_f64().unwrap_or(f64::NAN),
            raw["requests_per_second"].as_f64().unwrap_or(f64::NAN),
            raw["requests"],
            raw["rss_kb_after"].as_f64().unwrap_or(f64::NAN) / 1024.0,
        ));
        if let Some(added) = raw["overhead_p50_us"].as_f64() {
            out.push_str(&format!("{:<44} added p50 {added:>5.1} us per call\n", "  recorder overhead"));
        }
    }
    let stall = &results["read_stall_during_fuse_failover"];
    if let Some(reason) = stall["skipped"].as_str() {
        out.push_str(&format!("{:<44} skipped: {reason}\n", "read stall during a FUSE failover"));
    } else if !stall.is_null() {
        out.push_str(&format!(
            "{:<44} p50 {:>8.2} ms   max {:>8.2} ms   ({} failovers, {} reads, {} failed)\n",
            "read stall during a FUSE failover",
            stall["p50_ms"].as_f64().unwrap_or(f64::NAN),
            stall["max_ms"].as_f64().unwrap_or(f64::NAN),
            stall["runs"],
            stall["reads"],
            stall["failed_reads"],
        ));
    }
    for s in results["scale"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>4} daemons: start all {:>8.1} ms, fail all over {:>8.1} ms, manager RSS {:.1} MB, mock RSS {:.1} MB each\n",
            s["daemons"],
            s["start_all_ms"].as_f64().unwrap_or(f64::NAN),
            s["failover_all_ms"].as_f64().unwrap_or(f64::NAN),
            s["manager_rss_mb"].as_f64().unwrap_or(f64::NAN),
            s["mock_rss_mb_per_daemon"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    let library = &results["scenario_library"];
    if !library.is_null() {
        out.push_str(&format!(
            "scenario library: {} scenarios in {:.2} s ({} at a time; {} passed, {} failed, {} skipped)\n",
            library["scenarios"],
            library["wall_ms"].as_f64().unwrap_or(f64::NAN) / 1e3,
            library["jobs"],
            library["passed"],
            library["failed"],
            library["skipped"],
        ));
    }
    if let Some(l) = results.get("leak_check").filter(|l| !l.is_null()) {
        out.push_str(&format!(
            "{} failovers in a row: fds {} -> {}, child processes {} -> {}, manager RSS {} -> {} kB, mounts left {}\n",
            l["failovers"],
            l["fds"][0],
            l["fds"][1],
            l["child_processes"][0],
            l["child_processes"][1],
            l["rss_kb"][0],
            l["rss_kb"][1],
            l["mounts_under_root_after"]
        ));
    }
    out
}
