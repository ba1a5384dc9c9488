//! Command lines of a daemon the recorder starts: the socket flags it moves so that the
//! recorder stands where clients (and the daemon) expect the sockets.

use std::path::{Path, PathBuf};

/// `argv` with its `--apisock` (`-A`, `--apisock=`) pointed at `moved`, and the path it
/// named; `None` when it names none.
pub fn move_apisock(argv: &[std::ffi::OsString], moved: &Path) -> Option<(Vec<std::ffi::OsString>, PathBuf)> {
    move_path_flag(argv, &["--apisock", "-A"], moved)
}

/// `argv` with the first path flag spelled one of `names` (`NAME PATH` or, for a long
/// name, `NAME=PATH`) pointed at `moved`, and the path it named; `None` when none is there.
pub fn move_path_flag(
    argv: &[std::ffi::OsString],
    names: &[&str],
    moved: &Path,
) -> Option<(Vec<std::ffi::OsString>, PathBuf)> {
    let mut out = Vec::with_capacity(argv.len());
    let mut original = None;
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let joined = names.iter().filter(|n| n.starts_with("--")).find_map(|n| text.strip_prefix(&format!("{n}=")));
        if original.is_some() {
            out.push(arg.clone());
        } else if names.contains(&text.as_ref()) {
            original = Some(PathBuf::from(args.next()?));
            out.push(arg.clone());
            out.push(moved.as_os_str().to_owned());
        } else if let Some(path) = joined {
            original = Some(PathBuf::from(path));
            let name = &text[..text.len() - path.len()];
            out.push(format!("{name}{}", moved.display()).into());
        } else {
            out.push(arg.clone());
        }
    }
    original.map(|o| (out, o))
}

/// `argv` with its `--supervisor` (`--supervisor=`) pointed at `moved`, and the path it
/// named; `None` when it names none.
pub fn move_supervisor(argv: &[std::ffi::OsString], moved: &Path) -> Option<(Vec<std::ffi::OsString>, PathBuf)> {
    move_path_flag(argv, &["--supervisor"], moved)
}
