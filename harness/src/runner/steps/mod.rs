//! What each step does. A step is a type implementing [`StepKind`] in the module of its
//! family, named as its variant, beside its fields' type in the scenario format's file of
//! the same name (`scenario-format/src/steps/<family>.rs`); the format's one list
//! (`scenario::for_each_step!`) dispatches to them. Its `expect_error` and `may_fail` are
//! applied here, once, after every step ([`outcome::judge`](super::outcome::judge)).
//!
//! * [`daemon`]: one daemon's process and API, and the mock's sockets.
//! * [`manager`]: the manager's operations and events.
//! * [`assertions`]: steps that only look.
//! * [`workloads`]: what a container would do: read, list, run a reader.
//! * [`groups`]: steps that run steps beside the scenario's own.

mod assertions;
mod daemon;
mod groups;
mod manager;
mod workloads;

pub(crate) use manager::describe_event;

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::Run;
use super::outcome::StepError;
use crate::scenario::steps::*;

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

    /// Whether the step is an operation of the manager, which a `kill_manager` or
    /// `close_manager` in another lane ends as a crash would (not a wait or a check).
    const IS_A_MANAGER_OPERATION: bool = false;

    /// How `harness explain` shows it.
    fn explain(args: &Self::Args) -> Explained;

    /// What the step does, in its failure messages (`start_daemon d1 failed`):
    /// the keyword and the daemon it names, unless the step says more.
    fn what(keyword: &str, args: &Self::Args) -> String {
        match args.daemon() {
            Some(daemon) => format!("{keyword} {}", daemon.value),
            None => keyword.to_owned(),
        }
    }

    /// Runs it. The operation's own failure is [`StepError::failed`], which the runner
    /// holds to the step's `expect_error` and `may_fail`.
    async fn run(run: &Run<'_>, args: &Self::Args) -> Result<(), StepError>;
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
    /// `path` relative to the scenario's root, or as given when absolute.
    fn path_in_root(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() { p } else { self.root.path().join(p) }
    }
}

/// Dispatches each `Step` variant to the step type of the same name, from the format's
/// one list.
macro_rules! dispatch {
    ($($family:ident: [$($(#[$doc:meta])* $variant:ident($args:ty) = $keyword:literal),* $(,)?]),* $(,)?) => {
        /// How `harness explain` shows a step.
        pub(crate) fn explain(step: &Step) -> Explained {
            match step { $($(Step::$variant(s) => <$family::$variant as StepKind>::explain(s),)*)* }
        }

        /// Whether the step is an operation of the manager (see [`StepKind::IS_A_MANAGER_OPERATION`]).
        pub(crate) fn is_a_manager_operation(step: &Step) -> bool {
            match step { $($(Step::$variant(_) => <$family::$variant as StepKind>::IS_A_MANAGER_OPERATION,)*)* }
        }

        /// What a step does, as its failure messages name it.
        pub(crate) fn what(step: &Step) -> String {
            match step { $($(Step::$variant(s) => <$family::$variant as StepKind>::what($keyword, s),)*)* }
        }

        impl Run<'_> {
            pub(super) async fn step(&self, step: &Step) -> Result<(), StepError> {
                match step { $($(Step::$variant(s) => <$family::$variant as StepKind>::run(self, s).await,)*)* }
            }
        }
    };
}

scenario_format::for_each_step!(dispatch);
