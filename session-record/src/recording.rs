//! Reading and writing `recording.jsonl` (the format is described in [`super`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the recording format.
pub const FORMAT_VERSION: u32 = 1;

/// The largest recording read back: a day of a busy daemon's API is a few MiB.
pub const MAX_RECORDING_BYTES: u64 = 256 * 1024 * 1024;

/// The recording file in a recording's directory.
pub const FILE_NAME: &str = "recording.jsonl";

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to daemon.
    Request,
    /// Daemon to client.
    Reply,
}

/// Which end closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Daemon,
}

/// Which way a piece went on the supervisor socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorFlow {
    /// The daemon's saved state (sendfd).
    ToSupervisor,
    /// A state handed to the daemon (takeover).
    ToDaemon,
}

/// One line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first line.
    Recording {
        version: u32,
        #[serde(default)]
        upstream: Option<PathBuf>,
        #[serde(default)]
        listen: Option<PathBuf>,
        /// The daemon's command line, when the recorder started it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<Vec<String>>,
        /// Its pid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// A client connected and its connection to the daemon is open.
    Open { conn: u64 },
    /// The daemon's socket refused the connection.
    UpstreamRefused { conn: u64, error: String },
    /// Bytes that passed one way.
    Data {
        conn: u64,
        dir: Direction,
        len: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// One side closed its end.
    Close { conn: u64, side: Side },
    /// The daemon connected to the supervisor socket, and the supervisor accepted.
    SupervisorOpen { conn: u64 },
    /// The supervisor's socket refused the daemon's connection.
    SupervisorRefused { conn: u64, error: String },
    /// A piece passed on the supervisor socket: its size and fd count, never its content.
    SupervisorData { conn: u64, flow: SupervisorFlow, len: usize, fds: usize },
    /// The side that sent `from` closed its end.
    SupervisorClose { conn: u64, from: SupervisorFlow },
    /// The daemon the recorder started accepts on its API socket (moved into the
    /// recording's directory), `after_ns` after it was started; clients were let in only
    /// from then on.
    DaemonListening { socket: PathBuf, after_ns: u64 },
    /// The recording reached its size limit (`harness record --max-bytes`); the recorder
    /// stopped, and this is the last line.
    LimitReached { max_bytes: u64 },
    /// The daemon the recorder started ended.
    DaemonExit {
        #[serde(default)]
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
        #[serde(default)]
        socket_left: bool,
    },
}

impl Event {
    /// The bytes of a `data` event (text is what the recording kept, redacted or not).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        let Self::Data { text, base64, .. } = self else { return None };
        match (text, base64) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
            (None, None) => Some(Vec::new()),
        }
    }

    /// A `data` event carrying `bytes` (redacted already, where they are recorded), as
    /// text when UTF-8, else base64.
    pub fn data(conn: u64, dir: Direction, bytes: &[u8]) -> Self {
        let (text, base64) = match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes))),
        };
        Self::Data { conn, dir, len: bytes.len(), text, base64 }
    }
}

/// A line: when, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// CLOCK_MONOTONIC nanoseconds.
    pub t_ns: u64,
    /// What happened.
    pub event: Event,
}

/// A whole recording, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Where it was read from.
    pub path: PathBuf,
    /// Every line after the first, in order.
    pub entries: Vec<Entry>,
    /// The first line's fields.
    pub header: Event,
    /// When the first line was written.
    pub header_ns: u64,
}

/// Why a recording cannot be read; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid { path: PathBuf, line: usize, message: String },
}

impl Recording {
    /// Reads `path` (a file, or a directory holding `recording.jsonl`), at most
    /// [`MAX_RECORDING_BYTES`].
    pub fn read(path: &Path) -> Result<Self, RecordingError> {
        let path = if path.is_dir() { path.join(FILE_NAME) } else { path.to_owned() };
        let text = mock_nydusd::script::read_bounded(&path, MAX_RECORDING_BYTES)
            .map_err(|source| RecordingError::Read { path: path.clone(), source })?;
        Self::parse(&path, &text)
    }

    /// Parses recording text; `path` is only used in messages. A last line cut short (the
    /// recorder was killed while writing it) is ignored; any other bad line is an error.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RecordingError> {
        let invalid = |line: usize, message: String| RecordingError::Invalid { path: path.to_owned(), line, message };
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).peekable();
        let Some((_, first)) = lines.next() else { return Err(invalid(1, "empty: no `recording` line".into())) };
        let header: Entry = parse_line(first).map_err(|m| invalid(1, m))?;
        match header.event {
            Event::Recording { version: FORMAT_VERSION, .. } => {}
            Event::Recording { version, .. } => {
                return Err(invalid(
                    1,
                    format!("recording format version {version}; this harness reads version {FORMAT_VERSION}"),
                ));
            }
            _ => return Err(invalid(1, "the first line must be the `recording` event".into())),
        }
        let mut entries = Vec::new();
        while let Some((index, line)) = lines.next() {
            match parse_line(line) {
                Ok(entry) => entries.push(entry),
                Err(_) if lines.peek().is_none() && !text.ends_with('\n') => break,
                Err(message) => return Err(invalid(index + 1, message)),
            }
        }
        // A request is written once it is whole, after lines stamped later: order by time.
        entries.sort_by_key(|e| e.t_ns);
        Ok(Self { path: path.to_owned(), entries, header_ns: header.t_ns, header: header.event })
    }

    /// How the daemon ended, if the recording saw it.
    pub fn daemon_exit(&self) -> Option<(u64, Option<i32>, Option<i32>)> {
        self.entries.iter().find_map(|e| match e.event {
            Event::DaemonExit { code, signal, .. } => Some((e.t_ns, code, signal)),
            _ => None,
        })
    }
}

#[cfg(test)]
impl Recording {
    /// A recording of `events` at the times given, for tests.
    pub(crate) fn of_events(events: Vec<(u64, Event)>) -> Self {
        Self {
            path: "r".into(),
            header_ns: 0,
            header: Event::Recording { version: 1, upstream: None, listen: None, command: None, pid: None },
            entries: events.into_iter().map(|(t_ns, event)| Entry { t_ns, event }).collect(),
        }
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let t_ns = value.get("t_ns").and_then(Value::as_u64).ok_or("no `t_ns` (CLOCK_MONOTONIC nanoseconds)")?;
    let event: Event = serde_json::from_value(value).map_err(|e| format!("not a recording event: {e}"))?;
    if let Event::Data { text: None, base64: Some(b64), .. } = &event {
        base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad base64: {e}"))?;
    }
    Ok(Entry { t_ns, event })
}

/// Where a recording is written, line by line, each line written out as soon as the
/// piece it records has been passed on (see [`Sink::stage`]), so that a killed recorder
/// leaves everything it saw.
#[derive(Debug, Clone)]
pub struct Sink(Arc<std::sync::Mutex<Lines>>);

#[derive(Debug)]
struct Lines {
    file: std::fs::File,
    /// Lines stamped and in order, not yet written.
    staged: Vec<u8>,
    /// Bytes written so far, and the most that may be.
    written: u64,
    limit: u64,
    /// Set once the limit is reached: nothing more is written.
    full: tokio::sync::watch::Sender<bool>,
}

/// A line as written: the event's fields, then when.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    event: &'a Event,
    t_ns: u64,
}

impl Sink {
    /// Creates `path`, which must not exist: a recording is never overwritten. The file
    /// is 0600 (it is meant to leave the host, but only as its owner decides).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path)?;
        Ok(Self::over(file))
    }

    /// Creates `path`, replacing a file that was there (a replay's own recording), 0600,
    /// never through a symbolic link.
    pub fn replace(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Self::over(file))
    }

    fn over(file: std::fs::File) -> Self {
        let (full, _) = tokio::sync::watch::channel(false);
        Self(Arc::new(std::sync::Mutex::new(Lines { file, staged: Vec::new(), written: 0, limit: u64::MAX, full })))
    }

    /// Stops writing past `max_bytes` (the line that would cross it and all after it are
    /// dropped, and a `limit_reached` line ends the file).
    pub fn with_limit(self, max_bytes: u64) -> Self {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).limit = max_bytes;
        self
    }

    /// Resolves once the limit has been reached.
    pub async fn full(&self) {
        let mut full = self.0.lock().unwrap_or_else(|e| e.into_inner()).full.subscribe();
        let _ = full.wait_for(|f| *f).await;
    }

    /// Appends `event`, stamped now: under the lock, so lines are in time order.
    pub fn record(&self, event: &Event) {
        self.write(None, event, true);
    }

    /// Appends `event` stamped `t_ns`.
    pub fn record_at(&self, t_ns: u64, event: &Event) {
        self.write(Some(t_ns), event, true);
    }

    /// Stamps `event` now and puts it in line, without writing it out yet: the proxy
    /// passes the piece on first and then calls [`Sink::flush`], so the file write is not
    /// part of the latency the recorder adds. Lines keep the order they were staged in,
    /// whichever task writes them out.
    pub fn stage(&self, event: &Event) {
        self.write(None, event, false);
    }

    /// Puts `event`, stamped `t_ns` (when it happened, which may be a while ago), in line
    /// like [`Sink::stage`].
    pub fn stage_at(&self, t_ns: u64, event: &Event) {
        self.write(Some(t_ns), event, false);
    }

    /// Writes out every staged line.
    pub fn flush(&self) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.write_out();
    }

    fn write(&self, t_ns: Option<u64>, event: &Event, now: bool) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let t_ns = t_ns.unwrap_or_else(mock_nydusd::journal::monotonic_ns);
        if serde_json::to_writer(&mut lines.staged, &Line { event, t_ns }).is_ok() {
            lines.staged.push(b'\n');
        }
        if now {
            lines.write_out();
        }
    }
}

impl Lines {
    fn write_out(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        if *self.full.borrow() {
            self.staged.clear();
            return;
        }
        let room = self.limit.saturating_sub(self.written);
        if self.staged.len() as u64 > room {
            // Whole lines only, then the last one saying why the file ends here.
            let fits = self.staged[..room as usize].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            self.staged.truncate(fits);
            let last = Line {
                event: &Event::LimitReached { max_bytes: self.limit },
                t_ns: mock_nydusd::journal::monotonic_ns(),
            };
            if serde_json::to_writer(&mut self.staged, &last).is_ok() {
                self.staged.push(b'\n');
            }
            self.full.send_replace(true);
        }
        // A full disk loses the recording, never the session passing through.
        let _ = self.file.write_all(&self.staged);
        self.written += self.staged.len() as u64;
        self.staged.clear();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.write_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recording, String> {
        Recording::parse(Path::new("r.jsonl"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let head = r#"{"event":"recording","version":1,"t_ns":1}"#;
        assert_eq!(parse("").unwrap_err(), "r.jsonl:1: empty: no `recording` line");
        assert_eq!(
            parse(r#"{"event":"recording","version":7,"t_ns":1}"#).unwrap_err(),
            "r.jsonl:1: recording format version 7; this harness reads version 1"
        );
        assert_eq!(
            parse(&format!("{head}\n{{\"event\":\"open\",\"conn\":1}}\n")).unwrap_err(),
            "r.jsonl:2: no `t_ns` (CLOCK_MONOTONIC nanoseconds)"
        );
        let bad = parse(&format!(
            "{head}\n{{\"event\":\"teleport\",\"t_ns\":2}}\n{{\"event\":\"open\",\"conn\":1,\"t_ns\":3}}\n"
        ));
        assert!(bad.unwrap_err().starts_with("r.jsonl:2: not a recording event: unknown variant `teleport`"));
        let b64 = format!(
            "{head}\n{{\"event\":\"data\",\"conn\":1,\"dir\":\"reply\",\"len\":1,\"base64\":\"!!\",\"t_ns\":2}}\n"
        );
        assert!(parse(&b64).unwrap_err().starts_with("r.jsonl:2: bad base64"));
    }

    #[test]
    fn a_last_line_cut_short_by_a_kill_is_dropped_and_the_rest_kept() {
        let text = "{\"event\":\"recording\",\"version\":1,\"t_ns\":1}\n{\"event\":\"open\",\"conn\":1,\"t_ns\":2}\n{\"event\":\"da";
        let recording = parse(text).unwrap();
        assert_eq!(recording.entries, vec![Entry { t_ns: 2, event: Event::Open { conn: 1 } }]);
    }

    #[test]
    fn events_written_by_the_sink_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let sink = Sink::create(&path).unwrap();
        let events = [
            Event::Recording {
                version: 1,
                upstream: None,
                listen: None,
                command: Some(vec!["nydusd".into()]),
                pid: Some(7),
            },
            Event::Open { conn: 1 },
            Event::data(1, Direction::Request, b"GET / HTTP/1.1\r\n\r\n"),
            Event::data(1, Direction::Reply, &[0xff, 0x00]),
            Event::Close { conn: 1, side: Side::Daemon },
            Event::DaemonExit { pid: 7, code: None, signal: Some(9), socket_left: true },
        ];
        for (t, event) in events.iter().enumerate() {
            sink.record_at(t as u64 + 1, event);
        }
        assert!(Sink::create(&path).is_err(), "a recording is never overwritten");
        let back = Recording::read(dir.path()).unwrap();
        assert_eq!(back.header, events[0]);
        let read: Vec<Event> = back.entries.iter().map(|e| e.event.clone()).collect();
        assert_eq!(read, events[1..]);
        assert_eq!(back.entries[2].event.bytes().unwrap(), vec![0xff, 0x00]);
        assert_eq!(back.daemon_exit(), Some((6, None, Some(9))));
    }
}
