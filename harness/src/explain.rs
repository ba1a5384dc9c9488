//! `harness explain`: a scenario as a readable sequence, in text or as a Mermaid sequence
//! diagram, so a reviewer can follow a failover reproduction without reading YAML.

use std::fmt::Write;

use crate::scenario::Scenario;
use crate::scenario::model::{ApiCall, EventKind, Step};

/// Who acts and who receives, and what, for one step.
fn describe(step: &Step) -> (String, String, String) {
    let d = |s: &serde_saphyr::Spanned<String>| s.value.clone();
    let (from, to, what) = match step {
        Step::Start(s) => {
            ("harness".into(), d(&s.daemon), format!("spawn nydusd{}", if s.upgrade { " --upgrade" } else { "" }))
        }
        Step::StartDaemon(s) => {
            ("manager".into(), d(&s.daemon), "StartDaemon: spawn, wait socket, monitor, RUNNING".into())
        }
        Step::WaitState(s) => {
            ("harness".into(), d(&s.daemon), format!("wait until {:?} (≤ {} ms)", s.state, s.timeout_ms))
        }
        Step::ExpectState(s) => ("harness".into(), d(&s.daemon), format!("expect state {:?}", s.state)),
        Step::Mount(s) => ("harness".into(), d(&s.daemon), format!("POST /api/v1/mount?mountpoint={}", s.mountpoint)),
        Step::Umount(s) => {
            ("harness".into(), d(&s.daemon), format!("DELETE /api/v1/mount?mountpoint={}", s.mountpoint))
        }
        Step::MountInstance(s) => ("manager".into(), d(&s.daemon), format!("mount instance {}", s.snapshot.value)),
        Step::UmountInstance(s) => ("manager".into(), d(&s.daemon), format!("umount instance {}", s.snapshot.value)),
        Step::Api(s) => (
            "harness".into(),
            d(&s.daemon),
            match s.call {
                ApiCall::Start => "PUT /api/v1/daemon/start".into(),
                ApiCall::Exit => "PUT /api/v1/daemon/exit".into(),
                ApiCall::Takeover => "PUT /api/v1/daemon/fuse/takeover".into(),
                ApiCall::Sendfd => "PUT /api/v1/daemon/fuse/sendfd".into(),
                ApiCall::DaemonInfo => "GET /api/v1/daemon".into(),
                ApiCall::FsMetrics => "GET /api/v1/metrics".into(),
                ApiCall::CacheMetrics => "GET /api/v1/metrics/blobcache".into(),
                ApiCall::InflightMetrics => "GET /api/v1/metrics/inflight".into(),
            },
        ),
        Step::Signal(s) => ("harness".into(), d(&s.daemon), format!("{:?}", nix::sys::signal::Signal::from(s.signal))),
        Step::WaitExit(s) => ("harness".into(), d(&s.daemon), "wait for the process to exit".into()),
        Step::ExpectSocket(s) => (
            "harness".into(),
            d(&s.daemon),
            format!("expect api socket {}", if s.present { "present" } else { "absent" }),
        ),
        Step::ExpectAlive(s) => {
            ("harness".into(), d(&s.daemon), format!("expect process {}", if s.alive { "alive" } else { "dead" }))
        }
        Step::ExpectMounts(s) => ("harness".into(), d(&s.daemon), format!("expect instances {:?}", s.mountpoints)),
        Step::Sleep(s) => ("harness".into(), "harness".into(), format!("sleep {} ms", s.ms)),
        Step::ExpectNoEvent(s) => (
            "harness".into(),
            "manager".into(),
            format!("expect no {:?} event for {} within {} ms", s.event, d(&s.daemon), s.timeout_ms),
        ),
        Step::WaitEvent(s) => (
            "manager".into(),
            "harness".into(),
            format!(
                "{} of {} (≤ {} ms)",
                match s.event {
                    EventKind::Started => "Started",
                    EventKind::StartFailed => "StartFailed",
                    EventKind::Died => "Died",
                    EventKind::UnknownDied => "UnknownDied",
                    EventKind::Restarted => "Restarted",
                    EventKind::FailedOver => "FailedOver",
                    EventKind::RecoveryFailed => "RecoveryFailed",
                    EventKind::Upgraded => "Upgraded",
                    EventKind::Destroyed => "Destroyed",
                    EventKind::SupervisorPeerRefused => "SupervisorPeerRefused",
                },
                d(&s.daemon),
                s.timeout_ms
            ),
        ),
        Step::KillManager(_) => ("harness".into(), "manager".into(), "kill the manager (daemons keep running)".into()),
        Step::RestartManager(_) => {
            ("harness".into(), "manager".into(), "start a new manager and recover from the store".into())
        }
        Step::Upgrade(s) => (
            "manager".into(),
            d(&s.daemon),
            format!("hot upgrade to build {}", &s.git_commit[..s.git_commit.len().min(8)]),
        ),
        Step::Destroy(s) => ("manager".into(), d(&s.daemon), "DestroyDaemon".into()),
        Step::Script(s) => {
            ("harness".into(), d(&s.daemon), format!("replace the mock script ({} rules)", s.script.rules.len()))
        }
        Step::ExpectJournal(s) => (
            "harness".into(),
            s.daemon.as_ref().map(d).unwrap_or_else(|| "harness".into()),
            format!("expect journal sequence of {} entries", s.sequence.len()),
        ),
        Step::ExpectStore(_) => ("harness".into(), "manager".into(), "expect store contents".into()),
        Step::ExpectMounted(s) => (
            "harness".into(),
            "harness".into(),
            format!("expect {} {}", s.path.value, if s.mounted { "mounted" } else { "not mounted" }),
        ),
        Step::ReadFile(s) => {
            ("harness".into(), "harness".into(), format!("read {} (contains {:?})", s.path.value, s.contains))
        }
        Step::StartReader(s) => {
            ("harness".into(), "harness".into(), format!("start reader {} on {}", s.name, s.path.value))
        }
        Step::StopReader(s) => (
            "harness".into(),
            "harness".into(),
            format!("stop reader {} (≤ {} failures, ≥ {} reads)", s.name, s.max_failures, s.min_reads),
        ),
        Step::ListDir(s) => {
            ("harness".into(), "harness".into(), format!("list {} (has {:?})", s.path.value, s.contains))
        }
        Step::MountConcurrently(s) => (
            "manager".into(),
            d(&s.daemon),
            format!("{} concurrent mounts of {} ({} may succeed)", s.count, s.snapshot.value, s.successes),
        ),
        Step::ExpectNoLeaks(_) => ("harness".into(), "harness".into(), "expect no leaked process or mount".into()),
        Step::ExpectConsistent(s) => {
            ("harness".into(), d(&s.daemon), "expect the daemon to serve exactly its recorded instances".into())
        }
        Step::ForgetDaemon(s) => {
            ("harness".into(), "manager".into(), format!("delete the record of {} (monitor not told)", d(&s.daemon)))
        }
        Step::IntrudeSupervisor(s) => (
            "harness".into(),
            "manager".into(),
            format!("connect to the supervisor of {} as an intruder", d(&s.daemon)),
        ),
    };
    (from, to, what)
}

/// The scenario as numbered lines.
pub fn text(scenario: &Scenario) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", scenario.name);
    if !scenario.description.trim().is_empty() {
        let _ = writeln!(out, "  {}", scenario.description.trim().replace('\n', "\n  "));
    }
    if let Some(upstream) = &scenario.upstream {
        let _ = writeln!(out, "  guards against: {upstream}");
    }
    let _ = writeln!(out, "  manager recover policy: {:?}", scenario.manager.recover_policy);
    for d in &scenario.daemons {
        let instances: Vec<&str> = d.instances.iter().map(|i| i.snapshot.value.as_str()).collect();
        let script = d.script.as_ref().map(|s| format!(", scripted ({} rules)", s.rules.len())).unwrap_or_default();
        let _ = writeln!(out, "  daemon {} ({:?}, instances {instances:?}{script})", d.id.value, d.mode);
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        let (from, to, what) = describe(&step.value);
        let arrow = if from == to { from } else { format!("{from} → {to}") };
        let _ = writeln!(out, "  {:>2}. {arrow}: {what}", i + 1);
    }
    out
}

/// The scenario as a Mermaid sequence diagram.
pub fn mermaid(scenario: &Scenario) -> String {
    let mut out = String::from("sequenceDiagram\n    participant harness\n    participant manager\n");
    for d in &scenario.daemons {
        let _ = writeln!(out, "    participant {}", d.id.value);
    }
    let _ = writeln!(out, "    Note over harness: {}", scenario.name.replace(':', " "));
    for (i, step) in scenario.steps.iter().enumerate() {
        let (from, to, what) = describe(&step.value);
        let what = what.replace(';', ",").replace('#', "");
        if from == to {
            let _ = writeln!(out, "    Note over {from}: {}. {what}", i + 1);
        } else {
            let _ = writeln!(out, "    {from}->>{to}: {}. {what}", i + 1);
        }
    }
    out
}
