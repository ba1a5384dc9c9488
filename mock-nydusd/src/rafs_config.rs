//! Whether nydusd would accept a RAFS instance's configuration (the `config` string of a
//! mount): the checks its `ConfigV2::from_str` makes and the two sections `Rafs::new` asks
//! for, in nydusd's order, with the words each release answers. Written from what nydusd
//! 2.4 and 2.2 were seen to answer (`tests/mount_validation.rs` runs every case against both
//! when they are installed) and from the rules in `nydusd-api.md`.
//!
//! nydusd tries three readings of the text and takes the first that parses: JSON in the v2
//! shape (a `version` number is what makes it v2), TOML in the v2 shape, JSON in the legacy
//! (v1) shape, which it converts to v2. A v2 reading that parses but does not validate is
//! "invalid configuration"; nothing parsing is "failed to parse configuration information".
//! Only then are the cache and RAFS sections asked for (a v1 conversion always has both).

use serde_json::{Map, Value};

use crate::version::NydusdVersion;

/// Why nydusd refuses a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigRefusal {
    /// No reading parses.
    Unparsable,
    /// A v2 reading parses but fails validation.
    Invalid,
    /// Valid, without a `cache` section.
    NoCache,
    /// Valid, without a `rafs` section.
    NoRafs,
}

impl ConfigRefusal {
    /// The `LoadConfig` part of nydusd's message, as `version` words it.
    pub fn load_config_text(self, version: NydusdVersion) -> String {
        let text = match self {
            Self::Unparsable => "failed to parse configuration information",
            Self::Invalid => "invalid configuration",
            Self::NoCache => "no configuration information for cache",
            Self::NoRafs => "no configuration information for rafs",
        };
        match version {
            // The trailing backtick is in nydusd's format string.
            NydusdVersion::V2_4 => format!("Failed to load config: {text}`"),
            // 2.2 prints the io::Error's Debug form, and all but the missing RAFS section
            // come out as a bare EINVAL.
            NydusdVersion::V2_2 if self == Self::NoRafs => {
                format!("LoadConfig({:?})", std::io::Error::new(std::io::ErrorKind::InvalidInput, text))
            }
            NydusdVersion::V2_2 => format!("LoadConfig({:?})", std::io::Error::from_raw_os_error(nix::libc::EINVAL)),
        }
    }
}

/// What the device set-up after the bootstrap needs of an accepted configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    /// The backend section's type, when there is a backend.
    pub backend_type: Option<String>,
    /// A localfs backend's `dir` and `blob_file` (empty when not given).
    pub localfs: Option<(String, String)>,
    /// The cache type (`""` for none).
    pub cache_type: String,
}

impl Accepted {
    /// Whether the cache is a local blob cache (what RAFS v6 requires).
    pub fn has_blob_cache(&self) -> bool {
        matches!(self.cache_type.as_str(), "blobcache" | "filecache" | "fscache")
    }
}

/// Checks a configuration as nydusd `version`'s mount does before it opens the bootstrap.
pub fn check(text: &str, version: NydusdVersion) -> Result<Accepted, ConfigRefusal> {
    // A v2 reading that does not validate is "invalid"; a v1 text whose conversion does not
    // validate was not a reading at all.
    let (v2, invalid) = match read_v2(text) {
        Some(v2) => (v2, ConfigRefusal::Invalid),
        None => (read_v1(text).ok_or(ConfigRefusal::Unparsable)?, ConfigRefusal::Unparsable),
    };
    if !valid_v2(&v2, version) {
        return Err(invalid);
    }
    if v2.get("cache").is_none_or(Value::is_null) {
        return Err(ConfigRefusal::NoCache);
    }
    if v2.get("rafs").is_none_or(Value::is_null) {
        return Err(ConfigRefusal::NoRafs);
    }
    let backend = v2.get("backend").filter(|b| !b.is_null());
    let backend_type = backend.map(|b| text_of(b, "type").to_owned());
    let localfs = backend
        .filter(|b| text_of(b, "type") == "localfs")
        .and_then(|b| b.get("localfs"))
        .map(|l| (text_of(l, "dir").to_owned(), text_of(l, "blob_file").to_owned()));
    let cache_type = v2.get("cache").map(|c| text_of(c, "type").to_owned()).unwrap_or_default();
    Ok(Accepted { backend_type, localfs, cache_type })
}

/// The v2 shape: what nydusd's serde takes as `ConfigV2` (JSON first, then TOML), as a
/// JSON object for the checks that follow.
fn read_v2(text: &str) -> Option<Map<String, Value>> {
    let json = serde_json::from_str::<shapes::ConfigV2>(text)
        .ok()
        .and_then(|_| serde_json::from_str::<Value>(text).ok());
    let value = match json {
        Some(value) => value,
        None => {
            toml::from_str::<shapes::ConfigV2>(text).ok()?;
            serde_json::to_value(toml::from_str::<toml::Table>(text).ok()?).ok()?
        }
    };
    match value {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// The legacy shape converted to v2, or `None` where nydusd's conversion fails: `device`
/// with a `backend` of a known type whose `config` is an object, a known cache type (an
/// object `config` for the ones that have one) and a `mode` string.
fn read_v1(text: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<shapes::RafsConfig>(text).ok()?;
    let Ok(Value::Object(v1)) = serde_json::from_str::<Value>(text) else { return None };
    let device = v1.get("device")?.as_object()?;
    let mode = v1.get("mode")?.as_str()?;
    let backend = device.get("backend")?.as_object()?;
    let backend_type = backend.get("type")?.as_str()?;
    let backend_config = backend.get("config")?;
    let typed = match backend_type {
        "localdisk" => serde_json::from_value::<shapes::LocalDisk>(backend_config.clone()).is_ok(),
        "localfs" => serde_json::from_value::<shapes::LocalFs>(backend_config.clone()).is_ok(),
        "registry" => serde_json::from_value::<shapes::Registry>(backend_config.clone()).is_ok(),
        "oss" | "s3" => backend_config.is_object(),
        _ => false,
    };
    if !typed {
        return None;
    }
    let empty = Map::new();
    let cache = match device.get("cache") {
        None => &empty,
        Some(cache) => cache.as_object()?,
    };
    let cache_type = match cache.get("type") {
        None => "",
        Some(t) => t.as_str()?,
    };
    let cache_config = cache.get("config").cloned().unwrap_or(Value::Null);
    let mut cache_v2 = Map::new();
    cache_v2.insert("type".into(), cache_type.into());
    match cache_type {
        "blobcache" | "filecache" | "fscache" => {
            let typed = if cache_type == "fscache" {
                serde_json::from_value::<shapes::FsCache>(cache_config.clone()).is_ok()
            } else {
                serde_json::from_value::<shapes::FileCache>(cache_config.clone()).is_ok()
            };
            if !typed {
                return None;
            }
            let mut config = cache_config.as_object()?.clone();
            // FileCacheConfig's `work_dir` defaults to "."; FsCacheConfig's has no default.
            if cache_type != "fscache" {
                config.entry("work_dir").or_insert(".".into());
            }
            let key = if cache_type == "fscache" { "fscache" } else { "filecache" };
            cache_v2.insert(key.into(), Value::Object(config));
        }
        "" | "dummycache" => {}
        _ => return None,
    }
    let mut backend_v2 = Map::new();
    backend_v2.insert("type".into(), backend_type.into());
    backend_v2.insert(backend_type.into(), backend_config.clone());
    let mut v2 = Map::new();
    v2.insert("version".into(), 2.into());
    v2.insert("backend".into(), Value::Object(backend_v2));
    v2.insert("cache".into(), Value::Object(cache_v2));
    v2.insert("rafs".into(), serde_json::json!({ "mode": mode }));
    Some(v2)
}

fn text_of<'a>(section: &'a Value, key: &str) -> &'a str {
    section.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// nydusd's `ConfigV2::validate`: version 2, and each present section valid. 2.2 knows no
/// `dummycache` (its cache types are blobcache, filecache, fscache and none).
fn valid_v2(v2: &Map<String, Value>, version: NydusdVersion) -> bool {
    if v2.get("version").and_then(Value::as_u64) != Some(2) {
        return false;
    }
    if let Some(backend) = v2.get("backend").filter(|b| !b.is_null()) {
        let kind = text_of(backend, "type");
        let Some(settings) = backend.get(kind).filter(|s| s.is_object()) else { return false };
        let filled = |key: &str| !text_of(settings, key).is_empty();
        let ok = match kind {
            "localdisk" => filled("device_path"),
            "localfs" => filled("blob_file") || filled("dir"),
            "oss" => filled("endpoint") && filled("bucket_name"),
            "s3" => filled("region") && filled("bucket_name"),
            "registry" => filled("host") && filled("repo"),
            "http-proxy" => {
                let addr = text_of(settings, "addr");
                addr.starts_with("http://")
                    || addr.starts_with("https://")
                    || (addr.starts_with('/') && std::path::Path::new(addr).exists())
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    if let Some(cache) = v2.get("cache").filter(|c| !c.is_null()) {
        let work_dir_of = |key: &str| cache.get(key).is_some_and(|c| !text_of(c, "work_dir").is_empty());
        let ok = match text_of(cache, "type") {
            "blobcache" | "filecache" => work_dir_of("filecache"),
            "fscache" => work_dir_of("fscache"),
            "" => true,
            "dummycache" => version == NydusdVersion::V2_4,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    if let Some(rafs) = v2.get("rafs").filter(|r| !r.is_null()) {
        // RafsConfigV2's mode defaults to "direct".
        let mode = rafs.get("mode").and_then(Value::as_str).unwrap_or("direct");
        if mode != "direct" && mode != "cached" {
            return false;
        }
    }
    true
}

/// The field types of nydusd's configuration structs (`nydus-api` `ConfigV2`, its sections,
/// and the legacy `RafsConfig`), so that a text nydusd's serde refuses is refused here: a
/// wrong type, a missing required field, a repeated key. Fields the mock does not model are
/// taken as anything (`IgnoredAny`), which is what keeps this a subset of nydusd's refusals.
// The fields are read by serde only: their types are the point.
#[allow(dead_code)]
mod shapes {
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    #[derive(Deserialize)]
    pub struct ConfigV2 {
        version: u32,
        #[serde(default)]
        id: String,
        backend: Option<BackendV2>,
        #[serde(default)]
        external_backends: Vec<IgnoredAny>,
        cache: Option<CacheV2>,
        rafs: Option<RafsV2>,
        overlay: Option<Overlay>,
    }

    #[derive(Deserialize)]
    struct BackendV2 {
        #[serde(rename = "type")]
        backend_type: String,
        localdisk: Option<LocalDisk>,
        localfs: Option<LocalFs>,
        oss: Option<IgnoredAny>,
        s3: Option<IgnoredAny>,
        registry: Option<Registry>,
        #[serde(rename = "http-proxy")]
        http_proxy: Option<IgnoredAny>,
    }

    #[derive(Deserialize)]
    pub struct LocalFs {
        #[serde(default)]
        blob_file: String,
        #[serde(default)]
        dir: String,
        #[serde(default)]
        alt_dirs: Vec<String>,
    }

    #[derive(Deserialize)]
    pub struct LocalDisk {
        #[serde(default)]
        device_path: String,
        #[serde(default)]
        disable_gpt: bool,
    }

    #[derive(Deserialize)]
    pub struct Registry {
        #[serde(default)]
        scheme: String,
        host: String,
        repo: String,
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        skip_verify: bool,
        #[serde(default)]
        ca_cert_files: Vec<String>,
        #[serde(default)]
        timeout: u32,
        #[serde(default)]
        connect_timeout: u32,
        #[serde(default)]
        retry_limit: u8,
        #[serde(default)]
        registry_token: Option<String>,
        #[serde(default)]
        blob_url_scheme: String,
        #[serde(default)]
        blob_redirected_host: String,
        #[serde(default)]
        proxy: Option<Proxy>,
        #[serde(default)]
        mirrors: Option<IgnoredAny>,
    }

    #[derive(Deserialize)]
    struct Proxy {
        #[serde(default)]
        url: String,
        #[serde(default)]
        ping_url: String,
        #[serde(default)]
        fallback: bool,
        #[serde(default)]
        check_interval: u64,
        #[serde(default)]
        use_http: bool,
        #[serde(default)]
        check_pause_elapsed: u64,
    }

    #[derive(Deserialize)]
    struct CacheV2 {
        #[serde(default, rename = "type")]
        cache_type: String,
        #[serde(default)]
        compressed: bool,
        #[serde(default)]
        validate: bool,
        #[serde(default)]
        prefetch: Option<PrefetchV2>,
        filecache: Option<FileCache>,
        fscache: Option<FsCache>,
    }

    #[derive(Deserialize)]
    pub struct FileCache {
        #[serde(default)]
        work_dir: String,
        #[serde(default)]
        disable_indexed_map: bool,
        #[serde(default)]
        enable_encryption: bool,
        #[serde(default)]
        enable_convergent_encryption: bool,
        #[serde(default)]
        encryption_key: String,
    }

    #[derive(Deserialize)]
    pub struct FsCache {
        #[serde(default)]
        work_dir: String,
    }

    #[derive(Deserialize)]
    struct PrefetchV2 {
        enable: bool,
        #[serde(default)]
        threads: usize,
        #[serde(default)]
        batch_size: usize,
        #[serde(default)]
        bandwidth_limit: u32,
        #[serde(default)]
        prefetch_all: bool,
        #[serde(default)]
        stream_prefetch: bool,
    }

    #[derive(Deserialize)]
    struct RafsV2 {
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        batch_size: usize,
        #[serde(default)]
        validate: bool,
        #[serde(default)]
        enable_xattr: bool,
        #[serde(default)]
        iostats_files: bool,
        #[serde(default)]
        access_pattern: bool,
        #[serde(default)]
        latest_read_files: bool,
        #[serde(default)]
        prefetch: Option<PrefetchV2>,
    }

    #[derive(Deserialize)]
    struct Overlay {
        upper_dir: String,
        work_dir: String,
    }

    /// The legacy shape; `device.backend.config` and `device.cache.config` are free-form
    /// here and typed by the conversion (`read_v1`).
    #[derive(Deserialize)]
    pub struct RafsConfig {
        device: Factory,
        mode: String,
        #[serde(default)]
        digest_validate: bool,
        #[serde(default)]
        iostats_files: bool,
        #[serde(default)]
        fs_prefetch: Option<FsPrefetch>,
        #[serde(default)]
        enable_xattr: bool,
        #[serde(default)]
        access_pattern: bool,
        #[serde(default)]
        latest_read_files: bool,
        #[serde(default)]
        amplify_io: usize,
    }

    #[derive(Deserialize)]
    struct Factory {
        #[serde(default)]
        id: String,
        backend: Backend,
        #[serde(default)]
        external_backends: Vec<IgnoredAny>,
        #[serde(default)]
        cache: Option<Cache>,
    }

    #[derive(Deserialize)]
    struct Backend {
        #[serde(rename = "type")]
        backend_type: String,
        config: serde_json::Value,
    }

    #[derive(Deserialize)]
    struct Cache {
        #[serde(default, rename = "type")]
        cache_type: String,
        #[serde(default)]
        compressed: bool,
        #[serde(default)]
        config: serde_json::Value,
        #[serde(default)]
        validate: bool,
    }

    #[derive(Deserialize)]
    struct FsPrefetch {
        #[serde(default)]
        enable: bool,
        #[serde(default)]
        threads_count: usize,
        #[serde(default)]
        merging_size: usize,
        #[serde(default)]
        bandwidth_rate: u32,
        #[serde(default)]
        prefetch_all: bool,
        #[serde(default)]
        stream_prefetch: bool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const V1: &str = r#"{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}},"cache":{"type":"blobcache","config":{"work_dir":"/c"}}},"mode":"direct"}"#;

    #[rstest]
    #[case::v1(V1, Ok(()))]
    #[case::v1_without_cache(r#"{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r"}}},"mode":"cached"}"#, Ok(()))]
    #[case::v2_json(r#"{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/b"}},"cache":{"type":"filecache","filecache":{"work_dir":"/c"}},"rafs":{}}"#, Ok(()))]
    #[case::v2_toml("version = 2\n[backend]\ntype = \"localfs\"\n[backend.localfs]\ndir = \"/b\"\n[cache]\ntype = \"dummycache\"\n[rafs]\nmode = \"cached\"\n", Ok(()))]
    #[case::not_json("not json", Err(ConfigRefusal::Unparsable))]
    #[case::empty_object("{}", Err(ConfigRefusal::Unparsable))]
    #[case::v1_unknown_backend(&V1.replace("localfs", "nope"), Err(ConfigRefusal::Unparsable))]
    #[case::v1_unknown_cache(&V1.replace("blobcache", "weird"), Err(ConfigRefusal::Unparsable))]
    #[case::v1_bad_mode(&V1.replace("direct", "fast"), Err(ConfigRefusal::Unparsable))]
    #[case::v1_without_mode(r#"{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}}}}"#, Err(ConfigRefusal::Unparsable))]
    #[case::v1_empty_localfs(r#"{"device":{"backend":{"type":"localfs","config":{}}},"mode":"direct"}"#, Err(ConfigRefusal::Unparsable))]
    #[case::v2_unknown_backend(r#"{"version":2,"backend":{"type":"nope"}}"#, Err(ConfigRefusal::Invalid))]
    #[case::v2_version_3(r#"{"version":3}"#, Err(ConfigRefusal::Invalid))]
    #[case::v2_no_cache(r#"{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/b"}}}"#, Err(ConfigRefusal::NoCache))]
    #[case::v2_no_rafs(r#"{"version":2,"cache":{"type":""}}"#, Err(ConfigRefusal::NoRafs))]
    fn configurations_are_judged_as_nydusd_judges_them(#[case] text: &str, #[case] expected: Result<(), ConfigRefusal>) {
        assert_eq!(check(text, NydusdVersion::V2_4).map(|_| ()), expected);
    }

    const V2_OK: &str = r#""backend":{"type":"localfs","localfs":{"dir":"/b"}},"cache":{"type":"filecache","filecache":{"work_dir":"/c"}}"#;

    /// What an adversarial trial found nydusd 2.4 answering where a structural check differs:
    /// serde's types, required fields and repeated keys decide.
    #[rstest]
    #[case::rafs_as_an_empty_sequence(&format!(r#"{{"version":2,{V2_OK},"rafs":[]}}"#), Ok(()))]
    #[case::mode_a_number(&format!(r#"{{"version":2,{V2_OK},"rafs":{{"mode":5}}}}"#), Err(ConfigRefusal::Unparsable))]
    #[case::cache_type_a_number(r#"{"version":2,"cache":{"type":5},"rafs":{}}"#, Err(ConfigRefusal::Unparsable))]
    #[case::id_a_number(&format!(r#"{{"version":2,"id":5,{V2_OK},"rafs":{{}}}}"#), Err(ConfigRefusal::Unparsable))]
    #[case::localfs_a_number(r#"{"version":2,"backend":{"type":"localfs","localfs":5},"rafs":{}}"#, Err(ConfigRefusal::Unparsable))]
    #[case::dir_a_number(r#"{"version":2,"backend":{"type":"localfs","localfs":{"dir":5}},"rafs":{}}"#, Err(ConfigRefusal::Unparsable))]
    #[case::type_twice(r#"{"version":2,"backend":{"type":"localfs","type":"localfs","localfs":{"dir":"/b"}},"rafs":{}}"#, Err(ConfigRefusal::Unparsable))]
    #[case::v1_flag_a_string(&V1.replace(r#""mode":"direct""#, r#""mode":"direct","digest_validate":"yes""#), Err(ConfigRefusal::Unparsable))]
    #[case::v1_mode_twice(&V1.replace(r#""mode":"direct""#, r#""mode":"direct","mode":"direct""#), Err(ConfigRefusal::Unparsable))]
    #[case::v2_prefetch_without_enable(&format!(r#"{{"version":2,{V2_OK},"rafs":{{"prefetch":{{}}}}}}"#), Err(ConfigRefusal::Unparsable))]
    fn field_types_and_repeated_keys_are_serdes(#[case] text: &str, #[case] expected: Result<(), ConfigRefusal>) {
        assert_eq!(check(text, NydusdVersion::V2_4).map(|_| ()), expected);
    }

    #[test]
    fn a_dummycache_is_refused_by_2_2_only() {
        let text = r#"{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}},"cache":{"type":"dummycache"}},"mode":"direct"}"#;
        assert!(check(text, NydusdVersion::V2_4).is_ok());
        assert_eq!(check(text, NydusdVersion::V2_2), Err(ConfigRefusal::Unparsable));
    }

    #[test]
    fn hostile_texts_within_the_body_limit_are_refused_without_a_crash() {
        // A mount body is at most 51 200 bytes; nesting that deep in either reading.
        for text in ["[".repeat(50_000), format!("a = {}", "[".repeat(50_000)), "{\"a\":".repeat(10_000), "\u{0}\u{ffff}".into()] {
            assert_eq!(check(&text, NydusdVersion::V2_4), Err(ConfigRefusal::Unparsable));
        }
    }

    #[test]
    fn each_release_words_the_refusal_its_own_way() {
        assert_eq!(
            ConfigRefusal::Unparsable.load_config_text(NydusdVersion::V2_4),
            "Failed to load config: failed to parse configuration information`"
        );
        assert_eq!(
            ConfigRefusal::Invalid.load_config_text(NydusdVersion::V2_2),
            r#"LoadConfig(Os { code: 22, kind: InvalidInput, message: "Invalid argument" })"#
        );
        assert_eq!(
            ConfigRefusal::NoRafs.load_config_text(NydusdVersion::V2_2),
            r#"LoadConfig(Custom { kind: InvalidInput, error: "no configuration information for rafs" })"#
        );
    }
}
