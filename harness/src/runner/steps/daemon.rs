//! Steps on one daemon's process and API, through daemon-core's `Daemon`, and on the
//! mock's control and supervisor sockets.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use daemon_core::daemon::error_chain;
use daemon_core::{DaemonError, DaemonState, MountRequest};
use nix::sys::signal::Signal as NixSignal;

use super::{Explained, REAPED_WITHIN, StepKind, name, sorted};
use crate::runner::Run;
use crate::runner::outcome::StepError;
use crate::scenario::spelled;
use crate::scenario::steps::*;

/// The `start` step (its doc: the format's `Step::Start`).
pub(crate) struct Start;

impl StepKind for Start {
    type Args = StartStep;

    fn explain(s: &StartStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("spawn nydusd{}", if s.upgrade { " --upgrade" } else { "" }),
        )
    }

    async fn run(run: &Run<'_>, s: &StartStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        if s.clear_vestige {
            daemon.clear_vestige().await?;
        }
        run.manager()?.spawn(&daemon, s.upgrade).await?;
        Ok(())
    }
}

/// The `start_daemon` step (its doc: the format's `Step::StartDaemon`).
pub(crate) struct StartDaemon;

impl StepKind for StartDaemon {
    type Args = DaemonRef;
    const IS_A_MANAGER_OPERATION: bool = true;

    fn explain(s: &DaemonRef) -> Explained {
        Explained::new("manager".into(), name(&s.daemon), "StartDaemon: spawn, wait socket, monitor, RUNNING".into())
    }

    async fn run(run: &Run<'_>, s: &DaemonRef) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let outcome = run.manager()?.start_daemon_and_wait(&daemon).await.map(drop);
        outcome.map_err(StepError::failed)
    }
}

/// The `wait_state` step (its doc: the format's `Step::WaitState`).
pub(crate) struct WaitState;

impl StepKind for WaitState {
    type Args = WaitStateStep;

    fn explain(s: &WaitStateStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("wait until {} (≤ {} ms)", spelled(&s.state), s.timeout_ms),
        )
    }

    async fn run(run: &Run<'_>, s: &WaitStateStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
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
}

/// The `expect_state` step (its doc: the format's `Step::ExpectState`).
pub(crate) struct ExpectState;

impl StepKind for ExpectState {
    type Args = ExpectStateStep;

    fn explain(s: &ExpectStateStep) -> Explained {
        Explained::new("harness".into(), name(&s.daemon), format!("expect state {}", spelled(&s.state)))
    }

    async fn run(run: &Run<'_>, s: &ExpectStateStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let wanted = DaemonState::from(s.state);
        let (state, error) = match daemon.get_state().await {
            Ok(state) => (state, None),
            Err(e) => (DaemonState::Unknown, Some(error_chain(&e))),
        };
        if state == wanted {
            return Ok(());
        }
        let observed = error.map(|e| format!("{state} ({e})")).unwrap_or_else(|| state.to_string());
        Err(StepError::mismatch(format!("daemon {} is not {wanted}", s.daemon.value), wanted.as_str(), observed))
    }
}

/// The `mount` step (its doc: the format's `Step::Mount`).
pub(crate) struct Mount;

impl StepKind for Mount {
    type Args = MountStep;

    fn what(_: &str, s: &MountStep) -> String {
        format!("mount {} on {}", s.mountpoint, s.daemon.value)
    }

    fn explain(s: &MountStep) -> Explained {
        Explained::new("harness".into(), name(&s.daemon), format!("POST /api/v1/mount?mountpoint={}", s.mountpoint))
    }

    async fn run(run: &Run<'_>, s: &MountStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let source = match &s.source {
            Some(source) => source.clone(),
            None => {
                let snapshot = s.mountpoint.trim_start_matches('/');
                let boot = run.root.layout.snapshots_dir().join(snapshot).join("fs/image/image.boot");
                // nydusd reads the bootstrap before it answers, and so does the mock: without
                // an instance's image there, the mock's stand-in for an empty one goes there.
                if boot.exists() {
                    boot.display().to_string()
                } else {
                    let dir = boot.parent().expect("has a parent");
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StepError::failed(crate::runner::error::RunError::io("create", dir)(e)))?;
                    testkit::write_stand_in(&boot)
                        .map_err(|e| StepError::failed(crate::runner::error::RunError::io("write", &boot)(e)))?
                }
            }
        };
        let config =
            s.config.clone().unwrap_or_else(|| crate::runner::image::ImageStore::under(run.root.path()).config());
        let request = MountRequest { source, fs_type: s.fs_type.clone(), config, prefetch_files: None };
        let outcome = daemon.mount(&s.mountpoint, &request).await;
        outcome.map_err(StepError::failed)
    }
}

/// The `umount` step (its doc: the format's `Step::Umount`).
pub(crate) struct Umount;

impl StepKind for Umount {
    type Args = UmountStep;

    fn what(_: &str, s: &UmountStep) -> String {
        format!("umount {} on {}", s.mountpoint, s.daemon.value)
    }

    fn explain(s: &UmountStep) -> Explained {
        Explained::new("harness".into(), name(&s.daemon), format!("DELETE /api/v1/mount?mountpoint={}", s.mountpoint))
    }

    async fn run(run: &Run<'_>, s: &UmountStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let outcome = daemon.umount(&s.mountpoint).await;
        outcome.map_err(StepError::failed)
    }
}

/// The `api` step (its doc: the format's `Step::Api`).
pub(crate) struct Api;

impl StepKind for Api {
    type Args = ApiStep;

    fn what(_: &str, s: &ApiStep) -> String {
        format!("{} on {}", spelled(&s.call), s.daemon.value)
    }

    fn explain(s: &ApiStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            match s.call {
                ApiCall::Start => "PUT /api/v1/daemon/start".into(),
                ApiCall::Exit => "PUT /api/v1/daemon/exit".into(),
                ApiCall::Takeover => "PUT /api/v1/daemon/fuse/takeover".into(),
                ApiCall::Sendfd => "PUT /api/v1/daemon/fuse/sendfd".into(),
                ApiCall::DaemonInfo => "GET /api/v1/daemon".into(),
                ApiCall::FsMetrics => "GET /api/v1/metrics".into(),
                ApiCall::CacheMetrics => "GET /api/v1/metrics/blobcache".into(),
                ApiCall::InflightMetrics => "GET /api/v1/metrics/inflight".into(),
            },
        )
    }

    async fn run(run: &Run<'_>, s: &ApiStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let outcome = match s.call {
            ApiCall::Start => daemon.start().await,
            ApiCall::Exit => daemon.exit().await,
            ApiCall::Takeover => daemon.takeover().await,
            ApiCall::Sendfd => daemon.send_fd().await,
            ApiCall::DaemonInfo => daemon.daemon_info().await.map(drop),
            // An `id` goes to nydusd as written, whatever daemon-core would make of it.
            ApiCall::FsMetrics | ApiCall::CacheMetrics if s.id.is_some() => {
                let client = daemon.client().await.map_err(StepError::failed)?;
                let id = s.id.as_deref();
                let called = match s.call {
                    ApiCall::FsMetrics => client.fs_metrics(id).await,
                    _ => client.cache_metrics(id).await,
                };
                return called.map(drop).map_err(StepError::failed);
            }
            ApiCall::FsMetrics => daemon.fs_metrics(None).await.map(drop),
            ApiCall::CacheMetrics => daemon.cache_metrics(None).await.map(drop),
            ApiCall::InflightMetrics => daemon.inflight_metrics().await.map(drop),
        };
        outcome.map_err(StepError::failed)
    }
}

/// The `signal` step (its doc: the format's `Step::Signal`).
pub(crate) struct Signal;

impl StepKind for Signal {
    type Args = SignalStep;

    fn explain(s: &SignalStep) -> Explained {
        Explained::new("harness".into(), name(&s.daemon), format!("{:?}", nix::sys::signal::Signal::from(s.signal)))
    }

    async fn run(run: &Run<'_>, s: &SignalStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let signal: NixSignal = s.signal.into();
        match run.target().sigkill_target(daemon.pid()) {
            behind if signal == NixSignal::SIGKILL && behind != daemon.pid() => {
                let pid = daemon.pid();
                let reach = |what: &str, pid: u32, e: &dyn std::fmt::Display| {
                    StepError::new(format!("cannot {what} pid {pid} (daemon {}): {e}", s.daemon.value))
                };
                // Opened first: the daemon's process ends moments after nydusd.
                let daemon_process = host_facts::pidfd::PidFd::open(pid).map_err(|e| reach("reach", pid, &e))?;
                let nydusd = host_facts::pidfd::PidFd::open(behind).map_err(|e| reach("reach", behind, &e))?;
                nydusd.send_signal(signal).map_err(|e| reach("signal", behind, &e))?;
                // The daemon's process ends as nydusd did, a moment later: the step ends
                // when it has, as a SIGKILL to the daemon's own process would.
                match tokio::time::timeout(Duration::from_secs(5), daemon_process.exited()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(reach("wait for", pid, &e)),
                    Err(_) => return Err(StepError::new(format!("pid {pid} outlived its nydusd's SIGKILL by 5 s"))),
                }
            }
            _ => daemon.signal(signal)?,
        }
        // A daemon's process leads its own group; on the real target the group also holds
        // the nydusd behind the injector, which a freeze must reach too (SIGSTOP cannot be
        // caught and passed on).
        if matches!(signal, NixSignal::SIGSTOP | NixSignal::SIGCONT) {
            let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
            if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
                let _ = nix::sys::signal::killpg(pid, signal);
            }
        }
        // Delivery is asynchronous; a stop or continue is waited for, so the next
        // step sees a frozen (or running) daemon and not a race.
        if matches!(signal, NixSignal::SIGSTOP | NixSignal::SIGCONT) {
            let pid = daemon.pid();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let want_stopped = signal == NixSignal::SIGSTOP;
            // The daemon's process and, on the real target, the nydusd behind it.
            let settled = || {
                std::iter::once(pid)
                    .chain(host_facts::process::children(pid))
                    .all(|p| host_facts::process::all_threads_stopped(p).is_none_or(|stopped| stopped == want_stopped))
            };
            while !settled() {
                if std::time::Instant::now() > deadline {
                    return Err(StepError::new(format!("{signal} did not take effect on pid {pid} within 5 s")));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }
}

/// The `wait_exit` step (its doc: the format's `Step::WaitExit`).
pub(crate) struct WaitExit;

impl StepKind for WaitExit {
    type Args = WaitExitStep;

    fn explain(s: &WaitExitStep) -> Explained {
        Explained::new("harness".into(), name(&s.daemon), "wait for the process to exit".into())
    }

    async fn run(run: &Run<'_>, s: &WaitExitStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let wait = async {
            match daemon.wait_child().await {
                Some(status) => Ok(Some(status)),
                None => daemon.wait_for_exit_and_unmount().await.map(|()| None),
            }
        };
        let status = tokio::time::timeout(Duration::from_millis(s.timeout_ms), wait).await.map_err(|_| {
            StepError::mismatch(
                format!("daemon {} did not exit within {} ms", s.daemon.value, s.timeout_ms),
                "exited",
                "still running",
            )
        })??;
        let (Some(wanted), Some(status)) = (&s.status, status) else { return Ok(()) };
        let (matches, want_text) = match wanted {
            ExitExpectation::Code(code) => (status.code() == Some(*code), format!("exit code {code}")),
            ExitExpectation::Signal(sig) => {
                let sig: NixSignal = (*sig).into();
                (status.signal() == Some(sig as i32), format!("killed by {sig}"))
            }
        };
        if matches {
            Ok(())
        } else {
            let observed = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (_, Some(sig)) => NixSignal::try_from(sig)
                    .map(|s| format!("killed by {s}"))
                    .unwrap_or_else(|_| format!("signal {sig}")),
                _ => status.to_string(),
            };
            Err(StepError::mismatch(format!("daemon {} ended differently", s.daemon.value), want_text, observed))
        }
    }
}

/// The `expect_socket` step (its doc: the format's `Step::ExpectSocket`).
pub(crate) struct ExpectSocket;

impl StepKind for ExpectSocket {
    type Args = ExpectSocketStep;

    fn explain(s: &ExpectSocketStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("expect api socket {}", if s.present { "present" } else { "absent" }),
        )
    }

    async fn run(run: &Run<'_>, s: &ExpectSocketStep) -> Result<(), StepError> {
        let socket = run.daemon(&s.daemon.value)?.api_socket();
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
}

/// The `expect_alive` step (its doc: the format's `Step::ExpectAlive`).
pub(crate) struct ExpectAlive;

impl StepKind for ExpectAlive {
    type Args = ExpectAliveStep;

    fn explain(s: &ExpectAliveStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("expect process {}", if s.alive { "alive" } else { "dead" }),
        )
    }

    async fn run(run: &Run<'_>, s: &ExpectAliveStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        // A death is reported when the monitor's connection hangs up, which can be a
        // moment before the child's reaper task has seen the exit.
        let deadline = tokio::time::Instant::now() + REAPED_WITHIN;
        while !s.alive && daemon.is_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let alive = daemon.is_alive();
        let word = |b: bool| if b { "alive" } else { "dead" };
        if alive == s.alive {
            Ok(())
        } else {
            Err(StepError::mismatch(format!("process of {}", s.daemon.value), word(s.alive), word(alive)))
        }
    }
}

/// The `expect_mounts` step (its doc: the format's `Step::ExpectMounts`).
pub(crate) struct ExpectMounts;

impl StepKind for ExpectMounts {
    type Args = ExpectMountsStep;

    fn explain(s: &ExpectMountsStep) -> Explained {
        Explained::new("harness".into(), name(&s.daemon), format!("expect instances {:?}", s.mountpoints))
    }

    async fn run(run: &Run<'_>, s: &ExpectMountsStep) -> Result<(), StepError> {
        let info = run.daemon(&s.daemon.value)?.daemon_info().await?;
        let observed = sorted(info.backend_collection.unwrap_or_default().keys().cloned().collect());
        let wanted = sorted(s.mountpoints.clone());
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
}

/// The `script` step (its doc: the format's `Step::Script`).
pub(crate) struct Script;

impl StepKind for Script {
    type Args = ScriptStep;

    fn explain(s: &ScriptStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("replace the mock script ({} rules)", s.script.rules.len()),
        )
    }

    async fn run(run: &Run<'_>, s: &ScriptStep) -> Result<(), StepError> {
        let id = &s.daemon.value;
        run.write_script(id, &s.script)?;
        run.scripts.set(id, s.script.clone(), true);
        // Later processes read the file; a running one must be told, and a step
        // that could not tell it did not do what it says.
        let running = run.daemon(id).is_ok_and(|d| d.is_alive());
        if !running {
            return Ok(());
        }
        let control = run.root.control_socket(id);
        let body = serde_json::to_string(&s.script).map_err(|e| e.to_string())?;
        let reply = control_request(&control, "PUT", "/script", &body).await.map_err(|e| {
            StepError::new(format!(
                "daemon {id} runs, but its control socket {} cannot be reached: {e}",
                control.display()
            ))
        })?;
        if !reply.starts_with("HTTP/1.1 204") {
            return Err(StepError::new(format!("the mock refused the script: {reply}")));
        }
        Ok(())
    }
}

/// The `intrude_supervisor` step (its doc: the format's `Step::IntrudeSupervisor`).
pub(crate) struct IntrudeSupervisor;

impl StepKind for IntrudeSupervisor {
    type Args = DaemonRef;

    fn explain(s: &DaemonRef) -> Explained {
        Explained::new(
            "harness".into(),
            "manager".into(),
            format!("connect to the supervisor of {} as an intruder", name(&s.daemon)),
        )
    }

    async fn run(run: &Run<'_>, s: &DaemonRef) -> Result<(), StepError> {
        run.intrude_supervisor(&s.daemon.value).await
    }
}

impl Run<'_> {
    async fn intrude_supervisor(&self, id: &str) -> Result<(), StepError> {
        use tokio::io::AsyncReadExt;
        let socket = self.root.layout.supervisor_dir().join(format!("{id}.sock"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut stream = loop {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(stream) => break stream,
                Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => {
                    return Err(StepError::new(format!(
                        "the supervisor of {id} never listened at {} within 3 s: {e}",
                        socket.display()
                    )));
                }
            }
        };
        // A refused peer is closed unanswered; whatever happens, the intrusion is over.
        let mut byte = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
        Ok(())
    }
}

/// The `hold_fuse_reads` step (its doc: the format's `Step::HoldFuseReads`).
pub(crate) struct HoldFuseReads;

impl StepKind for HoldFuseReads {
    type Args = HoldFuseReadsStep;

    fn explain(s: &HoldFuseReadsStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("hold FUSE reads unanswered (until {} held)", s.until_held),
        )
    }

    async fn run(run: &Run<'_>, s: &HoldFuseReadsStep) -> Result<(), StepError> {
        let id = &s.daemon.value;
        if run.config.target != crate::scenario::model::Target::Mock {
            return Err(StepError::new("hold_fuse_reads is a fault of the mock; a real nydusd cannot be told it"));
        }
        let control = run.root.control_socket(id);
        let reached = |e: std::io::Error| format!("daemon {id}'s control socket {}: {e}", control.display());
        let reply = control_request(&control, "PUT", "/fuse/hold-reads", "").await.map_err(reached)?;
        if !reply.starts_with("HTTP/1.1 204") {
            return Err(StepError::new(format!("the mock did not hold FUSE reads: {reply}")));
        }
        // Bounded by the scenario's deadline: a reader that never reads holds nothing.
        loop {
            let status = control_request(&control, "GET", "/fuse", "").await.map_err(reached)?;
            if fuse_status(&status).is_some_and(|v| v["held_reads"].as_u64() >= Some(s.until_held)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The JSON body of a control reply.
pub(crate) fn fuse_status(reply: &str) -> Option<serde_json::Value> {
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| serde_json::from_str(body).ok()).flatten()
}

/// One HTTP exchange on a mock's control socket; returns the raw reply. Off the async
/// workers: a stopped daemon leaves it waiting up to its read timeout, and every lane of
/// the scenario (and its deadline) runs on the same task.
pub(crate) async fn control_request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    let (socket, request) =
        (socket.to_owned(), format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    let exchange = move || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(request.as_bytes())?;
        let mut reply = vec![0u8; 64 * 1024];
        let n = stream.read(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
    };
    tokio::task::spawn_blocking(exchange).await.map_err(std::io::Error::other)?
}

/// The `replay_client` step (its doc: the format's `Step::ReplayClient`).
pub(crate) struct ReplayClient;

impl StepKind for ReplayClient {
    type Args = ReplayClientStep;

    fn explain(s: &ReplayClientStep) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            format!("replay the client side of {} at speed {}", s.recording.value, s.speed),
        )
    }

    async fn run(run: &Run<'_>, s: &ReplayClientStep) -> Result<(), StepError> {
        use crate::record::{compare, recording::Recording, replay};
        let socket = run.daemon(&s.daemon.value)?.api_socket();
        let dir = run.scenario_path.parent().unwrap_or(std::path::Path::new("."));
        let path = crate::scenario::paths::join_inside(dir, &s.recording.value)?;
        let recorded = Recording::read(&path).map_err(|e| e.to_string())?;
        let out = run.root.path().join(format!("replay-of-{}.jsonl", s.daemon.value));
        let options = replay::ReplayOptions { socket, speed: s.speed, out: out.clone() };
        // How the daemon ends is a step of its own (`wait_exit`), not this one's.
        replay::drive(&recorded, &options, async { None }).await.map_err(|e| e.to_string())?;
        let replayed = Recording::read(&out).map_err(|e| e.to_string())?;
        let mut comparison = compare::compare_replay(&recorded, &replayed, s.speed);
        comparison.differences.retain(|d| d.at != compare::THE_DAEMON);
        run.log.journal.record(
            "replay_compared",
            serde_json::json!({ "exchanges": comparison.exchanges, "differences": comparison.differences.len() }),
        );
        if comparison.differences.is_empty() {
            return Ok(());
        }
        Err(StepError::mismatch(
            format!("the replay of {} differs from the recording", s.recording.value),
            "0 differences",
            // Under `observed:` in the failure report, each line indented as the first.
            comparison.report().trim_end().replace('\n', "\n                 "),
        ))
    }
}
