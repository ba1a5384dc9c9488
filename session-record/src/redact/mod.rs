//! Credentials masked in what a recording keeps, by parsing what was sent, not by
//! matching patterns in it.
//!
//! Each direction of a connection is cut into HTTP messages. A message is held back from
//! the recording (never from the daemon or the client: bytes pass on at once) until it is
//! whole; then its header section, its query and its body are read as nydusd reads them:
//! the body as JSON, and a string in it that holds a configuration (a mount request's
//! `config`, JSON or TOML) decoded and read in turn. The value of every key that names a
//! secret (`auth`, `registry_token`, `*password*`, `*token*`, `*secret*`, `access_key*`,
//! `*credential*`, `Authorization`, `Cookie`), however the key is spelled (`\u` escapes,
//! quoted TOML keys, dotted keys, any case), is masked where its bytes were sent: `*` in
//! a string, `0` over a number's digits. Lengths never change, so Content-Length and
//! every chunk stay true and a replay sends requests the daemon can frame.
//!
//! What cannot be parsed is masked whole when it may hold a secret (a secret's key is in
//! it, however escaped): a body that is neither JSON nor TOML, a message still incomplete
//! when its connection closes, and past [`MAX_HELD`] bytes a message's body and the rest
//! of its body as it comes. A recording therefore never holds a secret in clear; at
//! worst it holds stars where a replay needed bytes.
//!
//! Pieces keep their boundaries and their times: a held piece is written later, stamped
//! when it passed, so lines of a recording are in time order within a connection's
//! direction and readers order them by their stamps.

mod json;
mod text;
mod toml;

use std::collections::VecDeque;
use std::ops::Range;

pub use text::may_hold_a_secret;
use text::{Fill, Mask, Origin};

/// The most bytes of one message held back before its body is masked unread.
pub const MAX_HELD: usize = 8 * 1024 * 1024;
/// The longest header section looked for.
const MAX_HEADER: usize = 64 * 1024;

/// One direction of one connection.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Bytes not yet released: `held[..decided]` are final (redacted), the rest wait.
    held: Vec<u8>,
    decided: usize,
    /// The stamp and length of each piece in `held`, oldest first.
    pieces: VecDeque<(u64, usize)>,
    /// Bytes to mask as they come, without reading them: `Some(n)`, the rest of a body
    /// too large to hold; `None`, the rest of a stream that is not HTTP.
    masking: Option<Option<u64>>,
    /// The stream stopped being HTTP: nothing more is framed; bytes are released unmasked
    /// while no secret word shows, all but the last [`text::LONGEST_SPELLING`], so that a
    /// word cut between two writes is seen whole; from one that shows, all is masked.
    not_http: bool,
}

/// A piece ready for the recording: when it passed, and its bytes, redacted.
pub type Released = (u64, Vec<u8>);

impl Redactor {
    /// A redactor that masks every byte it is given (after a fault, nothing is read).
    pub fn masking_everything() -> Self {
        Self { masking: Some(None), ..Self::default() }
    }

    /// Takes the stream's next piece, which passed at `t_ns`; returns the pieces now
    /// decided, in order (none while a message is incomplete).
    pub fn push(&mut self, t_ns: u64, piece: &[u8]) -> Vec<Released> {
        if piece.is_empty() {
            return Vec::new();
        }
        self.held.extend_from_slice(piece);
        self.pieces.push_back((t_ns, piece.len()));
        self.decide();
        self.release()
    }

    /// The stream ended: what is still undecided is masked if it may hold a secret, and
    /// every piece is released.
    pub fn finish(&mut self) -> Vec<Released> {
        let at = self.decided;
        let framed = if self.not_http || self.masking.is_some() { Frame::NotHttp } else { frame(&self.held[at..]) };
        let body = match framed {
            // The header section is whole: it is read, and the body (cut short, or a reply
            // that ends with its connection) is read as a document, else judged.
            Frame::Partial { header_end, .. } if header_end > 0 => {
                let masks = redact_head(&self.held[at..at + header_end], at);
                text::apply(&mut self.held, &masks);
                at + header_end..self.held.len()
            }
            _ => at..self.held.len(),
        };
        let origin = Origin::At(body.start);
        let bytes = &self.held[body.clone()];
        let masks = document(bytes, &origin, 0).unwrap_or_else(|| whole_if_secret(bytes, &origin));
        text::apply(&mut self.held, &masks);
        self.decided = self.held.len();
        self.release()
    }

    fn decide(&mut self) {
        loop {
            if self.decided == self.held.len() {
                return;
            }
            if let Some(remaining) = self.masking {
                let available = (self.held.len() - self.decided) as u64;
                let n = remaining.map_or(available, |r| r.min(available));
                let end = self.decided + n as usize;
                text::apply(&mut self.held, &[Mask { range: self.decided..end, fill: Fill::Star }]);
                self.decided = end;
                self.masking = match remaining {
                    Some(r) if r == n => None,
                    Some(r) => Some(Some(r - n)),
                    None => Some(None),
                };
                continue;
            }
            if self.not_http {
                self.decide_not_http();
                return;
            }
            let at = self.decided;
            match frame(&self.held[at..]) {
                Frame::Whole { len, header_end, body } => {
                    let masks = redact_message(&self.held[at..at + len], header_end, &body, at);
                    text::apply(&mut self.held, &masks);
                    self.decided = at + len;
                }
                Frame::Partial { header_end, body_length } if self.held.len() - at > MAX_HELD => {
                    // Too large to read: the header section is still read, the body is
                    // masked, and so is the rest of it as it comes.
                    let masks = redact_head(&self.held[at..at + header_end], at);
                    text::apply(&mut self.held, &masks);
                    let got = (self.held.len() - at - header_end) as u64;
                    self.mask_region(at + header_end..self.held.len());
                    self.decided = self.held.len();
                    self.masking = Some(body_length.map(|n| n.saturating_sub(got))).filter(|r| *r != Some(0));
                    return;
                }
                Frame::Partial { .. } => return,
                Frame::NotHttp => {
                    // Nothing a daemon would read a configuration from, and nothing after
                    // it is framed again (nydusd answers 400 and reads no further).
                    self.not_http = true;
                    self.decide_not_http();
                    return;
                }
            }
        }
    }

    /// Bytes of a stream that is no longer HTTP: all masked once they may hold a secret
    /// (and everything after them), else released but for the last few, in which a
    /// secret word may still be forming.
    fn decide_not_http(&mut self) {
        let rest = self.decided..self.held.len();
        if may_hold_a_secret(&self.held[rest.clone()]) {
            self.mask_region(rest);
            self.masking = Some(None);
            self.decided = self.held.len();
        } else {
            self.decided = self.held.len().saturating_sub(text::LONGEST_SPELLING).max(self.decided);
        }
    }

    fn mask_region(&mut self, range: Range<usize>) {
        text::apply(&mut self.held, &[Mask { range, fill: Fill::Star }]);
    }

    /// The pieces whose every byte is decided, with those bytes dropped from `held`.
    fn release(&mut self) -> Vec<Released> {
        let mut out = Vec::new();
        let mut offset = 0;
        while let Some(&(t_ns, len)) = self.pieces.front() {
            if offset + len > self.decided {
                break;
            }
            out.push((t_ns, self.held[offset..offset + len].to_vec()));
            offset += len;
            self.pieces.pop_front();
        }
        self.held.drain(..offset);
        self.decided -= offset;
        out
    }
}

/// How a message's body is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// `len` bytes after the header section (Content-Length; none: 0).
    Length(usize),
    /// Chunked, relative to the message's start.
    Chunked(Chunked),
}

/// Where a chunked body's parts are, relative to its message's start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Chunked {
    /// The data of each chunk.
    data: Vec<Range<usize>>,
    /// Each chunk's extensions (`;name=value` after its size).
    extensions: Vec<Range<usize>>,
    /// The trailer fields, between the last chunk's size line and the blank line.
    trailer: Range<usize>,
}

/// Where the stream's next message stands.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// It is whole: `len` bytes, the header section `..header_end` (blank line included).
    Whole { len: usize, header_end: usize, body: Body },
    /// More is to come; the header section ends at `header_end` (0: not yet), and the
    /// body is this long when known.
    Partial { header_end: usize, body_length: Option<u64> },
    /// Not an HTTP message.
    NotHttp,
}

fn frame(bytes: &[u8]) -> Frame {
    let Some(header_end) = find(bytes, b"\r\n\r\n").map(|i| i + 4) else {
        let first_line_ok = find(bytes, b"\r\n").is_none_or(|end| is_start_line(&bytes[..end]));
        return if bytes.len() > MAX_HEADER || !first_line_ok {
            Frame::NotHttp
        } else {
            Frame::Partial { header_end: 0, body_length: None }
        };
    };
    let head = &bytes[..header_end];
    let start_line_end = find(head, b"\r\n").unwrap_or(0);
    if !is_start_line(&head[..start_line_end]) {
        return Frame::NotHttp;
    }
    let (mut length, mut chunked) = (None, false);
    // Between the start line and the blank line; empty when there is no header at all.
    let fields = head.get(start_line_end + 2..header_end - 2).unwrap_or_default();
    for line in fields.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], String::from_utf8_lossy(&line[colon + 1..]).trim().to_owned());
        if name.eq_ignore_ascii_case(b"content-length") {
            match value.parse::<u64>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Frame::NotHttp,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        return match chunks(bytes, header_end) {
            Some(Ok((len, parts))) => Frame::Whole { len, header_end, body: Body::Chunked(parts) },
            Some(Err(())) => Frame::NotHttp,
            None => Frame::Partial { header_end, body_length: None },
        };
    }
    if length.is_none() && ends_with_its_connection(&head[..start_line_end]) {
        // Read to the end of the connection, as a client reads it ([`Redactor::finish`]).
        return Frame::Partial { header_end, body_length: None };
    }
    let body = length.unwrap_or(0);
    match usize::try_from(body).ok().and_then(|b| header_end.checked_add(b)) {
        Some(len) if bytes.len() >= len => Frame::Whole { len, header_end, body: Body::Length(body as usize) },
        _ => Frame::Partial { header_end, body_length: Some(body) },
    }
}

/// `METHOD target HTTP/x` or `HTTP/x status`.
fn is_start_line(line: &[u8]) -> bool {
    line.starts_with(b"HTTP/") || find(line, b" HTTP/").is_some()
}

/// Whether a message with this start line and neither Content-Length nor chunking has a
/// body that runs to the end of its connection: a reply other than 1xx, 204 and 304
/// (RFC 9112 §6.3). A request without either has none.
fn ends_with_its_connection(start_line: &[u8]) -> bool {
    if !start_line.starts_with(b"HTTP/") {
        return false;
    }
    let status = start_line.split(|b| *b == b' ').nth(1).unwrap_or_default();
    !(status.starts_with(b"1") || status == b"204" || status == b"304")
}

/// A chunked body from `at`: its length to the end of its trailer and where its parts
/// are; `None` while incomplete, `Err` when malformed.
fn chunks(bytes: &[u8], mut at: usize) -> Option<Result<(usize, Chunked), ()>> {
    let mut parts = Chunked::default();
    loop {
        let line_end = at + find(&bytes[at..], b"\r\n")?;
        let line = &bytes[at..line_end];
        let size_end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
        if size_end < line.len() {
            parts.extensions.push(at + size_end..line_end);
        }
        let size = String::from_utf8_lossy(&line[..size_end]);
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return Some(Err(())) };
        let data = line_end + 2;
        if size == 0 {
            // Trailers, then the blank line.
            let mut line = data;
            loop {
                let end = line + find(&bytes[line..], b"\r\n")?;
                if end == line {
                    parts.trailer = data..line;
                    return Some(Ok((end + 2, parts)));
                }
                line = end + 2;
            }
        }
        let data_end = data.checked_add(size)?;
        if bytes.len() < data_end + 2 {
            return None;
        }
        parts.data.push(data..data_end);
        at = data_end + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The masks of a whole message starting at `at` in the stream.
fn redact_message(message: &[u8], header_end: usize, body: &Body, at: usize) -> Vec<Mask> {
    let mut masks = redact_head(&message[..header_end], at);
    match body {
        Body::Length(len) => {
            let bytes = &message[header_end..header_end + len];
            let origin = Origin::At(at + header_end);
            masks.extend(document(bytes, &origin, 0).unwrap_or_else(|| whole_if_secret(bytes, &origin)));
        }
        Body::Chunked(parts) => {
            let top = Origin::At(at);
            let mut decoded = Vec::new();
            let mut from = Vec::new();
            for range in &parts.data {
                decoded.extend_from_slice(&message[range.clone()]);
                from.extend(range.clone().map(|i| i..i + 1));
            }
            let origin = Origin::Decoded { ranges: from, parent: &top };
            match document(&decoded, &origin, 0) {
                Some(found) => masks.extend(found),
                None if may_hold_a_secret(&decoded) => {
                    masks.extend(parts.data.iter().map(|r| Mask { range: at + r.start..at + r.end, fill: Fill::Star }));
                }
                None => {}
            }
            for extension in &parts.extensions {
                if may_hold_a_secret(&message[extension.clone()]) {
                    masks.push(Mask { range: at + extension.start..at + extension.end, fill: Fill::Star });
                }
            }
            masks.extend(redact_fields(&message[parts.trailer.clone()], at + parts.trailer.start));
        }
    }
    masks
}

/// The masks of a header section at `at`: the values of secret headers, and of secret
/// query parameters in the request target.
fn redact_head(head: &[u8], at: usize) -> Vec<Mask> {
    let line_end = head.iter().position(|b| *b == b'\n').map_or(head.len(), |i| i + 1);
    let mut masks = redact_query(&head[..line_end], at);
    masks.extend(redact_fields(&head[line_end..], at + line_end));
    masks
}

/// The masks of header (or trailer) fields at `at`: the values of secret ones, their
/// folded continuation lines (a line starting with a space or tab) included.
fn redact_fields(fields: &[u8], at: usize) -> Vec<Mask> {
    let mut masks = Vec::new();
    let mut offset = 0;
    let mut secret = false;
    for line in fields.split(|b| *b == b'\n') {
        let start = offset;
        offset += line.len() + 1;
        let end = line.strip_suffix(b"\r").map_or(line.len(), <[u8]>::len);
        if line.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
            if secret {
                masks.push(Mask { range: at + start..at + start + end, fill: Fill::Star });
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            secret = false;
            continue;
        };
        secret = text::is_secret_key(&line[..colon]) || line[..colon].eq_ignore_ascii_case(b"set-cookie");
        if secret {
            masks.push(Mask { range: at + start + colon + 1..at + start + end, fill: Fill::Star });
        }
    }
    masks
}

/// The values of secret parameters in a request line's query.
fn redact_query(line: &[u8], at: usize) -> Vec<Mask> {
    let Some(q) = line.iter().position(|b| *b == b'?') else { return Vec::new() };
    let end = line[q..].iter().position(|b| *b == b' ').map_or(line.len(), |i| q + i);
    let mut masks = Vec::new();
    let mut start = q + 1;
    for pair in line[q + 1..end].split(|b| *b == b'&') {
        if let Some(eq) = pair.iter().position(|b| *b == b'=') {
            let key = percent_decoded(&pair[..eq]);
            if text::is_secret_key(&key) {
                masks.push(Mask { range: at + start + eq + 1..at + start + pair.len(), fill: Fill::Star });
            }
        }
        start += pair.len() + 1;
    }
    masks
}

fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// The masks of a document nydusd reads a configuration from: JSON, else TOML; `None`
/// when it is neither.
fn document(text: &[u8], origin: &Origin<'_>, layer: usize) -> Option<Vec<Mask>> {
    json::redact(text, origin, layer).or_else(|| toml::redact(text, origin))
}

/// All of `bytes` when they may hold a secret, else nothing.
fn whole_if_secret(bytes: &[u8], origin: &Origin<'_>) -> Vec<Mask> {
    if may_hold_a_secret(bytes) {
        vec![Mask { range: origin.in_stream(0..bytes.len()), fill: Fill::Star }]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
