//! The mounts of this process's namespace, from `/proc/self/mountinfo`.
//!
//! Mount state is read here, never by `stat`-ing a mountpoint: a `stat` on the mount of a
//! dead FUSE daemon blocks or fails, while mountinfo always answers.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The mountinfo of this process's mount namespace.
pub const PATH: &str = "/proc/self/mountinfo";

/// One line of mountinfo (`proc(5)`), the fields this project uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device minor number; for FUSE, the connection's name under `/sys/fs/fuse/connections`.
    pub minor: u32,
    /// Device major number.
    pub major: u32,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `fuse`, `fuse.nydusd`, `erofs`.
    pub fs_type: String,
    /// Mount source, unescaped.
    pub source: String,
}

impl Mount {
    /// Whether the kernel serves this mount through a FUSE connection.
    pub fn is_fuse(&self) -> bool {
        self.fs_type == "fuse" || self.fs_type.starts_with("fuse.")
    }
}

/// The mounts listed in a mountinfo text, in its order; a line that is not mountinfo is
/// skipped, since the kernel writes only well-formed ones.
pub fn parse(text: &str) -> impl Iterator<Item = Mount> + '_ {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount_point options [optional...] - fstype source super
    let mut fields = line.split(' ');
    let (_id, _parent, device, _root, mount_point) =
        (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let (major, minor) = device.split_once(':')?;
    let mut after_separator = fields.skip_while(|f| *f != "-").skip(1);
    let fs_type = after_separator.next()?;
    let source = after_separator.next()?;
    Some(Mount {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type: fs_type.to_owned(),
        source: unescape(source).to_string_lossy().into_owned(),
    })
}

/// Undoes the kernel's `\ooo` escapes (space, tab, newline and backslash are written so).
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// Every mount of this namespace.
pub fn read() -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string(PATH)?).collect())
}

/// Whether `path` (absolute, as mounted) is a mount point.
pub fn is_mounted(path: &Path) -> std::io::Result<bool> {
    Ok(read()?.iter().any(|m| m.mount_point == path))
}

/// The mounts at or under `root`, in mountinfo order; none when mountinfo is unreadable,
/// for the callers that only look for leftovers.
pub fn under(root: &Path) -> Vec<Mount> {
    read().unwrap_or_default().into_iter().filter(|m| m.mount_point.starts_with(root)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue
37 35 0:61 / /run/nydus/d1 rw,nosuid,nodev,relatime shared:40 - fuse.nydusd nydusd rw,user_id=0
38 35 0:62 / /a\\134b\\011c rw - erofs /img\\040x.erofs ro
not a mountinfo line
";

    #[test]
    fn fields_are_read_and_escapes_undone() {
        let mounts: Vec<Mount> = parse(SAMPLE).collect();
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        assert_eq!(mounts[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!((mounts[0].major, mounts[0].minor, mounts[0].fs_type.as_str()), (98, 0, "ext3"));
        assert_eq!(mounts[1].minor, 61);
        assert!(mounts[1].is_fuse() && !mounts[0].is_fuse());
        assert_eq!(mounts[2].mount_point, Path::new("/a\\b\tc"));
        assert_eq!(mounts[2].source, "/img x.erofs");
    }

    #[test]
    fn an_incomplete_escape_stays_literal() {
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\9zz"), "a\\9zz");
        assert_eq!(unescape("\\040"), " ");
    }

    #[test]
    fn the_root_is_always_mounted() {
        assert!(is_mounted(Path::new("/")).unwrap());
        assert!(!under(Path::new("/")).is_empty());
    }
}
