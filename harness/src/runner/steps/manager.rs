//! Steps through daemon-core's `Manager`: instances, events, recovery, upgrade, destroy.

use std::time::Duration;

use daemon_core::daemon::error_chain;
use daemon_core::manager::{Manager, ManagerEvent};

use super::sorted;
use super::{Explained, StepKind, name};
use crate::runner::Run;
use crate::runner::outcome::StepError;
use crate::scenario::fields::*;
use crate::scenario::spelled;
use crate::scenario::steps::*;

/// The kind of `event` and the daemon it is about.
fn event_kind(event: &ManagerEvent) -> (EventKind, &str) {
    match event {
        ManagerEvent::Started { id, .. } => (EventKind::Started, id),
        ManagerEvent::StartFailed { id, .. } => (EventKind::StartFailed, id),
        ManagerEvent::Died { id } => (EventKind::Died, id),
        ManagerEvent::UnknownDied { id } => (EventKind::UnknownDied, id),
        ManagerEvent::Restarted { id, .. } => (EventKind::Restarted, id),
        ManagerEvent::FailedOver { id, .. } => (EventKind::FailedOver, id),
        ManagerEvent::RecoveryFailed { id, .. } => (EventKind::RecoveryFailed, id),
        ManagerEvent::Upgraded { id, .. } => (EventKind::Upgraded, id),
        ManagerEvent::Destroyed { id } => (EventKind::Destroyed, id),
        ManagerEvent::SupervisorPeerRefused { id, .. } => (EventKind::SupervisorPeerRefused, id),
        ManagerEvent::Signalled { id, .. } => (EventKind::Signalled, id),
        ManagerEvent::AttemptFailed { id, .. } => (EventKind::AttemptFailed, id),
        ManagerEvent::Resumed { id, .. } => (EventKind::Resumed, id),
    }
}

fn event_matches(event: &ManagerEvent, kind: EventKind, id: &str) -> bool {
    event_kind(event) == (kind, id)
}

/// An event as scenario files spell it: `failed_over of d1 (pid 812)`.
pub(crate) fn describe_event(event: &ManagerEvent) -> String {
    let (kind, id) = event_kind(event);
    let kind = spelled(&kind);
    match event {
        ManagerEvent::Started { pid, .. }
        | ManagerEvent::Restarted { pid, .. }
        | ManagerEvent::FailedOver { pid, .. }
        | ManagerEvent::Upgraded { pid, .. }
        | ManagerEvent::Resumed { pid, .. } => format!("{kind} of {id} (pid {pid})"),
        ManagerEvent::StartFailed { error, .. } => format!("{kind} of {id}: {}", error_chain(error.as_ref())),
        ManagerEvent::RecoveryFailed { policy, error, .. } => {
            format!("{kind} of {id} ({} policy): {}", spelled(policy), error_chain(error.as_ref()))
        }
        ManagerEvent::SupervisorPeerRefused { pid, uid, expected, .. } => {
            format!("{kind} of {id} (pid {pid}, uid {uid}; expected pid {expected})")
        }
        ManagerEvent::Signalled { pid, signal, why, .. } => format!("{kind} of {id} (pid {pid}, {signal}: {why})"),
        ManagerEvent::AttemptFailed { attempt, pid, error, retry_in, .. } => {
            let next = match retry_in {
                Some(gap) => format!("next in {} ms", gap.as_millis()),
                None => "no attempt left".to_owned(),
            };
            format!("{kind} of {id} (attempt {attempt}, pid {pid}; {next}): {error}")
        }
        ManagerEvent::Died { .. } | ManagerEvent::UnknownDied { .. } | ManagerEvent::Destroyed { .. } => {
            format!("{kind} of {id}")
        }
    }
}

/// The events that end a wait for `kind` otherwise: once one of them comes for the
/// daemon, the awaited one will not (a recovery ends once: restarted, failed over, or
/// given up; a start is verified or fails; a destroyed daemon recovers from nothing).
fn ends_wait_for(kind: EventKind) -> &'static [EventKind] {
    use EventKind::*;
    match kind {
        Restarted | FailedOver => &[Restarted, FailedOver, RecoveryFailed, Destroyed],
        RecoveryFailed => &[Restarted, FailedOver, Destroyed],
        Started => &[StartFailed, Destroyed],
        StartFailed => &[Started, Destroyed],
        Died | UnknownDied | Upgraded | Destroyed | SupervisorPeerRefused | Signalled | AttemptFailed | Resumed => &[],
    }
}

/// The `mount_instance` step (its doc: the format's `Step::MountInstance`).
pub(crate) struct MountInstance;

impl StepKind for MountInstance {
    type Args = InstanceStep;
    const IS_A_MANAGER_OPERATION: bool = true;

    fn what(_: &str, s: &InstanceStep) -> String {
        format!("mount_instance {} on {}", s.snapshot.value, s.daemon.value)
    }

    fn explain(s: &InstanceStep) -> Explained {
        Explained::new("manager".into(), name(&s.daemon), format!("mount instance {}", s.snapshot.value))
    }

    async fn run(run: &Run<'_>, s: &InstanceStep) -> Result<(), StepError> {
        let id = &s.daemon.value;
        let daemon = run.daemon(id)?;
        let rafs = run.instance(&daemon, id, &s.snapshot.value).await?;
        let manager = run.manager()?.clone();
        let outcome = if daemon.record().is_shared() {
            manager.mount_shared_instance(&daemon, rafs).await.map(drop)
        } else {
            manager.add_rafs_instance(&daemon, rafs).map(drop)
        };
        outcome.map_err(StepError::failed)
    }
}

/// The `umount_instance` step (its doc: the format's `Step::UmountInstance`).
pub(crate) struct UmountInstance;

impl StepKind for UmountInstance {
    type Args = InstanceStep;
    const IS_A_MANAGER_OPERATION: bool = true;

    fn what(_: &str, s: &InstanceStep) -> String {
        format!("umount_instance {} on {}", s.snapshot.value, s.daemon.value)
    }

    fn explain(s: &InstanceStep) -> Explained {
        Explained::new("manager".into(), name(&s.daemon), format!("umount instance {}", s.snapshot.value))
    }

    async fn run(run: &Run<'_>, s: &InstanceStep) -> Result<(), StepError> {
        let id = &s.daemon.value;
        let daemon = run.daemon(id)?;
        let outcome = run.manager()?.umount_shared_instance(&daemon, &s.snapshot.value).await;
        outcome.map_err(StepError::failed)
    }
}

/// The `mount_concurrently` step (its doc: the format's `Step::MountConcurrently`).
pub(crate) struct MountConcurrently;

impl StepKind for MountConcurrently {
    type Args = MountConcurrentlyStep;
    const IS_A_MANAGER_OPERATION: bool = true;

    fn explain(s: &MountConcurrentlyStep) -> Explained {
        Explained::new(
            "manager".into(),
            name(&s.daemon),
            format!("{} concurrent mounts of {} ({} may succeed)", s.count, s.snapshot.value, s.successes),
        )
    }

    async fn run(run: &Run<'_>, s: &MountConcurrentlyStep) -> Result<(), StepError> {
        let id = &s.daemon.value;
        let daemon = run.daemon(id)?;
        let manager = run.manager()?.clone();
        let mut tasks = tokio::task::JoinSet::new();
        // Written once: rewriting the instance's files while an earlier attempt
        // reads them would race (its image and configuration would be torn).
        let rafs = run.instance(&daemon, id, &s.snapshot.value).await?;
        for _ in 0..s.count.get() {
            let (manager, daemon, rafs) = (manager.clone(), daemon.clone(), rafs.clone());
            tasks.spawn(async move { manager.mount_shared_instance(&daemon, rafs).await.map_err(|e| error_chain(&e)) });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            outcomes.push(joined.map_err(|e| e.to_string())?);
        }
        let succeeded = outcomes.iter().filter(|o| o.is_ok()).count() as u32;
        if succeeded == s.successes {
            Ok(())
        } else {
            let errors: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
            Err(StepError::mismatch(
                format!("{} concurrent mounts of {}", s.count, s.snapshot.value),
                format!("{} succeeding", s.successes),
                format!("{succeeded} succeeded; errors: {errors:?}"),
            ))
        }
    }
}

/// The `wait_event` step (its doc: the format's `Step::WaitEvent`).
pub(crate) struct WaitEvent;

impl StepKind for WaitEvent {
    type Args = WaitEventStep;

    fn explain(s: &WaitEventStep) -> Explained {
        Explained::new(
            "manager".into(),
            "harness".into(),
            format!("{} of {} (≤ {} ms)", spelled(&s.event), name(&s.daemon), s.timeout_ms),
        )
    }

    async fn run(run: &Run<'_>, s: &WaitEventStep) -> Result<(), StepError> {
        let id = s.daemon.value.clone();
        let wanted = format!("{} of {id}", spelled(&s.event));
        let key = wanted.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(s.timeout_ms);
        let mut scanned = run.log.seen().consumed.get(&key).copied().unwrap_or(0);
        loop {
            {
                let mut seen = run.log.seen();
                while scanned < seen.events.len() {
                    let index = scanned;
                    scanned += 1;
                    let event = &seen.events[index];
                    if event_matches(event, s.event, &id) && !seen.matched.contains(&index) {
                        seen.consumed.insert(key, scanned);
                        seen.claimed.insert(index);
                        seen.matched.insert(index);
                        return Ok(());
                    }
                    let (kind, about) = event_kind(event);
                    if about == id && !seen.claimed.contains(&index) && ends_wait_for(s.event).contains(&kind) {
                        // Before, the wait ran to its deadline though the outcome was known.
                        let error = StepError::mismatch(
                            format!("waited for {wanted}, but {} came instead", spelled(&kind)),
                            wanted,
                            describe_event(event),
                        );
                        seen.claimed.insert(index);
                        return Err(error);
                    }
                }
            }
            if !run.log.next_event(scanned, deadline).await {
                let seen: Vec<String> = run.log.seen().events.iter().map(describe_event).collect();
                let no_manager = if run.state().manager.is_none() { " (no manager was running)" } else { "" };
                return Err(StepError::mismatch(
                    format!("no {wanted} within {} ms{no_manager}", s.timeout_ms),
                    wanted,
                    if seen.is_empty() { "no manager events".to_owned() } else { seen.join("; ") },
                ));
            }
        }
    }
}

/// The `expect_no_event` step (its doc: the format's `Step::ExpectNoEvent`).
pub(crate) struct ExpectNoEvent;

impl StepKind for ExpectNoEvent {
    type Args = WaitEventStep;

    fn explain(s: &WaitEventStep) -> Explained {
        Explained::new(
            "harness".into(),
            "manager".into(),
            format!("expect no {} of {} within {} ms", spelled(&s.event), name(&s.daemon), s.timeout_ms),
        )
    }

    async fn run(run: &Run<'_>, s: &WaitEventStep) -> Result<(), StepError> {
        let id = s.daemon.value.clone();
        let from = run.log.seen().events.len();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(s.timeout_ms);
        // Every event up to the deadline counts, whichever lane moved it into the log.
        tokio::time::sleep_until(deadline).await;
        run.log.drain();
        let seen = run.log.seen();
        match seen.events[from..].iter().find(|e| event_matches(e, s.event, &id)) {
            None => Ok(()),
            Some(e) => Err(StepError::mismatch(
                format!("an unexpected {} of {id}", spelled(&s.event)),
                format!("no {} within {} ms", spelled(&s.event), s.timeout_ms),
                describe_event(e),
            )),
        }
    }
}

/// The `kill_manager` step (its doc: the format's `Step::KillManager`).
pub(crate) struct KillManager;

impl StepKind for KillManager {
    type Args = Empty;

    fn explain(_: &Empty) -> Explained {
        Explained::new("harness".into(), "manager".into(), "kill the manager (daemons keep running)".into())
    }

    /// As a crash: every task of the manager (a recovery in flight, say) has ended before
    /// the next step, and its store is free for the next manager.
    async fn run(run: &Run<'_>, _: &Empty) -> Result<(), StepError> {
        let manager = run.state().manager.take();
        // First the operations other lanes have in flight, which hold the manager too.
        run.manager_ended.send_modify(|n| *n += 1);
        if let Some(manager) = manager {
            manager.abort().await;
        }
        run.log.drain();
        run.log.stop_following();
        Ok(())
    }
}

/// The `close_manager` step (its doc: the format's `Step::CloseManager`).
pub(crate) struct CloseManager;

impl StepKind for CloseManager {
    type Args = CloseManagerStep;

    fn explain(s: &CloseManagerStep) -> Explained {
        let cleanup = if s.cleanup { "unmount every instance, " } else { "" };
        Explained::new(
            "harness".into(),
            "manager".into(),
            format!("close the manager: {cleanup}stop idle shared daemons, end its tasks"),
        )
    }

    /// As `kill_manager`, the next manager may open the store afterwards, whatever the
    /// outcome.
    async fn run(run: &Run<'_>, s: &CloseManagerStep) -> Result<(), StepError> {
        let manager = run.state().manager.take().ok_or(crate::runner::error::RunError::NoManager)?;
        // A graceful exit waits for nothing another lane started: those end now.
        run.manager_ended.send_modify(|n| *n += 1);
        let closed = manager.close(s.cleanup).await;
        // A failed close still ended the manager's tasks; make sure, then let go of it.
        manager.abort().await;
        drop(manager);
        run.log.drain();
        run.log.stop_following();
        let report = closed.map_err(StepError::failed)?;
        let checks = [
            ("stopped", &s.stopped, report.stopped),
            ("kept", &s.kept, report.kept),
            ("unmounted", &s.unmounted, report.unmounted),
        ];
        compare_lists("the graceful shutdown did otherwise", &checks)
    }
}

/// The `restart_manager` step (its doc: the format's `Step::RestartManager`).
pub(crate) struct RestartManager;

impl StepKind for RestartManager {
    type Args = RestartManagerStep;

    fn explain(_: &RestartManagerStep) -> Explained {
        Explained::new("harness".into(), "manager".into(), "start a new manager and recover from the store".into())
    }

    async fn run(run: &Run<'_>, s: &RestartManagerStep) -> Result<(), StepError> {
        if run.state().manager.is_some() {
            return Err(StepError::new("the manager is still running; kill_manager first"));
        }
        if let Some(overrides) = &s.manager {
            overrides.apply(&mut run.manager_spec.lock().unwrap_or_else(|e| e.into_inner()));
        }
        run.open_manager().await?;
        let report = run.manager()?.recover().await?;
        check_report(s, &report)
    }
}

/// The `upgrade` step (its doc: the format's `Step::Upgrade`).
pub(crate) struct Upgrade;

impl StepKind for Upgrade {
    type Args = UpgradeStep;
    const IS_A_MANAGER_OPERATION: bool = true;

    fn what(_: &str, s: &UpgradeStep) -> String {
        format!("upgrade of {}", s.daemon.value)
    }

    fn explain(s: &UpgradeStep) -> Explained {
        Explained::new(
            "manager".into(),
            name(&s.daemon),
            format!("hot upgrade to build {}", &s.git_commit[..s.git_commit.len().min(8)]),
        )
    }

    async fn run(run: &Run<'_>, s: &UpgradeStep) -> Result<(), StepError> {
        let next = run.root.path().join(format!("bin/nydusd-{}", &s.git_commit[..s.git_commit.len().min(8)]));
        run.target()
            .write_next_build(&next, &run.binary, &s.git_commit)
            .map_err(|e| format!("cannot write {}: {e}", next.display()))?;
        let daemon = run.daemon(&s.daemon.value)?;
        let manager: Manager = run.manager()?.clone();
        let outcome = manager.upgrade_daemon(&daemon, &next).await.map(drop);
        outcome.map_err(StepError::failed)
    }
}

/// The `destroy` step (its doc: the format's `Step::Destroy`).
pub(crate) struct Destroy;

impl StepKind for Destroy {
    type Args = DaemonRef;
    const IS_A_MANAGER_OPERATION: bool = true;

    fn what(_: &str, s: &DaemonRef) -> String {
        format!("destroy {}", s.daemon.value)
    }

    fn explain(s: &DaemonRef) -> Explained {
        Explained::new("manager".into(), name(&s.daemon), "DestroyDaemon".into())
    }

    async fn run(run: &Run<'_>, s: &DaemonRef) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let outcome = run.manager()?.destroy_daemon(&daemon).await;
        outcome.map_err(StepError::failed)
    }
}

/// The `forget_daemon` step (its doc: the format's `Step::ForgetDaemon`).
pub(crate) struct ForgetDaemon;

impl StepKind for ForgetDaemon {
    type Args = DaemonRef;

    fn what(_: &str, s: &DaemonRef) -> String {
        format!("forget {}", s.daemon.value)
    }

    fn explain(s: &DaemonRef) -> Explained {
        Explained::new(
            "harness".into(),
            "manager".into(),
            format!("delete the record of {} (monitor not told)", name(&s.daemon)),
        )
    }

    async fn run(run: &Run<'_>, s: &DaemonRef) -> Result<(), StepError> {
        let outcome = run.manager()?.delete_daemon(&s.daemon.value);
        outcome.map_err(StepError::failed)
    }
}

impl Run<'_> {
    /// The failure of the scenario's `expect_never`, over every event of the run under
    /// any manager, if an event it names happened.
    pub(crate) fn never_event_seen(&self) -> Option<crate::runner::Failure> {
        for spanned in &self.scenario.expect_never {
            let (never, line) = (&spanned.value, spanned.referenced.line());
            let about = never.daemon.as_ref().map(|d| d.value.as_str());
            let seen = self.log.seen();
            let seen = seen
                .events
                .iter()
                .find(|e| event_kind(e).0 == never.event && about.is_none_or(|id| event_kind(e).1 == id));
            if let Some(event) = seen {
                let wanted = match about {
                    Some(id) => format!("no {} of {id}", spelled(&never.event)),
                    None => format!("no {} of any daemon", spelled(&never.event)),
                };
                let error = StepError::mismatch(
                    format!("an event the scenario never expects: {wanted}"),
                    wanted,
                    describe_event(event),
                );
                return Some(crate::runner::Failure::at_step(0, line, "expect_never", error));
            }
        }
        None
    }

    /// Whether the current manager's last word on `id`'s recovery was `RecoveryFailed`
    /// (nothing started it again since). An earlier manager's verdict does not count: a
    /// later one's start-up recovery may have restarted the daemon.
    pub(super) fn last_recovery_failed(&self, id: &str) -> bool {
        let seen = self.log.seen();
        seen.events[seen.current_manager_from.min(seen.events.len())..].iter().rev().find_map(|e| match e {
            ManagerEvent::RecoveryFailed { id: i, .. } if i == id => Some(true),
            ManagerEvent::Started { id: i, .. }
            | ManagerEvent::Restarted { id: i, .. }
            | ManagerEvent::FailedOver { id: i, .. }
            | ManagerEvent::Upgraded { id: i, .. }
                if i == id =>
            {
                Some(false)
            }
            _ => None,
        }) == Some(true)
    }
}

fn check_report(s: &RestartManagerStep, report: &daemon_core::manager::RecoveryReport) -> Result<(), StepError> {
    let ids = |pairs: &[(String, u32)]| pairs.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    let checks = [
        ("live", &s.live, report.live.clone()),
        ("restarted", &s.restarted, report.restarted.clone()),
        ("not_running", &s.not_running, report.not_running.iter().map(|(id, _)| id.clone()).collect()),
        ("frozen", &s.frozen, report.frozen.clone()),
        ("failed", &s.failed, report.failed.iter().map(|(id, _)| id.clone()).collect()),
        ("upgraded", &s.upgraded, report.upgraded.clone()),
        ("strays_killed", &s.strays_killed, ids(&report.strays_killed)),
        ("unrecorded_left", &s.unrecorded_left, ids(&report.unrecorded_left)),
        ("remounted", &s.remounted, report.remounted.clone()),
        ("unmounted", &s.unmounted, report.unmounted.clone()),
        ("configs_swept", &s.configs_swept, report.configs_swept.clone()),
    ];
    compare_lists("recovery reported differently", &checks)
}

/// One list of a report: its field name, what the step gives for it, what the report has.
type ListCheck<'a> = (&'a str, &'a Option<Vec<String>>, Vec<String>);

/// A report's lists, by field, held to the ones a step gives (absent: unchecked; order
/// does not count). A mismatch names the fields that differ and shows both sides written
/// as the step's fields are, so the observed side can be pasted into the file: every
/// list the step gave, and every other that is not empty.
fn compare_lists(what: &str, checks: &[ListCheck<'_>]) -> Result<(), StepError> {
    let differs = |wanted: &Option<Vec<String>>, have: &[String]| {
        wanted.as_ref().is_some_and(|w| sorted(w.clone()) != sorted(have.to_vec()))
    };
    let wrong: Vec<&ListCheck<'_>> = checks.iter().filter(|(_, wanted, have)| differs(wanted, have)).collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = wrong.iter().map(|(name, _, _)| *name).collect();
    let expected: Vec<String> =
        wrong.iter().filter_map(|(name, wanted, _)| Some(format!("{name}: {}", yaml_list(wanted.as_ref()?)))).collect();
    let observed: Vec<String> = checks
        .iter()
        .filter(|(_, wanted, have)| wanted.is_some() || !have.is_empty())
        .map(|(name, _, have)| format!("{name}: {}", yaml_list(have)))
        .collect();
    Err(StepError::mismatch(
        format!("{what} ({})", names.join(", ")),
        format!("{{ {} }}", expected.join(", ")),
        format!("{{ {} }}", observed.join(", ")),
    ))
}

/// `[a, b]`, as a YAML flow list of plain words.
fn yaml_list(items: &[String]) -> String {
    format!("[{}]", sorted(items.to_vec()).join(", "))
}
