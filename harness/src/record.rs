//! `harness record`: a transparent proxy on nydusd's API socket that records every byte
//! that passes, in both directions, with when and on which connection.
//!
//! Clients connect to the proxy's socket as if it were nydusd's; each connection gets one
//! of its own to the daemon. Whatever one side writes is written to the other as it was
//! read, in the same pieces and order, so keep-alive, pipelining and a request split
//! across writes reach nydusd as the client sent them. The proxy adds no bytes.
//!
//! # The recording (`DIR/recording.jsonl`)
//!
//! One JSON object per line, in the order the proxy saw things, each with `t_ns`
//! (CLOCK_MONOTONIC nanoseconds) and `event`:
//!
//! | event | fields | what |
//! |---|---|---|
//! | `recording` | `version` (1), `upstream`, `listen` | the first line |
//! | `open` | `conn` | a client connected, and its connection to the daemon is open |
//! | `upstream_refused` | `conn`, `error` | the daemon's socket refused it; the client's connection is closed |
//! | `data` | `conn`, `dir` (`request` or `reply`), `len`, `text` or `base64` | bytes read on one side and written to the other |
//! | `close` | `conn`, `side` (`client` or `daemon`) | that side closed its end; the other is shut down for writing |
//! | `daemon_exit` | `pid`, `code`, `signal`, `socket_left` | the daemon the recorder started ended (`record -- <command>`) |
//!
//! A chunk is `text` when it is UTF-8, else `base64`. Credentials in mount
//! configurations (`auth`, `registry_token`, passwords, access keys, tokens) are replaced
//! by `<redacted>` in the recording only; what passes through is never changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Version of the recording format.
pub const FORMAT_VERSION: u32 = 1;

/// Keys whose string values never reach a recording in clear.
const SECRET_KEYS: &[&str] =
    &["auth", "registry_token", "password", "proxy_password", "access_key_id", "access_key_secret", "token", "secret"];

/// Where the recording goes, line by line, flushed per line so that a killed recorder
/// leaves everything it saw.
#[derive(Debug, Clone)]
struct Sink(Arc<std::sync::Mutex<std::fs::File>>);

impl Sink {
    fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(path)?;
        Ok(Self(Arc::new(std::sync::Mutex::new(file))))
    }

    fn record(&self, event: &str, mut fields: Value) {
        use std::io::Write;
        fields["t_ns"] = mock_nydusd::journal::monotonic_ns().into();
        fields["event"] = event.into();
        let mut line = fields.to_string();
        line.push('\n');
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk loses the recording, never the session passing through.
        let _ = file.write_all(line.as_bytes());
    }
}

/// `bytes` as the recording keeps them: credentials redacted, as text when UTF-8.
fn chunk_fields(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": redact(text) }),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// `text` with the string value of every secret key replaced by `<redacted>`, whether it
/// is written as JSON (`"auth":"…"`) or as JSON inside a JSON string, as mount requests
/// carry their configuration (`\"auth\":\"…\"`).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for key in SECRET_KEYS {
            for quote in ["\\\"", "\""] {
                let pattern = format!("{quote}{key}{quote}");
                if !rest.starts_with(&pattern) {
                    continue;
                }
                let after_key = &rest[pattern.len()..];
                let trimmed = after_key.trim_start();
                let Some(after_colon) = trimmed.strip_prefix(':') else { continue };
                let value = after_colon.trim_start();
                let Some(inner) = value.strip_prefix(quote) else { continue };
                // The value ends at the next closing quote of the same kind.
                let end = string_end(inner, quote.len() > 1);
                let Some(end) = end else { continue };
                out.push_str(&rest[..rest.len() - inner.len()]);
                out.push_str("<redacted>");
                rest = &inner[end..];
                continue 'scan;
            }
        }
        let next = rest.chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out
}

/// The offset of the quote that closes a JSON string whose text starts `s`: one preceded
/// by an even number of backslashes, or, for a string inside a JSON string (`nested`),
/// written `\"` and so preceded by 1, 5, 9… (`\\\"` is an escaped quote inside it). For
/// `nested` the offset is that of the backslash, so the kept text resumes with `\"`.
fn string_end(s: &str, nested: bool) -> Option<usize> {
    let mut backslashes = 0;
    for (i, c) in s.char_indices() {
        match c {
            '\\' => backslashes += 1,
            '"' if !nested && backslashes % 2 == 0 => return Some(i),
            '"' if nested && backslashes % 4 == 1 => return Some(i - 1),
            _ => backslashes = 0,
        }
        if c == '"' {
            backslashes = 0;
        }
    }
    None
}

/// `argv` with its `--apisock` (`-A`, `--apisock=`) pointed at `moved`, and the path it
/// named; `None` when it names none.
pub fn move_apisock(argv: &[std::ffi::OsString], moved: &Path) -> Option<(Vec<std::ffi::OsString>, PathBuf)> {
    let mut out = Vec::with_capacity(argv.len());
    let mut original = None;
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if (text == "--apisock" || text == "-A") && original.is_none() {
            original = Some(PathBuf::from(args.next()?));
            out.push(arg.clone());
            out.push(moved.as_os_str().to_owned());
        } else if let Some(path) = text.strip_prefix("--apisock=").filter(|_| original.is_none()) {
            original = Some(PathBuf::from(path));
            out.push(format!("--apisock={}", moved.display()).into());
        } else {
            out.push(arg.clone());
        }
    }
    original.map(|o| (out, o))
}

/// Starts `argv` (a nydusd command line) with its API socket moved into the recording's
/// directory, and records on the path it named, so clients find the proxy where they
/// expect the daemon; ends when the daemon exits (recording its status) or when dropped,
/// which kills the daemon. Returns the daemon's exit status.
pub async fn record_command(argv: &[std::ffi::OsString], out: &Path) -> anyhow::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    std::fs::create_dir_all(out)?;
    let moved = out.join("upstream.sock");
    let (args, listen) = move_apisock(argv, &moved)
        .ok_or_else(|| anyhow::anyhow!("the command line names no --apisock for the proxy to take the place of"))?;
    let (program, rest) = args.split_first().ok_or_else(|| anyhow::anyhow!("no command to start"))?;
    let mut child = tokio::process::Command::new(program).args(rest).kill_on_drop(true).spawn()?;
    let pid = child.id().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !moved.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("{} exited ({status}) before its API socket appeared", program.to_string_lossy());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the daemon's API socket did not appear within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let options = RecordOptions { upstream: moved.clone(), listen, out: out.to_owned() };
    let proxy = serve(&options);
    tokio::pin!(proxy);
    // The proxy opens the recording; the daemon's start is its second line.
    tokio::task::yield_now().await;
    let status = tokio::select! {
        served = &mut proxy => match served? {},
        status = child.wait() => status?,
    };
    let sink = Sink(Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new().append(true).open(out.join("recording.jsonl"))?,
    )));
    sink.record(
        "daemon_exit",
        json!({ "pid": pid, "code": status.code(), "signal": status.signal(), "socket_left": moved.exists() }),
    );
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
}

/// Serves the proxy until the future is dropped (by a signal, see `termination`); the
/// listening socket is removed on the way out.
pub async fn serve(options: &RecordOptions) -> anyhow::Result<std::convert::Infallible> {
    std::fs::create_dir_all(&options.out)?;
    let sink = Sink::create(&options.out.join("recording.jsonl"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.out.join("recording.jsonl").display()))?;
    let listener = UnixListener::bind(&options.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen.display()))?;
    let _remove = RemoveOnDrop(options.listen.clone());
    sink.record(
        "recording",
        json!({ "version": FORMAT_VERSION, "upstream": options.upstream, "listen": options.listen }),
    );
    let connections = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (client, _) = listener.accept().await?;
        let conn = connections.fetch_add(1, Ordering::SeqCst) + 1;
        let (sink, upstream) = (sink.clone(), options.upstream.clone());
        tasks.spawn(async move { relay(conn, client, &upstream, &sink).await });
        // Finished connections are reaped as new ones come.
        while tasks.try_join_next().is_some() {}
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One client connection and its connection to the daemon, until both sides closed.
async fn relay(conn: u64, client: UnixStream, upstream: &Path, sink: &Sink) {
    let daemon = match UnixStream::connect(upstream).await {
        Ok(d) => d,
        Err(e) => {
            sink.record("upstream_refused", json!({ "conn": conn, "error": e.to_string() }));
            return;
        }
    };
    sink.record("open", json!({ "conn": conn }));
    let (client_read, client_write) = client.into_split();
    let (daemon_read, daemon_write) = daemon.into_split();
    let requests = pump(conn, "request", "client", client_read, daemon_write, sink.clone());
    let replies = pump(conn, "reply", "daemon", daemon_read, client_write, sink.clone());
    tokio::join!(requests, replies);
}

/// Copies what `from` sends to `to`, one read at a time, recording each piece; when
/// `from` closes, `to` is shut down for writing (a half-close, as the peer did).
async fn pump(
    conn: u64,
    dir: &str,
    side: &str,
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    sink: Sink,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                sink.record("close", json!({ "conn": conn, "side": side }));
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                let mut fields = chunk_fields(&buf[..n]);
                fields["conn"] = conn.into();
                fields["dir"] = dir.into();
                fields["len"] = n.into();
                sink.record("data", fields);
                if to.write_all(&buf[..n]).await.is_err() {
                    sink.record(
                        "close",
                        json!({ "conn": conn, "side": if side == "client" { "daemon" } else { "client" } }),
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_in_json_and_in_json_inside_a_string() {
        let body = r#"{"source":"/b","config":"{\"device\":{\"backend\":{\"type\":\"registry\",\"config\":{\"auth\":\"dXNlcjpwYXNz\",\"registry_token\":\"q9\\\"z7\",\"host\":\"r\"}}}}"}"#;
        let out = redact(body);
        assert!(!out.contains("dXNlcjpwYXNz") && !out.contains("q9") && !out.contains("z7"), "{out}");
        // The escaped quote inside the token did not end it early.
        assert!(out.contains(r#"\"registry_token\":\"<redacted>\",\"host\""#), "{out}");
        assert!(out.contains(r#"\"auth\":\"<redacted>\""#) && out.contains(r#"\"host\":\"r\""#), "{out}");
        let plain = redact(r#"{"auth": "s3cret", "password":"p\"w", "other":"kept"}"#);
        assert_eq!(plain, r#"{"auth": "<redacted>", "password":"<redacted>", "other":"kept"}"#);
        // Not a key: left alone.
        assert_eq!(redact(r#"{"path":"/auth"}"#), r#"{"path":"/auth"}"#);
    }
}
