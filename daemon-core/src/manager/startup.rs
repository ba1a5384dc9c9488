//! Recovery when the manager itself starts again (`snapshotter-lifecycle.md` §8.8): the
//! stored daemons are sorted into live ones (watched again) and dead ones (started
//! fresh, instances mounted again); no record is deleted while recovering. The previous
//! manager may have died at any step boundary (see `crash_point`), so recovery also
//! finishes or undoes what it left half done.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::Signal;

use super::tasks::Owner;
use super::{Manager, ManagerError, ManagerEvent, Serves};
use crate::DaemonState;
use crate::daemon::record::DaemonRecord;
use crate::daemon::{Daemon, error_chain};

/// What recovery found and did, by daemon id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Running and watched again.
    pub live: Vec<String>,
    /// Dead, and started again.
    pub restarted: Vec<String>,
    /// Alive and answering, but not RUNNING within the state deadline: left alone, as
    /// upstream does.
    pub not_running: Vec<(String, DaemonState)>,
    /// Alive but stopped by a signal (SIGSTOP, a debugger): left alone with its mounts,
    /// watched for its death, and settled (mounts reconciled, supervisor state fetched,
    /// [`super::ManagerEvent::Resumed`]) once it runs again. A stopped process is paused,
    /// not hung: killing it, as the manager did before, took its FUSE mount from every
    /// reader. (A process that runs but does not answer its state query is hung: it is
    /// killed at once and restarted.)
    pub frozen: Vec<String>,
    /// Live daemons moved to the configured binary because they ran another build.
    pub upgraded: Vec<String>,
    /// Recovery failed; the record stays for the next attempt.
    pub failed: Vec<(String, String)>,
    /// Processes killed because no record names them (the previous manager died between
    /// spawning them and recording them, or while destroying or upgrading their daemon),
    /// as `(daemon id, pid)`.
    pub strays_killed: Vec<(String, u32)>,
    /// Processes under the root for daemons that neither a record nor an intent names,
    /// as `(daemon id, pid)`: left running, since nothing says this manager started them
    /// (records lost from a valid store, or a process someone else started there).
    pub unrecorded_left: Vec<(String, u32)>,
    /// Instances a live daemon had lost track of (the previous manager died between
    /// recording and mounting, or between unmounting and forgetting), mounted again.
    pub remounted: Vec<String>,
    /// Mounts a live daemon served that no record names, unmounted.
    pub unmounted: Vec<String>,
    /// Configuration directories of instances no record names (snapshot ids), removed.
    pub configs_swept: Vec<String>,
}

/// `Git Commit:` from `<binary> --version`, as upstream's `GetDaemonGitCommit`.
pub fn binary_git_commit(binary: &Path) -> Option<String> {
    let output = std::process::Command::new(binary).arg("--version").output().ok()?;
    let commit = nydusd_api::version_output::parse(&String::from_utf8_lossy(&output.stdout)).git_commit;
    (!commit.is_empty()).then_some(commit)
}

impl Manager {
    /// Recovers the daemons and instances of this manager's driver from the store, after
    /// the previous manager stopped at any point: processes no record names are killed,
    /// a daemon caught between takeover and start is started (it holds the state) or, if
    /// it is still waiting for a takeover nobody will drive, killed and started afresh,
    /// and a live daemon's mounts are made to match its instance records.
    pub async fn recover(&self) -> Result<RecoveryReport, ManagerError> {
        let mut report = RecoveryReport::default();
        let driver = self.config().fs_driver;
        let (records, unreadable) = self.store().daemons_and_unreadable()?;
        // A record that does not decode still names its daemon: its process is not a stray.
        let unreadable_ids: Vec<String> = unreadable.iter().map(bad_record_key).collect();
        report.failed.extend(unreadable.iter().map(|e| (bad_record_key(e), error_chain(e))));
        let intents = self.store().intents()?;
        let swept = self.sweep_strays(&records, &unreadable_ids, &intents).await;
        (report.strays_killed, report.unrecorded_left) = swept;
        let (live, dead, frozen) = self.settle_all(records, &mut report).await;
        for rafs in self.store().instances()?.into_iter().filter(|r| r.fs_driver == driver) {
            if let Some(daemon) = self.get_daemon(&rafs.daemon_id) {
                daemon.add_rafs_instance(rafs);
            }
        }
        for daemon in self.list_daemons().iter().filter(|d| d.record().is_shared()) {
            report.configs_swept.extend(self.sweep_instance_configs(daemon));
        }
        self.resume(&live, frozen, &mut report).await?;
        self.restart_dead(dead, &mut report).await;
        // Recovery ends with every nydusd under the root named by a record: a process that
        // escaped the first sweep (or a start that raced it) goes now.
        let (records, _) = self.store().daemons_and_unreadable()?;
        let (killed, _) = self.sweep_strays(&records, &unreadable_ids, &intents).await;
        report.strays_killed.extend(killed);
        // Every process an intent licensed is now recorded or gone.
        for id in &intents {
            let _ = self.store().clear_intent(id);
        }
        self.upgrade_outdated(live, &mut report).await;
        Ok(report)
    }

    /// Settles every recorded daemon of this driver: live (RUNNING), stuck in another
    /// state, frozen (stopped), or dead (killed or never alive).
    async fn settle_all(
        &self,
        records: Vec<crate::daemon::DaemonRecord>,
        report: &mut RecoveryReport,
    ) -> (Vec<Arc<Daemon>>, Vec<Arc<Daemon>>, Vec<Arc<Daemon>>) {
        let driver = self.config().fs_driver;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        let mut frozen = Vec::new();
        // Settled concurrently: each live daemon may take a state deadline, and N stuck
        // daemons one after another would cost N of them while nothing is served.
        let limit = Arc::new(tokio::sync::Semaphore::new(SETTLE_PARALLELISM));
        let mut settling = tokio::task::JoinSet::new();
        for state in records.into_iter().filter(|s| s.fs_driver == driver) {
            let daemon = Daemon::from_state(state, 0, self.config().timeouts);
            daemon.set_exchange_observer(self.config().exchange_observer.clone());
            daemon.set_reply_limit(self.config().reply_limit);
            self.attach_supervisor(&daemon);
            let daemon = Arc::new(daemon);
            self.cache().insert(daemon.id(), daemon.clone());
            // A dead process is known at once from its pidfd; only live ones are asked,
            // so recovery does not wait out a socket timeout per dead daemon.
            if !daemon.is_alive() {
                dead.push(daemon);
                continue;
            }
            let manager = self.clone();
            let limit = limit.clone();
            settling.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let settled = manager.settle(&daemon).await;
                (daemon, settled)
            });
        }
        let mut settled: Vec<_> = settling.join_all().await;
        settled.sort_by_key(|(daemon, _)| daemon.id());
        for (daemon, outcome) in settled {
            match outcome {
                Ok(Settled::Running) => live.push(daemon),
                Ok(Settled::Stuck(state)) => report.not_running.push((daemon.id(), state)),
                Ok(Settled::Frozen) => frozen.push(daemon),
                Ok(Settled::Killed) | Err(_) => dead.push(daemon),
            }
        }
        (live, dead, frozen)
    }

    /// Watches the live and frozen daemons again; a live one's mounts are made to match
    /// its records and the supervisor gets a fresh copy of its state.
    async fn resume(
        &self,
        live: &[Arc<Daemon>],
        frozen: Vec<Arc<Daemon>>,
        report: &mut RecoveryReport,
    ) -> Result<(), ManagerError> {
        for daemon in live {
            self.monitor().subscribe(&daemon.id(), &daemon.api_socket(), daemon.pid()).await?;
            match self.reconcile_mounts(daemon, Serves::AsReported).await {
                Ok((remounted, unmounted)) => {
                    report.remounted.extend(remounted);
                    report.unmounted.extend(unmounted);
                }
                Err(e) => report.failed.push((daemon.id(), error_chain(&e))),
            }
            // The supervisor's copy died with the previous manager; fetch a fresh one.
            let _ = daemon.send_states().await;
            report.live.push(daemon.id());
        }
        for daemon in frozen {
            self.monitor().subscribe(&daemon.id(), &daemon.api_socket(), daemon.pid()).await?;
            report.frozen.push(daemon.id());
            self.settle_when_resumed(daemon);
        }
        Ok(())
    }

    /// Restarts the dead daemons, each as a task of its own: a destroy meanwhile ends the
    /// restart, as a crash does.
    async fn restart_dead(&self, dead: Vec<Arc<Daemon>>, report: &mut RecoveryReport) {
        let restarts: Vec<_> = dead
            .into_iter()
            .map(|daemon| {
                let (manager, id) = (self.clone(), daemon.id());
                let restart =
                    async move { super::deaths::restart(&manager, &daemon).await.map_err(|e| error_chain(&e)) };
                (id.clone(), self.inner.tasks.spawn(Owner::Daemon(id), restart))
            })
            .collect();
        for (id, restart) in restarts {
            match restart.finished().await {
                Some(Ok(_)) => report.restarted.push(id),
                Some(Err(e)) => report.failed.push((id, e)),
                None => report.failed.push((id.clone(), ManagerError::Destroyed(id).to_string())),
            }
        }
    }

    /// Hot-upgrades live daemons running another build than the configured nydusd.
    async fn upgrade_outdated(&self, live: Vec<Arc<Daemon>>, report: &mut RecoveryReport) {
        let Some(wanted) = binary_git_commit(&self.nydusd()) else { return };
        for daemon in live {
            let running = daemon.version().map(|v| v.git_commit);
            if running.as_deref() == Some(wanted.as_str()) || daemon.supervisor().is_none() {
                continue;
            }
            match self.upgrade_daemon(&daemon, &self.nydusd()).await {
                Ok(_) => report.upgraded.push(daemon.id()),
                Err(e) => report.failed.push((daemon.id(), error_chain(&e))),
            }
        }
    }

    /// Brings a live recorded daemon to a state recovery can act on. A process started with `--upgrade`
    /// belonged to a failover or upgrade the previous manager did not finish: READY means
    /// it took the state over and only needs starting; earlier, it waits for a takeover
    /// whose state died with that manager's supervisor, so it is killed.
    ///
    /// A process stopped by a signal is frozen, and left alone. One that runs but does not
    /// answer its state query within the request deadline is hung: it would ignore SIGTERM
    /// and never exit by itself, so it is killed at once (before, the restart waited the
    /// whole exit deadline for it first) and restarted with the dead.
    async fn settle(&self, daemon: &Daemon) -> Result<Settled, ManagerError> {
        if is_stopped(daemon.pid()) {
            return Ok(Settled::Frozen);
        }
        let upgrading =
            host_facts::process::cmdline(daemon.pid()).is_some_and(|args| args.iter().any(|a| a == "--upgrade"));
        let state = match daemon.get_state().await {
            Ok(state) => state,
            // Stopped while it was asked.
            Err(_) if is_stopped(daemon.pid()) => return Ok(Settled::Frozen),
            Err(e) => {
                let why = format!("it runs but did not answer its state query at start-up ({})", error_chain(&e));
                self.stop_process(daemon, Some(Signal::SIGKILL), &why).await?;
                return Ok(Settled::Killed);
            }
        };
        if state == DaemonState::Running {
            return Ok(Settled::Running);
        }
        if !upgrading {
            // A daemon spawned just before the previous manager died may still be
            // starting; one that stays short of RUNNING is left alone.
            return Ok(match daemon.wait_until_state(DaemonState::Running).await {
                Ok(()) => Settled::Running,
                Err(_) => Settled::Stuck(daemon.last_observed_state()),
            });
        }
        if state == DaemonState::Ready {
            daemon.start().await?;
            daemon.wait_until_state(DaemonState::Running).await?;
            return Ok(Settled::Running);
        }
        let why = "it waits for a takeover whose state died with the previous manager";
        self.stop_process(daemon, Some(Signal::SIGKILL), why).await?;
        Ok(Settled::Killed)
    }

    /// Watches a daemon found frozen until its process runs again, then settles it as a
    /// live one: RUNNING, mounts reconciled with its records, supervisor state fetched,
    /// [`ManagerEvent::Resumed`]. Ends when the process dies (the monitor reports that)
    /// or the daemon is destroyed (the watch is a task of its daemon).
    fn settle_when_resumed(&self, daemon: Arc<Daemon>) {
        let (manager, id, pid) = (self.clone(), daemon.id(), daemon.pid());
        drop(self.inner.tasks.spawn(Owner::Daemon(id.clone()), async move {
            let mut gap = std::time::Duration::from_millis(10);
            while is_stopped(pid) {
                tokio::time::sleep(gap).await;
                gap = (gap * 2).min(std::time::Duration::from_millis(500));
            }
            if daemon.pid() != pid || !daemon.is_alive() || daemon.wait_until_state(DaemonState::Running).await.is_err()
            {
                return;
            }
            let _ = manager.reconcile_mounts(&daemon, Serves::AsReported).await;
            let _ = daemon.send_states().await;
            manager.emit(ManagerEvent::Resumed { id, pid });
        }));
    }

    /// Kills nydusd processes under this root that no record names: their `--apisock` is
    /// in a daemon's socket directory, and the daemon has a record of this driver naming
    /// another process, or no record but an intent (the previous manager died while
    /// spawning it or destroying it). Their sockets go too, unless the recorded daemon
    /// lives on them. A process of a daemon with neither record nor intent is left
    /// running and returned second: the store does not say it is ours to kill. A daemon
    /// whose record does not decode (`unreadable`) is not known not to own its process,
    /// so nothing of it is touched.
    async fn sweep_strays(
        &self,
        records: &[DaemonRecord],
        unreadable: &[String],
        intents: &[String],
    ) -> (Vec<(String, u32)>, Vec<(String, u32)>) {
        let socket_dir = self.config().layout.socket_dir();
        let mut killed = Vec::new();
        let mut left = Vec::new();
        for (pid, socket) in processes_with_socket_under(&socket_dir) {
            let Some(id) = socket.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if unreadable.contains(&id) {
                continue;
            }
            let record = records.iter().find(|r| r.id == id);
            let recorded = match record {
                Some(r) if r.fs_driver != self.config().fs_driver => continue,
                Some(r) => {
                    r.process_id == pid
                        && r.process_start_time.is_none_or(|t| host_facts::process::start_time(pid) == Some(t))
                }
                None if intents.contains(&id) => false,
                None => {
                    left.push((id, pid));
                    continue;
                }
            };
            if recorded {
                continue;
            }
            let Ok(pidfd) = host_facts::pidfd::PidFd::open(pid) else { continue };
            // Checked again through the pidfd: the pid may have been reused meanwhile.
            if !process_has_socket(pid, &socket) || !matches!(pidfd.send_signal(Signal::SIGKILL), Ok(true)) {
                continue;
            }
            let _ = tokio::time::timeout(self.config().timeouts.exit, pidfd.exited()).await;
            if record.is_none_or(|r| r.api_socket != socket) {
                let _ = std::fs::remove_file(&socket);
            }
            killed.push((id, pid));
        }
        (killed, left)
    }
}

/// How many live daemons are settled at once at start-up.
const SETTLE_PARALLELISM: usize = 32;

fn bad_record_key(error: &crate::store::StoreError) -> String {
    match error {
        crate::store::StoreError::BadRecord { key, .. } => key.clone(),
        _ => String::new(),
    }
}

/// Every sign of a running daemon under `socket_dir`: nydusd processes whose `--apisock`
/// is there, and socket files there that accept a connection.
pub(super) fn live_daemons_under(socket_dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = processes_with_socket_under(socket_dir)
        .into_iter()
        .map(|(pid, socket)| format!("pid {pid} serving {}", socket.display()))
        .collect();
    let dirs = std::fs::read_dir(socket_dir).into_iter().flatten().flatten();
    for entry in dirs.flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten()) {
        let path = entry.path();
        let is_socket = entry.file_type().is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t));
        if is_socket && std::os::unix::net::UnixStream::connect(&path).is_ok() {
            found.push(format!("a live API socket {}", path.display()));
        }
    }
    found
}

/// Whether process `pid` is stopped by a signal or a tracer (`/proc` state `T` or `t`).
fn is_stopped(pid: u32) -> bool {
    matches!(host_facts::process::state(pid), Some('T' | 't'))
}

/// Where [`Manager::settle`] left a live recorded daemon.
enum Settled {
    Running,
    /// Alive, short of RUNNING.
    Stuck(DaemonState),
    /// Stopped by a signal.
    Frozen,
    /// Killed, to be started afresh.
    Killed,
}

/// `(pid, --apisock value)` of every process whose API socket is under `dir`.
fn processes_with_socket_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| Some((pid, api_socket_of(pid)?)))
        .filter(|(_, socket)| socket.starts_with(dir))
        .collect()
}

fn api_socket_of(pid: u32) -> Option<PathBuf> {
    let args = host_facts::process::cmdline(pid)?;
    let at = args.iter().position(|a| a == "--apisock")?;
    args.get(at + 1).map(PathBuf::from)
}

fn process_has_socket(pid: u32, socket: &Path) -> bool {
    api_socket_of(pid).is_some_and(|s| s == socket)
}
