//! The build identity the mock reports, in `GET /api/v1/daemon` and in `--version`.
//! The two must agree: the snapshotter hot-upgrades every daemon whose reported
//! `git_commit` differs from `nydusd --version`'s `Git Commit:` line.

use nydusd_api::BuildTimeInfo;

use crate::version::NydusdVersion;

/// The build info of the mock standing for `version`; `git_commit` can be overridden to
/// stand for another binary. 2.2 from crates.io knows no git metadata: `unknown`.
pub fn build_info(version: NydusdVersion, git_commit: Option<&str>) -> BuildTimeInfo {
    let default_commit = || if version == NydusdVersion::V2_2 { "unknown".to_owned() } else { default_commit() };
    BuildTimeInfo {
        package_ver: version.package_ver(),
        git_commit: git_commit.map(str::to_owned).unwrap_or_else(default_commit),
        build_time: "1970-01-01T00:00:00.000000000Z".to_owned(),
        profile: if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned(),
        rustc: "mock-nydusd".to_owned(),
    }
}

/// A 40-hex-digit id derived from the crate version, so two builds of the same version agree.
fn default_commit() -> String {
    let seed = concat!("mock-nydusd ", env!("CARGO_PKG_VERSION"));
    let mut out = String::with_capacity(40);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    while out.len() < 40 {
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

/// `nydusd --version` output, byte for byte (note the carriage return after `nydusd `).
pub fn version_text(info: &BuildTimeInfo) -> String {
    format!(
        "nydusd \rVersion: \t{}\nGit Commit: \t{}\nBuild Time: \t{}\nProfile: \t{}\nRustc: \t\t{}\n\n",
        info.package_ver, info.git_commit, info.build_time, info.profile, info.rustc
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_carries_the_same_commit_as_the_api() {
        let info = build_info(NydusdVersion::V2_4, None);
        assert_eq!(info.git_commit.len(), 40);
        let text = version_text(&info);
        assert!(text.starts_with("nydusd \rVersion: \tv2.4.4"));
        // Read back by the parser clients use, the text says what the API says.
        assert_eq!(nydusd_api::version_output::parse(&text), info);
        let old = build_info(NydusdVersion::V2_2, None);
        assert_eq!((old.package_ver.as_str(), old.git_commit.as_str()), ("unknown", "unknown"));
        assert!(version_text(&old).starts_with("nydusd \rVersion: \tunknown\nGit Commit: \tunknown\n"));
    }
}
