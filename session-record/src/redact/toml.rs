//! TOML, which nydusd also reads instance configurations as, parsed with the place of
//! every value (`toml::de::DeTable`), to mask the values of secret keys where they stand:
//! bare, quoted or escaped keys, dotted keys, tables and inline tables alike.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::text::{Fill, Mask, Origin, echoed_secret, is_secret_key, may_hold_a_secret};

/// The masks that keep every secret of `text` (a TOML document, whose bytes come from
/// `origin`) out of the stream; `None` when `text` is not TOML.
pub(super) fn redact(text: &[u8], origin: &Origin<'_>) -> Option<Vec<Mask>> {
    let text = std::str::from_utf8(text).ok()?;
    let document = DeTable::parse(text).ok()?;
    let mut masks = Vec::new();
    table(text, document.get_ref(), origin, &mut masks);
    Some(masks)
}

fn table(text: &str, table: &DeTable<'_>, origin: &Origin<'_>, masks: &mut Vec<Mask>) {
    for (key, value) in table {
        if is_secret_key(key.get_ref().as_bytes()) {
            mask_all(text, value.get_ref(), value.span(), origin, masks);
        } else {
            walk(text, value.get_ref(), value.span(), origin, masks);
        }
    }
}

fn walk(text: &str, value: &DeValue<'_>, span: Range<usize>, origin: &Origin<'_>, masks: &mut Vec<Mask>) {
    match value {
        DeValue::Table(t) => table(text, t, origin, masks),
        DeValue::Array(items) => {
            for item in items.iter() {
                walk(text, item.get_ref(), item.span(), origin, masks);
            }
        }
        // A string that may itself be a configuration holding a secret, or that echoes one,
        // is masked whole (nydusd reads no configuration out of a TOML string; nothing is
        // lost to a replay).
        DeValue::String(s)
            if may_hold_a_secret(s.as_bytes())
                && (super::json::looks_like_a_document(s.as_bytes()) || echoed_secret(s.as_bytes()).is_some()) =>
        {
            masks.push(Mask { range: origin.in_stream(inside_quotes(text, span)), fill: Fill::Star });
        }
        _ => {}
    }
}

/// Masks every string and number under a secret key.
fn mask_all(text: &str, value: &DeValue<'_>, span: Range<usize>, origin: &Origin<'_>, masks: &mut Vec<Mask>) {
    match value {
        DeValue::Table(t) => {
            for (_, v) in t {
                mask_all(text, v.get_ref(), v.span(), origin, masks);
            }
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                mask_all(text, item.get_ref(), item.span(), origin, masks);
            }
        }
        DeValue::String(_) => masks.push(Mask { range: origin.in_stream(inside_quotes(text, span)), fill: Fill::Star }),
        DeValue::Integer(_) | DeValue::Float(_) => {
            masks.push(Mask { range: origin.in_stream(span), fill: Fill::Digits })
        }
        DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

/// The span of a string literal without its delimiters (`"`, `'`, `"""`, `'''`).
fn inside_quotes(text: &str, span: Range<usize>) -> Range<usize> {
    let literal = text.get(span.clone()).unwrap_or_default();
    let quote = ["\"\"\"", "'''", "\"", "'"]
        .into_iter()
        .find(|q| literal.len() >= 2 * q.len() && literal.starts_with(q) && literal.ends_with(q));
    match quote {
        Some(q) => span.start + q.len()..span.end - q.len(),
        None => span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> String {
        let masks = redact(text.as_bytes(), &Origin::At(0)).expect("TOML");
        let mut bytes = text.as_bytes().to_vec();
        super::super::text::apply(&mut bytes, &masks);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn every_way_of_writing_a_key_is_found() {
        let text = "[backend.config]\nauth = \"dXNlcjpw\"\nhost = \"r\"\n\"registry_token\" = 'tok'\n\"\\u0070assword\" = \"\"\"p\nw\"\"\"\nproxy.password = \"pp\"\ninline = { secret = \"s\", n = 42, token = 77 }\n";
        let out = redacted(text);
        for secret in ["dXNlcjpw", "tok'", "p\nw", "\"pp\"", "\"s\"", "77"] {
            assert!(!out.contains(secret), "{secret:?} left in {out}");
        }
        assert!(out.contains("host = \"r\"") && out.contains("n = 42"), "{out}");
        assert_eq!(out.len(), text.len());
        toml::de::DeTable::parse(&out).expect("still TOML");
    }

    #[test]
    fn text_that_is_not_toml_is_refused() {
        assert!(redact(b"auth = ", &Origin::At(0)).is_none());
        assert!(redact(b"\xff = 1", &Origin::At(0)).is_none());
    }
}
