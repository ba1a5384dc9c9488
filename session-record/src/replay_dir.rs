//! `harness replay DIR`: the recording in `DIR` played on the mock, and compared.
//!
//! It writes `DIR/mock-script.json` (the recorded daemon as a mock script),
//! `DIR/replay.yaml` (the same replay as a scenario) and `DIR/replay/` (the mock's
//! socket, log and mountpoint, the replay's own recording, the comparison). A recording
//! may come from someone else, so nothing there is written or removed through a symbolic
//! link: a link in the place of a file or directory the replay writes is refused, naming
//! it, before anything is written, and files are written beside their name and renamed
//! over it.
//!
//! Every failure names its cause: a mock that exits before it listens is reported with
//! the last lines of its log at once, and a replay that would take longer than its cap
//! (a recording whose timestamps jump, a tiny `--speed`) is refused before it starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::compare::Comparison;
use super::recording::{Recording, RecordingError};
use super::replay::{DriveError, ReplayOptions, SOCKET_WAIT, drive};

/// The fastest and slowest speeds a replay runs at.
pub const SPEEDS: std::ops::RangeInclusive<f64> = 1e-3..=1e6;

/// The longest a replay may take by default: its recorded span divided by the speed.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);

/// How a replay runs.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// Time runs this many times as fast as recorded (within [`SPEEDS`]).
    pub speed: f64,
    /// A replay that would take longer is refused before it starts.
    pub max_duration: Duration,
}

/// Why `harness replay` could not compare.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--speed {0} is outside {min}..={max}", min = SPEEDS.start(), max = SPEEDS.end())]
    Speed(f64),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error(
        "{}: a line is stamped {before_ns} ns before the recording's first line; timestamps are CLOCK_MONOTONIC and never go back",
        path.display()
    )]
    Timestamp { path: PathBuf, before_ns: u64 },
    #[error(
        "replaying {} at speed {speed} would take {} (its lines span {}), past the cap of {}; raise --speed or --max-duration",
        path.display(), human(*would_take), human(*span), human(*cap)
    )]
    TooLong { path: PathBuf, speed: f64, span: Duration, would_take: Duration, cap: Duration },
    #[error("{} is a symbolic link; a replay writes nothing through a link in a recording's directory", path.display())]
    Symlink { path: PathBuf },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the mock script")]
    Script(#[source] serde_json::Error),
    #[error("cannot write the replay scenario")]
    Scenario(#[source] serde_saphyr::ser::Error),
    #[error("cannot start the mock {}", mock.display())]
    MockStart {
        mock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the mock exited ({status}) before it listened on {}; its log {} says: {said}", socket.display(), log.display())]
    MockExited { status: String, socket: PathBuf, log: PathBuf, said: String },
    #[error("the mock did not listen on {} within {SOCKET_WAIT:?}; its log {} says: {said}", socket.display(), log.display())]
    MockSilent { socket: PathBuf, log: PathBuf, said: String },
    #[error(transparent)]
    Drive(#[from] DriveError),
}

/// A duration as people read it.
fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    match secs {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.0} days", s / 86_400.0),
    }
}

/// How long replaying `recording` at `speed` takes, checked against `cap`.
pub fn replay_duration(recording: &Recording, speed: f64, cap: Duration) -> Result<Duration, ReplayError> {
    if !speed.is_finite() || !SPEEDS.contains(&speed) {
        return Err(ReplayError::Speed(speed));
    }
    let first = recording.header_ns;
    if let Some(early) = recording.entries.iter().find(|e| e.t_ns < first) {
        return Err(ReplayError::Timestamp { path: recording.path.clone(), before_ns: first - early.t_ns });
    }
    let last = recording.entries.last().map_or(first, |e| e.t_ns);
    let span = Duration::from_nanos(last - first);
    let would_take = Duration::try_from_secs_f64(span.as_secs_f64() / speed).unwrap_or(Duration::MAX);
    if would_take > cap {
        return Err(ReplayError::TooLong { path: recording.path.clone(), speed, span, would_take, cap });
    }
    Ok(would_take)
}

/// The daemon release a recording came from, as its `GET /api/v1/daemon` replies say
/// (`version.package_ver`): `"2.2"` for 2.2.x, else `"2.4"`.
pub fn recorded_release(recording: &Recording) -> &'static str {
    let session = super::http::Session::of(recording);
    let release = session.exchanges().iter().find_map(|e| {
        let reply = e.reply?;
        let info: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        let version = info.pointer("/version/package_ver")?.as_str()?.to_owned();
        (e.request.path() == "/api/v1/daemon").then_some(version)
    });
    match release {
        Some(v) if v.starts_with("2.2") || v.starts_with("v2.2") => "2.2",
        _ => "2.4",
    }
}

/// The file of the recorded daemon's script, beside the recording: JSON, which the mock
/// reads without the node budget it keeps for YAML (a 100 000-call session is millions of
/// nodes).
pub const SCRIPT_FILE: &str = "mock-script.json";

/// What a replay found, and what of the recording its script could not play.
#[derive(Debug)]
pub struct Replayed {
    pub comparison: Comparison,
    pub notes: Vec<String>,
}

/// Writes `bytes` to `path` without following a link there: written beside it, then
/// renamed over it, 0600.
fn write_beside(path: &Path, bytes: &[u8]) -> Result<(), ReplayError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action, source| ReplayError::Io { action, path: path.to_owned(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    if let Err(source) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(io("write", source));
    }
    Ok(())
}

/// `dir/name` when it is not a symbolic link (it may be absent).
fn not_a_link(dir: &Path, name: &str) -> Result<PathBuf, ReplayError> {
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(ReplayError::Symlink { path }),
        _ => Ok(path),
    }
}

/// The last lines of a log, for a message (at most 2 KiB of its end).
fn tail_of(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return "(no log)".into() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut bytes = Vec::new();
    let _ = file.take(2048).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() { "(nothing)".into() } else { tail }
}

/// `harness replay DIR`: writes the mock script that plays the recorded daemon to
/// `DIR/mock-script.json` and the scenario `DIR/replay.yaml`, runs the mock (`harness`,
/// this program, which runs as the mock under the name `mock-nydusd`) on the script in
/// `DIR/replay/`, replays the client side, and compares. The mock is killed and its
/// socket and link removed whatever happens; `DIR/replay/recording.jsonl` stays.
pub async fn replay_on_mock(dir: &Path, harness: &Path, settings: ReplaySettings) -> Result<Replayed, ReplayError> {
    let speed = settings.speed;
    if !speed.is_finite() || !SPEEDS.contains(&speed) {
        return Err(ReplayError::Speed(speed));
    }
    let recording = Recording::read(dir)?;
    replay_duration(&recording, speed, settings.max_duration)?;
    let script_path = not_a_link(dir, SCRIPT_FILE)?;
    let scenario_path = not_a_link(dir, super::replay::SCENARIO_FILE)?;
    let work = not_a_link(dir, "replay")?;
    let generated = super::generate::script(&recording, speed);
    let text = serde_json::to_string_pretty(&generated.script).map_err(ReplayError::Script)?;
    write_beside(&script_path, text.as_bytes())?;
    let scenario = super::generate::scenario(&recording, SCRIPT_FILE, speed, recorded_release(&recording))
        .map_err(ReplayError::Scenario)?;
    let scenario = format!(
        "# The session recorded in {}, replayed by `harness run` on the mock: written by\n# `harness replay` at speed {speed}.\n{scenario}",
        dir.display()
    );
    write_beside(&scenario_path, scenario.as_bytes())?;

    let files = WorkFiles::prepare(&work)?;
    let started = start_mock(&files, harness, &script_path, recorded_release(&recording));
    let mock = files.mock.clone();
    let (socket, log, out) = (files.socket, files.log, files.out);
    let mut child = started?.map_err(|source| ReplayError::MockStart { mock, source })?;
    let outcome = async {
        wait_until_listening(&mut child, &socket, &log).await?;
        let options = ReplayOptions { socket: socket.clone(), speed, out: out.clone() };
        let exit = async {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await.ok()?;
            Some((status.code(), status.signal()))
        };
        drive(&recording, &options, exit).await?;
        Ok::<(), ReplayError>(())
    }
    .await;
    // Ends the mock if the replay left it running (a recording cut before the daemon's end).
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_file(&socket);
    outcome?;
    let replayed = Recording::read(&out)?;
    let comparison = super::compare::compare_replay(&recording, &replayed, speed);
    let json = serde_json::to_string_pretty(&comparison).unwrap_or_default();
    write_beside(&not_a_link(&work, "comparison.json")?, json.as_bytes())?;
    Ok(Replayed { comparison, notes: generated.notes })
}

/// The files of `DIR/replay/`, none of them a link.
struct WorkFiles {
    /// A link to the harness binary, which runs as the mock under this name.
    mock: PathBuf,
    socket: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    /// The replay's own recording.
    out: PathBuf,
}

impl WorkFiles {
    /// Creates `work` and its mount point, and checks every file in it before any is
    /// written: a link found late used to leave the mock's link behind.
    fn prepare(work: &Path) -> Result<Self, ReplayError> {
        use std::os::unix::fs::DirBuilderExt;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(work).map_err(io("create", work))?;
        let files = Self {
            mock: not_a_link(work, "mock-nydusd")?,
            socket: not_a_link(work, "api.sock")?,
            mnt: not_a_link(work, "mnt")?,
            log: not_a_link(work, "mock.log")?,
            out: not_a_link(work, super::recording::FILE_NAME)?,
        };
        builder.create(&files.mnt).map_err(io("create", &files.mnt))?;
        match std::fs::remove_file(&files.mock) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &files.mock)(e)),
            _ => {}
        }
        for stale in [&files.socket, &files.log, &files.out] {
            let _ = std::fs::remove_file(stale);
        }
        Ok(files)
    }
}

/// What an I/O error on `path` while doing `action` is.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError {
    let path = path.to_owned();
    move |source| ReplayError::Io { action, path, source }
}

/// Starts the mock on `script`, its stderr to the log; the link it is started through is
/// removed at once, whether it started or not.
fn start_mock(
    files: &WorkFiles,
    harness: &Path,
    script: &Path,
    release: &str,
) -> Result<std::io::Result<tokio::process::Child>, ReplayError> {
    let log_file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&files.log)
            .map_err(io("create", &files.log))?
    };
    std::os::unix::fs::symlink(harness, &files.mock).map_err(io("link the mock as", &files.mock))?;
    let started = tokio::process::Command::new(&files.mock)
        .arg("fuse")
        .arg("--apisock")
        .arg(&files.socket)
        .arg("--mountpoint")
        .arg(&files.mnt)
        .arg("--mock-script")
        .arg(script)
        .arg("--mock-nydusd-version")
        .arg(release)
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn();
    let _ = std::fs::remove_file(&files.mock);
    Ok(started)
}

/// Waits until the mock accepts on `socket`; a mock that exits first, or stays silent
/// past [`SOCKET_WAIT`], is reported at once with what its log says.
async fn wait_until_listening(child: &mut tokio::process::Child, socket: &Path, log: &Path) -> Result<(), ReplayError> {
    let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ReplayError::MockExited {
                status: status.to_string(),
                socket: socket.to_owned(),
                log: log.to_owned(),
                said: tail_of(log),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ReplayError::MockSilent { socket: socket.to_owned(), log: log.to_owned(), said: tail_of(log) });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Event;

    #[test]
    fn a_replay_that_would_take_too_long_or_a_speed_out_of_range_is_refused_before_it_starts() {
        let jump = Recording::of_events(vec![
            (0, Event::Open { conn: 1 }),
            (1_000_000_000_000_000_000, Event::Open { conn: 2 }),
        ]);
        let err = replay_duration(&jump, 1.0, DEFAULT_MAX_DURATION).unwrap_err();
        assert!(matches!(err, ReplayError::TooLong { .. }), "{err}");
        assert!(err.to_string().contains("days") && err.to_string().contains("--max-duration"), "{err}");
        let short = Recording::of_events(vec![(0, Event::Open { conn: 1 }), (2_000_000_000, Event::Open { conn: 2 })]);
        assert_eq!(replay_duration(&short, 2.0, DEFAULT_MAX_DURATION).unwrap(), Duration::from_secs(1));
        for speed in [0.0, -1.0, 1e-300, f64::NAN, f64::INFINITY, 1e300] {
            assert!(
                matches!(replay_duration(&short, speed, DEFAULT_MAX_DURATION), Err(ReplayError::Speed(_))),
                "{speed}"
            );
        }
    }

    #[test]
    fn files_are_written_beside_a_link_and_renamed_over_it_never_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join(SCRIPT_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_beside(&link, b"script").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "script");
        assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&link).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
