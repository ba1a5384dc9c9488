//! The build identity the mock reports, in `GET /api/v1/daemon` and in `--version`.
//! The two must agree: the snapshotter hot-upgrades every daemon whose reported
//! `git_commit` differs from `nydusd --version`'s `Git Commit:` line.

use nydusd_api::BuildTimeInfo;

/// The nydusd release whose behaviour this mock models (real sendfd/takeover, v2.3+).
pub const MODELLED_NYDUSD: &str = "v2.4.4";

/// The default build info; `git_commit` can be overridden to stand for another binary.
pub fn build_info(git_commit: Option<&str>) -> BuildTimeInfo {
    BuildTimeInfo {
        package_ver: format!("{MODELLED_NYDUSD}-mock-nydusd.{}", env!("CARGO_PKG_VERSION")),
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
        let info = build_info(None);
        assert_eq!(info.git_commit.len(), 40);
        let text = version_text(&info);
        assert!(text.starts_with("nydusd \rVersion: \tv2.4.4"));
        // Read back by the parser clients use, the text says what the API says.
        assert_eq!(nydusd_api::version_output::parse(&text), info);
    }
}
