//! Instance images for a real nydusd: the scenario's tree written out as files and turned
//! into a RAFS v6 bootstrap plus data blob by `nydus-image`, read back through a localfs
//! backend with a blob cache (nydusd refuses a v6 image without one).

use std::path::{Path, PathBuf};

use crate::scenario::paths::join_inside;
use crate::scenario::tree::{FileSpec, Tree};

/// `nydus-image` beside the nydusd binary, else on PATH.
pub fn nydus_image_for(nydusd: &Path) -> PathBuf {
    let sibling = nydusd.with_file_name("nydus-image");
    if sibling.is_file() { sibling } else { PathBuf::from("nydus-image") }
}

/// Where one run keeps blobs and the blob cache.
#[derive(Debug, Clone)]
pub struct ImageStore {
    /// Data blobs (the localfs backend's directory).
    pub blobs: PathBuf,
    /// The blob cache's work directory.
    pub cache: PathBuf,
}

impl ImageStore {
    /// Under `root`.
    pub fn under(root: &Path) -> Self {
        Self { blobs: root.join("blobs"), cache: root.join("blobcache") }
    }

    /// The instance configuration real nydusd 2.2 accepts for these images (the legacy v1
    /// shape; `mode` is required by its parser).
    pub fn config(&self) -> String {
        serde_json::json!({
            "device": {
                "backend": { "type": "localfs", "config": { "dir": self.blobs } },
                "cache": { "type": "blobcache", "config": { "work_dir": self.cache } }
            },
            "mode": "direct",
            "digest_validate": false,
            "iostats_files": true,
            "access_pattern": true,
            "latest_read_files": true
        })
        .to_string()
    }

    /// Builds `bootstrap` from `tree`, with `source` as the scratch directory for its files.
    /// Every path is checked before anything is written. Cancelling the future (the
    /// scenario's deadline) kills `nydus-image`.
    pub async fn build(&self, nydus_image: &Path, tree: &Tree, source: &Path, bootstrap: &Path) -> Result<(), String> {
        let files = tree
            .files()
            .map(|(path, file)| Ok((join_inside(source, path)?, file.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        let dirs = [source.to_owned(), self.blobs.clone(), self.cache.clone()];
        // Off the async workers: files of up to 256 MiB take a while, and a strange
        // filesystem can block, and the deadline must still fire meanwhile.
        tokio::task::spawn_blocking(move || write_files(&dirs, &files))
            .await
            .map_err(|e| format!("writing the image's files: {e}"))??;
        let output = tokio::process::Command::new(nydus_image)
            .args(["create", "-t", "dir-rafs", "-v", "6", "--log-level", "warn", "--bootstrap"])
            .arg(bootstrap)
            .arg("--blob-dir")
            .arg(&self.blobs)
            .arg(source)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", nydus_image.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} create failed ({}): {}",
                nydus_image.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// Builds the erofs image `image` of `tree` with mkfs.erofs, `source` being the scratch
/// directory for its files (checked before anything is written, as in [`ImageStore::build`]).
pub async fn build_erofs(tree: &Tree, source: &Path, image: &Path) -> Result<(), String> {
    let files = tree
        .files()
        .map(|(path, file)| Ok((join_inside(source, path)?, file.clone())))
        .collect::<Result<Vec<_>, String>>()?;
    let dirs = [source.to_owned()];
    tokio::task::spawn_blocking(move || write_files(&dirs, &files))
        .await
        .map_err(|e| format!("writing the image's files: {e}"))??;
    let output = tokio::process::Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(image)
        .arg(source)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run mkfs.erofs: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mkfs.erofs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn write_files(dirs: &[PathBuf], files: &[(PathBuf, FileSpec)]) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    for (target, file) in files {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let bytes: Vec<u8> = match file {
            FileSpec::Text(text) => text.as_bytes().to_vec(),
            FileSpec::Sized { size } => (0..size.get()).map(mock_nydusd::pattern_byte).collect(),
        };
        std::fs::write(target, bytes).map_err(|e| io(target, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_saphyr::{Location, Spanned};

    use super::*;

    /// The builder refuses an escaping path even when load-time validation was bypassed
    /// (a tree built in code), before writing anything.
    #[tokio::test]
    async fn the_image_builder_refuses_a_path_outside_its_source_and_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("trees/a");
        let file = |path: &str| {
            (Spanned::new(path.to_owned(), Location::UNKNOWN, Location::UNKNOWN), FileSpec::Text("x".into()))
        };
        let tree = Tree(vec![file("etc/os-release"), file("../../escape")]);
        let store = ImageStore::under(root.path());
        let err = store
            .build(Path::new("/nonexistent/nydus-image"), &tree, &source, &root.path().join("a.boot"))
            .await
            .unwrap_err();
        assert!(err.contains("file path \"../../escape\" has a `..` component"), "{err}");
        assert!(!root.path().join("escape").exists());
        assert!(!source.join("etc/os-release").exists());
    }
}
