//! How nydusd's HTTP library (dbs-uhttp 0.3.2) cuts a connection's bytes into requests,
//! emulated state for state, because its quirks reach clients (`real-nydusd-framing.md`).
//!
//! The library reads into one 1024-byte buffer per connection and parses from its start
//! after every read. What follows from that, and what this module reproduces:
//!
//! * A line (request line or header line) must fit in the buffer. An over-long header line
//!   is rejected with the buffer's whole contents in the reason, and because the rejection
//!   leaves the read position where it was, every later read of up to `1024 - position`
//!   bytes is rejected again until a CRLF arrives: a run of 400s (3 for an 1100-byte line,
//!   138 for a 5000-byte one), then the request's own reply.
//! * A rejection resets nothing else: the parse state, the request being parsed and the
//!   stale bytes before the read position stay. After a bad header line the next request
//!   line is read as a header line, and rejected too.
//! * `Content-Length` is parsed as a `u32`: the last one wins, `+21` is 21, `-1` is rejected.
//!   Bodies over 51 200 bytes are rejected once the headers end; `Transfer-Encoding:
//!   chunked` is accepted and never de-chunked. Header names other than a few are ignored
//!   (the library keeps them in a map; the mock keeps nothing, so its memory stays bounded
//!   whatever the header section's length).
//! * `Expect: 100-continue` queues a `100` reply as soon as the headers end.
//!
//! The spurious 500 for a request that arrives in pieces is the server's, not the
//! parser's: see `server::read_phase`.

use std::str::Utf8Error;

use crate::http::{Request, split_target};

/// Size of dbs-uhttp's per-connection read buffer, and so the longest line it can parse.
pub const BUFFER_SIZE: usize = 1024;
/// Largest body nydusd accepts (`MAX_PAYLOAD_SIZE`; nydusd does not change it).
pub const MAX_BODY: usize = 51_200;

const METHODS: [&[u8]; 6] = [b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"];

/// Where the parser is within the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    RequestLine,
    Headers,
    Body,
    Ready,
}

/// The request whose request line has been read.
#[derive(Debug)]
struct Pending {
    request: Request,
    http10: bool,
    content_length: u32,
    expect_continue: bool,
}

/// What the bytes of one read produced.
/// Why dbs-uhttp refused the bytes, in its words: the 400 reply carries them, so each
/// message is the library's to the byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A line it cannot read as a request line, an over-long one, an empty encoding list.
    #[error("Invalid request.")]
    InvalidRequest,
    #[error("Invalid HTTP Method: Unsupported HTTP method.")]
    UnsupportedMethod,
    #[error("Invalid URI: Empty URI not allowed.")]
    EmptyUri,
    #[error("Invalid URI: Cannot parse URI as UTF-8.")]
    UriNotUtf8,
    #[error("Invalid HTTP Version: Unsupported HTTP version.")]
    UnsupportedVersion,
    /// A header line it refuses, with its reason (which quotes the line).
    #[error("Invalid header. Reason: {0}")]
    InvalidHeader(String),
    /// A body longer than the server takes.
    #[error("Request payload with size {length} is larger than the limit of {limit} allowed by server.")]
    PayloadTooLarge { length: usize, limit: usize },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// `100` replies queued while parsing; they go out before anything else.
    pub interim: Vec<u8>,
    /// Requests completed by this read, in order. Empty with no rejection: wait for more.
    pub requests: Vec<Request>,
    /// The library's reason for rejecting the bytes. The requests completed by the same
    /// read are then dropped unanswered ("All previous unanswered requests will be dropped").
    pub rejected: Option<Rejected>,
    /// How many requests the rejection dropped.
    pub dropped: usize,
}

/// One connection's parser.
#[derive(Debug)]
pub struct Framer {
    buffer: Box<[u8; BUFFER_SIZE]>,
    read_cursor: usize,
    state: State,
    pending: Option<Pending>,
    body: Vec<u8>,
    body_left: u32,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A parser for a new connection.
    pub fn new() -> Self {
        Self {
            buffer: Box::new([0; BUFFER_SIZE]),
            read_cursor: 0,
            state: State::RequestLine,
            pending: None,
            body: Vec::new(),
            body_left: 0,
        }
    }

    /// Where the next read must put its bytes: never empty, at most [`BUFFER_SIZE`].
    pub fn space(&mut self) -> &mut [u8] {
        // Every path that keeps bytes leaves room for at least one more: a full buffer
        // without a line end is rejected instead of kept.
        debug_assert!(self.read_cursor < BUFFER_SIZE);
        &mut self.buffer[self.read_cursor..]
    }

    /// Parses after a read put `n` bytes at the front of [`Framer::space`].
    pub fn received(&mut self, n: usize) -> Received {
        let end = self.read_cursor + n;
        debug_assert!(end <= BUFFER_SIZE);
        let mut out = Received::default();
        match self.parse(end, &mut out) {
            Ok(()) => {}
            Err(reason) => {
                out.dropped = out.requests.len();
                out.requests.clear();
                out.rejected = Some(reason);
            }
        }
        out
    }

    /// Parses `bytes` as a reader draining a socket would deliver them: reads cut to the
    /// space offered each time. Returns what each read produced (tests and fuzzing).
    #[cfg(any(test, feature = "internals"))]
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Received> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let space = self.space();
            let n = space.len().min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            out.push(self.received(n));
        }
        out
    }

    /// Bytes parsed but not yet part of a complete request (for tests and the journal).
    pub fn buffered(&self) -> usize {
        self.read_cursor + self.body.len()
    }

    fn parse(&mut self, end: usize, out: &mut Received) -> Result<(), Rejected> {
        let mut start = 0;
        loop {
            match self.state {
                State::RequestLine => {
                    let Some(len) = find_crlf(&self.buffer[start..end]) else {
                        if start == 0 && end == BUFFER_SIZE {
                            return Err(Rejected::InvalidRequest);
                        }
                        self.keep_from(start, end);
                        return Ok(());
                    };
                    let pending = request_line(&self.buffer[start..start + len])?;
                    start += len + 2;
                    self.pending = Some(pending);
                    self.state = State::Headers;
                }
                State::Headers => {
                    let Some(len) = find_crlf(&self.buffer[start..end]) else {
                        if start == 0 && end == BUFFER_SIZE {
                            let whole = String::from_utf8_lossy(&self.buffer[..]);
                            return Err(Rejected::InvalidHeader(format!("Invalid content length. Header: {whole}")));
                        }
                        self.keep_from(start, end);
                        return Ok(());
                    };
                    let pending = self.pending.as_mut().expect("the headers state has a request line");
                    if len == 0 {
                        start += 2;
                        if pending.content_length == 0 {
                            self.state = State::Ready;
                        } else {
                            let length = pending.content_length as usize;
                            if length > MAX_BODY {
                                return Err(Rejected::PayloadTooLarge { length, limit: MAX_BODY });
                            }
                            if pending.expect_continue {
                                let version = if pending.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
                                out.interim.extend_from_slice(
                                    format!(
                                        "{version} 100 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
                                    )
                                    .as_bytes(),
                                );
                            }
                            self.body_left = pending.content_length;
                            self.state = State::Body;
                        }
                    } else {
                        header_line(pending, &self.buffer[start..start + len])?;
                        start += len + 2;
                    }
                }
                State::Body => {
                    let available = end - start;
                    if self.body_left as usize > available {
                        self.body.extend_from_slice(&self.buffer[start..end]);
                        self.body_left -= available as u32;
                        self.read_cursor = 0;
                        return Ok(());
                    }
                    let body_end = start + self.body_left as usize;
                    self.body.extend_from_slice(&self.buffer[start..body_end]);
                    start = body_end;
                    self.body_left = 0;
                    let pending = self.pending.as_mut().expect("the body state has a request line");
                    pending.request.body = Some(std::mem::take(&mut self.body));
                    self.state = State::Ready;
                }
                State::Ready => {
                    let pending = self.pending.take().expect("a ready request exists");
                    out.requests.push(pending.request);
                    self.state = State::RequestLine;
                    self.body_left = 0;
                }
            }
        }
    }

    /// Moves the unparsed tail to the front; the next read appends to it.
    fn keep_from(&mut self, start: usize, end: usize) {
        self.buffer.copy_within(start..end, 0);
        self.read_cursor = end - start;
    }
}

/// Where the first CRLF starts; looks at each byte once.
fn find_crlf(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn request_line(line: &[u8]) -> Result<Pending, Rejected> {
    let method_end = line.iter().position(|&b| b == b' ').ok_or(Rejected::InvalidRequest)?;
    let (method, rest) = (&line[..method_end], &line[method_end + 1..]);
    let target_end = rest.iter().position(|&b| b == b' ').ok_or(Rejected::InvalidRequest)?;
    let (target, version) = (&rest[..target_end], &rest[target_end + 1..]);
    if !METHODS.contains(&method) {
        return Err(Rejected::UnsupportedMethod);
    }
    if target.is_empty() {
        return Err(Rejected::EmptyUri);
    }
    let target = std::str::from_utf8(target).map_err(|_| Rejected::UriNotUtf8)?;
    let http10 = match version {
        b"HTTP/1.0" => true,
        b"HTTP/1.1" => false,
        _ => return Err(Rejected::UnsupportedVersion),
    };
    let (path, query) = split_target(target);
    let method = String::from_utf8_lossy(method).into_owned();
    Ok(Pending {
        request: Request { method, path, query, body: None },
        http10,
        content_length: 0,
        expect_continue: false,
    })
}

fn header_reason(reason: impl std::fmt::Display) -> Rejected {
    Rejected::InvalidHeader(reason.to_string())
}

fn invalid_utf8(e: Utf8Error) -> Rejected {
    header_reason(format_args!("Header contains invalid characters. Key: {e}"))
}

/// One header line. Values the library does not support are ignored, as it ignores them;
/// only malformed lines, bad lengths and refused encodings are errors.
fn header_line(pending: &mut Pending, line: &[u8]) -> Result<(), Rejected> {
    let text = std::str::from_utf8(line).map_err(invalid_utf8)?;
    let Some((name, value)) = text.split_once(':') else {
        return Err(header_reason(format_args!("Header is incorrectly formatted. Key: {text}")));
    };
    match name.trim().to_ascii_lowercase().as_str() {
        "content-length" => match value.trim().parse::<u32>() {
            Ok(length) => pending.content_length = length,
            Err(_) => return Err(header_reason(format_args!("Invalid value. Key:{name}; Value:{value}"))),
        },
        "expect" if value.trim() == "100-continue" => pending.expect_continue = true,
        "accept-encoding" => {
            let value = value.trim();
            if value.is_empty() {
                return Err(Rejected::InvalidRequest);
            }
            for encoding in value.split(',') {
                let refused = match encoding.trim() {
                    "identity;q=0" => true,
                    "*;q=0" => !value.contains("identity"),
                    _ => false,
                };
                if refused {
                    return Err(header_reason(format_args!("Invalid value. Key:Accept-Encoding; Value:{encoding}")));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(framer: &mut Framer, bytes: &[u8]) -> Vec<Received> {
        framer.feed(bytes)
    }

    fn one(bytes: &[u8]) -> Received {
        let mut results = feed(&mut Framer::new(), bytes);
        assert_eq!(results.len(), 1, "{results:?}");
        results.remove(0)
    }

    fn x_long(length: usize) -> Vec<u8> {
        [b"GET /api/v1/daemon HTTP/1.1\r\nX-Long: ".as_slice(), &vec![b'a'; length], b"\r\n\r\n"].concat()
    }

    #[test]
    fn content_length_zero_means_no_body_and_pipelined_requests_come_in_order() {
        let r = one(b"PUT /api/v1/daemon/start HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
        assert_eq!(r.rejected, None);
        assert_eq!(r.requests.len(), 2);
        assert_eq!((r.requests[0].path.as_str(), r.requests[0].body.as_ref()), ("/api/v1/daemon/start", None));
        assert_eq!(r.requests[1].path, "/b");
    }

    #[test]
    fn absolute_form_and_query_are_split() {
        let r = one(b"GET http://unix/api/v1/mount?mountpoint=%2Fa HTTP/1.0\r\n\r\n");
        assert_eq!(r.requests[0].path, "/api/v1/mount");
        assert_eq!(r.requests[0].query_param("mountpoint").as_deref(), Some("/a"));
        assert_eq!(one(b"GET api/v1/daemon HTTP/1.1\r\n\r\n").requests[0].path, "");
    }

    #[test]
    fn a_request_in_pieces_completes_with_its_last_piece() {
        let mut framer = Framer::new();
        let first = feed(&mut framer, b"PUT /x HTTP/1.1\r\nContent-Le");
        assert_eq!(first, [Received::default()]);
        let second = feed(&mut framer, b"ngth: 5\r\n\r\nab");
        assert_eq!(second, [Received::default()]);
        let third = feed(&mut framer, b"cde");
        assert_eq!(third[0].requests[0].body.as_deref(), Some(b"abcde".as_slice()));
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn a_body_longer_than_the_buffer_is_gathered_across_reads() {
        let body = vec![b'x'; 3000];
        let raw = [format!("PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), &body].concat();
        let results = feed(&mut Framer::new(), &raw);
        assert_eq!(results.len(), 3);
        assert_eq!(results[2].requests[0].body.as_deref(), Some(body.as_slice()));
    }

    #[rstest::rstest]
    #[case::unknown_method(b"FOO / HTTP/1.1\r\n\r\n".as_slice(), "Invalid HTTP Method: Unsupported HTTP method.")]
    #[case::bad_version(b"GET / HTTP/2.0\r\n\r\n".as_slice(), "Invalid HTTP Version: Unsupported HTTP version.")]
    #[case::one_word(b"GET\r\n\r\n".as_slice(), "Invalid request.")]
    #[case::empty_target(b"GET  HTTP/1.1\r\n\r\n".as_slice(), "Invalid URI: Empty URI not allowed.")]
    #[case::header_without_colon(
        b"GET / HTTP/1.1\r\nBadHeader\r\n\r\n".as_slice(),
        "Invalid header. Reason: Header is incorrectly formatted. Key: BadHeader"
    )]
    #[case::bad_content_length(
        b"PUT / HTTP/1.1\r\nContent-Length: abc\r\n\r\n".as_slice(),
        "Invalid header. Reason: Invalid value. Key:Content-Length; Value: abc"
    )]
    #[case::negative_content_length_keeps_the_raw_name_and_value(
        b"PUT / HTTP/1.1\r\ncontent-length:-2\r\n\r\n".as_slice(),
        "Invalid header. Reason: Invalid value. Key:content-length; Value:-2"
    )]
    #[case::invalid_utf8(
        b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n".as_slice(),
        "Invalid header. Reason: Header contains invalid characters. Key: invalid utf-8 sequence of 1 bytes from index 3"
    )]
    #[case::refused_encoding(
        b"GET / HTTP/1.1\r\nAccept-Encoding: gzip, identity;q=0\r\n\r\n".as_slice(),
        "Invalid header. Reason: Invalid value. Key:Accept-Encoding; Value: identity;q=0"
    )]
    #[case::body_over_limit(
        b"PUT / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n".as_slice(),
        "Request payload with size 51201 is larger than the limit of 51200 allowed by server."
    )]
    fn rejections_carry_dbs_uhttp_reasons(#[case] raw: &[u8], #[case] reason: &str) {
        assert_eq!(one(raw).rejected.map(|r| r.to_string()).as_deref(), Some(reason));
    }

    #[test]
    fn content_length_is_a_u32_and_the_last_one_wins() {
        let r = one(b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: +2\r\n\r\n{}");
        assert_eq!(r.requests[0].body.as_deref(), Some(b"{}".as_slice()));
        let huge = one(b"PUT /x HTTP/1.1\r\nContent-Length: 4294967296\r\n\r\n");
        assert!(huge.rejected.unwrap().to_string().contains("Value: 4294967296"));
    }

    #[test]
    fn a_rejection_drops_the_requests_of_the_same_read() {
        let r = one(b"GET /a HTTP/1.1\r\n\r\nFOO / HTTP/1.1\r\n\r\n");
        assert_eq!((r.requests.len(), r.dropped), (0, 1));
        assert!(r.rejected.is_some());
    }

    #[test]
    fn after_a_bad_header_the_next_request_line_is_read_as_a_header() {
        // As nydusd 2.2 answers it here (`real-nydusd-framing.md` method, probed by hand).
        let mut framer = Framer::new();
        feed(&mut framer, b"GET / HTTP/1.1\r\nBadHeader\r\n\r\n");
        let next = feed(&mut framer, b"GET /api/v1/daemon/events HTTP/1.1\r\n\r\n");
        assert_eq!(
            next[0].rejected.as_ref().map(ToString::to_string).as_deref(),
            Some("Invalid header. Reason: Header is incorrectly formatted. Key: GET /api/v1/daemon/events HTTP/1.1")
        );
        // A bad method leaves no request behind, so the next one is fine.
        let mut framer = Framer::new();
        feed(&mut framer, b"FOO / HTTP/1.1\r\n\r\n");
        assert_eq!(feed(&mut framer, b"GET /a HTTP/1.1\r\n\r\n")[0].requests[0].path, "/a");
    }

    #[test]
    fn expect_continue_queues_a_100_when_the_headers_end() {
        let mut framer = Framer::new();
        let head = feed(&mut framer, b"PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(head[0].interim, b"HTTP/1.0 100 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(head[0].requests, []);
        assert_eq!(feed(&mut framer, b"{}")[0].requests[0].body.as_deref(), Some(b"{}".as_slice()));
    }

    /// The counts nydusd 2.2 and 2.4 answer with, from `real-nydusd-framing.md`.
    #[rstest::rstest]
    #[case(100, 0)]
    #[case(1100, 3)]
    #[case(5000, 138)]
    fn an_over_long_header_line_in_one_write_is_rejected_once_per_read_until_its_end(
        #[case] length: usize,
        #[case] rejections: usize,
    ) {
        let results = feed(&mut Framer::new(), &x_long(length));
        let rejected: Vec<String> = results.iter().filter_map(|r| r.rejected.as_ref().map(ToString::to_string)).collect();
        assert_eq!(rejected.len(), rejections);
        let completed: Vec<&Request> = results.iter().flat_map(|r| &r.requests).collect();
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].path, "/api/v1/daemon");
        if let Some(first) = rejected.first() {
            let header = format!("X-Long: {}", "a".repeat(BUFFER_SIZE - 8));
            assert_eq!(*first, format!("Invalid header. Reason: Invalid content length. Header: {header}"));
        }
    }

    #[test]
    fn an_over_long_request_line_is_rejected_and_its_tail_read_as_a_new_line() {
        let raw = [b"GET /".as_slice(), &[b'a'; 1100], b" HTTP/1.1\r\n\r\n"].concat();
        let reasons: Vec<Option<Rejected>> = feed(&mut Framer::new(), &raw).into_iter().map(|r| r.rejected).collect();
        assert_eq!(reasons, [Some(Rejected::InvalidRequest), Some(Rejected::InvalidRequest)]);
    }

    #[test]
    fn a_header_section_of_any_length_keeps_memory_at_the_buffer() {
        let mut framer = Framer::new();
        feed(&mut framer, b"GET /a HTTP/1.1\r\n");
        for _ in 0..10_000 {
            let results = feed(&mut framer, b"X-Filler: 0123456789012345678901234567890123456789\r\n");
            assert!(results.iter().all(|r| r.rejected.is_none() && r.requests.is_empty()));
            assert!(framer.buffered() < BUFFER_SIZE);
        }
        assert_eq!(feed(&mut framer, b"\r\n")[0].requests[0].path, "/a");
    }
}
