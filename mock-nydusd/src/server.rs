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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};

use crate::http::{Parsed, Request, Response, parse};
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
    /// The script and its call counters; replaced through the control socket.
    pub script: std::sync::Mutex<ScriptRunner>,
    /// When the process started (scripts' time conditions).
    pub started: Instant,
    /// Which process of its daemon this is (scripts' `when.process`).
    pub process: u32,
    /// Bumped to make every open API connection hang up (`hang_up_all`).
    pub hang_up: watch::Sender<u64>,
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
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // dbs-uhttp parses everything it has read before answering; a framing error drops
        // the requests parsed before it ("All previous unanswered requests will be dropped").
        let mut batch = Vec::new();
        let mut invalid = None;
        loop {
            match parse(&buf) {
                Parsed::Incomplete => break,
                Parsed::Request(request, used) => {
                    buf.drain(..used);
                    batch.push(request);
                }
                Parsed::Invalid(reason) => {
                    buf.clear();
                    invalid = Some(reason);
                    break;
                }
            }
        }
        if let Some(reason) = invalid {
            shared.journal.record("library_error", json!({ "reason": reason, "dropped_requests": batch.len() }));
            if stream.write_all(&Response::library_error(&reason).encode()).await.is_err() {
                return;
            }
            continue;
        }
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
}

/// Answers one request: through the first script rule that fires, or normally.
async fn serve_request(shared: &Shared, stream: &mut UnixStream, request: &Request) -> Flow {
    let mut model = shared.model.lock().await;
    let incoming = Incoming {
        method: &request.method,
        path: &request.path,
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
    let mut answered = false;
    for action in &fired.actions {
        match action {
            Action::DelayMs(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Action::Reply => {
                answered = true;
                if let Flow::Close = answer(shared, stream, &mut model, request).await {
                    return Flow::Close;
                }
            }
            Action::Respond(respond) => {
                answered = true;
                let mut response = Response::json(respond.status, respond.body.clone());
                if let Some(length) = respond.content_length {
                    response = response.with_content_length(length);
                }
                if stream.write_all(&response.encode()).await.is_err() {
                    return Flow::Close;
                }
            }
            Action::Raw(bytes) => {
                answered = true;
                if stream.write_all(bytes.as_bytes()).await.is_err() {
                    return Flow::Close;
                }
            }
            Action::Hang => return Flow::Hang,
            Action::Close => {
                let _ = stream.shutdown().await;
                return Flow::Close;
            }
            Action::HangUpAll => {
                shared.journal.record("hang_up_all", json!({}));
                let _ = stream.shutdown().await;
                shared.hang_up.send_modify(|n| *n += 1);
                return Flow::Close;
            }
            Action::State(state) => {
                let before = model.state();
                model.force_state((*state).into());
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
    }
    if answered { Flow::Continue } else { answer(shared, stream, &mut model, request).await }
}

/// The daemon's own answer to `request`.
async fn answer(shared: &Shared, stream: &mut UnixStream, model: &mut Model, request: &Request) -> Flow {
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
    if reply.after == After::Abort {
        shared.journal.record("abort", json!({ "path": request.path }));
        crate::death::abort();
    }
    let written = stream.write_all(&reply.response.encode()).await;
    if reply.after == After::Exit {
        let _ = stream.flush().await;
        let _ = shared.shutdown.send(true);
    }
    if written.is_err() { Flow::Close } else { Flow::Continue }
}
