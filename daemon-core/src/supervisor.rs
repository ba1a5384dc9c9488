//! Supervisors: per-daemon holders of nydusd's runtime state blob and its `/dev/fuse` (or
//! `/dev/cachefiles`) fd, so that a successor can take over after a crash or during a hot
//! upgrade (`snapshotter-lifecycle.md` §4).
//!
//! Differences from upstream, each for a bug it has:
//! * both legs have deadlines; upstream's fetch has none and hangs forever when nydusd
//!   rejects `sendfd` (open PR #786), holding the supervisor's semaphore;
//! * a failed trigger ends the fetch at once instead of leaving the listener waiting;
//! * the connecting peer is checked with `SO_PEERCRED` against the expected daemon pid, so
//!   another local process cannot plant or steal the FUSE fd;
//! * stored data and fd are replaced together, and the replaced fd is closed (upstream
//!   leaks it); destroying a supervisor closes its fd and removes its socket.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;

use crate::fdpass;

/// Receive buffer per `recvmsg`, as upstream's supervisor.
const CHUNK: usize = 256 * 1024;
/// Largest state accepted from a daemon.
const MAX_STATE: usize = 64 * 1024 * 1024;

/// Why a supervisor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The socket could not be created.
    #[error("supervisor {id}: cannot listen on {}", path.display())]
    Listen {
        /// Supervisor (daemon) id.
        id: String,
        /// Socket path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The trigger (normally `PUT /api/v1/daemon/fuse/sendfd`) failed.
    #[error("supervisor {id}: the daemon was asked to send its state and failed")]
    Trigger {
        /// Supervisor id.
        id: String,
        /// The trigger's error, kept whole (for example the client error of the sendfd).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing arrived, or nothing was collected, before the deadline.
    #[error("supervisor {id}: no {what} within {after:?}")]
    Timeout {
        /// Supervisor id.
        id: String,
        /// What was awaited.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// Reading or writing the transfer failed.
    #[error("supervisor {id}: transfer failed")]
    Transfer {
        /// Supervisor id.
        id: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon sent its state without a file descriptor.
    #[error("supervisor {id}: received {bytes} bytes of state but no file descriptor")]
    NoFd {
        /// Supervisor id.
        id: String,
        /// Bytes received.
        bytes: usize,
    },
    /// The daemon acknowledged the send but never connected: nydusd sends before it
    /// replies, so nothing will come (nydusd before 2.3 only pretends to send).
    #[error(
        "supervisor {id}: the daemon acknowledged sendfd without connecting (nydusd before 2.3 does not send its state)"
    )]
    NotSent {
        /// Supervisor id.
        id: String,
    },
    /// There is no saved state to offer.
    #[error("supervisor {id}: no saved state to offer")]
    NothingSaved {
        /// Supervisor id.
        id: String,
    },
    /// No supervisor with that id.
    #[error("no supervisor for daemon {0}")]
    NotFound(String),
}

/// A saved state: the blob nydusd sent and the fd that came with it.
#[derive(Debug)]
pub struct SavedState {
    /// The state blob, opaque to the supervisor.
    pub data: Vec<u8>,
    /// The session fd.
    pub fd: OwnedFd,
    /// Counts this state among its set's live ones while it exists.
    _live: LiveState,
}

/// One live saved state of a set, counted until dropped (with its fd).
#[derive(Debug)]
struct LiveState(Arc<AtomicUsize>);

impl LiveState {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for LiveState {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection a supervisor closed unanswered because it came from another process than
/// the daemon it expected: someone tried to plant or take a FUSE fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPeer {
    /// The daemon whose supervisor refused it.
    pub id: String,
    /// The connecting process (`SO_PEERCRED`).
    pub pid: u32,
    /// Its user.
    pub uid: u32,
    /// The pid that was expected (0: none allowed yet).
    pub expected: u32,
}

/// Told of every refused peer (the manager turns it into an event).
#[derive(Clone, Default)]
pub struct OnRefused(Option<Arc<dyn Fn(RefusedPeer) + Send + Sync>>);

impl OnRefused {
    /// Calls `f` for each refused peer.
    pub fn new(f: impl Fn(RefusedPeer) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    fn tell(&self, peer: RefusedPeer) {
        if let Some(f) = &self.0 {
            f(peer);
        }
    }
}

impl std::fmt::Debug for OnRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "OnRefused(set)" } else { "OnRefused(none)" })
    }
}

/// One daemon's supervisor.
#[derive(Debug)]
pub struct Supervisor {
    id: String,
    socket: PathBuf,
    saved: Mutex<Option<Arc<SavedState>>>,
    /// One transfer at a time per supervisor: both legs use the same socket path.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Connections closed because they came from a process other than the expected one.
    refused: AtomicU32,
    on_refused: OnRefused,
    /// The set's count of live saved states.
    live_states: Arc<AtomicUsize>,
}

/// Who may connect to a listening supervisor: only this pid (0 = nobody yet).
#[derive(Debug, Clone)]
pub struct AllowedPeer(Arc<tokio::sync::watch::Sender<u32>>);

impl Default for AllowedPeer {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl AllowedPeer {
    /// Allows the process `pid` (the successor, once it has been spawned).
    pub fn allow(&self, pid: u32) {
        self.0.send_replace(pid);
    }

    fn get(&self) -> u32 {
        *self.0.borrow()
    }

    /// The allowed pid once one is set. A successor can connect between its spawn and the
    /// [`AllowedPeer::allow`] that names it (the spawn records its pid first, with a
    /// sync), so a connection that comes before any pid is allowed waits for one instead
    /// of being refused: refusing it once refused the daemon's own replacement.
    async fn settled(&self) -> u32 {
        let mut allowed = self.0.subscribe();
        allowed.wait_for(|pid| *pid != 0).await.map(|pid| *pid).unwrap_or(0)
    }
}

/// A pending offer: the listener is up and hands the saved state to the first allowed peer.
/// Dropping it withdraws the offer at once (listener closed, socket removed), so a failed
/// takeover does not hold the supervisor until the deadline and a retry can offer again.
#[derive(Debug)]
pub struct Offer {
    id: String,
    socket: PathBuf,
    peer: AllowedPeer,
    task: tokio::task::JoinHandle<Result<u32, SupervisorError>>,
}

impl Drop for Offer {
    fn drop(&mut self) {
        if !self.task.is_finished() {
            self.task.abort();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Offer {
    /// Allows `pid` to take the state (call right after spawning the successor).
    pub fn allow(&self, pid: u32) {
        self.peer.allow(pid);
    }

    /// Waits for the transfer; returns the pid that took the state.
    pub async fn finished(mut self) -> Result<u32, SupervisorError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(SupervisorError::Transfer { id: self.id.clone(), source: std::io::Error::other(e) }),
        }
    }
}

/// Which process a listening supervisor serves.
#[derive(Clone, Copy)]
enum Expected<'a> {
    /// The daemon's process as it is when the connection comes (a fetch).
    Daemon(&'a (dyn Fn() -> u32 + Sync)),
    /// The successor named by [`Offer::allow`], waited for when none is named yet.
    Successor(&'a AllowedPeer),
}

/// The peer's pid and uid from `SO_PEERCRED`.
fn peer_credentials(stream: &std::os::unix::net::UnixStream) -> std::io::Result<(u32, u32)> {
    let cred = nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerCredentials)?;
    Ok((cred.pid() as u32, cred.uid()))
}

/// Whether a connection waits in `listener`'s accept queue (the socket polls readable).
fn has_pending_connection(listener: &UnixListener) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Private (whoever connects may plant or take a FUSE fd; the peer check is the second line).
fn bind_fresh(id: &str, path: &Path) -> Result<UnixListener, SupervisorError> {
    let listen_error = |source| SupervisorError::Listen { id: id.to_owned(), path: path.to_owned(), source };
    let listener = host_facts::unix_socket::bind_private(path).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    UnixListener::from_std(listener).map_err(listen_error)
}

impl Supervisor {
    fn new(id: String, socket: PathBuf, on_refused: OnRefused, live_states: Arc<AtomicUsize>) -> Self {
        Self {
            id,
            socket,
            saved: Mutex::new(None),
            busy: Arc::new(tokio::sync::Mutex::new(())),
            refused: AtomicU32::new(0),
            on_refused,
            live_states,
        }
    }

    /// How many connections were closed for coming from an unexpected process.
    pub fn refused_peers(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Accepts connections until one comes from the pid `allowed` names; others are closed
    /// unanswered.
    async fn accept_from(
        &self,
        listener: &UnixListener,
        allowed: Expected<'_>,
    ) -> std::io::Result<(std::os::unix::net::UnixStream, u32)> {
        loop {
            let (stream, _) = listener.accept().await?;
            let stream = stream.into_std()?;
            let (pid, uid) = peer_credentials(&stream)?;
            let expected = match allowed {
                Expected::Daemon(pid) => pid(),
                Expected::Successor(peer) => match peer.get() {
                    0 => peer.settled().await,
                    pid => pid,
                },
            };
            if pid != 0 && pid == expected {
                stream.set_nonblocking(false)?;
                return Ok((stream, pid));
            }
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.on_refused.tell(RefusedPeer { id: self.id.clone(), pid, uid, expected });
        }
    }

    /// The daemon id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The socket path nydusd is given with `--supervisor`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The saved state, if any.
    pub fn saved(&self) -> Option<Arc<SavedState>> {
        self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stores a state, replacing (and closing) the previous one.
    pub fn save(&self, data: Vec<u8>, fd: OwnedFd) {
        let state = SavedState { data, fd, _live: LiveState::new(&self.live_states) };
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(state));
    }

    /// Fetches the daemon's state: listens, runs `trigger` (which makes daemon `pid` connect
    /// and send), and saves what arrives, all within `deadline`.
    pub async fn fetch<E: std::error::Error + Send + Sync + 'static>(
        &self,
        pid: u32,
        trigger: impl Future<Output = Result<(), E>>,
        deadline: Duration,
    ) -> Result<(), SupervisorError> {
        self.fetch_from(|| pid, trigger, deadline).await
    }

    /// [`Supervisor::fetch`] from whichever process `daemon_pid` names when the connection
    /// comes. The pid is read then, not when the fetch was asked for: a fetch queued behind
    /// a failover's takeover (one transfer at a time) reaches the replacement, and a pid
    /// taken before the wait once named the dead predecessor, so the replacement's own
    /// connection was refused as an intruder and the fetch ran to its deadline.
    pub async fn fetch_from<E: std::error::Error + Send + Sync + 'static>(
        &self,
        daemon_pid: impl Fn() -> u32 + Sync,
        trigger: impl Future<Output = Result<(), E>>,
        deadline: Duration,
    ) -> Result<(), SupervisorError> {
        let timeout = |what| SupervisorError::Timeout { id: self.id.clone(), what, after: deadline };
        let work = async {
            let _busy = self.busy.clone().lock_owned().await;
            let listener = bind_fresh(&self.id, &self.socket)?;
            let accepted = std::sync::atomic::AtomicBool::new(false);
            let receive = async {
                let (stream, _) = self
                    .accept_from(&listener, Expected::Daemon(&daemon_pid))
                    .await
                    .map_err(|source| SupervisorError::Transfer { id: self.id.clone(), source })?;
                accepted.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::task::spawn_blocking(move || fdpass::receive(&stream, CHUNK, MAX_STATE))
                    .await
                    .map_err(|e| SupervisorError::Transfer { id: self.id.clone(), source: std::io::Error::other(e) })?
                    .map_err(|source| SupervisorError::Transfer { id: self.id.clone(), source })
            };
            let trigger = async {
                trigger.await.map_err(|e| SupervisorError::Trigger { id: self.id.clone(), source: Box::new(e) })?;
                // nydusd connects and sends before it answers, so by now its connection
                // was accepted or waits in the backlog; without one, waiting is pointless.
                // (Both futures run on this task, so `accepted` cannot change meanwhile.)
                if !accepted.load(std::sync::atomic::Ordering::SeqCst) && !has_pending_connection(&listener) {
                    return Err(SupervisorError::NotSent { id: self.id.clone() });
                }
                Ok(())
            };
            let result = tokio::try_join!(trigger, receive);
            drop(listener);
            let _ = std::fs::remove_file(&self.socket);
            let ((), (data, fds)) = result?;
            let bytes = data.len();
            let fd = fds.into_iter().next().ok_or(SupervisorError::NoFd { id: self.id.clone(), bytes })?;
            self.save(data, fd);
            Ok(())
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                let _ = std::fs::remove_file(&self.socket);
                Err(timeout("state from the daemon"))
            }
        }
    }

    /// Offers the saved state: listens now, and in the background hands the state (a copy
    /// of the blob and a duplicate of the fd, so it can be offered again) to the first
    /// connection from the pid given to [`Offer::allow`]. The listener closes and its
    /// socket is removed after one transfer or after `deadline`.
    pub async fn offer(self: &Arc<Self>, deadline: Duration) -> Result<Offer, SupervisorError> {
        let saved = self.saved().ok_or_else(|| SupervisorError::NothingSaved { id: self.id.clone() })?;
        let busy = self.busy.clone().lock_owned().await;
        let listener = bind_fresh(&self.id, &self.socket)?;
        let peer = AllowedPeer::default();
        let allowed = peer.clone();
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let _busy = busy;
            let id = this.id.clone();
            let send = async {
                let (mut stream, pid) = this
                    .accept_from(&listener, Expected::Successor(&allowed))
                    .await
                    .map_err(|source| SupervisorError::Transfer { id: id.clone(), source })?;
                let fd = saved.fd.try_clone().map_err(|source| SupervisorError::Transfer { id: id.clone(), source })?;
                let data = saved.data.clone();
                tokio::task::spawn_blocking(move || fdpass::send(&mut stream, &data, fd.as_fd()))
                    .await
                    .map_err(|e| SupervisorError::Transfer { id: id.clone(), source: std::io::Error::other(e) })?
                    .map_err(|source| SupervisorError::Transfer { id: id.clone(), source })?;
                Ok(pid)
            };
            let result = tokio::time::timeout(deadline, send).await;
            drop(listener);
            let _ = std::fs::remove_file(&this.socket);
            result.unwrap_or(Err(SupervisorError::Timeout { id, what: "successor to take the state", after: deadline }))
        });
        Ok(Offer { id: self.id.clone(), socket: self.socket.clone(), peer, task })
    }

    /// Drops the saved state (closing its fd) and removes the socket.
    fn destroy(&self) {
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The supervisors of one manager, under `<root>/supervisor`.
#[derive(Debug)]
pub struct SupervisorSet {
    dir: PathBuf,
    supervisors: Mutex<HashMap<String, Arc<Supervisor>>>,
    on_refused: OnRefused,
    /// Saved states alive, each holding one fd: held by a supervisor, or by a transfer
    /// in progress. A superseded state that lingers (snapshotter PR #783) shows here.
    live_states: Arc<AtomicUsize>,
}

impl SupervisorSet {
    /// A set whose sockets live in `dir` (created, mode 0700: the sockets hand out FUSE fds).
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = dir.into();
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        Ok(Self {
            dir,
            supervisors: Mutex::new(HashMap::new()),
            on_refused: OnRefused::default(),
            live_states: Arc::default(),
        })
    }

    /// How many saved states (so session fds) the set's supervisors and their transfers
    /// hold now.
    pub fn held_fds(&self) -> usize {
        self.live_states.load(Ordering::SeqCst)
    }

    /// Tells `on_refused` of every peer a supervisor of this set refuses.
    pub fn with_on_refused(self, on_refused: OnRefused) -> Self {
        Self { on_refused, ..self }
    }

    /// Creates the supervisor of daemon `id` at `<dir>/<id>.sock`, replacing (and
    /// destroying) any previous one.
    pub fn create(&self, id: &str) -> Arc<Supervisor> {
        let socket = self.dir.join(format!("{id}.sock"));
        let supervisor =
            Arc::new(Supervisor::new(id.to_owned(), socket, self.on_refused.clone(), self.live_states.clone()));
        let previous = self.lock().insert(id.to_owned(), supervisor.clone());
        if let Some(previous) = previous {
            previous.destroy();
        }
        supervisor
    }

    /// The supervisor of daemon `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Supervisor>> {
        self.lock().get(id).cloned()
    }

    /// Removes the supervisor of `id`, closing its fd and socket.
    pub fn destroy(&self, id: &str) -> Result<(), SupervisorError> {
        let supervisor = self.lock().remove(id).ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        supervisor.destroy();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Supervisor>>> {
        self.supervisors.lock().unwrap_or_else(|e| e.into_inner())
    }
}
