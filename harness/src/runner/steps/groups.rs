//! Steps that run steps beside the scenario's own (`runner::lanes` runs them).

use super::{Explained, StepError, StepKind};
use crate::runner::Run;
use crate::scenario::steps::*;

/// The `background` step (its doc: the format's `Step::Background`).
pub(crate) struct Background;

impl StepKind for Background {
    type Args = BackgroundStep;

    fn explain(s: &BackgroundStep) -> Explained {
        Explained::new(
            "harness".into(),
            "harness".into(),
            format!(
                "start background group {} ({}, beside the steps after this one)",
                s.name.value,
                count(s.steps.len())
            ),
        )
    }

    fn what(keyword: &str, s: &BackgroundStep) -> String {
        format!("{keyword} {}", s.name.value)
    }

    async fn run(run: &Run<'_>, s: &BackgroundStep) -> Result<(), StepError> {
        run.groups.start(&s.name.value);
        Ok(())
    }
}

/// The `join` step (its doc: the format's `Step::Join`).
pub(crate) struct Join;

impl StepKind for Join {
    type Args = JoinStep;

    fn explain(s: &JoinStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("wait for background group {} to end", s.name.value))
    }

    fn what(keyword: &str, s: &JoinStep) -> String {
        format!("{keyword} {}", s.name.value)
    }

    /// A group that fails ends the scenario from its own lane; this wait sees only success.
    async fn run(run: &Run<'_>, s: &JoinStep) -> Result<(), StepError> {
        run.groups.join(&s.name.value).await;
        Ok(())
    }
}

/// The `concurrently` step (its doc: the format's `Step::Concurrently`).
pub(crate) struct Concurrently;

impl StepKind for Concurrently {
    type Args = ConcurrentlyStep;

    fn explain(s: &ConcurrentlyStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("run {} lanes at the same time", s.lanes.len()))
    }

    async fn run(run: &Run<'_>, s: &ConcurrentlyStep) -> Result<(), StepError> {
        run.run_concurrently(&s.lanes).await
    }
}

/// The `within` step (its doc: the format's `Step::Within`).
pub(crate) struct Within;

impl StepKind for Within {
    type Args = WithinStep;

    fn explain(s: &WithinStep) -> Explained {
        Explained::new(
            "harness".into(),
            "harness".into(),
            format!("{} below end within {} ms", count(s.steps.len()), s.ms),
        )
    }

    async fn run(run: &Run<'_>, s: &WithinStep) -> Result<(), StepError> {
        run.run_within(s.ms, &s.steps).await
    }
}

/// `1 step`, `3 steps`.
fn count(steps: usize) -> String {
    if steps == 1 { "1 step".to_owned() } else { format!("{steps} steps") }
}
