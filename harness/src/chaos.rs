//! `harness chaos`: seeded random fault schedules against the mock. Each run is a scenario:
//! a shared daemon under the failover policy takes random mounts and unmounts while its
//! mock fails random API calls (error status, delay past the request deadline, dropped
//! connection), hangs up every API connection while it lives, is stopped and continued,
//! and is killed now and then, sometimes into a replacement that itself fails (dies during
//! takeover, start or verification, stops, drops or hangs up), so that the failover must
//! try again; at the end the faults stop and the daemon must serve exactly what the store
//! records, with nothing leaked. A failing schedule is
//! shrunk (operations removed while it still fails) and printed as a scenario file, ready
//! to be committed as a regression scenario.

use std::path::{Path, PathBuf};

use crate::runner::{RunConfig, ScenarioResult, run_scenario};
use crate::scenario::model::Target;

/// Options of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The harness binary (the mock).
    pub mock: PathBuf,
    /// Seed of the first schedule; run `i` uses `seed + i`.
    pub seed: u64,
    /// Schedules to run.
    pub runs: u32,
    /// Operations per schedule.
    pub ops: usize,
    /// Where to write the shrunk scenario of a failure.
    pub out: Option<PathBuf>,
}

/// API calls a fault can hit: the ones mount, umount and state upkeep make.
const TARGETS: [(&str, &str); 4] = [
    ("POST", "/api/v1/mount"),
    ("DELETE", "/api/v1/mount"),
    ("PUT", "/api/v1/daemon/fuse/sendfd"),
    ("GET", "/api/v1/daemon"),
];

/// How a faulty call misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// nydusd's error reply.
    Status(u16),
    /// A reply after `ms` milliseconds (the request deadline is 300 ms).
    DelayMs(u64),
    /// The connection closes without a reply.
    Close,
}

/// One operation of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Mount instance `s<n>`.
    Mount(usize),
    /// Unmount instance `s<n>`.
    Umount(usize),
    /// From now on, the call `TARGETS[n]` misbehaves.
    Break(usize, Fault),
    /// The mock behaves again.
    Heal,
    /// SIGKILL the daemon (faults healed first) and wait for its failover.
    Kill,
    /// As [`Op::Kill`], and the first replacement fails this way, so the failover retries.
    KillIntoFaulty(ReplacementFault),
    /// The live daemon closes every API connection, the monitor's too: a failover follows
    /// (the process is killed once the exit deadline passes).
    HangUp,
    /// SIGSTOP, a mount that runs into the request deadline, SIGCONT.
    Stop,
}

/// How a replacement fails on its way up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplacementFault {
    /// SIGKILL on the takeover request.
    DiesAtTakeover,
    /// SIGKILL on the start request.
    DiesAtStart,
    /// SIGKILL on the first state query once RUNNING (the manager's verification).
    DiesWhenVerified,
    /// SIGSTOP on the takeover request.
    StopsAtTakeover,
    /// The takeover's connection closes without a reply.
    DropsTakeover,
    /// Every API connection hangs up on the start request.
    HangsUpAtStart,
}

impl ReplacementFault {
    const ALL: [Self; 6] = [
        Self::DiesAtTakeover,
        Self::DiesAtStart,
        Self::DiesWhenVerified,
        Self::StopsAtTakeover,
        Self::DropsTakeover,
        Self::HangsUpAtStart,
    ];

    /// The script rule making process `process` fail this way.
    fn rule(self, process: u32) -> String {
        let (when, then) = match self {
            Self::DiesAtTakeover => ("path: /api/v1/daemon/fuse/takeover", "{ signal: SIGKILL }"),
            Self::DiesAtStart => ("path: /api/v1/daemon/start", "{ signal: SIGKILL }"),
            Self::DiesWhenVerified => ("method: GET, path: /api/v1/daemon, state: RUNNING", "{ signal: SIGKILL }"),
            Self::StopsAtTakeover => ("path: /api/v1/daemon/fuse/takeover", "{ signal: SIGSTOP }"),
            Self::DropsTakeover => ("path: /api/v1/daemon/fuse/takeover", "close"),
            Self::HangsUpAtStart => ("path: /api/v1/daemon/start", "hang_up_all"),
        };
        format!("{{ when: {{ {when}, process: {process} }}, then: [{then}] }}")
    }
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The schedule of `seed`.
pub fn schedule(seed: u64, ops: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    (0..ops)
        .map(|_| match rng.below(10) {
            0..=2 => Op::Mount(rng.below(4) as usize),
            3..=4 => Op::Umount(rng.below(4) as usize),
            5..=6 => {
                let fault = match rng.below(3) {
                    0 => Fault::Status([500, 503][rng.below(2) as usize]),
                    1 => Fault::DelayMs([50, 400][rng.below(2) as usize]),
                    _ => Fault::Close,
                };
                Op::Break(rng.below(TARGETS.len() as u64) as usize, fault)
            }
            7..=8 => Op::Heal,
            _ => match rng.below(6) {
                0..=1 => Op::Kill,
                2..=3 => Op::KillIntoFaulty(ReplacementFault::ALL[rng.below(6) as usize]),
                4 => Op::HangUp,
                _ => Op::Stop,
            },
        })
        .collect()
}

/// The scenario file of a schedule.
pub fn scenario_text(seed: u64, ops: &[Op]) -> String {
    let replacement_rules = replacement_rules(ops);
    // A `script` step replaces the script of later processes too, so each one carries the
    // replacement rules (they name their process, and fire nowhere else).
    let script_step = |rules: &[String]| {
        let all: Vec<&str> = rules.iter().chain(&replacement_rules).map(String::as_str).collect();
        format!("  - script: {{ daemon: d1, script: {{ rules: [{}] }} }}\n", all.join(", "))
    };
    let heal = script_step(&[]);
    let mut process = 1;
    let mut steps = String::new();
    let failed_over = "  - wait_event: { daemon: d1, event: failed_over }\n";
    for op in ops {
        match op {
            Op::Mount(n) => {
                steps.push_str(&format!("  - mount_instance: {{ daemon: d1, snapshot: s{n}, may_fail: true }}\n"))
            }
            Op::Umount(n) => {
                steps.push_str(&format!("  - umount_instance: {{ daemon: d1, snapshot: s{n}, may_fail: true }}\n"))
            }
            Op::Break(target, fault) => steps.push_str(&script_step(&[break_rule(*target, fault)])),
            Op::Heal => steps.push_str(&heal),
            Op::Kill | Op::KillIntoFaulty(_) => {
                process += if matches!(op, Op::KillIntoFaulty(_)) { 2 } else { 1 };
                steps.push_str(&heal);
                steps.push_str("  - signal: { daemon: d1, signal: SIGKILL }\n");
                steps.push_str(failed_over);
            }
            Op::HangUp => {
                steps.push_str(&script_step(&[format!(
                    "{{ when: {{ path: \"*\", process: {process} }}, then: [hang_up_all] }}"
                )]));
                process += 1;
                // Any request triggers it; this one always reaches the daemon, but may wait
                // there behind a request an earlier rule delays (one the manager sent while
                // the daemon was stopped, say) and time out first: seed 2282. The failover
                // that follows is what the hang-up must cause.
                steps.push_str("  - api: { daemon: d1, call: sendfd, may_fail: true }\n");
                steps.push_str(failed_over);
            }
            Op::Stop => {
                steps.push_str("  - signal: { daemon: d1, signal: SIGSTOP }\n");
                steps.push_str("  - mount_instance: { daemon: d1, snapshot: s1, may_fail: true }\n");
                steps.push_str("  - signal: { daemon: d1, signal: SIGCONT }\n");
            }
        }
    }
    let mut out = header(seed, ops.len(), &replacement_rules);
    out.push_str(&steps);
    out.push_str(&heal);
    out.push_str("  - expect_consistent: { daemon: d1 }\n  - expect_no_leaks: {}\n");
    out
}

/// The rules that make replacements faulty, each naming the process it fires in:
/// processes of d1 are numbered as the harness numbers them (`when.process`), every
/// failover spawning one, and one more for each replacement that fails.
fn replacement_rules(ops: &[Op]) -> Vec<String> {
    let mut process = 1;
    let mut rules = Vec::new();
    for op in ops {
        match op {
            Op::Kill | Op::HangUp => process += 1,
            Op::KillIntoFaulty(fault) => {
                rules.push(fault.rule(process + 1));
                process += 2;
            }
            _ => {}
        }
    }
    rules
}

/// The rule that breaks `TARGETS[target]` with `fault`.
fn break_rule(target: usize, fault: &Fault) -> String {
    let (method, path) = TARGETS[target];
    let then = match fault {
        Fault::Status(status) => {
            format!("{{ respond: {{ status: {status}, body: '{{\"code\":\"UNDEFINED\",\"message\":\"chaos\"}}' }} }}")
        }
        Fault::DelayMs(ms) => format!("{{ delay_ms: {ms} }}"),
        Fault::Close => "close".to_owned(),
    };
    format!("{{ when: {{ method: {method}, path: {path} }}, then: [{then}] }}")
}

/// Everything of the scenario file before its steps.
fn header(seed: u64, n: usize, replacement_rules: &[String]) -> String {
    let script = if replacement_rules.is_empty() {
        String::new()
    } else {
        format!(
            "    script:\n      rules:\n{}",
            replacement_rules.iter().map(|r| format!("        - {r}\n")).collect::<String>()
        )
    };
    format!(
        "version: 1
name: chaos-{seed}
targets: [mock]
description: >
  Found by `harness chaos --seed {seed}` and shrunk to {n} operations: random mounts,
  unmounts, API faults and kills of a shared daemon under the failover policy; afterwards
  the daemon must serve exactly what the store records, with nothing leaked.
tags: [chaos]
timeout_ms: 60000
manager: {{ recover_policy: failover, request_timeout_ms: 300, exit_timeout_ms: 500, recovery_backoff_ms: 10 }}
daemons:
  - id: d1
    mode: shared
    instances: [{{ snapshot: s0 }}, {{ snapshot: s1 }}, {{ snapshot: s2 }}, {{ snapshot: s3 }}]
{script}steps:
  - start_daemon: {{ daemon: d1 }}
"
    )
}

/// Removes operations one at a time, keeping each removal after which `fails` still
/// holds, until no single removal does. Asynchronous, so that a signal arriving while it
/// reruns schedules ends the command (see `termination`) instead of waiting for it.
pub async fn shrink<T: Clone>(mut items: Vec<T>, mut fails: impl AsyncFnMut(&[T]) -> bool) -> Vec<T> {
    loop {
        let before = items.len();
        let mut i = 0;
        while i < items.len() {
            let mut candidate = items.clone();
            candidate.remove(i);
            if fails(&candidate).await {
                items = candidate;
            } else {
                i += 1;
            }
        }
        if items.len() == before {
            return items;
        }
    }
}

/// Why a chaos run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Its working directory or a generated scenario file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A generated scenario did not load: a bug of the generator.
    #[error("a generated scenario does not load")]
    Generated(#[source] crate::scenario::LoadError),
}

async fn run_schedule(dir: &Path, mock: &RunConfig, seed: u64, ops: &[Op]) -> Result<ScenarioResult, ChaosError> {
    let path = dir.join(format!("chaos-{seed}.yaml"));
    let text = scenario_text(seed, ops);
    std::fs::write(&path, &text).map_err(|source| ChaosError::Write { path: path.clone(), source })?;
    let scenario = crate::scenario::load::parse(&path, &text).map_err(ChaosError::Generated)?;
    Ok(run_scenario(&path, &scenario, mock).await)
}

/// Runs the schedules; on the first failure shrinks it, prints it, and returns `false`.
pub async fn run(options: &ChaosOptions) -> Result<bool, ChaosError> {
    let dir = tempfile::Builder::new()
        .prefix("harness-chaos-")
        .tempdir()
        .map_err(|source| ChaosError::Write { path: std::env::temp_dir(), source })?;
    // Maps in a random order, as nydusd's hash map may list them: a client that depends on
    // the order breaks an invariant here.
    let mock = RunConfig {
        nydusd: options.mock.clone(),
        target: Target::Mock,
        extra_args: vec!["--mock-shuffle-maps".into()],
        bundles: None,
    };
    for i in 0..u64::from(options.runs) {
        let seed = options.seed.wrapping_add(i);
        let ops = schedule(seed, options.ops);
        let result = run_schedule(dir.path(), &mock, seed, &ops).await?;
        let Some(failure) = result.failure else {
            println!("PASS seed {seed} ({} operations, {} ms)", ops.len(), result.duration.as_millis());
            continue;
        };
        println!("FAIL seed {seed}: {}", failure.message);
        for (what, text) in [("expected", &failure.expected), ("observed", &failure.observed)] {
            if let Some(text) = text {
                println!("     {what}: {text}");
            }
        }
        println!("shrinking {} operations...", ops.len());
        let mut attempts = 0;
        let mut shrunk = ops.clone();
        let mut remaining = shrink(ops, async |candidate: &[Op]| {
            attempts += 1;
            let outcome = run_schedule(dir.path(), &mock, seed, candidate).await;
            let still_fails = outcome.is_ok_and(|r| r.failure.is_some());
            if still_fails {
                shrunk = candidate.to_vec();
            }
            still_fails
        })
        .await;
        if remaining.is_empty() {
            remaining = shrunk;
        }
        let text = scenario_text(seed, &remaining);
        println!("shrunk to {} operations in {attempts} runs; the scenario:\n\n{text}", remaining.len());
        if let Some(out) = &options.out {
            let file = out.join(format!("chaos-{seed}.yaml"));
            std::fs::create_dir_all(out).map_err(|source| ChaosError::Write { path: out.clone(), source })?;
            std::fs::write(&file, &text).map_err(|source| ChaosError::Write { path: file.clone(), source })?;
            println!("written to {}", file.display());
        }
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_reproducible_and_vary_with_the_seed() {
        assert_eq!(schedule(7, 20), schedule(7, 20));
        assert_ne!(schedule(7, 20), schedule(8, 20));
    }

    #[tokio::test]
    async fn shrinking_keeps_only_what_the_failure_needs() {
        let fails = async |items: &[u32]| items.contains(&3) && items.contains(&7);
        assert_eq!(shrink((0..10).collect(), fails).await, vec![3, 7]);
    }

    /// Before, shrinking blocked its thread while rerunning a schedule, so the select
    /// that ends a command on SIGINT/SIGTERM/SIGHUP could not act until it was done: a
    /// signal during a shrink exited 1 after the shrink, not 128 + n at once.
    #[tokio::test]
    async fn a_shrink_in_progress_gives_way_to_whatever_it_is_raced_against() {
        let forever = async |_: &[u32]| std::future::pending::<bool>().await;
        tokio::select! {
            _ = shrink((0..10).collect(), forever) => panic!("a rerun that never ends ended"),
            () = tokio::task::yield_now() => {}
        }
    }

    #[test]
    fn generated_scenarios_load() {
        for seed in 0..50 {
            let text = scenario_text(seed, &schedule(seed, 12));
            crate::scenario::load::parse(Path::new("chaos.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
}
