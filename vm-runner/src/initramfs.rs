//! The guest's root file system: an uncompressed `newc` cpio archive (written with the
//! `cpio` crate), which the kernel unpacks into its initial tmpfs. Files are streamed from
//! the host as they are added, so a large binary is never held in memory.

use crate::VmError;
use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

/// An archive being written.
#[derive(Debug)]
pub struct Initramfs {
    /// Taken by each entry's writer and given back when the entry is finished.
    out: Option<BufWriter<std::fs::File>>,
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
            out: Some(BufWriter::new(std::fs::File::create(path)?)),
            next_inode: 1,
            dirs: BTreeSet::new(),
            paths: BTreeSet::new(),
        })
    }

    /// Whether `guest` is already in the archive (a second entry of it would be ignored).
    pub fn contains(&self, guest: &Path) -> bool {
        relative(guest).is_ok_and(|path| self.paths.contains(&path))
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
        let mut entry = self.start(&guest, S_IFREG | (mode & 0o7777), size)?;
        let copied = std::io::copy(&mut source, &mut entry)?;
        if copied != u64::from(size) {
            return Err(named(host, std::io::Error::other("changed size while it was copied")));
        }
        self.out = Some(entry.finish()?);
        Ok(())
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
        let out = self.out.take().ok_or_else(unusable)?;
        cpio::newc::trailer(out)?.flush()
    }

    fn entry(&mut self, name: &Path, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| std::io::Error::other("entry over 4 GiB"))?;
        let mut entry = self.start(name, mode, size)?;
        entry.write_all(data)?;
        self.out = Some(entry.finish()?);
        Ok(())
    }

    /// The writer of one entry; its `finish` gives the archive back.
    fn start(
        &mut self,
        name: &Path,
        mode: u32,
        size: u32,
    ) -> std::io::Result<cpio::newc::Writer<BufWriter<std::fs::File>>> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let out = self.out.take().ok_or_else(unusable)?;
        Ok(cpio::newc::Builder::new(&name.to_string_lossy()).ino(inode).mode(mode).nlink(nlink).write(out, size))
    }
}

/// An archive whose last entry failed half-written cannot be continued.
fn unusable() -> std::io::Error {
    std::io::Error::other("the archive was left unusable by an earlier error")
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
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, VmError> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| VmError::Tool { tool: "ldd", detail: format!("cannot run it on {}: {e}", binary.display()) })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // ldd says so, and fails, for a static binary.
        let said = format!("{text}{}", String::from_utf8_lossy(&output.stderr));
        if !(said.contains("not a dynamic executable") || said.contains("statically linked")) {
            return Err(VmError::Tool { tool: "ldd", detail: format!("{}: {}", binary.display(), said.trim()) });
        }
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
            Some("not") => return Err(VmError::Input(format!("{}: {}", binary.display(), line.trim()))),
            Some(p) if p.starts_with('/') => libraries.push(PathBuf::from(p)),
            _ => {}
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of the archive read back: name, mode, content.
    fn entries(archive: &Path) -> Vec<(String, u32, Vec<u8>)> {
        use std::io::Read;
        let mut file = std::io::BufReader::new(std::fs::File::open(archive).unwrap());
        let mut out = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(file).unwrap();
            if reader.entry().is_trailer() {
                return out;
            }
            let (name, mode) = (reader.entry().name().to_owned(), reader.entry().mode());
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            out.push((name, mode, data));
            file = reader.finish().unwrap();
        }
    }

    /// Parents come before their entries, each path once (the first wins), file
    /// content and link targets as given, and nothing outside the root.
    #[test]
    fn entries_come_after_their_parents_each_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host.txt");
        std::fs::write(&host, b"seven b").unwrap();
        let archive = dir.path().join("root.cpio");
        let mut root = Initramfs::create(&archive).unwrap();
        root.file(&host, Path::new("/a/b/file"), 0o644).unwrap();
        root.bytes(Path::new("/init"), b"#!/bin/sh\n", 0o755).unwrap();
        root.symlink(Path::new("/bin/sh"), "busybox").unwrap();
        root.file(&host, Path::new("/a/b/file"), 0o600).unwrap();
        let escape = root.file(&host, Path::new("/../escape"), 0o644).unwrap_err();
        assert!(escape.to_string().contains("may not climb"), "{escape}");
        root.finish().unwrap();
        let read = entries(&archive);
        let names: Vec<&str> = read.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/file", "init", "bin", "bin/sh"]);
        assert_eq!(read[0].1, S_IFDIR | 0o755);
        assert_eq!((read[2].1, read[2].2.as_slice()), (S_IFREG | 0o644, &b"seven b"[..]));
        assert_eq!((read[3].1, read[3].2.as_slice()), (S_IFREG | 0o755, &b"#!/bin/sh\n"[..]));
        assert_eq!((read[5].1, read[5].2.as_slice()), (S_IFLNK | 0o777, &b"busybox"[..]));
    }

    #[test]
    fn ldd_names_the_loader_and_libc_of_a_dynamic_binary_and_nothing_for_a_static_one() {
        let libraries = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libraries:?}");
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libraries:?}");
        assert!(libraries.iter().all(|l| l.is_absolute()));
    }
}
