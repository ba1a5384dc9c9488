//! What `nydusd --version` prints: five `Label: \tvalue` lines, the first behind the
//! program's name and a carriage return (`nydusd \rVersion: \tunknown`), then a blank
//! line. The snapshotter reads the commit from it to decide a hot upgrade; the harness
//! reads the version to gate scenarios.

use crate::BuildTimeInfo;

/// The fields of a `--version` text; a label that is missing leaves its field empty.
pub fn parse(text: &str) -> BuildTimeInfo {
    let field = |label: &str| {
        text.lines()
            .find_map(|line| line.split_once(label).map(|(_, value)| value.trim().to_owned()))
            .unwrap_or_default()
    };
    BuildTimeInfo {
        package_ver: field("Version:"),
        git_commit: field("Git Commit:"),
        build_time: field("Build Time:"),
        profile: field("Profile:"),
        rustc: field("Rustc:"),
    }
}
