//! A process as `/proc/<pid>` shows it.

/// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and
/// may itself contain spaces or parentheses. The first one is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    stat_fields_at(&std::path::Path::new("/proc").join(pid.to_string()))
}

/// `stat_fields` of the process or thread directory `dir` (`/proc/<pid>`, or
/// `/proc/<pid>/task/<tid>`).
fn stat_fields_at(dir: &std::path::Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, ...), or `None` when the process does
/// not exist.
pub fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// Whether every thread of `pid` is stopped (`T`): `state` shows the main thread only, and
/// a SIGSTOP reaches the threads one by one, so a FUSE worker may still take a request
/// after the main thread stopped. `None` when the process does not exist.
pub fn all_threads_stopped(pid: u32) -> Option<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut any = false;
    for task in tasks.flatten() {
        let state = stat_fields_at(&task.path())?.first()?.chars().next()?;
        if state != 'T' && state != 't' {
            return Some(false);
        }
        any = true;
    }
    Some(any)
}

/// The start time of `pid` in clock ticks since boot (stat field 22): with the pid it
/// names one process, where a pid alone may have been recycled.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// The parent of `pid` (stat field 4).
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(4 - 3)?.parse().ok()
}

/// The processes whose parent is `pid`, by a walk of `/proc`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent(*p) == Some(pid))
        .collect()
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
    fn a_child_names_its_parent_and_is_among_its_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert_eq!(parent(child.id()), Some(std::process::id()));
        assert!(children(std::process::id()).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent(child.id()), None, "a reaped child has no /proc entry");
    }

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

    #[test]
    fn a_process_is_stopped_once_every_thread_is() {
        assert_eq!(all_threads_stopped(std::process::id()), Some(false), "this test runs");
        assert_eq!(all_threads_stopped(u32::MAX), None);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while all_threads_stopped(child.id()) != Some(true) {
            assert!(std::time::Instant::now() < deadline, "never seen stopped");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
