//! The supervisor socket recorded: `harness record --supervisor -- <command>` gives the
//! daemon a socket in the recording's directory in place of its `--supervisor` path and
//! relays every connection the daemon makes there to the real supervisor, bytes and fds
//! (`SCM_RIGHTS`) alike, in the pieces they came in. The recording keeps each piece's size
//! and fd count, never its content: a saved state holds the daemon's configurations.
//!
//! nydusd connects to the supervisor before it answers the API call that made it
//! (sendfd, takeover), and daemon-core relies on that: once the answer is in, a
//! connection must be there. So the proxy holds back the daemon's API replies while a
//! supervisor connection waits to be accepted or to be connected onwards ([`Gate`]).

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::error::RecordError;
use super::recording::{Event, Sink, SupervisorFlow};

/// The largest piece read at once: the Go supervisor reads 256 KiB at a time.
const CHUNK: usize = 256 * 1024;

/// Fds taken with one piece at most (nydusd sends one).
const MAX_FDS: usize = 16;

/// How long an API reply is held back for a supervisor connection to be relayed.
const GATE_WAIT: Duration = Duration::from_secs(1);

/// Tells the API relay whether a supervisor connection is on its way.
#[derive(Debug, Clone)]
pub struct Gate {
    listener: Arc<tokio::net::UnixListener>,
    connecting: Arc<AtomicUsize>,
}

impl Gate {
    /// Whether no daemon connection waits in the backlog and none is being connected onwards.
    fn settled(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.connecting.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&*self.listener), PollFlags::POLLIN)];
        !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Waits (at most [`GATE_WAIT`]) until [`Gate::settled`].
    pub async fn wait(&self) {
        let deadline = tokio::time::Instant::now() + GATE_WAIT;
        while !self.settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// The supervisor relay, listening at `listen` for the daemon and connecting to
/// `upstream`, the real supervisor's socket, for each of its connections.
#[derive(Debug)]
pub struct Relay {
    listen: PathBuf,
    upstream: PathBuf,
    gate: Gate,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.listen);
    }
}

impl Relay {
    /// Listens at `listen`.
    pub fn bind(listen: &Path, upstream: PathBuf) -> Result<Self, RecordError> {
        let listener = tokio::net::UnixListener::bind(listen).map_err(|source| RecordError::Io {
            action: "listen on",
            path: listen.to_owned(),
            source,
        })?;
        let gate = Gate { listener: Arc::new(listener), connecting: Arc::new(AtomicUsize::new(0)) };
        Ok(Self { listen: listen.to_owned(), upstream, gate })
    }

    /// What the API relay waits on.
    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Relays connections until dropped.
    pub async fn serve(self, sink: Sink) -> Result<std::convert::Infallible, RecordError> {
        let connections = AtomicU64::new(0);
        let mut tasks = tokio::task::JoinSet::new();
        let accept = |source| RecordError::Accept { path: self.listen.clone(), source };
        loop {
            let (daemon, _) = self.gate.listener.accept().await.map_err(accept)?;
            // Counted before this task yields, so the API relay cannot see the backlog
            // empty and nothing connecting in between.
            self.gate.connecting.fetch_add(1, Ordering::SeqCst);
            let conn = connections.fetch_add(1, Ordering::SeqCst) + 1;
            let (upstream, sink, connecting) = (self.upstream.clone(), sink.clone(), self.gate.connecting.clone());
            let daemon = daemon.into_std().map_err(accept)?;
            daemon.set_nonblocking(false).map_err(accept)?;
            tasks.spawn_blocking(move || relay(conn, daemon, &upstream, &sink, &connecting));
            while tasks.try_join_next().is_some() {}
        }
    }
}

/// One connection of the daemon's, and its connection to the supervisor.
fn relay(conn: u64, daemon: UnixStream, upstream: &Path, sink: &Sink, connecting: &AtomicUsize) {
    let connected = UnixStream::connect(upstream);
    connecting.fetch_sub(1, Ordering::SeqCst);
    let supervisor = match connected {
        Ok(s) => s,
        Err(e) => {
            sink.record(&Event::SupervisorRefused { conn, error: e.to_string() });
            return;
        }
    };
    sink.record(&Event::SupervisorOpen { conn });
    let (Ok(daemon_out), Ok(supervisor_out)) = (daemon.try_clone(), supervisor.try_clone()) else { return };
    std::thread::scope(|scope| {
        scope.spawn(|| pump(conn, SupervisorFlow::ToSupervisor, &daemon, supervisor_out, sink));
        pump(conn, SupervisorFlow::ToDaemon, &supervisor, daemon_out, sink);
    });
}

/// Passes what `from` sends, with its fds, on to `to`, recording each piece's size and
/// fd count; when `from` closes, `to` is shut down for writing.
fn pump(conn: u64, flow: SupervisorFlow, from: &UnixStream, mut to: UnixStream, sink: &Sink) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // An error ends the connection as a close would.
        let (n, fds) = receive(from, &mut buf).unwrap_or_default();
        if n == 0 && fds.is_empty() {
            sink.record(&Event::SupervisorClose { conn, from: flow });
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        }
        sink.record(&Event::SupervisorData { conn, flow, len: n, fds: fds.len() });
        if send(&mut to, &buf[..n], &fds).is_err() {
            return;
        }
        // The fds taken here close now; the peer holds its own copies.
    }
}

/// One recvmsg: the bytes read and the fds that came with them.
fn receive(from: &UnixStream, buf: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(from.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: each fd was just received and is owned by nobody else.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((msg.bytes, fds))
}

/// One sendmsg carrying `fds` with the first bytes, then the rest as plain writes.
fn send(to: &mut UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    // On a stream socket fds only ever come with bytes.
    if bytes.is_empty() {
        return Ok(());
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(to.as_raw_fd(), &[IoSlice::new(bytes)], control, MsgFlags::empty(), None)
        .map_err(std::io::Error::from)?;
    to.write_all(&bytes[sent..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::argv::move_supervisor;

    /// A connection in the backlog, then one being connected onwards, each keep the gate
    /// shut; it opens once both are through.
    #[tokio::test]
    async fn the_gate_is_shut_while_a_daemon_connection_waits_or_is_being_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::bind(&dir.path().join("s.sock"), dir.path().join("upstream.sock")).unwrap();
        let gate = relay.gate();
        assert!(gate.settled());
        let _client = UnixStream::connect(dir.path().join("s.sock")).unwrap();
        assert!(!gate.settled(), "a connection waits in the backlog");
        let (_accepted, _) = gate.listener.accept().await.unwrap();
        gate.connecting.fetch_add(1, Ordering::SeqCst);
        assert!(!gate.settled(), "a connection is being passed on");
        gate.connecting.fetch_sub(1, Ordering::SeqCst);
        assert!(gate.settled());
        drop(relay);
        assert!(!dir.path().join("s.sock").exists(), "the relay's socket goes with it");
    }

    #[test]
    fn the_supervisor_flag_is_moved_in_both_spellings() {
        let argv = |a: &[&str]| a.iter().map(Into::into).collect::<Vec<std::ffi::OsString>>();
        let moved = Path::new("/r/supervisor.sock");
        let (args, original) =
            move_supervisor(&argv(&["nydusd", "--supervisor", "/s.sock", "--id", "d"]), moved).unwrap();
        assert_eq!(
            (args, original),
            (argv(&["nydusd", "--supervisor", "/r/supervisor.sock", "--id", "d"]), "/s.sock".into())
        );
        let (args, _) = move_supervisor(&argv(&["nydusd", "--supervisor=/s.sock"]), moved).unwrap();
        assert_eq!(args, argv(&["nydusd", "--supervisor=/r/supervisor.sock"]));
        assert!(move_supervisor(&argv(&["nydusd", "--apisock", "/a"]), moved).is_none());
    }
}
