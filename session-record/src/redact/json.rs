//! JSON read with the place of every string and number, to mask the values of secret
//! keys where they stand. Keys are compared decoded (`"\u0061uth"` is `auth`), and a
//! string that holds a configuration (a mount request's `config`, JSON or TOML) is
//! decoded and redacted in turn.

use std::ops::Range;

use super::text::{Fill, Mask, Origin, echoed_secret, is_secret_key, may_hold_a_secret};

/// Deeper nesting is refused (a hostile body must not exhaust the stack).
const MAX_DEPTH: usize = 128;
/// How many layers of configuration-in-a-string are opened.
pub(super) const MAX_LAYERS: usize = 4;

/// A JSON value, by where its parts are.
#[derive(Debug)]
enum Node {
    Object(Vec<(Range<usize>, Node)>),
    Array(Vec<Node>),
    /// The bytes between the quotes.
    String(Range<usize>),
    Number(Range<usize>),
    Literal,
}

/// The masks that keep every secret of `text` (a JSON document, whose bytes come from
/// `origin`) out of the stream; `None` when `text` is not JSON.
pub(super) fn redact(text: &[u8], origin: &Origin<'_>, layer: usize) -> Option<Vec<Mask>> {
    let mut parser = Parser { text, at: 0 };
    parser.space();
    let node = parser.value(0)?;
    parser.space();
    if parser.at != text.len() {
        return None;
    }
    let mut masks = Vec::new();
    walk(text, &node, origin, layer, &mut masks);
    Some(masks)
}

fn walk(text: &[u8], node: &Node, origin: &Origin<'_>, layer: usize, masks: &mut Vec<Mask>) {
    match node {
        Node::Object(members) => {
            for (key, value) in members {
                let (decoded, _) = decode(text, key.clone());
                if is_secret_key(&decoded) {
                    mask_all(value, origin, masks);
                } else {
                    walk(text, value, origin, layer, masks);
                }
            }
        }
        Node::Array(items) => items.iter().for_each(|item| walk(text, item, origin, layer, masks)),
        Node::String(range) => nested(text, range.clone(), origin, layer, masks),
        Node::Number(_) | Node::Literal => {}
    }
}

/// A string that may hold a configuration of its own: decoded and redacted as JSON or
/// TOML; one that parses as neither but may hold a secret is masked whole. A plain
/// string that echoes a secret (`Header: Authorization: …` in an error reply) is masked
/// from the echoed key on.
fn nested(text: &[u8], range: Range<usize>, origin: &Origin<'_>, layer: usize, masks: &mut Vec<Mask>) {
    let (decoded, ranges) = decode(text, range.clone());
    if !looks_like_a_document(&decoded) {
        if let Some(start) = echoed_secret(&decoded) {
            let inner = Origin::Decoded { ranges, parent: origin };
            masks.push(Mask { range: inner.in_stream(start..decoded.len()), fill: Fill::Star });
        }
        return;
    }
    if layer < MAX_LAYERS {
        let inner = Origin::Decoded { ranges, parent: origin };
        if let Some(found) = super::document(&decoded, &inner, layer + 1) {
            masks.extend(found);
            return;
        }
    }
    if may_hold_a_secret(&decoded) {
        masks.push(Mask { range: origin.in_stream(range), fill: Fill::Star });
    }
}

/// Whether a string could be a configuration (a JSON object or array, or TOML's
/// `key = value`), rather than a plain value such as a path that merely names `auth`.
pub(super) fn looks_like_a_document(decoded: &[u8]) -> bool {
    let trimmed = decoded.trim_ascii_start();
    trimmed.starts_with(b"{") || trimmed.starts_with(b"[") || decoded.contains(&b'=')
}

/// Masks every string and number under a secret key.
fn mask_all(node: &Node, origin: &Origin<'_>, masks: &mut Vec<Mask>) {
    match node {
        Node::Object(members) => members.iter().for_each(|(_, v)| mask_all(v, origin, masks)),
        Node::Array(items) => items.iter().for_each(|v| mask_all(v, origin, masks)),
        Node::String(range) => masks.push(Mask { range: origin.in_stream(range.clone()), fill: Fill::Star }),
        Node::Number(range) => masks.push(Mask { range: origin.in_stream(range.clone()), fill: Fill::Digits }),
        Node::Literal => {}
    }
}

/// The string between the quotes at `range`, decoded, and for each decoded byte the
/// range of `text` it came from. Escapes that do not decode are kept as written.
pub(super) fn decode(text: &[u8], range: Range<usize>) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut out = Vec::with_capacity(range.len());
    let mut from = Vec::with_capacity(range.len());
    let mut i = range.start;
    while i < range.end {
        if text[i] != b'\\' || i + 1 >= range.end {
            out.push(text[i]);
            from.push(i..i + 1);
            i += 1;
            continue;
        }
        let simple = match text[i + 1] {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            from.push(i..i + 2);
            i += 2;
            continue;
        }
        match unicode_at(text, i, range.end) {
            Some((c, len)) => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push(byte);
                    from.push(i..i + len);
                }
                i += len;
            }
            None => {
                out.push(text[i]);
                from.push(i..i + 1);
                i += 1;
            }
        }
    }
    (out, from)
}

/// `\uXXXX` (or a surrogate pair `\uD83D\uDE00`) at `i`: the character and the escape's length.
fn unicode_at(text: &[u8], i: usize, end: usize) -> Option<(char, usize)> {
    let hex = |at: usize| -> Option<u32> {
        let digits = text.get(at..at + 4).filter(|_| at + 4 <= end)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    if text.get(i + 1) != Some(&b'u') {
        return None;
    }
    let first = hex(i + 2)?;
    if (0xD800..0xDC00).contains(&first) && text.get(i + 6..i + 8) == Some(b"\\u") {
        let second = hex(i + 8)?;
        let code = 0x10000 + ((first - 0xD800) << 10) + (second.checked_sub(0xDC00)? & 0x3FF);
        return char::from_u32(code).map(|c| (c, 12));
    }
    char::from_u32(first).map(|c| (c, 6))
}

struct Parser<'t> {
    text: &'t [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.text.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.text.get(self.at)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Node::String),
            b'-' | b'0'..=b'9' => Some(Node::Number(self.number())),
            _ => self.literal(),
        }
    }

    fn object(&mut self, depth: usize) -> Option<Node> {
        self.eat(b'{')?;
        let mut members = Vec::new();
        self.space();
        if self.eat(b'}').is_some() {
            return Some(Node::Object(members));
        }
        loop {
            self.space();
            let key = self.string()?;
            self.space();
            self.eat(b':')?;
            self.space();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.space();
            if self.eat(b',').is_some() {
                continue;
            }
            self.eat(b'}')?;
            return Some(Node::Object(members));
        }
    }

    fn array(&mut self, depth: usize) -> Option<Node> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        self.space();
        if self.eat(b']').is_some() {
            return Some(Node::Array(items));
        }
        loop {
            self.space();
            items.push(self.value(depth + 1)?);
            self.space();
            if self.eat(b',').is_some() {
                continue;
            }
            self.eat(b']')?;
            return Some(Node::Array(items));
        }
    }

    /// The range between the quotes of the string at the cursor.
    fn string(&mut self) -> Option<Range<usize>> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match *self.text.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(start..self.at - 1);
                }
                b'\\' => self.at += 2,
                // A raw control character is not JSON (serde_json refuses it too).
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    fn number(&mut self) -> Range<usize> {
        let start = self.at;
        while self.text.get(self.at).is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        start..self.at
    }

    fn literal(&mut self) -> Option<Node> {
        let rest = &self.text[self.at..];
        let word = [&b"true"[..], b"false", b"null"].into_iter().find(|w| rest.starts_with(w))?;
        self.at += word.len();
        Some(Node::Literal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> String {
        let masks = redact(text.as_bytes(), &Origin::At(0), 0).expect("JSON");
        let mut bytes = text.as_bytes().to_vec();
        super::super::text::apply(&mut bytes, &masks);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn values_of_secret_keys_are_masked_however_the_key_is_spelled() {
        assert_eq!(redacted(r#"{"auth": "s3cret", "host":"r"}"#), r#"{"auth": "******", "host":"r"}"#);
        assert_eq!(redacted(r#"{"\u0070assword":"p\"w"}"#), r#"{"\u0070assword":"****"}"#);
        assert_eq!(redacted(r#"{"token": 12345, "n": 7}"#), r#"{"token": 10000, "n": 7}"#);
        assert_eq!(redacted(r#"{"auth": {"user":"u","pass":["p"]}}"#), r#"{"auth": {"user":"*","pass":["*"]}}"#);
        assert_eq!(redacted(r#"{"path":"/auth"}"#), r#"{"path":"/auth"}"#);
    }

    #[test]
    fn a_configuration_inside_a_string_is_redacted_in_place_escapes_and_all() {
        let text = r#"{"config":"{\"backend\":{\"\\u0061uth\":\"dXNl\\u0072\"}}"}"#;
        let out = redacted(text);
        assert_eq!(out.len(), text.len());
        assert!(!out.contains("dXNl") && !out.contains("0072"), "{out}");
        assert!(out.contains(r#"\"\\u0061uth\":\"***********\""#), "{out}");
        let toml = r#"{"config":"[backend]\nregistry_token = \"t0k\\\"en\"\nhost = \"h\""}"#;
        let out = redacted(toml);
        assert!(!out.contains("t0k") && !out.contains("en\\"), "{out}");
        assert!(out.contains(r#"host = \"h\""#), "{out}");
    }

    #[test]
    fn deep_or_broken_json_is_refused() {
        assert!(redact(&b"[".repeat(10_000), &Origin::At(0), 0).is_none());
        assert!(redact(br#"{"auth":"x"#, &Origin::At(0), 0).is_none());
        assert!(redact(br#"{"a":1} trailing"#, &Origin::At(0), 0).is_none());
    }
}
