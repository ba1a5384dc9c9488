//! Query parameters the way nydusd reads them (`nydusd-api.md` §1.4).
//!
//! nydusd glues `http:` to the request target and lets the `url` crate parse it, then scans
//! `application/x-www-form-urlencoded` pairs for the first with the wanted key. What that
//! means, byte by byte: the URL parser drops ASCII tabs and newlines and ends the query at
//! `#`; pairs are split at `&` (empty ones skipped) and at the first `=` (a bare key has an
//! empty value); `+` is a space; `%` with two hex digits is that byte and anything else
//! stays literal; the bytes are then read as UTF-8 with replacement characters.
//!
//! This is the server's reading, kept apart from daemon-core's encoder on purpose: a
//! lifecycle test sends awkward values from one to the other.

/// The value of the first pair named `key` in the raw query `query` (without `?`).
pub fn first_value(query: &str, key: &str) -> Option<String> {
    let cleaned: Vec<u8> = query.bytes().filter(|b| !matches!(b, b'\t' | b'\n' | b'\r')).collect();
    let query = cleaned.split(|b| *b == b'#').next().unwrap_or_default();
    query.split(|b| *b == b'&').filter(|pair| !pair.is_empty()).find_map(|pair| {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (form_decode(name) == key).then(|| form_decode(value))
    })
}

fn form_decode(component: &[u8]) -> String {
    let mut out = Vec::with_capacity(component.len());
    let mut rest = component;
    while let Some((&first, tail)) = rest.split_first() {
        rest = tail;
        let byte = match first {
            b'+' => b' ',
            b'%' => match tail {
                [hi, lo, after @ ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                    rest = after;
                    hex_value(*hi) << 4 | hex_value(*lo)
                }
                _ => b'%',
            },
            other => other,
        };
        out.push(byte);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::first_value;
    use rstest::rstest;

    #[rstest]
    #[case::percent_and_plus("mountpoint=%2Fa+b&mountpoint=/c", Some("/a b"))]
    #[case::first_wins("mountpoint=/x&mountpoint=/y", Some("/x"))]
    #[case::empty_value_is_present("mountpoint=", Some(""))]
    #[case::bare_key_is_present("mountpoint", Some(""))]
    #[case::absent("id=1", None)]
    #[case::empty_pairs_skipped("&&mountpoint=/z&", Some("/z"))]
    #[case::bad_escapes_stay("mountpoint=%zz%4", Some("%zz%4"))]
    #[case::escaped_key("mount%70oint=/k", Some("/k"))]
    #[case::fragment_ends_the_query("mountpoint=/a#b", Some("/a"))]
    #[case::key_after_a_fragment("x=1#mountpoint=/a", None)]
    #[case::tabs_dropped("mountpoint=/a\tb", Some("/ab"))]
    #[case::invalid_utf8_replaced("mountpoint=%FF", Some("\u{FFFD}"))]
    #[case::encoded_ampersand("mountpoint=/a%26b", Some("/a&b"))]
    fn values(#[case] query: &str, #[case] expected: Option<&str>) {
        assert_eq!(first_value(query, "mountpoint").as_deref(), expected);
    }
}
