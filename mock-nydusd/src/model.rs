//! The daemon as its API shows it: state machine, mounted instances, held fd, log level.
//! Requests arrive here one at a time (the server serialises them, as nydusd does).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nydusd_api::State;
use nydusd_api::{BuildTimeInfo, DaemonInfo, MountRequest};
use serde_json::{Value, json};

use crate::blob_cache::{BlobCache, BlobCacheEntry};
use crate::fsm::{Event, FireError, Machine};
use crate::nydusd_error::NydusdError;
use crate::http::Response;
use crate::instance::InstanceConfig;
use crate::metrics::CounterSets;
use crate::routes::{Route, error_wrapper};
use crate::runtime_config::{RuntimeConfig, UpdateError};
use crate::upgrade::{self, SavedMount, SavedState};

/// FUSE daemon or fscache `singleton`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `fuse` subcommand (or none).
    Fuse,
    /// `singleton` subcommand.
    Singleton,
}

/// Fixed facts from the command line.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// The nydusd release the mock behaves as.
    pub version: crate::version::NydusdVersion,
    /// Report `backend_collection` in a random order (`--mock-shuffle-maps`).
    pub shuffle_maps: bool,
    /// `--id`.
    pub id: Option<String>,
    /// `--supervisor`.
    pub supervisor: Option<PathBuf>,
    /// Daemon mode.
    pub mode: Mode,
    /// Reported build info.
    pub build: BuildTimeInfo,
    /// Abort where real nydusd aborts (FUSE sendfd without `--supervisor`, GET blobs).
    pub abort_like_nydusd: bool,
    /// Singleton `--fscache` work directory (blob-file culling needs it).
    pub fscache_dir: Option<PathBuf>,
    /// Serve a real FUSE session (`--mock-fuse`).
    pub fuse: Option<crate::fuse::FuseConfig>,
    /// Where a bound or taken-over `/dev/cachefiles` fd goes to be served (singleton mode on
    /// a kernel with on-demand fscache).
    pub fscache_service: Option<tokio::sync::mpsc::UnboundedSender<OwnedFd>>,
}

/// What the server does after writing a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// Shut down gracefully (exit API).
    Exit,
    /// Abort the process without writing the reply, where nydusd panics.
    Abort,
}

/// A reply plus what follows it.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP reply.
    pub response: Response,
    /// What happens next.
    pub after: After,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self { response, after: After::Continue }
    }
}

/// One `backend_collection` entry, fields in nydusd's order.
#[derive(serde::Serialize)]
struct BackendDescriptor<'a> {
    backend_type: &'static str,
    mountpoint: &'a str,
    mounted_time: &'a str,
    config: Value,
}

#[derive(Debug, Clone)]
struct Mounted {
    cmd: MountRequest,
    mounted_time: String,
}

/// The daemon model.
#[derive(Debug)]
pub struct Model {
    options: ModelOptions,
    machine: Machine,
    mounts: BTreeMap<String, Mounted>,
    /// The fd nydusd would hand to its successor: the FUSE session fd (a memfd stands in
    /// while the mock has no real FUSE session) or one received by takeover.
    session_fd: Option<OwnedFd>,
    /// A 2.2 takeover happened: READY with no FUSE session to start.
    stub_taken_over: bool,
    log_level: String,
    counters: CounterSets,
    /// Blob-cache sets of bound fscache blobs the kernel has not opened yet: work dir by id.
    unopened_blobcaches: HashMap<String, String>,
    runtime_config: RuntimeConfig,
    blobs: BlobCache,
    fuse: Option<crate::fuse::FuseSession>,
}

/// A different order each time (a hash map's), from the clock and the pid: clients must
/// cope with any order, so any source of variation will do.
fn shuffle<T>(items: &mut [T]) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let mut state = (u64::from(nanos) << 20 ^ u64::from(std::process::id())) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

const CLOSED_CHANNEL: &str = "failed to send message to channel, sending on a closed channel";

impl Model {
    /// A model in INIT with nothing mounted.
    pub fn new(options: ModelOptions, log_level: String) -> Self {
        Self {
            options,
            machine: Machine::new(),
            mounts: BTreeMap::new(),
            session_fd: None,
            stub_taken_over: false,
            log_level,
            counters: CounterSets::default(),
            unopened_blobcaches: HashMap::new(),
            runtime_config: RuntimeConfig::default(),
            blobs: BlobCache::default(),
            fuse: None,
        }
    }

    /// The reported state.
    pub fn state(&self) -> State {
        self.machine.reported()
    }

    /// Moves to `state` as a script demands; the internal state machine follows.
    pub fn force_state(&mut self, state: State) {
        self.machine.force(state);
    }

    /// The state machine as it is, to put back after a scripted hold.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Puts back a state machine saved before a scripted hold.
    pub fn restore_machine(&mut self, machine: Machine) {
        self.machine = machine;
    }

    /// Normal start-up: optional bootstrap instance at `/`, a session, Mount, Start.
    pub fn start_normally(&mut self, bootstrap: Option<MountRequest>) -> Result<(), NydusdError> {
        if let Some(cmd) = bootstrap {
            let blob_ids = blob_ids_of(&cmd);
            self.insert_mount("/".to_owned(), cmd, blob_ids);
        }
        match (self.options.mode, &self.options.fuse) {
            (Mode::Fuse, Some(config)) => self.fuse = Some(crate::fuse::FuseSession::mount(config, self.fuse_tree())?),
            (Mode::Fuse, None) => self.session_fd = Some(placeholder_session_fd().map_err(|e| NydusdError::debug(&e))?),
            _ => {}
        }
        self.machine.fire(Event::Mount, || Ok(())).map_err(|e| NydusdError::debug(&e))?;
        self.machine.fire(Event::Start, || Ok(())).map_err(|e| NydusdError::debug(&e))
    }

    /// SIGTERM/SIGINT: the stop events for the current state. Returns whether the FUSE
    /// mount would be unmounted (RUNNING or READY), which the caller reports.
    pub fn stop(&mut self) -> bool {
        let unmounts = matches!(self.state(), State::Running | State::Ready);
        for event in self.machine.stop_events() {
            let _ = self.machine.fire(*event, || Ok(()));
        }
        if let (true, Some(session)) = (unmounts, &self.fuse) {
            session.unmount();
        }
        unmounts
    }

    /// The tree a FUSE session serves: every mounted instance at its in-FUSE path.
    fn fuse_tree(&self) -> crate::fuse::tree::Tree {
        crate::fuse::tree::Tree::build(self.mounts.iter().map(|(mp, m)| (mp.as_str(), m.cmd.source.as_str())))
    }

    fn refresh_fuse_tree(&self) {
        if let Some(session) = &self.fuse {
            session.set_tree(self.fuse_tree());
        }
    }

    /// Handles one routed request.
    pub fn handle(&mut self, route: Route) -> Reply {
        let wrapper = error_wrapper(&route);
        match route {
            Route::UnknownPath => Response::error(404, "NoRoute").into(),
            Route::BadRequest => Response::error(400, "BadRequest").into(),
            Route::MissingMountpoint => {
                Response::error(400, r#"QueryString("'mountpoint' should be specified in query string")"#).into()
            }
            Route::DaemonInfo { v1 } => {
                Response::json(200, serde_json::to_vec(&self.info(v1)).expect("serialisable")).into()
            }
            Route::Configure(body) => self.configure(&body).into(),
            Route::Events => Response::json(
                200,
                json!({"max_errors":500,"total_errors":0,"max_size":51200,"total_size":0,"errors":[]}).to_string(),
            )
            .into(),
            Route::Start if self.stub_taken_over && self.state() == State::Ready => {
                // The FSM moves to Running before the action fails, as nydusd's does; the
                // reported state stays READY.
                let failed = || Err(NydusdError::words("failed to create FUSE server".to_owned()));
                let _ = self.machine.fire(Event::Start, failed);
                Response::error(
                    500,
                    r#"Configure(DaemonAbnormal(Other("failed to start service, failed to create FUSE server, ")))"#,
                )
                .into()
            }
            Route::Start => self.fire_simple(Event::Start, wrapper).into(),
            Route::Takeover => self.takeover().into(),
            Route::SendFd => self.send_fd(),
            Route::Exit => {
                // The events follow the reported state, which a failed start leaves at READY
                // while the FSM already moved to Running: its Exit is then unexpected, the
                // reply is that error and the daemon stays (seen on nydusd 2.2 by the
                // snapshotter's upgrade sequence, `harness/tests/go_client.rs`).
                for event in self.machine.exit_events() {
                    if let Err(e @ crate::fsm::FireError::Unexpected(_)) = self.machine.fire(*event, || Ok(())) {
                        return fire_error(wrapper, e).into();
                    }
                }
                Reply { response: Response::no_content(), after: After::Exit }
            }
            Route::Mount { mountpoint, body } => self.mount(mountpoint, &body).into(),
            Route::Remount { mountpoint, body } => self.remount(mountpoint, &body).into(),
            Route::Umount { mountpoint } => self.umount(&mountpoint).into(),
            Route::BackendInfoWithoutMountpoint => {
                Response::error(400, r#"QueryString("'mountpoint' should be specified in query string")"#).into()
            }
            Route::BackendInfo { mountpoint } => self.backend_info(&mountpoint).into(),
            Route::Metrics { kind, id, latest } => match self.counters.export(kind, id.as_deref(), latest) {
                Ok(body) => Response::json(200, body.to_string()).into(),
                Err(_) => Response::error(404, &format!("{wrapper}(Metrics(Stats(NoCounter)))")).into(),
            },
            Route::Inflight => match self.options.mode {
                // No FUSE request is ever in flight in the mock.
                Mode::Fuse => Response::no_content().into(),
                Mode::Singleton => unsupported(wrapper).into(),
            },
            Route::GetConfig { .. } | Route::PutConfig { .. } if !self.options.version.has_config_route() => {
                Response::error(404, "NoRoute").into()
            }
            Route::GetConfig { id } => Response::json(200, self.runtime_config.get(id.as_deref()).to_string()).into(),
            Route::PutConfig { id, body } => match self.runtime_config.update(id.as_deref(), &body) {
                Ok(()) => Response::no_content().into(),
                Err(UpdateError::Parse(text)) => Response::error(400, &format!("ParseBody({text})")).into(),
                Err(UpdateError::UnknownKey(_)) => Response::error(500, "Configure(ResponsePayloadType)").into(),
            },
            Route::GetBlobs => {
                if self.options.abort_like_nydusd {
                    // nydusd reaches a `todo!()` here; its release build aborts.
                    return Reply { response: Response::no_content(), after: After::Abort };
                }
                Response::error(500, "GetBlobObjects(ResponseRecv(RecvError))").into()
            }
            Route::CreateBlob(body) => self.create_blob(&body).into(),
            Route::DeleteBlobObject { domain_id, blob_id } => match self.options.mode {
                Mode::Fuse => unsupported(wrapper).into(),
                Mode::Singleton => match self.blobs.remove(&domain_id, blob_id.as_deref()) {
                    Ok(()) => Response::no_content().into(),
                    Err(e) => other_error(wrapper, &e.0).into(),
                },
            },
            Route::DeleteBlobFile { .. } => match (self.options.mode, &self.options.fscache_dir) {
                // The FUSE daemon's default implementation does nothing; culling an fscache
                // file the mock never wrote succeeds trivially.
                (Mode::Fuse, _) | (Mode::Singleton, Some(_)) => Response::no_content().into(),
                (Mode::Singleton, None) => unsupported(wrapper).into(),
            },
        }
    }

    fn backend_info(&self, mountpoint: &str) -> Response {
        const WRAPPER: &str = "FsBackendInfo";
        if self.options.mode == Mode::Singleton {
            return unsupported(WRAPPER);
        }
        let Some(mounted) = self.mounts.get(mountpoint) else {
            return Response::error(
                500,
                r#"FsBackendInfo(Metrics(Daemon(Other("object or filesystem doesn't exist"))))"#,
            );
        };
        if mounted.cmd.fs_type != "rafs" {
            return Response::error(
                500,
                r#"FsBackendInfo(Metrics(Daemon(Other("filesystem type mismatch, expect RAFS"))))"#,
            );
        }
        // The super-block of a small RAFS v6 image as real nydusd 2.2 reported it
        // (`real-nydusd-2.2.md`); the mock has no bootstrap to read.
        Response::json(
            200,
            json!({
                "magic": 3774210530u32, "version": 1536, "sb_size": 0, "root_inode": 0, "chunk_size": 1048576,
                "inodes_count": 9, "flags": {"bits": 148}, "inode_table_entries": 0, "inode_table_offset": 0,
                "blob_table_size": 256, "blob_table_offset": 4096, "extended_blob_table_offset": 0,
                "extended_blob_table_entries": 0, "prefetch_table_offset": 0, "prefetch_table_entries": 0,
                "attr_timeout": {"secs": 4294967296u64, "nanos": 0}, "entry_timeout": {"secs": 4294967296u64, "nanos": 0},
                "is_chunk_dict": false, "meta_blkaddr": 2, "root_nid": 128, "chunk_table_offset": 16384,
                "chunk_table_size": 320
            })
            .to_string(),
        )
    }

    fn create_blob(&mut self, body: &[u8]) -> Response {
        const WRAPPER: &str = "CreateBlobObject";
        let entry: BlobCacheEntry = match crate::blob_cache::parse_entry(body) {
            Ok(entry) => entry,
            Err(e) => return Response::error(400, &format!("ParseBody({e:?})")),
        };
        let Some(config) = entry.validate() else {
            return Response::error(400, "BadRequest");
        };
        if self.options.mode == Mode::Fuse {
            return unsupported(WRAPPER);
        }
        let backend_config = InstanceConfig {
            backend_type: entry
                .config
                .as_ref()
                .and_then(|c| c.get("backend_type"))
                .or_else(|| entry.config_v2.as_ref().and_then(|c| c.pointer("/backend/type")))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .replace("s3", "oss"),
            backend: entry.config.clone().or_else(|| entry.config_v2.clone()).unwrap_or(Value::Null),
            ..InstanceConfig::default()
        };
        match self.blobs.create(entry, &config) {
            Ok(()) => {
                // fscache blobs register their backend counters under "/".
                self.counters.register_backend("/", &backend_config);
                // nydusd creates the blob's cache manager, and with it the counters, when
                // the kernel first opens the blob (`blob_opened`), not when it is bound:
                // until then GetCacheMetrics answers 404.
                if let Some(work_dir) = &config.work_dir {
                    self.unopened_blobcaches.insert(config.id.clone(), work_dir.clone());
                }
                Response::no_content()
            }
            Err(e) => other_error(WRAPPER, &e.0),
        }
    }

    fn info(&self, v1: bool) -> DaemonInfo {
        let backend_collection = (v1 && self.options.mode == Mode::Fuse).then(|| {
            self.mounts
                .iter()
                .map(|(mp, m)| {
                    let passthrough = m.cmd.fs_type != "rafs";
                    let config: Value = if passthrough {
                        Value::Null
                    } else {
                        serde_json::from_str(&m.cmd.config)
                            .map(|c| crate::config_v2::reported(&c, self.options.version))
                            .unwrap_or(Value::Null)
                    };
                    let entry = BackendDescriptor {
                        backend_type: if passthrough { "PassthroughFs" } else { "Rafs" },
                        mountpoint: mp,
                        mounted_time: &m.mounted_time,
                        config,
                    };
                    (mp.clone(), serde_json::to_value(entry).expect("serialisable"))
                })
                .collect::<Vec<_>>()
        });
        let backend_collection = backend_collection.map(|mut entries| {
            if self.options.shuffle_maps {
                shuffle(&mut entries);
            }
            entries.into_iter().collect()
        });
        DaemonInfo {
            version: self.options.build.clone(),
            id: self.options.id.clone(),
            supervisor: self.options.supervisor.as_ref().map(|p| p.display().to_string()),
            state: self.state(),
            backend_collection,
        }
    }

    fn configure(&mut self, body: &[u8]) -> Response {
        #[derive(serde::Deserialize)]
        struct DaemonConf {
            log_level: String,
        }
        match serde_json::from_slice::<DaemonConf>(body) {
            Err(e) => Response::error(400, &format!("ParseBody({e:?})")),
            Ok(conf) => {
                let level = conf.log_level.to_ascii_lowercase();
                if ["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                    self.log_level = level;
                    Response::no_content()
                } else {
                    Response::error(500, "Configure(ResponsePayloadType)")
                }
            }
        }
    }

    fn fire_simple(&mut self, event: Event, wrapper: &str) -> Response {
        match self.machine.fire(event, || Ok(())) {
            Ok(()) => Response::no_content(),
            Err(e) => fire_error(wrapper, e),
        }
    }

    fn takeover(&mut self) -> Response {
        if !self.options.version.hands_over() {
            // 2.2: READY without restoring anything or receiving an fd; the start that
            // follows cannot create a FUSE server.
            let outcome = self.machine.fire(Event::Takeover, || Ok(()));
            return match outcome {
                Ok(()) => {
                    self.stub_taken_over = true;
                    Response::no_content()
                }
                Err(e) => fire_error("Upgrade", e),
            };
        }
        let supervisor = self.options.supervisor.clone();
        let mut restored = None;
        let outcome = self.machine.fire(Event::Takeover, || {
            let Some(path) = supervisor else {
                return Err(NydusdError::words(r#"UpgradeManager("MissingSupervisorPath")"#));
            };
            let upgrade_manager = |e: &dyn std::fmt::Display| NydusdError::words(format!("UpgradeManager({:?})", e.to_string()));
            let (blob, fd) = upgrade::pull(&path).map_err(|e| upgrade_manager(&e))?;
            let state = upgrade::decode(&blob).map_err(|e| upgrade_manager(&e))?;
            restored = Some((state, fd));
            Ok(())
        });
        match outcome {
            Ok(()) => {
                let (state, fd) = restored.expect("a successful takeover restored a state");
                for saved in state.mounts {
                    let blob_ids = blob_ids_of(&saved.cmd);
                    self.insert_mount(saved.mountpoint, saved.cmd, blob_ids);
                }
                for entry in state.blobs {
                    self.blobs.restore(entry);
                }
                match &self.options.fuse {
                    // The kernel connection of the predecessor: serve it, no mount, no INIT.
                    Some(config) => self.fuse = Some(crate::fuse::FuseSession::adopt(config, fd, self.fuse_tree())),
                    // The predecessor's bound /dev/cachefiles: `restore` makes the kernel send
                    // again what it left unanswered, and this daemon serves it from now on.
                    None if self.options.fscache_service.is_some() && crate::fscache::is_device_fd(&fd) => {
                        if let Err(e) = crate::fscache::restore(&fd).map_err(|e| NydusdError::debug(&e))
                            .and_then(|()| self.hold_cachefiles(fd))
                        {
                            return fire_error("Upgrade", FireError::Action(e));
                        }
                    }
                    None => self.session_fd = Some(fd),
                }
                Response::no_content()
            }
            Err(e) => fire_error("Upgrade", e),
        }
    }

    /// The bootstrap bound as (`domain_id`, `blob_id`), for the fscache service.
    pub fn bound_metadata(&self, domain_id: &str, blob_id: &str) -> Option<std::path::PathBuf> {
        self.blobs.metadata_of(domain_id, blob_id)
    }

    /// The kernel opened a bound blob: its blob-cache counters appear now.
    pub fn blob_opened(&mut self, blob_id: &str) {
        if let Some(work_dir) = self.unopened_blobcaches.remove(blob_id) {
            self.counters.register_blobcache(blob_id, &work_dir);
        }
    }

    /// Holds the bound `/dev/cachefiles` fd: a successor receives a dup of it (sendfd), and
    /// the fscache service answers the kernel on another.
    pub fn hold_cachefiles(&mut self, device: OwnedFd) -> Result<(), NydusdError> {
        let serving = device.try_clone().map_err(|e| NydusdError::debug(&e))?;
        if let Some(service) = &self.options.fscache_service {
            let _ = service.send(serving);
        }
        self.session_fd = Some(device);
        Ok(())
    }

    /// The FUSE session, when the mock serves a real one.
    pub fn fuse_session(&self) -> Option<&crate::fuse::FuseSession> {
        self.fuse.as_ref()
    }

    fn send_fd(&mut self) -> Reply {
        if !self.options.version.hands_over() {
            // 2.2 saves nothing and never connects to the supervisor.
            return match self.options.mode {
                Mode::Fuse => Response::no_content().into(),
                Mode::Singleton => Response::error(501, "Upgrade(DaemonAbnormal(Unsupported))").into(),
            };
        }
        if self.options.mode == Mode::Fuse && self.session_fd.is_none() && self.fuse.is_none() {
            return Response::error(503, "Upgrade(DaemonAbnormal(NotReady))").into();
        }
        let Some(supervisor) = self.options.supervisor.clone() else {
            if self.options.mode == Mode::Singleton {
                return Response::no_content().into();
            }
            if self.options.abort_like_nydusd {
                // nydusd unwraps a missing upgrade manager here; release builds abort.
                crate::death::abort();
            }
            return Response::error(500, r#"Upgrade(DaemonAbnormal(UpgradeManager("MissingSupervisorPath")))"#).into();
        };
        let fd = self.fuse.as_ref().map(|s| s.fd()).or(self.session_fd.as_ref().map(|f| f.as_fd()));
        let Some(fd) = fd else {
            return Response::error(
                500,
                r#"Upgrade(DaemonAbnormal(UpgradeManager("StorageBackendError(NoEnoughFds)")))"#,
            )
            .into();
        };
        let state = self.saved_state();
        if let Some(message) = crate::version::state_too_large(state.strings()) {
            return Response::error(500, &message).into();
        }
        let blob = upgrade::encode(&state);
        match upgrade::push(&supervisor, &blob, fd) {
            Ok(()) => Response::no_content().into(),
            Err(e) => {
                Response::error(500, &format!("Upgrade(DaemonAbnormal(UpgradeManager({:?})))", e.to_string())).into()
            }
        }
    }

    /// The state a successor restores.
    pub fn saved_state(&self) -> SavedState {
        SavedState {
            mounts: self
                .mounts
                .iter()
                .map(|(mp, m)| SavedMount { mountpoint: mp.clone(), cmd: m.cmd.clone() })
                .collect(),
            blobs: self.blobs.entries().cloned().collect(),
        }
    }

    fn parse_mount(body: &[u8]) -> Result<MountRequest, Response> {
        let cmd: MountRequest =
            serde_json::from_slice(body).map_err(|e| Response::error(400, &format!("ParseBody({e:?})")))?;
        if !["rafs", "passthrough", "passthroughfs", "passthrough_fs"].contains(&cmd.fs_type.as_str()) {
            return Err(Response::error(
                500,
                &format!(
                    "Mount(MountFilesystem(Other(\"invalid argument `only 'rafs' and 'passthrough_fs' are supported, but {} was specified`\")))",
                    cmd.fs_type
                ),
            ));
        }
        Ok(cmd)
    }

    fn mount(&mut self, mountpoint: String, body: &[u8]) -> Response {
        let cmd = match Self::parse_mount(body) {
            Ok(cmd) => cmd,
            Err(response) => return response,
        };
        if self.options.mode == Mode::Singleton {
            return Response::error(501, "Mount(DaemonAbnormal(Unsupported))");
        }
        if self.mounts.contains_key(&mountpoint) {
            return Response::error(500, r#"Mount(MountFilesystem(Other("object or filesystem already exists")))"#);
        }
        let blob_ids = match self.check_instance(&cmd) {
            Ok(blob_ids) => blob_ids,
            Err(response) => return response,
        };
        self.insert_mount(mountpoint, cmd, blob_ids);
        Response::no_content()
    }

    /// What nydusd checks of a new instance before it answers (`rafs_config`, `bootstrap`):
    /// the prefetch list, the configuration, the bootstrap's superblock; the blob ids its
    /// cache will hold.
    fn check_instance(&self, cmd: &MountRequest) -> Result<Vec<String>, Response> {
        let version = self.options.version;
        if cmd.prefetch_files.iter().flatten().any(|path| !path.starts_with('/')) {
            return Err(mount_refused("invalid prefetch file list"));
        }
        if cmd.fs_type != "rafs" {
            return Ok(Vec::new());
        }
        let accepted = crate::rafs_config::check(&cmd.config, version)
            .map_err(|refusal| rafs_refused(&refusal.load_config_text(version)))?;
        match crate::bootstrap::read(std::path::Path::new(&cmd.source)) {
            Ok(crate::bootstrap::Bootstrap::Rafs { version: rafs, blob_ids }) => {
                crate::device::check(&accepted, rafs, &blob_ids).map_err(|e| rafs_refused(&e.text(version)))?;
                Ok(blob_ids)
            }
            // The stand-in names no blobs: no device to refuse.
            Ok(crate::bootstrap::Bootstrap::StandIn) => Ok(Vec::new()),
            Err(e) => Err(rafs_refused(&e.fill_superblock_text(version))),
        }
    }

    fn remount(&mut self, mountpoint: String, body: &[u8]) -> Response {
        let cmd = match Self::parse_mount(body) {
            Ok(cmd) => cmd,
            Err(response) => return response,
        };
        if self.options.mode == Mode::Singleton {
            return Response::error(501, "Mount(DaemonAbnormal(Unsupported))");
        }
        if !self.mounts.contains_key(&mountpoint) {
            return Response::error(500, r#"Mount(MountFilesystem(Other("object or filesystem doesn't exist")))"#);
        }
        // A remount opens the bootstrap before it reads the configuration.
        if cmd.fs_type == "rafs" {
            let version = self.options.version;
            if let Err(e) = crate::bootstrap::open(std::path::Path::new(&cmd.source)) {
                return rafs_refused(&e.read_metadata_text(version, &cmd.source));
            }
            if let Err(refusal) = crate::rafs_config::check(&cmd.config, version) {
                return rafs_refused(&refusal.load_config_text(version));
            }
        }
        let blob_ids = blob_ids_of(&cmd);
        self.insert_mount(mountpoint, cmd, blob_ids);
        Response::no_content()
    }

    fn umount(&mut self, mountpoint: &str) -> Response {
        if self.options.mode == Mode::Singleton {
            return Response::error(501, "Mount(DaemonAbnormal(Unsupported))");
        }
        match self.mounts.remove(mountpoint) {
            Some(_) => {
                self.counters.release_instance(mountpoint);
                self.refresh_fuse_tree();
                Response::no_content()
            }
            None => Response::error(500, r#"Mount(MountFilesystem(Other("object or filesystem doesn't exist")))"#),
        }
    }

    fn insert_mount(&mut self, mountpoint: String, cmd: MountRequest, blob_ids: Vec<String>) {
        self.insert_mount_record(mountpoint, cmd, blob_ids);
        self.refresh_fuse_tree();
    }

    fn insert_mount_record(&mut self, mountpoint: String, cmd: MountRequest, blob_ids: Vec<String>) {
        if cmd.fs_type == "rafs" {
            let config = InstanceConfig::parse(&cmd.config);
            self.counters.register_instance(&mountpoint, &config, &blob_ids, self.options.version);
            // A registry backend registers its auth under its id when it starts, and any
            // backend its non-empty proxy URL (§2.2, `/api/v1/config`).
            if let Some(auth) = &config.registry_auth {
                self.runtime_config.set(&mountpoint, "registry_auth", auth);
            }
            if let Some(url) = &config.proxy_url {
                self.runtime_config.set(&mountpoint, "proxy_url", url);
            }
        }
        self.mounts.insert(mountpoint, Mounted { cmd, mounted_time: crate::time::human_utc_now() });
    }
}

/// nydusd's 500 for a mount it refuses: `text` Debug-quoted in its error wrapper.
fn mount_refused(text: &str) -> Response {
    Response::error(500, &format!("Mount(MountFilesystem(Other({text:?})))"))
}

/// A refusal from the RAFS layer, which nydusd prefixes.
fn rafs_refused(text: &str) -> Response {
    mount_refused(&format!("RAFS failed to handle request, {text}"))
}

/// The blobs of an instance mounted without the API's checks (at start-up, or restored
/// after a takeover): whatever its bootstrap's table names.
fn blob_ids_of(cmd: &MountRequest) -> Vec<String> {
    match crate::bootstrap::read(std::path::Path::new(&cmd.source)) {
        Ok(crate::bootstrap::Bootstrap::Rafs { blob_ids, .. }) => blob_ids,
        _ => Vec::new(),
    }
}

fn unsupported(wrapper: &str) -> Response {
    Response::error(501, &format!("{wrapper}(DaemonAbnormal(Unsupported))"))
}

fn other_error(wrapper: &str, text: &str) -> Response {
    Response::error(500, &format!("{wrapper}(DaemonAbnormal(Other({text:?})))"))
}

fn fire_error(wrapper: &str, error: FireError) -> Response {
    match error {
        FireError::Unexpected(event) => {
            Response::error(400, &format!("{wrapper}(DaemonAbnormal(UnexpectedEvent({:?})))", event.name()))
        }
        FireError::Closed => Response::error(500, &format!("{wrapper}(DaemonAbnormal(Other({CLOSED_CHANNEL:?})))")),
        FireError::Action(inner) => Response::error(500, &format!("{wrapper}(DaemonAbnormal({inner}))")),
    }
}

/// A memfd standing in for `/dev/fuse` until the mock has a real FUSE session: a real
/// open file, so a successor can prove it received the same one.
fn placeholder_session_fd() -> nix::Result<OwnedFd> {
    nix::sys::memfd::memfd_create(c"mock-nydusd-fuse-session", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(mode: Mode) -> Model {
        let options = ModelOptions {
            version: crate::version::NydusdVersion::V2_4,
            shuffle_maps: false,
            id: Some("d1".into()),
            supervisor: None,
            mode,
            build: crate::build_info::build_info(crate::version::NydusdVersion::V2_4, None),
            abort_like_nydusd: false,
            fscache_dir: None,
            fuse: None,
            fscache_service: None,
        };
        Model::new(options, "info".into())
    }

    fn body(r: &Reply) -> String {
        String::from_utf8(r.response.body.clone()).unwrap()
    }

    #[test]
    fn start_after_a_normal_start_is_an_unexpected_event() {
        let mut m = model(Mode::Fuse);
        m.start_normally(None).unwrap();
        let r = m.handle(Route::Start);
        assert_eq!(r.response.status, 400);
        assert_eq!(
            body(&r),
            r#"{"code":"UNDEFINED","message":"Configure(DaemonAbnormal(UnexpectedEvent(\"Start\")))"}"#
        );
    }

    /// A mount command nydusd accepts: a stand-in bootstrap and a legacy localfs config.
    fn valid_mount(dir: &std::path::Path) -> Vec<u8> {
        let boot = dir.join("boot");
        std::fs::write(&boot, r#"{"mock_tree":{}}"#).unwrap();
        let config = r#"{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}}},"mode":"direct"}"#;
        json!({ "source": boot, "fs_type": "rafs", "config": config }).to_string().into_bytes()
    }

    #[test]
    fn mount_twice_then_umount_twice() {
        let mut m = model(Mode::Fuse);
        let dir = tempfile::tempdir().unwrap();
        let cmd = valid_mount(dir.path());
        assert_eq!(m.handle(Route::Mount { mountpoint: "/a".into(), body: cmd.clone() }).response.status, 204);
        let again = m.handle(Route::Mount { mountpoint: "/a".into(), body: cmd });
        assert_eq!(again.response.status, 500);
        assert!(body(&again).contains("already exists"));
        assert_eq!(m.handle(Route::Umount { mountpoint: "/a".into() }).response.status, 204);
        let twice = m.handle(Route::Umount { mountpoint: "/a".into() });
        assert_eq!(twice.response.status, 500);
        assert!(body(&twice).contains("doesn't exist"));
    }

    #[test]
    fn a_mount_nydusd_would_refuse_is_refused_with_its_words_and_not_recorded() {
        let mut m = model(Mode::Fuse);
        let dir = tempfile::tempdir().unwrap();
        let good: Value = serde_json::from_slice(&valid_mount(dir.path())).unwrap();
        let with = |key: &str, value: Value| {
            let mut cmd = good.clone();
            cmd[key] = value;
            cmd.to_string().into_bytes()
        };
        let cases = [
            (with("config", "not json".into()), "Failed to load config: failed to parse configuration information`"),
            (with("source", "/nonexistent/boot".into()), "Failed to fill superBlock: No such file or directory (os error 2)`"),
            (with("prefetch_files", json!(["etc"])), "invalid prefetch file list"),
        ];
        for (cmd, words) in cases {
            let r = m.handle(Route::Mount { mountpoint: "/a".into(), body: cmd });
            assert_eq!(r.response.status, 500);
            assert!(body(&r).contains(words), "{}", body(&r));
        }
        assert!(m.mounts.is_empty());
        assert_eq!(m.handle(Route::Mount { mountpoint: "/a".into(), body: valid_mount(dir.path()) }).response.status, 204);
    }

    #[test]
    fn as_2_2_an_exit_after_a_failed_start_is_unexpected_and_the_daemon_stays() {
        // A successor: INIT, takeover (2.2's stub), start (no FUSE fd: fails), exit.
        let mut m = model(Mode::Fuse);
        m.options.version = crate::version::NydusdVersion::V2_2;
        assert_eq!(m.handle(Route::Takeover).response.status, 204);
        assert_eq!(m.handle(Route::Start).response.status, 500);
        assert_eq!(m.state(), State::Ready, "the failed start left the reported state");
        let exit = m.handle(Route::Exit);
        assert_eq!(exit.response.status, 400);
        assert_eq!(body(&exit), r#"{"code":"UNDEFINED","message":"Configure(DaemonAbnormal(UnexpectedEvent(\"Exit\")))"}"#);
        assert!(!matches!(exit.after, After::Exit), "the daemon does not exit");
    }

    #[test]
    fn mount_body_errors_read_like_serde_json_debug() {
        let mut m = model(Mode::Fuse);
        let r = m.handle(Route::Mount { mountpoint: "/a".into(), body: b"{}".to_vec() });
        assert_eq!(r.response.status, 400);
        assert_eq!(
            body(&r),
            r#"{"code":"UNDEFINED","message":"ParseBody(Error(\"missing field `source`\", line: 1, column: 2))"}"#
        );
        let bad_type =
            m.handle(Route::Mount { mountpoint: "/a".into(), body: br#"{"source":"/b","config":""}"#.to_vec() });
        assert_eq!(bad_type.response.status, 500);
        assert!(body(&bad_type).contains("but  was specified"), "{}", body(&bad_type));
    }

    #[test]
    fn singleton_refuses_mounts_with_501() {
        let mut m = model(Mode::Singleton);
        let r = m.handle(Route::Mount {
            mountpoint: "/a".into(),
            body: br#"{"source":"/b","fs_type":"rafs","config":"{}"}"#.to_vec(),
        });
        assert_eq!(r.response.status, 501);
    }

    #[test]
    fn takeover_without_supervisor_fails_but_moves_the_fsm() {
        let mut m = model(Mode::Fuse);
        let r = m.handle(Route::Takeover);
        assert_eq!(r.response.status, 500);
        assert_eq!(
            body(&r),
            r#"{"code":"UNDEFINED","message":"Upgrade(DaemonAbnormal(UpgradeManager(\"MissingSupervisorPath\")))"}"#
        );
        assert_eq!(m.state(), State::Init);
        assert_eq!(m.handle(Route::Takeover).response.status, 400);
    }

    #[test]
    fn sendfd_before_any_session_is_not_ready() {
        let mut m = model(Mode::Fuse);
        assert_eq!(m.handle(Route::SendFd).response.status, 503);
    }

    #[test]
    fn log_level_is_case_insensitive_and_validated() {
        let mut m = model(Mode::Fuse);
        assert_eq!(m.handle(Route::Configure(br#"{"log_level":"DEBUG"}"#.to_vec())).response.status, 204);
        assert_eq!(m.handle(Route::Configure(br#"{"log_level":"loud"}"#.to_vec())).response.status, 500);
        assert_eq!(m.handle(Route::Configure(b"{}".to_vec())).response.status, 400);
    }
}
