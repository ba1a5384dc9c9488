//! What a comparison of two sessions ignores and which differences it accepts
//! (`docs/diff-explained.yaml`): volatile reply fields, and differences understood, each
//! with its reason. Used by `harness replay` and by `harness diff`.

use serde::Deserialize;
use serde_json::Value;

/// An explained-differences file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: not an explained-differences file")]
pub struct ExplainedError {
    origin: String,
    // Boxed: the YAML error is large and this one is returned on every parse.
    #[source]
    source: Box<serde_saphyr::Error>,
}

/// The explained differences shipped with the harness.
pub const DEFAULT_EXPLAINED: &str = include_str!("../../docs/diff-explained.yaml");

/// What the comparison ignores and which differences it accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explained {
    /// JSON pointers (`*` matches any one key) removed from every reply body before
    /// comparing: build information, times, counters that depend on timing.
    #[serde(default)]
    pub volatile: Vec<String>,
    /// Differences that are understood.
    #[serde(default)]
    pub differences: Vec<ExplainedDifference>,
}

/// One understood difference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainedDifference {
    /// Scenario name (`*`: any).
    #[serde(default = "any")]
    pub scenario: String,
    /// `METHOD /path` of the exchange (`*`: any).
    #[serde(default = "any")]
    pub request: String,
    /// Why mock and real differ there.
    pub why: String,
}

fn any() -> String {
    "*".to_owned()
}

impl Explained {
    /// Parses an explained-differences file; `origin` names it in the error.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ExplainedError> {
        serde_saphyr::from_str(text)
            .map_err(|source| ExplainedError { origin: origin.to_owned(), source: Box::new(source) })
    }

    /// The shipped file (`docs/diff-explained.yaml`).
    pub fn shipped() -> Self {
        Self::parse(DEFAULT_EXPLAINED, "docs/diff-explained.yaml").unwrap_or_default()
    }

    /// Why `request` of `scenario` differs, when that is understood.
    pub fn why(&self, scenario: &str, request: &str) -> Option<&str> {
        self.differences
            .iter()
            .find(|e| (e.scenario == "*" || e.scenario == scenario) && (e.request == "*" || e.request == request))
            .map(|e| e.why.as_str())
    }
}

/// Removes what `pointer` names; a `*` segment matches every key or index.
pub fn remove_pointer(value: &mut Value, pointer: &str) {
    let segments: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    remove_segments(value, &segments);
}

fn remove_segments(value: &mut Value, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else { return };
    match value {
        Value::Object(map) if rest.is_empty() => {
            if *first == "*" {
                map.clear();
            } else {
                map.remove(*first);
            }
        }
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if *first == "*" || key == first {
                    remove_segments(child, rest);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                if *first == "*" || first.parse() == Ok(i) {
                    remove_segments(child, rest);
                }
            }
        }
        _ => {}
    }
}
