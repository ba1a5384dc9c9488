//! A scenario's end, however it ends: every process it started killed (its ledger), its
//! readers stopped, and every mount under its root detached.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Run;

impl Run<'_> {
    /// Kills every process the run started (its ledger: pid and start time, with its
    /// process group, so anything it forked goes too; never a process that merely names
    /// the root), reaps what is ours, and detaches every mount under the root, deepest
    /// first.
    pub(super) async fn teardown(&mut self) {
        // As a crash: the manager's tasks end before its daemons are killed, so no
        // recovery starts another one behind the sweep.
        let manager = self.state().manager.take();
        if let Some(manager) = manager {
            manager.abort().await;
        }
        self.kill_everything();
        // Reaping is done by daemon-core's per-process reaper tasks; give them a moment so
        // no zombie outlives the scenario, without waiting on anything that cannot end.
        // Whatever appears meanwhile is killed too: a restart or failover task of the
        // dropped manager runs until the runtime stops, and may spawn one more daemon.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.root.ledger.kill_all() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.root.detach_mounts();
    }

    /// Drops the manager, stops readers, aborts FUSE connections under the root (nothing
    /// stays blocked on a dead daemon) and SIGKILLs every process the run started.
    ///
    /// Readers are reaped only after the abort: a reader waiting for the answer to a
    /// request a dead daemon had read cannot even be killed until its connection ends.
    fn kill_everything(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.manager = None;
        let mut readers: Vec<std::process::Child> = std::mem::take(&mut state.stuck_readers);
        let running = std::mem::take(&mut state.readers);
        self.log.stop_following();
        for (_, (mut reader, stop)) in running {
            let _ = std::fs::write(&stop, b"");
            let _ = reader.kill();
            readers.push(reader);
        }
        daemon_core::mount::abort_fuse_connections_under(self.root.path());
        self.root.ledger.kill_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        for mut reader in readers {
            let _ = reader.kill();
            while matches!(reader.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl Drop for Run<'_> {
    /// The last line of defence when a scenario's future is dropped without teardown
    /// (Ctrl-C aborts it): the same clean-up, synchronously.
    fn drop(&mut self) {
        self.kill_everything();
        // The dropped manager's tasks run on other worker threads until the runtime stops
        // (seen once: Ctrl-C during chaos left a daemon a failover spawned just after the
        // sweep). Sweep until the root has been quiet for QUIET, for at most DROP_SWEEP.
        const QUIET: Duration = Duration::from_millis(20);
        const DROP_SWEEP: Duration = Duration::from_millis(300);
        let (started, mut quiet_since) = (Instant::now(), Instant::now());
        while started.elapsed() < DROP_SWEEP && quiet_since.elapsed() < QUIET {
            std::thread::sleep(Duration::from_millis(5));
            if self.root.ledger.kill_all() > 0 {
                quiet_since = Instant::now();
            }
        }
        self.root.detach_mounts();
    }
}

/// Live (non-zombie) processes whose command line contains `text`.
pub(crate) fn processes_naming(text: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| host_facts::process::state(*pid).is_some_and(|s| s != 'Z'))
        .filter(|pid| host_facts::process::cmdline(*pid).is_some_and(|args| args.iter().any(|a| a.contains(text))))
        .collect()
}

/// Mountpoints at or under `root`, in mountinfo order.
pub(crate) fn mounts_under(root: &Path) -> Vec<PathBuf> {
    host_facts::mountinfo::under(root).into_iter().map(|m| m.mount_point).collect()
}
