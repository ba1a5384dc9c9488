//! A temporary root with the mock linked in as `nydusd`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A temporary directory (mode 0700: it holds API and supervisor sockets, configurations
/// and the store) with `bin/nydusd` linked to a mock binary. Removed on drop.
#[derive(Debug)]
pub struct MockRoot {
    dir: tempfile::TempDir,
    nydusd: PathBuf,
}

impl MockRoot {
    /// A root named `<prefix>…` in the temporary directory, with `bin/nydusd` → `mock`.
    pub fn new(prefix: &str, mock: &Path) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(std::env::temp_dir())?;
        Self::link(dir, mock)
    }

    /// Links the mock into an existing directory, which the root then owns.
    pub fn link(dir: tempfile::TempDir, mock: &Path) -> std::io::Result<Self> {
        let nydusd = dir.path().join("bin/nydusd");
        std::fs::create_dir_all(dir.path().join("bin"))?;
        std::os::unix::fs::symlink(mock, &nydusd)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot link the mock at {}: {e}", nydusd.display())))?;
        Ok(Self { dir, nydusd })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<root>/bin/nydusd`.
    pub fn nydusd(&self) -> &Path {
        &self.nydusd
    }

    /// A "new build" at `relative` under the root: the same mock, reporting `git_commit`,
    /// as a hot upgrade needs a binary whose `--version` differs.
    pub fn next_build(&self, relative: &str, git_commit: &str) -> std::io::Result<PathBuf> {
        let next = self.path().join(relative);
        let script =
            format!("#!/bin/bash\nexec -a nydusd {} \"$@\" --mock-git-commit {git_commit}\n", self.nydusd.display());
        std::fs::write(&next, script)?;
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755))?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_private_and_links_the_mock() {
        let root = MockRoot::new("testkit-", Path::new("/bin/true")).unwrap();
        let mode = std::fs::metadata(root.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(std::fs::read_link(root.nydusd()).unwrap(), Path::new("/bin/true"));
        let next = root.next_build("next-nydusd", "ab").unwrap();
        assert!(std::fs::read_to_string(next).unwrap().contains("--mock-git-commit ab"));
        let path = root.path().to_owned();
        drop(root);
        assert!(!path.exists(), "removed on drop");
    }
}
