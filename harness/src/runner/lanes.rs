//! Lanes: the scenario's own steps, and the groups that run steps beside them. A
//! `background` group runs from its step until its `join` (or the end of the scenario's
//! steps); `concurrently` runs its lanes together and ends with the last of them. All
//! lanes are futures of one task, polled together: they share the run by `&`, and the
//! first failure in any lane ends every lane and fails the scenario, located at the
//! failing step's line and naming its lane.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde_json::json;
use serde_saphyr::Spanned;
use tokio::sync::watch;

use super::outcome::{self, Failure, StepError};
use super::{Run, steps};
use crate::scenario::Step;

/// One lane's outcome, boxed so that lanes of any kind run side by side.
type LaneFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;

/// Where a run is: set-up, or a step of some lane.
#[derive(Debug, Clone)]
enum Activity {
    /// Set-up: `what`, for the declaration at `line` (0: none in particular).
    SetUp { what: String, line: u64 },
    /// Step `n` (1-based; of the outermost group inside a group) at `line`.
    Step { n: usize, line: u64, keyword: &'static str },
}

/// A lane as activities know it: its label and the line of its first step (labels such
/// as `lane 1` repeat in nested groups; with the line they do not).
type LaneKey = Option<(String, u64)>;

/// What each lane is doing, by lane (`None`: the scenario's own steps and set-up), for
/// the report when the deadline passes.
#[derive(Debug, Default)]
pub(super) struct Activities(Mutex<BTreeMap<LaneKey, Activity>>);

impl Activities {
    fn lanes(&self) -> std::sync::MutexGuard<'_, BTreeMap<LaneKey, Activity>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set-up is doing `what` for the declaration at `line`.
    pub fn set_up(&self, what: String, line: u64) {
        self.lanes().insert(None, Activity::SetUp { what, line });
    }

    fn step(&self, lane: &LaneKey, n: usize, line: u64, keyword: &'static str) {
        self.lanes().insert(lane.clone(), Activity::Step { n, line, keyword });
    }

    /// The step `lane` is at, as `` `keyword` (line N) ``.
    fn at(&self, lane: &LaneKey) -> Option<String> {
        match self.lanes().get(lane)? {
            Activity::Step { line, keyword, .. } => Some(format!("`{keyword}` (line {line})")),
            Activity::SetUp { .. } => None,
        }
    }

    fn ended(&self, lane: &LaneKey) {
        self.lanes().remove(lane);
    }

    /// The failure of a run whose deadline passed: at what the scenario's own steps were
    /// doing (else the first lane still running), with every other lane's step named.
    pub fn deadline_passed(&self, timeout_ms: u64) -> Failure {
        let passed = format!("scenario deadline of {timeout_ms} ms passed");
        let lanes = self.lanes();
        let Some((lane, first)) = lanes.iter().next() else {
            return Failure::setup(format!("{passed} after the steps"));
        };
        let others: Vec<String> = lanes
            .iter()
            .skip(1)
            .filter_map(|(l, a)| match a {
                Activity::Step { line, keyword, .. } => Some(format!(
                    "{} at `{keyword}` (line {line})",
                    l.as_ref().map_or("the scenario's steps", |(label, _)| label.as_str())
                )),
                Activity::SetUp { .. } => None,
            })
            .collect();
        let meanwhile = if others.is_empty() { String::new() } else { format!("; meanwhile {}", others.join(", ")) };
        match first {
            Activity::SetUp { what, line } => {
                Failure { line: *line, ..Failure::setup(format!("{passed} during set-up: {what}{meanwhile}")) }
            }
            Activity::Step { n, line, keyword } => Failure {
                lane: lane.as_ref().map(|(label, _)| label.clone()),
                ..Failure::at_step(
                    *n,
                    *line,
                    keyword,
                    StepError::new(format!("{passed} while this step ran{meanwhile}")),
                )
            },
        }
    }
}

/// Where a background group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Waiting,
    Running,
    Finished,
}

/// The scenario's background groups, by name: started by their step, waited for by
/// their join.
#[derive(Debug, Default)]
pub(super) struct Groups(BTreeMap<String, watch::Sender<Progress>>);

impl Groups {
    /// The groups of the scenario's own steps (the loader allows them nowhere else).
    pub fn of(steps: &[Spanned<Step>]) -> Self {
        let named = steps.iter().filter_map(|s| match &s.value {
            Step::Background(group) => Some(group.name.value.clone()),
            _ => None,
        });
        Self(named.map(|name| (name, watch::channel(Progress::Waiting).0)).collect())
    }

    /// Lets group `name` run.
    pub fn start(&self, name: &str) {
        if let Some(progress) = self.0.get(name) {
            progress.send_replace(Progress::Running);
        }
    }

    /// Waits until group `name` has run all its steps.
    pub async fn join(&self, name: &str) {
        if let Some(progress) = self.0.get(name) {
            let _ = progress.subscribe().wait_for(|p| *p == Progress::Finished).await;
        }
    }

    async fn started(&self, name: &str) {
        if let Some(progress) = self.0.get(name) {
            let _ = progress.subscribe().wait_for(|p| *p != Progress::Waiting).await;
        }
    }

    fn finished(&self, name: &str) {
        if let Some(progress) = self.0.get(name) {
            progress.send_replace(Progress::Finished);
        }
    }
}

impl Run<'_> {
    /// The scenario's own steps, with each background group beside them from its step on.
    /// A group still running when the steps end is waited for (an implicit join).
    pub(super) async fn run_steps(&self) -> Result<(), Failure> {
        let mut lanes: Vec<LaneFuture<'_>> = vec![Box::pin(self.run_lane(None, &self.scenario.steps, None))];
        for (index, step) in self.scenario.steps.iter().enumerate() {
            if let Step::Background(group) = &step.value {
                let name = group.name.value.as_str();
                lanes.push(Box::pin(async move {
                    // Only a failure of the scenario's own steps leaves a group unstarted,
                    // and that failure ends this wait with every lane.
                    self.groups.started(name).await;
                    let lane = format!("background {name}");
                    let outcome = self.run_lane(Some(&lane), &group.steps, Some(index + 1)).await;
                    self.groups.finished(name);
                    outcome
                }));
            }
        }
        futures_util::future::try_join_all(lanes).await.map(drop)
    }

    /// The lanes of a `concurrently` step, together; its failures are located at the
    /// failing step (the outer lane adds its own name and step number).
    ///
    /// Boxed with its `Send` written out: lanes nest, and the compiler cannot infer it
    /// through the recursion.
    pub(super) fn run_concurrently<'s>(
        &'s self,
        lanes: &'s [Vec<Spanned<Step>>],
    ) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 's>> {
        Box::pin(async move {
            let labels: Vec<String> = lanes.iter().enumerate().map(|(i, _)| format!("lane {}", i + 1)).collect();
            let running: Vec<LaneFuture<'_>> = lanes
                .iter()
                .zip(&labels)
                .map(|(lane, label)| Box::pin(self.run_lane(Some(label), lane, Some(0))) as _)
                .collect();
            futures_util::future::try_join_all(running).await.map(drop).map_err(StepError::located)
        })
    }

    /// `steps` in order, failing when they have not ended within `ms`; boxed as
    /// [`Self::run_concurrently`] is, for the same reason.
    pub(super) fn run_within<'s>(
        &'s self,
        ms: u64,
        steps: &'s [Spanned<Step>],
    ) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 's>> {
        Box::pin(async move {
            let lane = format!("within {ms} ms");
            let began = std::time::Instant::now();
            let bound = std::time::Duration::from_millis(ms);
            match tokio::time::timeout(bound, self.run_lane(Some(&lane), steps, Some(0))).await {
                Ok(outcome) => outcome.map_err(StepError::located),
                Err(_) => {
                    let key = Some((lane.clone(), steps.first().map_or(0, |s| s.referenced.line())));
                    let at = self.activities.at(&key).map(|at| format!(": cut short at {at}")).unwrap_or_default();
                    self.activities.ended(&key);
                    Err(StepError::mismatch(
                        format!("the steps did not all end within {ms} ms{at}"),
                        format!("all ended within {ms} ms"),
                        format!("still running after {} ms", began.elapsed().as_millis()),
                    ))
                }
            }
        })
    }

    /// Runs `steps` in order in `lane` (`None`: the scenario's own). Inside a group every
    /// step reports the group's step number `group_step` (0: filled in by the lane
    /// outside).
    async fn run_lane(
        &self,
        lane: Option<&str>,
        steps: &[Spanned<Step>],
        group_step: Option<usize>,
    ) -> Result<(), Failure> {
        let key: LaneKey = lane.map(|l| (l.to_owned(), steps.first().map_or(0, |s| s.referenced.line())));
        for (index, step) in steps.iter().enumerate() {
            let n = group_step.unwrap_or(index + 1);
            if let Err(mut failure) = self.run_one(lane, &key, n, step).await {
                if failure.step == 0 {
                    failure.step = n;
                }
                return Err(failure);
            }
        }
        self.activities.ended(&key);
        Ok(())
    }

    /// One step in `lane`, held to its `expect_error` (and its time bound) and `may_fail`.
    async fn run_one(&self, lane: Option<&str>, key: &LaneKey, n: usize, step: &Spanned<Step>) -> Result<(), Failure> {
        let (line, keyword) = (step.referenced.line(), step.value.keyword());
        self.activities.step(key, n, line, keyword);
        // Inside `concurrently` the number is the outer lane's to give (0 here): the line says which step.
        let number = (n > 0).then_some(n);
        self.log.journal.record("step", json!({ "n": number, "keyword": keyword, "line": line, "lane": lane }));
        let began = std::time::Instant::now();
        // Boxed: a step may be a group running steps, and groups nest; unboxed, every
        // level's future sits inside the one above it, and deep nesting overflowed the stack.
        let mut manager_ended = self.manager_ended.subscribe();
        let done = if steps::is_a_manager_operation(&step.value) {
            tokio::select! {
                done = Box::pin(self.step(&step.value)) => done,
                _ = manager_ended.changed() => Err(StepError::failed(super::error::RunError::ManagerEnded)),
            }
        } else {
            Box::pin(self.step(&step.value)).await
        };
        let what = steps::what(&step.value);
        let mut outcome =
            outcome::judge(&what, done, step.value.expected_error(), step.value.may_fail(), &self.log.journal);
        if let (Ok(()), Some(within)) = (&outcome, step.value.expected_error().and_then(|e| e.within_ms)) {
            let took = began.elapsed();
            if took > std::time::Duration::from_millis(within) {
                outcome = Err(StepError::mismatch(
                    format!("{keyword} failed as expected, but too late"),
                    format!("within {within} ms"),
                    format!("after {} ms", took.as_millis()),
                ));
            }
        }
        self.log.drain();
        self.state().remember_daemons();
        match outcome {
            Ok(()) => Ok(()),
            Err(StepError { located: Some(inner), .. }) => {
                let mut failure = *inner;
                failure.lane = match (lane, failure.lane.take()) {
                    (Some(outer), Some(inner)) => Some(format!("{outer} › {inner}")),
                    (outer, inner) => inner.or(outer.map(str::to_owned)),
                };
                Err(failure)
            }
            Err(e) => Err(Failure { lane: lane.map(str::to_owned), ..Failure::at_step(n, line, keyword, e) }),
        }
    }
}
