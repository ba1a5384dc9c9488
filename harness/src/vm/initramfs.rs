//! The guest's root file system: an uncompressed `newc` cpio archive, which the kernel
//! unpacks into its initial tmpfs. Files are streamed from the host as they are added, so
//! a large binary is never held in memory.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

/// An archive being written.
#[derive(Debug)]
pub struct Initramfs {
    out: BufWriter<std::fs::File>,
    next_inode: u32,
    /// Directories already in the archive (the kernel needs each parent before its entries).
    dirs: BTreeSet<PathBuf>,
    /// Every path already in the archive: a second entry of one path would replace it.
    paths: BTreeSet<PathBuf>,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

impl Initramfs {
    /// Starts an archive at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            out: BufWriter::new(std::fs::File::create(path)?),
            next_inode: 1,
            dirs: BTreeSet::new(),
            paths: BTreeSet::new(),
        })
    }

    /// Adds the directory `guest` and its parents.
    pub fn dir(&mut self, guest: &Path) -> std::io::Result<()> {
        let guest = relative(guest)?;
        let mut at = PathBuf::new();
        for part in guest.components() {
            at.push(part);
            if self.dirs.insert(at.clone()) {
                self.paths.insert(at.clone());
                self.entry(&at, S_IFDIR | 0o755, &[])?;
            }
        }
        Ok(())
    }

    /// Adds the host file `host` as `guest`, with `mode`'s permission bits; the host
    /// file's target when it is a symlink. A path already added is left as it is.
    pub fn file(&mut self, host: &Path, guest: &Path, mode: u32) -> std::io::Result<()> {
        let guest = relative(guest)?;
        if !self.paths.insert(guest.clone()) {
            return Ok(());
        }
        if let Some(parent) = guest.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir(parent)?;
        }
        let mut source = std::fs::File::open(host).map_err(|e| named(host, e))?;
        let size = source.metadata().map_err(|e| named(host, e))?.len();
        let size = u32::try_from(size).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{}: over 4 GiB", host.display()))
        })?;
        self.header(&guest, S_IFREG | (mode & 0o7777), size)?;
        let copied = std::io::copy(&mut source, &mut self.out)?;
        if copied != u64::from(size) {
            return Err(named(host, std::io::Error::other("changed size while it was copied")));
        }
        self.pad(size as usize)
    }

    /// Adds `bytes` as the file `guest`.
    pub fn bytes(&mut self, guest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        let guest = relative(guest)?;
        if !self.paths.insert(guest.clone()) {
            return Ok(());
        }
        if let Some(parent) = guest.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir(parent)?;
        }
        self.entry(&guest, S_IFREG | (mode & 0o7777), bytes)
    }

    /// Adds a symlink `guest` pointing at `target`.
    pub fn symlink(&mut self, guest: &Path, target: &str) -> std::io::Result<()> {
        let guest = relative(guest)?;
        if !self.paths.insert(guest.clone()) {
            return Ok(());
        }
        if let Some(parent) = guest.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir(parent)?;
        }
        self.entry(&guest, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Adds the host directory `host` as `guest`, recursively: directories, regular files
    /// and symlinks (as links).
    pub fn tree(&mut self, host: &Path, guest: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.dir(guest)?;
        let mut entries: Vec<_> = std::fs::read_dir(host).map_err(|e| named(host, e))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let (from, to) = (entry.path(), guest.join(entry.file_name()));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.tree(&from, &to)?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&from)?;
                self.symlink(&to, &target.to_string_lossy())?;
            } else if kind.is_file() {
                let mode = entry.metadata()?.permissions().mode();
                self.file(&from, &to, mode)?;
            }
        }
        Ok(())
    }

    /// Writes the trailer and flushes.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.entry(Path::new("TRAILER!!!"), 0, &[])?;
        self.out.flush()
    }

    fn entry(&mut self, name: &Path, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| std::io::Error::other("entry over 4 GiB"))?;
        self.header(name, mode, size)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn header(&mut self, name: &Path, mode: u32, size: u32) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let name = name.as_os_str().as_bytes();
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [inode, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name)?;
        self.out.write_all(&[0])?;
        // The name is padded so that header and name end on a 4-byte boundary.
        self.pad(110 + name.len() + 1)
    }

    fn pad(&mut self, written: usize) -> std::io::Result<()> {
        let pad = (4 - written % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad])
    }
}

/// `path` without its leading `/`; `..` is refused, so nothing lands outside the root.
fn relative(path: &Path) -> std::io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{}: a path in the guest may not climb with `..`", path.display()),
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an empty path in the guest"));
    }
    Ok(out)
}

fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The shared libraries `binary` loads (the dynamic loader included), as `ldd` names them
/// on this host; none for a static binary.
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ldd on {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // ldd says so, and fails, for a static binary.
        let said = format!("{text}{}", String::from_utf8_lossy(&output.stderr));
        anyhow::ensure!(
            said.contains("not a dynamic executable") || said.contains("statically linked"),
            "ldd {}: {}",
            binary.display(),
            said.trim()
        );
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`,
        // and `linux-vdso.so.1 (0x…)`, which the kernel provides.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        match path {
            Some("not") => anyhow::bail!("{}: {}", binary.display(), line.trim()),
            Some(p) if p.starts_with('/') => libraries.push(PathBuf::from(p)),
            _ => {}
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive is what `cpio` itself reads back: every entry, in order, with its
    /// content and link target.
    #[test]
    fn the_archive_lists_and_unpacks_with_cpio() {
        if std::process::Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("skipped: no cpio on PATH to read the archive back");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host.txt");
        std::fs::write(&host, b"seven b").unwrap();
        let archive = dir.path().join("root.cpio");
        let mut root = Initramfs::create(&archive).unwrap();
        root.file(&host, Path::new("/a/b/file"), 0o644).unwrap();
        root.bytes(Path::new("/init"), b"#!/bin/sh\n", 0o755).unwrap();
        root.symlink(Path::new("/bin/sh"), "busybox").unwrap();
        root.file(&host, Path::new("/a/b/file"), 0o600).unwrap();
        assert!(root.file(&host, Path::new("/../escape"), 0o644).is_err());
        root.finish().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let unpacked = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet", "-F"])
            .arg(&archive)
            .current_dir(&out)
            .output()
            .unwrap();
        assert!(unpacked.status.success(), "{}", String::from_utf8_lossy(&unpacked.stderr));
        assert_eq!(std::fs::read(out.join("a/b/file")).unwrap(), b"seven b");
        assert_eq!(std::fs::read(out.join("init")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(std::fs::read_link(out.join("bin/sh")).unwrap(), Path::new("busybox"));
        let listed = std::process::Command::new("cpio").args(["-t", "--quiet", "-F"]).arg(&archive).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&listed.stdout), "a\na/b\na/b/file\ninit\nbin\nbin/sh\n");
    }

    #[test]
    fn ldd_names_the_loader_and_libc_of_a_dynamic_binary_and_nothing_for_a_static_one() {
        let libraries = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libraries:?}");
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libraries:?}");
        assert!(libraries.iter().all(|l| l.is_absolute()));
    }
}
