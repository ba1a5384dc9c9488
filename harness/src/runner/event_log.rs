//! What a scenario saw: the manager's events with the cursors steps consume them by, the
//! harness's journal, and every API exchange daemon-core had.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use daemon_core::api::{Exchange, ExchangeObserver};
use daemon_core::manager::{Manager, ManagerEvent};
use mock_nydusd::journal::Journal;
use serde_json::json;
use tokio::sync::broadcast;

use super::steps;

/// The run's record of what happened.
pub(crate) struct EventLog {
    events: Option<broadcast::Receiver<ManagerEvent>>,
    /// Every manager event received, in order, and how far `wait_event` has consumed it.
    pub seen: Vec<ManagerEvent>,
    /// Where the current manager's events begin in `seen`: a manager knows nothing of what
    /// an earlier one gave up on.
    pub current_manager_from: usize,
    pub consumed: BTreeMap<String, usize>,
    /// The events a `wait_event` has matched, by position in `seen`: an outcome some wait
    /// already accounted for cannot end a later one.
    pub claimed: BTreeSet<usize>,
    /// The harness's own journal (`logs/harness.jsonl`).
    pub journal: Journal,
    /// When the run began, on the journals' clock.
    pub started_ns: u64,
    /// Every API exchange daemon-core had with the daemons, in order.
    pub exchanges: Arc<Mutex<Vec<Exchange>>>,
    exchange_journal: Arc<Journal>,
}

impl EventLog {
    /// A log writing its journals under `logs`.
    pub fn open(logs: &Path) -> Self {
        let _ = std::fs::create_dir_all(logs);
        Self {
            events: None,
            seen: Vec::new(),
            current_manager_from: 0,
            consumed: BTreeMap::new(),
            claimed: BTreeSet::new(),
            journal: Journal::open_as(&logs.join("harness.jsonl"), "harness").unwrap_or_default(),
            started_ns: mock_nydusd::journal::monotonic_ns(),
            exchanges: Arc::default(),
            exchange_journal: Arc::new(
                Journal::open_as(&logs.join("client.jsonl"), "client").unwrap_or_else(|_| Journal::default()),
            ),
        }
    }

    /// Follows `manager`'s events from now on.
    pub fn follow(&mut self, manager: &Manager) {
        self.current_manager_from = self.seen.len();
        self.events = Some(manager.subscribe());
    }

    /// Stops following a manager (it was killed).
    pub fn stop_following(&mut self) {
        self.events = None;
    }

    /// Records each exchange in memory and in `logs/client.jsonl`.
    pub fn exchange_observer(&self) -> ExchangeObserver {
        let (all, journal) = (self.exchanges.clone(), self.exchange_journal.clone());
        ExchangeObserver::new(move |exchange: Exchange| {
            let fields = serde_json::to_value(&exchange).unwrap_or_default();
            journal.record("exchange", fields);
            all.lock().unwrap_or_else(|e| e.into_inner()).push(exchange);
        })
    }

    /// Moves manager events into `seen`, journaling each.
    pub fn drain(&mut self) {
        let Some(events) = self.events.as_mut() else { return };
        loop {
            match events.try_recv() {
                Ok(event) => {
                    self.journal.record("manager", json!({ "what": steps::describe_event(&event) }));
                    self.seen.push(event);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// Receives one more event, up to `deadline`.
    pub async fn next_event(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(events) = self.events.as_mut() else { return false };
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                self.journal.record("manager", json!({ "what": steps::describe_event(&event) }));
                self.seen.push(event);
                true
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => true,
            _ => false,
        }
    }
}
