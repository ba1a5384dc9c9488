//! A temporary root with the mock linked in as `nydusd`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A private temporary directory ([`private_tempdir`]) with the mock linked in
/// ([`link_mock`]). Removed on drop.
#[derive(Debug)]
pub struct MockRoot {
    dir: tempfile::TempDir,
    nydusd: PathBuf,
}

impl MockRoot {
    /// A root named `<prefix>…` in the temporary directory, with `bin/nydusd` → `mock`.
    pub fn new(prefix: &str, mock: &Path) -> std::io::Result<Self> {
        let dir = private_tempdir(prefix)?;
        let nydusd = link_mock(dir.path(), mock)?;
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
        write_next_build(&next, &self.nydusd, git_commit)?;
        Ok(next)
    }
}

/// Writes at `path` a "new build" of `mock` that reports `git_commit`: a script running
/// it under the name `nydusd` with `--mock-git-commit`.
pub fn write_next_build(path: &Path, mock: &Path, git_commit: &str) -> std::io::Result<()> {
    write_script(
        path,
        &format!(
            "#!/bin/bash\nexec -a nydusd {} \"$@\" --mock-git-commit {}\n",
            shell_quote(&mock.display().to_string()),
            shell_quote(git_commit)
        ),
    )
}

/// `text` single-quoted for a shell, so that a path with a space, a quote or a newline
/// stays one word.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes the script `text` at `path`, executable by its owner and others (0755).
pub fn write_script(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// A temporary directory named `<prefix>…`, readable by its owner only: a snapshotter
/// root holds API and supervisor sockets, configurations and the store.
pub fn private_tempdir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(std::env::temp_dir())
}

/// Links `mock` in as `<root>/bin/nydusd`: a binary that is the mock when started under
/// that name (see [`crate::invoked_as_mock`]) then runs it.
pub fn link_mock(root: &Path, mock: &Path) -> std::io::Result<PathBuf> {
    let nydusd = root.join("bin/nydusd");
    std::fs::create_dir_all(root.join("bin"))
        .and_then(|()| std::os::unix::fs::symlink(mock, &nydusd))
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot link the mock at {}: {e}", nydusd.display())))?;
    Ok(nydusd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_private_and_links_the_mock() {
        let root = MockRoot::new("testkit it's ", Path::new("/bin/true")).unwrap();
        let mode = std::fs::metadata(root.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(std::fs::read_link(root.nydusd()).unwrap(), Path::new("/bin/true"));
        let next = root.next_build("next-nydusd", "ab").unwrap();
        let status = std::process::Command::new(&next).status().unwrap();
        assert!(status.success(), "the build runs from a root with a space and a quote: {status}");
        let path = root.path().to_owned();
        drop(root);
        assert!(!path.exists(), "removed on drop");
    }
}
