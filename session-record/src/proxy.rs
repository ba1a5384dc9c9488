//! The recording proxy: one connection to the daemon per client, bytes forwarded read by
//! read, each read recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mock_nydusd::journal::monotonic_ns;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use super::argv::{move_apisock, move_supervisor};
pub use super::error::RecordError;
use super::recording::{Direction, Event, FILE_NAME, FORMAT_VERSION, Side, Sink};
use super::redact::{Redactor, Released};
use super::supervisor::Gate;

/// Starts `argv` (a nydusd command line) with its API socket moved into the recording's
/// directory, and records on the path it named, so clients find the proxy where they
/// expect the daemon; ends when the daemon exits (recording its status) or when dropped,
/// which kills the daemon. Returns the daemon's exit status.
///
/// With `supervisor`, the command line's `--supervisor` socket is relayed and recorded
/// too ([`super::supervisor`]).
pub async fn record_command(
    argv: &[std::ffi::OsString],
    out: &Path,
    supervisor: bool,
    max_bytes: u64,
) -> Result<std::process::ExitStatus, RecordError> {
    use std::os::unix::process::ExitStatusExt;
    private_dir(out)?;
    let moved = out.join("upstream.sock");
    let (mut args, listen) = move_apisock(argv, &moved).ok_or(RecordError::NoApisock)?;
    let relay = if supervisor {
        let relayed = out.join("supervisor.sock");
        let (moved_args, upstream) = move_supervisor(&args, &relayed).ok_or(RecordError::NoSupervisorFlag)?;
        args = moved_args;
        Some(super::supervisor::Relay::bind(&relayed, upstream)?)
    } else {
        None
    };
    let (program, rest) = args.split_first().ok_or(RecordError::NoCommand)?;
    let sink = open_sink(out, max_bytes)?;
    let started = std::time::Instant::now();
    let program_name = program.to_string_lossy().into_owned();
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RecordError::Start { program: program_name.clone(), source })?;
    let pid = child.id().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    // The socket file appears at bind(), before listen(); a client let in between would
    // be refused. A probe connection that is accepted (and closed at once) shows the
    // daemon listens.
    while std::os::unix::net::UnixStream::connect(&moved).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(RecordError::ExitedEarly { program: program_name, status });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RecordError::NoSocket);
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let listening = Event::DaemonListening { socket: moved.clone(), after_ns: started.elapsed().as_nanos() as u64 };
    let options = RecordOptions { upstream: moved.clone(), listen, out: out.to_owned(), max_bytes };
    let command = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let daemon_ends_open = Arc::new(AtomicU64::new(0));
    let gate = relay.as_ref().map(super::supervisor::Relay::gate);
    let started = Started { command, pid, listening };
    let proxy = serve_into(&options, sink.clone(), Some(started), daemon_ends_open.clone(), gate);
    tokio::pin!(proxy);
    let supervisor = async {
        match relay {
            Some(relay) => relay.serve(sink.clone()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(supervisor);
    let status = tokio::select! {
        served = &mut proxy => match served? {},
        served = &mut supervisor => match served? {},
        status = child.wait() => status.map_err(RecordError::Wait)?,
        () = sink.full() => return Err(RecordError::LimitReached { out: out.to_owned(), max_bytes }),
    };
    // The death closes the daemon's end of every connection; the relays (still running
    // while `proxy` lives) record those ends before the exit line.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while daemon_ends_open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    sink.record(&Event::DaemonExit { pid, code: status.code(), signal: status.signal(), socket_left: moved.exists() });
    Ok(status)
}

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// nydusd's API socket.
    pub upstream: PathBuf,
    /// Where clients connect instead.
    pub listen: PathBuf,
    /// The recording's directory (created; must not hold a recording already).
    pub out: PathBuf,
    /// The recorder stops once the recording would grow past this many bytes.
    pub max_bytes: u64,
}

/// The recording's directory, 0700 when this makes it; one that exists must not be open
/// to other users (a recording keeps what a daemon said).
pub(crate) fn private_dir(out: &Path) -> Result<(), RecordError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(RecordError::NotPrivate { path: out.to_owned(), mode });
            }
            Ok(())
        }
        Ok(_) => Err(RecordError::NotADirectory { path: out.to_owned() }),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .map_err(|source| RecordError::Io { action: "create", path: out.to_owned(), source }),
    }
}

fn open_sink(out: &Path, max_bytes: u64) -> Result<Sink, RecordError> {
    private_dir(out)?;
    let path = out.join(FILE_NAME);
    let sink = Sink::create(&path).map_err(|source| RecordError::Io { action: "create", path, source })?;
    Ok(sink.with_limit(max_bytes))
}

/// Serves the proxy until the future is dropped (by a signal, see `termination`); the
/// listening socket is removed on the way out.
pub async fn serve(options: &RecordOptions) -> Result<std::convert::Infallible, RecordError> {
    let sink = open_sink(&options.out, options.max_bytes)?;
    tokio::select! {
        served = serve_into(options, sink.clone(), None, Arc::new(AtomicU64::new(0)), None) => served,
        () = sink.full() => Err(RecordError::LimitReached { out: options.out.clone(), max_bytes: options.max_bytes }),
    }
}

async fn serve_into(
    options: &RecordOptions,
    sink: Sink,
    started: Option<Started>,
    daemon_ends_open: Arc<AtomicU64>,
    gate: Option<Gate>,
) -> Result<std::convert::Infallible, RecordError> {
    let listener = UnixListener::bind(&options.listen).map_err(|source| RecordError::Io {
        action: "listen on",
        path: options.listen.clone(),
        source,
    })?;
    let _remove = RemoveOnDrop(options.listen.clone());
    sink.record(&Event::Recording {
        version: FORMAT_VERSION,
        upstream: Some(options.upstream.clone()),
        listen: Some(options.listen.clone()),
        command: started.as_ref().map(|s| s.command.clone()),
        pid: started.as_ref().map(|s| s.pid),
    });
    if let Some(started) = started {
        sink.record(&started.listening);
    }
    let connections = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (client, _) =
            listener.accept().await.map_err(|source| RecordError::Accept { path: options.listen.clone(), source })?;
        let conn = connections.fetch_add(1, Ordering::SeqCst) + 1;
        let (sink, upstream, open, gate) =
            (sink.clone(), options.upstream.clone(), daemon_ends_open.clone(), gate.clone());
        tasks.spawn(async move { relay(conn, client, &upstream, &sink, &open, gate).await });
        // Finished connections are reaped as new ones come.
        while tasks.try_join_next().is_some() {}
    }
}

/// The daemon `record_command` started, for the recording's first lines.
struct Started {
    command: Vec<String>,
    pid: u32,
    /// Its [`Event::DaemonListening`].
    listening: Event,
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One client connection and its connection to the daemon, until both sides closed.
async fn relay(
    conn: u64,
    client: UnixStream,
    upstream: &Path,
    sink: &Sink,
    daemon_ends_open: &AtomicU64,
    gate: Option<Gate>,
) {
    let daemon = match UnixStream::connect(upstream).await {
        Ok(d) => d,
        Err(e) => {
            sink.record(&Event::UpstreamRefused { conn, error: e.to_string() });
            return;
        }
    };
    daemon_ends_open.fetch_add(1, Ordering::SeqCst);
    sink.record(&Event::Open { conn });
    let (client_read, client_write) = client.into_split();
    let (daemon_read, daemon_write) = daemon.into_split();
    let last_piece = AtomicU64::new(monotonic_ns());
    let requests = pump(conn, Direction::Request, client_read, daemon_write, sink.clone(), None, &last_piece);
    let replies = async {
        pump(conn, Direction::Reply, daemon_read, client_write, sink.clone(), gate, &last_piece).await;
        daemon_ends_open.fetch_sub(1, Ordering::SeqCst);
    };
    tokio::join!(requests, replies);
}

/// How long after a piece passed the proxy keeps polling its connection instead of
/// sleeping in epoll. An API call is a request and its reply a few tens of microseconds
/// apart; a proxy that sleeps between them is woken twice per call, on another CPU, and
/// that wake-up (not the copying or the recording) is most of what a proxy adds. Polling
/// through the gap keeps the proxy's CPU awake and the call as fast as going direct
/// (`harness bench` prints the figure). It costs CPU only during a session: a connection
/// quiet this long goes back to sleeping.
const POLL_AFTER_PIECE: Duration = Duration::from_micros(200);

/// Whether a connection whose last piece passed at `last_piece_ns` (CLOCK_MONOTONIC) is
/// still polled rather than left to epoll.
pub(crate) fn still_polling(last_piece_ns: u64) -> bool {
    poll_between_pieces() && monotonic_ns().saturating_sub(last_piece_ns) < POLL_AFTER_PIECE.as_nanos() as u64
}

/// Whether polling can help: with one CPU the proxy would take it from the daemon it
/// waits for.
fn poll_between_pieces() -> bool {
    static MANY_CPUS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MANY_CPUS.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// A Unix stream end a proxy reads from: a whole stream (the injector) or a read half
/// (the recorder).
pub(crate) trait PollRead {
    /// Reads what is there now (`WouldBlock` when nothing is).
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Waits until a read would not block.
    async fn readable(&self) -> std::io::Result<()>;
}

impl PollRead for tokio::net::unix::OwnedReadHalf {
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        tokio::net::unix::OwnedReadHalf::try_read(self, buf)
    }

    async fn readable(&self) -> std::io::Result<()> {
        tokio::net::unix::OwnedReadHalf::readable(self).await
    }
}

impl PollRead for UnixStream {
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        UnixStream::try_read(self, buf)
    }

    async fn readable(&self) -> std::io::Result<()> {
        UnixStream::readable(self).await
    }
}

/// Reads what `from` has: while the connection's last piece is recent (`last_piece`, in
/// CLOCK_MONOTONIC ns), by trying and yielding to the runtime between tries (each yield
/// polls the reactor, and other connections go on), then by waiting for readiness.
pub(crate) async fn read_piece(from: &impl PollRead, buf: &mut [u8], last_piece: &AtomicU64) -> std::io::Result<usize> {
    loop {
        let polling = still_polling(last_piece.load(Ordering::Relaxed));
        if !polling {
            from.readable().await?;
        }
        match from.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if polling {
                    tokio::task::yield_now().await;
                }
            }
            read => return read,
        }
    }
}

/// Copies what `from` sends to `to`, one read at a time, recording each piece; when
/// `from` closes, `to` is shut down for writing (a half-close, as the peer did). With a
/// `gate`, each piece waits for the supervisor relay to pass on a connection the daemon
/// made before it sent the piece.
async fn pump(
    conn: u64,
    dir: Direction,
    from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    sink: Sink,
    gate: Option<Gate>,
    last_piece: &AtomicU64,
) {
    let (reader, writer) = match dir {
        Direction::Request => (Side::Client, Side::Daemon),
        Direction::Reply => (Side::Daemon, Side::Client),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut redactor = Redactor::default();
    let stage = |released: Vec<Released>| {
        for (t_ns, bytes) in released {
            sink.stage_at(t_ns, &Event::data(conn, dir, &bytes));
        }
    };
    // A fault in the redactor must neither end the session nor let a secret through: the
    // stream's bytes from there on are recorded as stars (lengths kept).
    let redacted = |redactor: &mut Redactor, work: &dyn Fn(&mut Redactor) -> Vec<Released>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(redactor))).unwrap_or_else(|_| {
            *redactor = Redactor::masking_everything();
            Vec::new()
        })
    };
    loop {
        let read = read_piece(&from, &mut buf, last_piece).await;
        match read {
            Ok(0) | Err(_) => {
                stage(redacted(&mut redactor, &|r| r.finish()));
                sink.record(&Event::Close { conn, side: reader });
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                if let Some(gate) = &gate {
                    gate.wait().await;
                }
                // Stamped when it passed; recorded once its message is whole and redacted.
                let passed_at = monotonic_ns();
                let passed = to.write_all(&buf[..n]).await;
                let piece = &buf[..n];
                stage(redacted(&mut redactor, &|r| r.push(passed_at, piece)));
                sink.flush();
                last_piece.store(monotonic_ns(), Ordering::Relaxed);
                if passed.is_err() {
                    stage(redacted(&mut redactor, &|r| r.finish()));
                    sink.record(&Event::Close { conn, side: writer });
                    return;
                }
            }
        }
    }
}
