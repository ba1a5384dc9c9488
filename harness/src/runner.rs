//! Runs one scenario in a temporary root of its own, step by step, against mock-nydusd
//! (or any binary that accepts nydusd's command line).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon_core::daemon::command::CommandInputs;
use daemon_core::daemon::{DaemonMode, SpawnExtras, error_chain};
use daemon_core::{Daemon, DaemonError, DaemonOptions, DaemonState, Layout, MountRequest, Timeouts};
use nix::sys::signal::Signal;

use crate::scenario::model::{ApiCall, ExitExpectation, ExpectedError, Mode, Scenario, Step};

/// What to run scenarios against.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The binary started for each daemon.
    pub nydusd: PathBuf,
    /// Whether `nydusd` is mock-nydusd (then it also writes a journal).
    pub is_mock: bool,
    /// Arguments appended to every daemon's command line.
    pub extra_args: Vec<OsString>,
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The file.
    pub path: PathBuf,
    /// The scenario's name.
    pub name: String,
    /// How long it took.
    pub duration: Duration,
    /// `None` when it passed.
    pub failure: Option<Failure>,
}

/// Why a scenario failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// 1-based step number, 0 for set-up or the scenario deadline.
    pub step: usize,
    /// The step's line in the file.
    pub line: u64,
    /// The step's keyword.
    pub keyword: String,
    /// One-line summary.
    pub message: String,
    /// What the step expected.
    pub expected: Option<String>,
    /// What happened instead.
    pub observed: Option<String>,
    /// The last journal lines of each daemon, for context.
    pub journals: Vec<(String, Vec<String>)>,
}

struct StepError {
    message: String,
    expected: Option<String>,
    observed: Option<String>,
}

impl StepError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), expected: None, observed: None }
    }

    fn mismatch(message: impl Into<String>, expected: impl Into<String>, observed: impl Into<String>) -> Self {
        Self { message: message.into(), expected: Some(expected.into()), observed: Some(observed.into()) }
    }
}

impl From<DaemonError> for StepError {
    fn from(e: DaemonError) -> Self {
        Self::new(error_chain(&e))
    }
}

/// Runs `scenario` (loaded from `path`) and reports the outcome. Every process the scenario
/// started is killed and its temporary root removed before this returns.
pub async fn run_scenario(path: &Path, scenario: &Scenario, config: &RunConfig) -> ScenarioResult {
    let started = Instant::now();
    let failure = match tempfile::Builder::new().prefix("nydus-harness-").tempdir_in(std::env::temp_dir()) {
        Err(e) => Some(setup_failure(format!("cannot create a temporary root: {e}"))),
        Ok(root) => {
            let mut run =
                Run { root: Layout::new(root.path()), config, daemons: BTreeMap::new(), binary: config.nydusd.clone() };
            let deadline = Duration::from_millis(scenario.timeout_ms);
            let mut failure = match tokio::time::timeout(deadline, run.execute(scenario)).await {
                Ok(outcome) => outcome.err(),
                Err(_) => Some(Failure {
                    message: format!("scenario deadline of {} ms passed", scenario.timeout_ms),
                    ..setup_failure(String::new())
                }),
            };
            if let Some(f) = failure.as_mut() {
                f.journals = run.journal_tails(8);
            }
            run.teardown().await;
            failure
        }
    };
    ScenarioResult { path: path.to_owned(), name: scenario.name.clone(), duration: started.elapsed(), failure }
}

fn setup_failure(message: String) -> Failure {
    Failure { step: 0, line: 0, keyword: "setup".into(), message, expected: None, observed: None, journals: Vec::new() }
}

struct Run<'a> {
    root: Layout,
    config: &'a RunConfig,
    daemons: BTreeMap<String, DaemonSlot>,
    binary: PathBuf,
}

struct DaemonSlot {
    daemon: Daemon,
    bootstrap: Option<PathBuf>,
}

impl Run<'_> {
    async fn execute(&mut self, scenario: &Scenario) -> Result<(), Failure> {
        if self.config.is_mock {
            // The harness binary runs the mock when started under the name `mock-nydusd`.
            let link = self.root.root().join("bin/mock-nydusd");
            let made = std::fs::create_dir_all(self.root.root().join("bin"))
                .and_then(|()| std::os::unix::fs::symlink(&self.config.nydusd, &link));
            made.map_err(|e| setup_failure(format!("cannot link the mock at {}: {e}", link.display())))?;
            self.binary = link;
        }
        for spec in &scenario.daemons {
            self.create_daemon(spec).map_err(|e| setup_failure(format!("daemon {}: {}", spec.id, e.message)))?;
        }
        for (index, step) in scenario.steps.iter().enumerate() {
            if let Err(e) = self.step(&step.value).await {
                return Err(Failure {
                    step: index + 1,
                    line: step.referenced.line(),
                    keyword: step.value.keyword().to_owned(),
                    message: e.message,
                    expected: e.expected,
                    observed: e.observed,
                    journals: Vec::new(),
                });
            }
        }
        Ok(())
    }

    fn create_daemon(&mut self, spec: &crate::scenario::model::DaemonSpec) -> Result<(), StepError> {
        let mode = match spec.mode {
            Mode::Dedicated => DaemonMode::Dedicated,
            Mode::Shared => DaemonMode::Shared,
        };
        let options = DaemonOptions {
            id: Some(spec.id.clone()),
            mode,
            thread_num: spec.thread_num,
            supervisor: spec.supervisor,
            ..Default::default()
        };
        let daemon = Daemon::create(&self.root, options, Timeouts::default())?;
        let states = daemon.states();
        let io =
            |what: &str, p: &Path, e: std::io::Error| StepError::new(format!("cannot {what} {}: {e}", p.display()));
        std::fs::create_dir_all(&states.mountpoint).map_err(|e| io("create", &states.mountpoint, e))?;
        if spec.supervisor {
            let dir = self.root.supervisor_dir();
            std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        }
        let bootstrap = if mode == DaemonMode::Dedicated {
            let boot = self.root.snapshots_dir().join(&spec.id).join("fs/image/image.boot");
            std::fs::create_dir_all(boot.parent().expect("has a parent")).map_err(|e| io("create", &boot, e))?;
            std::fs::write(&boot, b"RAFS bootstrap placeholder").map_err(|e| io("write", &boot, e))?;
            let config = states.config_file(None);
            std::fs::write(&config, b"{}").map_err(|e| io("write", &config, e))?;
            Some(boot)
        } else {
            None
        };
        self.daemons.insert(spec.id.clone(), DaemonSlot { daemon, bootstrap });
        Ok(())
    }

    fn slot(&self, id: &str) -> &DaemonSlot {
        // Loading already rejected steps that name undeclared daemons.
        self.daemons.get(id).expect("validated daemon reference")
    }

    fn journal_path(&self, id: &str) -> PathBuf {
        self.root.log_dir().join(id).join("mock-journal.jsonl")
    }

    async fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Start(s) => {
                let slot = self.slot(&s.daemon.value);
                if s.clear_vestige {
                    slot.daemon.clear_vestige().await?;
                }
                let mut extra = SpawnExtras {
                    args: self.config.extra_args.clone(),
                    output: Some(self.root.log_dir().join(&s.daemon.value).join("output.log")),
                    kill_on_drop: true,
                    ..Default::default()
                };
                if self.config.is_mock {
                    extra.args.push("--mock-journal".into());
                    extra.args.push(self.journal_path(&s.daemon.value).into());
                }
                let inputs =
                    CommandInputs { upgrade: s.upgrade, bootstrap: slot.bootstrap.clone(), ..Default::default() };
                slot.daemon.spawn(&self.binary, &inputs, extra).await?;
                Ok(())
            }
            Step::WaitState(s) => {
                let daemon = &self.slot(&s.daemon.value).daemon;
                let wanted = DaemonState::from(s.state);
                match daemon.wait_until_state_within(wanted, Duration::from_millis(s.timeout_ms)).await {
                    Ok(()) => Ok(()),
                    Err(DaemonError::StateTimeout { last_observed, last_error, .. }) => Err(StepError::mismatch(
                        format!("daemon {} did not reach {wanted} within {} ms", s.daemon.value, s.timeout_ms),
                        wanted.as_str(),
                        match last_error {
                            Some(e) => format!("{last_observed} ({e})"),
                            None => last_observed.to_string(),
                        },
                    )),
                    Err(e) => Err(e.into()),
                }
            }
            Step::ExpectState(s) => {
                let daemon = &self.slot(&s.daemon.value).daemon;
                let wanted = DaemonState::from(s.state);
                let (state, error) = match daemon.get_state().await {
                    Ok(state) => (state, None),
                    Err(e) => (DaemonState::Unknown, Some(error_chain(&e))),
                };
                if state == wanted {
                    return Ok(());
                }
                let observed = match error {
                    Some(e) => format!("{state} ({e})"),
                    None => state.to_string(),
                };
                Err(StepError::mismatch(
                    format!("daemon {} is not {wanted}", s.daemon.value),
                    wanted.as_str(),
                    observed,
                ))
            }
            Step::Mount(s) => {
                let daemon = &self.slot(&s.daemon.value).daemon;
                let source = s.source.clone().unwrap_or_else(|| {
                    self.root
                        .snapshots_dir()
                        .join(s.mountpoint.trim_start_matches('/'))
                        .join("image.boot")
                        .display()
                        .to_string()
                });
                let request = MountRequest {
                    source,
                    fs_type: s.fs_type.clone(),
                    config: s.config.clone().unwrap_or_else(|| "{}".to_owned()),
                    prefetch_files: None,
                };
                let outcome = daemon.mount(&s.mountpoint, &request).await;
                check_outcome(
                    &format!("mount {} on {}", s.mountpoint, s.daemon.value),
                    outcome,
                    s.expect_error.as_ref(),
                )
            }
            Step::Umount(s) => {
                let daemon = &self.slot(&s.daemon.value).daemon;
                let outcome = daemon.umount(&s.mountpoint).await;
                check_outcome(
                    &format!("umount {} on {}", s.mountpoint, s.daemon.value),
                    outcome,
                    s.expect_error.as_ref(),
                )
            }
            Step::Api(s) => {
                let daemon = &self.slot(&s.daemon.value).daemon;
                let outcome = match s.call {
                    ApiCall::Start => daemon.start().await,
                    ApiCall::Exit => daemon.exit().await,
                    ApiCall::Takeover => daemon.takeover().await,
                    ApiCall::Sendfd => daemon.send_fd().await,
                };
                check_outcome(
                    &format!("{:?} on {}", s.call, s.daemon.value).to_lowercase(),
                    outcome,
                    s.expect_error.as_ref(),
                )
            }
            Step::Signal(s) => {
                self.slot(&s.daemon.value).daemon.signal(s.signal.into())?;
                Ok(())
            }
            Step::WaitExit(s) => {
                let daemon = &self.slot(&s.daemon.value).daemon;
                let status =
                    tokio::time::timeout(Duration::from_millis(s.timeout_ms), daemon.wait()).await.map_err(|_| {
                        StepError::mismatch(
                            format!("daemon {} did not exit within {} ms", s.daemon.value, s.timeout_ms),
                            "exited",
                            "still running",
                        )
                    })?;
                let status =
                    status.ok_or_else(|| StepError::new(format!("daemon {} was never started", s.daemon.value)))?;
                let Some(wanted) = &s.status else { return Ok(()) };
                let (matches, want_text) = match wanted {
                    ExitExpectation::Code(code) => (status.code() == Some(*code), format!("exit code {code}")),
                    ExitExpectation::Signal(sig) => {
                        let sig: Signal = (*sig).into();
                        (status.signal() == Some(sig as i32), format!("killed by {sig}"))
                    }
                };
                if matches {
                    Ok(())
                } else {
                    Err(StepError::mismatch(
                        format!("daemon {} ended differently", s.daemon.value),
                        want_text,
                        describe_exit(status),
                    ))
                }
            }
            Step::ExpectSocket(s) => {
                let socket = self.slot(&s.daemon.value).daemon.api_socket();
                let present = socket.exists();
                if present != s.present {
                    return Err(StepError::mismatch(
                        format!("api socket of {}", s.daemon.value),
                        if s.present { "present" } else { "absent" },
                        format!("{} ({})", if present { "present" } else { "absent" }, socket.display()),
                    ));
                }
                if let (true, Some(wanted)) = (present, s.connectable) {
                    let connectable = std::os::unix::net::UnixStream::connect(&socket).is_ok();
                    if connectable != wanted {
                        let word = |b: bool| if b { "accepts connections" } else { "refuses connections (stale)" };
                        return Err(StepError::mismatch(
                            format!("api socket of {}", s.daemon.value),
                            word(wanted),
                            word(connectable),
                        ));
                    }
                }
                Ok(())
            }
            Step::ExpectAlive(s) => {
                let alive = self.slot(&s.daemon.value).daemon.is_alive();
                let word = |b: bool| if b { "alive" } else { "dead" };
                if alive == s.alive {
                    Ok(())
                } else {
                    Err(StepError::mismatch(format!("process of {}", s.daemon.value), word(s.alive), word(alive)))
                }
            }
            Step::ExpectMounts(s) => {
                let client = self.slot(&s.daemon.value).daemon.client().await?;
                let info = client.get_daemon_info().await.map_err(|e| StepError::new(error_chain(&e)))?;
                let mut observed: Vec<String> = info.backend_collection.unwrap_or_default().keys().cloned().collect();
                observed.sort();
                let mut wanted = s.mountpoints.clone();
                wanted.sort();
                if observed == wanted {
                    Ok(())
                } else {
                    Err(StepError::mismatch(
                        format!("instances mounted in {}", s.daemon.value),
                        format!("{wanted:?}"),
                        format!("{observed:?}"),
                    ))
                }
            }
            Step::Sleep(s) => {
                tokio::time::sleep(Duration::from_millis(s.ms)).await;
                Ok(())
            }
        }
    }

    fn journal_tails(&self, lines: usize) -> Vec<(String, Vec<String>)> {
        self.daemons
            .keys()
            .filter_map(|id| {
                let text = std::fs::read_to_string(self.journal_path(id)).ok()?;
                let all: Vec<String> = text.lines().map(str::to_owned).collect();
                Some((id.clone(), all[all.len().saturating_sub(lines)..].to_vec()))
            })
            .collect()
    }

    async fn teardown(&mut self) {
        for slot in self.daemons.values() {
            // SIGKILL through the pidfd, then reap, so no daemon outlives its scenario.
            let _ = slot.daemon.signal(Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), slot.daemon.wait()).await;
        }
        self.daemons.clear();
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (_, Some(sig)) => {
            Signal::try_from(sig).map(|s| format!("killed by {s}")).unwrap_or_else(|_| format!("signal {sig}"))
        }
        _ => status.to_string(),
    }
}

fn describe_expected(e: &ExpectedError) -> String {
    let mut parts = Vec::new();
    if let Some(status) = e.status {
        parts.push(format!("status {status}"));
    }
    if let Some(kind) = e.kind {
        parts.push(format!("kind {kind:?}"));
    }
    if let Some(text) = &e.message_contains {
        parts.push(format!("message containing {text:?}"));
    }
    if parts.is_empty() { "an error".to_owned() } else { format!("an error with {}", parts.join(", ")) }
}

fn check_outcome(
    what: &str,
    outcome: Result<(), DaemonError>,
    expected: Option<&ExpectedError>,
) -> Result<(), StepError> {
    match (outcome, expected) {
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(StepError::mismatch(format!("{what} failed"), "success", error_chain(&e))),
        (Ok(()), Some(exp)) => Err(StepError::mismatch(format!("{what} succeeded"), describe_expected(exp), "success")),
        (Err(e), Some(exp)) => {
            let (status, kind) = match &e {
                DaemonError::Client { source, .. } => (source.status(), Some(source.kind())),
                _ => (None, None),
            };
            let text = error_chain(&e);
            let ok = exp.status.is_none_or(|s| status == Some(s))
                && exp.kind.is_none_or(|k| kind == Some(k))
                && exp.message_contains.as_ref().is_none_or(|m| text.contains(m.as_str()));
            if ok {
                Ok(())
            } else {
                let observed = format!(
                    "status {}, kind {}: {text}",
                    status.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                    kind.map(|k| format!("{k:?}")).unwrap_or_else(|| "none".into())
                );
                Err(StepError::mismatch(format!("{what} failed differently"), describe_expected(exp), observed))
            }
        }
    }
}
