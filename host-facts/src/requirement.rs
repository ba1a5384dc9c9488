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

/// Whether erofs mounts over fscache in on-demand mode here: the running kernel has the
/// functions only on-demand builds of cachefiles and erofs have. `/dev/cachefiles` exists
/// without them too, and a probe mount (erofs with `fsid=`) would be a request to
/// whichever daemon is bound, which may never answer; the kernel's symbol table is only
/// read. Function names are listed by `/proc/kallsyms` to every user (addresses hidden).
fn probe_on_demand_fscache() -> Result<(), String> {
    const WITHOUT: &str = "this kernel has no erofs over fscache in on-demand mode (CONFIG_CACHEFILES_ONDEMAND, \
                           CONFIG_EROFS_FS_ONDEMAND; ci/vm-modules.sh builds both for Debian's kernels)";
    if !Path::new("/dev/cachefiles").exists() {
        return Err(format!("{WITHOUT}: no /dev/cachefiles"));
    }
    let symbols = std::fs::File::open("/proc/kallsyms")
        .map_err(|e| format!("cannot tell whether erofs over fscache has on-demand mode: /proc/kallsyms: {e}"))?;
    on_demand_in(std::io::BufReader::new(symbols)).map_err(|missing| format!("{WITHOUT}: the kernel lacks {missing}"))
}

/// The functions of on-demand mode, and what their absence means.
const ON_DEMAND_FUNCTIONS: [(&str, &str); 2] = [
    ("cachefiles_ondemand_daemon_read", "cachefiles' on-demand reads"),
    ("erofs_fscache_register_fs", "erofs over fscache"),
];

/// `Ok` when the symbol table lists every function of [`ON_DEMAND_FUNCTIONS`], else what
/// is missing. Lines are `address type name [module]`.
fn on_demand_in(symbols: impl std::io::BufRead) -> Result<(), String> {
    let mut found = [false; ON_DEMAND_FUNCTIONS.len()];
    for line in symbols.split(b'\n').map_while(Result::ok) {
        let Some(name) = line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty()).nth(2) else { continue };
        if let Some(i) = ON_DEMAND_FUNCTIONS.iter().position(|(f, _)| f.as_bytes() == name) {
            found[i] = true;
        }
    }
    let missing: Vec<&str> =
        ON_DEMAND_FUNCTIONS.iter().zip(found).filter(|(_, found)| !found).map(|((_, what), _)| *what).collect();
    if missing.is_empty() { Ok(()) } else { Err(missing.join(" and ")) }
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
    fn on_demand_mode_is_read_from_the_symbol_table() {
        let both = "0000000000000000 T cachefiles_ondemand_daemon_read\t[cachefiles]\n\
                    0000000000000000 t erofs_fscache_register_fs\t[erofs]\n";
        assert_eq!(on_demand_in(both.as_bytes()), Ok(()));
        let stock = "0000000000000000 T cachefiles_daemon_bind\t[cachefiles]\n\
                     0000000000000000 T cachefiles_ondemand_daemon_read_x\n\
                     0000000000000000 T erofs_fscache_register_fs\n";
        assert_eq!(on_demand_in(stock.as_bytes()), Err("cachefiles' on-demand reads".to_owned()));
        assert_eq!(
            on_demand_in(&b"\xff\xfe garbage\n\n"[..]),
            Err("cachefiles' on-demand reads and erofs over fscache".to_owned())
        );
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
