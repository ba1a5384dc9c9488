//! daemon-core's client against a mock process it does not share code with: the mock
//! decodes queries and encodes replies on its own (crate `nydusd-api` is their only
//! common ground), so what the client sends and reads is checked against another reading.

use daemon_core::api::{ClientError, ErrorKind};
use daemon_core::{DaemonState, MountRequest, NydusdClient};
use libtest_mimic::Trial;
use testkit::MockProcess;

use crate::support::{Env, TestResult, ensure, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("client::drives_the_mock_through_mount_errors_and_state_events", &[], drives_the_mock),
        trial("client::awkward_mountpoints_reach_the_daemon_as_they_were_given", &[], awkward_mountpoints),
        trial("client::invalid_json_is_a_decode_error", &[], invalid_json),
        trial("client::a_body_cut_short_by_a_close_is_a_transport_error", &[], truncated_body),
    ]
}

async fn drives_the_mock() -> TestResult {
    let env = Env::new()?;
    let mock = MockProcess::start(&env.nydusd, &[]);
    let client = NydusdClient::new(&mock.sock);
    ensure(client.get_daemon_info().await?.state == DaemonState::Running, "RUNNING after start-up")?;
    client.mount("/a", &MountRequest::rafs(env.stand_in()?, testkit::ACCEPTED_CONFIG)).await?;
    let err = client
        .mount("/a", &MountRequest::rafs(env.stand_in()?, testkit::ACCEPTED_CONFIG))
        .await
        .err()
        .ok_or("a second mount at /a")?;
    ensure(err.kind() == ErrorKind::AlreadyExists && err.status() == Some(500), format!("{err:?}"))?;
    client.umount("/a").await?;
    let err = client.start().await.err().ok_or("start while RUNNING")?;
    ensure(err.daemon_message() == Some(r#"Configure(DaemonAbnormal(UnexpectedEvent("Start")))"#), format!("{err:?}"))
}

/// The client's query encoding, read back by the mock's decoding: each mountpoint must be
/// the key the daemon files the instance under, and an umount must find it again.
async fn awkward_mountpoints() -> TestResult {
    let env = Env::new()?;
    let mock = MockProcess::start(&env.nydusd, &[]);
    let client = NydusdClient::new(&mock.sock);
    let awkward = ["/with space", "/a&b=c", "/plus+sign", "/per%cent", "/hash#tag", "/ünï", "/q?x=1", "/tab\there"];
    for mountpoint in awkward {
        client.mount(mountpoint, &MountRequest::rafs(env.stand_in()?, testkit::ACCEPTED_CONFIG)).await?;
    }
    let info = client.get_daemon_info().await?;
    let mut served: Vec<String> = info.backend_collection.ok_or("no collection")?.keys().cloned().collect();
    let mut wanted: Vec<String> = awkward.iter().map(|m| m.to_string()).collect();
    served.sort();
    wanted.sort();
    ensure(served == wanted, format!("the daemon serves {served:?}, the client asked for {wanted:?}"))?;
    for mountpoint in awkward {
        client.umount(mountpoint).await?;
    }
    let left = client.get_daemon_info().await?.backend_collection.unwrap_or_default();
    ensure(left.is_empty(), format!("left after umounting each: {left:?}"))
}

fn rule(when: &str, then: &str) -> String {
    format!("rules:\n  - name: under-test\n    when: {when}\n    then: {then}\n")
}

async fn invalid_json() -> TestResult {
    let env = Env::new()?;
    let script = rule("{path: /api/v1/daemon}", "[{respond: {status: 200, body: '{\"state\": RUN'}}]");
    let mock = MockProcess::start_scripted(&env.nydusd, &script, &[]);
    mock.wait_for_socket();
    let err = NydusdClient::new(&mock.sock).get_daemon_info().await.err().ok_or("garbage decoded")?;
    ensure(matches!(err, ClientError::Decode { .. }), format!("{err:?}"))
}

async fn truncated_body() -> TestResult {
    let env = Env::new()?;
    let script =
        rule("{path: /api/v1/daemon}", "[{respond: {status: 200, body: '{\"state\":', content_length: 200}}, close]");
    let mock = MockProcess::start_scripted(&env.nydusd, &script, &[]);
    mock.wait_for_socket();
    let err = NydusdClient::new(&mock.sock).get_daemon_info().await.err().ok_or("a cut body decoded")?;
    ensure(matches!(err, ClientError::Transport { .. }), format!("{err:?}"))
}
