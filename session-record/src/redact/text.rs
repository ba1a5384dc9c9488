//! A text being redacted and where each of its bytes came from in the recorded stream, so
//! that a secret found in a decoded layer (a chunked body, a JSON string holding a
//! configuration) is masked where its bytes were sent, escapes and all, and every length
//! stays as it was.

use std::ops::Range;

/// What a mask writes over the bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// `*`: inside a string, where any byte may stand.
    Star,
    /// Over digits only, `1` then `0`s for each run of them: a number stays a number,
    /// without the leading zero JSON and TOML refuse.
    Digits,
}

/// One range of the stream to mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mask {
    pub range: Range<usize>,
    pub fill: Fill,
}

/// Where the bytes of a text are in the stream.
#[derive(Debug)]
pub(super) enum Origin<'a> {
    /// Byte `i` of the text is byte `offset + i` of the stream.
    At(usize),
    /// Byte `i` of the text was decoded from `ranges[i]` of the `parent` text (an escape
    /// sequence gives several stream bytes one decoded byte, or several decoded bytes one
    /// sequence).
    Decoded { ranges: Vec<Range<usize>>, parent: &'a Origin<'a> },
}

impl Origin<'_> {
    /// The stream range a range of this text was sent as.
    pub(super) fn in_stream(&self, range: Range<usize>) -> Range<usize> {
        match self {
            Self::At(offset) => range.start + offset..range.end + offset,
            Self::Decoded { ranges, parent } => {
                if range.is_empty() {
                    let at = ranges.get(range.start).map_or_else(|| ranges.last().map_or(0, |r| r.end), |r| r.start);
                    return parent.in_stream(at..at);
                }
                parent.in_stream(ranges[range.start].start..ranges[range.end - 1].end)
            }
        }
    }
}

/// Words a secret's key holds, however the rest of it is spelled (`auth`,
/// `registry_token`, `proxy_password`, `access_key_secret`, `Authorization`, `X-Api-Key`,
/// `Cookie`), compared with case, `_`, `-`, `.` and spaces left out.
const SECRET_WORDS: &[&str] =
    &["auth", "passw", "token", "secret", "accesskey", "credential", "privatekey", "apikey", "cookie"];

/// The longest a secret word can be spelled in the bytes of a stream: each letter a
/// `\U0000XXXX` escape with its backslash doubled (a TOML configuration in a JSON
/// string), with separators between. A stream that is not HTTP holds this much back, so
/// that a word cut between two writes is seen whole.
pub(super) const LONGEST_SPELLING: usize = 12 * 16;

/// `key` as it is compared with the secret words.
fn normalized(bytes: impl IntoIterator<Item = u8>) -> Vec<u8> {
    bytes.into_iter().filter(|b| !matches!(b, b'_' | b'-' | b'.' | b' ')).map(|b| b.to_ascii_lowercase()).collect()
}

fn holds_a_secret_word(normalized: &[u8]) -> bool {
    SECRET_WORDS.iter().any(|w| normalized.windows(w.len()).any(|win| win == w.as_bytes()))
}

/// Whether a (decoded) key names a secret.
pub(super) fn is_secret_key(key: &[u8]) -> bool {
    holds_a_secret_word(&normalized(key.iter().copied()))
}

/// Whether bytes that could not be parsed might hold a secret: a secret's key in them,
/// also spelled with JSON's or TOML's `\u` and `\U` escapes or split by backslashes.
/// Text that cannot be read carries no key a daemon would read either; this only decides
/// how much of what could not be parsed is masked (all of it, or none), and which lines of
/// a daemon log the harness's reports withhold.
pub fn may_hold_a_secret(bytes: &[u8]) -> bool {
    let mut plain = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = match bytes.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if let Some(c) = bytes.get(i + 2..i + 2 + digits).filter(|_| digits > 0).and_then(ascii_of_hex) {
                plain.push(c);
                i += 2 + digits;
                continue;
            }
            i += 1;
            continue;
        }
        plain.push(bytes[i]);
        i += 1;
    }
    holds_a_secret_word(&normalized(plain))
}

/// The ASCII character whose code the hex digits spell.
fn ascii_of_hex(hex: &[u8]) -> Option<u8> {
    let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    u8::try_from(code).ok().filter(u8::is_ascii)
}

/// Where a secret echoed in a plain string begins: a secret word followed by `:` or `=`
/// (`Header: Authorization: Bearer …`, `…?token=…` in an error message), from the word
/// to the end of the string. A string that merely names a word (`/var/lib/auth-cache`)
/// is kept.
pub(super) fn echoed_secret(decoded: &[u8]) -> Option<usize> {
    let lower = decoded.to_ascii_lowercase();
    let mut found: Option<usize> = None;
    for word in ["authorization", "auth", "passw", "token", "secret", "access_key", "credential", "api_key", "apikey"] {
        let mut from = 0;
        while let Some(at) = lower[from..].windows(word.len()).position(|w| w == word.as_bytes()) {
            let start = from + at;
            let rest = &lower[start + word.len()..];
            let after_name = rest
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
                .unwrap_or(rest.len());
            let separator = rest[after_name..].iter().find(|b| !matches!(b, b' ' | b'"' | b'\'')).copied();
            if matches!(separator, Some(b':' | b'=')) {
                // From the start of the name the word is in (`registry_token`).
                let name_start = lower[..start]
                    .iter()
                    .rposition(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
                    .map_or(0, |i| i + 1);
                found = Some(found.map_or(name_start, |f| f.min(name_start)));
                break;
            }
            from = start + 1;
        }
    }
    found
}

/// Applies `masks` to `stream`.
pub(super) fn apply(stream: &mut [u8], masks: &[Mask]) {
    for mask in masks {
        let end = mask.range.end.min(stream.len());
        let start = mask.range.start.min(end);
        let mut in_run = false;
        for byte in &mut stream[start..end] {
            match mask.fill {
                Fill::Star => *byte = b'*',
                Fill::Digits if byte.is_ascii_digit() => {
                    *byte = if in_run { b'0' } else { b'1' };
                    in_run = true;
                }
                Fill::Digits => in_run = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_ranges_map_back_through_every_layer() {
        let top = Origin::At(100);
        // "a\u0062c" decoded to "abc": b came from six bytes.
        let string = Origin::Decoded { ranges: vec![0..1, 1..7, 7..8], parent: &top };
        assert_eq!(string.in_stream(1..2), 101..107);
        assert_eq!(string.in_stream(0..3), 100..108);
        let inner = Origin::Decoded { ranges: vec![1..2, 2..3], parent: &string };
        assert_eq!(inner.in_stream(0..1), 101..107);
    }

    #[test]
    fn a_secret_echoed_in_a_message_is_found_and_a_path_naming_a_word_is_not() {
        let echo = b"Invalid header. Reason: x. Header: Authorization: Bearer hunter2";
        assert_eq!(echoed_secret(echo), Some(35));
        assert_eq!(echoed_secret(b"bad query: ?registry_token=abc"), Some(12));
        assert_eq!(echoed_secret(b"/var/lib/auth-cache/blob"), None);
        assert_eq!(echoed_secret(b"mounted"), None);
    }

    #[test]
    fn secret_words_are_found_however_they_are_spelled() {
        assert!(is_secret_key(b"registry_token") && is_secret_key(b"Auth") && is_secret_key(b"proxy_password"));
        assert!(!is_secret_key(b"host") && !is_secret_key(b"dir"));
        assert!(may_hold_a_secret(br#"x \u0061uth = 1"#));
        assert!(may_hold_a_secret(br#""\U00000061uth" = 1"#));
        assert!(may_hold_a_secret(br#"pa\\ssword"#));
        assert!(is_secret_key(b"X-Api-Key") && is_secret_key(b"api_key") && is_secret_key(b"Access-Key"));
        assert!(!may_hold_a_secret(b"GET /api/v1/daemon HTTP/1.1"));
    }
}
