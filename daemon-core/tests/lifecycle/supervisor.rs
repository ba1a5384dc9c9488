//! Supervisor handoff between real mock processes, and its deadlines and peer checks.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_core::DaemonState;
use daemon_core::fdpass;
use daemon_core::supervisor::{OnRefused, RefusedPeer, SupervisorError, SupervisorSet};
use libtest_mimic::Trial;

use crate::support::{Env, TestResult, ensure, file_identity, open_files_of, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("supervisor::fetch_and_offer_hand_a_mock_state_and_its_open_file_to_a_successor", &[], handoff),
        trial("supervisor::a_failed_trigger_ends_the_fetch_at_once_and_frees_the_supervisor", &[], failed_trigger),
        trial("supervisor::fetch_gives_up_at_its_deadline_when_nothing_arrives", &[], fetch_deadline),
        trial(
            "supervisor::a_sendfd_acknowledged_without_a_connection_ends_the_fetch_at_once",
            &[],
            acknowledged_without_sending,
        ),
        trial("supervisor::connections_from_other_processes_are_refused", &[], foreign_peer),
        trial("supervisor::an_unclaimed_offer_ends_at_its_deadline_and_removes_the_socket", &[], offer_deadline),
        trial("supervisor::a_dropped_offer_is_withdrawn_at_once_and_can_be_made_again", &[], dropped_offer),
        trial("supervisor::two_mib_of_state_round_trip_and_can_be_offered_twice", &[], large_state),
        trial("supervisor::set_replaces_and_destroys_supervisors", &[], set_semantics),
        trial(
            "supervisor::a_fetch_queued_behind_a_takeover_takes_the_state_from_the_replacement",
            &[],
            fetch_queued_behind_a_takeover,
        ),
        trial(
            "supervisor::a_successor_that_connects_before_it_is_allowed_is_served_not_refused",
            &[],
            successor_connects_before_allow,
        ),
    ]
}

async fn handoff() -> TestResult {
    let env = Env::new()?;
    let supervisors = SupervisorSet::new(env.layout.supervisor_dir())?;
    let old = env.shared_daemon("d1")?;
    let supervisor = supervisors.create("d1");
    ensure(old.record().supervisor_path == supervisor.socket(), "daemon and supervisor agree on the socket")?;
    env.spawn(&old, false).await?;
    old.wait_until_state(DaemonState::Running).await?;
    old.mount("/snap1", &daemon_core::MountRequest::rafs(env.stand_in()?, testkit::ACCEPTED_CONFIG)).await?;

    supervisor.fetch(old.pid(), old.send_fd(), Duration::from_secs(5)).await?;
    let saved = supervisor.saved().ok_or("nothing saved")?;
    ensure(!saved.data.is_empty(), "state blob is empty")?;
    ensure(!supervisor.socket().exists(), "the fetch socket is removed afterwards")?;
    let held = file_identity(saved.fd.as_fd())?;
    ensure(open_files_of(old.pid())?.contains(&held), "the fd saved is one the old daemon holds")?;

    old.signal_child(nix::sys::signal::Signal::SIGKILL)?;
    old.wait_child().await;

    let new = daemon_core::Daemon::from_state(old.record(), 0, Env::timeouts());
    let offer = supervisor.offer(Duration::from_secs(5)).await?;
    let pid = env.spawn(&new, true).await?;
    offer.allow(pid);
    new.wait_until_state(DaemonState::Init).await?;
    new.takeover().await?;
    ensure(offer.finished().await? == pid, "the successor took the state")?;
    new.wait_until_state(DaemonState::Ready).await?;
    new.start().await?;
    new.wait_until_state(DaemonState::Running).await?;
    let info = new.client().await?.get_daemon_info().await?;
    let mounts = info.backend_collection.ok_or("no backend_collection")?;
    ensure(mounts.contains_key("/snap1"), format!("the successor restored the mount: {mounts:?}"))?;
    ensure(open_files_of(pid)?.contains(&held), "the successor holds the very same open file")
}

async fn failed_trigger() -> TestResult {
    let env = Env::new()?;
    let supervisors = SupervisorSet::new(env.layout.supervisor_dir())?;
    let supervisor = supervisors.create("d1");
    let started = Instant::now();
    let err = supervisor
        .fetch(
            std::process::id(),
            async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) },
            Duration::from_secs(30),
        )
        .await
        .err()
        .ok_or("a failed trigger must fail the fetch")?;
    // The trigger's own error is kept (it was flattened into a string before).
    let cause = match &err {
        SupervisorError::Trigger { source, .. } => source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        _ => None,
    };
    ensure(cause == Some(std::io::ErrorKind::ConnectionRefused), format!("{err}: {err:?}"))?;
    ensure(started.elapsed() < Duration::from_secs(5), "returned at once, not at the deadline")?;
    ensure(!supervisor.socket().exists(), "socket removed")?;
    // The supervisor is free again: a second fetch gets as far as its own deadline.
    let hung_trigger = std::future::pending::<Result<(), std::io::Error>>();
    let again = supervisor.fetch(std::process::id(), hung_trigger, Duration::from_millis(100)).await;
    ensure(matches!(again, Err(SupervisorError::Timeout { .. })), format!("{again:?}"))
}

async fn fetch_deadline() -> TestResult {
    let env = Env::new()?;
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.create("d1");
    let hung_trigger = std::future::pending::<Result<(), std::io::Error>>();
    let result = supervisor.fetch(std::process::id(), hung_trigger, Duration::from_millis(200)).await;
    ensure(matches!(result, Err(SupervisorError::Timeout { .. })), format!("{result:?}"))?;
    ensure(!supervisor.socket().exists(), "socket removed after the deadline")?;
    ensure(supervisor.saved().is_none(), "nothing saved")
}

/// nydusd 2.2 answers sendfd with 204 and never connects; nydusd sends before it answers,
/// so the fetch ends on the answer instead of waiting out its deadline.
async fn acknowledged_without_sending() -> TestResult {
    let env = Env::new()?;
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.create("d1");
    let stub = async { Ok::<(), std::io::Error>(()) };
    let result = supervisor.fetch(std::process::id(), stub, Duration::from_secs(30)).await;
    ensure(matches!(result, Err(SupervisorError::NotSent { .. })), format!("{result:?}"))?;
    ensure(!supervisor.socket().exists(), "socket removed")?;
    ensure(supervisor.saved().is_none(), "nothing saved")
}

async fn foreign_peer() -> TestResult {
    let env = Env::new()?;
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = told.clone();
    let on_refused = OnRefused::new(move |peer| record.lock().unwrap().push(peer));
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.with_on_refused(on_refused).create("d1");
    let socket = supervisor.socket().to_owned();
    // The expected sender is pid 1; this test process connects and offers a planted fd.
    let intruder = async move {
        let mut stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        let file = tempfile::tempfile()?;
        let _ = fdpass::send(&mut stream, b"planted", file.as_fd());
        // Like a hung sendfd call: the fetch can only end at its deadline.
        std::future::pending::<Result<(), std::io::Error>>().await
    };
    let result = supervisor.fetch(1, intruder, Duration::from_millis(300)).await;
    ensure(matches!(result, Err(SupervisorError::Timeout { .. })), format!("{result:?}"))?;
    ensure(supervisor.refused_peers() == 1, format!("refused {}", supervisor.refused_peers()))?;
    let expected =
        RefusedPeer { id: "d1".into(), pid: std::process::id(), uid: nix::unistd::getuid().as_raw(), expected: 1 };
    let told = told.lock().unwrap().clone();
    ensure(told == [expected], format!("told {told:?}"))?;
    ensure(supervisor.saved().is_none(), "the planted state was not saved")
}

async fn offer_deadline() -> TestResult {
    let env = Env::new()?;
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.create("d1");
    let nothing = supervisor.offer(Duration::from_secs(1)).await;
    ensure(matches!(nothing, Err(SupervisorError::NothingSaved { .. })), "nothing to offer yet")?;
    supervisor.save(b"state".to_vec(), tempfile::tempfile()?.into());
    let offer = supervisor.offer(Duration::from_millis(100)).await?;
    ensure(supervisor.socket().exists(), "listening while the offer stands")?;
    let mode = std::fs::metadata(supervisor.socket())?.permissions().mode() & 0o777;
    ensure(mode == 0o600, format!("supervisor socket mode {mode:o}"))?;
    let result = offer.finished().await;
    ensure(matches!(result, Err(SupervisorError::Timeout { .. })), format!("{result:?}"))?;
    // As upstream's TestSupervisorTimeout: afterwards nobody can connect.
    ensure(UnixStream::connect(supervisor.socket()).is_err(), "the socket is gone")
}

async fn dropped_offer() -> TestResult {
    let env = Env::new()?;
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.create("d1");
    supervisor.save(b"state".to_vec(), tempfile::tempfile()?.into());
    let offer = supervisor.offer(Duration::from_secs(30)).await?;
    drop(offer);
    ensure(!supervisor.socket().exists(), "the socket of a withdrawn offer is gone")?;
    // Before the fix the abandoned offer held the supervisor until its 30 s deadline.
    let again = tokio::time::timeout(Duration::from_secs(5), supervisor.offer(Duration::from_millis(50))).await;
    let again = again.map_err(|_| "a second offer waited for the withdrawn one")??;
    let result = again.finished().await;
    ensure(matches!(result, Err(SupervisorError::Timeout { .. })), format!("{result:?}"))
}

async fn large_state() -> TestResult {
    let env = Env::new()?;
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.create("su1");
    let data: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let file = tempfile::tempfile()?;
    let sent_identity = file_identity(file.as_fd())?;
    let socket = supervisor.socket().to_owned();
    let payload = data.clone();
    let sender = async move {
        let mut stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        tokio::task::spawn_blocking(move || fdpass::send(&mut stream, &payload, file.as_fd()))
            .await
            .map_err(std::io::Error::other)?
    };
    supervisor.fetch(std::process::id(), sender, Duration::from_secs(5)).await?;
    for round in 0..2 {
        let offer = supervisor.offer(Duration::from_secs(5)).await?;
        offer.allow(std::process::id());
        let socket = supervisor.socket().to_owned();
        let (received, fds) = tokio::task::spawn_blocking(move || {
            let stream = UnixStream::connect(socket)?;
            fdpass::receive(&stream, 64 * 1024, 64 * 1024 * 1024)
        })
        .await??;
        offer.finished().await?;
        ensure(received == data, format!("round {round}: {} bytes differ", received.len()))?;
        ensure(fds.len() == 1, format!("round {round}: {} fds", fds.len()))?;
        ensure(file_identity(fds[0].as_fd())? == sent_identity, format!("round {round}: another file"))?;
    }
    Ok(())
}

async fn set_semantics() -> TestResult {
    let env = Env::new()?;
    let dir = env.layout.supervisor_dir();
    let supervisors = SupervisorSet::new(&dir)?;
    let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
    ensure(mode == 0o700, format!("supervisor dir mode {mode:o}: the sockets hand out FUSE fds"))?;
    let first = supervisors.create("d1");
    first.save(b"a".to_vec(), tempfile::tempfile()?.into());
    let second = supervisors.create("d1");
    ensure(first.saved().is_none(), "the replaced supervisor dropped its state and fd")?;
    ensure(std::sync::Arc::ptr_eq(&supervisors.get("d1").ok_or("missing")?, &second), "get returns the new one")?;
    supervisors.destroy("d1")?;
    ensure(supervisors.get("d1").is_none(), "destroyed")?;
    ensure(matches!(supervisors.destroy("d1"), Err(SupervisorError::NotFound(_))), "second destroy is NotFound")
}

/// The failover-during-mount race (issue 25): a mount fails because nydusd died, and the
/// mount's supervisor refresh queues behind the failover's takeover (one transfer at a
/// time). Before the fix the refresh had taken the dead process's pid before queueing, so
/// the replacement's connection was refused as an intruder and the refresh ran to its
/// deadline (the mount step returned about 5 s late).
async fn fetch_queued_behind_a_takeover() -> TestResult {
    let env = Env::new()?;
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = refused.clone();
    let on_refused = OnRefused::new(move |peer| record.lock().unwrap().push(peer));
    let supervisors = SupervisorSet::new(env.layout.supervisor_dir())?.with_on_refused(on_refused);
    let supervisor = supervisors.create("d1");
    let daemon = Arc::new(env.shared_daemon("d1")?);
    daemon.set_supervisor(Some(supervisor.clone()));
    let first = env.spawn(&daemon, false).await?;
    daemon.wait_until_state(DaemonState::Running).await?;
    daemon.send_states().await?;

    // The failover holds the supervisor while the refresh of the failed mount waits.
    daemon.signal_child(nix::sys::signal::Signal::SIGKILL)?;
    daemon.wait_child().await;
    let offer = supervisor.offer(Duration::from_secs(5)).await?;
    let queued = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.send_states().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure(!queued.is_finished(), "the refresh waits for the takeover")?;
    let replacement = env.spawn(&daemon, true).await?;
    ensure(replacement != first, "a new process")?;
    offer.allow(replacement);
    daemon.wait_until_state(DaemonState::Init).await?;
    daemon.takeover().await?;
    ensure(offer.finished().await? == replacement, "the replacement took the state")?;
    daemon.wait_until_state(DaemonState::Ready).await?;
    daemon.start().await?;
    daemon.wait_until_state(DaemonState::Running).await?;

    let started = Instant::now();
    let refreshed = tokio::time::timeout(Duration::from_secs(10), queued).await.map_err(|_| "refresh hung")??;
    let refused = refused.lock().unwrap().clone();
    ensure(refused.is_empty(), format!("the replacement was refused as an intruder: {refused:?}"))?;
    ensure(refreshed.is_ok(), format!("the queued refresh failed: {refreshed:?}"))?;
    ensure(started.elapsed() < Duration::from_secs(2), format!("the refresh took {:?}", started.elapsed()))?;
    let saved = supervisor.saved().ok_or("nothing saved")?;
    ensure(open_files_of(replacement)?.contains(&file_identity(saved.fd.as_fd())?), "the state is the replacement's")
}

/// The other window of the same kind: a successor that connects between its spawn and
/// the `allow` naming it (its pid is recorded, with a sync, in between) waits for the
/// allow instead of being refused.
async fn successor_connects_before_allow() -> TestResult {
    let env = Env::new()?;
    let supervisor = SupervisorSet::new(env.layout.supervisor_dir())?.create("d1");
    supervisor.save(b"state".to_vec(), tempfile::tempfile()?.into());
    let offer = supervisor.offer(Duration::from_secs(5)).await?;
    let socket = supervisor.socket().to_owned();
    let taker = tokio::task::spawn_blocking(move || {
        let stream = UnixStream::connect(socket)?;
        fdpass::receive(&stream, 64 * 1024, 1024 * 1024)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    offer.allow(std::process::id());
    let (data, fds) = tokio::time::timeout(Duration::from_secs(5), taker).await.map_err(|_| "taker hung")???;
    ensure(data == b"state" && fds.len() == 1, format!("{} bytes, {} fds", data.len(), fds.len()))?;
    ensure(offer.finished().await? == std::process::id(), "served the allowed pid")?;
    ensure(supervisor.refused_peers() == 0, format!("refused {}", supervisor.refused_peers()))
}
