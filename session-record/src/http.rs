//! A recording's byte streams cut into HTTP messages, per connection, with when each
//! message's first and last bytes passed.
//!
//! nydusd speaks HTTP/1.1 with `Content-Length` bodies only (no chunked transfer), so a
//! message is a head up to the first empty line and as many body bytes as its
//! `Content-Length` says. Bytes that do not form a whole message are kept as they are
//! (`unframed_*`): a request cut off by a death, a reply cut short.

use std::collections::BTreeMap;

use super::recording::{Direction, Event, Recording, Side};

/// One HTTP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The start line (`GET /api/v1/daemon HTTP/1.1`, `HTTP/1.1 200 OK`).
    pub start: String,
    /// Header lines as sent, name and value.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When its first and its last byte passed.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Every byte of it.
    pub raw: Vec<u8>,
}

impl Message {
    /// The request's method (first word of the start line).
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// The request's target, query included.
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// The request's path, without the query.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map(|(p, _)| p).unwrap_or(target)
    }

    /// The request's query, without the `?` (empty when it has none).
    pub fn query(&self) -> &str {
        self.target().split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// The reply's status code.
    pub fn status(&self) -> Option<u16> {
        self.start.split(' ').nth(1)?.parse().ok()
    }

    /// `METHOD target`.
    pub fn request_line(&self) -> String {
        format!("{} {}", self.method(), self.target())
    }

    /// The body as text, when it is UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// Bytes one way on one connection, with when each chunk passed.
#[derive(Debug, Clone, Default)]
struct Stream {
    bytes: Vec<u8>,
    /// (offset of a chunk's first byte, when it passed), ascending.
    chunks: Vec<(usize, u64)>,
}

impl Stream {
    fn push(&mut self, t_ns: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.chunks.push((self.bytes.len(), t_ns));
            self.bytes.extend_from_slice(bytes);
        }
    }

    fn time_of(&self, offset: usize) -> u64 {
        let at = self.chunks.partition_point(|(start, _)| *start <= offset);
        self.chunks.get(at.saturating_sub(1)).map(|c| c.1).unwrap_or(0)
    }

    /// The whole messages, and the bytes after the last one.
    fn messages(&self) -> (Vec<Message>, Vec<u8>) {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((message, len)) = frame(&self.bytes[at..]) {
            let first_ns = self.time_of(at);
            let last_ns = self.time_of(at + len - 1);
            out.push(Message { first_ns, last_ns, raw: self.bytes[at..at + len].to_vec(), ..message });
            at += len;
        }
        (out, self.bytes[at..].to_vec())
    }
}

/// The message at the start of `bytes` and its length, if it is whole.
pub(crate) fn frame(bytes: &[u8]) -> Option<(Message, usize)> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| match l.split_once(':') {
            Some((name, value)) => (name.to_owned(), value.trim().to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect();
    let body_len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    let end = body_start.checked_add(body_len)?;
    if bytes.len() < end {
        return None;
    }
    let body = bytes[body_start..end].to_vec();
    Some((Message { start, headers, body, first_ns: 0, last_ns: 0, raw: Vec::new() }, end))
}

/// One connection of a session.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Its id in the recording.
    pub conn: u64,
    /// The requests, in order.
    pub requests: Vec<Message>,
    /// The replies, in order.
    pub replies: Vec<Message>,
    /// Request bytes after the last whole request.
    pub unframed_request: Vec<u8>,
    /// Reply bytes after the last whole reply.
    pub unframed_reply: Vec<u8>,
    /// When the client and the daemon closed their ends, if they did.
    pub client_closed_ns: Option<u64>,
    pub daemon_closed_ns: Option<u64>,
    /// The daemon's socket refused it.
    pub refused: bool,
}

impl Connection {
    /// Each request's reply, by position: the first whole reply begun after the request's
    /// last byte passed. Replies begun earlier answer a partial read (nydusd answers each
    /// read that holds no whole request with a 500 of its own) and answer no request.
    pub fn answers(&self) -> Vec<Option<&Message>> {
        let mut cursor = 0;
        self.requests
            .iter()
            .map(|request| {
                while self.replies.get(cursor).is_some_and(|r| r.first_ns < request.last_ns) {
                    cursor += 1;
                }
                let reply = self.replies.get(cursor);
                cursor += usize::from(reply.is_some());
                reply
            })
            .collect()
    }
}

/// A recorded session, cut into messages.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// By connection id.
    pub connections: BTreeMap<u64, Connection>,
    /// How the daemon ended: (when, exit code, signal).
    pub exit: Option<(u64, Option<i32>, Option<i32>)>,
}

/// A request and what came of it.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub conn: u64,
    /// Its position on the connection, from 0.
    pub seq: usize,
    pub request: &'a Message,
    /// The whole reply, if one came.
    pub reply: Option<&'a Message>,
    /// The bytes of a reply cut short, when this was the last request answered so.
    pub partial_reply: Option<&'a [u8]>,
}

impl Session {
    /// Cuts `recording` into messages.
    pub fn of(recording: &Recording) -> Self {
        let mut streams: BTreeMap<u64, (Connection, Stream, Stream)> = BTreeMap::new();
        let mut exit = None;
        for entry in &recording.entries {
            let t = entry.t_ns;
            match &entry.event {
                Event::Open { conn } => {
                    let c = &mut streams.entry(*conn).or_default().0;
                    c.conn = *conn;
                }
                Event::UpstreamRefused { conn, .. } => {
                    let c = &mut streams.entry(*conn).or_default().0;
                    (c.conn, c.refused) = (*conn, true);
                }
                Event::Data { conn, dir, .. } => {
                    let bytes = entry.event.bytes().unwrap_or_default();
                    let (_, requests, replies) = streams.entry(*conn).or_default();
                    match dir {
                        Direction::Request => requests.push(t, &bytes),
                        Direction::Reply => replies.push(t, &bytes),
                    }
                }
                Event::Close { conn, side } => {
                    let c = &mut streams.entry(*conn).or_default().0;
                    let slot = match side {
                        Side::Client => &mut c.client_closed_ns,
                        Side::Daemon => &mut c.daemon_closed_ns,
                    };
                    slot.get_or_insert(t);
                }
                Event::DaemonExit { code, signal, .. } => exit = Some((t, *code, *signal)),
                // The supervisor socket carries no HTTP; a recording cut at its size limit
                // ends where it ends.
                Event::Recording { .. }
                | Event::LimitReached { .. }
                | Event::DaemonListening { .. }
                | Event::SupervisorOpen { .. }
                | Event::SupervisorRefused { .. }
                | Event::SupervisorData { .. }
                | Event::SupervisorClose { .. } => {}
            }
        }
        let connections = streams
            .into_iter()
            .map(|(id, (mut c, requests, replies))| {
                c.conn = id;
                (c.requests, c.unframed_request) = requests.messages();
                (c.replies, c.unframed_reply) = replies.messages();
                (id, c)
            })
            .collect();
        Self { connections, exit }
    }

    /// Every request, in the order its first byte passed, with what came of it.
    pub fn exchanges(&self) -> Vec<Exchange<'_>> {
        let mut out: Vec<Exchange<'_>> = self
            .connections
            .values()
            .flat_map(|c| {
                let answers = c.answers();
                let first_unanswered = answers.iter().position(Option::is_none);
                c.requests.iter().zip(answers).enumerate().map(move |(seq, (request, reply))| Exchange {
                    conn: c.conn,
                    seq,
                    request,
                    reply,
                    partial_reply: (Some(seq) == first_unanswered && !c.unframed_reply.is_empty())
                        .then_some(c.unframed_reply.as_slice()),
                })
            })
            .collect();
        out.sort_by_key(|e| (e.request.first_ns, e.conn, e.seq));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(events: Vec<(u64, Event)>) -> Recording {
        Recording::of_events(events)
    }

    fn data(conn: u64, dir: Direction, text: &str) -> Event {
        Event::data(conn, dir, text.as_bytes())
    }

    #[test]
    fn requests_split_and_pipelined_are_framed_with_the_times_of_their_first_and_last_bytes() {
        use Direction::*;
        let session = Session::of(&recording(vec![
            (10, Event::Open { conn: 1 }),
            (11, data(1, Request, "PUT /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Le")),
            (12, data(1, Request, "ngth: 5\r\n\r\n{\"x\"")),
            (13, data(1, Request, "}GET /api/v1/daemon HTTP/1.1\r\n\r\n")),
            (20, data(1, Reply, "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")),
            (21, data(1, Request, "GET /api/v1/met")),
            (30, Event::DaemonExit { pid: 1, code: None, signal: Some(9), socket_left: true }),
        ]));
        let c = &session.connections[&1];
        assert_eq!(c.requests.len(), 2);
        assert_eq!((c.requests[0].first_ns, c.requests[0].last_ns), (11, 13));
        assert_eq!(c.requests[0].body, b"{\"x\"}");
        assert_eq!((c.requests[0].method(), c.requests[0].path()), ("PUT", "/api/v1/mount"));
        assert_eq!(c.requests[0].target(), "/api/v1/mount?mountpoint=/a");
        assert_eq!((c.requests[1].first_ns, c.requests[1].path()), (13, "/api/v1/daemon"));
        assert_eq!(c.replies.iter().map(|r| r.status()).collect::<Vec<_>>(), [Some(204), Some(200)]);
        assert_eq!(c.unframed_request, b"GET /api/v1/met");
        assert_eq!(session.exit, Some((30, None, Some(9))));
        let exchanges = session.exchanges();
        assert_eq!(exchanges.len(), 2);
        assert_eq!(exchanges[1].reply.unwrap().body, b"{}");
    }

    #[test]
    fn replies_to_partial_reads_answer_no_request() {
        use Direction::*;
        let session = Session::of(&recording(vec![
            (1, Event::Open { conn: 1 }),
            (2, data(1, Request, "GET /api/v1/dae")),
            (3, data(1, Reply, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")),
            (4, data(1, Request, "mon HTTP/1.1\r\n\r\n")),
            (5, data(1, Reply, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")),
        ]));
        let exchanges = session.exchanges();
        assert_eq!(exchanges.len(), 1);
        assert_eq!(exchanges[0].reply.unwrap().status(), Some(200));
        assert_eq!(session.connections[&1].replies.len(), 2);
    }

    #[test]
    fn a_reply_cut_short_belongs_to_the_first_request_without_a_whole_reply() {
        use Direction::*;
        let session = Session::of(&recording(vec![
            (1, Event::Open { conn: 3 }),
            (2, data(3, Request, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")),
            (
                3,
                data(
                    3,
                    Reply,
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{",
                ),
            ),
            (4, Event::Close { conn: 3, side: Side::Daemon }),
        ]));
        let exchanges = session.exchanges();
        assert!(exchanges[0].reply.is_some() && exchanges[0].partial_reply.is_none());
        assert!(exchanges[1].reply.is_none());
        assert!(exchanges[1].partial_reply.unwrap().ends_with(b"\r\n\r\n{"));
        assert_eq!(session.connections[&3].daemon_closed_ns, Some(4));
    }
}
