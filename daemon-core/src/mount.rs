//! Host mounts: waiting for a FUSE mountpoint to go away, lazy clean-up of a dead daemon's
//! mount, and erofs mounts, both over fscache (`snapshotter-lifecycle.md` §5.1) and
//! file-backed (an image file as the mount source, Linux 6.12+).
//!
//! Mount state is read from `/proc/self/mountinfo`, never by `stat`-ing the mountpoint:
//! a dead FUSE mount answers `stat` with ENOTCONN, and a live one being taken over can
//! block the caller (upstream's `IsMountpoint` stats, and errors on dead mounts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use sha2::Digest;

use crate::wait::{Backoff, Timeouts};
use host_facts::Requirement;

/// Why a mount operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The kernel cannot do erofs over fscache on demand.
    #[error("cannot mount erofs over fscache at {}: {reason}", mountpoint.display())]
    FscacheUnsupported {
        /// Target.
        mountpoint: PathBuf,
        /// What the host lacks.
        reason: String,
    },
    /// mount(2) failed.
    #[error("mount {source_desc} at {}: {errno}{hint}", mountpoint.display())]
    Mount {
        /// What was mounted.
        source_desc: String,
        /// Target.
        mountpoint: PathBuf,
        /// The error.
        errno: nix::Error,
        /// Extra advice, possibly empty.
        hint: &'static str,
    },
    /// umount(2) failed.
    #[error("umount {}: {errno}", mountpoint.display())]
    Umount {
        /// Target.
        mountpoint: PathBuf,
        /// The error.
        errno: nix::Error,
    },
    /// The path is not a mountpoint.
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    /// Still mounted at the deadline.
    #[error("{} is still mounted after {after:?}", mountpoint.display())]
    StillMounted {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The deadline.
        after: Duration,
    },
    /// /proc/self/mountinfo could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
}

/// The fscache id of a snapshot: hex SHA-256 of `nydus-snapshot-<id>`.
pub fn fscache_id(snapshot_id: &str) -> String {
    let digest = sha2::Sha256::digest(format!("nydus-snapshot-{snapshot_id}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// erofs mount data for an fscache mount: `domain_id=` only when it differs from the fsid.
pub fn fscache_mount_options(domain_id: &str, fscache_id: &str) -> String {
    if !domain_id.is_empty() && domain_id != fscache_id {
        format!("domain_id={domain_id},fsid={fscache_id}")
    } else {
        format!("fsid={fscache_id}")
    }
}

/// Whether `path` (absolute, as mounted) appears in `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> Result<bool, MountError> {
    host_facts::mountinfo::is_mounted(path).map_err(MountError::MountInfo)
}

/// Mounts erofs over fscache (`fsid`, optional `domain_id`). A host without on-demand
/// fscache gets [`MountError::FscacheUnsupported`] before any mount(2); EBUSY means the
/// instance is already mounted there and counts as success, as upstream.
pub fn mount_erofs_fscache(domain_id: &str, fscache_id: &str, mountpoint: &Path) -> Result<(), MountError> {
    if let Err(reason) = Requirement::Cachefiles.check() {
        return Err(MountError::FscacheUnsupported { mountpoint: mountpoint.to_owned(), reason });
    }
    let options = fscache_mount_options(domain_id, fscache_id);
    match nix::mount::mount(Some("erofs"), mountpoint, Some("erofs"), MsFlags::empty(), Some(options.as_str())) {
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(errno) => Err(MountError::Mount {
            source_desc: format!("erofs ({options})"),
            mountpoint: mountpoint.to_owned(),
            errno,
            hint: if errno == nix::Error::EINVAL && options.contains("domain_id") {
                " (erofs domain_id needs Linux 6.1 or later)"
            } else {
                ""
            },
        }),
    }
}

/// How an erofs image file was mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageBacking {
    /// From the file itself (Linux 6.12 and later).
    File,
    /// Through this loop device, which detaches itself at umount.
    Loop(PathBuf),
}

/// Mounts the erofs image file `image` read-only at `mountpoint`: from the file where the
/// kernel can (file-backed erofs, 6.12 and later), else through a loop device (ENOTBLK:
/// the kernel wants a block device; 6.12 also says so for an image on tmpfs), as
/// nydus-snapshotter's tarfs mode does.
pub fn mount_erofs_image(image: &Path, mountpoint: &Path) -> Result<ImageBacking, MountError> {
    let mount =
        |source: &Path| nix::mount::mount(Some(source), mountpoint, Some("erofs"), MsFlags::MS_RDONLY, None::<&str>);
    match mount(image) {
        Ok(()) => Ok(ImageBacking::File),
        Err(nix::Error::ENOTBLK) => mount_erofs_image_on_loop(image, mountpoint),
        Err(errno) => Err(MountError::Mount {
            source_desc: format!("erofs image {}", image.display()),
            mountpoint: mountpoint.to_owned(),
            errno,
            hint: "",
        }),
    }
}

/// Mounts the erofs image file `image` read-only at `mountpoint` through a loop device,
/// which the kernel detaches at umount.
pub fn mount_erofs_image_on_loop(image: &Path, mountpoint: &Path) -> Result<ImageBacking, MountError> {
    let device = crate::loop_device::attach_read_only(image).map_err(|e| MountError::Mount {
        source_desc: format!("erofs image {} (the kernel needs a loop device for it: {e})", image.display()),
        mountpoint: mountpoint.to_owned(),
        errno: e.raw_os_error().map_or(nix::Error::EIO, nix::Error::from_raw),
        hint: "",
    })?;
    nix::mount::mount(Some(device.path()), mountpoint, Some("erofs"), MsFlags::MS_RDONLY, None::<&str>).map_err(
        |errno| MountError::Mount {
            source_desc: format!("erofs image {} on {}", image.display(), device.path().display()),
            mountpoint: mountpoint.to_owned(),
            errno,
            hint: "",
        },
    )?;
    // The mount holds the device now; dropping ours lets autoclear detach it at umount.
    Ok(ImageBacking::Loop(device.path().to_owned()))
}

/// umount(2) without flags; [`MountError::NotMounted`] when nothing is mounted there.
pub fn umount(mountpoint: &Path) -> Result<(), MountError> {
    if !is_mounted(mountpoint)? {
        return Err(MountError::NotMounted(mountpoint.to_owned()));
    }
    nix::mount::umount2(mountpoint, MntFlags::empty())
        .map_err(|errno| MountError::Umount { mountpoint: mountpoint.to_owned(), errno })
}

/// Detaches whatever is mounted at `mountpoint` (a dead daemon's FUSE mount, which a
/// plain umount may refuse while files are open); nothing mounted is fine.
pub fn umount_lazy(mountpoint: &Path) -> Result<(), MountError> {
    if !is_mounted(mountpoint)? {
        return Ok(());
    }
    match nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) => Ok(()),
        Err(errno) => Err(MountError::Umount { mountpoint: mountpoint.to_owned(), errno }),
    }
}

/// Aborts the kernel connections of the FUSE mounts at or under `root` (every FUSE
/// connection when `root` is `/`), so nothing blocked on a dead daemon stays blocked.
/// Mounts fusectl first if needed; best effort.
pub fn abort_fuse_connections_under(root: &Path) {
    let minors: Vec<u32> =
        host_facts::mountinfo::under(root).into_iter().filter(|m| m.is_fuse()).map(|m| m.minor).collect();
    if minors.is_empty() {
        return;
    }
    let connections = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(connections).map(|mut d| d.next().is_none()).unwrap_or(true) {
        let _ = nix::mount::mount(Some("fusectl"), connections, Some("fusectl"), MsFlags::empty(), None::<&str>);
    }
    for minor in minors {
        let _ = std::fs::write(connections.join(minor.to_string()).join("abort"), "1");
    }
}

/// Waits until nothing is mounted at `mountpoint`, up to `within`.
pub async fn wait_until_unmounted(mountpoint: &Path, timeouts: &Timeouts, within: Duration) -> Result<(), MountError> {
    let mut backoff = Backoff::new(timeouts, within);
    loop {
        if !is_mounted(mountpoint)? {
            return Ok(());
        }
        if !backoff.wait().await {
            return Err(MountError::StillMounted { mountpoint: mountpoint.to_owned(), after: within });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fscache_ids_and_options_match_upstream() {
        // sha256("nydus-snapshot-1"), as digest.FromString(...).Hex() computes it.
        let id = fscache_id("1");
        assert_eq!(id, "fe02a8c41f12241d7e6487850b5450e6cab5aff22ed369d1dd02f521f79f6780");
        assert_eq!(fscache_mount_options("", &id), format!("fsid={id}"));
        assert_eq!(fscache_mount_options(&id, &id), format!("fsid={id}"));
        assert_eq!(fscache_mount_options("d", &id), format!("domain_id=d,fsid={id}"));
    }

    #[test]
    fn fscache_mounts_are_refused_before_mount_2_exactly_when_the_host_lacks_fscache() {
        let dir = tempfile::tempdir().unwrap();
        // No nydusd serves this fsid, so a host with fscache fails in the kernel instead.
        let result = mount_erofs_fscache("", &fscache_id("1"), dir.path());
        let refused_early = matches!(result, Err(MountError::FscacheUnsupported { .. }));
        assert_eq!(refused_early, Requirement::Cachefiles.check().is_err(), "{result:?}");
        if let Err(MountError::FscacheUnsupported { reason, .. }) = &result {
            assert!(reason.contains("no erofs over fscache in on-demand mode"), "{reason}");
        }
        assert!(!is_mounted(dir.path()).unwrap());
    }

    #[test]
    fn unmounted_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()).unwrap());
        assert!(matches!(umount(dir.path()), Err(MountError::NotMounted(_))));
        umount_lazy(dir.path()).unwrap();
    }
}
