//! Scenario files of the nydusd lifecycle harness: the format, its JSON Schema and its
//! loader, usable by any tool that reads scenario files.
//!
//! * [`model`]: the file, its manager, daemons and instances; [`steps`]: every step, from
//!   the one list ([`for_each_step!`]); [`fields`]: field types they share; [`tree`]: the
//!   files of an instance.
//! * [`load`]: reading and checking a file, every error at `file:line:column`;
//!   [`bounded`]: sizes bounded when read; [`paths`]: paths that cannot leave their place.
//! * The last gate: the file as plain YAML, valid to the published schema (`conformance`).

pub mod bounded;
mod conformance;
pub mod fields;
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

/// Shapes the schema for editors (yaml-language-server) without changing what it accepts:
/// `"default": null` (an `Option` field's) stops completion from offering the other
/// branches of a `oneOf`, so it goes; and a single-key branch (`- signal: {...}` among the
/// steps) gets its own copy of the definition its key refers to, described as the branch
/// is, because hover shows the description of the innermost schema: through the shared
/// reference it showed "`signal`." or "A step naming one daemon." for five steps.
fn for_editors(schema: &mut serde_json::Value) {
    let definitions = schema.get("definitions").cloned().unwrap_or_default();
    shape(schema, &definitions);
}

fn shape(node: &mut serde_json::Value, definitions: &serde_json::Value) {
    use serde_json::Value;
    match node {
        Value::Object(map) => {
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            if let Some(Value::Array(branches)) = map.get_mut("oneOf") {
                for branch in branches {
                    let Some(description) = branch.get("description").cloned() else { continue };
                    let Some(Value::Object(properties)) = branch.get_mut("properties") else { continue };
                    if properties.len() != 1 {
                        continue;
                    }
                    for property in properties.values_mut() {
                        let target = property
                            .get("$ref")
                            .and_then(Value::as_str)
                            .and_then(|r| r.strip_prefix("#/definitions/"))
                            .and_then(|name| definitions.get(name));
                        if let Some(Value::Object(definition)) = target {
                            let mut copy = definition.clone();
                            copy.insert("description".into(), description.clone());
                            *property = Value::Object(copy);
                        } else if let Value::Object(inline) = property {
                            inline.insert("description".into(), description.clone());
                        }
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
