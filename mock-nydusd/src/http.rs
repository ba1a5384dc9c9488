//! HTTP/1.x framing as nydusd's embedded server (dbs-uhttp 0.3.2) does it.
//!
//! Written by hand rather than on hyper/axum because the quirks are the point: a status
//! line without a reason phrase, `Server: Nydus API`, no `Date`, library-level 400s with
//! `Server: Firecracker API` and a raw newline inside a JSON string, chunked bodies that
//! are never de-chunked, a 1024-byte line limit and a 51 200-byte body limit
//! (`nydusd-api.md` §1.2–§1.3). A general-purpose server normalises every one of these.

/// Longest request line or header line dbs-uhttp reads.
pub const MAX_LINE: usize = 1024;
/// Largest body nydusd accepts.
pub const MAX_BODY: usize = 51_200;

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, as sent (one of [`METHODS`]).
    pub method: String,
    /// Path component (empty if the target was neither origin nor absolute form).
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Body, present only when `Content-Length` > 0.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// The decoded value of query parameter `key` (first occurrence wins).
    pub fn query_param(&self, key: &str) -> Option<String> {
        daemon_core::api::query::lookup(&self.query, key)
    }
}

/// Outcome of trying to parse the front of a connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// A request, and how many bytes it used.
    Request(Request, usize),
    /// The library rejects the bytes; the reason goes into the low-level 400.
    Invalid(String),
}

/// Parses one request from the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(line_end) = find_crlf(buf) else {
        return if buf.len() > MAX_LINE { Parsed::Invalid("Invalid request.".into()) } else { Parsed::Incomplete };
    };
    if line_end > MAX_LINE {
        return Parsed::Invalid("Invalid request.".into());
    }
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Invalid("Invalid request.".into());
    };
    if !METHODS.contains(&method) {
        return Parsed::Invalid("Invalid HTTP Method: Unsupported HTTP method.".into());
    }
    if version != "HTTP/1.0" && version != "HTTP/1.1" {
        return Parsed::Invalid("Invalid HTTP Version: Unsupported HTTP version.".into());
    }
    let mut pos = line_end + 2;
    let mut content_length = 0usize;
    loop {
        let Some(rel) = find_crlf(&buf[pos..]) else {
            return if buf.len() - pos > MAX_LINE {
                Parsed::Invalid("Invalid request.".into())
            } else {
                Parsed::Incomplete
            };
        };
        let header = String::from_utf8_lossy(&buf[pos..pos + rel]).into_owned();
        pos += rel + 2;
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Parsed::Invalid(format!("Invalid header. Reason: Header is incorrectly formatted. Key: {header}"));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<u32>() {
                Ok(n) => content_length = n as usize,
                Err(_) => {
                    return Parsed::Invalid(format!(
                        "Invalid header. Reason: Invalid value. Key:Content-Length; Value: {}",
                        value.trim()
                    ));
                }
            }
        }
    }
    if content_length > MAX_BODY {
        return Parsed::Invalid(format!(
            "Request payload with size {content_length} is larger than the limit of {MAX_BODY} allowed by server."
        ));
    }
    if buf.len() < pos + content_length {
        return Parsed::Incomplete;
    }
    let body = (content_length > 0).then(|| buf[pos..pos + content_length].to_vec());
    let (path, query) = split_target(target);
    Parsed::Request(Request { method: method.to_owned(), path, query, body }, pos + content_length)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Origin form keeps its path; absolute `http://host/...` form loses scheme and host;
/// anything else has an empty path, which nydusd answers with `BadRequest`.
fn split_target(target: &str) -> (String, String) {
    let rest = if target.starts_with('/') {
        target
    } else if let Some(after) = target.strip_prefix("http://") {
        after.find('/').map(|i| &after[i..]).unwrap_or("")
    } else {
        ""
    };
    match rest.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (rest.to_owned(), String::new()),
    }
}

/// A reply, framed the way nydusd frames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body; empty means no `Content-Type`/`Content-Length` headers at all.
    pub body: Vec<u8>,
    server: &'static str,
    /// A `Content-Length` to claim instead of the body's (scripted faults).
    content_length: Option<usize>,
}

impl Response {
    /// 204 with no body.
    pub fn no_content() -> Self {
        Self { status: 204, body: Vec::new(), server: "Nydus API", content_length: None }
    }

    /// A reply with a JSON body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, body: body.into(), server: "Nydus API", content_length: None }
    }

    /// nydusd's application error: `{"code":"UNDEFINED","message":...}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&daemon_core::api::ErrorMessage::undefined(message)).expect("strings serialise");
        Self::json(status, body)
    }

    /// The HTTP library's own 400, whose body is not valid JSON (a raw newline in a string).
    pub fn library_error(reason: &str) -> Self {
        let body = format!("{{ \"error\": \"{reason}\nAll previous unanswered requests will be dropped.\" }}");
        Self { status: 400, body: body.into_bytes(), server: "Firecracker API", content_length: None }
    }

    /// Claims `length` in `Content-Length` whatever the body is: a truncated body when
    /// larger, trailing garbage for the next reply when smaller.
    pub fn with_content_length(mut self, length: usize) -> Self {
        self.content_length = Some(length);
        self
    }

    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} \r\nServer: {}\r\nConnection: keep-alive\r\n", self.status, self.server);
        if !self.body.is_empty() || self.content_length.is_some() {
            let length = self.content_length.unwrap_or(self.body.len());
            out.push_str(&format!("Content-Type: application/json\r\nContent-Length: {length}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> Request {
        match parse(raw) {
            Parsed::Request(r, used) => {
                assert_eq!(used, raw.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_length_zero_means_no_body() {
        let r = request(b"PUT /api/v1/daemon/start HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.body, None);
    }

    #[test]
    fn absolute_form_and_query_are_split() {
        let r = request(b"GET http://unix/api/v1/mount?mountpoint=%2Fa HTTP/1.0\r\n\r\n");
        assert_eq!(r.path, "/api/v1/mount");
        assert_eq!(r.query_param("mountpoint").as_deref(), Some("/a"));
        assert_eq!(request(b"GET api/v1/daemon HTTP/1.1\r\n\r\n").path, "");
    }

    #[test]
    fn partial_input_waits_for_more() {
        assert_eq!(parse(b"GET /api/v1/daemon HTTP/1.1\r\nHost"), Parsed::Incomplete);
        assert_eq!(parse(b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"), Parsed::Incomplete);
    }

    #[rstest::rstest]
    #[case::unknown_method(b"FOO / HTTP/1.1\r\n\r\n".as_slice(), "Invalid HTTP Method: Unsupported HTTP method.")]
    #[case::bad_version(b"GET / HTTP/2.0\r\n\r\n".as_slice(), "Invalid HTTP Version: Unsupported HTTP version.")]
    #[case::header_without_colon(
        b"GET / HTTP/1.1\r\nBadHeader\r\n\r\n".as_slice(),
        "Invalid header. Reason: Header is incorrectly formatted. Key: BadHeader"
    )]
    #[case::bad_content_length(
        b"PUT / HTTP/1.1\r\nContent-Length: abc\r\n\r\n".as_slice(),
        "Invalid header. Reason: Invalid value. Key:Content-Length; Value: abc"
    )]
    #[case::body_over_limit(
        b"PUT / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n".as_slice(),
        "Request payload with size 51201 is larger than the limit of 51200 allowed by server."
    )]
    #[case::request_line_over_1024(&[b"GET /".as_slice(), &[b'a'; 1100]].concat(), "Invalid request.")]
    fn library_rejections_carry_dbs_uhttp_reasons(#[case] raw: &[u8], #[case] reason: &str) {
        assert_eq!(parse(raw), Parsed::Invalid(reason.to_owned()));
    }

    #[test]
    fn responses_are_framed_like_nydusd() {
        assert_eq!(
            Response::no_content().encode(),
            b"HTTP/1.1 204 \r\nServer: Nydus API\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            Response::error(404, "NoRoute").encode(),
            b"HTTP/1.1 404 \r\nServer: Nydus API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"code\":\"UNDEFINED\",\"message\":\"NoRoute\"}".to_vec()
        );
        let lib = Response::library_error("Invalid request.").encode();
        assert_eq!(
            lib,
            b"HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 81\r\n\r\n{ \"error\": \"Invalid request.\nAll previous unanswered requests will be dropped.\" }".to_vec()
        );
    }
}
