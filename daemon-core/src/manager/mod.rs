//! The manager (`snapshotter-lifecycle.md` §8): the daemons of one fs driver, their store
//! records, liveness monitor and supervisors, what happens when one dies (recover
//! policies), hot upgrade, destroy, and recovery when the manager itself restarts.
//!
//! ```text
//!   add_daemon ─► store + cache ─► start_daemon ─► spawn ─► verify: socket, monitor, RUNNING, send_states
//!                                                     ▲
//!   monitor hang-up ─► death loop ─► policy: none │ restart (clear vestige, start, re-mount)
//!                                            │ failover (offer state, start --upgrade, takeover, start)
//! ```
//!
//! * [`Manager`] here: opening on a root, its shared state, the records and cache.
//! * `config`: [`ManagerConfig`]; `events`: [`ManagerEvent`]; `error`: [`ManagerError`].
//! * `instances`: instance records, mounts and umounts, reconciliation when in doubt.
//! * `lifecycle`: one daemon's process (spawn, verify, start, stop, destroy).
//! * `deaths`: [`RecoverPolicy`], [`RecoveryRetry`] and the death loop; `takeover`,
//!   `upgrade`: the handover shared by failover and hot upgrade; `startup`: recovery when
//!   the manager itself restarts; `tasks`: every background task by its daemon.

mod close;
mod config;
mod deaths;
mod error;
mod events;
mod instances;
mod lifecycle;
mod startup;
mod takeover;
mod tasks;
mod upgrade;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::crash_point;
use crate::daemon::Daemon;
use crate::monitor::LivenessMonitor;
use crate::store::Store;
use crate::supervisor::{OnRefused, RefusedPeer, SupervisorSet};
use instances::Doubt;
use tasks::{Owner, Tasks};

pub use close::CloseReport;
pub use config::{ManagerConfig, PerDaemonArgs};
pub use deaths::{RecoverPolicy, RecoveryRetry};
pub use error::ManagerError;
pub use events::ManagerEvent;
pub use instances::Serves;
pub use startup::RecoveryReport;
pub use upgrade::next_api_socket;

pub(crate) struct Inner {
    config: ManagerConfig,
    nydusd: Mutex<PathBuf>,
    store: Store,
    daemons: Mutex<BTreeMap<String, Arc<Daemon>>>,
    monitor: LivenessMonitor,
    supervisors: Option<SupervisorSet>,
    events: broadcast::Sender<ManagerEvent>,
    /// Daemons whose recovery is running, each with the pid of a death reported meanwhile.
    recovering: Mutex<BTreeMap<String, deaths::Recovering>>,
    /// Numbers each recovery, so that only the recovery that made an entry removes it.
    serials: std::sync::atomic::AtomicU64,
    /// Every task the manager runs in the background, by the daemon it works for.
    tasks: Tasks,
    /// Destroyed daemons, until their id is added again: their late death events are
    /// dropped, so `destroyed` stays their last event.
    retired: Mutex<BTreeSet<String>>,
    /// The new daemon of each hot upgrade in flight, by id, so that a destroy meanwhile
    /// stops it too.
    successors: Mutex<BTreeMap<String, Arc<Daemon>>>,
    /// One instance operation (mount, umount, reconciliation) at a time per daemon, so a
    /// reconciliation never sees another operation half done.
    instance_ops: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Daemons whose mounts may differ from their records (a mount or umount whose
    /// outcome nobody could tell), until reconciliations settle it (`note_reconciled`).
    doubtful: Mutex<std::collections::BTreeMap<String, Doubt>>,
}

/// The manager. Cloning shares it.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("root", &self.inner.config.layout.root()).finish_non_exhaustive()
    }
}

impl Manager {
    /// Opens the store under the root and starts the death-event loop. Must run inside a
    /// tokio runtime. Existing records are not touched until [`Manager::recover`].
    ///
    /// A root whose store file is missing, empty or without tables while daemons run under it is refused
    /// with [`ManagerError::StoreLost`] and nothing is created or killed: to a new store
    /// every one of them would be a stray.
    pub fn open(config: ManagerConfig) -> Result<Self, ManagerError> {
        let db = config.layout.root().join(crate::store::DB_FILE);
        if !crate::store::holds_a_store(&db) {
            let found = startup::live_daemons_under(&config.layout.socket_dir());
            if !found.is_empty() {
                return Err(ManagerError::StoreLost { path: db, found });
            }
        }
        let store = Store::open(config.layout.root())?;
        let (monitor, mut deaths) = LivenessMonitor::new(config.timeouts);
        let (events, _) = broadcast::channel(256);
        let supervisors = match config.recover_policy {
            RecoverPolicy::Failover => {
                let dir = config.layout.supervisor_dir();
                let set =
                    SupervisorSet::new(&dir).map_err(|source| ManagerError::SupervisorDir { path: dir, source })?;
                let sender: broadcast::Sender<ManagerEvent> = events.clone();
                let on_refused = OnRefused::new(move |peer: RefusedPeer| {
                    let RefusedPeer { id, pid, uid, expected } = peer;
                    let _ = sender.send(ManagerEvent::SupervisorPeerRefused { id, pid, uid, expected });
                });
                Some(set.with_on_refused(on_refused))
            }
            _ => None,
        };
        let inner = Arc::new(Inner {
            nydusd: Mutex::new(config.nydusd.clone()),
            config,
            store,
            daemons: Mutex::default(),
            monitor,
            supervisors,
            events,
            recovering: Mutex::default(),
            serials: std::sync::atomic::AtomicU64::new(0),
            tasks: Tasks::default(),
            retired: Mutex::default(),
            successors: Mutex::default(),
            instance_ops: Mutex::default(),
            doubtful: Mutex::default(),
        });
        let weak = Arc::downgrade(&inner);
        // Weak: the loop must not keep a dropped manager (its store lock) alive.
        drop(inner.tasks.spawn(Owner::Manager, async move {
            while let Some(death) = deaths.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                deaths::on_death(Manager { inner }, death);
            }
        }));
        Ok(Self { inner })
    }

    /// Stops the manager as a crash would, and returns once it has: every task it runs
    /// (the death loop, recoveries, verifications, reconciliations, upgrades) is ended
    /// and dropped, and every watch closed; daemons keep running, and nothing is undone
    /// or recorded. The store is released when the last clone of the manager is dropped,
    /// so a new manager can open the same root and recover. Before, a recovery task
    /// outlived its dropped manager, kept the store locked and went on starting daemons.
    pub async fn abort(&self) {
        self.inner.tasks.cancel_all().await;
        self.inner.monitor.destroy();
    }

    /// Whether daemon `id` was destroyed (and not added again since).
    fn is_retired(&self, id: &str) -> bool {
        self.inner.retired.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    /// Follows what the manager does from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ManagerEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, event: ManagerEvent) {
        let _ = self.inner.events.send(event);
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// The nydusd binary used for the next start (changed by hot upgrade).
    pub fn nydusd(&self) -> PathBuf {
        self.inner.nydusd.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The liveness monitor.
    pub fn monitor(&self) -> &LivenessMonitor {
        &self.inner.monitor
    }

    /// The supervisors (failover policy only).
    pub fn supervisors(&self) -> Option<&SupervisorSet> {
        self.inner.supervisors.as_ref()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Daemon>>> {
        self.inner.daemons.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A managed daemon.
    pub fn get_daemon(&self, id: &str) -> Option<Arc<Daemon>> {
        self.cache().get(id).cloned()
    }

    /// Every managed daemon, by id.
    pub fn list_daemons(&self) -> Vec<Arc<Daemon>> {
        self.cache().values().cloned().collect()
    }

    /// Go `AddDaemon`: records a new daemon (its supervisor too, under failover) and
    /// caches it. [`ManagerError::AlreadyExists`] if the id is managed or stored.
    pub fn add_daemon(&self, daemon: Daemon) -> Result<Arc<Daemon>, ManagerError> {
        let id = daemon.id();
        if self.cache().contains_key(&id) {
            return Err(ManagerError::AlreadyExists(id));
        }
        self.inner.retired.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.attach_supervisor(&daemon);
        if daemon.exchange_observer().is_none() {
            daemon.set_exchange_observer(self.inner.config.exchange_observer.clone());
        }
        daemon.set_reply_limit(self.inner.config.reply_limit);
        self.inner.store.save_daemon(&daemon.record())?;
        crash_point::reached("add_daemon.stored");
        let daemon = Arc::new(daemon);
        self.cache().insert(id, daemon.clone());
        Ok(daemon)
    }

    fn attach_supervisor(&self, daemon: &Daemon) {
        if let Some(set) = &self.inner.supervisors {
            let supervisor = set.get(&daemon.id()).unwrap_or_else(|| set.create(&daemon.id()));
            daemon.update_record(|s| s.supervisor_path = supervisor.socket().to_owned());
            daemon.set_supervisor(Some(supervisor));
        }
    }

    /// Go `UpdateDaemon`: writes the daemon's current state to the store.
    pub fn update_daemon(&self, daemon: &Daemon) -> Result<(), ManagerError> {
        let id = daemon.id();
        if !self.cache().contains_key(&id) {
            return Err(ManagerError::NotFound(id));
        }
        self.inner.store.update_daemon(&daemon.record())?;
        Ok(())
    }

    /// Replaces the cached object for an id (hot upgrade) and stores its state.
    fn replace_daemon(&self, daemon: Arc<Daemon>) -> Result<(), ManagerError> {
        self.inner.store.update_daemon(&daemon.record())?;
        self.cache().insert(daemon.id(), daemon);
        Ok(())
    }

    /// Go `DeleteDaemon`: the record, then the cache entry.
    pub fn delete_daemon(&self, id: &str) -> Result<(), ManagerError> {
        self.inner.store.delete_daemon(id)?;
        self.cache().remove(id);
        Ok(())
    }
}
