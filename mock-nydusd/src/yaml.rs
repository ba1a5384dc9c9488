//! Located, one-line YAML errors for scripts (and the harness's scenarios, which reuse
//! this): serde-saphyr renders a source snippet around each message, and some of its
//! messages (`invalid u64`) omit the field, which the source text at the location gives.

/// A parse error as `(line, column, message)`; line and column are 1-based, 0 when unknown.
pub fn describe(error: &serde_saphyr::Error, text: &str) -> (u64, u64, String) {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    let mut message = first_line(&error.to_string());
    if !message.contains('`')
        && let Some(field) = field_at(text, line, column)
    {
        message = format!("{message} for field `{field}`");
    }
    (line, column, message)
}

fn first_line(text: &str) -> String {
    let mut first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text).trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop a "line X column Y: " prefix or " at line X, column Y" suffix that repeats ours.
    if let (true, Some(i)) = (first.starts_with("line "), first.find(": ")) {
        first = &first[i + 2..];
    }
    match first.find(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

/// The key whose value starts at `line:column`: the last `key:` before it on that line.
fn field_at(text: &str, line: u64, column: u64) -> Option<String> {
    let source = text.lines().nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let before: String = source.chars().take(usize::try_from(column).ok()?.saturating_sub(1)).collect();
    let before = before.trim_end().strip_suffix(':')?;
    let key: String =
        before.chars().rev().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-').collect::<String>();
    let key: String = key.chars().rev().collect();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "only deserialised, to provoke parse errors")]
    struct Doc {
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised, to provoke parse errors")]
    struct Item {
        delay_ms: u64,
    }

    #[test]
    fn a_type_error_names_its_field_from_the_source() {
        for text in ["items: [{delay_ms: soon}]\n", "items:\n  - delay_ms: soon\n"] {
            let error = serde_saphyr::from_str::<Doc>(text).unwrap_err();
            let (line, _, message) = describe(&error, text);
            assert!(line > 0);
            assert!(message.ends_with("for field `delay_ms`"), "{message}");
        }
    }

    #[test]
    fn messages_that_name_something_are_kept() {
        let text = "items: [{delay_ms: 1, delay: 1}]\n";
        let error = serde_saphyr::from_str::<Doc>(text).unwrap_err();
        let (_, _, message) = describe(&error, text);
        assert!(message.starts_with("unknown field `delay`"), "{message}");
    }
}
