//! The singleton daemon's blob-cache entries behind `/api/v2/blobs` (`nydusd-api.md` §2.2).
//! Only bootstrap entries are registered; the mock does not parse the RAFS file, so it
//! does not learn (or reference-count) the data blobs a bootstrap refers to.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of `PUT /api/v2/blobs`, field for field as nydusd declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCacheEntry {
    /// `bootstrap` or `datablob`.
    #[serde(rename = "type")]
    pub blob_type: String,
    /// Blob id.
    #[serde(rename = "id")]
    pub blob_id: String,
    /// Legacy configuration (what the snapshotter sends).
    #[serde(rename = "config", default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// v2 configuration.
    #[serde(rename = "config_v2", default, skip_serializing_if = "Option::is_none")]
    pub config_v2: Option<Value>,
    /// Domain (image) the blob belongs to.
    #[serde(default)]
    pub domain_id: String,
}

/// The fields nydusd's typed entry requires, for its parse errors: serde names the first
/// missing field of the legacy `config` (`backend_type`, `backend_config`, `cache_type`,
/// `cache_config`, in that order) at the position where that object ends.
#[derive(Deserialize)]
struct EntryShape {
    #[serde(rename = "type")]
    _blob_type: String,
    #[serde(rename = "id")]
    _blob_id: String,
    #[serde(default, rename = "config")]
    _config: Option<LegacyConfigShape>,
}

#[derive(Deserialize)]
struct LegacyConfigShape {
    #[serde(default, rename = "id")]
    _id: String,
    #[serde(rename = "backend_type")]
    _backend_type: String,
    #[serde(rename = "backend_config")]
    _backend_config: Value,
    #[serde(rename = "cache_type")]
    _cache_type: String,
    #[serde(rename = "cache_config")]
    _cache_config: Value,
    #[serde(default, rename = "metadata_path")]
    _metadata_path: Option<String>,
}

/// Parses a `PUT /api/v2/blobs` body as nydusd does: its errors are nydusd's `ParseBody`.
pub fn parse_entry(body: &[u8]) -> Result<BlobCacheEntry, serde_json::Error> {
    serde_json::from_slice::<EntryShape>(body)?;
    serde_json::from_slice(body)
}

impl BlobCacheEntry {
    /// The strings nydusd's fscache state record keeps for the entry: its
    /// `<domain_id>/<blob_id>` key and the entry re-serialised as JSON (`nydusd-api.md` §4.4).
    pub fn state_strings(&self) -> [usize; 2] {
        let json = serde_json::to_string(self).map(|j| j.len()).unwrap_or(0);
        [self.domain_id.len() + 1 + self.blob_id.len(), json]
    }
}

/// The parts of an entry's configuration nydusd validates before doing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobConfig {
    /// Storage configuration id (blob-cache counters are keyed by it).
    pub id: String,
    /// Cache work directory, when the cache type has one.
    pub work_dir: Option<String>,
    /// RAFS v6 bootstrap file.
    pub metadata_path: Option<String>,
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Whether a backend section names its type's required fields.
fn backend_valid(kind: &str, settings: &Value) -> bool {
    let has = |k: &str| !text(settings, k).is_empty();
    match kind {
        "registry" => has("host") && has("repo"),
        "localfs" => has("blob_file") || has("dir"),
        "localdisk" => has("device_path"),
        "oss" => has("endpoint") && has("bucket_name"),
        "s3" => has("bucket_name") && has("region"),
        "http-proxy" => has("addr"),
        _ => false,
    }
}

/// The cache section's work directory if the type is valid (`None` inside for caches
/// without one); `Err` for an invalid section.
fn cache_work_dir(kind: &str, settings: &Value) -> Result<Option<String>, ()> {
    match kind {
        "" | "dummycache" => Ok(None),
        "blobcache" | "filecache" | "fscache" => {
            let dir = text(settings, "work_dir");
            if dir.is_empty() { Err(()) } else { Ok(Some(dir.to_owned())) }
        }
        _ => Err(()),
    }
}

impl BlobCacheEntry {
    /// nydusd's `prepare_configuration_info`: `config_v2`, or `config` converted, must
    /// exist with a valid backend and cache; `None` means 400 `BadRequest`.
    pub fn validate(&self) -> Option<BlobConfig> {
        let (id, backend_ok, work_dir, metadata_path) = if let Some(v2) = &self.config_v2 {
            let backend = v2.get("backend")?;
            let kind = text(backend, "type");
            let cache = v2.get("cache").cloned().unwrap_or(Value::Null);
            let cache_kind = text(&cache, "type");
            let cache_settings = cache.get(if cache_kind == "blobcache" { "filecache" } else { cache_kind });
            (
                text(v2, "id"),
                backend_valid(kind, backend.get(kind).unwrap_or(&Value::Null)),
                cache_work_dir(cache_kind, cache_settings.unwrap_or(&Value::Null)),
                v2.get("metadata_path").and_then(Value::as_str),
            )
        } else {
            let legacy = self.config.as_ref()?;
            (
                text(legacy, "id"),
                backend_valid(text(legacy, "backend_type"), legacy.get("backend_config").unwrap_or(&Value::Null)),
                cache_work_dir(text(legacy, "cache_type"), legacy.get("cache_config").unwrap_or(&Value::Null)),
                legacy.get("metadata_path").and_then(Value::as_str),
            )
        };
        match (backend_ok, work_dir) {
            (true, Ok(work_dir)) => {
                Some(BlobConfig { id: id.to_owned(), work_dir, metadata_path: metadata_path.map(str::to_owned) })
            }
            _ => None,
        }
    }

    /// The key nydusd files the entry under.
    pub fn key(&self) -> String {
        entry_key(&self.domain_id, &self.blob_id)
    }
}

fn entry_key(domain_id: &str, blob_id: &str) -> String {
    if domain_id.is_empty() { blob_id.to_owned() } else { format!("{domain_id}/{blob_id}") }
}

/// A registered entry failed; the text goes inside `DaemonAbnormal(Other("..."))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobError(pub String);

const ENOENT: &str = "No such file or directory (os error 2)";
const EINVAL: &str = "Invalid argument (os error 22)";

/// Registered bootstrap entries by key.
#[derive(Debug, Default)]
pub struct BlobCache {
    entries: BTreeMap<String, BlobCacheEntry>,
}

impl BlobCache {
    /// Registers a validated bootstrap entry.
    pub fn create(&mut self, entry: BlobCacheEntry, config: &BlobConfig) -> Result<(), BlobError> {
        if entry.blob_type != "bootstrap" {
            return Err(BlobError(EINVAL.into()));
        }
        let metadata_ok = config.metadata_path.as_deref().is_some_and(|p| Path::new(p).is_file());
        let work_dir_ok = config.work_dir.as_deref().is_none_or(|d| Path::new(d).is_dir());
        if !metadata_ok || !work_dir_ok {
            return Err(BlobError(ENOENT.into()));
        }
        let key = entry.key();
        if self.entries.contains_key(&key) {
            return Err(BlobError("blob_cache: bootstrap blob already exists".into()));
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    /// `DELETE /api/v2/blobs?domain_id=..[&blob_id=..]`.
    pub fn remove(&mut self, domain_id: &str, blob_id: Option<&str>) -> Result<(), BlobError> {
        match blob_id.filter(|b| !b.is_empty()) {
            None if !domain_id.is_empty() => {
                let prefix = format!("{domain_id}/");
                self.entries.retain(|key, _| !key.starts_with(&prefix));
                Ok(())
            }
            blob_id => {
                let key = entry_key(domain_id, blob_id.unwrap_or(""));
                self.entries.remove(&key).map(|_| ()).ok_or(BlobError(ENOENT.into()))
            }
        }
    }

    /// The entries, for the state handed to a successor.
    pub fn entries(&self) -> impl Iterator<Item = &BlobCacheEntry> {
        self.entries.values()
    }

    /// The bootstrap file of the entry bound as (`domain_id`, `blob_id`), exactly as nydusd
    /// files it: a mount without `domain_id` asks for the domain named like its fsid.
    pub fn metadata_of(&self, domain_id: &str, blob_id: &str) -> Option<std::path::PathBuf> {
        let entry = self.entries.get(&entry_key(domain_id, blob_id))?;
        entry.validate()?.metadata_path.map(std::path::PathBuf::from)
    }

    /// Restores an entry received by takeover.
    pub fn restore(&mut self, entry: BlobCacheEntry) {
        self.entries.insert(entry.key(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_config_without_its_required_fields_is_nydusds_parse_error() {
        // The body and the reply's words as nydusd 2.4 gave them to the snapshotter's BindBlob.
        let body = br#"{"type":"bootstrap","id":"b","domain_id":"d","config":{}}"#;
        let e = parse_entry(body).unwrap_err();
        assert_eq!(format!("ParseBody({e:?})"), r#"ParseBody(Error("missing field `backend_type`", line: 1, column: 56))"#);
    }

    fn entry(domain: &str, id: &str, metadata: &str, work_dir: &str) -> BlobCacheEntry {
        serde_json::from_value(serde_json::json!({
            "type": "bootstrap", "id": id, "domain_id": domain,
            "config": {"id": "c", "backend_type": "registry", "backend_config": {"host": "h", "repo": "r"},
                       "cache_type": "fscache", "cache_config": {"work_dir": work_dir}, "metadata_path": metadata}
        }))
        .unwrap()
    }

    #[test]
    fn validation_needs_backend_fields_and_a_cache_work_dir() {
        assert!(entry("d", "b", "/m", "/w").validate().is_some());
        assert!(entry("d", "b", "/m", "").validate().is_none());
        let mut no_config = entry("d", "b", "/m", "/w");
        no_config.config = None;
        assert!(no_config.validate().is_none());
        let v2: BlobCacheEntry = serde_json::from_value(serde_json::json!({
            "type": "bootstrap", "id": "b",
            "config_v2": {"id": "c", "backend": {"type": "localfs", "localfs": {"dir": "/d"}}, "cache": {"type": "fscache", "fscache": {"work_dir": "/w"}}}
        }))
        .unwrap();
        assert_eq!(v2.validate().unwrap().work_dir.as_deref(), Some("/w"));
    }

    #[test]
    fn create_checks_files_then_duplicates_and_delete_by_domain_always_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("image.boot");
        std::fs::write(&meta, b"rafs").unwrap();
        let (meta, work) = (meta.to_str().unwrap(), dir.path().to_str().unwrap());
        let mut cache = BlobCache::default();
        let e = entry("d", "b", meta, work);
        let config = e.validate().unwrap();
        cache.create(e.clone(), &config).unwrap();
        assert_eq!(cache.create(e.clone(), &config).unwrap_err().0, "blob_cache: bootstrap blob already exists");
        let missing = entry("d", "x", "/nonexistent", work);
        assert_eq!(cache.create(missing.clone(), &missing.validate().unwrap()).unwrap_err().0, ENOENT);
        assert_eq!(cache.remove("d", Some("nope")).unwrap_err().0, ENOENT);
        assert_eq!(cache.remove("other", None), Ok(()));
        assert_eq!(cache.remove("d", Some("")), Ok(()));
        assert_eq!(cache.entries().count(), 0);
    }
}
