//! Sizes and counts from scenario files, bounded when the file is read: a value past its
//! bound is refused at its `file:line:column` instead of becoming an allocation that
//! aborts the harness (a `padding` of 1 TiB) or overflows (one of 2^64 - 1).

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

/// An integer from 0 to `MAX`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AtMost<const MAX: u64>(u64);

impl<const MAX: u64> AtMost<MAX> {
    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The value as a length in memory (every bound here fits).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<const MAX: u64> std::fmt::Display for AtMost<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, const MAX: u64> Deserialize<'de> for AtMost<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if value > MAX {
            return Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(value),
                &format!("at most {MAX}").as_str(),
            ));
        }
        Ok(Self(value))
    }
}

impl<const MAX: u64> schemars::JsonSchema for AtMost<MAX> {
    fn schema_name() -> Cow<'static, str> {
        format!("AtMost{MAX}").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 0, "maximum": MAX })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// 16 MiB: far beyond any state blob a test needs, far below what hurts the machine.
pub const MAX_PADDING: u64 = 16 * 1024 * 1024;
/// 256 MiB: the largest file a scenario tree may hold.
pub const MAX_FILE_SIZE: u64 = 256 * 1024 * 1024;
/// The most mounts one `mount_concurrently` may race.
pub const MAX_CONCURRENT: u64 = 1024;
/// The most retries of a failed scenario (`retries`, `--retries`): past a few, a scenario
/// that fails that often is failing, and each retry is a whole run.
pub const MAX_RETRIES: u64 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_bound_are_refused_with_the_bound() {
        let ok: AtMost<10> = serde_json::from_str("10").unwrap();
        assert_eq!(ok.get(), 10);
        let err = serde_json::from_str::<AtMost<10>>("11").unwrap_err().to_string();
        assert!(err.contains("invalid value: integer `11`, expected at most 10"), "{err}");
        let err = serde_json::from_str::<AtMost<10>>("18446744073709551615").unwrap_err().to_string();
        assert!(err.contains("expected at most 10"), "{err}");
    }
}
