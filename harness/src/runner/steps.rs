//! What each step does, through daemon-core's manager and daemons.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use daemon_core::daemon::error_chain;
use daemon_core::manager::{Manager, ManagerEvent};
use daemon_core::{DaemonError, DaemonState, MountRequest};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::outcome::{StepError, check};
use super::{Run, mounts_under, processes_naming};
use crate::scenario::model::{ApiCall, EventKind, ExitExpectation, JournalPattern, RestartManagerStep, Step, Target};

fn event_matches(event: &ManagerEvent, kind: EventKind, id: &str) -> bool {
    match (event, kind) {
        (ManagerEvent::Started { id: i, .. }, EventKind::Started)
        | (ManagerEvent::StartFailed { id: i, .. }, EventKind::StartFailed)
        | (ManagerEvent::Died { id: i }, EventKind::Died)
        | (ManagerEvent::UnknownDied { id: i }, EventKind::UnknownDied)
        | (ManagerEvent::Restarted { id: i, .. }, EventKind::Restarted)
        | (ManagerEvent::FailedOver { id: i, .. }, EventKind::FailedOver)
        | (ManagerEvent::RecoveryFailed { id: i, .. }, EventKind::RecoveryFailed)
        | (ManagerEvent::Upgraded { id: i, .. }, EventKind::Upgraded)
        | (ManagerEvent::Destroyed { id: i }, EventKind::Destroyed)
        | (ManagerEvent::SupervisorPeerRefused { id: i, .. }, EventKind::SupervisorPeerRefused) => i == id,
        _ => false,
    }
}

fn pattern_matches(pattern: &JournalPattern, entry: &Value) -> bool {
    let text = |k: &str, want: &Option<String>| want.as_ref().is_none_or(|w| entry[k].as_str() == Some(w.as_str()));
    text("event", &pattern.event)
        && text("method", &pattern.method)
        && text("path", &pattern.path)
        && text("to", &pattern.to)
        && pattern.status.is_none_or(|s| entry["status"].as_u64() == Some(u64::from(s)))
}

fn describe_pattern(pattern: &JournalPattern) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("event", &pattern.event), ("method", &pattern.method), ("path", &pattern.path), ("to", &pattern.to)]
    {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    if let Some(s) = pattern.status {
        parts.push(format!("status={s}"));
    }
    format!("{{{}}}", parts.join(" "))
}

/// How long `expect_consistent` gives the manager to settle a doubtful mount.
const CONSISTENT_WITHIN: Duration = Duration::from_secs(3);

/// How long `expect_no_leaks` and `expect_alive: false` give a dead child's reaper task
/// before calling the process a zombie, or alive.
const REAPED_WITHIN: Duration = Duration::from_secs(1);

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

impl Run<'_> {
    fn path_in_root(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() { p } else { self.root.root().join(p) }
    }

    /// Mock journal entries, restricted to the processes of daemon `id` (known by the
    /// API socket in their command line) when given.
    /// The journal entries of `id`'s daemons (all daemons: `None`). A real nydusd keeps no
    /// journal, so its requests come from the client's side of each exchange instead.
    fn mock_entries(&self, id: Option<&str>) -> Vec<Value> {
        if !self.config.is_mock() {
            return self.client_entries(id);
        }
        let all = super::timeline::merge(&[&self.mock_journal()]);
        let Some(id) = id else { return all };
        let socket_dir = self.root.socket_dir().join(id).to_string_lossy().into_owned();
        let pids: Vec<Value> = all
            .iter()
            .filter(|e| e["event"] == "start")
            .filter(|e| {
                e["argv"].as_array().is_some_and(|argv| {
                    argv.iter().any(|a| a.as_str().is_some_and(|a| a.starts_with(&format!("{socket_dir}/"))))
                })
            })
            .map(|e| e["pid"].clone())
            .collect();
        all.into_iter().filter(|e| pids.contains(&e["pid"])).collect()
    }

    /// The client's exchanges with `id`'s daemons as journal `request` entries.
    fn client_entries(&self, id: Option<&str>) -> Vec<Value> {
        let socket_dir = id.map(|id| self.root.socket_dir().join(id));
        super::timeline::merge(&[&self.root.log_dir().join("client.jsonl")])
            .into_iter()
            .filter(|e| {
                socket_dir
                    .as_ref()
                    .is_none_or(|dir| e["socket"].as_str().is_some_and(|s| std::path::Path::new(s).starts_with(dir)))
            })
            .map(|mut e| {
                let full = e["path"].as_str().unwrap_or_default().to_owned();
                let (path, query) = full.split_once('?').unwrap_or((&full, ""));
                e["event"] = "request".into();
                e["path"] = path.into();
                e["query"] = query.into();
                e
            })
            .collect()
    }

    pub(super) async fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Start(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                if s.clear_vestige {
                    daemon.clear_vestige().await?;
                }
                self.manager()?.spawn(&daemon, s.upgrade).await?;
                Ok(())
            }
            Step::StartDaemon(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let outcome = self.manager()?.start_daemon_and_wait(&daemon).await.map(drop);
                check(&format!("start_daemon {}", s.daemon.value), outcome, s.expect_error.as_ref())
            }
            Step::WaitState(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
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
                let daemon = self.daemon(&s.daemon.value)?;
                let wanted = DaemonState::from(s.state);
                let (state, error) = match daemon.get_state().await {
                    Ok(state) => (state, None),
                    Err(e) => (DaemonState::Unknown, Some(error_chain(&e))),
                };
                if state == wanted {
                    return Ok(());
                }
                let observed = error.map(|e| format!("{state} ({e})")).unwrap_or_else(|| state.to_string());
                Err(StepError::mismatch(
                    format!("daemon {} is not {wanted}", s.daemon.value),
                    wanted.as_str(),
                    observed,
                ))
            }
            Step::Mount(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let source = s.source.clone().unwrap_or_else(|| {
                    let snapshot = s.mountpoint.trim_start_matches('/');
                    self.root.snapshots_dir().join(snapshot).join("fs/image/image.boot").display().to_string()
                });
                let request = MountRequest {
                    source,
                    fs_type: s.fs_type.clone(),
                    config: s.config.clone().unwrap_or_else(|| "{}".to_owned()),
                    prefetch_files: None,
                };
                let outcome = daemon.mount(&s.mountpoint, &request).await;
                check(&format!("mount {} on {}", s.mountpoint, s.daemon.value), outcome, s.expect_error.as_ref())
            }
            Step::Umount(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let outcome = daemon.umount(&s.mountpoint).await;
                check(&format!("umount {} on {}", s.mountpoint, s.daemon.value), outcome, s.expect_error.as_ref())
            }
            Step::MountInstance(s) => {
                let id = &s.daemon.value;
                let daemon = self.daemon(id)?;
                let rafs = self.instance(&daemon, id, &s.snapshot.value).await?;
                let manager = self.manager()?.clone();
                let outcome = if daemon.states().is_shared() {
                    manager.mount_shared_instance(&daemon, rafs).await.map(drop)
                } else {
                    manager.add_rafs_instance(&daemon, rafs).map(drop)
                };
                self.check_or_tolerate(&format!("mount_instance {} on {id}", s.snapshot.value), outcome, s)
            }
            Step::UmountInstance(s) => {
                let id = &s.daemon.value;
                let daemon = self.daemon(id)?;
                let outcome = self.manager()?.umount_shared_instance(&daemon, &s.snapshot.value).await;
                self.check_or_tolerate(&format!("umount_instance {} on {id}", s.snapshot.value), outcome, s)
            }
            Step::Api(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let outcome = match s.call {
                    ApiCall::Start => daemon.start().await,
                    ApiCall::Exit => daemon.exit().await,
                    ApiCall::Takeover => daemon.takeover().await,
                    ApiCall::Sendfd => daemon.send_fd().await,
                    ApiCall::DaemonInfo => daemon.daemon_info().await.map(drop),
                    ApiCall::FsMetrics => daemon.fs_metrics(None).await.map(drop),
                    ApiCall::CacheMetrics => daemon.cache_metrics(None).await.map(drop),
                    ApiCall::InflightMetrics => daemon.inflight_metrics().await.map(drop),
                };
                check(&format!("{:?} on {}", s.call, s.daemon.value).to_lowercase(), outcome, s.expect_error.as_ref())
            }
            Step::Signal(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let signal: Signal = s.signal.into();
                daemon.signal_any(signal)?;
                // Delivery is asynchronous; a stop or continue is waited for, so the next
                // step sees a frozen (or running) daemon and not a race.
                if matches!(signal, Signal::SIGSTOP | Signal::SIGCONT) {
                    let pid = daemon.pid();
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    let want_stopped = signal == Signal::SIGSTOP;
                    while host_facts::process::state(pid).is_some_and(|st| (st == 'T') != want_stopped) {
                        if std::time::Instant::now() > deadline {
                            return Err(StepError::new(format!(
                                "{signal} did not take effect on pid {pid} within 5 s"
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Ok(())
            }
            Step::WaitExit(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let wait = async {
                    match daemon.wait().await {
                        Some(status) => Ok(Some(status)),
                        None => daemon.wait_for_exit().await.map(|()| None),
                    }
                };
                let status =
                    tokio::time::timeout(Duration::from_millis(s.timeout_ms), wait).await.map_err(|_| {
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
                        let sig: Signal = (*sig).into();
                        (status.signal() == Some(sig as i32), format!("killed by {sig}"))
                    }
                };
                if matches {
                    Ok(())
                } else {
                    let observed = match (status.code(), status.signal()) {
                        (Some(code), _) => format!("exit code {code}"),
                        (_, Some(sig)) => Signal::try_from(sig)
                            .map(|s| format!("killed by {s}"))
                            .unwrap_or_else(|_| format!("signal {sig}")),
                        _ => status.to_string(),
                    };
                    Err(StepError::mismatch(
                        format!("daemon {} ended differently", s.daemon.value),
                        want_text,
                        observed,
                    ))
                }
            }
            Step::ExpectSocket(s) => {
                let socket = self.daemon(&s.daemon.value)?.api_socket();
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
                let daemon = self.daemon(&s.daemon.value)?;
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
            Step::ExpectMounts(s) => {
                let info = self.daemon(&s.daemon.value)?.daemon_info().await?;
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
            Step::Sleep(s) => {
                tokio::time::sleep(Duration::from_millis(s.ms)).await;
                Ok(())
            }
            Step::WaitEvent(s) => {
                let id = s.daemon.value.clone();
                let key = format!("{:?}/{id}", s.event);
                let deadline = tokio::time::Instant::now() + Duration::from_millis(s.timeout_ms);
                loop {
                    let from = self.consumed.get(&key).copied().unwrap_or(0);
                    if let Some(offset) = self.seen[from..].iter().position(|e| event_matches(e, s.event, &id)) {
                        self.consumed.insert(key, from + offset + 1);
                        return Ok(());
                    }
                    if !self.next_event(deadline).await {
                        let seen: Vec<String> = self.seen.iter().map(|e| format!("{e:?}")).collect();
                        return Err(StepError::mismatch(
                            format!("no {:?} event for {id} within {} ms", s.event, s.timeout_ms),
                            format!("{:?} for {id}", s.event),
                            if seen.is_empty() { "no manager events".to_owned() } else { seen.join("; ") },
                        ));
                    }
                }
            }
            Step::ExpectNoEvent(s) => {
                let id = s.daemon.value.clone();
                let from = self.seen.len();
                let deadline = tokio::time::Instant::now() + Duration::from_millis(s.timeout_ms);
                while self.next_event(deadline).await {}
                match self.seen[from..].iter().find(|e| event_matches(e, s.event, &id)) {
                    None => Ok(()),
                    Some(e) => Err(StepError::mismatch(
                        format!("an unexpected {:?} event for {id}", s.event),
                        format!("no {:?} event within {} ms", s.event, s.timeout_ms),
                        format!("{e:?}"),
                    )),
                }
            }
            Step::KillManager(_) => {
                self.drain_events();
                self.manager = None;
                self.events = None;
                Ok(())
            }
            Step::RestartManager(s) => {
                if self.manager.is_some() {
                    return Err(StepError::new("the manager is still running; kill_manager first"));
                }
                self.open_manager().await?;
                let report = self.manager()?.recover().await?;
                check_report(s, &report)
            }
            Step::Upgrade(s) => {
                if self.config.target != Target::Mock {
                    return Err(StepError::new(
                        "upgrade steps build the next version from the mock; use the mock target",
                    ));
                }
                let next = self.root.root().join(format!("bin/nydusd-{}", &s.git_commit[..s.git_commit.len().min(8)]));
                let wrapper = format!(
                    "#!/bin/bash\nexec -a nydusd {} \"$@\" --mock-git-commit {}\n",
                    self.config.nydusd.display(),
                    s.git_commit
                );
                std::fs::write(&next, wrapper).map_err(|e| format!("cannot write {}: {e}", next.display()))?;
                std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
                let daemon = self.daemon(&s.daemon.value)?;
                let manager: Manager = self.manager()?.clone();
                let outcome = manager.upgrade_daemon(&daemon, &next).await.map(drop);
                check(&format!("upgrade of {}", s.daemon.value), outcome, s.expect_error.as_ref())
            }
            Step::Destroy(s) => {
                let daemon = self.daemon(&s.daemon.value)?;
                let outcome = self.manager()?.destroy_daemon(&daemon).await;
                check(&format!("destroy {}", s.daemon.value), outcome, s.expect_error.as_ref())
            }
            Step::Script(s) => {
                let id = &s.daemon.value;
                self.write_script(id, &s.script)?;
                // Later processes read the file; a running one must be told, and a step
                // that could not tell it did not do what it says.
                let running = self.daemon(id).is_ok_and(|d| d.is_alive());
                if !running {
                    return Ok(());
                }
                let control = self.control_socket(id);
                let body = serde_json::to_string(&s.script).map_err(|e| e.to_string())?;
                let reply = control_request(&control, "PUT", "/script", &body).map_err(|e| {
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
            Step::ExpectJournal(s) => {
                let id = s.daemon.as_ref().map(|d| d.value.as_str());
                let entries = self.mock_entries(id);
                let mut next = 0;
                for (i, pattern) in s.sequence.iter().enumerate() {
                    match entries[next..].iter().position(|e| pattern_matches(pattern, e)) {
                        Some(offset) => next += offset + 1,
                        None => {
                            let expected: Vec<String> = s.sequence.iter().map(describe_pattern).collect();
                            return Err(StepError::mismatch(
                                format!(
                                    "journal{} lacks entry {} of the sequence after the ones before it",
                                    id.map(|d| format!(" of {d}")).unwrap_or_default(),
                                    i + 1
                                ),
                                expected.join(" … "),
                                format!("{} entries; missing {}", entries.len(), describe_pattern(pattern)),
                            ));
                        }
                    }
                }
                if let Some(found) = s.absent.iter().find_map(|p| entries.iter().find(|e| pattern_matches(p, e))) {
                    return Err(StepError::mismatch(
                        "journal has an entry it must not have",
                        "no such entry",
                        found.to_string(),
                    ));
                }
                Ok(())
            }
            Step::ExpectStore(s) => {
                let store_holder;
                let store = match &self.manager {
                    Some(m) => m.store(),
                    None => {
                        store_holder = daemon_core::store::Store::open(self.root.root()).map_err(|e| e.to_string())?;
                        &store_holder
                    }
                };
                if let Some(wanted) = &s.daemons {
                    let have = sorted(store.daemons().map_err(|e| e.to_string())?.into_iter().map(|d| d.id).collect());
                    if have != sorted(wanted.clone()) {
                        return Err(StepError::mismatch(
                            "daemons in the store",
                            format!("{:?}", sorted(wanted.clone())),
                            format!("{have:?}"),
                        ));
                    }
                }
                if let Some(wanted) = &s.instances {
                    let have: Vec<String> =
                        store.instances().map_err(|e| e.to_string())?.into_iter().map(|r| r.snapshot_id).collect();
                    if &have != wanted {
                        return Err(StepError::mismatch(
                            "instances in the store (sequence order)",
                            format!("{wanted:?}"),
                            format!("{have:?}"),
                        ));
                    }
                }
                Ok(())
            }
            Step::ExpectMounted(s) => {
                let path = self.path_in_root(&s.path.value);
                let mounted = daemon_core::mount::is_mounted(&path).map_err(|e| e.to_string())?;
                let word = |b: bool| if b { "mounted" } else { "not mounted" };
                if mounted == s.mounted {
                    Ok(())
                } else {
                    Err(StepError::mismatch(format!("{}", path.display()), word(s.mounted), word(mounted)))
                }
            }
            Step::ReadFile(s) => {
                let path = self.path_in_root(&s.path.value);
                let text = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || std::fs::read_to_string(path)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| {
                    StepError::mismatch(
                        format!("cannot read {}", path.display()),
                        format!("text containing {:?}", s.contains),
                        e.to_string(),
                    )
                })?;
                if text.contains(&s.contains) {
                    Ok(())
                } else {
                    Err(StepError::mismatch(
                        format!("content of {}", path.display()),
                        format!("text containing {:?}", s.contains),
                        text,
                    ))
                }
            }
            Step::ExpectNoLeaks(_) => self.expect_no_leaks().await,
            Step::ExpectConsistent(s) => self.expect_consistent(&s.daemon.value).await,
            Step::StartReader(s) => {
                let path = self.path_in_root(&s.path.value);
                let stop = self.root.root().join(format!("reader-{}.stop", s.name));
                // The harness binary is the reader (on the mock target it is also `nydusd`).
                let exe = if self.config.is_mock() {
                    self.config.nydusd.clone()
                } else {
                    std::env::current_exe().map_err(|e| e.to_string())?
                };
                let child = std::process::Command::new(exe)
                    .env(crate::READER_ROLE, crate::reader::spec(&path, s.size, &stop))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot start reader {}: {e}", s.name))?;
                self.readers.insert(s.name.clone(), (child, stop));
                Ok(())
            }
            Step::StopReader(s) => {
                let (child, stop) =
                    self.readers.remove(&s.name).ok_or_else(|| format!("no reader named {:?} is running", s.name))?;
                std::fs::write(&stop, b"").map_err(|e| e.to_string())?;
                let output = tokio::task::spawn_blocking(move || child.wait_with_output())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let stats: crate::reader::ReaderStats = serde_json::from_slice(&output.stdout)
                    .map_err(|e| format!("reader {} reported nothing readable: {e}", s.name))?;
                self.journal.record("reader", serde_json::to_value(&stats).unwrap_or_default());
                self.reader_stats.push(stats.clone());
                let stall_ms = stats.longest_stall_us / 1000;
                let ok = stats.failures <= s.max_failures
                    && stats.reads >= s.min_reads
                    && s.max_stall_ms.is_none_or(|m| stall_ms <= m);
                if ok {
                    Ok(())
                } else {
                    Err(StepError::mismatch(
                        format!("reader {}", s.name),
                        format!(
                            "≤ {} failures, ≥ {} reads{}",
                            s.max_failures,
                            s.min_reads,
                            s.max_stall_ms.map(|m| format!(", stall ≤ {m} ms")).unwrap_or_default()
                        ),
                        format!(
                            "{} failures, {} reads, longest stall {stall_ms} ms{}",
                            stats.failures,
                            stats.reads,
                            stats.first_error.map(|e| format!(" (first error: {e})")).unwrap_or_default()
                        ),
                    ))
                }
            }
            Step::ListDir(s) => {
                let path = self.path_in_root(&s.path.value);
                let names = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || -> std::io::Result<Vec<String>> {
                        std::fs::read_dir(path)?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect()
                    }
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| StepError::new(format!("cannot list {}: {e}", path.display())))?;
                let missing: Vec<&String> = s.contains.iter().filter(|n| !names.contains(n)).collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(StepError::mismatch(
                        format!("entries of {}", path.display()),
                        format!("{:?}", s.contains),
                        format!("{:?}", sorted(names)),
                    ))
                }
            }
            Step::MountConcurrently(s) => {
                let id = &s.daemon.value;
                let daemon = self.daemon(id)?;
                let manager = self.manager()?.clone();
                let mut tasks = tokio::task::JoinSet::new();
                // Written once: rewriting the instance's files while an earlier attempt
                // reads them would race (its image and configuration would be torn).
                let rafs = self.instance(&daemon, id, &s.snapshot.value).await?;
                for _ in 0..s.count.get() {
                    let (manager, daemon, rafs) = (manager.clone(), daemon.clone(), rafs.clone());
                    tasks.spawn(async move {
                        manager.mount_shared_instance(&daemon, rafs).await.map_err(|e| error_chain(&e))
                    });
                }
                let mut outcomes = Vec::new();
                while let Some(joined) = tasks.join_next().await {
                    outcomes.push(joined.map_err(|e| e.to_string())?);
                }
                let succeeded = outcomes.iter().filter(|o| o.is_ok()).count() as u32;
                if succeeded == s.successes {
                    Ok(())
                } else {
                    let errors: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
                    Err(StepError::mismatch(
                        format!("{} concurrent mounts of {}", s.count, s.snapshot.value),
                        format!("{} succeeding", s.successes),
                        format!("{succeeded} succeeded; errors: {errors:?}"),
                    ))
                }
            }
            Step::ForgetDaemon(s) => {
                let outcome = self.manager()?.delete_daemon(&s.daemon.value);
                check(&format!("forget {}", s.daemon.value), outcome, s.expect_error.as_ref())
            }
            Step::IntrudeSupervisor(s) => self.intrude_supervisor(&s.daemon.value).await,
        }
    }

    async fn intrude_supervisor(&self, id: &str) -> Result<(), StepError> {
        use tokio::io::AsyncReadExt;
        let socket = self.root.supervisor_dir().join(format!("{id}.sock"));
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

    /// Whether the last word on `id`'s recovery was `RecoveryFailed` (nothing started it
    /// again since).
    fn last_recovery_failed(&self, id: &str) -> bool {
        self.seen.iter().rev().find_map(|e| match e {
            ManagerEvent::RecoveryFailed { id: i, .. } if i == id => Some(true),
            ManagerEvent::Started { id: i, .. }
            | ManagerEvent::Restarted { id: i, .. }
            | ManagerEvent::FailedOver { id: i, .. }
            | ManagerEvent::Upgraded { id: i, .. }
                if i == id =>
            {
                Some(false)
            }
            _ => None,
        }) == Some(true)
    }

    /// [`check`], or with `may_fail` only a journal entry of the outcome.
    fn check_or_tolerate<E: std::error::Error + 'static>(
        &self,
        what: &str,
        outcome: Result<(), E>,
        step: &crate::scenario::model::InstanceStep,
    ) -> Result<(), StepError> {
        if !step.may_fail {
            return check(what, outcome, step.expect_error.as_ref());
        }
        let error = outcome.err().map(|e| error_chain(&e));
        self.journal.record("tolerated", serde_json::json!({ "what": what, "error": error }));
        Ok(())
    }

    /// The daemon is RUNNING and its mounts are exactly the instances recorded for it,
    /// now or within [`CONSISTENT_WITHIN`]: the manager settles a mount whose outcome it
    /// could not tell in the background, once the daemon answers again.
    async fn expect_consistent(&self, id: &str) -> Result<(), StepError> {
        let deadline = tokio::time::Instant::now() + CONSISTENT_WITHIN;
        loop {
            match self.check_consistent(id).await {
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    async fn check_consistent(&self, id: &str) -> Result<(), StepError> {
        let daemon = self.daemon(id)?;
        let state = daemon.get_state().await?;
        if state != daemon_core::DaemonState::Running {
            return Err(StepError::mismatch(format!("daemon {id} is not running"), "RUNNING", state.to_string()));
        }
        let served: Vec<String> =
            daemon.daemon_info().await?.backend_collection.unwrap_or_default().keys().cloned().collect();
        let store = self.manager()?.store();
        let recorded: Vec<String> = store
            .instances()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|r| r.daemon_id == id)
            .map(|r| r.relative_mountpoint())
            .collect();
        let (served, recorded) = (sorted(served), sorted(recorded));
        if served != recorded {
            return Err(StepError::mismatch(
                format!("daemon {id} serves other instances than the store records"),
                format!("recorded {recorded:?}"),
                format!("served {served:?}"),
            ));
        }
        Ok(())
    }

    /// Only the current processes of managed daemons run, and only their host mounts exist:
    /// no zombie, and no live process of a daemon whose recovery the manager gave up on.
    async fn expect_no_leaks(&self) -> Result<(), StepError> {
        let managed = self.manager.as_ref().map(|m| m.list_daemons()).unwrap_or_default();
        // A death can be reported (the monitor's connection hung up) a moment before the
        // child's reaper task has run: a zombie is a leak only if it stays one.
        let deadline = tokio::time::Instant::now() + REAPED_WITHIN;
        loop {
            let zombies: Vec<String> = managed
                .iter()
                .filter(|d| d.pid() > 0 && host_facts::process::state(d.pid()) == Some('Z'))
                .map(|d| format!("{} (pid {})", d.id(), d.pid()))
                .collect();
            if zombies.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::mismatch("daemon processes left unreaped", "none", zombies.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let given_up: Vec<String> = managed
            .iter()
            .filter(|d| d.is_alive() && self.last_recovery_failed(&d.id()))
            .map(|d| format!("{} (pid {})", d.id(), d.pid()))
            .collect();
        if !given_up.is_empty() {
            return Err(StepError::mismatch(
                "processes run for daemons whose recovery failed",
                "none",
                given_up.join(", "),
            ));
        }
        let live: Vec<u32> = managed.iter().filter(|d| d.is_alive()).map(|d| d.pid()).collect();
        let root = self.root.root().to_string_lossy().into_owned();
        let strays: Vec<u32> = processes_naming(&root).into_iter().filter(|p| !live.contains(p)).collect();
        if !strays.is_empty() {
            let described: Vec<String> = strays
                .iter()
                .map(|p| format!("{p} ({})", host_facts::process::cmdline(*p).unwrap_or_default().join(" ")))
                .collect();
            return Err(StepError::mismatch("processes outlived their daemons", "none", described.join("; ")));
        }
        let expected_mounts: Vec<PathBuf> =
            managed.iter().filter(|d| d.is_alive()).map(|d| d.host_mountpoint()).collect();
        let stray_mounts: Vec<String> = mounts_under(self.root.root())
            .into_iter()
            .filter(|m| !expected_mounts.contains(m))
            .map(|m| m.display().to_string())
            .collect();
        if !stray_mounts.is_empty() {
            return Err(StepError::mismatch("mounts left behind", "none", stray_mounts.join(", ")));
        }
        // Files under the root still open in the harness, other than the manager's store
        // and the harness's own journal.
        let open_files: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.starts_with(self.root.root()))
                    .filter(|target| {
                        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                        !(name.starts_with("nydus.db") || name == "harness.jsonl" || name == "client.jsonl")
                    })
                    .map(|t| t.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !open_files.is_empty() {
            return Err(StepError::mismatch("file descriptors left open", "none", open_files.join(", ")));
        }
        Ok(())
    }
}

fn check_report(s: &RestartManagerStep, report: &daemon_core::manager::RecoveryReport) -> Result<(), StepError> {
    let checks = [
        ("live", &s.live, report.live.clone()),
        ("restarted", &s.restarted, report.restarted.clone()),
        ("not_running", &s.not_running, report.not_running.iter().map(|(id, _)| id.clone()).collect()),
        ("failed", &s.failed, report.failed.iter().map(|(id, _)| id.clone()).collect()),
    ];
    for (name, wanted, have) in checks {
        if let Some(wanted) = wanted
            && sorted(wanted.clone()) != sorted(have.clone())
        {
            return Err(StepError::mismatch(
                format!("recovery sorted daemons differently ({name})"),
                format!("{name}: {:?}", sorted(wanted.clone())),
                format!("{report:?}"),
            ));
        }
    }
    Ok(())
}

/// One HTTP exchange on a mock's control socket; returns the raw reply.
fn control_request(socket: &std::path::Path, method: &str, path: &str, body: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(stream, "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .map_err(|e| e.to_string())?;
    let mut reply = vec![0u8; 64 * 1024];
    let n = stream.read(&mut reply).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}
