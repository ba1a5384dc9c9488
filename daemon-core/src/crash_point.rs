//! Named step boundaries of the manager's multi-step operations (start, mount, umount,
//! restart, failover, upgrade, destroy), where a crash test kills the manager to check
//! that a manager started again on the same root recovers everything.
//!
//! Built only with the `crash-points` feature; without it [`reached`] is empty. With it:
//! * `DAEMON_CORE_CRASH_LOG=<file>` appends `name#n` for every boundary passed (the n-th
//!   time this process passed it), so a clean run lists the boundaries of a workflow;
//! * `DAEMON_CORE_CRASH_AT=name#n` SIGKILLs this process at that boundary: no destructor,
//!   no flush, as when the manager is killed by the OOM killer or a node reboot.

// Read only when crash points are built in; named for the crash tests either way.
/// Environment variable naming the boundary to die at.
#[cfg_attr(not(feature = "crash-points"), allow(dead_code))]
pub const CRASH_AT_ENV: &str = "DAEMON_CORE_CRASH_AT";
/// Environment variable naming the file that lists the boundaries passed.
#[cfg_attr(not(feature = "crash-points"), allow(dead_code))]
pub const CRASH_LOG_ENV: &str = "DAEMON_CORE_CRASH_LOG";

/// Marks a step boundary.
#[inline]
pub fn reached(name: &'static str) {
    #[cfg(feature = "crash-points")]
    armed::reached(name);
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

#[cfg(feature = "crash-points")]
mod armed {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    struct Plan {
        crash_at: Option<String>,
        log: Option<std::path::PathBuf>,
        passes: Mutex<HashMap<&'static str, u32>>,
    }

    fn plan() -> &'static Plan {
        static PLAN: OnceLock<Plan> = OnceLock::new();
        PLAN.get_or_init(|| Plan {
            crash_at: std::env::var(super::CRASH_AT_ENV).ok().filter(|s| !s.is_empty()),
            log: std::env::var_os(super::CRASH_LOG_ENV).map(Into::into),
            passes: Mutex::default(),
        })
    }

    pub(super) fn reached(name: &'static str) {
        let plan = plan();
        if plan.crash_at.is_none() && plan.log.is_none() {
            return;
        }
        let n = {
            let mut passes = plan.passes.lock().unwrap_or_else(|e| e.into_inner());
            let n = passes.entry(name).or_insert(0);
            *n += 1;
            *n
        };
        let label = format!("{name}#{n}");
        if let Some(log) = &plan.log {
            // One write per line with O_APPEND: concurrent tasks never interleave a line.
            if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
                let _ = file.write_all(format!("{label}\n").as_bytes());
            }
        }
        if plan.crash_at.as_deref() == Some(label.as_str()) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
