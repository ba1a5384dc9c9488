//! The last gate of the loader: the file, read as plain YAML (numbers only where they are
//! written unquoted, `true`/`false` the only booleans, as YAML 1.2 and editors read it),
//! must be valid to the published schema (`scenarios/schema.json`, generated from the
//! same types). serde alone is more lenient than the schema: it reads `"100"` as 100 and
//! `2.4` as the text "2.4". With this gate the loader accepts nothing the schema rejects;
//! the mutation table in `tests/format.rs` checks the other direction.
//!
//! The same read of the file, with where every node was written, lets the loader find
//! the step or rule an error stands in (`crate::isolate`), and reports every schema error
//! of the file at once.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::steps::Invalid;

/// A YAML node with where each of its children was written.
#[derive(Debug)]
pub(crate) enum Node {
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

/// The file read as plain YAML, as JSON for the schema, with where each node was written.
pub(crate) struct Document {
    json: serde_json::Value,
    /// Where each JSON pointer's node was written.
    locations: HashMap<String, (u64, u64)>,
    /// Every node and key in the order they were written: a key is listed under the
    /// pointer of its value. What follows a node's own entries is where it ends.
    order: Vec<(String, (u64, u64))>,
    /// Each pointer's first entry in `order`.
    first: HashMap<String, usize>,
}

/// A line and a column, 1-based.
pub(crate) type Place = (u64, u64);

/// Where a node starts, and where the next node outside it starts (`None`: the end of the file).
pub(crate) type Extent = (Place, Option<Place>);

/// A schema error of the file.
pub(crate) struct SchemaProblem {
    pub problem: Invalid,
    /// The key a `required` error names: serde reports the same key missing where the
    /// mapping ends, the schema where it starts.
    pub missing: Option<String>,
    /// Whether it stands at the top of the file (a key of the scenario itself).
    pub at_top: bool,
}

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

fn at(node: &Spanned<Node>) -> (u64, u64) {
    (node.referenced.line(), node.referenced.column())
}

impl Document {
    /// Reads `text` (after `vars` substitution) as plain YAML; a syntax error is the one
    /// problem then.
    pub(crate) fn read(text: &str) -> Result<Self, Invalid> {
        let options = serde_saphyr::options! { strict_booleans: true };
        let node: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let (line, column, message) = mock_nydusd::script::describe_yaml_error(&e, text);
            Invalid { line, column, message }
        })?;
        let mut document =
            Self { json: serde_json::Value::Null, locations: HashMap::new(), order: Vec::new(), first: HashMap::new() };
        document.json = document.add(&node, "");
        Ok(document)
    }

    fn add(&mut self, node: &Spanned<Node>, pointer: &str) -> serde_json::Value {
        use serde_json::Value;
        self.locations.insert(pointer.to_owned(), at(node));
        self.note(pointer, at(node));
        match &node.value {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::Uint(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            Node::Text(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(
                items.iter().enumerate().map(|(i, item)| self.add(item, &format!("{pointer}/{i}"))).collect(),
            ),
            Node::Map(entries) => {
                let mut object = serde_json::Map::new();
                for (key, value) in entries {
                    let name = key_text(&key.value);
                    let child = format!("{pointer}/{}", escape(&name));
                    self.note(&child, at(key));
                    let value = self.add(value, &child);
                    object.insert(name, value);
                }
                Value::Object(object)
            }
        }
    }

    /// Where the node at `pointer` was written, or the nearest enclosing one that has a
    /// location.
    fn location(&self, pointer: &str) -> (u64, u64) {
        let mut at = pointer;
        loop {
            if let Some(location) = self.locations.get(at) {
                return *location;
            }
            match at.rfind('/') {
                Some(i) => at = &at[..i],
                None => return (1, 1),
            }
        }
    }

    fn note(&mut self, pointer: &str, location: (u64, u64)) {
        self.first.entry(pointer.to_owned()).or_insert(self.order.len());
        self.order.push((pointer.to_owned(), location));
    }

    /// Every node's pointer, once, in the order they were written.
    pub(crate) fn pointers(&self) -> impl Iterator<Item = &str> {
        self.order.iter().enumerate().filter(|(i, (p, _))| self.first.get(p) == Some(i)).map(|(_, (p, _))| p.as_str())
    }

    /// Where the node at `pointer` starts (its key's place, for a mapping's value), and
    /// where the next node outside it starts (`None`: it runs to the end of the file).
    pub(crate) fn extent(&self, pointer: &str) -> Option<Extent> {
        let &i = self.first.get(pointer)?;
        let inside = format!("{pointer}/");
        let end = self.order[i + 1..].iter().find(|(p, _)| p != pointer && !p.starts_with(&inside)).map(|(_, l)| *l);
        Some((self.order[i].1, end))
    }

    /// Every error of the file against the published schema, each where it stands.
    pub(crate) fn problems(&self) -> Result<Vec<SchemaProblem>, Invalid> {
        let validator = validator().as_ref().map_err(|e| Invalid {
            line: 0,
            column: 0,
            message: format!("the built-in schema is invalid: {e}"),
        })?;
        let mut problems: Vec<SchemaProblem> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // The scenario without its steps, then each step against the step's schema, in
        // the file's order, until enough to list: one pass over the whole document kept
        // every branch's errors of every broken step (a 1 MiB file of broken steps took
        // 3.3 GB and 30 s).
        let limit = 2 * crate::load::MAX_REPORTED;
        let mut errors: Vec<(String, jsonschema::ValidationError<'static>)> = Vec::new();
        let steps = self.json.get("steps").and_then(serde_json::Value::as_array);
        let mut rest = self.json.clone();
        if let (Some(_), Some(object)) = (steps, rest.as_object_mut()) {
            object.insert("steps".into(), serde_json::Value::Array(Vec::new()));
        }
        errors.extend(validator.iter_errors(&rest).take(limit).map(|e| (String::new(), e.to_owned())));
        if let (Some(steps), Ok(step)) = (steps, step_validator()) {
            for (i, item) in steps.iter().enumerate() {
                if errors.len() >= limit {
                    break;
                }
                errors.extend(step.iter_errors(item).take(limit).map(|e| (format!("/steps/{i}"), e.to_owned())));
            }
        }
        for (prefix, error) in &errors {
            for error in most_specific(error) {
                self.add_problem(&mut problems, &mut seen, prefix, error);
            }
        }
        Ok(problems)
    }

    fn add_problem(
        &self,
        problems: &mut Vec<SchemaProblem>,
        seen: &mut std::collections::HashSet<(u64, u64, String)>,
        prefix: &str,
        error: &jsonschema::ValidationError<'static>,
    ) {
        {
            use jsonschema::error::ValidationErrorKind;
            let pointer = format!("{prefix}{}", error.instance_path().as_str());
            let (missing, (line, column)) = match error.kind() {
                ValidationErrorKind::Required { property } => {
                    (property.as_str().map(str::to_owned), self.location(&pointer))
                }
                // At the unexpected key, not at its mapping, where serde points too.
                ValidationErrorKind::AdditionalProperties { unexpected } if unexpected.len() == 1 => {
                    (None, self.location(&format!("{pointer}/{}", escape(&unexpected[0]))))
                }
                _ => (None, self.location(&pointer)),
            };
            let field = readable(&pointer);
            let message = if field.is_empty() { error.to_string() } else { format!("{field}: {error}") };
            let problem = Invalid { line, column, message: format!("{message} (scenarios/schema.json)") };
            if seen.insert((problem.line, problem.column, problem.message.clone())) {
                problems.push(SchemaProblem { problem, missing, at_top: pointer.is_empty() });
            }
        }
    }
}

/// The schema of one step, with the published schema's definitions.
fn step_validator() -> &'static Result<jsonschema::Validator, String> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema = schema().as_ref().map_err(Clone::clone)?;
        let step = serde_json::json!({
            "$schema": schema["$schema"],
            "$ref": "#/definitions/Step",
            "definitions": schema["definitions"],
        });
        jsonschema::validator_for(&step).map_err(|e| e.to_string())
    })
}

/// The published schema, generated once for both validators.
fn schema() -> &'static Result<serde_json::Value, String> {
    static SCHEMA: OnceLock<Result<serde_json::Value, String>> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(&super::schema_json()).map_err(|e| e.to_string()))
}

fn validator() -> &'static Result<jsonschema::Validator, String> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR.get_or_init(|| jsonschema::validator_for(schema().as_ref()?).map_err(|e| e.to_string()))
}

/// The most specific errors of `error` and the errors under it: inside a `oneOf` (a
/// step, an action), the branch that got furthest into the document is the one the
/// author meant, and each of its own errors, followed down the same way, says what is
/// wrong. Among branches as deep, a value not among those allowed says more than "not an
/// object" from the branches of another shape.
fn most_specific<'a>(error: &'a jsonschema::ValidationError<'static>) -> Vec<&'a jsonschema::ValidationError<'static>> {
    use jsonschema::error::ValidationErrorKind;
    let context = match error.kind() {
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => context,
        _ => return vec![error],
    };
    let depth = |e: &jsonschema::ValidationError<'_>| e.instance_path().as_str().matches('/').count();
    let telling = |e: &jsonschema::ValidationError<'_>| match e.kind() {
        ValidationErrorKind::Enum { .. } | ValidationErrorKind::Constant { .. } => 0,
        ValidationErrorKind::AdditionalProperties { .. } => 1,
        ValidationErrorKind::Required { .. } => 2,
        ValidationErrorKind::Type { .. } => 4,
        _ => 3,
    };
    // A branch's reach: how deep its deepest error is, then how telling its most telling one there is.
    let reach = |branch: &Vec<jsonschema::ValidationError<'static>>| {
        let deepest = branch.iter().map(&depth).max().unwrap_or(0);
        let best = branch.iter().filter(|e| depth(e) == deepest).map(&telling).min().unwrap_or(5);
        (deepest, std::cmp::Reverse(best))
    };
    match context.iter().max_by_key(|branch| reach(branch)) {
        Some(branch) if reach(branch).0 > depth(error) => branch.iter().flat_map(most_specific).collect(),
        _ => vec![error],
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
