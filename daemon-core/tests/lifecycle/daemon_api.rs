//! Daemon methods beyond the lifecycle: metrics, auth updates, and the fscache instance
//! path against a singleton mock, which runs up to the kernel boundary on hosts without
//! on-demand fscache.

use daemon_core::daemon::{DaemonMode, FsDriver, SpawnExtras};
use daemon_core::manager::{Manager, RecoverPolicy};
use daemon_core::mount::MountError;
use daemon_core::rafs::Rafs;
use daemon_core::{DaemonError, DaemonOptions, DaemonState};
use host_facts::Requirement;
use libtest_mimic::Trial;

use crate::support::{Env, TestResult, ensure, manager_config, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("daemon::metrics_wrappers_read_the_daemons_counters", &[], metrics),
        trial("daemon::registry_auth_updates_the_file_and_the_daemon", &[], auth),
        trial("daemon::fscache_instances_bind_their_blob_then_stop_at_the_kernel", &[], fscache_boundary),
        trial("daemon::clear_vestige_detaches_a_dead_daemons_mount", &[Requirement::Root], clear_vestige),
    ]
}

async fn metrics() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::None, true))?;
    let daemon = manager.add_daemon(env.shared_record("d1")?)?;
    manager.start_daemon_and_wait(&daemon).await?;
    manager.mount_shared_instance(&daemon, env.instance(&daemon, "snap1")?).await?;
    let fs = daemon.fs_metrics(Some("snap1")).await?;
    ensure(fs["id"] == "/snap1", format!("{fs}"))?;
    ensure(daemon.inflight_metrics().await?.is_none(), "idle daemon: nothing in flight (204)")?;
    let missing = daemon.cache_metrics(Some("nope")).await.err().ok_or("unknown id must fail")?;
    ensure(missing.to_string().contains("api call failed"), format!("{missing}"))?;
    let info = daemon.daemon_info().await?;
    ensure(info.state == DaemonState::Running && info.version.git_commit.len() == 40, format!("{info:?}"))
}

async fn auth() -> TestResult {
    let env = Env::new()?;
    let manager = Manager::open(manager_config(&env, RecoverPolicy::None, true))?;
    let daemon = manager.add_daemon(env.shared_record("d1")?)?;
    manager.start_daemon_and_wait(&daemon).await?;
    let rafs = env.instance(&daemon, "snap1")?;
    std::fs::write(
        daemon.record().config_file(Some("snap1")),
        r#"{"device":{"backend":{"type":"registry","config":{"host":"r.io","repo":"a","auth":"old"}}},"mode":"direct"}"#,
    )?;
    manager.mount_shared_instance(&daemon, rafs).await?;
    daemon.update_registry_auth("snap1", "bmV3OnBhc3M=").await?;
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(daemon.record().config_file(Some("snap1")))?)?;
    ensure(file["device"]["backend"]["config"]["auth"] == "bmV3OnBhc3M=", format!("{file}"))?;
    let reply = daemon.client().await?.call(hyper::Method::GET, "/api/v1/config?id=/snap1", None).await?;
    let config: serde_json::Value = serde_json::from_slice(&reply)?;
    ensure(config["registry_auth"] == "bmV3OnBhc3M=", format!("{config}"))
}

async fn fscache_boundary() -> TestResult {
    let env = Env::new()?;
    let cache = env.root.path().join("cache");
    std::fs::create_dir_all(&cache)?;
    // The mock singleton probes this file instead of /dev/cachefiles to decide start-up.
    let device = env.root.path().join("cachefiles");
    std::fs::write(&device, b"")?;
    let mut config = manager_config(&env, RecoverPolicy::None, true);
    config.fs_driver = FsDriver::Fscache;
    config.fscache_dir = Some(cache.clone());
    config.spawn = SpawnExtras {
        args: [config.spawn.args.clone(), vec!["--mock-cachefiles".into(), device.into()]].concat(),
        ..config.spawn
    };
    let manager = Manager::open(config)?;
    let options = DaemonOptions {
        id: Some("fs1".into()),
        mode: DaemonMode::Shared,
        fs_driver: FsDriver::Fscache,
        ..DaemonOptions::default()
    };
    let daemon = manager.add_daemon(daemon_core::Daemon::create(&env.layout, options, Env::timeouts())?)?;
    manager.start_daemon_and_wait(&daemon).await?;

    let mut rafs = Rafs::new(&env.layout.snapshots_dir(), "snap1", "img", FsDriver::Fscache);
    rafs.mountpoint = rafs.snapshot_dir.join("mnt");
    std::fs::create_dir_all(rafs.snapshot_dir.join("fs"))?;
    let bootstrap = rafs.snapshot_dir.join("fs/image.boot");
    std::fs::write(&bootstrap, b"rafs v6")?;
    let entry = serde_json::json!({
        "type": "bootstrap", "id": "snap1", "domain_id": "snap1",
        "config": {"id": "snap1", "backend_type": "registry", "backend_config": {"host": "r.io", "repo": "a"},
                   "cache_type": "fscache", "cache_config": {"work_dir": cache}, "metadata_path": bootstrap}
    });
    let config_file = daemon.record().config_file(Some("snap1"));
    std::fs::create_dir_all(config_file.parent().ok_or("dir")?)?;
    std::fs::write(&config_file, entry.to_string())?;

    let result = manager.mount_shared_instance(&daemon, rafs).await;
    let journal = env.journal();
    let bound = journal.iter().any(|e| e["method"] == "PUT" && e["path"] == "/api/v2/blobs" && e["status"] == 204);
    ensure(bound, "the blob was bound through the API before the mount")?;
    // The mock was given a stand-in for the device, so no daemon is bound to the kernel's:
    // without on-demand fscache the capability check stops the mount; with it, the kernel
    // does (ENOBUFS). Either way the failed mount leaves no record.
    let stopped = match Requirement::Cachefiles.check() {
        Err(_) => matches!(
            &result,
            Err(daemon_core::manager::ManagerError::Daemon(DaemonError::Mount {
                source: MountError::FscacheUnsupported { .. },
                ..
            }))
        ),
        Ok(()) => matches!(
            &result,
            Err(daemon_core::manager::ManagerError::Daemon(DaemonError::Mount {
                source: MountError::Mount { errno: nix::errno::Errno::ENOBUFS, .. },
                ..
            }))
        ),
    };
    ensure(stopped, format!("expected the mount to stop at the capability check or the kernel, got {result:?}"))?;
    ensure(manager.store().instances()?.is_empty(), "a failed mount leaves no record")
}

async fn clear_vestige() -> TestResult {
    let env = Env::new()?;
    let daemon = env.shared_daemon("d1")?;
    let mountpoint = daemon.host_mountpoint();
    // A tmpfs stands for the dead daemon's FUSE mount; a stale socket file beside it.
    nix::mount::mount(Some("tmpfs"), &mountpoint, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)?;
    let _guard = scopeguard_umount(&mountpoint);
    drop(std::os::unix::net::UnixListener::bind(daemon.api_socket())?);
    daemon.clear_vestige().await?;
    ensure(!daemon_core::mount::is_mounted(&mountpoint)?, "the mount is gone")?;
    ensure(!daemon.api_socket().exists(), "the socket file is gone")?;
    // Now a fresh start is a fresh start, not a takeover.
    env.spawn(&daemon, false).await?;
    daemon.wait_until_state(DaemonState::Running).await?;
    Ok(())
}

/// Detaches `path` on drop (a failing test must not leave a mount behind).
fn scopeguard_umount(path: &std::path::Path) -> impl Drop + '_ {
    struct Guard<'a>(&'a std::path::Path);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = daemon_core::mount::umount_lazy(self.0);
        }
    }
    Guard(path)
}
