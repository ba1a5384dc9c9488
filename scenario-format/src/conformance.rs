//! The last gate of the loader: the file, read as plain YAML (numbers only where they are
//! written unquoted, `true`/`false` the only booleans, as YAML 1.2 and editors read it),
//! must be valid to the published schema (`scenarios/schema.json`, generated from the
//! same types). serde alone is more lenient than the schema: it reads `"100"` as 100 and
//! `2.4` as the text "2.4". With this gate the loader accepts nothing the schema rejects;
//! the mutation table in `tests/format.rs` checks the other direction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::LoadError;

/// A YAML node with where each of its children was written.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Uint(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Where each JSON pointer of the converted document was written.
type Locations = HashMap<String, (u64, u64)>;

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn key_text(node: &Node) -> String {
    match node {
        Node::Text(s) => s.clone(),
        Node::Null => "null".into(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::Uint(u) => u.to_string(),
        Node::Float(f) => f.to_string(),
        Node::Seq(_) | Node::Map(_) => "<collection>".into(),
    }
}

fn to_json(node: &Spanned<Node>, pointer: &str, locations: &mut Locations) -> serde_json::Value {
    use serde_json::Value;
    locations.insert(pointer.to_owned(), (node.referenced.line(), node.referenced.column()));
    match &node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::from(*i),
        Node::Uint(u) => Value::from(*u),
        Node::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        Node::Text(s) => Value::String(s.clone()),
        Node::Seq(items) => Value::Array(
            items.iter().enumerate().map(|(i, item)| to_json(item, &format!("{pointer}/{i}"), locations)).collect(),
        ),
        Node::Map(entries) => {
            let mut object = serde_json::Map::new();
            for (key, value) in entries {
                let name = key_text(&key.value);
                let child = format!("{pointer}/{}", escape(&name));
                object.insert(name, to_json(value, &child, locations));
            }
            Value::Object(object)
        }
    }
}

fn validator() -> &'static Result<jsonschema::Validator, String> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(&super::schema_json()).map_err(|e| e.to_string())?;
        jsonschema::validator_for(&schema).map_err(|e| e.to_string())
    })
}

/// The most specific of `error` and the errors under it: inside a `oneOf` (a step, an
/// action), the branch that got furthest into the document is the one the author meant,
/// and its deepest error says what is wrong.
fn most_specific<'a>(error: &'a jsonschema::ValidationError<'static>) -> &'a jsonschema::ValidationError<'static> {
    use jsonschema::error::ValidationErrorKind;
    let context = match error.kind() {
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => context,
        _ => return error,
    };
    let depth = |e: &jsonschema::ValidationError<'_>| e.instance_path().as_str().matches('/').count();
    match context.iter().flatten().max_by_key(|e| depth(e)).filter(|e| depth(e) > depth(error)) {
        Some(deeper) => most_specific(deeper),
        None => error,
    }
}

/// `steps/1/sleep/ms` as `steps[1].sleep.ms`, the way the file reads.
fn readable(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

/// Checks `text` (after `vars` substitution) against the published schema.
pub(super) fn check(path: &Path, text: &str) -> Result<(), LoadError> {
    let invalid = |line, column, message: String| LoadError::Invalid { path: path.to_owned(), line, column, message };
    let options = serde_saphyr::options! { strict_booleans: true };
    let node: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let (line, column, message) = mock_nydusd::script::describe_yaml_error(&e, text);
        invalid(line, column, message)
    })?;
    let mut locations = Locations::new();
    let document = to_json(&node, "", &mut locations);
    let validator = validator().as_ref().map_err(|e| invalid(0, 0, format!("the built-in schema is invalid: {e}")))?;
    let Some(error) = validator.iter_errors(&document).next() else { return Ok(()) };
    let error = error.to_owned();
    let error = most_specific(&error);
    let pointer = error.instance_path().as_str().to_owned();
    // The node itself, or the nearest enclosing one that has a location.
    let mut at = pointer.as_str();
    let (line, column) = loop {
        if let Some(location) = locations.get(at) {
            break *location;
        }
        match at.rfind('/') {
            Some(i) => at = &at[..i],
            None => break (1, 1),
        }
    };
    let field = readable(&pointer);
    let message = if field.is_empty() { error.to_string() } else { format!("{field}: {error}") };
    Err(invalid(line, column, format!("{message} (scenarios/schema.json)")))
}
