//! Instance images for a real nydusd: the scenario's tree written out as files and turned
//! into a RAFS v6 bootstrap plus data blob by `nydus-image`, read back through a localfs
//! backend with a blob cache (nydusd refuses a v6 image without one).

use std::path::{Path, PathBuf};

use crate::scenario::paths::join_inside;
use crate::scenario::tree::{FileSpec, Tree};

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A path of the tree leaves its source directory.
    #[error("{0}")]
    Outside(String),
    /// A file or directory of the tree could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the files on their blocking thread panicked.
    #[error("writing the image's files")]
    Writing(#[source] tokio::task::JoinError),
    /// The builder (nydus-image, mkfs.erofs) could not run.
    #[error("cannot run {}", tool.display())]
    Run {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The builder failed, with what it said.
    #[error("{} failed ({status}): {said}", tool.display())]
    Failed { tool: PathBuf, status: std::process::ExitStatus, said: String },
}

/// The files of `tree` under `source`, every path checked before anything is written.
fn files_under(tree: &Tree, source: &Path) -> Result<Vec<(PathBuf, FileSpec)>, ImageError> {
    tree.files()
        .map(|(path, file)| Ok((join_inside(source, path).map_err(ImageError::Outside)?, file.clone())))
        .collect()
}

/// Runs a builder to its end (killed if the future is dropped).
async fn run_builder(mut command: tokio::process::Command, tool: &Path) -> Result<(), ImageError> {
    let output = command
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ImageError::Run { tool: tool.to_owned(), source })?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(ImageError::Failed { tool: tool.to_owned(), status: output.status, said });
    }
    Ok(())
}

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
    pub async fn build(
        &self,
        nydus_image: &Path,
        tree: &Tree,
        source: &Path,
        bootstrap: &Path,
    ) -> Result<(), ImageError> {
        let files = files_under(tree, source)?;
        let dirs = [source.to_owned(), self.blobs.clone(), self.cache.clone()];
        // Off the async workers: files of up to 256 MiB take a while, and a strange
        // filesystem can block, and the deadline must still fire meanwhile.
        tokio::task::spawn_blocking(move || write_files(&dirs, &files)).await.map_err(ImageError::Writing)??;
        let mut command = tokio::process::Command::new(nydus_image);
        command
            .args(["create", "-t", "dir-rafs", "-v", "6", "--log-level", "warn", "--bootstrap"])
            .arg(bootstrap)
            .arg("--blob-dir")
            .arg(&self.blobs)
            .arg(source);
        run_builder(command, nydus_image).await
    }
}

/// Builds the erofs image `image` of `tree` with mkfs.erofs, `source` being the scratch
/// directory for its files (checked before anything is written, as in [`ImageStore::build`]).
pub async fn build_erofs(tree: &Tree, source: &Path, image: &Path) -> Result<(), ImageError> {
    let files = files_under(tree, source)?;
    let dirs = [source.to_owned()];
    tokio::task::spawn_blocking(move || write_files(&dirs, &files)).await.map_err(ImageError::Writing)??;
    let mut command = tokio::process::Command::new("mkfs.erofs");
    command.arg("--quiet").arg(image).arg(source);
    run_builder(command, Path::new("mkfs.erofs")).await
}

fn write_files(dirs: &[PathBuf], files: &[(PathBuf, FileSpec)]) -> Result<(), ImageError> {
    let io = |p: &Path| {
        let path = p.to_owned();
        move |source| ImageError::Write { path, source }
    };
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    for (target, file) in files {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let bytes: Vec<u8> = match file {
            FileSpec::Text(text) => text.as_bytes().to_vec(),
            FileSpec::Sized { size } => (0..size.get()).map(mock_nydusd::pattern_byte).collect(),
        };
        std::fs::write(target, bytes).map_err(io(target))?;
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
        assert!(matches!(err, ImageError::Outside(_)), "{err:?}");
        assert!(err.to_string().contains("file path \"../../escape\" has a `..` component"), "{err}");
        assert!(!root.path().join("escape").exists());
        assert!(!source.join("etc/os-release").exists());
    }
}
