//! Which nydusd release the mock behaves as (`--mock-nydusd-version`, default 2.4): the
//! two a user meets, nydusd 2.2 (crates.io's `nydus-rs 2.2.0`, the only build there) and
//! 2.4 (upstream's current release line). `nydusd-api.md` §7 lists what differs; this
//! module is where each difference the mock models is decided.

/// The version of the nydusd that the mock stands in for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum NydusdVersion {
    /// nydus-rs 2.2.0 from crates.io: sendfd and takeover are stubs (no state or fd is ever
    /// handed over), no `/api/v1/config`, `--failover-policy none` refused, build info
    /// `unknown`, configurations reported in 2.2's shape.
    #[value(name = "2.2")]
    #[serde(rename = "2.2")]
    V2_2,
    /// nydusd 2.4 (v2.4.4): real sendfd/takeover through the supervisor, whose state blob
    /// is bounded by versionize's limits; `/api/v1/config`; configurations in 2.4's shape.
    #[default]
    #[value(name = "2.4")]
    #[serde(rename = "2.4")]
    V2_4,
}

/// versionize 0.2's bound on every string of a state record (`MAX_STRING_LEN`): nydusd
/// 2.4 fails the sendfd of a mount whose configuration, source or mountpoint is longer.
/// Probed on v2.4.4-8-g34e6071e: a 16 384-byte configuration is saved, and one of 16 385
/// bytes fails with `StringLength(16385)`. The mock switches at the same padding.
pub const MAX_STATE_STRING: usize = 16 * 1024;

impl NydusdVersion {
    /// The version as the flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2_2 => "2.2",
            Self::V2_4 => "2.4",
        }
    }

    /// `package_ver` of the build the mock reports. The crates.io build of 2.2 knows no
    /// git metadata and says `unknown` (`real-nydusd-2.2.md`).
    pub fn package_ver(self) -> String {
        match self {
            Self::V2_2 => "unknown".into(),
            Self::V2_4 => format!("v2.4.4-mock-nydusd.{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Whether sendfd and takeover really hand the state and the FUSE fd over (v2.3+);
    /// 2.2's return 204 without touching the supervisor socket.
    pub fn hands_over(self) -> bool {
        self == Self::V2_4
    }

    /// Whether `/api/v1/config` exists (v2.4.1+); before, it is a 404 `NoRoute`.
    pub fn has_config_route(self) -> bool {
        self == Self::V2_4
    }

    /// Whether `--failover-policy none` is accepted (v2.3.7+); 2.2 exits 2 on it.
    pub fn accepts_failover_policy_none(self) -> bool {
        self == Self::V2_4
    }
}

/// The strings of a saved state in the order nydusd serialises them (mountpoint, then the
/// mount command's source, config and mountpoint and its prefetch files; for fscache
/// entries the key and the JSON), and the error nydusd 2.4's sendfd answers with for the
/// first one past [`MAX_STATE_STRING`]; `None` when the state fits.
pub fn state_too_large(strings: impl IntoIterator<Item = usize>) -> Option<String> {
    let length = strings.into_iter().find(|len| *len > MAX_STATE_STRING)?;
    Some(format!(
        r#"Upgrade(DaemonAbnormal(UpgradeManager("Serialize(Custom {{ kind: Other, error: \"Failed to save snapshot: Versionize(StringLength({length}))\" }})")))"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_past_the_limit_fails_like_nydusd_2_4() {
        assert_eq!(state_too_large([10, MAX_STATE_STRING, 3]), None);
        // The body nydusd 2.4 sent for a 20 302-byte configuration (the 2.4 fidelity issue).
        let message = state_too_large([5, 20302, 30000]).unwrap();
        let body = serde_json::json!({ "code": "UNDEFINED", "message": message }).to_string();
        assert_eq!(
            body,
            r#"{"code":"UNDEFINED","message":"Upgrade(DaemonAbnormal(UpgradeManager(\"Serialize(Custom { kind: Other, error: \\\"Failed to save snapshot: Versionize(StringLength(20302))\\\" })\")))"}"#
        );
    }
}
