//! The client side of a replay: the recorded client's connections opened, its request
//! bytes written in the recorded pieces, and its half-closes, each at its recorded time
//! (scaled by the speed) and never before the replies that preceded it in the recording
//! have come back, so that requests reach the daemon in the recorded order. What comes
//! back is written as a recording of its own, for [`super::compare`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::recording::{Direction, Event, FORMAT_VERSION, Recording, Side, Sink};

/// The scenario `harness replay` writes beside the recording, for `harness run`.
pub const SCENARIO_FILE: &str = "replay.yaml";

/// How long a replay waits for a reply the recording had before going on without it
/// (the comparison then reports it missing), beyond the recorded wait.
pub const REPLY_GRACE: Duration = Duration::from_secs(2);

/// How long a replay waits for the daemon to listen on its API socket.
pub const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// How long a replay waits for a recorded death beyond its recorded time.
pub const DEATH_GRACE: Duration = Duration::from_secs(5);

/// How long a replay keeps reading once everything recorded has come back: bytes the
/// daemon sends beyond the recording (an extra reply, an error) are differences too.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Why a replay could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The replay's own recording could not be created.
    #[error("cannot write the replay's recording {}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to replay against, and where to write what came back.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The daemon's API socket.
    pub socket: PathBuf,
    /// Time runs this many times as fast as recorded.
    pub speed: f64,
    /// The replay's recording (replaced).
    pub out: PathBuf,
}

/// Bytes received per connection, and which ones the daemon closed.
#[derive(Debug, Default)]
struct Received {
    bytes: BTreeMap<u64, usize>,
    closed: std::collections::BTreeSet<u64>,
}

/// Replays `recording`'s client side against `options.socket`; `exit` resolves to how the
/// daemon ended (`code`, `signal`), awaited only when the recording saw the daemon end.
pub async fn drive(
    recording: &Recording,
    options: &ReplayOptions,
    exit: impl std::future::Future<Output = Option<(Option<i32>, Option<i32>)>>,
) -> Result<(), DriveError> {
    let sink =
        Sink::replace(&options.out).map_err(|source| DriveError::Output { path: options.out.clone(), source })?;
    sink.record(&Event::Recording {
        version: FORMAT_VERSION,
        upstream: Some(options.socket.clone()),
        listen: None,
        command: None,
        pid: None,
    });
    let mut expected: BTreeMap<u64, usize> = BTreeMap::new();
    // Connections whose end the replay must see before it stops reading: those the
    // recorded daemon closed, and, once it dies, all of them.
    let mut to_close = std::collections::BTreeSet::new();
    // The clock starts once the daemon accepts, so a slow start-up does not eat into the
    // recorded delays; the connection that showed it is the recording's first.
    let connects =
        recording.entries.iter().any(|e| matches!(e.event, Event::Open { .. } | Event::UpstreamRefused { .. }));
    let first = if connects { Some(connect_once_listening(&options.socket).await) } else { None };
    let mut client = Client::new(options.socket.clone(), sink, first);
    let started = Instant::now();
    let t0 = recording.entries.first().map(|e| e.t_ns).unwrap_or(0);
    // Saturating: a timestamp far ahead (validated against the replay's cap before) or a
    // tiny speed must not panic in the conversion.
    let at = |t: u64| {
        let secs = (t.saturating_sub(t0) as f64 / 1e9) / options.speed;
        started + Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(u32::MAX as u64))
    };
    let mut last_t = t0;
    for entry in &recording.entries {
        let event = &entry.event;
        if let Event::Data { conn, dir: Direction::Reply, len, .. } = event {
            *expected.entry(*conn).or_default() += len;
            continue;
        }
        if let Event::Close { conn, side: Side::Daemon } = event {
            to_close.insert(*conn);
        }
        if !is_client_act(event) {
            continue;
        }
        // What the recorded client had received before it acted, it receives first here.
        let recorded_wait = at(entry.t_ns).saturating_duration_since(at(last_t));
        wait_for_replies(&client.received, &expected, Instant::now() + recorded_wait + REPLY_GRACE).await;
        tokio::time::sleep_until(at(entry.t_ns)).await;
        last_t = entry.t_ns;
        client.act(event).await;
    }
    let received = client.received.clone();
    wait_for_replies(&received, &expected, Instant::now() + REPLY_GRACE).await;
    wait_for_closes(&received, &to_close, Instant::now() + REPLY_GRACE).await;
    // Anything the daemon sends beyond the recording is a difference: keep reading a
    // moment longer before stopping.
    tokio::time::sleep(SETTLE).await;
    if let Some((t, ..)) = recording.daemon_exit() {
        let deadline = at(t) + DEATH_GRACE;
        if let Ok(Some((code, signal))) = tokio::time::timeout_at(deadline, exit).await {
            client.sink.record(&Event::DaemonExit { pid: 0, code, signal, socket_left: options.socket.exists() });
        }
        // The daemon's death closes its connections; their ends are recorded too.
        wait_for_closes(&received, &client.opened, Instant::now() + REPLY_GRACE).await;
    }
    client.readers.abort_all();
    Ok(())
}

impl Client {
    fn new(socket: PathBuf, sink: Sink, first: Option<std::io::Result<UnixStream>>) -> Self {
        Self {
            socket,
            sink,
            received: Arc::new((Mutex::new(Received::default()), tokio::sync::Notify::new())),
            writers: BTreeMap::new(),
            readers: tokio::task::JoinSet::new(),
            opened: std::collections::BTreeSet::new(),
            first,
        }
    }
}

/// The recorded client, acting again: its connections, what it sends, what comes back.
struct Client {
    socket: PathBuf,
    sink: Sink,
    received: Arc<(Mutex<Received>, tokio::sync::Notify)>,
    writers: BTreeMap<u64, tokio::net::unix::OwnedWriteHalf>,
    readers: tokio::task::JoinSet<()>,
    opened: std::collections::BTreeSet<u64>,
    /// The first connection, made once the daemon listened.
    first: Option<std::io::Result<UnixStream>>,
}

impl Client {
    /// Does what the recorded client did: connect, send, or close its side.
    async fn act(&mut self, event: &Event) {
        match event {
            Event::Open { conn } | Event::UpstreamRefused { conn, .. } => {
                let connected = match self.first.take() {
                    Some(connected) => connected,
                    None => UnixStream::connect(&self.socket).await,
                };
                match connected {
                    Ok(stream) => {
                        self.sink.record(&Event::Open { conn: *conn });
                        self.opened.insert(*conn);
                        let (read, write) = stream.into_split();
                        self.writers.insert(*conn, write);
                        self.readers.spawn(read_replies(*conn, read, self.sink.clone(), self.received.clone()));
                    }
                    Err(e) => self.sink.record(&Event::UpstreamRefused { conn: *conn, error: e.to_string() }),
                }
            }
            Event::Data { conn, .. } => {
                let bytes = event.bytes().unwrap_or_default();
                if let Some(writer) = self.writers.get_mut(conn) {
                    self.sink.record(&Event::data(*conn, Direction::Request, &bytes));
                    if writer.write_all(&bytes).await.is_err() {
                        self.writers.remove(conn);
                    }
                }
            }
            Event::Close { conn, .. } => {
                if let Some(mut writer) = self.writers.remove(conn) {
                    self.sink.record(&Event::Close { conn: *conn, side: Side::Client });
                    let _ = writer.shutdown().await;
                }
            }
            _ => {}
        }
    }
}

/// Whether the recorded client did `event` (the daemon's acts are awaited, not done).
fn is_client_act(event: &Event) -> bool {
    matches!(
        event,
        Event::Open { .. }
            | Event::UpstreamRefused { .. }
            | Event::Data { .. }
            | Event::Close { side: Side::Client, .. }
    )
}

/// Connects to `socket` once the daemon listens there, waiting at most [`SOCKET_WAIT`].
/// The socket file appears at bind(), before listen(): a connection between the two is
/// refused, which the recorded client never saw (CI saw the replay's first two
/// connections refused this way, and every later reply answer a different call).
async fn connect_once_listening(socket: &Path) -> std::io::Result<UnixStream> {
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        match UnixStream::connect(socket).await {
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            connected => return connected,
        }
    }
}

/// Waits until `done` holds of what was received, or until `deadline`.
async fn wait_until(
    received: &(Mutex<Received>, tokio::sync::Notify),
    deadline: Instant,
    done: impl Fn(&Received) -> bool,
) {
    loop {
        // Created before the check, so a notification between the two is not lost.
        let notified = received.1.notified();
        if done(&received.0.lock().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

/// Until every connection has received what `expected` says, or was closed.
async fn wait_for_replies(
    received: &(Mutex<Received>, tokio::sync::Notify),
    expected: &BTreeMap<u64, usize>,
    deadline: Instant,
) {
    wait_until(received, deadline, |got| {
        expected.iter().all(|(conn, n)| got.closed.contains(conn) || got.bytes.get(conn).copied().unwrap_or(0) >= *n)
    })
    .await;
}

/// Until the daemon closed each of `conns`.
async fn wait_for_closes(
    received: &(Mutex<Received>, tokio::sync::Notify),
    conns: &std::collections::BTreeSet<u64>,
    deadline: Instant,
) {
    wait_until(received, deadline, |got| conns.iter().all(|c| got.closed.contains(c))).await;
}

async fn read_replies(
    conn: u64,
    mut read: tokio::net::unix::OwnedReadHalf,
    sink: Sink,
    received: Arc<(Mutex<Received>, tokio::sync::Notify)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = read.read(&mut buf).await.unwrap_or(0);
        {
            let mut got = received.0.lock().unwrap_or_else(|e| e.into_inner());
            if n == 0 {
                sink.record(&Event::Close { conn, side: Side::Daemon });
                got.closed.insert(conn);
            } else {
                sink.record(&Event::data(conn, Direction::Reply, &buf[..n]));
                *got.bytes.entry(conn).or_default() += n;
            }
        }
        received.1.notify_waiters();
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Entry;

    /// A daemon whose socket file exists (bound) but that listens only 300 ms later, as
    /// any daemon does for a moment between bind() and listen(): the replay's first
    /// connection is accepted, not recorded as refused.
    #[tokio::test]
    async fn the_first_connection_waits_for_the_daemon_to_listen_not_for_its_socket_file() {
        use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket};
        let dir = tempfile::tempdir().unwrap();
        let socket_path = dir.path().join("api.sock");
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(&socket_path).unwrap()).unwrap();
        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let daemon = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            listen(&fd, Backlog::new(8).unwrap()).unwrap();
            let listener = std::os::unix::net::UnixListener::from(fd);
            // Bounded: a replay that gave up on the daemon never connects.
            listener.set_nonblocking(true).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut conn = loop {
                match listener.accept() {
                    Ok((conn, _)) => break conn,
                    Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => return,
                }
            };
            conn.set_nonblocking(false).unwrap();
            let mut request = [0u8; 64];
            let n = std::io::Read::read(&mut conn, &mut request).unwrap();
            assert!(request[..n].starts_with(b"GET /api/v1/daemon"));
            std::io::Write::write_all(&mut conn, reply.as_bytes()).unwrap();
        });
        let recording = Recording::of_events(vec![
            (0, Event::Open { conn: 1 }),
            (1, Event::data(1, Direction::Request, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n")),
            (2, Event::data(1, Direction::Reply, reply.as_bytes())),
        ]);
        let out = dir.path().join("replayed.jsonl");
        let options = ReplayOptions { socket: socket_path, speed: 1.0, out: out.clone() };
        drive(&recording, &options, async { None }).await.unwrap();
        daemon.join().unwrap();
        let replayed = Recording::read(&out).unwrap();
        let events: Vec<&Event> = replayed.entries.iter().map(|e: &Entry| &e.event).collect();
        assert_eq!(events[0], &Event::Open { conn: 1 }, "{events:?}");
        assert_eq!(events[2].bytes().unwrap(), reply.as_bytes());
    }
}
