//! One client connection through the injector: its requests cut out one by one, each
//! matched against the script and passed on, answered instead, held or dropped; nydusd's
//! reply to each read whole before the next request is taken.
//!
//! Bytes that do not frame as a request (a head that is not text, a head or body past
//! [`MAX_REQUEST`]) are nydusd's HTTP library's business: from there on the connection
//! is relayed as it comes, unmatched, so nydusd answers them itself.

use std::sync::Arc;
use std::time::Duration;

use mock_nydusd::journal::monotonic_ns;
use mock_nydusd::script::{Action, Incoming, State};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::Injector;
use crate::http::{Message, frame};

/// The most a request may take before it is whole; beyond, the connection is relayed
/// unmatched. nydusd's library refuses requests far smaller (51 200 bytes), and the
/// mock's scripts are bounded alike.
pub(super) const MAX_REQUEST: usize = 1024 * 1024;

/// The most a reply may take before it is whole (an instance list with large
/// configurations); beyond, the connection is relayed unmatched.
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// What a connection does after one request.
enum Flow {
    /// Take the next request.
    Continue,
    /// Close both ends.
    Close,
    /// Keep the connection open and never answer on it again.
    Hang,
    /// Relay the rest unmatched.
    Unmatched,
}

/// The two ends and the bytes read from each but not yet used.
struct Ends {
    client: UnixStream,
    daemon: UnixStream,
    /// Client bytes not yet taken as a request.
    requests: Vec<u8>,
    /// nydusd bytes not yet taken as a reply.
    replies: Vec<u8>,
    /// Where each end's reads land, reused for every read of the connection.
    from_client: Vec<u8>,
    from_daemon: Vec<u8>,
}

/// The most one read takes from either end.
const READ_SIZE: usize = 64 * 1024;

/// Serves `client` until either end closes or every connection is hung up.
pub(super) async fn connection(client: UnixStream, injector: Arc<Injector>) {
    let mut hang_up = injector.hang_up.subscribe();
    tokio::select! {
        () = serve(client, &injector) => {}
        _ = hang_up.changed() => {}
    }
}

async fn serve(client: UnixStream, injector: &Injector) {
    let daemon = match UnixStream::connect(&injector.upstream).await {
        Ok(daemon) => daemon,
        Err(e) => {
            // nydusd is not listening any more: the client sees its connection closed.
            injector.journal.record("upstream_refused", json!({ "error": e.to_string() }));
            return;
        }
    };
    let _relaying = Relaying::count(injector);
    let mut ends = Ends {
        client,
        daemon,
        requests: Vec::new(),
        replies: Vec::new(),
        from_client: vec![0u8; READ_SIZE],
        from_daemon: vec![0u8; READ_SIZE],
    };
    loop {
        loop {
            let flow = match take_request(&mut ends.requests) {
                Taken::Request(message) => exchange(injector, &mut ends, &message).await,
                Taken::Partial => break,
                Taken::Unframed => Flow::Unmatched,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => return,
                Flow::Hang => return hold(ends).await,
                Flow::Unmatched => return unmatched(ends).await,
            }
        }
        match next_read(&mut ends).await {
            Read::Client(n) => {
                let Ends { requests, from_client, .. } = &mut ends;
                requests.extend_from_slice(&from_client[..n]);
            }
            Read::ClientClosed => return,
            // Bytes nydusd sends unasked (or its close) pass on at once: the liveness
            // monitor's idle connection reads a hang-up as the death it is.
            Read::Daemon(n) => {
                let Ends { client, from_daemon, .. } = &mut ends;
                if client.write_all(&from_daemon[..n]).await.is_err() {
                    return;
                }
            }
            Read::DaemonClosed => {
                let _ = ends.client.shutdown().await;
                return;
            }
        }
    }
}

/// What came first on an idle connection.
enum Read {
    Client(usize),
    ClientClosed,
    Daemon(usize),
    DaemonClosed,
}

/// The next bytes from either end. Right after an exchange the ends are polled (see
/// [`crate::proxy::still_polling`]): a client's next call usually follows within
/// microseconds, and a wake-up from epoll costs more than the whole relay.
async fn next_read(ends: &mut Ends) -> Read {
    let quiet_since = monotonic_ns();
    loop {
        let polling = crate::proxy::still_polling(quiet_since);
        if !polling {
            tokio::select! {
                _ = ends.client.readable() => {}
                _ = ends.daemon.readable() => {}
            }
        }
        match ends.client.try_read(&mut ends.from_client) {
            Ok(0) => return Read::ClientClosed,
            Ok(n) => return Read::Client(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Read::ClientClosed,
        }
        match ends.daemon.try_read(&mut ends.from_daemon) {
            Ok(0) => return Read::DaemonClosed,
            Ok(n) => return Read::Daemon(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Read::DaemonClosed,
        }
        if polling {
            tokio::task::yield_now().await;
        }
    }
}

/// Counts a connection to nydusd as open in [`Injector::relaying`] until dropped.
struct Relaying<'a>(&'a Injector);

impl<'a> Relaying<'a> {
    fn count(injector: &'a Injector) -> Self {
        injector.relaying.send_modify(|open| *open += 1);
        Self(injector)
    }
}

impl Drop for Relaying<'_> {
    fn drop(&mut self) {
        self.0.relaying.send_modify(|open| *open -= 1);
    }
}

/// What the start of the client's bytes holds.
enum Taken {
    /// A whole request, taken out.
    Request(Message),
    /// Not yet a whole request.
    Partial,
    /// Bytes that will never frame here.
    Unframed,
}

fn take_request(bytes: &mut Vec<u8>) -> Taken {
    if bytes.is_empty() {
        return Taken::Partial;
    }
    if let Some((mut message, len)) = frame(bytes) {
        message.raw = bytes.drain(..len).collect();
        return Taken::Request(message);
    }
    let head_whole = bytes.windows(4).any(|w| w == b"\r\n\r\n");
    if bytes.len() > MAX_REQUEST || (head_whole && !head_is_text(bytes)) { Taken::Unframed } else { Taken::Partial }
}

fn head_is_text(bytes: &[u8]) -> bool {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).is_ok()
}

/// The client's connection kept open and never answered again, until nydusd closes its
/// side (its death), as a hung connection of the mock's lasts until the mock's death.
async fn hold(mut ends: Ends) {
    while matches!(ends.daemon.read(&mut ends.from_daemon).await, Ok(n) if n > 0) {}
}

/// The rest of the connection relayed as it comes, both ways.
async fn unmatched(mut ends: Ends) {
    if !ends.requests.is_empty() && ends.daemon.write_all(&ends.requests).await.is_err() {
        return;
    }
    if !ends.replies.is_empty() && ends.client.write_all(&ends.replies).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut ends.client, &mut ends.daemon).await;
}

/// One request: matched against the script, then answered as the rule says (or passed
/// on when none fires).
async fn exchange(injector: &Injector, ends: &mut Ends, request: &Message) -> Flow {
    let _turn = injector.turn.lock().await;
    if injector.dying.load(std::sync::atomic::Ordering::SeqCst) {
        return Flow::Hang;
    }
    let incoming = Incoming {
        method: request.method(),
        path: request.path(),
        query: request.query(),
        body: (!request.body.is_empty()).then_some(request.body.as_slice()),
        state: injector.state(),
        since_start_ms: injector.started.elapsed().as_millis() as u64,
        process: injector.process,
    };
    let fired = injector.script.lock().unwrap_or_else(|e| e.into_inner()).on_request(incoming);
    let Some(fired) = fired else { return pass_on(injector, ends, request, Deliver::Yes).await };
    injector.journal.record(
        "script",
        json!({
            "rule": fired.index + 1,
            "name": fired.name,
            "call": fired.call,
            "method": request.method(),
            "path": request.path(),
            "actions": fired.actions,
        }),
    );
    let (mut answered, mut discarded) = (false, false);
    for action in &fired.actions {
        match action {
            Action::DelayMs(ms) => {
                let mut stopping = injector.stopping.subscribe();
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                    _ = stopping.wait_for(|s| *s) => return Flow::Close,
                }
            }
            Action::Reply => {
                answered = true;
                match pass_on(injector, ends, request, Deliver::Yes).await {
                    Flow::Continue => {}
                    other => return other,
                }
            }
            Action::DiscardReply => {
                discarded = true;
                match pass_on(injector, ends, request, Deliver::No).await {
                    Flow::Continue => {}
                    other => return other,
                }
            }
            Action::Respond(respond) => {
                answered = true;
                if ends.client.write_all(&respond.encode()).await.is_err() {
                    return Flow::Close;
                }
            }
            Action::Raw(bytes) => {
                answered = true;
                if ends.client.write_all(bytes.as_bytes()).await.is_err() {
                    return Flow::Close;
                }
            }
            Action::Hang => return Flow::Hang,
            Action::Close => {
                let _ = ends.client.shutdown().await;
                return Flow::Close;
            }
            Action::HangUpAll => {
                injector.journal.record("hang_up_all", json!({}));
                let _ = ends.client.shutdown().await;
                injector.hang_up.send_modify(|n| *n += 1);
                return Flow::Close;
            }
            Action::State(_) => {
                // Refused when the injector started; never reached.
                injector.journal.record("unsupported", json!({ "action": "state" }));
            }
            Action::Exit(code) => {
                injector.exit(*code);
                // The injector ends with nydusd; the connection closes with it.
                return Flow::Hang;
            }
            Action::Signal(name) => {
                injector.raise(*name, json!({ "signal": name }));
                if name.is_fatal() {
                    // nydusd is dying and the injector follows it: nothing more is
                    // answered here, as the mock's own death answers nothing.
                    return Flow::Hang;
                }
            }
        }
    }
    match (answered, discarded) {
        (true, _) => Flow::Continue,
        // The reply was thrown away and nothing answered instead: the client waits.
        (false, true) => Flow::Hang,
        (false, false) => pass_on(injector, ends, request, Deliver::Yes).await,
    }
}

/// Whether nydusd's reply goes on to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deliver {
    Yes,
    /// Thrown away (`discard_reply`).
    No,
}

/// Passes `request` on to nydusd and (as `deliver` says) its reply back, journalling the
/// exchange as the mock journals its own.
async fn pass_on(injector: &Injector, ends: &mut Ends, request: &Message, deliver: Deliver) -> Flow {
    if ends.daemon.write_all(&request.raw).await.is_err() {
        let _ = ends.client.shutdown().await;
        return Flow::Close;
    }
    let reply = match read_reply(ends).await {
        Reply::Whole(reply) => reply,
        Reply::Closed => {
            // nydusd closed before its reply was whole (a death): what came of it passes
            // on, and the client's connection closes as nydusd's did.
            let _ = ends.client.write_all(&std::mem::take(&mut ends.replies)).await;
            let _ = ends.client.shutdown().await;
            return Flow::Close;
        }
        Reply::Unframed => return Flow::Unmatched,
    };
    observe(injector, request, &reply);
    let reply = report_the_managers_supervisor(injector, request, reply);
    injector.journal.record(
        "request",
        json!({ "method": request.method(), "path": request.path(), "query": request.query(), "status": reply.status() }),
    );
    if deliver == Deliver::No {
        return Flow::Continue;
    }
    // nydusd connects to the supervisor before it answers sendfd or takeover; the
    // manager relies on it, so the reply waits for that connection to be relayed.
    if let Some(gate) = &injector.gate {
        gate.wait().await;
    }
    if ends.client.write_all(&reply.raw).await.is_err() {
        return Flow::Close;
    }
    Flow::Continue
}

enum Reply {
    Whole(Message),
    Closed,
    Unframed,
}

/// nydusd's reply, its bytes polled for a moment first: a reply usually comes within
/// microseconds of its request.
async fn read_reply(ends: &mut Ends) -> Reply {
    let sent = std::sync::atomic::AtomicU64::new(monotonic_ns());
    loop {
        if let Some((mut message, len)) = frame(&ends.replies) {
            message.raw = ends.replies.drain(..len).collect();
            return Reply::Whole(message);
        }
        if ends.replies.len() > MAX_REPLY {
            return Reply::Unframed;
        }
        let Ends { daemon, replies, from_daemon, .. } = ends;
        match crate::proxy::read_piece(daemon, from_daemon, &sent).await {
            Ok(0) | Err(_) => return Reply::Closed,
            Ok(n) => replies.extend_from_slice(&from_daemon[..n]),
        }
    }
}

/// `GET /api/v1/daemon` with the supervisor socket the manager named in place of the
/// relay's, which nydusd was given instead: the one change the injector makes to a reply,
/// so that the manager (and `harness diff`) sees what nydusd reports of itself.
fn report_the_managers_supervisor(injector: &Injector, request: &Message, mut reply: Message) -> Message {
    let Some((relayed, original)) = &injector.supervisor_paths else { return reply };
    if (request.method(), request.path()) != ("GET", "/api/v1/daemon") {
        return reply;
    }
    let field = format!("\"supervisor\":{relayed}");
    let Some(at) = reply.body.windows(field.len()).position(|w| w == field.as_bytes()) else { return reply };
    let mut body = reply.body[..at].to_vec();
    body.extend_from_slice(format!("\"supervisor\":{original}").as_bytes());
    body.extend_from_slice(&reply.body[at + field.len()..]);
    let mut raw = Vec::with_capacity(reply.raw.len() + body.len());
    raw.extend_from_slice(reply.start.as_bytes());
    raw.extend_from_slice(b"\r\n");
    for (name, value) in &reply.headers {
        let value = if name.eq_ignore_ascii_case("content-length") { body.len().to_string() } else { value.clone() };
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&body);
    reply.body = body;
    reply.raw = raw;
    reply
}

/// The state nydusd reports, kept for `when.state`.
fn observe(injector: &Injector, request: &Message, reply: &Message) {
    if (request.method(), request.path(), reply.status()) != ("GET", "/api/v1/daemon", Some(200)) {
        return;
    }
    let reported = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|info| info["state"].as_str().and_then(|s| State::ALL.into_iter().find(|state| state.as_str() == s)));
    if let Some(state) = reported {
        *injector.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }
}
