//! The manager's guarantees under failure, each stated as an outcome: the error kind, the
//! time bound, and what is left afterwards (processes, records, events).
//!
//! * no process outlives a failed start, and a retried start watches its own process;
//! * every wait has a deadline: a stopped daemon is destroyed within the exit deadline;
//! * recovery is closed-loop: a replacement that dies is recovered again, a crash loop
//!   ends in `RecoveryFailed` with every attempt's cause and nothing left running;
//! * start-up recovery settles stuck daemons concurrently, past an unreadable record;
//! * a store that is missing, empty, damaged or read-only never licenses a kill.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use daemon_core::DaemonState;
use daemon_core::daemon::DaemonError;
use daemon_core::manager::{Manager, ManagerConfig, ManagerError, ManagerEvent, PerDaemonArgs, RecoverPolicy};
use daemon_core::store::StoreError;
use host_facts::Requirement;
use libtest_mimic::Trial;
use nix::sys::signal::Signal;

use crate::support::{Env, KillOnDrop, TestResult, ensure, manager_config, trial, wait_event};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("guarantees::failed_starts_leave_no_process_and_a_retry_watches_its_own", &[], failed_starts),
        trial("guarantees::destroying_a_stopped_daemon_ends_within_the_exit_deadline", &[], destroy_stopped),
        trial("guarantees::a_replacement_that_dies_during_takeover_is_failed_over_again", &[], replacement_dies),
        trial("guarantees::a_crash_looping_replacement_ends_in_recovery_failed_with_every_cause", &[], crash_loop),
        trial("guarantees::start_up_recovery_settles_stuck_daemons_concurrently", &[], concurrent_settle),
        trial("guarantees::an_unreadable_record_does_not_stop_start_up_recovery", &[], unreadable_record),
        trial(
            "guarantees::a_process_no_record_or_intent_names_is_left_running_and_reported",
            &[],
            lost_record_without_intent,
        ),
        trial("guarantees::a_missing_or_empty_store_with_running_daemons_kills_nothing", &[], store_lost),
        trial("guarantees::a_damaged_store_is_an_error_and_kills_nothing", &[], store_damaged),
        trial("guarantees::an_immutable_store_is_refused_at_open", &[Requirement::Root], store_immutable),
        trial("guarantees::a_destroy_during_an_upgrade_ends_it_and_stops_its_new_process", &[], destroy_during_upgrade),
        trial("guarantees::abort_ends_every_task_and_frees_the_store_for_the_next_manager", &[], abort_frees_the_store),
    ]
}

/// Live processes whose command line names `root` (every daemon of a test root does).
fn processes_under(root: &Path) -> Vec<u32> {
    let root = root.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| host_facts::process::cmdline(*pid).is_some_and(|args| args.iter().any(|a| a.contains(&root))))
        .collect()
}

/// A mock script whose process dies when asked to take over.
const DIES_AT_TAKEOVER: &str =
    "rules:\n  - when: { path: /api/v1/daemon/fuse/takeover }\n    then: [ { signal: SIGKILL } ]\n";

/// The event that ends a recovery: `FailedOver` or `RecoveryFailed`.
async fn recovery_end(
    events: &mut tokio::sync::broadcast::Receiver<ManagerEvent>,
) -> Result<ManagerEvent, libtest_mimic::Failed> {
    wait_event(events, |e| matches!(e, ManagerEvent::FailedOver { .. } | ManagerEvent::RecoveryFailed { .. })).await
}

/// A mock script file under the root.
fn script(env: &Env, name: &str, yaml: &str) -> Result<PathBuf, libtest_mimic::Failed> {
    let path = env.root.path().join(name);
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Gives the `n`-th process spawned (from 1) the script `scripts[n-1]`; later ones none.
fn scripts_by_spawn(scripts: Vec<Option<PathBuf>>) -> (PerDaemonArgs, Arc<AtomicUsize>) {
    let spawned = Arc::new(AtomicUsize::new(0));
    let counter = spawned.clone();
    let args = PerDaemonArgs::new(move |_id| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        match scripts.get(n).cloned().flatten() {
            Some(path) => vec!["--mock-script".into(), path.into()],
            None => Vec::new(),
        }
    });
    (args, spawned)
}

/// Short state and exit deadlines, for the manager and for the daemons it is given.
fn quick_timeouts() -> daemon_core::Timeouts {
    daemon_core::Timeouts { state: Duration::from_millis(300), exit: Duration::from_millis(500), ..Env::timeouts() }
}

fn quick(mut config: ManagerConfig) -> ManagerConfig {
    config.timeouts = quick_timeouts();
    config.recovery.backoff = Duration::from_millis(10);
    config
}

/// A shared daemon record with [`quick_timeouts`].
fn quick_record(env: &Env, id: &str) -> Result<daemon_core::Daemon, libtest_mimic::Failed> {
    let options = daemon_core::DaemonOptions {
        id: Some(id.to_owned()),
        mode: daemon_core::daemon::DaemonMode::Shared,
        ..Default::default()
    };
    Ok(daemon_core::Daemon::create(&env.layout, options, quick_timeouts())?)
}

async fn failed_starts() -> TestResult {
    let env = Env::new()?;
    let stuck = script(&env, "stuck.yaml", "startup:\n  hold: { state: INIT, ms: 60000 }\n")?;
    let mut config = quick(manager_config(&env, RecoverPolicy::None, true));
    let (args, _) = scripts_by_spawn(vec![Some(stuck.clone()), Some(stuck.clone()), Some(stuck)]);
    config.per_daemon_args = args;
    let manager = Manager::open(config)?;
    let mut events = manager.subscribe();
    let daemon = manager.add_daemon(quick_record(&env, "d1")?)?;
    for attempt in 1..=3 {
        let err = manager.start_daemon_and_wait(&daemon).await.unwrap_err();
        ensure(
            matches!(
                &err,
                ManagerError::Daemon(DaemonError::StateTimeout {
                    expected: DaemonState::Running,
                    last_observed: DaemonState::Init,
                    ..
                })
            ),
            format!("attempt {attempt}: {err}"),
        )?;
        // Before the fix each failed start left its nydusd running: three after three.
        let left = processes_under(env.root.path());
        ensure(left.is_empty(), format!("attempt {attempt}: processes left {left:?}"))?;
        ensure(!daemon.is_alive(), format!("attempt {attempt}: the failed process is reaped"))?;
    }
    ensure(manager.store().daemons()?.len() == 1, "the record stays for a later start")?;
    let pid = manager.start_daemon_and_wait(&daemon).await?;
    ensure(processes_under(env.root.path()) == [pid], "only the verified process runs")?;
    // The watch is on this process: its death is seen (before the fix the watch stayed on
    // the first, orphaned process and this death went unnoticed).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL)?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::Died { id } if id == "d1")).await?;
    Ok(())
}

async fn destroy_stopped() -> TestResult {
    let env = Env::new()?;
    let config = quick(manager_config(&env, RecoverPolicy::None, true));
    let exit = config.timeouts.exit;
    let manager = Manager::open(config)?;
    let daemon = manager.add_daemon(quick_record(&env, "d1")?)?;
    let pid = manager.start_daemon_and_wait(&daemon).await?;
    daemon.signal_child(Signal::SIGSTOP)?;
    let started = Instant::now();
    // Before the fix this never returned: the exit wait on our own child had no deadline.
    let destroyed = tokio::time::timeout(Duration::from_secs(20), manager.destroy_daemon(&daemon)).await;
    let elapsed = started.elapsed();
    ensure(destroyed.is_ok(), "destroy returned")?;
    destroyed.map_err(|_| "unreachable")??;
    // SIGTERM is ignored while stopped; SIGKILL follows at the exit deadline.
    ensure(elapsed >= exit, format!("destroy took {elapsed:?}, before the {exit:?} SIGTERM grace"))?;
    ensure(elapsed < exit * 2 + Duration::from_secs(2), format!("destroy took {elapsed:?}"))?;
    ensure(!daemon.is_alive() && processes_under(env.root.path()).is_empty(), format!("pid {pid} is gone"))?;
    ensure(manager.store().daemons()?.is_empty() && manager.get_daemon("d1").is_none(), "the record is gone")
}

async fn replacement_dies() -> TestResult {
    let env = Env::new()?;
    let dies = script(&env, "dies-at-takeover.yaml", DIES_AT_TAKEOVER)?;
    let mut config = quick(manager_config(&env, RecoverPolicy::Failover, true));
    let (args, spawned) = scripts_by_spawn(vec![None, Some(dies)]);
    config.per_daemon_args = args;
    let manager = Manager::open(config)?;
    let mut events = manager.subscribe();
    let daemon = manager.add_daemon(quick_record(&env, "d1")?)?;
    let first = manager.start_daemon_and_wait(&daemon).await?;
    daemon.signal_child(Signal::SIGKILL)?;
    // Before the fix the replacement's death ended in RecoveryFailed and the daemon stayed dead.
    let event = recovery_end(&mut events).await?;
    let ManagerEvent::FailedOver { pid, .. } = event else { return Err(format!("{event:?}").into()) };
    ensure(spawned.load(Ordering::SeqCst) == 3, "the first replacement died; the second took over")?;
    ensure(pid != first && pid == daemon.pid() && daemon.is_alive(), "the daemon runs the second replacement")?;
    ensure(daemon.get_state().await? == DaemonState::Running, "RUNNING")?;
    ensure(processes_under(env.root.path()) == [pid], "no other process is left")?;
    ensure(manager.monitor().is_subscribed("d1"), "the new process is watched")?;
    // And its own death is seen and recovered too.
    daemon.signal_child(Signal::SIGKILL)?;
    let event = recovery_end(&mut events).await?;
    ensure(matches!(event, ManagerEvent::FailedOver { pid: again, .. } if again != pid), format!("{event:?}"))
}

async fn crash_loop() -> TestResult {
    let env = Env::new()?;
    let dies = script(&env, "dies-at-takeover.yaml", DIES_AT_TAKEOVER)?;
    let mut config = quick(manager_config(&env, RecoverPolicy::Failover, true));
    let attempts = config.recovery.attempts;
    let (args, spawned) = scripts_by_spawn(vec![None, Some(dies.clone()), Some(dies.clone()), Some(dies)]);
    config.per_daemon_args = args;
    let manager = Manager::open(config)?;
    let mut events = manager.subscribe();
    let daemon = manager.add_daemon(quick_record(&env, "d1")?)?;
    manager.start_daemon_and_wait(&daemon).await?;
    daemon.signal_child(Signal::SIGKILL)?;
    let event = recovery_end(&mut events).await?;
    let ManagerEvent::RecoveryFailed { error, policy, .. } = event else { return Err(format!("{event:?}").into()) };
    ensure(policy == RecoverPolicy::Failover, "failover was tried")?;
    let ManagerError::RecoveryExhausted { causes, .. } = &*error else { return Err(format!("{error}").into()) };
    ensure(causes.len() == attempts as usize, format!("{} causes for {attempts} attempts: {error}", causes.len()))?;
    ensure(spawned.load(Ordering::SeqCst) == 1 + attempts as usize, "one replacement per attempt")?;
    ensure(processes_under(env.root.path()).is_empty(), "no replacement is left running")?;
    ensure(manager.store().daemons()?.len() == 1, "the record stays")?;
    // Nothing more happens: the deaths of the failed replacements start no recovery.
    let more = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    ensure(more.is_err(), format!("no further event: {more:?}"))
}

async fn concurrent_settle() -> TestResult {
    let env = Env::new()?;
    let stuck = script(&env, "stuck.yaml", "startup:\n  hold: { state: INIT, ms: 60000 }\n")?;
    let mut pids = KillOnDrop::default();
    let ids: Vec<String> = (1..=5).map(|i| format!("d{i}")).collect();
    {
        let mut config = manager_config(&env, RecoverPolicy::None, false);
        config.per_daemon_args = PerDaemonArgs::new(move |_| vec!["--mock-script".into(), stuck.clone().into()]);
        let first = Manager::open(config)?;
        for id in &ids {
            let daemon = first.add_daemon(env.shared_record(id)?)?;
            pids.0.push(first.spawn(&daemon, false).await?);
            daemon.client().await?;
        }
    }
    let config = manager_config(&env, RecoverPolicy::None, false);
    let state_deadline = Duration::from_secs(1);
    let mut config = config;
    config.timeouts.state = state_deadline;
    let second = Manager::open(config)?;
    let started = Instant::now();
    let report = second.recover().await?;
    let elapsed = started.elapsed();
    let stuck: Vec<&str> = report.not_running.iter().map(|(id, _)| id.as_str()).collect();
    ensure(stuck == ids, format!("stuck daemons {stuck:?}"))?;
    ensure(report.not_running.iter().all(|(_, s)| *s == DaemonState::Init), format!("{:?}", report.not_running))?;
    // Before the fix: one state deadline per daemon, one after another (5 s here).
    ensure(elapsed < state_deadline * 3, format!("recovery took {elapsed:?} for 5 stuck daemons"))?;
    ensure(pids.0.iter().all(|p| processes_under(env.root.path()).contains(p)), "stuck daemons are left alone")
}

/// Shared daemons `ids`, started by a manager that is then dropped, left running.
async fn started_by_a_dropped_manager(env: &Env, ids: &[&str]) -> Result<KillOnDrop, libtest_mimic::Failed> {
    let mut pids = KillOnDrop::default();
    let first = Manager::open(manager_config(env, RecoverPolicy::None, false))?;
    for id in ids {
        let daemon = first.add_daemon(env.shared_record(id)?)?;
        pids.0.push(first.start_daemon_and_wait(&daemon).await?);
    }
    Ok(pids)
}

async fn unreadable_record() -> TestResult {
    let env = Env::new()?;
    let pids = started_by_a_dropped_manager(&env, &["a", "b"]).await?;
    let db = env.root.path().join(daemon_core::store::DB_FILE);
    rusqlite::Connection::open(&db)?.execute("UPDATE daemons SET record = '{\"ID\":' WHERE id = 'b'", [])?;
    let second = Manager::open(manager_config(&env, RecoverPolicy::None, false))?;
    // Before the fix the bad record made recover() fail as a whole.
    let report = second.recover().await?;
    ensure(report.live == ["a"], format!("live {:?}", report.live))?;
    ensure(
        report.failed.len() == 1 && report.failed[0].0 == "b" && report.failed[0].1.contains("unreadable"),
        format!("failed {:?}", report.failed),
    )?;
    ensure(report.strays_killed.is_empty(), format!("killed {:?}", report.strays_killed))?;
    let alive = processes_under(env.root.path());
    ensure(pids.0.iter().all(|p| alive.contains(p)), "the daemon of the unreadable record still runs")
}

/// A valid store that lost one daemon's record (deleted by hand here) does not license
/// killing that daemon's process: before, recovery SIGKILLed it as a stray. With the
/// intent a crashed destroy leaves, the same process is swept.
async fn lost_record_without_intent() -> TestResult {
    let env = Env::new()?;
    let pids = started_by_a_dropped_manager(&env, &["a", "b"]).await?;
    let (pid_a, pid_b) = (pids.0[0], pids.0[1]);
    let db = env.root.path().join(daemon_core::store::DB_FILE);
    rusqlite::Connection::open(&db)?.execute("DELETE FROM daemons WHERE id = 'b'", [])?;
    {
        let second = Manager::open(manager_config(&env, RecoverPolicy::None, false))?;
        let report = second.recover().await?;
        ensure(report.live == ["a"], format!("live {:?}", report.live))?;
        ensure(report.strays_killed.is_empty(), format!("killed {:?}", report.strays_killed))?;
        ensure(report.unrecorded_left == [("b".to_owned(), pid_b)], format!("left {:?}", report.unrecorded_left))?;
        let alive = processes_under(env.root.path());
        ensure(alive.contains(&pid_a) && alive.contains(&pid_b), format!("alive {alive:?}"))?;
    }
    rusqlite::Connection::open(&db)?.execute("INSERT INTO intents (daemon_id, what) VALUES ('b', 'destroy')", [])?;
    let third = Manager::open(manager_config(&env, RecoverPolicy::None, false))?;
    let report = third.recover().await?;
    ensure(report.strays_killed == [("b".to_owned(), pid_b)], format!("killed {:?}", report.strays_killed))?;
    ensure(!processes_under(env.root.path()).contains(&pid_b), "the licensed stray is gone")?;
    ensure(third.store().intents()?.is_empty(), format!("intents left {:?}", third.store().intents()))
}

/// A daemon started by a manager that is then dropped, left running: `(env, pid)`.
async fn orphaned_daemon() -> Result<(Env, KillOnDrop), libtest_mimic::Failed> {
    let env = Env::new()?;
    let first = Manager::open(manager_config(&env, RecoverPolicy::None, false))?;
    let daemon = first.add_daemon(env.shared_record("d1")?)?;
    let pid = first.start_daemon_and_wait(&daemon).await?;
    drop(first);
    Ok((env, KillOnDrop(vec![pid])))
}

fn remove_store(root: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        match std::fs::remove_file(root.join(format!("{}{suffix}", daemon_core::store::DB_FILE))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

async fn store_lost() -> TestResult {
    for variant in ["deleted", "emptied"] {
        let (env, pid) = orphaned_daemon().await?;
        let db = env.root.path().join(daemon_core::store::DB_FILE);
        match variant {
            "deleted" => remove_store(env.root.path())?,
            _ => std::fs::File::create(&db).map(drop)?,
        }
        let opened = Manager::open(manager_config(&env, RecoverPolicy::None, false));
        // Before the fix: Ok, and recover() SIGKILLed the daemon as a stray.
        let Err(err) = opened else { return Err(format!("{variant}: the manager opened").into()) };
        ensure(
            matches!(&err, ManagerError::StoreLost { found, .. } if !found.is_empty()),
            format!("{variant}: {err}"),
        )?;
        ensure(err.to_string().contains(&format!("pid {}", pid.0[0])), format!("{variant}: names the pid: {err}"))?;
        ensure(processes_under(env.root.path()) == pid.0, format!("{variant}: the daemon still runs"))?;
        ensure(!daemon_core::store::has_content(&db), format!("{variant}: no store was made in its place"))?;
    }
    Ok(())
}

async fn store_damaged() -> TestResult {
    let (env, pid) = orphaned_daemon().await?;
    let db = env.root.path().join(daemon_core::store::DB_FILE);
    rusqlite::Connection::open(&db)?.execute_batch("DROP TABLE daemons")?;
    let opened = Manager::open(manager_config(&env, RecoverPolicy::None, false));
    let Err(err) = opened else { return Err("the manager opened a store without its daemons table".into()) };
    ensure(matches!(&err, ManagerError::Store(StoreError::Damaged { .. })), format!("{err}"))?;
    ensure(processes_under(env.root.path()) == pid.0, "the daemon still runs")
}

async fn store_immutable() -> TestResult {
    let (env, pid) = orphaned_daemon().await?;
    let db = env.root.path().join(daemon_core::store::DB_FILE);
    let chattr = |flag: &str| std::process::Command::new("chattr").arg(flag).arg(&db).status();
    if !chattr("+i")?.success() {
        return Err("chattr +i failed (this filesystem has no immutable flag)".into());
    }
    let opened = Manager::open(manager_config(&env, RecoverPolicy::None, false));
    chattr("-i")?;
    // Before the fix the store opened read-only and the first write failed, after an API
    // call had already changed the daemon.
    let Err(err) = opened else { return Err("the manager opened an immutable store".into()) };
    ensure(matches!(&err, ManagerError::Store(StoreError::ReadOnly { .. })), format!("{err}"))?;
    ensure(processes_under(env.root.path()) == pid.0, "the daemon still runs")
}

/// An upgrade in flight is a task of its daemon (issue 25): the destroy ends it, stops its
/// new process (no record names it), and `Destroyed` is the daemon's last event.
async fn destroy_during_upgrade() -> TestResult {
    let env = Env::new()?;
    let slow = script(
        &env,
        "slow-takeover.yaml",
        "rules:\n  - when: { path: /api/v1/daemon/fuse/takeover }\n    then: [ { delay_ms: 2000 } ]\n",
    )?;
    let mut config = manager_config(&env, RecoverPolicy::Failover, true);
    let (args, _) = scripts_by_spawn(vec![None, Some(slow)]);
    config.per_daemon_args = args;
    let manager = Manager::open(config)?;
    let mut events = manager.subscribe();
    let daemon = manager.add_daemon(env.shared_record("d1")?)?;
    manager.start_daemon_and_wait(&daemon).await?;
    let old = daemon.pid();
    let next = env.next_build("bin/nydusd-next")?;
    let upgrade = tokio::spawn({
        let (manager, daemon) = (manager.clone(), daemon.clone());
        async move { manager.upgrade_daemon(&daemon, &next).await }
    });
    // The new process is up and its takeover is held by the script.
    let deadline = Instant::now() + Duration::from_secs(5);
    let successor = loop {
        let others: Vec<u32> = processes_under(env.root.path()).into_iter().filter(|p| *p != old).collect();
        if let [one] = others.as_slice() {
            break *one;
        }
        ensure(Instant::now() < deadline, "no successor process within 5 s")?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    manager.destroy_daemon(&daemon).await?;
    ensure(started.elapsed() < Duration::from_secs(2), format!("destroy took {:?}", started.elapsed()))?;
    let outcome = upgrade.await?;
    ensure(matches!(outcome, Err(ManagerError::Destroyed(ref id)) if id == "d1"), format!("{outcome:?}"))?;
    let left = processes_under(env.root.path());
    ensure(left.is_empty(), format!("processes left: {left:?} (old {old}, successor {successor})"))?;
    let mut after_destroyed = Vec::new();
    let mut destroyed = false;
    while let Ok(event) = events.try_recv() {
        if destroyed {
            after_destroyed.push(event);
        } else {
            destroyed = matches!(event, ManagerEvent::Destroyed { .. });
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(event) = events.try_recv() {
        after_destroyed.push(event);
    }
    ensure(destroyed, "no Destroyed event")?;
    ensure(after_destroyed.is_empty(), format!("events after Destroyed: {after_destroyed:?}"))?;
    ensure(manager.store().daemons()?.is_empty(), "no record left")
}

/// `Manager::abort` is a crash (issue 25): a recovery in flight ends with it, the daemons
/// run on, and a new manager opens the same store at once.
async fn abort_frees_the_store() -> TestResult {
    let env = Env::new()?;
    let slow =
        script(&env, "slow.yaml", "rules:\n  - when: { path: /api/v1/daemon }\n    then: [ { delay_ms: 300 } ]\n")?;
    let mut config = manager_config(&env, RecoverPolicy::Restart, false);
    let (args, _) = scripts_by_spawn(vec![None, Some(slow)]);
    config.per_daemon_args = args;
    let manager = Manager::open(config.clone())?;
    let mut events = manager.subscribe();
    let daemon = manager.add_daemon(env.shared_record("d1")?)?;
    manager.start_daemon_and_wait(&daemon).await?;
    daemon.signal(Signal::SIGKILL)?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::Died { .. })).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    manager.abort().await;
    drop(manager);
    let _kill = KillOnDrop(processes_under(env.root.path()));
    // Nothing of the aborted manager moves any more: no event, no new process.
    let before = processes_under(env.root.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure(events.try_recv().is_err(), "an event after abort")?;
    ensure(processes_under(env.root.path()) == before, "a process started after abort")?;
    let next = Manager::open(config)?;
    let report = next.recover().await?;
    let _kill = KillOnDrop(processes_under(env.root.path()));
    ensure(report.failed.is_empty(), format!("{report:?}"))?;
    let d1 = next.get_daemon("d1").ok_or("d1 not recovered")?;
    ensure(d1.get_state().await? == DaemonState::Running, "d1 runs")
}
