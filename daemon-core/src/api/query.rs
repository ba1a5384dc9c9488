//! Query values as the client sends them. The decoding is the server's (mock-nydusd's
//! `query`, written after nydusd's); a lifecycle test sends awkward values through both.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(encode("/snap 1&x"), "/snap%201%26x");
    }
}
