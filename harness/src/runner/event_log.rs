//! What a scenario saw: the manager's events with the cursors steps consume them by, the
//! harness's journal, and every API exchange daemon-core had.
//!
//! Shared by every lane of a scenario (steps run concurrently in `background` and
//! `concurrently` groups): each lock is held for a moment and never across an await, and
//! any number of lanes may wait for events at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use daemon_core::api::{Exchange, ExchangeObserver};
use daemon_core::manager::{Manager, ManagerEvent};
use mock_nydusd::journal::Journal;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::steps;

/// The run's record of what happened.
pub(crate) struct EventLog {
    /// The followed manager's events, not yet moved into [`Seen`].
    events: Mutex<Option<broadcast::Receiver<ManagerEvent>>>,
    /// Bumped whenever the followed manager changes: a lane waiting on the old one's
    /// events looks again.
    following: watch::Sender<u64>,
    seen: Mutex<Seen>,
    /// The harness's own journal (`logs/harness.jsonl`).
    pub journal: Journal,
    /// When the run began, on the journals' clock.
    pub started_ns: u64,
    /// Every API exchange daemon-core had with the daemons, in order.
    pub exchanges: Arc<Mutex<Vec<Exchange>>>,
    exchange_journal: Arc<Journal>,
}

/// Every manager event received, in order, and how far the waits have consumed them.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub events: Vec<ManagerEvent>,
    /// Where the current manager's events begin: a manager knows nothing of what an
    /// earlier one gave up on.
    pub current_manager_from: usize,
    /// How far each `wait_event` (by what it waits for) has scanned.
    pub consumed: BTreeMap<String, usize>,
    /// The events a `wait_event` has matched or failed on, by position: an outcome some
    /// wait already accounted for cannot end a later one.
    pub claimed: BTreeSet<usize>,
    /// The events a `wait_event` has matched, by position: each is consumed once, also
    /// by waits in lanes that run at the same time.
    pub matched: BTreeSet<usize>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A step that panicked holding a lock fails its scenario anyway; what it held is
    // still what the run saw.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventLog {
    /// A log writing its journals under `logs`.
    pub fn open(logs: &Path) -> Self {
        let _ = std::fs::create_dir_all(logs);
        Self {
            events: Mutex::new(None),
            following: watch::channel(0).0,
            seen: Mutex::default(),
            journal: Journal::open_as(&logs.join("harness.jsonl"), "harness").unwrap_or_default(),
            started_ns: mock_nydusd::journal::monotonic_ns(),
            exchanges: Arc::default(),
            exchange_journal: Arc::new(
                Journal::open_as(&logs.join("client.jsonl"), "client").unwrap_or_else(|_| Journal::default()),
            ),
        }
    }

    /// The events seen so far and the waits' cursors.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    /// Follows `manager`'s events from now on.
    pub fn follow(&self, manager: &Manager) {
        let mut events = lock(&self.events);
        self.drain_from(&mut events);
        *events = Some(manager.subscribe());
        let mut seen = self.seen();
        seen.current_manager_from = seen.events.len();
        drop(seen);
        self.following.send_modify(|n| *n += 1);
    }

    /// Stops following a manager (it was killed), keeping what it had sent.
    pub fn stop_following(&self) {
        let mut events = lock(&self.events);
        self.drain_from(&mut events);
        *events = None;
        self.following.send_modify(|n| *n += 1);
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

    /// Moves manager events into [`Seen`], journaling each.
    pub fn drain(&self) {
        self.drain_from(&mut lock(&self.events));
    }

    /// Moves what `events` holds into [`Seen`]; how many events it moved.
    fn drain_from(&self, events: &mut Option<broadcast::Receiver<ManagerEvent>>) -> usize {
        let Some(events) = events.as_mut() else { return 0 };
        let mut moved = 0;
        loop {
            match events.try_recv() {
                Ok(event) => {
                    self.journal.record("manager", json!({ "what": steps::describe_event(&event) }));
                    self.seen().events.push(event);
                    moved += 1;
                }
                // Missed events are gone; the ones after them still count.
                Err(broadcast::error::TryRecvError::Lagged(_)) => moved += 1,
                Err(_) => return moved,
            }
        }
    }

    /// Waits until [`Seen`] holds more than the `scanned` events the caller has looked at
    /// (true), or `deadline` passes (false). With no manager followed, or the followed one
    /// gone, it waits for the next one (another lane may restart it). Lanes wait at
    /// once: each on a receiver of its own, none holding the log; an event another lane
    /// moved into [`Seen`] wakes this one too.
    pub async fn next_event(&self, scanned: usize, deadline: tokio::time::Instant) -> bool {
        let grown = || self.seen().events.len() > scanned;
        loop {
            // Decided under the lock, waited for after it: the guard never crosses an await.
            let (waiter, mut following) = {
                let mut events = lock(&self.events);
                // Under the lock: a manager followed from now on bumps it after this.
                let following = self.following.subscribe();
                if self.drain_from(&mut events) > 0 || grown() {
                    return true;
                }
                let waiter = events.as_ref().map(broadcast::Receiver::resubscribe);
                // An event sent between the drain and the resubscription is in the
                // followed receiver only.
                if self.drain_from(&mut events) > 0 || grown() {
                    return true;
                }
                (waiter, following)
            };
            let Some(mut waiter) = waiter else {
                // No manager now: another lane may start one before the deadline.
                match tokio::time::timeout_at(deadline, following.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return false,
                }
            };
            tokio::select! {
                woken = tokio::time::timeout_at(deadline, waiter.recv()) => match woken {
                    Err(_) => {
                        // What arrived meanwhile on the followed receiver still counts.
                        return self.drain_from(&mut lock(&self.events)) > 0 || grown();
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        // The manager is gone (killed in another lane, say): what it sent
                        // last still counts, and a manager followed next may yet send it.
                        if self.drain_from(&mut lock(&self.events)) > 0 || grown() {
                            return true;
                        }
                        if !matches!(tokio::time::timeout_at(deadline, following.changed()).await, Ok(Ok(()))) {
                            return false;
                        }
                    }
                    Ok(_) => {}
                },
                _ = following.changed() => {}
            }
        }
    }
}
