//! Scenario files of the nydusd lifecycle harness: the format, its JSON Schema and its
//! loader, usable by any tool that reads scenario files.
//!
//! * [`model`]: the file, its manager, daemons and instances; [`steps`]: every step, from
//!   the one list ([`for_each_step!`]); [`fields`]: field types they share; [`tree`]: the
//!   files of an instance.
//! * [`load`]: reading and checking a file, every error at `file:line:column`;
//!   [`bounded`]: sizes bounded when read; [`paths`]: paths that cannot leave their place.
//! * The last gate: the file as plain YAML, valid to the published schema (`conformance`).
//! * Every error at once: a broken step replaced by a stand-in, so the rest is read and
//!   checked too (`isolate`).

pub mod bounded;
mod conformance;
pub mod fields;
mod isolate;
pub mod load;
pub mod model;
pub mod paths;
pub mod steps;
pub mod tree;

pub use load::{LoadError, discover, load};
pub use model::Scenario;
pub use steps::Step;

/// The JSON Schema (draft-07) of scenario files, as committed at `scenarios/schema.json`.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Scenario>().to_value();
    for_editors(&mut schema);
    serde_json::to_string_pretty(&schema).expect("schemas serialise")
}

/// Shapes the schema for editors (yaml-language-server) without changing what it accepts.
/// Each rewrite answers something an editor showed wrongly, measured with
/// yaml-language-server 1.25 (`ci/editor/completion.mjs` asserts the outcome):
/// * `"default": null` (an `Option` field's) stops completion from offering the other
///   branches of a `oneOf`, so it goes.
/// * A `oneOf` of string constants (a Rust enum with documented variants) becomes one
///   `enum` with `markdownEnumDescriptions`: hover showed the first matching constant's
///   description instead of the field's, and completion lists the values with theirs.
///   Where constants and objects mix (a rule's actions), the constants go first: the
///   server drops a `oneOf`'s first branch from completion at a bare `- ` when it is an
///   object (`delay_ms` was never offered).
/// * A field that refers to a definition (`allOf: [$ref]` with the field's description)
///   gets its own copy of it, described as the field is, because hover shows the
///   innermost description: `event:` read "Started and verified.", the first event's.
///   A single-key branch (`- signal: {...}` among the steps) gets the same, described as
///   the branch is.
/// * A single-key branch says "exactly this key" with `minProperties: 1` instead of
///   `required`: for every branch with a required key the server adds a second, "parent"
///   completion item, so each step was offered twice (94 items for 47 steps).
fn for_editors(schema: &mut serde_json::Value) {
    constants_as_enums(schema);
    let definitions = schema.get("definitions").cloned().unwrap_or_default();
    shape(schema, &definitions);
}

/// The `oneOf` branches that are string constants, gathered into one `enum` branch.
fn constants_as_enums(node: &mut serde_json::Value) {
    use serde_json::{Map, Value};
    match node {
        Value::Object(map) => {
            map.values_mut().for_each(constants_as_enums);
            let Some(Value::Array(branches)) = map.get_mut("oneOf") else { return };
            let is_constant = |b: &Value| b.get("type") == Some(&Value::from("string")) && b.get("const").is_some();
            let (constants, others): (Vec<Value>, Vec<Value>) = branches.drain(..).partition(is_constant);
            if constants.is_empty() {
                *branches = others;
                return;
            }
            let mut merged = Map::new();
            merged.insert("type".into(), "string".into());
            merged.insert("enum".into(), constants.iter().map(|b| b["const"].clone()).collect());
            merged.insert(
                "markdownEnumDescriptions".into(),
                constants.iter().map(|b| b.get("description").cloned().unwrap_or_else(|| "".into())).collect(),
            );
            if others.is_empty() {
                map.remove("oneOf");
                map.extend(merged);
            } else {
                *branches = std::iter::once(Value::Object(merged)).chain(others).collect();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(constants_as_enums),
        _ => {}
    }
}

fn shape(node: &mut serde_json::Value, definitions: &serde_json::Value) {
    use serde_json::Value;
    let definition = |reference: Option<&Value>| {
        reference
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/definitions/"))
            .and_then(|name| definitions.get(name))
            .and_then(Value::as_object)
    };
    match node {
        Value::Object(map) => {
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                for property in properties.values_mut() {
                    let Value::Object(field) = property else { continue };
                    let referred = match field.get("allOf") {
                        Some(Value::Array(all)) if all.len() == 1 => definition(all[0].get("$ref")),
                        _ => None,
                    };
                    if let (Some(target), true) = (referred, field.contains_key("description")) {
                        let mut copy = target.clone();
                        copy.remove("title");
                        field.remove("allOf");
                        // The field's own keys (description, default) win over the definition's.
                        copy.extend(std::mem::take(field));
                        *field = copy;
                    }
                }
            }
            if let Some(Value::Array(branches)) = map.get_mut("oneOf") {
                for branch in branches {
                    let Some(description) = branch.get("description").cloned() else { continue };
                    let Some(Value::Object(branch)) = Some(branch) else { continue };
                    let single_key = match branch.get("properties") {
                        Some(Value::Object(properties)) if properties.len() == 1 => properties.keys().next().cloned(),
                        _ => None,
                    };
                    let Some(key) = single_key else { continue };
                    if branch.get("required") == Some(&Value::from(vec![key.clone()]))
                        && branch.get("additionalProperties") == Some(&Value::Bool(false))
                    {
                        branch.remove("required");
                        branch.insert("minProperties".into(), 1.into());
                    }
                    let Some(Value::Object(properties)) = branch.get_mut("properties") else { continue };
                    let property = properties.get_mut(&key).expect("the one key");
                    if let Some(target) = definition(property.get("$ref")) {
                        let mut copy = target.clone();
                        copy.insert("description".into(), description.clone());
                        *property = Value::Object(copy);
                    } else if let Value::Object(inline) = property {
                        inline.insert("description".into(), description.clone());
                    }
                }
            }
            map.values_mut().for_each(|v| shape(v, definitions));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shape(v, definitions)),
        _ => {}
    }
}

/// How a value is spelled in scenario files (`failed_over`, `mkfs-erofs`, `real`), for
/// messages that should read as the YAML does rather than as Rust's `Debug`.
pub fn spelled<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}
