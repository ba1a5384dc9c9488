//! What the mock reads from a RAFS instance's configuration (the `config` string of a mount
//! command, or `--config` at start-up). Both of nydusd's shapes are understood: the legacy
//! one (`{"device":{"backend":..,"cache":..},"iostats_files":..}`) and v2
//! (`{"version":2,"backend":..,"cache":..,"rafs":{..}}`). Missing pieces take nydusd's defaults.

use serde_json::Value;

/// The facts of one instance configuration that the API exposes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Storage backend kind as metrics report it (`s3` reports as `oss`).
    pub backend_type: String,
    /// The whole backend section; identical sections share one backend (and its counters).
    pub backend: Value,
    /// Registry `auth`, registered in the runtime config under the backend id.
    pub registry_auth: Option<String>,
    /// Proxy URL, registered when non-empty.
    pub proxy_url: Option<String>,
    /// Blob cache work directory.
    pub cache_work_dir: Option<String>,
    /// `id` of the storage configuration: the key of the blob-cache counters.
    pub storage_id: Option<String>,
    /// `iostats_files`.
    pub files_account: bool,
    /// `access_pattern`.
    pub access_pattern: bool,
    /// `latest_read_files`.
    pub latest_read_files: bool,
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn flag(v: &Value, legacy: &str, v2: &str) -> bool {
    v.pointer(legacy).or_else(|| v.pointer(v2)).and_then(Value::as_bool).unwrap_or(false)
}

impl InstanceConfig {
    /// Reads a configuration string, JSON or TOML as nydusd reads it; text that is neither
    /// yields the defaults.
    pub fn parse(config: &str) -> Self {
        let v: Value = serde_json::from_str(config)
            .ok()
            .or_else(|| toml::from_str::<toml::Table>(config).ok().and_then(|t| serde_json::to_value(t).ok()))
            .unwrap_or(Value::Null);
        let legacy = v.pointer("/device").is_some();
        let backend = if legacy { v.pointer("/device/backend") } else { v.pointer("/backend") }.cloned();
        let backend = backend.unwrap_or(Value::Null);
        let kind = text(&backend, "/type").unwrap_or_else(|| "localfs".to_owned());
        // Legacy sections keep the backend's settings under `config`, v2 under the type name.
        let settings = backend.get("config").or_else(|| backend.get(&kind)).cloned().unwrap_or(Value::Null);
        // Only a local cache has a manager, and with it counters: a dummycache has neither.
        let cache_type = text(&v, "/device/cache/type").or_else(|| text(&v, "/cache/type")).unwrap_or_default();
        let cache_work_dir = ["blobcache", "filecache", "fscache"]
            .contains(&cache_type.as_str())
            .then(|| {
                text(&v, "/device/cache/config/work_dir")
                    .or_else(|| text(&v, "/cache/filecache/work_dir"))
                    .or_else(|| text(&v, "/cache/fscache/work_dir"))
            })
            .flatten();
        let storage_id = text(&v, "/device/id")
            .or_else(|| text(&v, "/id"))
            // nydusd's ConfigV2 `id` defaults to "", and a blob cache registers its counters
            // under it even then.
            .or_else(|| cache_work_dir.as_ref().map(|_| String::new()));
        Self {
            backend_type: if kind == "s3" { "oss".to_owned() } else { kind.clone() },
            registry_auth: (kind == "registry").then(|| text(&settings, "/auth")).flatten(),
            proxy_url: text(&settings, "/proxy/url"),
            cache_work_dir,
            storage_id,
            files_account: flag(&v, "/iostats_files", "/rafs/iostats_files"),
            access_pattern: flag(&v, "/access_pattern", "/rafs/access_pattern"),
            latest_read_files: flag(&v, "/latest_read_files", "/rafs/latest_read_files"),
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_registry_config_yields_auth_proxy_and_cache() {
        let c = InstanceConfig::parse(
            r#"{"device":{"id":"/snap","backend":{"type":"registry","config":{"host":"h","repo":"r","auth":"dTpw","proxy":{"url":"http://p"}}},
               "cache":{"type":"blobcache","config":{"work_dir":"/cache"}}},"iostats_files":true}"#,
        );
        assert_eq!(c.backend_type, "registry");
        assert_eq!(c.registry_auth.as_deref(), Some("dTpw"));
        assert_eq!(c.proxy_url.as_deref(), Some("http://p"));
        assert_eq!(c.cache_work_dir.as_deref(), Some("/cache"));
        assert_eq!(c.storage_id.as_deref(), Some("/snap"));
        assert!(c.files_account && !c.access_pattern);
    }

    #[test]
    fn toml_is_read_and_a_dummycache_has_no_work_dir() {
        let c = InstanceConfig::parse("version = 2\n[cache]\ntype = \"filecache\"\n[cache.filecache]\nwork_dir = \"/w\"\n");
        assert_eq!(c.cache_work_dir.as_deref(), Some("/w"));
        let dummy = InstanceConfig::parse(r#"{"device":{"cache":{"type":"dummycache","config":{"work_dir":"/x"}}}}"#);
        assert_eq!(dummy.cache_work_dir, None);
    }

    #[test]
    fn v2_s3_reports_as_oss_and_garbage_gives_defaults() {
        let c = InstanceConfig::parse(
            r#"{"version":2,"backend":{"type":"s3","s3":{"bucket_name":"b"}},"rafs":{"access_pattern":true}}"#,
        );
        assert_eq!(c.backend_type, "oss");
        assert!(c.access_pattern);
        assert_eq!(InstanceConfig::parse("not json").backend_type, "localfs");
    }
}
