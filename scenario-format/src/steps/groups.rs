//! Steps that run other steps: at the same time as the scenario's own, a `background`
//! group that goes on beside the steps after it until its `join`, and `concurrently`,
//! lanes started together that all end before the next step; and `within`, steps that
//! must end in a bounded time.
//!
//! Where groups may stand is checked when the file is loaded ([`check_groups`]): a
//! background group and its join stand in the scenario's own step list, a join names a
//! group started before it and not joined yet, and every group has steps.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Invalid, Step, StepArgs};
use crate::fields::Id;

/// `background`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackgroundStep {
    /// The group's name: its `join` and its failures say it.
    #[schemars(with = "Id")]
    pub name: Spanned<String>,
    /// Its steps, in order; each may carry `expect_error` or `may_fail` as anywhere.
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
}

/// `join`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinStep {
    /// The background group to wait for.
    #[schemars(with = "Id")]
    pub name: Spanned<String>,
}

/// `concurrently`: two or more lanes, each a list of steps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ConcurrentlyStep {
    /// The lanes.
    #[schemars(with = "Vec<Vec<Step>>")]
    pub lanes: Vec<Vec<Spanned<Step>>>,
}

/// `within`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WithinStep {
    /// The bound, in milliseconds: the steps fail when they have not all ended by then.
    #[schemars(range(min = 1))]
    pub ms: u64,
    /// The steps, in order, in the lane of this step.
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
}

impl StepArgs for BackgroundStep {}
impl StepArgs for WithinStep {}
impl StepArgs for JoinStep {}
impl StepArgs for ConcurrentlyStep {}

impl Step {
    /// The steps a group runs, lane by lane (none for other steps).
    pub fn lanes(&self) -> Vec<&[Spanned<Step>]> {
        match self {
            Step::Background(group) => vec![&group.steps],
            Step::Concurrently(group) => group.lanes.iter().map(Vec::as_slice).collect(),
            Step::Within(group) => vec![&group.steps],
            _ => Vec::new(),
        }
    }
}

/// Where the groups of the scenario's own step list `steps` stand and what they hold:
/// each error found is added to `problems`.
pub fn check_groups(steps: &[Spanned<Step>], problems: &mut Vec<Invalid>) {
    let mut started: Vec<&Spanned<String>> = Vec::new();
    let mut joined: Vec<&str> = Vec::new();
    for step in steps {
        match &step.value {
            Step::Background(group) => {
                let name = &group.name;
                if started.iter().any(|s| s.value == name.value) {
                    problems.push(Invalid::at(
                        name,
                        format!("a background group named `{}` is already started", name.value),
                    ));
                } else {
                    started.push(name);
                }
            }
            Step::Join(join) => {
                let name = join.name.value.as_str();
                if joined.contains(&name) {
                    problems.push(Invalid::at(&join.name, format!("background group `{name}` is already joined")));
                } else if !started.iter().any(|s| s.value == name) {
                    let names: Vec<&str> = started.iter().map(|s| s.value.as_str()).collect();
                    let known = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
                    problems.push(Invalid::at(
                        &join.name,
                        format!("`join` names no background group started before it: `{name}` (started: {known})"),
                    ));
                } else {
                    joined.push(name);
                }
            }
            _ => {}
        }
        problems.extend(check_lanes(step, 1).err());
    }
}

/// How deep groups may nest (a group inside a lane of a group is depth 2): deeper
/// nesting says nothing a flatter file cannot, and each level costs the runner stack.
pub const MAX_GROUP_DEPTH: usize = 6;

/// A group's lanes: enough of them, none empty, no background group or join inside
/// (those stand in the scenario's own list, where their order is plain), and not nested
/// deeper than [`MAX_GROUP_DEPTH`].
fn check_lanes(step: &Spanned<Step>, depth: usize) -> Result<(), Invalid> {
    let at = |message: String| Invalid { line: step.referenced.line(), column: step.referenced.column(), message };
    let lanes = step.value.lanes();
    if !lanes.is_empty() && depth > MAX_GROUP_DEPTH {
        return Err(at(format!(
            "`{}` nests groups {depth} deep here; at most {MAX_GROUP_DEPTH} levels",
            step.value.keyword()
        )));
    }
    if let Step::Concurrently(_) = &step.value
        && lanes.len() < 2
    {
        return Err(at(format!("`concurrently` needs two lanes or more; it has {}", lanes.len())));
    }
    for (i, lane) in lanes.iter().enumerate() {
        if lane.is_empty() {
            return Err(at(match step.value {
                Step::Concurrently(_) => format!("lane {} of `concurrently` has no steps", i + 1),
                _ => format!("`{}` has no steps", step.value.keyword()),
            }));
        }
        for inner in lane.iter() {
            if matches!(inner.value, Step::Background(_) | Step::Join(_)) {
                return Err(Invalid {
                    line: inner.referenced.line(),
                    column: inner.referenced.column(),
                    message: format!(
                        "`{}` stands in the scenario's own steps, not inside `{}`",
                        inner.value.keyword(),
                        step.value.keyword()
                    ),
                });
            }
            check_lanes(inner, depth + 1)?;
        }
    }
    Ok(())
}
