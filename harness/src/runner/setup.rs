//! A scenario's set-up: the manager's configuration and the mock's flags, the manager
//! opened on the root, and the declared daemons with their instances' files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_core::daemon::{DaemonMode, SpawnExtras};
use daemon_core::manager::{Manager, ManagerConfig, PerDaemonArgs};
use daemon_core::rafs::Rafs;
use daemon_core::{Daemon, DaemonOptions, Timeouts};
use serde_json::json;

use super::error::RunError;
use super::target::{self, Target};
use super::{Run, image};
use crate::scenario::model::{DaemonSpec, InstanceSpec, Target as TargetName};

impl Run<'_> {
    pub(super) fn mock_journal(&self) -> PathBuf {
        target::Mock.daemon_journal(&self.root.layout)
    }

    /// What differs on this run's target.
    pub(super) fn target(&self) -> &'static dyn Target {
        match self.config.target {
            TargetName::Mock => &target::Mock,
            TargetName::Real => &target::Real,
        }
    }

    /// Deadlines for daemon waits, from the scenario's manager section.
    pub(super) fn timeouts(&self) -> Timeouts {
        let m = &self.manager_spec();
        Timeouts {
            socket: Duration::from_millis(m.socket_timeout_ms),
            state: Duration::from_millis(m.state_timeout_ms),
            request: Duration::from_millis(m.request_timeout_ms),
            supervisor: Duration::from_millis(m.supervisor_timeout_ms),
            exit: Duration::from_millis(m.exit_timeout_ms),
            ..Timeouts::default()
        }
    }

    pub(super) fn fs_driver(&self) -> daemon_core::daemon::FsDriver {
        self.manager_spec().fs_driver
    }

    /// The mock's flags: one journal, no deliberate aborts, a stand-in for
    /// `/dev/cachefiles`; per daemon, [`Run::per_daemon_flags`] and FUSE when the scenario
    /// asks.
    pub(super) fn mock_args(&self) -> (Vec<OsString>, PerDaemonArgs) {
        let mut args: Vec<OsString> = vec![];
        args.extend(["--mock-journal".into(), self.mock_journal().into(), "--mock-no-abort".into()]);
        // After the run's own arguments (`harness diff` names the real nydusd's release), so
        // that a scenario's pin wins: the mock takes the last of the flag.
        if let Some(version) = self.scenario.mock_nydusd {
            args.extend(["--mock-nydusd-version".into(), version.as_str().into()]);
        }
        // Where the kernel has erofs over fscache in on-demand mode, a singleton mock binds
        // /dev/cachefiles and serves it as nydusd does; elsewhere it probes this file instead
        // at start-up, and the kernel mount stops at the capability check.
        if host_facts::Requirement::Cachefiles.check().is_err() {
            args.extend(["--mock-cachefiles".into(), self.root.cachefiles().into()]);
        }
        let fuse: Vec<String> = self.scenario.daemons.iter().filter(|d| d.fuse).map(|d| d.id.value.clone()).collect();
        (args, self.per_daemon_flags(fuse))
    }

    /// The injector's flags (the real nydusd is named by its wrapper,
    /// [`super::target::Target::daemon_binary`]): the same journal, its sockets' directory;
    /// per daemon, [`Run::per_daemon_flags`].
    pub(super) fn injector_args(&self) -> (Vec<OsString>, PerDaemonArgs) {
        let args: Vec<OsString> = vec![
            "--inject-dir".into(),
            self.root.path().join("inject").into(),
            "--mock-journal".into(),
            self.mock_journal().into(),
        ];
        (args, self.per_daemon_flags(Vec::new()))
    }

    /// What each daemon's process gets, on either target: its control socket, which of its
    /// daemon's processes it is (counted here, from 1), its script when the scenario gives
    /// one, and `--mock-fuse` for the daemons named in `fuse`.
    fn per_daemon_flags(&self, fuse: Vec<String>) -> PerDaemonArgs {
        let scripts = self.root.path().join("scripts");
        let controls = self.root.path().join("control");
        let spawned = self.state().spawned.clone();
        PerDaemonArgs::new(move |id| {
            let process = {
                let mut counts = spawned.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(id.to_owned()).or_default();
                *n += 1;
                *n
            };
            let mut extra: Vec<OsString> = vec![
                "--mock-control".into(),
                controls.join(format!("{id}.sock")).into(),
                "--mock-process".into(),
                process.to_string().into(),
            ];
            if fuse.iter().any(|f| f == id) {
                extra.push("--mock-fuse".into());
            }
            let script = scripts.join(format!("{id}.json"));
            if script.exists() {
                extra.extend(["--mock-script".into(), script.into()]);
            }
            extra
        })
    }

    fn manager_config(&self) -> ManagerConfig {
        let spec = self.manager_spec();
        let (target_args, per_daemon) = self.target().daemon_args(self);
        let mut args = self.config.extra_args.clone();
        args.extend(target_args);
        ManagerConfig {
            layout: self.root.layout.clone(),
            nydusd: self.binary.clone(),
            fs_driver: self.fs_driver(),
            recover_policy: spec.recover_policy,
            timeouts: self.timeouts(),
            spawn: SpawnExtras {
                args,
                output: Some(self.root.layout.log_dir().join("daemons.log")),
                // Daemons outlive a killed manager; teardown kills them from the ledger.
                kill_on_drop: false,
                observer: Some({
                    let ledger = self.root.ledger.clone();
                    daemon_core::daemon::SpawnObserver::new(move |_, pid| ledger.started(pid))
                }),
                ..SpawnExtras::default()
            },
            fscache_dir: Some(self.root.cache()),
            per_daemon_args: per_daemon,
            exchange_observer: Some(self.log.exchange_observer()),
            recovery: daemon_core::manager::RecoveryRetry {
                attempts: spec.recovery_attempts.get(),
                backoff: Duration::from_millis(spec.recovery_backoff_ms),
                ..Default::default()
            },
            reply_limit: daemon_core::api::client::DEFAULT_REPLY_LIMIT,
        }
    }

    /// Opens the manager on the root's store, off the async workers: opening a store can
    /// block (a FIFO where the database should be), and the deadline must still fire.
    pub(crate) async fn open_manager(&self) -> Result<(), RunError> {
        let config = self.manager_config();
        let root_dir = self.root.dir.clone();
        // The root goes with the result: after the manager (the store's files) when this
        // wait is abandoned and the result dropped unread.
        let (manager, _root_dir) =
            tokio::task::spawn_blocking(move || (Manager::open(config), root_dir)).await.map_err(RunError::Opening)?;
        let manager = manager?;
        self.log.follow(&manager);
        self.state().manager = Some(manager);
        Ok(())
    }

    pub(super) async fn write_instance_files(&self, daemon: &Daemon, spec: &InstanceSpec) -> Result<Rafs, RunError> {
        let rafs = Rafs::new(
            &self.root.layout.snapshots_dir(),
            &spec.snapshot.value,
            "registry.example/scenario:1",
            daemon.record().fs_driver,
        );
        let boot = rafs.snapshot_dir.join("fs/image/image.boot");
        let dir = boot.parent().expect("has a parent");
        std::fs::create_dir_all(dir).map_err(RunError::io("create", dir))?;
        let fscache = daemon.record().fs_driver == daemon_core::daemon::FsDriver::Fscache;
        let fsid = daemon_core::mount::fscache_id(&spec.snapshot.value);
        // The blob-cache entry the snapshotter binds for an fscache instance: the bootstrap
        // under its fsid, in its own domain (named like the fsid, which is what the kernel
        // asks for when the mount gives no domain_id) or the scenario's shared one.
        let fscache_entry = |backend_dir: &Path| {
            let domain = spec.domain.as_ref().map_or(fsid.as_str(), |d| d.value.as_str());
            json!({
                "type": "bootstrap", "id": fsid, "domain_id": domain,
                "config": {"id": fsid, "backend_type": "localfs", "backend_config": {"dir": backend_dir},
                           "cache_type": "fscache", "cache_config": {"work_dir": self.root.cache()},
                           "metadata_path": boot}
            })
            .to_string()
        };
        if self.target().builds_images() {
            let images = image::ImageStore::under(self.root.path());
            let source = self.root.path().join("trees").join(&spec.snapshot.value);
            images.build(&image::nydus_image_for(&self.config.nydusd), &spec.tree, &source, &boot).await?;
            let config = spec
                .config
                .clone()
                .unwrap_or_else(|| if fscache { fscache_entry(&images.blobs) } else { images.config() });
            return self.write_instance_config(daemon, spec, rafs, config);
        }
        // The mock serves the instance's files from this JSON stand-in for a RAFS bootstrap.
        let files: serde_json::Map<String, serde_json::Value> = spec
            .tree
            .files()
            .map(|(path, file)| {
                let value = match file {
                    crate::scenario::tree::FileSpec::Text(t) => serde_json::Value::from(t.as_str()),
                    crate::scenario::tree::FileSpec::Sized { size } => json!({ "size": size.get() }),
                };
                (path.to_owned(), value)
            })
            .collect();
        std::fs::write(&boot, json!({ "mock_tree": files }).to_string()).map_err(RunError::io("write", &boot))?;
        let config = spec.config.clone().unwrap_or_else(|| {
            if fscache {
                // The mock builds the erofs image it serves from the stand-in.
                fscache_entry(Path::new("/var/lib/blobs"))
            } else {
                // What the real target uses too, so that differential runs compare like with like.
                image::ImageStore::under(self.root.path()).config()
            }
        });
        self.write_instance_config(daemon, spec, rafs, config)
    }

    /// Writes an instance's configuration (with the scenario's padding) where its daemon
    /// reads it, and gives the instance its mountpoint.
    fn write_instance_config(
        &self,
        daemon: &Daemon,
        spec: &InstanceSpec,
        rafs: Rafs,
        mut config: String,
    ) -> Result<Rafs, RunError> {
        let fscache = daemon.record().fs_driver == daemon_core::daemon::FsDriver::Fscache;
        if spec.padding.get() > 0
            && let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(&config)
        {
            map.insert("padding".into(), serde_json::Value::String("x".repeat(spec.padding.as_usize())));
            config = serde_json::Value::Object(map).to_string();
        }
        let file = daemon.record().config_file(Some(&spec.snapshot.value));
        let dir = file.parent().expect("has a parent");
        std::fs::create_dir_all(dir).map_err(RunError::io("create", dir))?;
        std::fs::write(&file, &config).map_err(RunError::io("write", &file))?;
        let mountpoint = if fscache {
            rafs.snapshot_dir.join("mnt")
        } else if daemon.record().is_shared() {
            daemon.host_mountpoint().join(&spec.snapshot.value)
        } else {
            // A dedicated daemon's instance is its host mount; it also gets the config.
            let file = daemon.record().config_file(None);
            std::fs::write(&file, &config).map_err(RunError::io("write", &file))?;
            daemon.host_mountpoint()
        };
        Ok(Rafs { mountpoint, ..rafs })
    }

    pub(crate) async fn instance(&self, daemon: &Daemon, spec_daemon: &str, snapshot: &str) -> Result<Rafs, RunError> {
        let spec = self
            .scenario
            .daemons
            .iter()
            .find(|d| d.id.value == spec_daemon)
            .and_then(|d| d.instances.iter().find(|i| i.snapshot.value == snapshot))
            .ok_or_else(|| RunError::NoInstance { daemon: spec_daemon.to_owned(), snapshot: snapshot.to_owned() })?;
        self.write_instance_files(daemon, spec).await
    }

    pub(super) async fn create_daemon(&mut self, spec: &DaemonSpec) -> Result<(), RunError> {
        let mode = spec.mode;
        let options = DaemonOptions {
            id: Some(spec.id.value.clone()),
            mode,
            fs_driver: self.fs_driver(),
            thread_num: spec.thread_num,
            supervisor: spec.supervisor,
            failover_policy: spec.failover_policy,
            ..Default::default()
        };
        let daemon = Daemon::create(&self.root.layout, options, self.timeouts())?;
        let mountpoint = daemon.host_mountpoint();
        std::fs::create_dir_all(&mountpoint).map_err(RunError::io("create", &mountpoint))?;
        if spec.supervisor {
            let dir = self.root.layout.supervisor_dir();
            std::fs::create_dir_all(&dir).map_err(RunError::io("create", &dir))?;
        }
        if let Some(script) = &spec.script {
            self.write_script(&spec.id.value, script)?;
            self.scripts.set(&spec.id.value, script.clone(), true);
        }
        if let Some(file) = &spec.script_file {
            // Copied, not linked: a `script` step later writes this file, and must never
            // write through a link into the scenario's directory.
            let dir = self.scenario_path.parent().unwrap_or(Path::new("."));
            let source = crate::scenario::paths::join_inside(dir, &file.value).map_err(RunError::Outside)?;
            let copy = self.root.script_file(&spec.id.value);
            std::fs::copy(&source, &copy).map_err(RunError::io("copy the script file to", &copy))?;
            // One the mock cannot read fails the daemon's start, with the mock's own words.
            if let Ok(text) = std::fs::read_to_string(&copy)
                && let Ok(script) = mock_nydusd::script::Script::parse(&text, &file.value)
            {
                self.scripts.set(&spec.id.value, script, false);
            }
        }
        let manager = self.manager()?;
        let daemon = manager.add_daemon(daemon)?;
        if mode == DaemonMode::Dedicated && self.fs_driver() == daemon_core::daemon::FsDriver::Fusedev {
            // nydusd mounts a dedicated daemon's instance from its command line, so the
            // instance must be known before the first start; one is made up if none is given.
            let default = InstanceSpec {
                snapshot: spec.id.clone(),
                config: None,
                domain: None,
                padding: Default::default(),
                tree: Default::default(),
            };
            let first = spec.instances.first().unwrap_or(&default);
            let rafs = self.write_instance_files(&daemon, first).await?;
            manager.add_rafs_instance(&daemon, rafs)?;
        }
        Ok(())
    }

    pub(crate) fn write_script(&self, id: &str, script: &mock_nydusd::script::Script) -> Result<(), RunError> {
        let file = self.root.script_file(id);
        let text = serde_json::to_string_pretty(script).expect("a script is plain data");
        std::fs::write(&file, text).map_err(RunError::io("write", &file))
    }
}
