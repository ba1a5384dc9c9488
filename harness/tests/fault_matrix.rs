//! The fault matrix: every API call daemon-core makes to nydusd × every way nydusd has been
//! seen to fail it. Each cell states its outcome: the error kind (or the recovery event),
//! the time bound, and what is left afterwards (process alive or reaped, records, a death
//! event or none), and ends with `expect_no_leaks`. Each cell is a scenario generated here
//! and run by the harness; it fails when any part of the outcome differs.

use std::path::PathBuf;

use harness::runner::{RunConfig, run_scenario};
use harness::scenario;
use harness::scenario::model::Target;
use libtest_mimic::{Arguments, Failed, Trial};

/// A call daemon-core makes, how a scenario makes it happen, and which process of the
/// daemon the fault is injected into (1: the one started first; 2: the first replacement).
struct Call {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    policy: &'static str,
    process: Option<u32>,
    /// Steps before the faulty call.
    setup: &'static str,
}

const CALLS: &[Call] = &[
    Call { name: "state_query", method: "GET", path: "/api/v1/daemon", policy: "none", process: Some(1), setup: "" },
    Call {
        name: "mount",
        method: "POST",
        path: "/api/v1/mount",
        policy: "none",
        process: Some(1),
        setup: "  - start_daemon: { daemon: d1 }\n",
    },
    Call {
        name: "umount",
        method: "DELETE",
        path: "/api/v1/mount",
        policy: "none",
        process: Some(1),
        setup: "  - start_daemon: { daemon: d1 }\n  - mount_instance: { daemon: d1, snapshot: a }\n",
    },
    Call {
        name: "exit",
        method: "PUT",
        path: "/api/v1/daemon/exit",
        policy: "none",
        process: Some(1),
        setup: "  - start_daemon: { daemon: d1 }\n",
    },
    Call {
        name: "sendfd",
        method: "PUT",
        path: "/api/v1/daemon/fuse/sendfd",
        policy: "none",
        process: Some(1),
        setup: "  - start_daemon: { daemon: d1 }\n",
    },
    Call {
        name: "takeover",
        method: "PUT",
        path: "/api/v1/daemon/fuse/takeover",
        policy: "failover",
        process: Some(2),
        setup: FAILOVER_SETUP,
    },
    Call {
        name: "start",
        method: "PUT",
        path: "/api/v1/daemon/start",
        policy: "failover",
        process: Some(2),
        setup: FAILOVER_SETUP,
    },
    Call {
        name: "takeover_in_every_replacement",
        method: "PUT",
        path: "/api/v1/daemon/fuse/takeover",
        policy: "failover",
        process: None,
        setup: FAILOVER_SETUP,
    },
];

const FAILOVER_SETUP: &str = "  - start_daemon: { daemon: d1 }\n  - mount_instance: { daemon: d1, snapshot: a }\n  - signal: { daemon: d1, signal: SIGKILL }\n";

/// Fault name and the mock script actions producing it.
const FAULTS: &[(&str, &str)] = &[
    ("error_status", r#"[{ respond: { status: 500, body: '{"code":"UNDEFINED","message":"Other(\"injected\")"}' } }]"#),
    ("hang", "[hang]"),
    ("dropped_connection", "[close]"),
    ("reply_after_deadline", "[{ delay_ms: 1500 }]"),
    ("hang_up_while_alive", "[hang_up_all]"),
    ("daemon_crash", "[{ signal: SIGKILL }]"),
    ("sigstop", "[{ signal: SIGSTOP }]"),
];

/// How the faulty call ends.
enum End {
    /// The step fails with this kind (and status), within this many ms.
    Fails { kind: &'static str, status: Option<u16>, within_ms: u64 },
    /// The recovery ends with this event within this many ms.
    Event { event: &'static str, within_ms: u64 },
}

/// What is left afterwards.
struct After {
    /// The daemon's current process is alive (a stopped one counts as alive).
    alive: bool,
    /// Its instance records.
    instances: &'static [&'static str],
    /// A death event was reported (`Some(false)`: none within 300 ms).
    died: Option<bool>,
    /// The daemon is RUNNING and serves exactly its records.
    consistent: bool,
    /// Steps that let a late reply land first (and what a retry then does).
    settle: &'static str,
    /// What the daemon serves once settled (unchecked when it cannot answer).
    serves: Option<&'static [&'static str]>,
}

const fn fails(kind: &'static str, within_ms: u64) -> End {
    End::Fails { kind, status: None, within_ms }
}

const FAIL_500: End = End::Fails { kind: "daemon", status: Some(500), within_ms: 1000 };
const RECOVERED: End = End::Event { event: "failed_over", within_ms: 5000 };
const GAVE_UP: End = End::Event { event: "recovery_failed", within_ms: 8000 };

const fn after(alive: bool, instances: &'static [&'static str], died: Option<bool>) -> After {
    After { alive, instances, died, consistent: false, settle: "", serves: None }
}

/// [`after`] for a daemon that answers, serving `serves`.
const fn serving(instances: &'static [&'static str], serves: &'static [&'static str]) -> After {
    After { alive: true, instances, died: Some(false), consistent: false, settle: "", serves: Some(serves) }
}

const SERVING_A: After =
    After { alive: true, instances: &["a"], died: None, consistent: true, settle: "", serves: None };
const DEAD_WITH_A: After =
    After { alive: false, instances: &["a"], died: None, consistent: false, settle: "", serves: None };

/// The 1500 ms delay is over.
const LATE_REPLY_LANDED: &str = "  - sleep: { ms: 2500 }\n";

/// The expected outcome of every cell, by call and fault.
fn expected(call: &str, fault: &str) -> (End, After) {
    const NONE: &[&str] = &[];
    const A: &[&str] = &["a"];
    match (call, fault) {
        // A failed start stops and reaps its process; the record stays for a later start.
        ("state_query", "error_status" | "dropped_connection" | "hang_up_while_alive") => {
            (fails("timeout", 2000), after(false, NONE, Some(false)))
        }
        ("state_query", "hang" | "reply_after_deadline" | "sigstop") => {
            (fails("timeout", 3000), after(false, NONE, Some(false)))
        }
        ("state_query", "daemon_crash") => (fails("timeout", 1000), after(false, NONE, Some(false))),

        // A failed mount leaves no record; a lost reply is settled by asking the daemon.
        ("mount", "error_status") => (FAIL_500, serving(NONE, NONE)),
        ("mount", "hang") => (fails("timeout", 1500), serving(NONE, NONE)),
        ("mount", "sigstop") => (fails("timeout", 1500), after(true, NONE, Some(false))),
        ("mount", "dropped_connection") => (fails("connection", 1000), serving(NONE, NONE)),
        // Neither the mount nor the question that follows is answered in time: the record
        // goes, and once the daemon answers the manager unmounts what it then serves
        // without a record (before, it served /a with no record for good).
        ("mount", "reply_after_deadline") => {
            (fails("timeout", 2000), After { settle: LATE_REPLY_LANDED, ..serving(NONE, NONE) })
        }
        ("mount", "hang_up_while_alive") => (fails("connection", 1000), after(true, NONE, Some(true))),
        ("mount", "daemon_crash") => (fails("connection", 1000), after(false, NONE, Some(true))),

        // A failed umount keeps the record.
        ("umount", "error_status") => (FAIL_500, serving(A, &["/a"])),
        ("umount", "hang") => (fails("timeout", 1500), serving(A, &["/a"])),
        ("umount", "sigstop") => (fails("timeout", 1500), after(true, A, Some(false))),
        ("umount", "dropped_connection") => (fails("connection", 1000), serving(A, &["/a"])),
        // The umount took effect after its deadline; the retry the caller makes finds it
        // gone and drops the record (before, every retry failed with "doesn't exist").
        ("umount", "reply_after_deadline") => (
            fails("timeout", 2000),
            After {
                settle: "  - sleep: { ms: 2500 }\n  - script: { daemon: d1, script: {} }\n  - umount_instance: { daemon: d1, snapshot: a }\n",
                ..serving(NONE, NONE)
            },
        ),
        ("umount", "hang_up_while_alive") => (fails("connection", 1000), after(true, A, Some(true))),
        ("umount", "daemon_crash") => (fails("connection", 1000), after(false, A, Some(true))),

        // Direct API calls: the error, and whether the daemon lives.
        ("exit" | "sendfd", "error_status") => (FAIL_500, after(true, NONE, Some(false))),
        ("exit" | "sendfd", "hang" | "sigstop") => (fails("timeout", 1000), after(true, NONE, Some(false))),
        ("exit" | "sendfd", "dropped_connection") => (fails("connection", 1000), after(true, NONE, Some(false))),
        // The exit is carried out once the delay is over.
        ("exit", "reply_after_deadline") => (
            fails("timeout", 1000),
            After { settle: "  - wait_exit: { daemon: d1, timeout_ms: 3000 }\n", ..after(false, NONE, Some(true)) },
        ),
        ("sendfd", "reply_after_deadline") => (fails("timeout", 1000), after(true, NONE, Some(false))),
        ("exit" | "sendfd", "hang_up_while_alive") => (fails("connection", 1000), after(true, NONE, Some(true))),
        ("exit" | "sendfd", "daemon_crash") => (fails("connection", 1000), after(false, NONE, Some(true))),

        // A fault in the first replacement: it is killed and reaped, the next one takes
        // over, and the daemon serves its instance again.
        ("takeover" | "start", _) => (RECOVERED, SERVING_A),
        // The same fault in every replacement: each attempt's process is reaped, and after
        // the last one the recovery gives up with the record kept.
        ("takeover_in_every_replacement", _) => (GAVE_UP, DEAD_WITH_A),
        (call, fault) => unreachable!("no outcome stated for {call} × {fault}"),
    }
}

/// Steps between the set-up and the faulty call. A hang-up closes the connections the mock
/// has accepted; one still in its accept queue (the monitor's, dialled as the start
/// returned) is accepted later and lives, so the monitor's connection gets a moment to be
/// accepted first.
fn before_trigger(fault: &str) -> &'static str {
    if fault == "hang_up_while_alive" { "  - sleep: { ms: 100 }\n" } else { "" }
}

fn trigger(call: &Call, end: &End) -> String {
    let expect = match end {
        End::Fails { kind, status, within_ms } => {
            let status = status.map(|s| format!(", status: {s}")).unwrap_or_default();
            format!("expect_error: {{ kind: {kind}{status}, within_ms: {within_ms} }}")
        }
        End::Event { event, within_ms } => {
            return format!("  - wait_event: {{ daemon: d1, event: {event}, timeout_ms: {within_ms} }}\n");
        }
    };
    match call.name {
        "state_query" => format!("  - start_daemon: {{ daemon: d1, {expect} }}\n"),
        "mount" => format!("  - mount_instance: {{ daemon: d1, snapshot: a, {expect} }}\n"),
        "umount" => format!("  - umount_instance: {{ daemon: d1, snapshot: a, {expect} }}\n"),
        "exit" | "sendfd" => format!("  - api: {{ daemon: d1, call: {}, {expect} }}\n", call.name),
        other => unreachable!("{other} ends with an event"),
    }
}

fn afterwards(after: &After) -> String {
    let mut steps = after.settle.to_owned();
    match after.died {
        Some(true) => steps.push_str("  - wait_event: { daemon: d1, event: died, timeout_ms: 3000 }\n"),
        Some(false) => steps.push_str("  - expect_no_event: { daemon: d1, event: died, timeout_ms: 300 }\n"),
        None => {}
    }
    steps.push_str(&format!("  - expect_alive: {{ daemon: d1, alive: {} }}\n", after.alive));
    steps.push_str(&format!("  - expect_store: {{ daemons: [d1], instances: [{}] }}\n", after.instances.join(", ")));
    if let Some(serves) = after.serves {
        steps.push_str(&format!("  - expect_mounts: {{ daemon: d1, mountpoints: [{}] }}\n", serves.join(", ")));
    }
    if after.consistent {
        steps.push_str("  - expect_consistent: { daemon: d1 }\n");
    }
    steps.push_str("  - expect_no_leaks: {}\n");
    steps
}

fn scenario_text(call: &Call, fault: &str, then: &str) -> String {
    let (end, after) = expected(call.name, fault);
    let process = call.process.map(|p| format!(", process: {p}")).unwrap_or_default();
    format!(
        "version: 1\nname: fault-{}-{fault}\ntargets: [mock]\ntimeout_ms: 15000\n\
         manager: {{ recover_policy: {}, request_timeout_ms: 400, state_timeout_ms: 800, socket_timeout_ms: 2000, supervisor_timeout_ms: 400, exit_timeout_ms: 500, recovery_backoff_ms: 10 }}\n\
         daemons:\n  - id: d1\n    mode: shared\n    instances: [{{ snapshot: a }}]\n    script:\n      rules:\n        - when: {{ method: {}, path: {}{process} }}\n          then: {then}\n\
         steps:\n{}{}{}{}",
        call.name,
        call.policy,
        call.method,
        call.path,
        call.setup,
        before_trigger(fault),
        trigger(call, &end),
        afterwards(&after),
    )
}

fn main() {
    let args = Arguments::from_args();
    let config =
        RunConfig { nydusd: testkit::bin_exe!("harness"), target: Target::Mock, extra_args: Vec::new(), bundles: None };
    let mut trials = Vec::new();
    for call in CALLS {
        for (fault, then) in FAULTS {
            let text = scenario_text(call, fault, then);
            let config = config.clone();
            let name = format!("{}::{fault}", call.name);
            trials.push(Trial::test(name, move || {
                let path = PathBuf::from(format!("fault-matrix/{}-{fault}.yaml", call.name));
                let scenario = scenario::load::parse(&path, &text).map_err(|e| Failed::from(e.to_string()))?;
                let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
                let result = runtime.block_on(run_scenario(&path, &scenario, &config));
                match result.failure {
                    None => Ok(()),
                    Some(_) => Err(format!(
                        "{}\n--- generated scenario ---\n{text}",
                        harness::report::scenario_report(&result, &PathBuf::new())
                    )
                    .into()),
                }
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
