//! Scenario files: the format and its loader.

pub mod bounded;
pub mod load;
pub mod model;
pub mod paths;

pub use load::{LoadError, discover, load};
pub use model::Scenario;

/// The JSON Schema (draft-07) of scenario files, as committed at `scenarios/schema.json`.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<Scenario>();
    serde_json::to_string_pretty(&schema).expect("schemas serialise")
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
