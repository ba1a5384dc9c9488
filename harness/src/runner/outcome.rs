//! How a step fails and how a scenario failure is reported: the step, what was expected,
//! what was observed, and the merged timeline.

use std::path::PathBuf;

use daemon_core::DaemonError;
use daemon_core::daemon::error_chain;
use daemon_core::manager::ManagerError;

use crate::scenario::fields::ExpectedError;

/// Why a scenario failed (also as it appears in the JSON report).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// 1-based step number; 0 for set-up, the scenario deadline or a panic.
    pub step: usize,
    /// The step's line in the file.
    pub line: u64,
    /// The step's keyword, or `setup`, `deadline`, `panic`.
    pub keyword: String,
    /// The lane the step ran in, when not the scenario's own steps: a `background` group
    /// (`background upgrading`) or a lane of `concurrently` (`lane 2`), outermost
    /// first. `step` is then the number of the outermost group's step.
    pub lane: Option<String>,
    /// One-line summary.
    pub message: String,
    /// What the step expected.
    pub expected: Option<String>,
    /// What happened instead.
    pub observed: Option<String>,
    /// The whole merged timeline (harness steps, manager events, daemon journals).
    pub timeline: Vec<super::timeline::TimelineEntry>,
    /// The end of each log the daemons wrote.
    pub logs: Vec<super::LogTail>,
    /// Where the repro bundle was written.
    pub bundle: Option<PathBuf>,
}

impl Failure {
    pub(crate) fn setup(message: String) -> Self {
        Self {
            step: 0,
            line: 0,
            keyword: "setup".into(),
            lane: None,
            message,
            expected: None,
            observed: None,
            timeline: Vec::new(),
            logs: Vec::new(),
            bundle: None,
        }
    }

    pub(crate) fn at_step(step: usize, line: u64, keyword: &str, e: StepError) -> Self {
        Self {
            step,
            line,
            keyword: keyword.to_owned(),
            lane: None,
            message: e.message,
            expected: e.expected,
            observed: e.observed,
            timeline: Vec::new(),
            logs: Vec::new(),
            bundle: None,
        }
    }
}

/// A failed step: a check that did not hold (what was expected, what was observed), or
/// the operation the step performs failed ([`StepError::failed`]), which the runner then
/// judges against the step's `expect_error` and `may_fail`, once, for every step.
#[derive(Debug)]
pub(crate) struct StepError {
    pub message: String,
    pub expected: Option<String>,
    pub observed: Option<String>,
    /// The operation's own error, not judged yet.
    failed: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// A step inside a group failed: the failure, located at that step, passes up as is.
    pub located: Option<Box<Failure>>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), expected: None, observed: None, failed: None, located: None }
    }

    pub fn mismatch(message: impl Into<String>, expected: impl Into<String>, observed: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            expected: Some(expected.into()),
            observed: Some(observed.into()),
            failed: None,
            located: None,
        }
    }

    /// The step's operation failed with `error`; `expect_error` may want just that.
    pub fn failed(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            message: error_chain(&error),
            expected: None,
            observed: None,
            failed: Some(Box::new(error)),
            located: None,
        }
    }

    /// A step inside a group failed as `failure` says.
    pub fn located(failure: Failure) -> Self {
        Self { located: Some(Box::new(failure)), ..Self::new(String::new()) }
    }
}

/// The outcome of a step, held to its `expect_error` and `may_fail`: `what` names what the
/// step did (`start_daemon d1`). A failure a step may have is noted in the journal.
pub(crate) fn judge(
    what: &str,
    outcome: Result<(), StepError>,
    expected: Option<&ExpectedError>,
    may_fail: bool,
    journal: &mock_nydusd::journal::Journal,
) -> Result<(), StepError> {
    let failed = match outcome {
        Err(StepError { failed: Some(error), .. }) => Err(error),
        Err(mismatch) => return Err(mismatch),
        Ok(()) => Ok(()),
    };
    if may_fail {
        let error = failed.err().map(|e| error_chain(e.as_ref()));
        journal.record("tolerated", serde_json::json!({ "what": what, "error": error }));
        return Ok(());
    }
    check(what, failed, expected)
}

impl From<DaemonError> for StepError {
    fn from(e: DaemonError) -> Self {
        Self::new(error_chain(&e))
    }
}

impl From<super::error::RunError> for StepError {
    fn from(e: super::error::RunError) -> Self {
        Self::new(error_chain(&e))
    }
}

impl From<super::image::ImageError> for StepError {
    fn from(e: super::image::ImageError) -> Self {
        Self::new(error_chain(&e))
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<ManagerError> for StepError {
    fn from(e: ManagerError) -> Self {
        Self::new(error_chain(&e))
    }
}

/// `an error with status 400, kind daemon`: what a step's `expect_error` asks for.
pub(crate) fn describe_expected(e: &ExpectedError) -> String {
    let mut parts = Vec::new();
    if let Some(status) = e.status {
        parts.push(format!("status {status}"));
    }
    if let Some(kind) = e.kind {
        parts.push(format!("kind {}", crate::scenario::spelled(&kind)));
    }
    if let Some(text) = &e.message_contains {
        parts.push(format!("message containing {text:?}"));
    }
    if let Some(ms) = e.within_ms {
        parts.push(format!("within {ms} ms"));
    }
    if parts.is_empty() { "an error".to_owned() } else { format!("an error with {}", parts.join(", ")) }
}

/// The client error inside a daemon or manager error, if there is one.
fn client_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a daemon_core::ClientError> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(client) = err.downcast_ref::<daemon_core::ClientError>() {
            return Some(client);
        }
        if let Some(DaemonError::Client { source, .. }) = err.downcast_ref::<DaemonError>() {
            return Some(source);
        }
        if let Some(ManagerError::Daemon(DaemonError::Client { source, .. })) = err.downcast_ref::<ManagerError>() {
            return Some(source);
        }
        current = err.source();
    }
    None
}

/// The kind of a failure: its client error's, or `timeout` for a wait that ran out (a
/// state, socket or exit deadline), which carries no client error of its own.
fn error_kind(e: &(dyn std::error::Error + 'static)) -> Option<daemon_core::api::ErrorKind> {
    if let Some(client) = client_error(e) {
        return Some(client.kind());
    }
    let mut current = Some(e);
    while let Some(err) = current {
        let daemon = err.downcast_ref::<DaemonError>().or_else(|| match err.downcast_ref::<ManagerError>() {
            Some(ManagerError::Daemon(d)) => Some(d),
            _ => None,
        });
        if let Some(
            DaemonError::StateTimeout { .. } | DaemonError::SocketTimeout { .. } | DaemonError::ExitTimeout { .. },
        ) = daemon
        {
            return Some(daemon_core::api::ErrorKind::Timeout);
        }
        current = err.source();
    }
    None
}

/// Compares an outcome with what the step expected.
fn check(
    what: &str,
    outcome: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    expected: Option<&ExpectedError>,
) -> Result<(), StepError> {
    match (outcome, expected) {
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(StepError::mismatch(format!("{what} failed"), "success", error_chain(e.as_ref()))),
        (Ok(()), Some(exp)) => Err(StepError::mismatch(format!("{what} succeeded"), describe_expected(exp), "success")),
        (Err(e), Some(exp)) => {
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            let client = client_error(e);
            let (status, kind) = (client.and_then(|c| c.status()), error_kind(e));
            let text = error_chain(e);
            let ok = exp.status.is_none_or(|s| status == Some(s))
                && exp.kind.is_none_or(|k| kind == Some(k))
                && exp.message_contains.as_ref().is_none_or(|m| text.contains(m.as_str()));
            if ok {
                Ok(())
            } else {
                let observed = format!(
                    "status {}, kind {}: {text}",
                    status.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                    kind.map(|k| crate::scenario::spelled(&k)).unwrap_or_else(|| "none".into())
                );
                Err(StepError::mismatch(format!("{what} failed differently"), describe_expected(exp), observed))
            }
        }
    }
}
