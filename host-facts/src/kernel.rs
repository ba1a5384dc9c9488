//! The host's name and running kernel, as reports name them.

/// The host's name (`uname -n`) and kernel release (`uname -r`); `localhost` and
/// `unknown` when uname fails.
pub fn host_and_release() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (u.nodename().to_string_lossy().into_owned(), u.release().to_string_lossy().into_owned()),
        Err(_) => ("localhost".into(), "unknown".into()),
    }
}

/// The running kernel's release (`uname -r`), or `unknown`.
pub fn release() -> String {
    host_and_release().1
}

/// Which builds of the modules behind erofs over fscache the kernel runs, for reports:
/// `cachefiles build 3f2a… (out of tree), erofs build 9c01…` (the module's GNU build id,
/// and whether it was loaded from outside the kernel's tree, as a rebuild with on-demand
/// mode is); a module built into the kernel says so. Read from `/sys/module` only: no
/// probe (which would be a mount), no module loaded. `None` when neither is present.
pub fn fscache_modules() -> Option<String> {
    fscache_modules_in(std::path::Path::new("/sys/module"))
}

fn fscache_modules_in(sys_module: &std::path::Path) -> Option<String> {
    let describe = |name: &str| -> Option<String> {
        let dir = sys_module.join(name);
        if !dir.is_dir() {
            return None;
        }
        // Only a loaded module has an init state; a built-in one may still have a directory.
        if !dir.join("initstate").exists() {
            return Some(format!("{name} built in"));
        }
        let build = std::fs::read(dir.join("notes/.note.gnu.build-id"))
            .ok()
            .and_then(|note| build_id(&note))
            .map_or_else(|| "of unknown build".to_owned(), |id| format!("build {id}"));
        // `O`: loaded from outside the kernel's tree.
        let taint = std::fs::read_to_string(dir.join("taint")).unwrap_or_default();
        let origin = if taint.contains('O') { " (out of tree)" } else { "" };
        Some(format!("{name} {build}{origin}"))
    };
    let found: Vec<String> = ["cachefiles", "erofs"].iter().filter_map(|m| describe(m)).collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// The first 16 hex digits of the descriptor of an ELF note (`namesz`, `descsz`, `type`,
/// the name padded to 4 bytes, then the descriptor: the build id).
fn build_id(note: &[u8]) -> Option<String> {
    let word = |at: usize| Some(u32::from_ne_bytes(note.get(at..at + 4)?.try_into().ok()?) as usize);
    let (name_size, desc_size) = (word(0)?, word(4)?);
    let start = 12 + name_size.checked_add(3)? / 4 * 4;
    let desc = note.get(start..start.checked_add(desc_size)?)?;
    let hex: String = desc.iter().take(8).map(|b| format!("{b:02x}")).collect();
    (!hex.is_empty()).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_named_with_their_build_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(fscache_modules_in(dir.path()), None);
        let cachefiles = dir.path().join("cachefiles");
        std::fs::create_dir_all(cachefiles.join("notes")).unwrap();
        std::fs::write(cachefiles.join("initstate"), "live\n").unwrap();
        std::fs::write(cachefiles.join("taint"), "OE\n").unwrap();
        let mut note = Vec::new();
        for word in [4u32, 20, 3] {
            note.extend_from_slice(&word.to_ne_bytes());
        }
        note.extend_from_slice(b"GNU\0");
        note.extend((0..20u8).map(|b| b.wrapping_mul(17)));
        std::fs::write(cachefiles.join("notes/.note.gnu.build-id"), &note).unwrap();
        std::fs::create_dir(dir.path().join("erofs")).unwrap();
        assert_eq!(
            fscache_modules_in(dir.path()).as_deref(),
            Some("cachefiles build 0011223344556677 (out of tree), erofs built in")
        );
        std::fs::write(cachefiles.join("taint"), "\n").unwrap();
        std::fs::write(cachefiles.join("notes/.note.gnu.build-id"), &note[..14]).unwrap();
        assert_eq!(fscache_modules_in(dir.path()).as_deref(), Some("cachefiles of unknown build, erofs built in"));
        assert_eq!(build_id(&[0xff; 12]), None, "sizes past the note");
    }
}
