//! The erofs image the mock serves for a bound bootstrap. nydusd serves a RAFS v6
//! bootstrap, which is an erofs image whose data lives in separate blobs; the mock serves a
//! plain erofs image with its data inline, so the kernel asks for one cookie only. The
//! image is the bootstrap file itself when it is one, or is built with `mkfs.erofs` from
//! the JSON stand-in the mock reads for FUSE (`{"mock_tree": {...}}`, see `fuse::tree`),
//! with the same file contents, so an instance reads the same through FUSE and fscache.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// erofs's superblock magic, at byte 1024 of an image.
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;

/// The most a stand-in may ask the mock to write: its files go to disk before mkfs.erofs
/// reads them (and the image after them).
pub const MAX_TREE_BYTES: u64 = 1 << 30;

/// The largest stand-in read: it is JSON naming files, not their content.
pub const MAX_STAND_IN_BYTES: u64 = 64 << 20;

/// Why no image could be served.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read the bootstrap {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bootstrap {} is neither an erofs image nor a mock tree", path.display())]
    NotAnImage { path: PathBuf },
    #[error("the bootstrap {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("the bootstrap {} is over {MAX_STAND_IN_BYTES} bytes and not an erofs image", path.display())]
    StandInTooLarge { path: PathBuf },
    #[error("the mock tree of {} names `{name}` twice", path.display())]
    Duplicate { path: PathBuf, name: String },
    #[error("the mock tree of {} names `{name}` as a file and as a directory", path.display())]
    FileAndDirectory { path: PathBuf, name: String },
    #[error("the mock tree of {} names `{name}`, which leaves the image", path.display())]
    Outside { path: PathBuf, name: String },
    #[error("the mock tree of {} holds more than {MAX_TREE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run mkfs.erofs")]
    Run(#[source] std::io::Error),
    #[error("mkfs.erofs failed ({status}): {said}")]
    Mkfs { status: std::process::ExitStatus, said: String },
}

/// Whether `path` starts like an erofs image.
fn is_erofs(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::Start(1024)).and_then(|_| f.read_exact(&mut magic)))
        .is_ok_and(|()| u32::from_le_bytes(magic) == EROFS_MAGIC)
}

/// The image to serve for `bootstrap`: the file itself when it is an erofs image, else one
/// built from its mock tree into `scratch`, which must not exist yet (it is created, and
/// removed again when the build fails, so nothing of one build reaches another).
pub fn image_for(bootstrap: &Path, scratch: &Path) -> Result<PathBuf, ImageError> {
    let read = |source| ImageError::Read { path: bootstrap.to_owned(), source };
    // A FIFO or a device would block the open or the read for ever.
    let meta = std::fs::metadata(bootstrap).map_err(read)?;
    if !meta.is_file() {
        return Err(ImageError::NotAFile { path: bootstrap.to_owned() });
    }
    if is_erofs(bootstrap) {
        return Ok(bootstrap.to_owned());
    }
    if meta.len() > MAX_STAND_IN_BYTES {
        return Err(ImageError::StandInTooLarge { path: bootstrap.to_owned() });
    }
    let mut text = Vec::new();
    {
        use std::io::Read;
        let file = std::fs::File::open(bootstrap).map_err(read)?;
        file.take(MAX_STAND_IN_BYTES + 1).read_to_end(&mut text).map_err(read)?;
    }
    if text.len() as u64 > MAX_STAND_IN_BYTES {
        return Err(ImageError::StandInTooLarge { path: bootstrap.to_owned() });
    }
    let tree = serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|v| v.get("mock_tree").and_then(Value::as_object).cloned())
        .ok_or_else(|| ImageError::NotAnImage { path: bootstrap.to_owned() })?;
    // Every name and the total size are checked before anything is written: each names a
    // file inside (no empty, `.` or `..` component, no trailing `/`), once.
    let mut total = 0u64;
    let mut names = std::collections::HashSet::new();
    for (name, spec) in &tree {
        let trimmed = name.trim_start_matches('/');
        let relative = Path::new(trimmed);
        let inside = relative.components().all(|c| matches!(c, Component::Normal(_)))
            && trimmed.split('/').all(|part| !part.is_empty() && part != ".")
            && !trimmed.contains('\0');
        if !inside {
            return Err(ImageError::Outside { path: bootstrap.to_owned(), name: name.clone() });
        }
        if !names.insert(trimmed) {
            return Err(ImageError::Duplicate { path: bootstrap.to_owned(), name: name.clone() });
        }
        total = total.saturating_add(match spec {
            Value::String(text) => text.len() as u64,
            Value::Object(o) => o.get("size").and_then(Value::as_u64).unwrap_or(0),
            _ => 0,
        });
    }
    if total > MAX_TREE_BYTES {
        return Err(ImageError::TooLarge { path: bootstrap.to_owned() });
    }
    // `a` and `a/b` cannot both be files.
    for name in &names {
        let mut parent = *name;
        while let Some((up, _)) = parent.rsplit_once('/') {
            if names.contains(up) {
                return Err(ImageError::FileAndDirectory { path: bootstrap.to_owned(), name: up.to_owned() });
            }
            parent = up;
        }
    }
    let parent = scratch.parent().unwrap_or(scratch);
    std::fs::create_dir_all(parent).map_err(write_failed(parent))?;
    // A fresh directory: a leftover would mix another build's files into this image.
    std::fs::create_dir(scratch).map_err(write_failed(scratch))?;
    let built = build_in(&tree, scratch);
    if built.is_err() {
        let _ = std::fs::remove_dir_all(scratch);
    }
    built
}

/// Writes the tree's files under `scratch/tree` and builds `scratch/image.erofs` of them.
fn build_in(tree: &serde_json::Map<String, Value>, scratch: &Path) -> Result<PathBuf, ImageError> {
    let files = scratch.join("tree");
    std::fs::create_dir(&files).map_err(write_failed(&files))?;
    for (name, spec) in tree {
        let file = files.join(name.trim_start_matches('/'));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(write_failed(parent))?;
        }
        match spec {
            Value::String(text) => std::fs::write(&file, text).map_err(write_failed(&file))?,
            Value::Object(o) => {
                write_pattern(&file, o.get("size").and_then(Value::as_u64).unwrap_or(0)).map_err(write_failed(&file))?
            }
            _ => continue,
        }
    }
    let image = scratch.join("image.erofs");
    let output = std::process::Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&image)
        .arg(&files)
        .output()
        .map_err(ImageError::Run)?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(ImageError::Mkfs { status: output.status, said });
    }
    // The files are in the image now.
    let _ = std::fs::remove_dir_all(&files);
    Ok(image)
}

/// The error for a failed write of `path`.
fn write_failed(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Write { path, source }
}

/// A file of `size` bytes of the FUSE tree's pattern, written in pieces.
fn write_pattern(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = Vec::with_capacity(1 << 16);
    let mut offset = 0;
    while offset < size {
        chunk.clear();
        let end = (offset + (1 << 16)).min(size);
        chunk.extend((offset..end).map(crate::fuse::tree::pattern_byte));
        out.write_all(&chunk)?;
        offset = end;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_that_leaves_the_image_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../escape", "a/../../escape", "/", ""] {
            let boot = dir.path().join("image.boot");
            // A good name first: nothing of it is written either.
            let tree = serde_json::json!({ "mock_tree": { "a-good-one": "x", name: "x" } });
            std::fs::write(&boot, tree.to_string()).unwrap();
            let err = image_for(&boot, &dir.path().join("scratch")).unwrap_err();
            assert!(matches!(err, ImageError::Outside { .. }), "{name}: {err:?}");
        }
        assert!(!dir.path().join("escape").exists());
        assert!(!dir.path().join("scratch").exists());
        let boot = dir.path().join("huge.boot");
        std::fs::write(&boot, r#"{"mock_tree": {"a": {"size": 2147483648}, "b": {"size": 1}}}"#).unwrap();
        assert!(matches!(image_for(&boot, &dir.path().join("s2")), Err(ImageError::TooLarge { .. })));
        let boot = dir.path().join("text.boot");
        std::fs::write(&boot, "not json").unwrap();
        assert!(matches!(image_for(&boot, &dir.path().join("s3")), Err(ImageError::NotAnImage { .. })));
        for (tree, what) in [
            (r#"{"mock_tree": {"a": "x", "a/b": "y"}}"#, "as a file and as a directory"),
            (r#"{"mock_tree": {"a": "x", "/a": "y"}}"#, "twice"),
            (r#"{"mock_tree": {"c/": "x"}}"#, "leaves the image"),
            (r#"{"mock_tree": {"c//d": "x"}}"#, "leaves the image"),
        ] {
            std::fs::write(&boot, tree).unwrap();
            let err = image_for(&boot, &dir.path().join("s4")).unwrap_err();
            assert!(err.to_string().contains(what), "{tree}: {err}");
            assert!(!dir.path().join("s4").exists(), "{tree}: nothing written");
        }
        // A FIFO would block the read for ever: refused by its type.
        let fifo = dir.path().join("fifo.boot");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(image_for(&fifo, &dir.path().join("s5")), Err(ImageError::NotAFile { .. })));
    }
}
