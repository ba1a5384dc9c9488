//! Crash-point exploration: a manager in a process of its own runs a workflow (mount and
//! umount, restart, failover, hot upgrade, destroy) and is SIGKILLed at one step boundary
//! per run, every boundary in turn (a clean run lists them first; see
//! `daemon_core::crash_point`). A new manager on the same root then recovers, and must
//! lose no instance the dead one acknowledged and leak no process, socket or mount.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_core::crash_point::{CRASH_AT_ENV, CRASH_LOG_ENV};
use daemon_core::manager::{Manager, ManagerEvent, RecoverPolicy};
use daemon_core::{DaemonState, Layout};
use libtest_mimic::{Failed, Trial};
use nix::sys::signal::Signal;

use crate::support::{Env, TestResult, instance_in, manager_config_at, shared_record_in, trial, wait_event};

/// Environment variable that makes this binary the manager of a workflow:
/// `<workflow> <root>`.
pub const WORKFLOW_ROLE: &str = "LIFECYCLE_CRASH_WORKFLOW";

/// How long one manager run may take before it is called hung (a safety net).
const RUN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
enum Workflow {
    MountUmount,
    Restart,
    Failover,
    Upgrade,
    Destroy,
}

const WORKFLOWS: [Workflow; 5] =
    [Workflow::MountUmount, Workflow::Restart, Workflow::Failover, Workflow::Upgrade, Workflow::Destroy];

impl Workflow {
    fn name(self) -> &'static str {
        match self {
            Self::MountUmount => "mount_umount",
            Self::Restart => "restart",
            Self::Failover => "failover",
            Self::Upgrade => "upgrade",
            Self::Destroy => "destroy",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        WORKFLOWS.into_iter().find(|w| w.name() == name)
    }

    fn policy(self) -> RecoverPolicy {
        match self {
            Self::MountUmount | Self::Destroy => RecoverPolicy::None,
            Self::Restart => RecoverPolicy::Restart,
            Self::Failover | Self::Upgrade => RecoverPolicy::Failover,
        }
    }

    /// Boundaries a clean run must pass, so that a workflow that went wrong early cannot
    /// make the exploration pass with few crash points.
    fn landmarks(self) -> &'static [&'static str] {
        match self {
            Self::MountUmount => &["mount.recorded", "mount.mounted", "umount.unmounted", "umount.removed"],
            Self::Restart => &["restart.cleared", "remount.instance", "restart.remounted"],
            Self::Failover => &["failover.offered", "failover.taken_over", "failover.ready", "failover.started"],
            Self::Upgrade => &["upgrade.offered", "upgrade.taken_over", "upgrade.committed", "upgrade.started"],
            Self::Destroy => &["destroy.deleted", "destroy.instance_unmounted", "destroy.exited"],
        }
    }
}

pub fn tests() -> Vec<Trial> {
    WORKFLOWS
        .into_iter()
        .map(|workflow| {
            trial(&format!("crash_points::manager_killed_at_every_boundary_of_{}", workflow.name()), &[], move || {
                explore(workflow)
            })
        })
        .collect()
}

/// The manager process: runs `<workflow>` on `<root>` and exits, leaving its daemons.
pub fn workflow_role(value: &str) -> std::process::ExitCode {
    let outcome = (|| -> Result<(), Failed> {
        let (name, root) = value.split_once(' ').ok_or("expected `<workflow> <root>`")?;
        let workflow = Workflow::from_name(name).ok_or("unknown workflow")?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(run_workflow(workflow, &Layout::new(root)))
    })();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("workflow failed: {}", text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The manager's side of the conversation with its caller, appended to `<root>/acks`:
/// `begin <verb> <object>` before an operation and `<verb> <object>` once it returned.
/// What was acknowledged must survive the crash; what was only begun may go either way.
struct Caller<'a>(&'a Layout);

impl Caller<'_> {
    fn write(&self, line: &str) -> TestResult {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(self.0.root().join("acks"))?;
        file.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    async fn call<T>(&self, what: &str, op: impl Future<Output = Result<T, Failed>>) -> Result<T, Failed> {
        self.write(&format!("begin {what}"))?;
        let out = op.await?;
        self.write(what)?;
        Ok(out)
    }
}

async fn run_workflow(workflow: Workflow, layout: &Layout) -> TestResult {
    let manager = Manager::open(manager_config_at(layout, workflow.policy(), false))?;
    let caller = Caller(layout);
    let mut events = manager.subscribe();
    let start = async |id: &str| -> Result<_, Failed> {
        let daemon = manager.add_daemon(shared_record_in(layout, id)?)?;
        manager.start_daemon_and_wait(&daemon).await?;
        Ok(daemon)
    };
    let mount = async |daemon: &daemon_core::Daemon, snapshot: &str| -> TestResult {
        manager.mount_shared_instance(daemon, instance_in(layout, daemon, snapshot)?).await?;
        Ok(())
    };
    let d1 = caller.call("started d1", start("d1")).await?;
    caller.call("mounted a", mount(&d1, "a")).await?;
    caller.call("mounted b", mount(&d1, "b")).await?;
    match workflow {
        Workflow::MountUmount => {
            caller.call("unmounted a", async { Ok(manager.umount_shared_instance(&d1, "a").await?) }).await?;
        }
        Workflow::Restart | Workflow::Failover => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(d1.pid() as i32), Signal::SIGKILL)?;
            wait_event(&mut events, |e| matches!(e, ManagerEvent::Restarted { .. } | ManagerEvent::FailedOver { .. }))
                .await?;
        }
        Workflow::Upgrade => {
            manager.upgrade_daemon(&d1, &layout.root().join("bin/nydusd-next")).await?;
        }
        Workflow::Destroy => {
            let d2 = caller.call("started d2", start("d2")).await?;
            caller.call("mounted c", mount(&d2, "c")).await?;
            caller.call("destroyed d1", async { Ok(manager.destroy_daemon(&d1).await?) }).await?;
        }
    }
    Ok(())
}

/// A root for one manager run; every process naming it is killed when it drops.
struct CrashRoot {
    env: Env,
}

impl CrashRoot {
    fn new() -> Result<Self, Failed> {
        let env = Env::new()?;
        env.next_build("bin/nydusd-next")?;
        Ok(Self { env })
    }

    fn layout(&self) -> &Layout {
        &self.env.layout
    }

    /// Runs the workflow's manager with `env` set, and returns how it ended.
    async fn run_manager(&self, workflow: Workflow, env: (&str, &Path)) -> Result<std::process::ExitStatus, Failed> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env(WORKFLOW_ROLE, format!("{} {}", workflow.name(), self.layout().root().display()))
            .env(env.0, env.1)
            .kill_on_drop(true)
            .spawn()?;
        match tokio::time::timeout(RUN_LIMIT, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => Err(format!("the manager ran for more than {RUN_LIMIT:?}").into()),
        }
    }

    fn acks(&self) -> Vec<String> {
        std::fs::read_to_string(self.layout().root().join("acks"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for CrashRoot {
    fn drop(&mut self) {
        for pid in processes_naming(self.layout().root()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Pids of processes with an argument under `root` (daemons; the manager takes its root
/// from the environment).
fn processes_naming(root: &Path) -> BTreeSet<u32> {
    let root = root.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            host_facts::process::state(*pid).is_some_and(|s| s != 'Z')
                && host_facts::process::cmdline(*pid)
                    .is_some_and(|args| args.iter().any(|a| a.starts_with(root.as_ref())))
        })
        .collect()
}

async fn explore(workflow: Workflow) -> TestResult {
    let boundaries = {
        let clean = CrashRoot::new()?;
        let log = clean.layout().root().join("boundaries");
        let status = clean.run_manager(workflow, (CRASH_LOG_ENV, &log)).await?;
        if !status.success() {
            return Err(format!("the clean run failed: {status}").into());
        }
        let listed: Vec<String> = std::fs::read_to_string(&log)?.lines().map(str::to_owned).collect();
        for landmark in workflow.landmarks() {
            if !listed.iter().any(|b| b.split('#').next() == Some(landmark)) {
                return Err(format!("the clean run never passed {landmark}; it passed {listed:?}").into());
            }
        }
        listed
    };
    let mut failures = Vec::new();
    for boundary in &boundaries {
        if let Err(e) = crash_and_recover(workflow, boundary).await {
            failures.push(format!("killed at {boundary}: {}", text(&e)));
        }
    }
    eprintln!("{}: {} boundaries, {} failed", workflow.name(), boundaries.len(), failures.len());
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n").into()) }
}

async fn crash_and_recover(workflow: Workflow, boundary: &str) -> TestResult {
    let root = CrashRoot::new()?;
    let status = root.run_manager(workflow, (CRASH_AT_ENV, Path::new(boundary))).await?;
    if status.signal() != Some(Signal::SIGKILL as i32) {
        return Err(format!("the manager was not killed there (it ended with {status})").into());
    }
    let acks = root.acks();
    let manager = Manager::open(manager_config_at(root.layout(), workflow.policy(), false))?;
    let report = manager.recover().await?;
    if !report.failed.is_empty() || !report.not_running.is_empty() {
        return Err(format!("recovery left work undone: {report:?}").into());
    }
    check_recovered(&manager, root.layout(), &acks)
        .await
        .map_err(|e| format!("{} (recovery: {report:?})", text(&e)))?;
    for daemon in manager.list_daemons() {
        manager.destroy_daemon(&daemon).await?;
    }
    let left = processes_naming(root.layout().root());
    if !left.is_empty() {
        return Err(format!("processes outlived destroying every daemon: {left:?}").into());
    }
    Ok(())
}

/// What must hold after recovery, whatever boundary the manager died at.
async fn check_recovered(manager: &Manager, layout: &Layout, acks: &[String]) -> TestResult {
    let daemons = manager.store().daemons()?;
    let instances = manager.store().instances()?;
    let stored_daemons: BTreeSet<&str> = daemons.iter().map(|d| d.id.as_str()).collect();
    let stored_instances: BTreeSet<&str> = instances.iter().map(|r| r.snapshot_id.as_str()).collect();

    let acked = |verb: &str| -> BTreeSet<String> {
        acks.iter().filter_map(|a| a.strip_prefix(verb)?.strip_prefix(' ').map(str::to_owned)).collect()
    };
    // Begun and not acknowledged: its objects may be in either state.
    let in_flight: BTreeSet<String> = acks
        .iter()
        .filter_map(|a| a.strip_prefix("begin "))
        .filter(|begun| !acks.iter().any(|a| a == begun))
        .map(str::to_owned)
        .collect();
    let destroying_d1 = in_flight.contains("destroyed d1");
    let destroyed = acked("destroyed");
    for id in acked("started").difference(&destroyed) {
        if in_flight.contains(&format!("destroyed {id}")) {
            continue;
        }
        if !stored_daemons.contains(id.as_str()) {
            return Err(format!("daemon {id} was acknowledged as started but its record is gone").into());
        }
    }
    for id in &destroyed {
        if stored_daemons.contains(id.as_str()) {
            return Err(format!("daemon {id} was acknowledged as destroyed but is still recorded").into());
        }
    }
    let unmounted = acked("unmounted");
    for snapshot in acked("mounted").difference(&unmounted) {
        let owner_going = (destroying_d1 || destroyed.contains("d1")) && snapshot != "c";
        if owner_going || in_flight.contains(&format!("unmounted {snapshot}")) {
            continue;
        }
        if !stored_instances.contains(snapshot.as_str()) {
            return Err(format!("instance {snapshot} was acknowledged as mounted but its record is gone").into());
        }
    }
    for snapshot in &unmounted {
        if stored_instances.contains(snapshot.as_str()) {
            return Err(format!("instance {snapshot} was acknowledged as unmounted but is still recorded").into());
        }
    }

    let mut expected_sockets = BTreeSet::new();
    let mut expected_pids = BTreeSet::new();
    for record in &daemons {
        let daemon =
            manager.get_daemon(&record.id).ok_or(format!("daemon {} is recorded but not managed", record.id))?;
        if !daemon.is_alive() || daemon.get_state().await? != DaemonState::Running {
            return Err(format!("daemon {} is recorded but not running", record.id).into());
        }
        let served: BTreeSet<String> =
            daemon.daemon_info().await?.backend_collection.unwrap_or_default().keys().cloned().collect();
        let recorded: BTreeSet<String> =
            instances.iter().filter(|r| r.daemon_id == record.id).map(|r| r.relative_mountpoint()).collect();
        if served != recorded {
            return Err(format!("daemon {} serves {served:?} but its records are {recorded:?}", record.id).into());
        }
        expected_sockets.insert(daemon.api_socket());
        expected_pids.insert(daemon.pid());
    }
    for rafs in &instances {
        if !stored_daemons.contains(rafs.daemon_id.as_str()) {
            return Err(format!("instance {} belongs to unrecorded daemon {}", rafs.snapshot_id, rafs.daemon_id).into());
        }
    }
    let processes = processes_naming(layout.root());
    if processes != expected_pids {
        return Err(format!("processes {processes:?}, but the recorded daemons are {expected_pids:?}").into());
    }
    let sockets: BTreeSet<PathBuf> = files_under(&layout.socket_dir());
    if sockets != expected_sockets {
        return Err(format!("sockets {sockets:?}, but the recorded daemons use {expected_sockets:?}").into());
    }
    let mounts: Vec<PathBuf> = host_facts::mountinfo::under(layout.root()).into_iter().map(|m| m.mount_point).collect();
    if !mounts.is_empty() {
        return Err(format!("mounts left under the root: {mounts:?}").into());
    }
    Ok(())
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.insert(path);
        }
    }
    out
}

fn text(failed: &Failed) -> String {
    failed.message().unwrap_or("failed").to_owned()
}
