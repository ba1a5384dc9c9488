//! Requests and replies as nydusd's embedded server (dbs-uhttp 0.3.2) has them; how the
//! byte stream is cut into requests is `framing`.
//!
//! Written by hand rather than on hyper/axum because the quirks are the point: a status
//! line without a reason phrase, `Server: Nydus API`, no `Date`, library-level 400s with
//! `Server: Firecracker API` and a raw newline inside a JSON string, chunked bodies that
//! are never de-chunked, a 1024-byte line limit and a 51 200-byte body limit
//! (`nydusd-api.md` §1.2–§1.3). A general-purpose server normalises every one of these.

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, as sent (one of the six dbs-uhttp knows).
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
        crate::query::first_value(&self.query, key)
    }
}

/// Origin form keeps its path; absolute `http://host/...` form loses scheme and host;
/// anything else has an empty path, which nydusd answers with `BadRequest`.
pub(crate) fn split_target(target: &str) -> (String, String) {
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
        let body = serde_json::to_vec(&nydusd_api::ErrorMessage::undefined(message)).expect("strings serialise");
        Self::json(status, body)
    }

    /// The HTTP library's own 400, whose body is not valid JSON (a raw newline in a string).
    pub fn library_error(reason: impl std::fmt::Display) -> Self {
        let body = format!("{{ \"error\": \"{reason}\nAll previous unanswered requests will be dropped.\" }}");
        Self { status: 400, body: body.into_bytes(), server: "Firecracker API", content_length: None }
    }

    /// The server's answer to a read that ended mid-request, when no more bytes came
    /// within its retries: the `EAGAIN` of the last one, as a 500.
    pub fn partial_read() -> Self {
        let body = std::io::Error::from_raw_os_error(nix::libc::EAGAIN).to_string();
        Self { status: 500, body: body.into_bytes(), server: "Firecracker API", content_length: None }
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
