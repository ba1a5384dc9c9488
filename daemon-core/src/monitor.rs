//! The liveness monitor (`snapshotter-lifecycle.md` §8.4): one idle connection per daemon
//! to its API socket. nydusd never closes a connection itself, so a hang-up means the
//! process is gone, and the death event goes out as soon as the kernel reports it.
//!
//! Differences from upstream: a subscription belongs to one process (its pid), not to a
//! socket path: the connection is accepted only when `SO_PEERCRED` names that pid, so a
//! predecessor still listening on the same path is never watched in a successor's place,
//! and its death event names its pid so that the manager can tell it from the successor's.
//! Subscribing an id again closes the old connection (upstream leaks it and keeps watching
//! it under a stale index); dialing uses the short capped backoff of [`crate::wait`]
//! instead of 20 × 100 ms.

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
    /// The process that hung up (0 when the subscription named none).
    pub pid: u32,
}

/// Why a subscription request failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The id is already watched on that socket, for that process.
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
    /// The socket is served by another process than the one to watch (a predecessor that
    /// still holds the path, for example).
    #[error("daemon {id}: {} is served by pid {found}, not by pid {expected}", socket.display())]
    WrongPeer {
        /// The daemon.
        id: String,
        /// Its socket.
        socket: PathBuf,
        /// The pid to watch.
        expected: u32,
        /// The pid on the other end.
        found: u32,
    },
}

#[derive(Debug)]
struct Watch {
    socket: PathBuf,
    pid: u32,
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

    /// Watches process `pid` of daemon `id` through its API socket, dialing until
    /// [`Timeouts::socket`]; `pid` 0 accepts whichever process answers.
    pub async fn subscribe(&self, id: &str, socket: &Path, pid: u32) -> Result<(), MonitorError> {
        if self.lock().get(id).is_some_and(|w| w.socket == socket && w.pid == pid && !w.task.is_finished()) {
            return Err(MonitorError::AlreadySubscribed(id.to_owned()));
        }
        let stream = self.dial(id, socket, pid).await?;
        let event = DeathEvent { daemon_id: id.to_owned(), socket: socket.to_owned(), pid };
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            watch(stream).await;
            // A full channel waits, as upstream's blocking send; a dropped receiver ends it.
            let _ = events.send(event).await;
        });
        let previous = self.lock().insert(id.to_owned(), Watch { socket: socket.to_owned(), pid, task });
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

    async fn dial(&self, id: &str, socket: &Path, pid: u32) -> Result<UnixStream, MonitorError> {
        let mut backoff = Backoff::new(&self.timeouts, self.timeouts.socket);
        loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => {
                    let found = stream.peer_cred().ok().and_then(|c| c.pid()).map_or(0, |p| p as u32);
                    if pid == 0 || found == pid {
                        return Ok(stream);
                    }
                    // The successor may not have bound the path yet: try again until the
                    // deadline, then say who answered instead.
                    if !backoff.wait().await {
                        return Err(MonitorError::WrongPeer {
                            id: id.to_owned(),
                            socket: socket.to_owned(),
                            expected: pid,
                            found,
                        });
                    }
                }
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
        monitor.subscribe("d1", &a, 0).await.unwrap();
        monitor.subscribe("d2", &b, 0).await.unwrap();
        assert!(matches!(monitor.subscribe("d1", &a, 0).await, Err(MonitorError::AlreadySubscribed(_))));
        let (conn_a, _) = la.accept().await.unwrap();
        let (conn_b, _) = lb.accept().await.unwrap();
        monitor.unsubscribe("d2").unwrap();
        drop(conn_b);
        drop(conn_a);
        let event = events.recv().await.unwrap();
        assert_eq!(event, DeathEvent { daemon_id: "d1".into(), socket: a, pid: 0 });
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
        monitor.subscribe("d1", &a, 0).await.unwrap();
        let (mut old, _) = la.accept().await.unwrap();
        monitor.subscribe("d1", &b, 0).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut old, &mut buf).await.unwrap();
        assert_eq!(n, 0, "the old connection was closed");
        drop(old);
        assert!(tokio::time::timeout(Duration::from_millis(50), events.recv()).await.is_err(), "no stale event");
    }

    #[tokio::test]
    async fn a_socket_served_by_another_process_is_not_watched_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sock");
        let _listener = tokio::net::UnixListener::bind(&a).unwrap();
        let (monitor, _events) = LivenessMonitor::new(timeouts());
        // This process answers on the socket; the subscription is for pid 1.
        let err = monitor.subscribe("d1", &a, 1).await.unwrap_err();
        match err {
            MonitorError::WrongPeer { expected, found, .. } => {
                assert_eq!((expected, found), (1, std::process::id()));
            }
            other => panic!("expected WrongPeer, got {other}"),
        }
        assert!(!monitor.is_subscribed("d1"));
        monitor.subscribe("d1", &a, std::process::id()).await.unwrap();
        assert!(monitor.is_subscribed("d1"));
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_fails_to_subscribe() {
        let dir = tempfile::tempdir().unwrap();
        let (monitor, _events) = LivenessMonitor::new(timeouts());
        let err = monitor.subscribe("d1", &dir.path().join("none.sock"), 0).await.unwrap_err();
        assert!(matches!(err, MonitorError::Dial { .. }), "{err}");
    }
}
