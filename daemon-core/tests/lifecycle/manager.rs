//! The manager end to end against mock processes killed with SIGKILL: records, start,
//! each recover policy, hot upgrade, destroy, recovery after a manager restart, and the
//! recycled-pid guard.

use std::os::fd::AsFd;
use std::sync::Arc;

use daemon_core::manager::{Manager, ManagerError, ManagerEvent, RecoverPolicy};
use daemon_core::{DaemonError, DaemonState};
use libtest_mimic::Trial;
use nix::sys::signal::Signal;

use crate::support::{
    Env, KillOnDrop, TestResult, ensure, file_identity, manager_config, open_files_of, trial, wait_event,
};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("manager::records_follow_upstreams_add_update_delete", &[], records),
        trial("manager::start_daemon_verifies_it_and_records_the_pid", &[], start),
        trial("manager::restart_policy_starts_afresh_and_mounts_instances_again_in_sequence_order", &[], restart),
        trial("manager::failover_policy_hands_state_and_fd_to_a_new_daemon", &[], failover),
        trial("manager::policy_none_leaves_a_dead_daemon_and_its_record_alone", &[], policy_none),
        trial("manager::a_death_of_an_unknown_daemon_does_not_stop_the_loop", &[], unknown_death),
        trial("manager::hot_upgrade_moves_to_the_next_socket_and_binary", &[], hot_upgrade),
        trial("manager::destroy_deletes_the_record_first_and_cleans_up", &[], destroy),
        trial("manager::recovery_after_a_manager_restart", &[], manager_restart),
        trial("manager::terminate_never_signals_a_recycled_pid", &[], recycled_pid),
        trial("manager::a_dedicated_daemon_mounts_its_instance_from_the_command_line", &[], dedicated),
    ]
}

/// Mount requests in the journal for the daemon with `pid`, in order.
fn mounts_by(env: &Env, pid: u32) -> Vec<String> {
    env.journal()
        .into_iter()
        .filter(|e| e["pid"] == pid && e["event"] == "request" && e["method"] == "POST" && e["path"] == "/api/v1/mount")
        .map(|e| e["query"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn started_shared(
    env: &Env,
    manager: &Manager,
    id: &str,
) -> Result<Arc<daemon_core::Daemon>, libtest_mimic::Failed> {
    let daemon = manager.add_daemon(env.shared_record(id)?)?;
    manager.start_daemon_and_wait(&daemon).await?;
    Ok(daemon)
}

async fn records() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::None, true))?;
    let daemon = manager.add_daemon(env.shared_record("d1")?)?;
    let again = manager.add_daemon(env.shared_record("d1")?);
    ensure(matches!(again, Err(ManagerError::AlreadyExists(_))), "second add is AlreadyExists")?;
    daemon.update_record(|s| s.thread_num = 4);
    manager.update_daemon(&daemon)?;
    ensure(manager.store().daemons()?[0].thread_num == 4, "update reached the store")?;
    let stranger = env.shared_record("d2")?;
    ensure(
        matches!(manager.update_daemon(&stranger), Err(ManagerError::NotFound(_))),
        "update of unknown is NotFound",
    )?;
    let rafs = manager.add_rafs_instance(&daemon, env.instance(&daemon, "snap1")?)?;
    ensure(rafs.seq == 1 && daemon.get_ref() == 1, format!("seq {} ref {}", rafs.seq, daemon.get_ref()))?;
    manager.remove_rafs_instance(&daemon, "snap1")?;
    manager.remove_rafs_instance(&daemon, "snap1")?;
    ensure(daemon.get_ref() == 0, "a second remove does not drop another reference (#763)")?;
    manager.delete_daemon("d1")?;
    ensure(manager.list_daemons().is_empty() && manager.store().daemons()?.is_empty(), "deleted everywhere")
}

async fn start() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::None, true))?;
    let mut events = manager.subscribe();
    let daemon = manager.add_daemon(env.shared_record("d1")?)?;
    let pid = manager.start_daemon(&daemon).await?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::Started { id, pid: p } if id == "d1" && *p == pid)).await?;
    ensure(manager.store().daemons()?[0].process_id == pid, "pid recorded")?;
    ensure(manager.monitor().is_subscribed("d1"), "monitored")?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(daemon.api_socket())?.permissions().mode() & 0o777;
    ensure(mode == 0o600, format!("api socket mode {mode:o}"))?;
    let mut escaping = env.instance(&daemon, "snap1")?;
    escaping.snapshot_id = "../../etc".into();
    let refused = manager.add_rafs_instance(&daemon, escaping);
    ensure(matches!(refused, Err(ManagerError::InvalidSnapshot(_))), format!("{refused:?}"))?;
    ensure(daemon.last_observed_state() == DaemonState::Running, "RUNNING")
}

async fn restart() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::Restart, true))?;
    let mut events = manager.subscribe();
    let daemon = started_shared(&env, &manager, "d1").await?;
    // Mounted in the order c, a, b: the sequence numbers, not the names, give the order.
    for snapshot in ["c", "a", "b"] {
        manager.mount_shared_instance(&daemon, env.instance(&daemon, snapshot)?).await?;
    }
    let old_pid = daemon.pid();
    daemon.signal(Signal::SIGKILL)?;
    let event =
        wait_event(&mut events, |e| matches!(e, ManagerEvent::Restarted { .. } | ManagerEvent::RecoveryFailed { .. }))
            .await?;
    let ManagerEvent::Restarted { pid, .. } = event else { return Err(format!("{event:?}").into()) };
    ensure(pid != old_pid && daemon.pid() == pid, "a new process")?;
    ensure(manager.store().daemons()?[0].process_id == pid, "new pid recorded")?;
    let order = mounts_by(&env, pid);
    ensure(order == ["mountpoint=/c", "mountpoint=/a", "mountpoint=/b"], format!("re-mount order {order:?}"))?;
    let info = daemon.daemon_info().await?;
    ensure(info.state == DaemonState::Running, "RUNNING again")?;
    ensure(info.backend_collection.is_some_and(|m| m.len() == 3), "three instances mounted")
}

async fn failover() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::Failover, true))?;
    let mut events = manager.subscribe();
    let daemon = started_shared(&env, &manager, "d1").await?;
    manager.mount_shared_instance(&daemon, env.instance(&daemon, "snap1")?).await?;
    let supervisor = daemon.supervisor().ok_or("no supervisor under failover")?;
    let held = file_identity(supervisor.saved().ok_or("no state saved after the mount")?.fd.as_fd())?;
    let old_pid = daemon.pid();
    daemon.signal(Signal::SIGKILL)?;
    let event =
        wait_event(&mut events, |e| matches!(e, ManagerEvent::FailedOver { .. } | ManagerEvent::RecoveryFailed { .. }))
            .await?;
    let ManagerEvent::FailedOver { pid, .. } = event else { return Err(format!("{event:?}").into()) };
    ensure(pid != old_pid, "a new process")?;
    ensure(open_files_of(pid)?.contains(&held), "the new daemon holds the dead one's session fd")?;
    ensure(mounts_by(&env, pid).is_empty(), "nothing mounted through the API: the state restored it")?;
    let info = daemon.daemon_info().await?;
    ensure(info.state == DaemonState::Running, format!("state {}", info.state))?;
    ensure(info.backend_collection.is_some_and(|m| m.contains_key("/snap1")), "the instance came back with the state")?;
    ensure(manager.monitor().is_subscribed("d1"), "the new daemon is watched")
}

async fn policy_none() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::None, true))?;
    let mut events = manager.subscribe();
    let daemon = started_shared(&env, &manager, "d1").await?;
    let pid = daemon.pid();
    daemon.signal(Signal::SIGKILL)?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::Died { id } if id == "d1")).await?;
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), events.recv()).await;
    ensure(next.is_err(), format!("nothing follows a death under policy none: {next:?}"))?;
    ensure(daemon.last_observed_state() == DaemonState::Unknown, "state reset")?;
    ensure(manager.store().daemons()?[0].process_id == pid, "record untouched")
}

async fn unknown_death() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::Restart, true))?;
    let mut events = manager.subscribe();
    // A daemon the manager does not manage, watched by its monitor.
    let stranger = env.shared_daemon("ghost")?;
    env.spawn(&stranger, false).await?;
    stranger.wait_until_state(DaemonState::Running).await?;
    manager.monitor().subscribe("ghost", &stranger.api_socket(), 0).await?;
    let daemon = started_shared(&env, &manager, "d1").await?;
    stranger.signal_child(Signal::SIGKILL)?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::UnknownDied { id } if id == "ghost")).await?;
    daemon.signal(Signal::SIGKILL)?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::Restarted { id, .. } if id == "d1")).await?;
    Ok(())
}

async fn hot_upgrade() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::Failover, true))?;
    let daemon = started_shared(&env, &manager, "d1").await?;
    manager.mount_shared_instance(&daemon, env.instance(&daemon, "snap1")?).await?;
    let old_build = daemon.daemon_info().await?.version.git_commit;
    // The "new build" is the same mock reporting another commit.
    let next = env.next_build("bin/nydusd-next")?;

    let old_pid = daemon.pid();
    let refs = daemon.get_ref();
    let upgraded = manager.upgrade_daemon(&daemon, &next).await?;
    ensure(
        upgraded.api_socket().file_name().is_some_and(|n| n == "api1.sock"),
        format!("{:?}", upgraded.api_socket()),
    )?;
    let info = upgraded.daemon_info().await?;
    ensure(info.version.git_commit != old_build && info.state == DaemonState::Running, format!("{info:?}"))?;
    ensure(info.backend_collection.is_some_and(|m| m.contains_key("/snap1")), "mounts carried over")?;
    ensure(upgraded.get_ref() == refs, "reference count carried over")?;
    ensure(!daemon.is_alive() && upgraded.pid() != old_pid, "the old daemon exited")?;
    let stored = &manager.store().daemons()?[0];
    ensure(stored.api_socket == upgraded.api_socket() && stored.process_id == upgraded.pid(), "the store follows")?;
    ensure(Arc::ptr_eq(&manager.get_daemon("d1").ok_or("gone")?, &upgraded), "the cache follows")?;
    ensure(manager.nydusd() == next, "later starts use the new binary")
}

async fn destroy() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::Failover, true))?;
    let mut events = manager.subscribe();
    let daemon = started_shared(&env, &manager, "d1").await?;
    manager.mount_shared_instance(&daemon, env.instance(&daemon, "snap1")?).await?;
    let pid = daemon.pid();
    let config_dir = daemon.record().config_dir;
    manager.destroy_daemon(&daemon).await?;
    wait_event(&mut events, |e| matches!(e, ManagerEvent::Destroyed { id } if id == "d1")).await?;
    ensure(manager.store().daemons()?.is_empty() && manager.store().instances()?.is_empty(), "records gone")?;
    let umounts = env.journal().into_iter().filter(|e| e["pid"] == pid && e["method"] == "DELETE").count();
    ensure(umounts == 1, format!("the instance was unmounted through the API ({umounts})"))?;
    ensure(!daemon.is_alive(), "process gone")?;
    ensure(!config_dir.exists(), "config dir removed")?;
    ensure(manager.supervisors().is_some_and(|s| s.get("d1").is_none()), "supervisor destroyed")?;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        loop {
            if let Ok(ManagerEvent::Died { .. } | ManagerEvent::Restarted { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    ensure(quiet.is_err(), "a destroyed daemon is not recovered")
}

async fn manager_restart() -> TestResult {
    let env = Env::new()?;
    let mut survivors = KillOnDrop::default();
    let (live_pid, dead_pid) = {
        let first = Manager::open(manager_config(&env, RecoverPolicy::Restart, false))?;
        let live = started_shared(&env, &first, "live").await?;
        let dead = started_shared(&env, &first, "dead").await?;
        survivors.0.extend([live.pid(), dead.pid()]);
        for (daemon, snapshot) in [(&live, "l1"), (&dead, "d1"), (&dead, "d2")] {
            first.mount_shared_instance(daemon, env.instance(daemon, snapshot)?).await?;
        }
        (live.pid(), dead.pid())
    };
    // The first manager is gone; one daemon dies while nobody watches.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dead_pid as i32), Signal::SIGKILL)?;
    let second = Manager::open(manager_config(&env, RecoverPolicy::Restart, false))?;
    let report = second.recover().await?;
    let dead = second.get_daemon("dead").ok_or("dead daemon not recovered")?;
    survivors.0.push(dead.pid());
    ensure(report.live == ["live"] && report.restarted == ["dead"], format!("{report:?}"))?;
    ensure(report.failed.is_empty(), format!("{report:?}"))?;
    ensure(second.get_daemon("live").is_some_and(|d| d.pid() == live_pid), "the live daemon kept its process")?;
    ensure(second.monitor().is_subscribed("live") && second.monitor().is_subscribed("dead"), "both watched")?;
    let order = mounts_by(&env, dead.pid());
    ensure(order == ["mountpoint=/d1", "mountpoint=/d2"], format!("re-mounted {order:?}"))?;
    ensure(second.store().daemons()?.len() == 2 && second.store().instances()?.len() == 3, "no record deleted")?;
    ensure(dead.get_ref() == 2, format!("references restored: {}", dead.get_ref()))
}

async fn recycled_pid() -> TestResult {
    let env = Env::new()?;
    // A process that is not nydusd, standing at the pid a stale record names.
    let mut bystander = std::process::Command::new("sleep").arg("30").spawn()?;
    let _guard = KillOnDrop(vec![bystander.id()]);
    let record = env.shared_record("d1")?;
    let mut states = record.record();
    states.process_id = bystander.id();
    let recorded = daemon_core::Daemon::from_state(states.clone(), 0, Env::timeouts());
    let err = recorded.terminate().err().ok_or("a stranger's pid was signalled")?;
    ensure(matches!(err, DaemonError::NotOurProcess { .. }), format!("{err}"))?;
    // A recorded start time that does not match is refused too.
    states.process_start_time = Some(1);
    let stale = daemon_core::Daemon::from_state(states, 0, Env::timeouts());
    ensure(matches!(stale.terminate(), Err(DaemonError::NotOurProcess { .. })), "start time mismatch refused")?;
    ensure(bystander.try_wait()?.is_none(), "the bystander is still alive")
}

async fn dedicated() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::Restart, true))?;
    let mut events = manager.subscribe();
    let options = daemon_core::DaemonOptions { id: Some("ded".into()), ..daemon_core::DaemonOptions::default() };
    let record = daemon_core::Daemon::create(&env.layout, options, Env::timeouts())?;
    let mountpoint = record.host_mountpoint();
    std::fs::create_dir_all(&mountpoint)?;
    let daemon = manager.add_daemon(record)?;
    let mut rafs = env.instance(&daemon, "snap9")?;
    rafs.mountpoint = mountpoint.clone();
    std::fs::copy(daemon.record().config_file(Some("snap9")), daemon.record().config_file(None))?;
    manager.add_rafs_instance(&daemon, rafs)?;
    manager.start_daemon_and_wait(&daemon).await?;
    let argv = host_facts::process::cmdline(daemon.pid()).ok_or("no cmdline")?;
    let flag = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned();
    ensure(flag("--bootstrap").is_some_and(|b| b.ends_with("snap9/fs/image/image.boot")), format!("{argv:?}"))?;
    ensure(flag("--mountpoint") == Some(mountpoint.display().to_string()), format!("{argv:?}"))?;
    let info = daemon.daemon_info().await?;
    ensure(info.backend_collection.is_some_and(|m| m.contains_key("/")), "the instance is mounted at / from argv")?;
    // A restart mounts nothing through the API: the command line does it again.
    daemon.signal(Signal::SIGKILL)?;
    let event =
        wait_event(&mut events, |e| matches!(e, ManagerEvent::Restarted { .. } | ManagerEvent::RecoveryFailed { .. }))
            .await?;
    let ManagerEvent::Restarted { pid, .. } = event else { return Err(format!("{event:?}").into()) };
    ensure(mounts_by(&env, pid).is_empty(), "no API mounts for a dedicated daemon")
}
