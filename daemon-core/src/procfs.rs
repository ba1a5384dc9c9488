//! Small readers of `/proc`.

use std::path::Path;

/// The one-letter state of `pid` from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), or `None`
/// when the process does not exist.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().next()?.chars().next()
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields after the command name start at field 3 (state); start time is field 22.
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The arguments of `pid` (`/proc/<pid>/cmdline`).
pub fn process_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Whether `path` is a mount point according to `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> std::io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points(&info).any(|mp| Path::new(&mp) == path))
}

/// The mount points listed in a mountinfo text, with octal escapes (`\040`) decoded.
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4).map(unescape))
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\' && i + 4 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 4]).ok().and_then(|d| u8::from_str_radix(d, 8).ok()))
            .flatten();
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_state_is_readable_and_a_missing_pid_is_none() {
        assert!(matches!(process_state(std::process::id()), Some('R' | 'S')));
        assert_eq!(process_state(u32::MAX), None);
    }

    #[test]
    fn start_time_and_cmdline_of_ourselves() {
        let me = std::process::id();
        let t = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(t), "stable for one process");
        assert!(process_cmdline(me).unwrap()[0].contains("daemon_core"));
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let info = "36 35 98:0 / /mnt/with\\040space rw - ext3 /dev/root rw\n37 35 0:1 / / rw - tmpfs x rw\n";
        let points: Vec<String> = mount_points(info).collect();
        assert_eq!(points, vec!["/mnt/with space".to_owned(), "/".to_owned()]);
    }
}
