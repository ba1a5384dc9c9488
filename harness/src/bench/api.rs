//! API latency: through daemon-core's client, and over a raw connection with and without
//! a recorder in front, for the mock and a real nydusd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon_core::Timeouts;
use daemon_core::manager::RecoverPolicy;
use serde_json::{Value, json};

use super::lifecycle::rss_kb;
use super::{Bed, BenchError, Doing, percentile};

/// `GET /api/v1/daemon` on one keep-alive connection of daemon-core's client, `requests`
/// times after a warm-up: the latency daemon-core sees, for the mock or a real nydusd.
pub(super) async fn api_latency(
    binary: &Path,
    args: Vec<std::ffi::OsString>,
    requests: usize,
) -> Result<Value, BenchError> {
    let timeouts = Timeouts::default();
    let bed = Bed::with(binary, args, RecoverPolicy::None, timeouts)?;
    let daemon = bed.daemon("latency", timeouts).await?;
    let client = daemon.client().await?;
    for _ in 0..200 {
        client.get_daemon_info().await?;
    }
    let mut samples = Vec::with_capacity(requests);
    let all = Instant::now();
    for _ in 0..requests {
        let one = Instant::now();
        client.get_daemon_info().await?;
        samples.push(one.elapsed());
    }
    let per_second = requests as f64 / all.elapsed().as_secs_f64();
    // A graceful stop: a real nydusd unmounts its FUSE mountpoint on SIGTERM.
    daemon.terminate()?;
    let _ = daemon.wait_for_exit_and_unmount().await;
    let mut s = samples;
    Ok(json!({
        "requests": requests,
        "p50_us": percentile(&mut s, 0.5) * 1e3,
        "p99_us": percentile(&mut s, 0.99) * 1e3,
        "requests_per_second": per_second,
    }))
}

/// Requests of the raw-client measurement: five rounds of this many, then the RSS.
const RAW_ROUND: usize = 20_000;
const RAW_ROUNDS: usize = 5;

/// `GET /api/v1/daemon` over one raw keep-alive connection (no HTTP client library in the
/// way), for the mock and, when given, a real nydusd, each directly, through the injector
/// with no rule, and through a `harness record` proxy in front of it, in turns round by round so all see the same
/// machine; then each daemon's (or recorder's) resident memory after the 101 000 requests.
/// A proxied row carries `overhead_p50_us`: what the injector or the recorder adds to each
/// call.
pub(super) async fn raw_api(
    harness: &Path,
    real: Option<&(PathBuf, Vec<std::ffi::OsString>)>,
) -> Result<Value, BenchError> {
    let timeouts = Timeouts::default();
    // (name, bed, the direct target an injected one stands in front of)
    let mut beds: Vec<(String, Bed, Option<usize>)> =
        vec![("mock".into(), Bed::with(harness, vec!["--mock-no-abort".into()], RecoverPolicy::None, timeouts)?, None)];
    let mut direct: Vec<(PathBuf, Vec<std::ffi::OsString>)> = Vec::new();
    if let Some((binary, args)) = real {
        beds.push(("real nydusd".into(), Bed::with(binary, args.clone(), RecoverPolicy::None, timeouts)?, None));
    }
    // The injector (faults in front of a real nydusd) with no rule, in front of each: the
    // mock behind it is the harness linked in as `mock-nydusd`.
    let (scratch, _owned_scratch) =
        crate::containment::owned_tempdir("bench-inject").doing("a directory for the injectors")?;
    let mock_program = scratch.path().join("mock-nydusd");
    std::os::unix::fs::symlink(harness, &mock_program).doing("linking the mock for the injector")?;
    direct.push((mock_program, vec!["--mock-no-abort".into()]));
    if let Some((binary, args)) = real {
        direct.push((binary.clone(), args.clone()));
    }
    for (i, (program, args)) in direct.into_iter().enumerate() {
        let mut injector_args: Vec<std::ffi::OsString> = vec![
            crate::record::inject::options::NYDUSD_FLAG.into(),
            program.into(),
            "--inject-dir".into(),
            scratch.path().join(format!("inject-{i}")).into(),
            // Journalled as in a scenario: each exchange is a line.
            "--mock-journal".into(),
            scratch.path().join(format!("inject-{i}.jsonl")).into(),
        ];
        injector_args.extend(args);
        let name = format!("{} through the injector", beds[i].0);
        beds.push((name, Bed::with(harness, injector_args, RecoverPolicy::None, timeouts)?, Some(i)));
    }
    let mut served = Vec::new();
    for (name, bed, proxied) in &beds {
        let daemon = bed.daemon("raw", timeouts).await?;
        served.push((name.clone(), daemon, *proxied));
    }
    // Each target: its name, socket, the pid whose memory is reported, and which direct
    // target it proxies.
    let mut targets: Vec<(String, PathBuf, u32, Option<usize>)> =
        served.iter().map(|(n, d, proxied)| (n.clone(), d.api_socket(), d.pid(), *proxied)).collect();
    let (recordings, _owned) =
        crate::containment::owned_tempdir("bench-record").doing("a directory for the recordings")?;
    let mut recorders = Vec::new();
    for (i, (name, daemon, proxied)) in served.iter().enumerate() {
        if proxied.is_some() {
            continue;
        }
        let recorder = start_recorder(harness, &daemon.api_socket(), &recordings.path().join(format!("{i}"))).await?;
        let pid = recorder.0.id().unwrap_or(0);
        targets.push((format!("{name} through harness record"), recorder.1.clone(), pid, Some(i)));
        recorders.push(recorder);
    }
    let sockets: Vec<(PathBuf, u32)> = targets.iter().map(|(_, s, p, _)| (s.clone(), *p)).collect();
    let measured = tokio::task::spawn_blocking(move || measure_raw(&sockets)).await??;
    for (_, daemon, _) in &served {
        daemon.terminate()?;
        let _ = daemon.wait_for_exit_and_unmount().await;
    }
    for (mut child, _) in recorders {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(raw_rows(&targets, measured))
}

/// One target's samples, the time it was busy, and its resident memory after.
type RawMeasured = (Vec<Duration>, Duration, u64);

/// The raw-client rounds over each socket, in turns; blocking.
fn measure_raw(sockets: &[(PathBuf, u32)]) -> Result<Vec<RawMeasured>, BenchError> {
    use std::io::Write;
    const REQUEST: &[u8] = b"GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut streams = Vec::new();
    for (socket, _) in sockets {
        let mut stream =
            std::os::unix::net::UnixStream::connect(socket).doing(format!("connecting to {}", socket.display()))?;
        let mut buf = Vec::new();
        for _ in 0..1_000 {
            stream.write_all(REQUEST).doing("a request")?;
            testkit::read_reply_into(&mut stream, &mut buf);
        }
        streams.push(stream);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); sockets.len()];
    let mut busy = vec![Duration::ZERO; sockets.len()];
    let mut buf = Vec::with_capacity(2048);
    for _ in 0..RAW_ROUNDS {
        for (i, stream) in streams.iter_mut().enumerate() {
            let round = Instant::now();
            for _ in 0..RAW_ROUND {
                let one = Instant::now();
                stream.write_all(REQUEST).doing("a request")?;
                testkit::read_reply_into(stream, &mut buf);
                samples[i].push(one.elapsed());
            }
            busy[i] += round.elapsed();
        }
    }
    Ok(samples.into_iter().zip(busy).zip(sockets).map(|((s, b), (_, pid))| (s, b, rss_kb(*pid).unwrap_or(0))).collect())
}

/// A row per target; a proxied one also says what the recorder added to the p50.
fn raw_rows(targets: &[(String, PathBuf, u32, Option<usize>)], measured: Vec<RawMeasured>) -> Value {
    let mut rows: Vec<Value> = targets
        .iter()
        .zip(measured)
        .map(|((name, _, _, _), (mut s, busy, rss))| {
            json!({
                "daemon": name,
                "requests": 1_000 + RAW_ROUNDS * RAW_ROUND,
                "p50_us": percentile(&mut s, 0.5) * 1e3,
                "p99_us": percentile(&mut s, 0.99) * 1e3,
                "requests_per_second": (RAW_ROUNDS * RAW_ROUND) as f64 / busy.as_secs_f64(),
                "rss_kb_after": rss,
            })
        })
        .collect();
    for (i, (.., proxied)) in targets.iter().enumerate() {
        if let Some(direct) = proxied {
            let added =
                rows[i]["p50_us"].as_f64().unwrap_or(f64::NAN) - rows[*direct]["p50_us"].as_f64().unwrap_or(f64::NAN);
            rows[i]["overhead_p50_us"] = added.into();
        }
    }
    Value::Array(rows)
}

/// `harness record --upstream <socket>` into `out`, once it listens: the process (killed
/// when dropped) and the socket it listens on.
pub(super) async fn start_recorder(
    harness: &Path,
    upstream: &Path,
    out: &Path,
) -> Result<(tokio::process::Child, PathBuf), BenchError> {
    let listen = out.with_extension("sock");
    let child = tokio::process::Command::new(harness)
        .arg("record")
        .arg("--upstream")
        .arg(upstream)
        .arg("--listen")
        .arg(&listen)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .doing(format!("starting {} record", harness.display()))?;
    // Its first line is written once it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(out.join(crate::record::recording::FILE_NAME))
        .is_ok_and(|t| t.contains(r#""event":"recording""#))
    {
        if Instant::now() >= deadline {
            return Err(BenchError::Measurement(format!(
                "the recorder in front of {} never listened",
                upstream.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((child, listen))
}
