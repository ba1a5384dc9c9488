//! What a scenario has running: the manager, every daemon it has had, reader workloads,
//! and what the run noted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use daemon_core::Daemon;
use daemon_core::manager::Manager;

use super::error::RunError;

/// The scenario's running parts.
#[derive(Default)]
pub(crate) struct ScenarioState {
    /// The manager, until a step kills it.
    pub manager: Option<Manager>,
    /// Every daemon object the scenario has had, by id (also after the manager forgot it).
    pub known: BTreeMap<String, Arc<Daemon>>,
    /// Running reader workloads: the process and its stop file.
    pub readers: BTreeMap<String, (std::process::Child, PathBuf)>,
    /// What each stopped reader saw.
    pub reader_stats: Vec<crate::reader::ReaderStats>,
    /// Readers that reported and stopped reading, but whose process could not end: a
    /// thread waits in the kernel for a FUSE answer. They end with the connection, at
    /// teardown.
    pub stuck_readers: Vec<std::process::Child>,
    /// See [`super::ScenarioResult::notes`].
    pub notes: Vec<String>,
    /// How many processes each daemon has had, across managers (`--mock-process`).
    pub spawned: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl ScenarioState {
    pub fn manager(&self) -> Result<&Manager, RunError> {
        self.manager.as_ref().ok_or(RunError::NoManager)
    }

    /// The daemon `id`: the manager's object, or the last one the scenario saw if the
    /// manager no longer has it (forgotten, destroyed, or the manager was killed).
    pub fn daemon(&self, id: &str) -> Result<Arc<Daemon>, RunError> {
        self.manager
            .as_ref()
            .and_then(|m| m.get_daemon(id))
            .or_else(|| self.known.get(id).cloned())
            .ok_or_else(|| RunError::NotManaged(id.to_owned()))
    }

    /// Keeps every daemon the manager has, for after it forgets them.
    pub fn remember_daemons(&mut self) {
        if let Some(manager) = &self.manager {
            for daemon in manager.list_daemons() {
                self.known.insert(daemon.id(), daemon);
            }
        }
    }
}
