//! An error as nydusd reports it: the text of its Rust `Debug` form (`Os { code: 98, kind:
//! AddrInUse, message: "Address in use" }`, `UpgradeManager("MissingSupervisorPath")`),
//! which clients read in reply bodies and operators on stderr. Kept as that text, because
//! matching nydusd to the byte is the point; made from typed errors at the edges.

use std::fmt;

/// nydusd's words for a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NydusdError(String);

impl NydusdError {
    /// `error` as nydusd prints it: its `Debug` form.
    pub fn debug(error: &impl fmt::Debug) -> Self {
        Self(format!("{error:?}"))
    }

    /// The words nydusd uses, written out (`UpgradeManager("MissingSupervisorPath")`).
    pub fn words(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

impl fmt::Display for NydusdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NydusdError {}
