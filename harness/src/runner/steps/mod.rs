//! What each step does. A step is a type implementing [`StepKind`] in the module of its
//! family: its keyword, the daemon it names, how it must fail, how `explain` shows it,
//! and what it does are written side by side. The one list below dispatches to them;
//! adding a step means its model struct, its `Step` variant, its `StepKind` and a name
//! in the list.
//!
//! * [`daemon`]: one daemon's process and API, and the mock's sockets.
//! * [`manager`]: the manager's operations and events.
//! * [`assertions`]: steps that only look.
//! * [`workloads`]: what a container would do: read, list, run a reader.

mod assertions;
mod daemon;
mod manager;
mod workloads;

pub(crate) use manager::describe_event;

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::Run;
use super::outcome::StepError;
use crate::scenario::model::*;

/// Who acts, on whom, and what: one line of `harness explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The actor: `harness`, `manager`, or a daemon id.
    pub from: String,
    /// Who the action is for; the actor itself for a note.
    pub to: String,
    /// The action.
    pub what: String,
}

impl Explained {
    fn new(from: String, to: String, what: String) -> Self {
        Self { from, to, what }
    }
}

/// One kind of step.
pub(crate) trait StepKind {
    /// The step's fields in the scenario file.
    type Args: StepArgs;
    /// Its keyword in scenario files.
    const KEYWORD: &'static str;

    /// How `harness explain` shows it.
    fn explain(args: &Self::Args) -> Explained;

    /// Runs it.
    async fn run(run: &mut Run<'_>, args: &Self::Args) -> Result<(), StepError>;
}

/// What a step's fields say about it, whichever step they belong to (`DaemonRef`, for
/// one, is the fields of five).
pub(crate) trait StepArgs {
    /// The daemon the step names, if any.
    fn daemon(&self) -> Option<&Spanned<String>> {
        None
    }

    /// How the step must fail, for the steps that can say so.
    fn expected_error(&self) -> Option<&ExpectedError> {
        None
    }

    /// Whether success and failure both pass (`may_fail: true`).
    fn may_fail(&self) -> bool {
        false
    }
}

/// Implements [`StepArgs`] for fields with a `daemon`, and an `expect_error` and
/// `may_fail` where listed.
macro_rules! step_args {
    (names_daemon: [$($daemon:ty),*], names_daemon_and_expected_error: [$($both:ty),*],
     names_daemon_and_expected_error_and_may_fail: [$($all:ty),*], neither: [$($none:ty),*]) => {
        $(impl StepArgs for $daemon {
            fn daemon(&self) -> Option<&Spanned<String>> {
                Some(&self.daemon)
            }
        })*
        $(impl StepArgs for $both {
            fn daemon(&self) -> Option<&Spanned<String>> {
                Some(&self.daemon)
            }

            fn expected_error(&self) -> Option<&ExpectedError> {
                self.expect_error.as_ref()
            }
        })*
        $(impl StepArgs for $all {
            fn daemon(&self) -> Option<&Spanned<String>> {
                Some(&self.daemon)
            }

            fn expected_error(&self) -> Option<&ExpectedError> {
                self.expect_error.as_ref()
            }

            fn may_fail(&self) -> bool {
                self.may_fail
            }
        })*
        $(impl StepArgs for $none {})*
    };
}

step_args! {
    names_daemon: [
        StartStep, WaitStateStep, ExpectStateStep, SignalStep, WaitExitStep, ReplayClientStep, ExpectSocketStep, ExpectAliveStep,
        ExpectMountsStep, ScriptStep, MountConcurrentlyStep, WaitEventStep, HoldFuseReadsStep
    ],
    names_daemon_and_expected_error: [DaemonRef, MountStep, UmountStep, UpgradeStep],
    names_daemon_and_expected_error_and_may_fail: [ApiStep, InstanceStep],
    neither: [Empty, MountErofsImageStep, ExpectMountedStep, ExpectStoreStep, ListDirStep, ReadFileStep, RestartManagerStep, SleepStep,
        StartReaderStep]
}

/// A reader's step names a daemon when its promise depends on that daemon's failover.
impl StepArgs for StopReaderStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        self.without_resend.as_ref().map(|w| &w.daemon)
    }
}

/// The journal step names a daemon only when it is about one.
impl StepArgs for ExpectJournalStep {
    fn daemon(&self) -> Option<&Spanned<String>> {
        self.daemon.as_ref()
    }
}

/// A daemon id as `explain` shows it.
fn name(id: &Spanned<String>) -> String {
    id.value.clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// How long `expect_no_leaks` and `expect_alive: false` give a dead child's reaper task
/// before calling the process a zombie, or alive.
const REAPED_WITHIN: Duration = Duration::from_secs(1);

impl Run<'_> {
    /// [`check`](super::outcome::check), or with `may_fail` only a journal entry of the outcome.
    fn check_or_tolerate<E: std::error::Error + 'static>(
        &self,
        what: &str,
        outcome: Result<(), E>,
        expected: Option<&ExpectedError>,
        may_fail: bool,
    ) -> Result<(), StepError> {
        if !may_fail {
            return super::outcome::check(what, outcome, expected);
        }
        let error = outcome.err().map(|e| daemon_core::daemon::error_chain(&e));
        self.journal.record("tolerated", serde_json::json!({ "what": what, "error": error }));
        Ok(())
    }

    /// `path` relative to the scenario's root, or as given when absolute.
    fn path_in_root(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() { p } else { self.root.root().join(p) }
    }
}

/// Dispatches each `Step` variant to the step type of the same name.
macro_rules! steps {
    ($($family:ident: [$($name:ident),* $(,)?]),* $(,)?) => {
        /// Every keyword, in the order of the list.
        #[cfg(test)]
        const KEYWORDS: &[&str] = &[$($(<$family::$name as StepKind>::KEYWORD,)*)*];

        impl Step {
            /// The step's keyword.
            pub fn keyword(&self) -> &'static str {
                match self { $($(Step::$name(_) => <$family::$name as StepKind>::KEYWORD,)*)* }
            }

            /// The daemon the step names, if any.
            pub fn daemon(&self) -> Option<&Spanned<String>> {
                match self { $($(Step::$name(s) => s.daemon(),)*)* }
            }

            /// How the step must fail, for the steps that can say so.
            pub fn expected_error(&self) -> Option<&ExpectedError> {
                match self { $($(Step::$name(s) => s.expected_error(),)*)* }
            }

            /// Whether success and failure both pass.
            pub fn may_fail(&self) -> bool {
                match self { $($(Step::$name(s) => s.may_fail(),)*)* }
            }

            /// How `harness explain` shows it.
            pub fn explain(&self) -> Explained {
                match self { $($(Step::$name(s) => <$family::$name as StepKind>::explain(s),)*)* }
            }
        }

        impl Run<'_> {
            pub(super) async fn step(&mut self, step: &Step) -> Result<(), StepError> {
                match step { $($(Step::$name(s) => <$family::$name as StepKind>::run(self, s).await,)*)* }
            }
        }
    };
}

steps! {
    daemon: [
        Start, StartDaemon, WaitState, ExpectState, Mount, Umount, Api, Signal, WaitExit, ExpectSocket,
        ExpectAlive, ExpectMounts, Script, IntrudeSupervisor, ReplayClient, HoldFuseReads,
    ],
    manager: [
        MountInstance, UmountInstance, MountConcurrently, WaitEvent, ExpectNoEvent, KillManager, RestartManager,
        Upgrade, Destroy, ForgetDaemon,
    ],
    assertions: [ExpectJournal, ExpectStore, ExpectMounted, ExpectNoLeaks, ExpectConsistent],
    workloads: [Sleep, ReadFile, ListDir, StartReader, StopReader, MountErofsImage],
}

#[cfg(test)]
mod tests {
    use super::KEYWORDS;

    /// A keyword is what serde reads: the schema's name for the variant.
    #[test]
    fn every_keyword_is_the_name_scenario_files_use() {
        let schema = serde_json::to_value(schemars::schema_for!(crate::scenario::model::Step)).unwrap();
        let mut names: Vec<String> = schema["oneOf"]
            .as_array()
            .expect("Step is a oneOf")
            .iter()
            .filter_map(|v| v["required"][0].as_str().map(str::to_owned))
            .collect();
        let mut keywords: Vec<String> = KEYWORDS.iter().map(|k| (*k).to_owned()).collect();
        names.sort();
        keywords.sort();
        assert_eq!(keywords, names);
    }
}
