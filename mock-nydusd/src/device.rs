//! The blob device nydusd sets up for a RAFS instance once its bootstrap is read: what it
//! refuses there, in each release's words (seen on nydusd 2.4 and 2.2 by the adversarial
//! trial of the mount checks; `tests/mount_validation.rs` pins them). RAFS v6 needs a local
//! blob cache; a configuration without a backend cannot make one; a localfs backend must
//! hold every blob the bootstrap names. Other backends are remote: the mock cannot tell
//! whether their blobs exist and, like nydusd at mount time, does not ask.

use crate::rafs_config::Accepted;
use crate::version::NydusdVersion;

/// Why nydusd refuses the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRefusal {
    /// A RAFS v6 image without a blob cache.
    V6WithoutBlobCache,
    /// No backend section.
    NoBackend,
    /// A localfs backend lacks a blob; `cached` when a blob cache is configured (its
    /// set-up fails with EIO; without one the error has no words).
    BlobMissing {
        /// Whether a blob cache is configured.
        cached: bool,
    },
}

impl DeviceRefusal {
    /// The error text after `RAFS failed to handle request, `.
    pub fn text(&self, version: NydusdVersion) -> String {
        const V6: &str = "Rafs v6 must have local blobcache configured";
        match (self, version) {
            (Self::V6WithoutBlobCache, NydusdVersion::V2_4) => format!("Failed to configure device: {V6}`"),
            (Self::V6WithoutBlobCache, NydusdVersion::V2_2) => format!("Configure({V6:?})"),
            (Self::NoBackend, NydusdVersion::V2_4) => {
                "Failed to create device: no configuration information for backend`".to_owned()
            }
            (Self::NoBackend, NydusdVersion::V2_2) => {
                format!("CreateDevice({:?})", std::io::Error::from_raw_os_error(nix::libc::EINVAL))
            }
            (Self::BlobMissing { cached: true }, NydusdVersion::V2_4) => {
                format!("Failed to create device: {}`", std::io::Error::from_raw_os_error(nix::libc::EIO))
            }
            (Self::BlobMissing { cached: true }, NydusdVersion::V2_2) => {
                format!("CreateDevice({:?})", std::io::Error::from_raw_os_error(nix::libc::EIO))
            }
            (Self::BlobMissing { cached: false }, NydusdVersion::V2_4) => "Failed to create device: `".to_owned(),
            (Self::BlobMissing { cached: false }, NydusdVersion::V2_2) => {
                format!("CreateDevice({:?})", std::io::Error::other(""))
            }
        }
    }
}

/// Checks the device of an instance whose bootstrap is RAFS `rafs_version` naming
/// `blob_ids`, under the accepted configuration.
pub fn check(config: &Accepted, rafs_version: u8, blob_ids: &[String]) -> Result<(), DeviceRefusal> {
    if rafs_version == 6 && !config.has_blob_cache() {
        return Err(DeviceRefusal::V6WithoutBlobCache);
    }
    if config.backend_type.is_none() {
        return Err(DeviceRefusal::NoBackend);
    }
    if let Some((dir, blob_file)) = &config.localfs {
        let present = |blob: &String| {
            if blob_file.is_empty() {
                std::path::Path::new(dir).join(blob).is_file()
            } else {
                std::path::Path::new(blob_file).is_file()
            }
        };
        if !blob_ids.iter().all(present) {
            return Err(DeviceRefusal::BlobMissing { cached: config.has_blob_cache() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localfs(dir: &std::path::Path, cache: &str) -> Accepted {
        Accepted {
            backend_type: Some("localfs".into()),
            localfs: Some((dir.display().to_string(), String::new())),
            cache_type: cache.into(),
        }
    }

    #[test]
    fn each_refusal_in_the_order_nydusd_meets_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b1"), b"x").unwrap();
        let blobs = ["b1".to_owned()];
        assert_eq!(check(&localfs(dir.path(), ""), 6, &blobs), Err(DeviceRefusal::V6WithoutBlobCache));
        assert_eq!(check(&localfs(dir.path(), ""), 5, &blobs), Ok(()));
        assert_eq!(check(&localfs(dir.path(), "blobcache"), 6, &blobs), Ok(()));
        let missing = ["b2".to_owned()];
        assert_eq!(check(&localfs(dir.path(), "blobcache"), 6, &missing), Err(DeviceRefusal::BlobMissing { cached: true }));
        assert_eq!(check(&localfs(dir.path(), ""), 5, &missing), Err(DeviceRefusal::BlobMissing { cached: false }));
        let no_backend = Accepted { cache_type: "blobcache".into(), ..Accepted::default() };
        assert_eq!(check(&no_backend, 5, &blobs), Err(DeviceRefusal::NoBackend));
    }

    #[test]
    fn the_words_are_each_releases() {
        assert_eq!(DeviceRefusal::BlobMissing { cached: false }.text(NydusdVersion::V2_2), r#"CreateDevice(Custom { kind: Other, error: "" })"#);
        assert_eq!(
            DeviceRefusal::BlobMissing { cached: true }.text(NydusdVersion::V2_2),
            r#"CreateDevice(Os { code: 5, kind: Uncategorized, message: "Input/output error" })"#
        );
        assert_eq!(
            DeviceRefusal::V6WithoutBlobCache.text(NydusdVersion::V2_2),
            r#"Configure("Rafs v6 must have local blobcache configured")"#
        );
    }
}
