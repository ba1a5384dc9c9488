//! The kernel a VM boots: Debian's `linux-image-*` package (unpacked with `dpkg-deb`),
//! or a bare `vmlinuz` whose drivers are all built in. From a package come the kernel
//! image, its release, and the modules the scenarios need (FUSE, erofs, cachefiles, loop)
//! with every module they depend on, in an order `insmod` can load them.
//!
//! Modules given with `--module` take the place of the package's module of the same name:
//! that is how erofs over fscache in on-demand mode, which no Debian kernel enables, runs
//! on Debian's own kernels (`ci/vm-modules.sh` rebuilds `cachefiles` and `erofs` with it).
//! Their dependencies still come from the package.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::VmError;

/// The file systems and devices privileged scenarios use; each is loaded when the
/// kernel has it as a module and skipped when it is built in or missing (the scenario
/// that needs it then skips, saying why).
pub const WANTED_MODULES: &[&str] = &["fuse", "erofs", "cachefiles", "loop"];

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `uname -r` inside the guest, as the package names it (`6.1.0-57-cloud-amd64`).
    pub release: Option<String>,
    /// Modules to load, dependencies first: (host file, uncompressed; name).
    pub modules: Vec<(PathBuf, String)>,
    /// Wanted modules the package has neither as a module nor, by its config, built in.
    pub missing: Vec<String>,
    /// The modules given in place of the package's, by name.
    pub replaced: Vec<String>,
}

impl Kernel {
    /// Prepares `path` (a `.deb`, or a kernel image) in `work`, which must be empty and
    /// lives as long as the kernel is used; `replacements` (uncompressed `.ko` files) take
    /// the place of the package's modules of the same names, and are loaded even when the
    /// package has no such module.
    pub fn prepare(path: &Path, work: &Path, replacements: &[PathBuf]) -> Result<Self, VmError> {
        let is_deb = {
            use std::io::Read;
            let mut magic = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(21).read_to_end(&mut magic))
                .map_err(VmError::io("--kernel", path))?;
            magic == b"!<arch>\ndebian-binary"
        };
        if !is_deb {
            if !is_bzimage(path) {
                return Err(VmError::Input(format!(
                    "--kernel {}: neither a Debian linux-image package nor an x86 kernel image (bzImage)",
                    path.display()
                )));
            }
            if let Some(module) = replacements.first() {
                return Err(VmError::Input(format!(
                    "--module {}: a bare kernel image has no modules to replace; give a linux-image package",
                    module.display()
                )));
            }
            return Ok(Self {
                vmlinuz: path.to_owned(),
                release: None,
                modules: Vec::new(),
                missing: Vec::new(),
                replaced: Vec::new(),
            });
        }
        let unpacked = std::process::Command::new("dpkg-deb").arg("-x").arg(path).arg(work).output().map_err(|e| {
            VmError::Tool { tool: "dpkg-deb", detail: format!("cannot unpack {}: {e}", path.display()) }
        })?;
        if !unpacked.status.success() {
            let said = String::from_utf8_lossy(&unpacked.stderr).trim().to_owned();
            return Err(VmError::Tool { tool: "dpkg-deb", detail: format!("-x {}: {said}", path.display()) });
        }
        let boot = work.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .map_err(VmError::io("no boot/ in the package", path))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
            .ok_or_else(|| VmError::Input(format!("{}: the package holds no boot/vmlinuz-*", path.display())))?;
        let release = vmlinuz.file_name().unwrap_or_default().to_string_lossy()["vmlinuz-".len()..].to_owned();
        let config = std::fs::read_to_string(boot.join(format!("config-{release}"))).unwrap_or_default();
        let tree = work.join("lib/modules").join(&release);
        let mut index = ModuleIndex::scan(&tree)?;
        let replaced = index.replace(&release, replacements)?;
        let mut modules = Vec::new();
        let mut missing = Vec::new();
        let wanted = WANTED_MODULES.iter().copied().chain(replaced.iter().map(String::as_str));
        for name in wanted {
            if index.by_name.contains_key(name) {
                index.load_order(name, &mut modules, &mut Vec::new())?;
            } else if !built_in(&config, name) {
                missing.push(name.to_owned());
            }
        }
        let mut ready = Vec::new();
        for name in modules {
            let file = &index.by_name[&name];
            ready.push((uncompressed(file, work)?, name));
        }
        Ok(Self { vmlinuz, release: Some(release), modules: ready, missing, replaced })
    }
}

/// Whether the kernel config says `name` is built in.
fn built_in(config: &str, name: &str) -> bool {
    let option = match name {
        "fuse" => "CONFIG_FUSE_FS",
        "erofs" => "CONFIG_EROFS_FS",
        "loop" => "CONFIG_BLK_DEV_LOOP",
        "cachefiles" => "CONFIG_CACHEFILES",
        _ => return false,
    };
    config.lines().any(|l| l == format!("{option}=y"))
}

/// Every module file of a kernel's tree, by module name.
struct ModuleIndex {
    by_name: BTreeMap<String, PathBuf>,
}

impl ModuleIndex {
    fn scan(tree: &Path) -> Result<Self, VmError> {
        let mut by_name = BTreeMap::new();
        let mut pending = vec![tree.to_owned()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(path);
                } else if let Some(name) = module_name(&path) {
                    by_name.insert(name, path);
                }
            }
        }
        Ok(Self { by_name })
    }

    /// Puts each of `replacements` in place of the module of its name, after checking that
    /// it was built for `release` (a module for another kernel fails to load in the guest,
    /// far from the cause); returns their names.
    fn replace(&mut self, release: &str, replacements: &[PathBuf]) -> Result<Vec<String>, VmError> {
        let mut replaced: Vec<String> = Vec::new();
        for module in replacements {
            check_module_file(module)?;
            // A FIFO would block the read for ever, a huge file fill the memory: refused,
            // named, before anything is read.
            let meta = std::fs::metadata(module).map_err(VmError::io("--module", module))?;
            if !meta.is_file() || meta.len() > MAX_MODULE_BYTES {
                return Err(VmError::Input(format!(
                    "--module {}: not a regular file of at most {} MiB",
                    module.display(),
                    MAX_MODULE_BYTES >> 20
                )));
            }
            let bytes = read_module(module)?;
            let theirs = vermagic(&bytes).ok_or_else(|| {
                VmError::Input(format!("--module {}: has no vermagic; not a kernel module", module.display()))
            })?;
            // The module's own name, not its file's: insmod loads it under this one.
            let name = modinfo(&bytes, "name").ok_or_else(|| {
                VmError::Input(format!(
                    "--module {}: has no name in its modinfo; not a kernel module",
                    module.display()
                ))
            })?;
            if replaced.contains(&name) {
                return Err(VmError::Input(format!("--module {}: a second module named {name}", module.display())));
            }
            if theirs.split_whitespace().next() != Some(release) {
                return Err(VmError::Input(format!(
                    "--module {}: built for kernel {theirs}, not for {release}",
                    module.display()
                )));
            }
            self.by_name.insert(name.clone(), module.clone());
            replaced.push(name);
        }
        Ok(replaced)
    }

    /// Appends `name`'s dependencies, then `name`, to `order` (each once).
    fn load_order(&self, name: &str, order: &mut Vec<String>, visiting: &mut Vec<String>) -> Result<(), VmError> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        if visiting.iter().any(|m| m == name) {
            return Err(VmError::Input(format!("modules depend on each other in a circle: {visiting:?}")));
        }
        let file =
            self.by_name.get(name).ok_or_else(|| VmError::Input(format!("module {name} is not in the package")))?;
        visiting.push(name.to_owned());
        for dependency in depends(&read_module(file)?) {
            self.load_order(&dependency, order, visiting)?;
        }
        visiting.pop();
        order.push(name.to_owned());
        Ok(())
    }
}

/// Whether `path` is an x86 kernel image: the boot protocol's `HdrS` at 0x202.
fn is_bzimage(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::Start(0x202)).and_then(|_| f.read_exact(&mut magic)))
        .is_ok_and(|()| &magic == b"HdrS")
}

/// `fuse` for `…/fuse.ko` or `…/fuse.ko.xz`; module names use `_` where files may use `-`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".ko").or_else(|| file.strip_suffix(".ko.xz"))?;
    Some(stem.replace('-', "_"))
}

/// A module file's bytes, decompressed when it is `.ko.xz` (busybox's insmod in the guest
/// need not read xz).
fn read_module(file: &Path) -> Result<Vec<u8>, VmError> {
    if file.extension().is_some_and(|e| e == "xz") {
        let output =
            std::process::Command::new("xz").args(["--decompress", "--stdout"]).arg(file).output().map_err(|e| {
                VmError::Tool { tool: "xz", detail: format!("cannot decompress {}: {e}", file.display()) }
            })?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(VmError::Tool { tool: "xz", detail: format!("-d {}: {said}", file.display()) });
        }
        Ok(output.stdout)
    } else {
        std::fs::read(file).map_err(VmError::io("cannot read", file))
    }
}

/// The module's `depends=` from its `.modinfo` strings (NUL-separated `key=value`).
fn depends(module: &[u8]) -> Vec<String> {
    modinfo(module, "depends")
        .map_or_else(Vec::new, |value| value.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect())
}

/// The module's `vermagic=` (`6.1.0-57-cloud-amd64 SMP mod_unload modversions`).
fn vermagic(module: &[u8]) -> Option<String> {
    modinfo(module, "vermagic")
}

/// One `key=value` of the module's `.modinfo` strings.
fn modinfo(module: &[u8], key: &str) -> Option<String> {
    let needle = format!("\0{key}=");
    let at = module.windows(needle.len()).position(|w| w == needle.as_bytes())?;
    let value = &module[at + needle.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    Some(String::from_utf8_lossy(&value[..end]).into_owned())
}

/// The largest `--module` read (Debian's largest modules are a few MiB).
const MAX_MODULE_BYTES: u64 = 64 << 20;

/// A `--module` must be an uncompressed `.ko` (its name comes from its modinfo).
fn check_module_file(module: &Path) -> Result<(), VmError> {
    if module.extension().is_some_and(|e| e == "ko") {
        Ok(())
    } else {
        Err(VmError::Input(format!("--module {}: not a kernel module file (NAME.ko)", module.display())))
    }
}

/// The module as an uncompressed file (itself, or decompressed beside it).
fn uncompressed(file: &Path, work: &Path) -> Result<PathBuf, VmError> {
    if file.extension().is_some_and(|e| e == "ko") {
        return Ok(file.to_owned());
    }
    let name = module_name(file).unwrap_or_default();
    let out = work.join(format!("{name}.ko"));
    std::fs::write(&out, read_module(file)?).map_err(VmError::io("cannot write", &out))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_from_the_modinfo_strings() {
        let module = b"\x7fELF...\0license=GPL\0depends=netfs,fscache\0vermagic=6.1\0";
        assert_eq!(depends(module), ["netfs", "fscache"]);
        assert!(depends(b"\0license=GPL\0depends=\0name=fuse\0").is_empty());
        assert!(depends(b"no modinfo at all").is_empty());
        assert_eq!(module_name(Path::new("/m/kernel/fs/fuse/virtio-fs.ko.xz")).as_deref(), Some("virtio_fs"));
        assert_eq!(module_name(Path::new("/m/modules.dep")), None);
    }

    /// A package tree where erofs needs two modules, one of which needs the other: they
    /// load dependencies first, each once.
    #[test]
    fn modules_load_after_what_they_depend_on_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, deps: &str| {
            std::fs::write(dir.path().join(format!("{name}.ko")), format!("\0depends={deps}\0")).unwrap();
        };
        write("erofs", "netfs,fscache");
        write("fscache", "netfs");
        write("netfs", "");
        write("fuse", "");
        let index = ModuleIndex::scan(dir.path()).unwrap();
        let mut order = Vec::new();
        for name in ["erofs", "fuse", "fscache"] {
            index.load_order(name, &mut order, &mut Vec::new()).unwrap();
        }
        assert_eq!(order, ["netfs", "fscache", "erofs", "fuse"]);
        write("netfs", "erofs");
        let err = ModuleIndex::scan(dir.path()).unwrap().load_order("erofs", &mut Vec::new(), &mut Vec::new());
        assert!(err.unwrap_err().to_string().contains("circle"));
    }

    /// A module given in place of the package's: loaded with the package's modules it
    /// depends on; refused, named, when built for another kernel or not a module at all.
    #[test]
    fn a_given_module_replaces_the_packaged_one_and_keeps_its_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        let package = dir.path().join("package");
        std::fs::create_dir(&package).unwrap();
        let module = |at: &Path, name: &str, deps: &str, release: &str| {
            let file = at.join(format!("{name}.ko"));
            std::fs::write(&file, format!("\0depends={deps}\0name={name}\0vermagic={release} SMP mod_unload\0"))
                .unwrap();
            file
        };
        module(&package, "erofs", "", "6.1.0-57-cloud-amd64");
        module(&package, "netfs", "", "6.1.0-57-cloud-amd64");
        module(&package, "fscache", "netfs", "6.1.0-57-cloud-amd64");
        let ours = module(dir.path(), "erofs", "fscache", "6.1.0-57-cloud-amd64");
        let mut index = ModuleIndex::scan(&package).unwrap();
        assert_eq!(index.replace("6.1.0-57-cloud-amd64", std::slice::from_ref(&ours)).unwrap(), ["erofs"]);
        let mut order = Vec::new();
        index.load_order("erofs", &mut order, &mut Vec::new()).unwrap();
        assert_eq!(order, ["netfs", "fscache", "erofs"]);
        assert_eq!(index.by_name["erofs"], ours);

        let other = module(dir.path(), "cachefiles", "", "6.12.118+deb12-cloud-amd64");
        let err = index.replace("6.1.0-57-cloud-amd64", &[other]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("built for kernel 6.12.118+deb12-cloud-amd64 SMP mod_unload, not for 6.1.0-57-cloud-amd64"),
            "{err}"
        );
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let err = index.replace("6.1.0-57-cloud-amd64", &[text]).unwrap_err();
        assert!(err.to_string().contains("not a kernel module file (NAME.ko)"), "{err}");
        let empty = dir.path().join("empty.ko");
        std::fs::write(&empty, "").unwrap();
        let err = index.replace("6.1.0-57-cloud-amd64", &[empty]).unwrap_err();
        assert!(err.to_string().contains("has no vermagic"), "{err}");
        // Named by its modinfo, not its file: a copy of cachefiles called erofs.ko is
        // cachefiles, and a second cachefiles is refused.
        let disguised = dir.path().join("disguise");
        std::fs::create_dir(&disguised).unwrap();
        let cachefiles = module(dir.path(), "cachefiles", "", "6.1.0-57-cloud-amd64");
        std::fs::copy(&cachefiles, disguised.join("erofs.ko")).unwrap();
        let mut index = ModuleIndex::scan(&package).unwrap();
        let err = index.replace("6.1.0-57-cloud-amd64", &[cachefiles, disguised.join("erofs.ko")]).unwrap_err();
        assert!(err.to_string().ends_with("erofs.ko: a second module named cachefiles"), "{err}");
        // A FIFO is refused by its type, before any read (which would block for ever).
        let fifo = dir.path().join("fifo.ko");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = index.replace("6.1.0-57-cloud-amd64", &[fifo]).unwrap_err();
        assert!(err.to_string().contains("not a regular file of at most 64 MiB"), "{err}");
        let huge = dir.path().join("huge.ko");
        std::fs::File::create(&huge).unwrap().set_len(8 << 30).unwrap();
        let err = index.replace("6.1.0-57-cloud-amd64", &[huge]).unwrap_err();
        assert!(err.to_string().contains("not a regular file of at most 64 MiB"), "{err}");
    }

    #[test]
    fn a_kernel_image_is_taken_bare_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bzImage");
        let mut bytes = b"MZ not a deb".to_vec();
        bytes.resize(0x202, 0);
        bytes.extend_from_slice(b"HdrS");
        std::fs::write(&image, &bytes).unwrap();
        let kernel = Kernel::prepare(&image, dir.path(), &[]).unwrap();
        assert_eq!((kernel.vmlinuz, kernel.release, kernel.modules.len()), (image.clone(), None, 0));
        let module = dir.path().join("erofs.ko");
        let err = Kernel::prepare(&image, dir.path(), &[module]).unwrap_err();
        assert!(err.to_string().contains("a bare kernel image has no modules to replace"), "{err}");
        // Neither a package nor an image (a sparse file of 1 GiB): refused at once, named.
        let huge = dir.path().join("huge.deb");
        std::fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
        let err = Kernel::prepare(&huge, dir.path(), &[]).unwrap_err();
        assert!(matches!(err, VmError::Input(_)), "{err:?}");
        assert!(err.to_string().contains("huge.deb: neither a Debian linux-image package nor"), "{err}");
        let err = Kernel::prepare(&dir.path().join("absent.deb"), dir.path(), &[]).unwrap_err();
        assert!(err.to_string().starts_with("--kernel "), "{err}");
    }
}
