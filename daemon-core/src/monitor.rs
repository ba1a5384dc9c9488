//! The liveness monitor (`snapshotter-lifecycle.md` §8.4): one idle connection per daemon
//! to its API socket. nydusd never closes a connection itself, so a hang-up means the
//! process is gone, and the death event goes out as soon as the kernel reports it.
//!
//! Differences from upstream: subscribing an id again with a different socket closes the
//! old connection (upstream leaks it and keeps watching it under a stale index); dialing
//! uses the short capped backoff of [`crate::wait`] instead of 20 × 100 ms.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::wait::{Backoff, Timeouts};

/// Upstream's death-event channel capacity.
pub const EVENT_CAPACITY: usize = 32;

/// A daemon's API connection hung up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeathEvent {
    /// The daemon.
    pub daemon_id: String,
    /// The socket the monitor was connected to.
    pub socket: PathBuf,
}

/// Why a subscription request failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The id is already watched on that socket.
    #[error("daemon {0} is already monitored on that socket")]
    AlreadySubscribed(String),
    /// The id is not watched.
    #[error("daemon {0} is not monitored")]
    NotSubscribed(String),
    /// The socket never accepted a connection.
    #[error("cannot connect to {} to monitor daemon {id} within {after:?}", socket.display())]
    Dial {
        /// The daemon.
        id: String,
        /// Its socket.
        socket: PathBuf,
        /// The deadline.
        after: Duration,
        /// The last connect error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Watch {
    socket: PathBuf,
    task: JoinHandle<()>,
}

/// The monitor. Dropping it stops every watch.
#[derive(Debug)]
pub struct LivenessMonitor {
    watches: Arc<Mutex<HashMap<String, Watch>>>,
    events: mpsc::Sender<DeathEvent>,
    timeouts: Timeouts,
}

impl LivenessMonitor {
    /// A monitor and the receiving end of its death events.
    pub fn new(timeouts: Timeouts) -> (Self, mpsc::Receiver<DeathEvent>) {
        let (events, receiver) = mpsc::channel(EVENT_CAPACITY);
        (Self { watches: Arc::default(), events, timeouts }, receiver)
    }

    /// Watches daemon `id` through its API socket, dialing until [`Timeouts::socket`].
    pub async fn subscribe(&self, id: &str, socket: &Path) -> Result<(), MonitorError> {
        if self.lock().get(id).is_some_and(|w| w.socket == socket && !w.task.is_finished()) {
            return Err(MonitorError::AlreadySubscribed(id.to_owned()));
        }
        let stream = self.dial(id, socket).await?;
        let event = DeathEvent { daemon_id: id.to_owned(), socket: socket.to_owned() };
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            watch(stream).await;
            // A full channel waits, as upstream's blocking send; a dropped receiver ends it.
            let _ = events.send(event).await;
        });
        let previous = self.lock().insert(id.to_owned(), Watch { socket: socket.to_owned(), task });
        if let Some(previous) = previous {
            previous.task.abort();
        }
        Ok(())
    }

    /// Stops watching daemon `id` and closes its connection.
    pub fn unsubscribe(&self, id: &str) -> Result<(), MonitorError> {
        let watch = self.lock().remove(id).ok_or_else(|| MonitorError::NotSubscribed(id.to_owned()))?;
        watch.task.abort();
        Ok(())
    }

    /// Whether `id` is subscribed (its connection may already have hung up).
    pub fn is_subscribed(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Stops every watch.
    pub fn destroy(&self) {
        for (_, watch) in self.lock().drain() {
            watch.task.abort();
        }
    }

    async fn dial(&self, id: &str, socket: &Path) -> Result<UnixStream, MonitorError> {
        let mut backoff = Backoff::new(&self.timeouts, self.timeouts.socket);
        loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => return Ok(stream),
                Err(source) => {
                    if !backoff.wait().await {
                        return Err(MonitorError::Dial {
                            id: id.to_owned(),
                            socket: socket.to_owned(),
                            after: self.timeouts.socket,
                            source,
                        });
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LivenessMonitor {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Returns when the peer hangs up. Anything nydusd might send is read and ignored.
async fn watch(stream: UnixStream) {
    let mut buf = [0u8; 512];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts { socket: Duration::from_millis(200), ..Timeouts::default() }
    }

    #[tokio::test]
    async fn a_hang_up_is_a_death_event_and_unsubscribed_ids_stay_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let (la, lb) = (tokio::net::UnixListener::bind(&a).unwrap(), tokio::net::UnixListener::bind(&b).unwrap());
        let (monitor, mut events) = LivenessMonitor::new(timeouts());
        monitor.subscribe("d1", &a).await.unwrap();
        monitor.subscribe("d2", &b).await.unwrap();
        assert!(matches!(monitor.subscribe("d1", &a).await, Err(MonitorError::AlreadySubscribed(_))));
        let (conn_a, _) = la.accept().await.unwrap();
        let (conn_b, _) = lb.accept().await.unwrap();
        monitor.unsubscribe("d2").unwrap();
        drop(conn_b);
        drop(conn_a);
        let event = events.recv().await.unwrap();
        assert_eq!(event, DeathEvent { daemon_id: "d1".into(), socket: a });
        assert!(events.try_recv().is_err(), "no event for the unsubscribed daemon");
        assert!(matches!(monitor.unsubscribe("d2"), Err(MonitorError::NotSubscribed(_))));
        monitor.destroy();
        assert!(!monitor.is_subscribed("d1"));
    }

    #[tokio::test]
    async fn resubscribing_with_another_socket_closes_the_old_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let (la, _lb) = (tokio::net::UnixListener::bind(&a).unwrap(), tokio::net::UnixListener::bind(&b).unwrap());
        let (monitor, mut events) = LivenessMonitor::new(timeouts());
        monitor.subscribe("d1", &a).await.unwrap();
        let (mut old, _) = la.accept().await.unwrap();
        monitor.subscribe("d1", &b).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut old, &mut buf).await.unwrap();
        assert_eq!(n, 0, "the old connection was closed");
        drop(old);
        assert!(tokio::time::timeout(Duration::from_millis(50), events.recv()).await.is_err(), "no stale event");
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_fails_to_subscribe() {
        let dir = tempfile::tempdir().unwrap();
        let (monitor, _events) = LivenessMonitor::new(timeouts());
        let err = monitor.subscribe("d1", &dir.path().join("none.sock")).await.unwrap_err();
        assert!(matches!(err, MonitorError::Dial { .. }), "{err}");
    }
}
