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

/// Checks a configuration as nydusd's mount does before it opens the bootstrap.
pub fn check(text: &str) -> Result<(), ConfigRefusal> {
    let v2 = match read_v2(text) {
        Some(v2) => v2,
        None => read_v1(text).ok_or(ConfigRefusal::Unparsable)?,
    };
    if !valid_v2(&v2) {
        // A v1 text whose conversion does not validate was not a reading at all.
        return Err(if is_v2_shaped(text) { ConfigRefusal::Invalid } else { ConfigRefusal::Unparsable });
    }
    if v2.get("cache").is_none_or(Value::is_null) {
        return Err(ConfigRefusal::NoCache);
    }
    if v2.get("rafs").is_none_or(Value::is_null) {
        return Err(ConfigRefusal::NoRafs);
    }
    Ok(())
}

fn is_v2_shaped(text: &str) -> bool {
    read_v2(text).is_some()
}

/// The v2 shape: an object with a `version` that fits a u32, and sections of the right
/// kind where present (JSON first, then TOML).
fn read_v2(text: &str) -> Option<Map<String, Value>> {
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return None,
        Err(_) => match toml::from_str::<toml::Table>(text) {
            Ok(table) => match serde_json::to_value(table) {
                Ok(Value::Object(object)) => object,
                _ => return None,
            },
            Err(_) => return None,
        },
    };
    let version = object.get("version")?.as_u64()?;
    u32::try_from(version).ok()?;
    let section_ok = |key: &str| object.get(key).is_none_or(|v| v.is_null() || v.is_object());
    let backend_ok = object.get("backend").is_none_or(|b| b.is_null() || b.get("type").is_some_and(Value::is_string));
    (section_ok("cache") && section_ok("rafs") && backend_ok).then_some(object)
}

/// The legacy shape converted to v2, or `None` where nydusd's conversion fails: `device`
/// with a `backend` of a known type whose `config` is an object, a known cache type (an
/// object `config` for the ones that have one) and a `mode` string.
fn read_v1(text: &str) -> Option<Map<String, Value>> {
    let Ok(Value::Object(v1)) = serde_json::from_str::<Value>(text) else { return None };
    let device = v1.get("device")?.as_object()?;
    let mode = v1.get("mode")?.as_str()?;
    let backend = device.get("backend")?.as_object()?;
    let backend_type = backend.get("type")?.as_str()?;
    let backend_config = backend.get("config")?;
    if !["localdisk", "localfs", "oss", "s3", "registry"].contains(&backend_type) || !backend_config.is_object() {
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

fn text<'a>(section: &'a Value, key: &str) -> &'a str {
    section.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// nydusd's `ConfigV2::validate`: version 2, and each present section valid.
fn valid_v2(v2: &Map<String, Value>) -> bool {
    if v2.get("version").and_then(Value::as_u64) != Some(2) {
        return false;
    }
    if let Some(backend) = v2.get("backend").filter(|b| !b.is_null()) {
        let kind = text(backend, "type");
        let Some(settings) = backend.get(kind).filter(|s| s.is_object()) else { return false };
        let filled = |key: &str| !text(settings, key).is_empty();
        let ok = match kind {
            "localdisk" => filled("device_path"),
            "localfs" => filled("blob_file") || filled("dir"),
            "oss" => filled("endpoint") && filled("bucket_name"),
            "s3" => filled("region") && filled("bucket_name"),
            "registry" => filled("host") && filled("repo"),
            "http-proxy" => {
                let addr = text(settings, "addr");
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
        let work_dir_of = |key: &str| cache.get(key).is_some_and(|c| !text(c, "work_dir").is_empty());
        let ok = match text(cache, "type") {
            "blobcache" | "filecache" => work_dir_of("filecache"),
            "fscache" => work_dir_of("fscache"),
            "" | "dummycache" => true,
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
        assert_eq!(check(text), expected);
    }

    #[test]
    fn hostile_texts_within_the_body_limit_are_refused_without_a_crash() {
        // A mount body is at most 51 200 bytes; nesting that deep in either reading.
        for text in ["[".repeat(50_000), format!("a = {}", "[".repeat(50_000)), "{\"a\":".repeat(10_000), "\u{0}\u{ffff}".into()] {
            assert_eq!(check(&text), Err(ConfigRefusal::Unparsable));
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
