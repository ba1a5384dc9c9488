//! The fault matrix: every API call daemon-core makes to nydusd × every way nydusd has been
//! seen to fail it. Each cell is a scenario generated here and run by the harness; it must
//! end with a typed error (or a reported recovery failure) within its deadline, never hang,
//! and leave no process or mount behind.

use std::path::PathBuf;

use harness::runner::{RunConfig, run_scenario};
use harness::scenario;
use harness::scenario::model::Target;
use libtest_mimic::{Arguments, Failed, Trial};

/// How a call is made to happen, what a failure of it looks like to the scenario, and the
/// rule's method and path.
struct Call {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    policy: &'static str,
    /// Steps before the faulty call (the daemon is already started unless the call is the
    /// start-up state query).
    setup: &'static str,
    /// The step making the call and expecting it to fail.
    trigger: &'static str,
}

const CALLS: &[Call] = &[
    Call {
        name: "state_query",
        method: "GET",
        path: "/api/v1/daemon",
        policy: "none",
        setup: "",
        trigger: "  - start_daemon: { daemon: d1, expect_error: {} }\n",
    },
    Call {
        name: "mount",
        method: "POST",
        path: "/api/v1/mount",
        policy: "none",
        setup: "  - start_daemon: { daemon: d1 }\n",
        trigger: "  - mount_instance: { daemon: d1, snapshot: a, expect_error: {} }\n",
    },
    Call {
        name: "umount",
        method: "DELETE",
        path: "/api/v1/mount",
        policy: "none",
        setup: "  - start_daemon: { daemon: d1 }\n  - mount_instance: { daemon: d1, snapshot: a }\n",
        trigger: "  - umount_instance: { daemon: d1, snapshot: a, expect_error: {} }\n",
    },
    Call {
        name: "exit",
        method: "PUT",
        path: "/api/v1/daemon/exit",
        policy: "none",
        setup: "  - start_daemon: { daemon: d1 }\n",
        trigger: "  - api: { daemon: d1, call: exit, expect_error: {} }\n",
    },
    Call {
        name: "sendfd",
        method: "PUT",
        path: "/api/v1/daemon/fuse/sendfd",
        policy: "none",
        setup: "  - start_daemon: { daemon: d1 }\n",
        trigger: "  - api: { daemon: d1, call: sendfd, expect_error: {} }\n",
    },
    Call {
        name: "takeover",
        method: "PUT",
        path: "/api/v1/daemon/fuse/takeover",
        policy: "failover",
        setup: "  - start_daemon: { daemon: d1 }\n  - signal: { daemon: d1, signal: SIGKILL }\n",
        trigger: "  - wait_event: { daemon: d1, event: recovery_failed }\n",
    },
    Call {
        name: "start",
        method: "PUT",
        path: "/api/v1/daemon/start",
        policy: "failover",
        setup: "  - start_daemon: { daemon: d1 }\n  - signal: { daemon: d1, signal: SIGKILL }\n",
        trigger: "  - wait_event: { daemon: d1, event: recovery_failed }\n",
    },
];

/// Fault name and the mock script actions producing it.
const FAULTS: &[(&str, &str)] = &[
    ("error_status", r#"[{ respond: { status: 500, body: '{"code":"UNDEFINED","message":"Other(\"injected\")"}' } }]"#),
    ("hang", "[hang]"),
    ("dropped_connection", "[close]"),
    ("delay_past_deadline", "[{ delay_ms: 1500 }]"),
    ("daemon_crash", "[{ signal: SIGKILL }]"),
];

fn scenario_text(call: &Call, fault: &str, then: &str) -> String {
    // The exit call only fails if the fault hits the first request: a SIGKILLed daemon is
    // restarted nowhere (policy none), so later steps see no daemon at all.
    format!(
        "version: 1\nname: fault-{}-{fault}\ntargets: [mock]\ntimeout_ms: 8000\n\
         manager: {{ recover_policy: {}, request_timeout_ms: 400, state_timeout_ms: 800, socket_timeout_ms: 2000, supervisor_timeout_ms: 400 }}\n\
         daemons:\n  - id: d1\n    mode: shared\n    instances: [{{ snapshot: a }}]\n    script:\n      rules:\n        - when: {{ method: {}, path: {} }}\n          then: {then}\n\
         steps:\n{}{}  - expect_no_leaks: {{}}\n",
        call.name, call.policy, call.method, call.path, call.setup, call.trigger
    )
}

fn main() {
    let args = Arguments::from_args();
    let config = RunConfig {
        nydusd: PathBuf::from(env!("CARGO_BIN_EXE_harness")),
        target: Target::Mock,
        extra_args: Vec::new(),
        bundles: None,
    };
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
