//! Credentials masked in what a recording keeps of a byte stream.
//!
//! The string value of every secret key (`auth`, `registry_token`, passwords, access keys,
//! tokens) is replaced by as many `*` as it has bytes, so Content-Length and every chunk's
//! length stay true and a replay sends requests the daemon can frame. Keys are found
//! written as JSON (`"auth":"…"`) and as JSON inside a JSON string, as mount requests
//! carry their configuration (`\"auth\":\"…\"`).
//!
//! A stream is redacted as a stream, not piece by piece: a client (or the kernel) may cut
//! a request anywhere, inside a key, between a key and its value, or inside the secret,
//! and bytes that are not UTF-8 on their own (a piece cut inside a character) are
//! redacted before they are stored as base64.

/// Keys whose string values never reach a recording in clear.
const SECRET_KEYS: &[&str] =
    &["auth", "registry_token", "password", "proxy_password", "access_key_id", "access_key_secret", "token", "secret"];

/// How much of the stream's end is kept to find a key cut by a piece boundary: the
/// longest quoted key, the colon and the opening quote, with room for whitespace.
const LOOKBEHIND: usize = 64;

/// Where a secret value stands at the end of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenValue {
    /// A string inside a JSON string: it is closed by `\"`.
    nested: bool,
    /// Backslashes just before the piece's end.
    backslashes: usize,
}

/// One direction of one connection.
#[derive(Debug, Default)]
pub struct Redactor {
    /// The last bytes of the stream, raw, while no secret value is open.
    window: Vec<u8>,
    /// The secret value the stream is inside, if any.
    open: Option<OpenValue>,
}

impl Redactor {
    /// `piece`, the stream's next bytes, with every secret byte in it masked.
    pub fn redact(&mut self, piece: &[u8]) -> Vec<u8> {
        let mut out = piece.to_vec();
        let mut start = 0;
        if let Some(open) = self.open.take() {
            match value_end(piece, open) {
                Ok(end) => {
                    mask(&mut out, 0..end);
                    start = end;
                }
                Err(still) => {
                    mask(&mut out, 0..piece.len() - unmasked_tail(piece, still));
                    self.open = Some(still);
                    return out;
                }
            }
        }
        let offset = self.window.len();
        let mut text = std::mem::take(&mut self.window);
        text.extend_from_slice(&piece[start..]);
        // Positions in `text` at or past `offset` are in `out`, shifted by `start - offset`.
        let mask_text = |out: &mut Vec<u8>, from: usize, to: usize| {
            let (from, to) = (from.max(offset), to.max(offset));
            mask(out, start + from - offset..start + to - offset);
        };
        let mut i = 0;
        while i < text.len() {
            let Some((value, nested)) = value_start(&text, i) else {
                i += 1;
                continue;
            };
            match value_end(&text[value..], OpenValue { nested, backslashes: 0 }) {
                Ok(len) => {
                    mask_text(&mut out, value, value + len);
                    i = value + len;
                }
                Err(still) => {
                    let end = text.len() - unmasked_tail(&text[value..], still);
                    mask_text(&mut out, value, end);
                    self.open = Some(still);
                    return out;
                }
            }
        }
        let keep = text.len().saturating_sub(LOOKBEHIND);
        text.drain(..keep);
        self.window = text;
        out
    }
}

fn mask(out: &mut [u8], range: std::ops::Range<usize>) {
    for byte in &mut out[range] {
        *byte = b'*';
    }
}

/// Bytes at the end of an unterminated nested value left as they are: a run of
/// backslashes that may be the `\` of the closing `\"`, which must stay for the
/// recording to hold a well-formed request. Backslashes carry no secret.
fn unmasked_tail(bytes: &[u8], open: OpenValue) -> usize {
    if open.nested { open.backslashes.min(bytes.len()) } else { 0 }
}

/// If a secret key and its opening quote are written at `i`: where its value starts,
/// and whether it is a string inside a string.
fn value_start(text: &[u8], i: usize) -> Option<(usize, bool)> {
    let rest = &text[i..];
    let nested = match rest.first()? {
        b'"' => false,
        b'\\' => true,
        _ => return None,
    };
    let quote: &[u8] = if nested { b"\\\"" } else { b"\"" };
    let key = SECRET_KEYS.iter().find(|key| {
        rest.strip_prefix(quote).and_then(|r| r.strip_prefix(key.as_bytes())).is_some_and(|r| r.starts_with(quote))
    })?;
    let mut at = quote.len() + key.len() + quote.len();
    let skip_space = |at: &mut usize| {
        while rest.get(*at).is_some_and(u8::is_ascii_whitespace) {
            *at += 1;
        }
    };
    skip_space(&mut at);
    if rest.get(at) != Some(&b':') {
        return None;
    }
    at += 1;
    skip_space(&mut at);
    rest.get(at..)?.starts_with(quote).then_some((i + at + quote.len(), nested))
}

/// The length of the secret at the start of `bytes`: up to the quote that closes it, one
/// preceded by an even number of backslashes, or, nested, written `\"` and so preceded by
/// 1, 5, 9… (`\\\"` is an escaped quote inside it), the `\` excluded. `Err` with the state
/// at the end when `bytes` end first.
fn value_end(bytes: &[u8], open: OpenValue) -> Result<usize, OpenValue> {
    let mut backslashes = open.backslashes;
    for (i, byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' => backslashes += 1,
            b'"' if !open.nested && backslashes.is_multiple_of(2) => return Ok(i),
            b'"' if open.nested && backslashes % 4 == 1 => return Ok(i.saturating_sub(1)),
            _ => backslashes = 0,
        }
        if *byte == b'"' {
            backslashes = 0;
        }
    }
    Err(OpenValue { nested: open.nested, backslashes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` with its secrets masked, as one whole stream.
    fn redact(text: &str) -> String {
        String::from_utf8(Redactor::default().redact(text.as_bytes())).expect("whole characters are masked")
    }

    const NESTED: &str = r#"{"source":"/b","config":"{\"device\":{\"backend\":{\"type\":\"registry\",\"config\":{\"auth\":\"dXNlcjpwYXNz\",\"registry_token\":\"q9\\\"z7\",\"host\":\"r\"}}}}"}"#;

    #[test]
    fn credentials_are_redacted_in_json_and_in_json_inside_a_string() {
        let out = redact(NESTED);
        assert!(!out.contains("dXNlcjpwYXNz") && !out.contains("q9") && !out.contains("z7"), "{out}");
        // The escaped quote inside the token did not end it early.
        assert!(out.contains(r#"\"registry_token\":\"********\",\"host\""#), "{out}");
        assert!(out.contains(r#"\"auth\":\"************\""#) && out.contains(r#"\"host\":\"r\""#), "{out}");
        assert_eq!(out.len(), NESTED.len(), "lengths are kept");
        let plain = redact(r#"{"auth": "s3cret", "password":"p\"w", "other":"kept"}"#);
        assert_eq!(plain, r#"{"auth": "******", "password":"****", "other":"kept"}"#);
        // Not a key: left alone.
        assert_eq!(redact(r#"{"path":"/auth"}"#), r#"{"path":"/auth"}"#);
    }

    /// A request cut into two pieces at every byte, and into one-byte pieces: the pieces
    /// put together are what the whole was redacted to, so no cut lets a secret through.
    #[test]
    fn a_stream_cut_anywhere_is_redacted_as_the_whole() {
        let request =
            format!("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{NESTED}", NESTED.len());
        let plain = r#"{"password" :  "p\"wé", "token":"t0ken"}"#;
        for text in [request.as_str(), plain] {
            let whole = redact(text);
            let bytes = text.as_bytes();
            // Equal to the whole's redaction, but for backslashes a cut left standing at
            // the end of a piece (they may open the closing `\"`).
            let same = |joined: &[u8], how: &str| {
                assert_eq!(joined.len(), whole.len(), "{how}");
                for (i, (j, w)) in joined.iter().zip(whole.as_bytes()).enumerate() {
                    assert!(
                        j == w || (*j == b'\\' && *w == b'*' && bytes[i] == b'\\'),
                        "{how}: byte {i} is {:?}",
                        *j as char
                    );
                }
            };
            for cut in 0..=bytes.len() {
                let mut r = Redactor::default();
                let mut joined = r.redact(&bytes[..cut]);
                joined.extend(r.redact(&bytes[cut..]));
                same(&joined, &format!("cut at {cut}"));
            }
            let mut r = Redactor::default();
            let bytewise: Vec<u8> = bytes.iter().flat_map(|b| r.redact(std::slice::from_ref(b))).collect();
            same(&bytewise, "one byte at a time");
        }
    }

    #[test]
    fn a_piece_that_is_not_utf8_on_its_own_is_redacted_too() {
        let text = r#"{"auth":"é-secret"}"#.as_bytes();
        // Cut inside the two bytes of 'é'.
        let cut = text.iter().position(|b| *b >= 0x80).unwrap() + 1;
        let mut r = Redactor::default();
        let first = r.redact(&text[..cut]);
        assert!(std::str::from_utf8(&text[..cut]).is_err());
        let second = r.redact(&text[cut..]);
        assert_eq!([first, second].concat(), br#"{"auth":"*********"}"#);
    }
}
