//! A process as `/proc/<pid>` shows it.

/// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and
/// may itself contain spaces or parentheses. The first one is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, ...), or `None` when the process does
/// not exist.
pub fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The start time of `pid` in clock ticks since boot (stat field 22): with the pid it
/// names one process, where a pid alone may have been recycled.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// The arguments of `pid` (`/proc/<pid>/cmdline`).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_state_is_readable_and_a_missing_pid_is_none() {
        assert!(matches!(state(std::process::id()), Some('R' | 'S')));
        assert_eq!(state(u32::MAX), None);
    }

    #[test]
    fn start_time_and_cmdline_of_ourselves() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(t), "stable for one process");
        assert!(cmdline(me).unwrap()[0].contains("host_facts"));
        assert_eq!(start_time(u32::MAX), None);
    }
}
