//! Paths taken from a scenario must stay inside what they are relative to: the harness
//! writes and reads them as root, so `../../etc/x` in a scenario would otherwise reach
//! anywhere. Checked when the scenario is loaded (with the key's location) and again where
//! files are written (the real target's image builder), so no caller can skip the check.

use std::path::{Component, Path, PathBuf};

/// Why `path`, a file inside an instance (a `tree` key, `/` or relative), cannot be used.
pub fn instance_path_error(path: &str) -> Option<String> {
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Some("is empty".into());
    }
    if path.contains('\0') {
        return Some("contains a NUL byte".into());
    }
    relative.split('/').find_map(|component| match component {
        "" => Some("has an empty component (`//` or a trailing `/`)".to_owned()),
        "." | ".." => Some(format!("has a `{component}` component")),
        c if c.len() > 255 => Some("has a component longer than 255 bytes".to_owned()),
        _ => None,
    })
}

/// Why `path`, a host path relative to the scenario's root (`read_file`, `list_dir`,
/// `expect_mounted`, `start_reader`), cannot be used.
pub fn host_path_error(path: &str) -> Option<String> {
    if path.contains('\0') {
        return Some("contains a NUL byte".into());
    }
    if Path::new(path).is_absolute() {
        return Some("is absolute".into());
    }
    path.split('/').any(|c| c == "..").then(|| "has a `..` component".to_owned())
}

/// `path` (an instance path) joined onto `dir`, refused unless every component is a plain
/// name: the last check before a file is written.
pub fn join_inside(dir: &Path, path: &str) -> Result<PathBuf, String> {
    if let Some(why) = instance_path_error(path) {
        return Err(format!("file path {path:?} {why}; it must stay inside {}", dir.display()));
    }
    let relative = Path::new(path.trim_start_matches('/'));
    debug_assert!(relative.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("etc/os-release")]
    #[case("/etc/os-release")]
    #[case("a/b/c..d/.e")]
    fn plain_instance_paths_are_accepted(#[case] path: &str) {
        assert_eq!(instance_path_error(path), None);
        assert!(join_inside(Path::new("/r"), path).unwrap().starts_with("/r/"));
    }

    #[rstest::rstest]
    #[case("../../../../tmp/x/escape", "has a `..` component")]
    #[case("a/../../b", "has a `..` component")]
    #[case("./a", "has a `.` component")]
    #[case("a//b", "has an empty component (`//` or a trailing `/`)")]
    #[case("a/", "has an empty component (`//` or a trailing `/`)")]
    #[case("/", "is empty")]
    #[case("a\0b", "contains a NUL byte")]
    fn escaping_instance_paths_are_refused_with_the_reason(#[case] path: &str, #[case] why: &str) {
        assert_eq!(instance_path_error(path).as_deref(), Some(why));
        assert!(join_inside(Path::new("/r"), path).unwrap_err().contains(why));
    }

    #[rstest::rstest]
    #[case("/etc/passwd", Some("is absolute"))]
    #[case("mnt/../../x", Some("has a `..` component"))]
    #[case("mnt\0", Some("contains a NUL byte"))]
    #[case("mnt/d1/snap1/etc/os-release", None)]
    fn host_paths_stay_under_the_root(#[case] path: &str, #[case] why: Option<&str>) {
        assert_eq!(host_path_error(path).as_deref(), why);
    }
}
