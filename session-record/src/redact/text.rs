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
/// `registry_token`, `proxy_password`, `access_key_secret`, `Authorization`).
const SECRET_WORDS: &[&str] = &["auth", "passw", "token", "secret", "access_key", "credential", "private_key"];

/// Whether a (decoded) key names a secret.
pub(super) fn is_secret_key(key: &[u8]) -> bool {
    let key = String::from_utf8_lossy(key).to_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// Whether bytes that could not be parsed might hold a secret: a secret's key in them,
/// also spelled with JSON's or TOML's `\u` escapes or split by backslashes. Text that
/// cannot be read carries no key a daemon would read either; this only decides how much
/// of what could not be parsed is masked (all of it, or none).
pub(super) fn may_hold_a_secret(bytes: &[u8]) -> bool {
    let mut plain = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(c) = bytes.get(i + 1..i + 6).filter(|e| matches!(e[0], b'u' | b'U')).and_then(unicode_escape) {
                plain.push(c);
                i += 6;
                continue;
            }
            i += 1;
            continue;
        }
        plain.push(bytes[i].to_ascii_lowercase());
        i += 1;
    }
    SECRET_WORDS.iter().any(|w| plain.windows(w.len()).any(|win| win == w.as_bytes()))
}

/// `uXXXX` of an ASCII character, lower-cased.
fn unicode_escape(escape: &[u8]) -> Option<u8> {
    let hex = std::str::from_utf8(&escape[1..5]).ok()?;
    let code = u32::from_str_radix(hex, 16).ok()?;
    u8::try_from(code).ok().filter(u8::is_ascii).map(|c| c.to_ascii_lowercase())
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
    fn secret_words_are_found_however_they_are_spelled() {
        assert!(is_secret_key(b"registry_token") && is_secret_key(b"Auth") && is_secret_key(b"proxy_password"));
        assert!(!is_secret_key(b"host") && !is_secret_key(b"dir"));
        assert!(may_hold_a_secret(br#"x \u0061uth = 1"#));
        assert!(may_hold_a_secret(br#"pa\\ssword"#));
        assert!(!may_hold_a_secret(b"GET /api/v1/daemon HTTP/1.1"));
    }
}
