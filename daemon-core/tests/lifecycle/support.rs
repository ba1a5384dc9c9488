//! What every lifecycle test needs: a temporary root with the mock linked in as `nydusd`,
//! daemons that are killed when the test ends, and trials that run async bodies.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use daemon_core::daemon::command::CommandInputs;
use daemon_core::daemon::{DaemonMode, FsDriver, SpawnExtras};
use daemon_core::manager::{ManagerConfig, ManagerEvent, RecoverPolicy};
use daemon_core::rafs::Rafs;
use daemon_core::{Daemon, DaemonOptions, Layout, Timeouts};
use host_facts::{Requirement, unmet};
use libtest_mimic::{Failed, Trial};
use tokio::sync::broadcast;

/// A test's result; `?` works on any error.
pub type TestResult = Result<(), Failed>;

/// An async test as a trial, listed as ignored (with the reason printed) when the host
/// lacks one of `requirements`.
pub fn trial<F, Fut>(name: &str, requirements: &[Requirement], body: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult>,
{
    let reason = unmet(requirements);
    if let Some(reason) = &reason {
        eprintln!("skipping {name}: {reason}");
    }
    let ignored = reason.is_some();
    Trial::test(name, move || {
        if let Some(reason) = reason {
            return Err(format!("skipped: {reason}").into());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(body())
    })
    .with_ignored_flag(ignored)
}

/// Fails the test with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl Into<String>) -> TestResult {
    if condition { Ok(()) } else { Err(message.into().into()) }
}

/// A temporary snapshotter root with this binary linked in as `<root>/bin/nydusd`.
pub struct Env {
    pub root: testkit::MockRoot,
    pub layout: Layout,
    pub nydusd: PathBuf,
}

impl Env {
    pub fn new() -> Result<Self, Failed> {
        let root = testkit::MockRoot::new("lifecycle root ", &std::env::current_exe()?)?;
        let layout = Layout::new(root.path());
        std::fs::create_dir_all(layout.shared_mountpoint())?;
        let nydusd = root.nydusd().to_owned();
        Ok(Self { root, layout, nydusd })
    }

    /// A "new build" at `relative` under the root: the same mock, reporting another git
    /// commit.
    pub fn next_build(&self, relative: &str) -> Result<PathBuf, Failed> {
        Ok(self.root.next_build(relative, &"ab".repeat(20))?)
    }

    /// Short deadlines so that a failing test fails fast.
    pub fn timeouts() -> Timeouts {
        Timeouts {
            socket: Duration::from_secs(5),
            state: Duration::from_secs(5),
            request: Duration::from_secs(5),
            supervisor: Duration::from_secs(5),
            ..Timeouts::default()
        }
    }

    /// A shared fusedev daemon record with a supervisor socket.
    pub fn shared_daemon(&self, id: &str) -> Result<Daemon, Failed> {
        let options = DaemonOptions {
            id: Some(id.to_owned()),
            mode: DaemonMode::Shared,
            supervisor: true,
            ..DaemonOptions::default()
        };
        Ok(Daemon::create(&self.layout, options, Self::timeouts())?)
    }

    /// Starts `daemon`'s process (killed when its handle drops), with a journal per pid.
    pub async fn spawn(&self, daemon: &Daemon, upgrade: bool) -> Result<u32, Failed> {
        let inputs = CommandInputs { upgrade, ..CommandInputs::default() };
        let journal = self.root.path().join(format!("{}-{}.jsonl", daemon.id(), std::process::id()));
        let extras = SpawnExtras {
            args: vec!["--mock-journal".into(), journal.into(), "--mock-no-abort".into()],
            kill_on_drop: true,
            ..SpawnExtras::default()
        };
        Ok(daemon.spawn(&self.nydusd, &inputs, extras).await?)
    }
}

/// The inode and device of an open fd, to tell whether two fds share one open file.
pub fn file_identity(fd: impl std::os::fd::AsFd) -> Result<(u64, u64), Failed> {
    let stat = nix::sys::stat::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// The identities of every fd process `pid` holds.
pub fn open_files_of(pid: u32) -> Result<Vec<(u64, u64)>, Failed> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Ok(meta) = std::fs::metadata(entry?.path()) {
            use std::os::unix::fs::MetadataExt;
            out.push((meta.dev(), meta.ino()));
        }
    }
    Ok(out)
}

/// A manager over this environment's root, running the mock.
pub fn manager_config(env: &Env, policy: RecoverPolicy, kill_on_drop: bool) -> ManagerConfig {
    manager_config_at(&env.layout, policy, kill_on_drop)
}

/// A manager over the root of `layout` (made by [`Env::new`]), running the mock.
pub fn manager_config_at(layout: &Layout, policy: RecoverPolicy, kill_on_drop: bool) -> ManagerConfig {
    let root = layout.root();
    ManagerConfig {
        layout: layout.clone(),
        nydusd: root.join("bin/nydusd"),
        fs_driver: FsDriver::Fusedev,
        recover_policy: policy,
        timeouts: Env::timeouts(),
        spawn: SpawnExtras {
            args: vec!["--mock-journal".into(), root.join("journal.jsonl").into(), "--mock-no-abort".into()],
            kill_on_drop,
            ..SpawnExtras::default()
        },
        fscache_dir: None,
        per_daemon_args: Default::default(),
        exchange_observer: None,
        recovery: Default::default(),
        reply_limit: daemon_core::api::client::DEFAULT_REPLY_LIMIT,
    }
}

/// A shared fusedev daemon record under `layout` (no supervisor flag: the manager
/// attaches one under the failover policy).
pub fn shared_record_in(layout: &Layout, id: &str) -> Result<Daemon, Failed> {
    let options = DaemonOptions { id: Some(id.to_owned()), mode: DaemonMode::Shared, ..DaemonOptions::default() };
    Ok(Daemon::create(layout, options, Env::timeouts())?)
}

/// An instance of `daemon` under `layout` with a bootstrap file and a configuration file
/// in place.
pub fn instance_in(layout: &Layout, daemon: &Daemon, snapshot: &str) -> Result<Rafs, Failed> {
    let rafs = Rafs::new(&layout.snapshots_dir(), snapshot, "registry.example/image:1", FsDriver::Fusedev);
    std::fs::create_dir_all(rafs.snapshot_dir.join("fs/image"))?;
    // The mock's stand-in for a RAFS bootstrap: the mock refuses a mount whose bootstrap
    // nydusd could not read.
    std::fs::write(rafs.snapshot_dir.join("fs/image/image.boot"), br#"{"mock_tree":{}}"#)?;
    let config = daemon.record().config_file(Some(snapshot));
    std::fs::create_dir_all(config.parent().ok_or("config dir")?)?;
    std::fs::write(&config, r#"{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}}},"mode":"direct"}"#)?;
    Ok(Rafs { mountpoint: layout.shared_mountpoint().join(snapshot), ..rafs })
}

impl Env {
    /// A mount command's `source`: the mock's stand-in bootstrap, written under the root.
    pub fn stand_in(&self) -> Result<String, Failed> {
        Ok(testkit::write_stand_in(&self.root.path().join("stand-in.boot"))?)
    }

    /// A shared fusedev daemon record (no supervisor flag: the manager attaches one under
    /// the failover policy).
    pub fn shared_record(&self, id: &str) -> Result<Daemon, Failed> {
        shared_record_in(&self.layout, id)
    }

    /// An instance of `daemon` with a bootstrap file and a configuration file in place.
    pub fn instance(&self, daemon: &Daemon, snapshot: &str) -> Result<Rafs, Failed> {
        instance_in(&self.layout, daemon, snapshot)
    }

    /// The mock journal's entries (every daemon started by a test manager writes there).
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.root.path().join("journal.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

/// Waits up to 20 s (a safety net, not a goal) for a manager event matching `wanted`.
pub async fn wait_event(
    events: &mut broadcast::Receiver<ManagerEvent>,
    wanted: impl Fn(&ManagerEvent) -> bool,
) -> Result<ManagerEvent, Failed> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if wanted(&event) => return Ok(event),
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => return Err(format!("event channel: {e}").into()),
            Err(_) => return Err(format!("no matching manager event within 20 s; saw {seen:?}").into()),
        }
    }
}

/// SIGKILLs the given pids when dropped: daemons a test lets outlive their manager.
#[derive(Default)]
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
