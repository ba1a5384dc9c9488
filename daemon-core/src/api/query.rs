//! `application/x-www-form-urlencoded` query strings, the way nydusd decodes them.

/// Encodes one query value (or key): unreserved bytes and `/` stay, everything else is `%XX`.
/// Keeping `/` readable matches what the Go client sends for `mountpoint=/snap`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte; a malformed escape
/// is kept literally (as the `url` crate does).
pub fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Looks up `key` in a raw query string; the first occurrence wins and `key=` is present
/// with an empty value (`nydusd-api.md` §1.4).
pub fn lookup(query: &str, key: &str) -> Option<String> {
    query.split('&').filter(|p| !p.is_empty()).find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(encode("/snap 1&x"), "/snap%201%26x");
    }

    #[test]
    fn lookup_decodes_and_first_occurrence_wins() {
        assert_eq!(lookup("mountpoint=%2Fa+b&mountpoint=/c", "mountpoint").as_deref(), Some("/a b"));
        assert_eq!(lookup("id=", "id").as_deref(), Some(""));
        assert_eq!(lookup("x=1", "id"), None);
        assert_eq!(lookup("a=%zz%4", "a").as_deref(), Some("%zz%4"));
    }
}
