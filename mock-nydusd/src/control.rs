//! The control socket (`--mock-control`): a small HTTP API, separate from nydusd's, through
//! which tests and engineers steer a running mock. Try it with
//! `curl --unix-socket <path> http://mock/journal`.
//!
//! | request | effect |
//! |---|---|
//! | `GET /script` | the current script as JSON |
//! | `PUT /script` (YAML or JSON body) | replaces the script, counters from zero; 400 names the rule and field |
//! | `DELETE /script` | removes every rule |
//! | `GET /journal` | the journal's newest entries as a JSON array |
//! | `GET /state` | `{"state":..,"pid":..,"uptime_ms":..}` |
//! | `GET /fuse` | `{"held_reads":..,"failover":..}`: READ requests held, and the failover policy's outcome after a takeover; 404 without a FUSE session |
//! | `PUT /fuse/hold-reads` | from now on READ requests are taken from `/dev/fuse` and never answered (a daemon dying mid-read); 404 without a FUSE session |

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::framing::Framer;
use crate::http::{Request, Response};
use crate::script::{Script, ScriptRunner};
use crate::server::Shared;

/// Accepts control connections until the process ends. An accept error (EMFILE when
/// the process is out of fds) is journalled and the loop goes on after a pause; before,
/// the first one closed the control socket for good.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                shared.journal.record("control_accept_failed", json!({ "error": e.to_string() }));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// The control API is the mock's own, so it is a clean server: it waits for the rest of a
/// request that arrives in pieces and closes the connection on a framing error.
async fn connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let mut framer = Framer::new();
    loop {
        let n = match stream.read(framer.space()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let received = framer.received(n);
        if !received.interim.is_empty() && stream.write_all(&received.interim).await.is_err() {
            return;
        }
        if let Some(reason) = received.rejected {
            let _ = stream.write_all(&Response::library_error(&reason).encode()).await;
            return;
        }
        for request in received.requests {
            if handle(&shared, &request).await.write_to(&mut stream).await.is_err() {
                return;
            }
        }
    }
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "error": message }).to_string())
}

/// A control reply: whole, or the journal, which is written entry by entry.
#[derive(Debug)]
pub enum Reply {
    /// A reply built in memory.
    Whole(Response),
    /// The journal's entries in memory, as a JSON array.
    Journal(Vec<Arc<str>>),
}

impl Reply {
    /// The bytes on the wire, built in memory (tests and fuzzing).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Whole(response) => response.encode(),
            Self::Journal(lines) => {
                let (mut out, body) = journal_reply(lines);
                body.for_each(|piece| out.extend_from_slice(piece));
                out
            }
        }
    }

    /// Writes the reply; the journal goes out in pieces through a small buffer, so serving
    /// it costs no more memory than the entries already take.
    pub async fn write_to(&self, stream: &mut UnixStream) -> std::io::Result<()> {
        let Self::Journal(lines) = self else {
            return stream.write_all(&self.encode()).await;
        };
        let (head, body) = journal_reply(lines);
        let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, stream);
        out.write_all(&head).await?;
        for piece in body {
            out.write_all(piece).await?;
        }
        out.flush().await
    }
}

/// The journal reply: its head (the length is the entries', one separator or bracket
/// each, and the closing bracket), and the body in pieces, so that it can be streamed.
fn journal_reply(lines: &[Arc<str>]) -> (Vec<u8>, impl Iterator<Item = &[u8]>) {
    let length = lines.iter().map(|l| l.len() + 1).sum::<usize>() + 1 + usize::from(lines.is_empty());
    let head = format!(
        "HTTP/1.1 200 \r\nServer: Nydus API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    let entries = lines
        .iter()
        .enumerate()
        .flat_map(|(i, line)| [if i == 0 { b"[".as_slice() } else { b",".as_slice() }, line.as_bytes()]);
    let end: &[u8] = if lines.is_empty() { b"[]" } else { b"]" };
    (head.into_bytes(), entries.chain(std::iter::once(end)))
}

/// The reply to one control request.
pub async fn handle(shared: &Shared, request: &Request) -> Reply {
    if (request.method.as_str(), request.path.as_str()) == ("GET", "/journal") {
        return Reply::Journal(shared.journal.recent_lines());
    }
    Reply::Whole(respond(shared, request).await)
}

async fn respond(shared: &Shared, request: &Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/script") => {
            let runner = shared.script.lock().unwrap_or_else(|e| e.into_inner());
            Response::json(200, serde_json::to_string(runner.script()).expect("scripts serialise"))
        }
        ("PUT", "/script") => {
            let text = String::from_utf8_lossy(request.body.as_deref().unwrap_or_default()).into_owned();
            match Script::parse(&text, "control socket") {
                Ok(script) => {
                    shared.journal.record("script_replaced", json!({ "rules": script.rules.len() }));
                    *shared.script.lock().unwrap_or_else(|e| e.into_inner()) = ScriptRunner::new(script);
                    Response::no_content()
                }
                Err(e) => error(400, &e.to_string()),
            }
        }
        ("DELETE", "/script") => {
            shared.journal.record("script_replaced", json!({ "rules": 0 }));
            *shared.script.lock().unwrap_or_else(|e| e.into_inner()) = ScriptRunner::default();
            Response::no_content()
        }
        ("GET", "/fuse") => match shared.model.lock().await.fuse_session() {
            Some(session) => Response::json(
                200,
                json!({ "held_reads": session.held_reads(), "failover": session.failover() }).to_string(),
            ),
            None => error(404, "no FUSE session: the mock serves one with --mock-fuse and a mount"),
        },
        ("PUT", "/fuse/hold-reads") => match shared.model.lock().await.fuse_session() {
            Some(session) => {
                session.hold_reads();
                shared.journal.record("fuse_hold_reads", json!({}));
                Response::no_content()
            }
            None => error(404, "no FUSE session: the mock serves one with --mock-fuse and a mount"),
        },
        ("GET", "/state") => {
            let state = shared.model.lock().await.state();
            Response::json(
                200,
                json!({
                    "state": state.as_str(),
                    "pid": std::process::id(),
                    "uptime_ms": shared.started.elapsed().as_millis() as u64,
                })
                .to_string(),
            )
        }
        (_, "/script" | "/journal" | "/state") => error(405, "method not allowed"),
        (_, path) => error(404, &format!("no control endpoint {path}; try /script, /journal or /state")),
    }
}
