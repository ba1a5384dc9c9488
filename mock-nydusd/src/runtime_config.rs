//! nydusd's global runtime configuration behind `/api/v1/config` (v2.4.1+): a string map
//! whose keys are `"<id>:<key>"`. Secrets are stored and returned in clear, as nydusd does.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Keys `PUT /api/v1/config` accepts.
const UPDATABLE: [&str; 3] = ["registry_auth", "proxy_url", "dragonfly_scheduler_endpoint"];

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Not a JSON object of strings: 400 `ParseBody(..)` with serde's text.
    Parse(String),
    /// A key outside [`UPDATABLE`]: 500 `Configure(ResponsePayloadType)`. The pairs before
    /// it have been applied already.
    UnknownKey(String),
}

/// The map.
#[derive(Debug, Default)]
pub struct RuntimeConfig {
    entries: BTreeMap<String, String>,
}

impl RuntimeConfig {
    /// Stores `value` under `<id>:<key>` (what backends do when they start).
    pub fn set(&mut self, id: &str, key: &str, value: &str) {
        self.entries.insert(format!("{id}:{key}"), value.to_owned());
    }

    /// `GET /api/v1/config[?id=]`: prefix-stripped entries of `id`, or the raw map.
    pub fn get(&self, id: Option<&str>) -> Value {
        let map: Map<String, Value> = match id {
            Some(id) => {
                let prefix = format!("{id}:");
                self.entries
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_owned(), Value::from(v.as_str()))))
                    .collect()
            }
            None => self.entries.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect(),
        };
        Value::Object(map)
    }

    /// `PUT /api/v1/config[?id=]`: applies pairs one by one and stops at the first unknown
    /// key. nydusd iterates a hash map, so which pairs land first is arbitrary there; the
    /// mock uses key order, which is one of nydusd's possible orders and is reproducible.
    pub fn update(&mut self, id: Option<&str>, body: &[u8]) -> Result<(), UpdateError> {
        let pairs: BTreeMap<String, String> =
            serde_json::from_slice(body).map_err(|e| UpdateError::Parse(format!("{e:?}")))?;
        for (key, value) in pairs {
            if !UPDATABLE.contains(&key.as_str()) {
                return Err(UpdateError::UnknownKey(key));
            }
            self.set(id.unwrap_or(""), &key, &value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_strips_the_id_prefix_only_when_asked_by_id() {
        let mut c = RuntimeConfig::default();
        c.set("/a", "registry_auth", "dTpw");
        assert_eq!(c.get(Some("/a")).to_string(), r#"{"registry_auth":"dTpw"}"#);
        assert_eq!(c.get(None).to_string(), r#"{"/a:registry_auth":"dTpw"}"#);
        assert_eq!(c.get(Some("/b")).to_string(), "{}");
    }

    #[test]
    fn update_is_not_atomic_and_wants_string_values() {
        let mut c = RuntimeConfig::default();
        let err = c.update(Some("/a"), br#"{"registry_auth":"dTpw","proxy_url":"http://p","quota":"1"}"#).unwrap_err();
        assert_eq!(err, UpdateError::UnknownKey("quota".into()));
        // "quota" sorts between the two known keys: the first is applied, the second is not.
        assert_eq!(c.get(Some("/a")).to_string(), r#"{"proxy_url":"http://p"}"#);
        match c.update(None, br#"{"registry_auth":1}"#).unwrap_err() {
            UpdateError::Parse(text) => assert!(text.starts_with("Error(\"invalid type: integer `1`"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
