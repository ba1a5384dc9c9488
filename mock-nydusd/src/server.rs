//! The API socket: an accept loop and one task per connection.
//!
//! Requests from all connections go through one lock, so they are handled strictly one
//! at a time as in nydusd (§1.6), scripted delays included. Connections are never closed
//! by the server unless a script says so: the snapshotter's liveness monitor holds an
//! idle one and reads a hang-up as death.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};

use crate::framing::Framer;
use crate::http::{Request, Response};
use crate::journal::Journal;
use crate::model::{After, Model};
use crate::routes::route;
use crate::script::{Action, Incoming, ScriptRunner};

/// Shared state of the running daemon.
#[derive(Debug)]
pub struct Shared {
    /// The model; the lock is what serialises requests.
    pub model: Mutex<Model>,
    /// The journal.
    pub journal: Journal,
    /// Set to request a graceful shutdown (exit API).
    pub shutdown: watch::Sender<bool>,
    /// Set when a stop signal arrived: a scripted delay ends at once (its request gets no
    /// reply), so the stop does not wait behind it for the request lock. nydusd's signal
    /// handler does not wait for its API thread either.
    pub stopping: watch::Sender<bool>,
    /// The script and its call counters; replaced through the control socket.
    pub script: std::sync::Mutex<ScriptRunner>,
    /// When the process started (scripts' time conditions).
    pub started: Instant,
    /// Which process of its daemon this is (scripts' `when.process`).
    pub process: u32,
    /// Bumped to make every open API connection hang up (`hang_up_all`).
    pub hang_up: watch::Sender<u64>,
    /// How long a partial request waits for its rest before nydusd's spurious 500
    /// ([`PARTIAL_READ_GRACE`]); `None` waits as long as it takes.
    pub partial_read_grace: Option<Duration>,
}

impl Shared {
    /// A daemon's shared state with nothing signalled yet; returns the receiver of the
    /// graceful-shutdown request (the exit API). Fields added later get their idle value
    /// here, so embedders (the fuzz targets) keep compiling.
    pub fn new(
        model: Model,
        journal: Journal,
        script: ScriptRunner,
        process: u32,
        partial_read_grace: Option<Duration>,
    ) -> (Self, watch::Receiver<bool>) {
        let (shutdown, shutdown_requested) = watch::channel(false);
        let shared = Shared {
            model: Mutex::new(model),
            journal,
            shutdown,
            stopping: watch::channel(false).0,
            script: std::sync::Mutex::new(script),
            started: Instant::now(),
            process,
            hang_up: watch::channel(0).0,
            partial_read_grace,
        };
        (shared, shutdown_requested)
    }
}

/// dbs-uhttp's reply to a connection beyond its limit, sent raw before closing it.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{ \"error\": \"Too many open connections\" }";

/// Counts a connection as open until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until the process ends; beyond `max_connections` open ones, a new
/// connection gets [`TOO_MANY_CONNECTIONS`] and is closed.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, max_connections: usize) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                if open.load(Ordering::SeqCst) >= max_connections {
                    shared.journal.record("connection_refused", json!({ "open": max_connections }));
                    tokio::spawn(async move {
                        let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
                    });
                    continue;
                }
                open.fetch_add(1, Ordering::SeqCst);
                let guard = OpenConnection(open.clone());
                let shared = shared.clone();
                // Subscribed at accept, so a hang-up from here on reaches this connection.
                let hang_up = shared.hang_up.subscribe();
                tokio::spawn(async move {
                    connection(stream, shared, hang_up).await;
                    drop(guard);
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// What a connection does after one request.
enum Flow {
    /// Read the next request.
    Continue,
    /// Drop the connection.
    Close,
    /// Keep the connection open and never answer on it again.
    Hang,
}

async fn connection(stream: UnixStream, shared: Arc<Shared>, mut hang_up: watch::Receiver<u64>) {
    tokio::select! {
        () = serve_connection(stream, shared.clone()) => {}
        _ = hang_up.changed() => {}
    }
}

async fn serve_connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let mut framer = Framer::new();
    loop {
        let (interim, end) = read_phase(&mut stream, &mut framer, shared.partial_read_grace).await;
        if !interim.is_empty() && stream.write_all(&interim).await.is_err() {
            return;
        }
        match end {
            PhaseEnd::Closed => return,
            PhaseEnd::Requests(batch) => {
                for request in batch {
                    match serve_request(&shared, &mut stream, &request).await {
                        Flow::Continue => {}
                        Flow::Close => return,
                        Flow::Hang => {
                            // Holding the stream keeps the connection open; nothing is read or written.
                            std::future::pending::<()>().await;
                        }
                    }
                }
            }
            PhaseEnd::Rejected { reason, dropped } => {
                shared
                    .journal
                    .record("library_error", json!({ "status": 400, "reason": reason.to_string(), "dropped_requests": dropped }));
                if stream.write_all(&Response::library_error(&reason).encode()).await.is_err() {
                    return;
                }
            }
            PhaseEnd::PartialRead => {
                let reply = Response::partial_read();
                let reason = String::from_utf8_lossy(&reply.body).into_owned();
                shared
                    .journal
                    .record("library_error", json!({ "status": 500, "reason": reason, "buffered": framer.buffered() }));
                if stream.write_all(&reply.encode()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How nydusd waits for the rest of a request that arrived in pieces: dbs-uhttp retries a
/// read that would block 32 times, 20 µs apart, and then answers the `EAGAIN` as a 500 (and
/// the request's own reply follows once the rest arrives). Measured against nydusd 2.2
/// here, a pause of 2 ms between pieces never drew the 500 and one of 15 ms always did.
pub const PARTIAL_READ_GRACE: Duration = Duration::from_millis(3);

/// How a read phase ended.
enum PhaseEnd {
    /// The peer hung up or shut down its side: the connection is closed unanswered.
    Closed,
    /// Requests to answer, in order.
    Requests(Vec<crate::http::Request>),
    /// The library rejected the bytes; `dropped` requests of the same read go unanswered.
    Rejected { reason: crate::framing::Rejected, dropped: usize },
    /// The request is incomplete and no more bytes came within the grace.
    PartialRead,
}

/// Reads as dbs-uhttp does on one readable event: until a read completes at least one
/// request, the bytes are rejected, or (with a `grace`) a read would block for longer than
/// it. Also returns the interim replies queued on the way.
async fn read_phase(stream: &mut UnixStream, framer: &mut Framer, grace: Option<Duration>) -> (Vec<u8>, PhaseEnd) {
    let mut interim = Vec::new();
    let mut budget = grace;
    let mut first = true;
    loop {
        let n = match stream.try_read(framer.space()) {
            Ok(0) => return (interim, PhaseEnd::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Waiting for a phase's first bytes costs nothing; later waits come out of
                // the grace.
                match (first, budget) {
                    (false, Some(left)) => {
                        let waited = Instant::now();
                        if tokio::time::timeout(left, stream.readable()).await.is_err() {
                            return (interim, PhaseEnd::PartialRead);
                        }
                        budget = Some(left.saturating_sub(waited.elapsed()));
                    }
                    _ => {
                        if stream.readable().await.is_err() {
                            return (interim, PhaseEnd::Closed);
                        }
                    }
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (interim, PhaseEnd::Closed),
        };
        first = false;
        let received = framer.received(n);
        interim.extend_from_slice(&received.interim);
        if let Some(reason) = received.rejected {
            return (interim, PhaseEnd::Rejected { reason, dropped: received.dropped });
        }
        if !received.requests.is_empty() {
            return (interim, PhaseEnd::Requests(received.requests));
        }
    }
}

/// Answers one request: through the first script rule that fires, or normally.
async fn serve_request(shared: &Shared, stream: &mut UnixStream, request: &Request) -> Flow {
    let mut model = shared.model.lock().await;
    let incoming = Incoming {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        body: request.body.as_deref(),
        state: model.state(),
        since_start_ms: shared.started.elapsed().as_millis() as u64,
        process: shared.process,
    };
    let fired = shared.script.lock().unwrap_or_else(|e| e.into_inner()).on_request(incoming);
    let Some(fired) = fired else {
        return answer(shared, stream, &mut model, request).await;
    };
    shared.journal.record(
        "script",
        json!({
            "rule": fired.index + 1,
            "name": fired.name,
            "call": fired.call,
            "method": request.method,
            "path": request.path,
            "actions": fired.actions,
        }),
    );
    let (mut answered, mut discarded) = (false, false);
    for action in &fired.actions {
        match perform(shared, stream, &mut model, request, action).await {
            Performed::Went { answered: true } => answered = true,
            Performed::Went { answered: false } => {}
            Performed::Discarded => discarded = true,
            Performed::Ended(flow) => return flow,
        }
    }
    match (answered, discarded) {
        (true, _) => Flow::Continue,
        // The reply was thrown away and nothing answered instead: the client waits.
        (false, true) => Flow::Hang,
        (false, false) => answer(shared, stream, &mut model, request).await,
    }
}

/// What performing one scripted action came to.
enum Performed {
    /// The next action follows; `answered` when this one answered the request.
    Went { answered: bool },
    /// The daemon handled the request and its reply was thrown away.
    Discarded,
    /// The connection's flow ends here.
    Ended(Flow),
}

/// Performs one action of a fired rule.
async fn perform(
    shared: &Shared,
    stream: &mut UnixStream,
    model: &mut Model,
    request: &Request,
    action: &Action,
) -> Performed {
    let answers = matches!(action, Action::Reply | Action::Respond(_) | Action::Raw(_));
    match action {
        Action::DelayMs(ms) => {
            let mut stopping = shared.stopping.subscribe();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                _ = stopping.wait_for(|s| *s) => return Performed::Ended(Flow::Close),
            }
        }
        Action::Reply => {
            if let Flow::Close = answer(shared, stream, model, request).await {
                return Performed::Ended(Flow::Close);
            }
        }
        Action::DiscardReply => {
            if handle(shared, model, request).after == After::Exit {
                let _ = shared.shutdown.send(true);
            }
            return Performed::Discarded;
        }
        Action::Respond(respond) => {
            if stream.write_all(&respond.encode()).await.is_err() {
                return Performed::Ended(Flow::Close);
            }
        }
        Action::Raw(bytes) => {
            if stream.write_all(bytes.as_bytes()).await.is_err() {
                return Performed::Ended(Flow::Close);
            }
        }
        Action::Hang => return Performed::Ended(Flow::Hang),
        Action::Close => {
            let _ = stream.shutdown().await;
            return Performed::Ended(Flow::Close);
        }
        Action::HangUpAll => {
            shared.journal.record("hang_up_all", json!({}));
            let _ = stream.shutdown().await;
            shared.hang_up.send_modify(|n| *n += 1);
            return Performed::Ended(Flow::Close);
        }
        Action::State(state) => {
            let before = model.state();
            model.force_state(*state);
            shared.journal.record(
                "state",
                json!({ "from": before.as_str(), "to": model.state().as_str(), "scripted": true }),
            );
        }
        Action::Exit(code) => {
            shared.journal.record("exit", json!({ "code": code, "scripted": true }));
            std::process::exit(*code);
        }
        Action::Signal(name) => {
            shared.journal.record("raise", json!({ "signal": name }));
            crate::death::raise_signal(name.signal());
        }
    }
    Performed::Went { answered: answers }
}

/// The daemon's own answer to `request`.
async fn answer(shared: &Shared, stream: &mut UnixStream, model: &mut Model, request: &Request) -> Flow {
    let reply = handle(shared, model, request);
    let written = stream.write_all(&reply.response.encode()).await;
    if reply.after == After::Exit {
        let _ = stream.flush().await;
        let _ = shared.shutdown.send(true);
    }
    if written.is_err() { Flow::Close } else { Flow::Continue }
}

/// The daemon handles `request`, journalled, without writing the reply.
fn handle(shared: &Shared, model: &mut Model, request: &Request) -> crate::model::Reply {
    let before = model.state();
    let reply = tokio::task::block_in_place(|| model.handle(route(request)));
    let after_state = model.state();
    shared.journal.record(
        "request",
        json!({
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "status": reply.response.status,
        }),
    );
    if before != after_state {
        shared.journal.record("state", json!({ "from": before.as_str(), "to": after_state.as_str() }));
    }
    if request.path == "/api/v1/daemon/fuse/takeover"
        && let Some(outcome) = model.fuse_session().and_then(|s| s.failover())
    {
        shared.journal.record("fuse_failover_policy", json!(outcome));
    }
    if reply.after == After::Abort {
        shared.journal.record("abort", json!({ "path": request.path }));
        crate::death::abort();
    }
    reply
}
