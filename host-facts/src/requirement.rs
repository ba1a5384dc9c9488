//! What this host can do: the facts privileged tests and scenarios are gated on. Each check
//! answers with the reason it fails, so a skipped test can say exactly why.

use std::path::{Path, PathBuf};

/// A capability a test or scenario needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    /// Effective uid 0 (mounts, /dev/fuse).
    Root,
    /// `/dev/fuse` can be opened read-write.
    Fuse,
    /// The kernel knows the erofs filesystem.
    Erofs,
    /// `mkfs.erofs` is on PATH (Debian's erofs-utils).
    MkfsErofs,
    /// erofs over fscache in on-demand mode (`CONFIG_CACHEFILES_ONDEMAND` and
    /// `CONFIG_EROFS_FS_ONDEMAND`), probed with a mount, since `/dev/cachefiles` exists
    /// without it too.
    Cachefiles,
    /// `/dev/loop-control` can be opened: loop devices (erofs images before Linux 6.12).
    Loop,
}

impl Requirement {
    /// Every requirement, for listings.
    pub const ALL: [Requirement; 6] =
        [Self::Root, Self::Fuse, Self::Erofs, Self::MkfsErofs, Self::Cachefiles, Self::Loop];

    /// The name used in scenario files and test names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Fuse => "fuse",
            Self::Erofs => "erofs",
            Self::MkfsErofs => "mkfs-erofs",
            Self::Cachefiles => "cachefiles",
            Self::Loop => "loop",
        }
    }

    /// `Ok` when the host has it, otherwise why not.
    pub fn check(self) -> Result<(), String> {
        match self {
            Self::Root => {
                if nix::unistd::geteuid().is_root() {
                    Ok(())
                } else {
                    Err(format!("needs root (running as uid {})", nix::unistd::geteuid()))
                }
            }
            Self::Fuse => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
                .map(drop)
                .map_err(|e| format!("needs /dev/fuse ({e})")),
            Self::Erofs => {
                let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
                if filesystems.lines().any(|l| l.split_whitespace().last() == Some("erofs")) {
                    Ok(())
                } else {
                    Err("needs a kernel with erofs (not in /proc/filesystems)".into())
                }
            }
            Self::MkfsErofs => {
                if on_path("mkfs.erofs") {
                    Ok(())
                } else {
                    Err("needs mkfs.erofs on PATH (Debian: apt-get install erofs-utils)".into())
                }
            }
            Self::Cachefiles => {
                static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
                PROBED.get_or_init(probe_on_demand_fscache).clone()
            }
            Self::Loop => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/loop-control")
                .map(drop)
                .map_err(|e| format!("needs loop devices: /dev/loop-control ({e})")),
        }
    }
}

impl std::str::FromStr for Requirement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|r| r.name()).collect();
            format!("unknown requirement `{s}`, expected one of {}", names.join(", "))
        })
    }
}

/// Whether erofs mounts over fscache in on-demand mode here. `/dev/cachefiles` exists on
/// kernels without that mode too, so a mount answers: erofs with `fsid=` and no daemon
/// bound fails with ENOBUFS where the mode exists (with a daemon bound, with that daemon's
/// answer for an unknown fsid), and where it does not, erofs wants a block device. Probed once per
/// process: with a daemon bound, each probe is a request to it.
fn probe_on_demand_fscache() -> Result<(), String> {
    const WITHOUT: &str = "this kernel has no erofs over fscache in on-demand mode (CONFIG_CACHEFILES_ONDEMAND, \
                           CONFIG_EROFS_FS_ONDEMAND; ci/vm-modules.sh builds both for Debian's kernels)";
    if !Path::new("/dev/cachefiles").exists() {
        return Err(format!("{WITHOUT}: no /dev/cachefiles"));
    }
    // Checked first: a probe mount on a kernel whose erofs is an unloaded module would load
    // it, and the harness changes nothing on the host it did not create.
    Requirement::Erofs.check()?;
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to probe erofs over fscache (an erofs mount with fsid=)".into());
    }
    let dir = std::env::temp_dir().join(format!("host-facts-fscache-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot probe erofs over fscache: {}: {e}", dir.display()))?;
    // The source is a character device: without on-demand mode erofs ignores `fsid=` (it
    // only logs "fsid option not supported") and asks for a block device, ENOTBLK; with
    // it, the source is not looked at.
    let mounted = nix::mount::mount(
        Some("/dev/null"),
        &dir,
        Some("erofs"),
        nix::mount::MsFlags::MS_RDONLY,
        Some("fsid=host-facts-probe"),
    );
    let answer = match mounted {
        Ok(()) => {
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
            Ok(())
        }
        Err(errno @ (nix::Error::ENOTBLK | nix::Error::EINVAL)) => {
            Err(format!("{WITHOUT}: an erofs mount with fsid= wants a block device ({errno})"))
        }
        Err(nix::Error::ENODEV) => Err("needs a kernel with erofs (the probe mount says ENODEV)".into()),
        Err(errno @ (nix::Error::EPERM | nix::Error::EACCES)) => {
            Err(format!("cannot probe erofs over fscache: the mount is not allowed ({errno})"))
        }
        // ENOBUFS: no daemon bound; another errno: a bound daemon's answer.
        Err(_) => Ok(()),
    };
    let _ = std::fs::remove_dir(&dir);
    answer
}

/// The first unmet requirement's reason, if any.
pub fn unmet(requirements: &[Requirement]) -> Option<String> {
    requirements.iter().find_map(|r| r.check().err())
}

/// Whether an executable named `name` is on PATH.
pub fn on_path(name: &str) -> bool {
    find_on_path(name).is_some()
}

/// The first executable named `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// A real nydusd for the tests that compare against one: `$NYDUSD`, else `nydusd` on
/// PATH, else `~/.cargo/bin/nydusd` (where `cargo install nydus-rs --locked` puts it);
/// otherwise why there is none.
pub fn installed_nydusd() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NYDUSD") {
        return Ok(PathBuf::from(path));
    }
    // The path found, not the bare name: callers look beside it for nydus-image.
    if let Some(found) = find_on_path("nydusd") {
        return Ok(found);
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/nydusd"))
        .filter(|p| p.is_file())
        .ok_or_else(|| "needs a real nydusd: set NYDUSD, or `cargo install nydus-rs --locked` (needs cmake)".to_owned())
}

/// The environment variable naming a nydusd 2.4 built from upstream's source, the second
/// real peer of the `real24::` tests (crates.io has only 2.2, whose sendfd and takeover
/// are stubs).
pub const NYDUSD_2_4: &str = "NYDUSD_2_4";

/// The nydusd 2.4 named by `$NYDUSD_2_4`, or why there is none.
pub fn nydusd_2_4() -> Result<PathBuf, String> {
    match std::env::var_os(NYDUSD_2_4) {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => Err(format!("{NYDUSD_2_4}={} is not a file", Path::new(&path).display())),
        None => Err(format!(
            "needs a nydusd 2.4 built from upstream's source: set {NYDUSD_2_4} to it (README, \"A second real nydusd\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for r in Requirement::ALL {
            assert_eq!(r.name().parse::<Requirement>(), Ok(r));
        }
        let err = "gpu".parse::<Requirement>().unwrap_err();
        assert!(err.contains("expected one of root, fuse"), "{err}");
    }

    #[test]
    fn checks_agree_with_the_host() {
        assert_eq!(Requirement::Root.check().is_ok(), nix::unistd::geteuid().is_root());
        if !Path::new("/dev/cachefiles").exists() {
            let reason = Requirement::Cachefiles.check().unwrap_err();
            assert!(
                reason.contains("no erofs over fscache in on-demand mode") && reason.ends_with("no /dev/cachefiles")
            );
        }
        assert!(on_path("sh"));
        assert!(!on_path("surely-not-a-command-here"));
    }
}
