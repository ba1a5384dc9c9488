//! nydusd's `--failover-policy`: what a daemon that takes a FUSE connection over does about
//! the requests its predecessor had read and left unanswered. Named for what it governs:
//! the manager's own failover (a recovery policy) is another thing.

use serde::{Deserialize, Serialize};

/// nydusd's `--failover-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum PendingRequestPolicy {
    /// Leave them: a request the old daemon had read stays unanswered.
    None,
    /// Ask the kernel to queue them again (FUSE_NOTIFY_RESEND, Linux 6.9, else the
    /// connection's sysfs `resend` file); nydusd's default.
    Resend,
    /// Ask the kernel to end them (the connection's sysfs `flush` file, which mainline
    /// kernels do not have).
    Flush,
}

impl PendingRequestPolicy {
    /// The command-line flag.
    pub const FLAG: &'static str = "--failover-policy";

    /// As the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Resend => "resend",
            Self::Flush => "flush",
        }
    }

    /// From the command line's spelling.
    pub fn parse(flag: &str) -> Option<Self> {
        match flag {
            "none" => Some(Self::None),
            "resend" => Some(Self::Resend),
            "flush" => Some(Self::Flush),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spelling_reads_back() {
        for policy in [PendingRequestPolicy::None, PendingRequestPolicy::Resend, PendingRequestPolicy::Flush] {
            assert_eq!(PendingRequestPolicy::parse(policy.as_str()), Some(policy));
            assert_eq!(serde_json::to_string(&policy).unwrap(), format!("\"{}\"", policy.as_str()));
        }
        assert_eq!(PendingRequestPolicy::parse("Resend"), None);
    }
}
