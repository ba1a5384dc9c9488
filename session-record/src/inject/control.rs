//! The injector's control socket: the mock's `/script`, `/journal` and `/state`, so that a
//! scenario steers a real daemon's faults as it steers the mock's. The FUSE endpoints are
//! the mock's own (a real nydusd's FUSE reads cannot be held) and answer 404.

use std::sync::Arc;

use mock_nydusd::script::{Script, ScriptRunner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::Injector;
use super::relay::MAX_REQUEST;
use crate::http::frame;

/// Accepts control connections until the injector ends.
pub(super) async fn serve(listener: UnixListener, injector: Arc<Injector>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, injector.clone()));
            }
            Err(e) => {
                injector.journal.record("control_accept_failed", json!({ "error": e.to_string() }));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(mut stream: UnixStream, injector: Arc<Injector>) {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some((request, len)) = frame(&bytes) {
            bytes.drain(..len);
            let (status, body) = respond(&injector, request.method(), request.path(), &request.body);
            let head = format!(
                "HTTP/1.1 {status} \r\nServer: Nydus API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if stream.write_all(&[head.as_bytes(), body.as_bytes()].concat()).await.is_err() {
                return;
            }
        }
        if bytes.len() > MAX_REQUEST {
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

fn error(status: u16, message: &str) -> (u16, String) {
    (status, json!({ "error": message }).to_string())
}

fn respond(injector: &Injector, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    match (method, path) {
        ("GET", "/script") => {
            let runner = injector.script.lock().unwrap_or_else(|e| e.into_inner());
            (200, serde_json::to_string(runner.script()).expect("scripts serialise"))
        }
        ("PUT", "/script") => {
            let text = String::from_utf8_lossy(body);
            let parsed = Script::parse(&text, "control socket").map_err(|e| e.to_string()).and_then(|script| {
                super::refuse_mock_only(&script, "control socket").map(|()| script).map_err(|e| e.to_string())
            });
            match parsed {
                Ok(script) => {
                    injector.journal.record("script_replaced", json!({ "rules": script.rules.len() }));
                    *injector.script.lock().unwrap_or_else(|e| e.into_inner()) = ScriptRunner::new(script);
                    (204, String::new())
                }
                Err(e) => error(400, &e),
            }
        }
        ("DELETE", "/script") => {
            injector.journal.record("script_replaced", json!({ "rules": 0 }));
            *injector.script.lock().unwrap_or_else(|e| e.into_inner()) = ScriptRunner::new(Script::default());
            (204, String::new())
        }
        ("GET", "/journal") => {
            let lines = injector.journal.recent_lines();
            let joined: Vec<&str> = lines.iter().map(|l| &**l).collect();
            (200, format!("[{}]", joined.join(",")))
        }
        ("GET", "/state") => (
            200,
            json!({
                "state": injector.state().as_str(),
                "pid": std::process::id(),
                "uptime_ms": injector.started.elapsed().as_millis() as u64,
                "reported_by": "nydusd",
            })
            .to_string(),
        ),
        (_, "/fuse" | "/fuse/hold-reads") => {
            error(404, "no FUSE session of the injector's: a real nydusd's FUSE reads cannot be held")
        }
        (_, "/script" | "/journal" | "/state") => error(405, "method not allowed"),
        (_, path) => error(404, &format!("no control endpoint {path}; try /script, /journal or /state")),
    }
}
