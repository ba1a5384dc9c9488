//! Tests that need real mounts. Whether each runs is decided when tests are listed: on a
//! host without what it needs it is listed as ignored, and the reason is printed, so a
//! skip never shows as a pass. Run `cargo nextest run --run-ignored all` to see the reason
//! as a failure.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{MockProcess, exchange};
use daemon_core::host::{Requirement, unmet};
use libtest_mimic::{Arguments, Failed, Trial};

/// A tmpfs mounted on a fresh temporary directory; unmounted and removed on drop, so a
/// failing test leaves nothing behind.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new() -> Result<Self, Failed> {
        let dir = tempfile::tempdir()?;
        nix::mount::mount(Some("tmpfs"), dir.path(), Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// nydusd's crash detection (checklist item 42): the mountpoint is still mounted and a
/// socket file nobody listens on sits at `--apisock`, so the new daemon waits in INIT.
fn crash_leftovers_make_a_fuse_daemon_start_in_init() -> Result<(), Failed> {
    // Any live mount stands for the dead daemon's FUSE mount: the test is about detection.
    // Declared before the mock, so it is unmounted after the mock is gone.
    let mnt = TmpfsMount::new()?;
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock)?);
    let mock = MockProcess::start_in(dir, &["--mountpoint", mnt.path().to_str().ok_or("path")?]);
    let reply = exchange(&sock, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n");
    if !reply.contains(r#""state":"INIT""#) {
        return Err(format!("expected INIT after a detected crash, got: {reply}").into());
    }
    drop(mock);
    Ok(())
}

/// A dedicated FUSE mock serving `tree` from a JSON bootstrap, in `dir`.
fn fuse_mock(dir: tempfile::TempDir, tree: &str, extra: &[&str]) -> Result<MockProcess, Failed> {
    let boot = dir.path().join("image.boot");
    std::fs::write(&boot, format!(r#"{{"mock_tree":{tree}}}"#))?;
    let config = dir.path().join("config.json");
    std::fs::write(&config, "{}")?;
    let mut args =
        vec!["--mock-fuse", "--bootstrap", boot.to_str().ok_or("path")?, "--config", config.to_str().ok_or("path")?];
    args.extend_from_slice(extra);
    Ok(MockProcess::start_in(dir, &args))
}

/// Reads through a real FUSE mount, then SIGTERM unmounts it (checklist 54).
fn fuse_session_serves_files_and_sigterm_unmounts() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    let mut mock = fuse_mock(dir, r#"{"etc/os-release":"NAME=mock\n","data/blob":{"size":300000}}"#, &[])?;
    let text =
        std::fs::read_to_string(mnt.join("etc/os-release")).map_err(|e| format!("reading etc/os-release: {e}"))?;
    if text != "NAME=mock\n" {
        return Err(format!("read {text:?}").into());
    }
    let blob = std::fs::read(mnt.join("data/blob")).map_err(|e| format!("reading data/blob: {e}"))?;
    let expected: Vec<u8> = (0..300_000u64).map(mock_nydusd::fuse::tree::pattern_byte).collect();
    if blob != expected {
        return Err("the 300 000-byte file came back different".into());
    }
    let mut names: Vec<String> = std::fs::read_dir(&mnt)?
        .map(|e| Ok::<_, std::io::Error>(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    if names != ["data", "etc"] {
        return Err(format!("listing {names:?}").into());
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mock.child.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
    let status = mock.child.wait()?;
    if status.code() != Some(0) || daemon_core::mount::is_mounted(&mnt)? {
        return Err(format!("after SIGTERM: {status}, still mounted: {}", daemon_core::mount::is_mounted(&mnt)?).into());
    }
    Ok(())
}

/// The mount disappearing under the daemon makes it exit as if signalled (checklist 55).
fn an_external_umount_stops_the_daemon() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    let mut mock = fuse_mock(dir, r#"{"f":"x"}"#, &[])?;
    std::fs::read(mnt.join("f"))?;
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH)?;
    let status = mock.child.wait()?;
    if status.code() != Some(0) {
        return Err(format!("expected exit 0 after the umount, got {status}").into());
    }
    if mock.sock.exists() {
        return Err("the socket should be removed, as on a signal".into());
    }
    Ok(())
}

/// Environment variable that makes this test binary the reader workload (a separate
/// process: see `mock_nydusd::reader` for why).
const READER_ROLE: &str = "PRIVILEGED_READER";

/// A reader process on `file`; stops when `stop` is created, then prints its stats.
fn start_reader(file: &Path, size: u64, stop: &Path) -> Result<std::process::Child, Failed> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .env(READER_ROLE, mock_nydusd::reader::spec(file, size, stop))
        .stdout(std::process::Stdio::piped())
        .spawn()?)
}

/// Aborts every FUSE connection after `after` unless disarmed: a lost request must fail
/// the test, not hang it (and CI) forever.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn arm(after: Duration) -> Self {
        let disarmed = Arc::new(AtomicBool::new(false));
        let flag = disarmed.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            if !flag.load(Ordering::SeqCst) {
                eprintln!("watchdog: aborting FUSE connections after {after:?}");
                let _ = nix::mount::mount(
                    Some("fusectl"),
                    "/sys/fs/fuse/connections",
                    Some("fusectl"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                );
                for entry in std::fs::read_dir("/sys/fs/fuse/connections").into_iter().flatten().flatten() {
                    let _ = std::fs::write(entry.path().join("abort"), "1");
                }
            }
        });
        Self(disarmed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The heart of failover: a process keeps reading a file through the FUSE mount while the
/// daemon is SIGKILLed and a successor takes over the /dev/fuse connection through a
/// supervisor (played by this test). No read may fail.
fn failover_keeps_a_live_reader_reading() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    let supervisor = dir.path().join("supervisor.sock");
    let sup = supervisor.to_str().ok_or("path")?.to_owned();
    let size = 256 * 1024;
    let mut old =
        fuse_mock(dir, &format!(r#"{{"data/blob":{{"size":{size}}}}}"#), &["--id", "d1", "--supervisor", &sup])?;
    let boot = old.path("image.boot");

    let _watchdog = Watchdog::arm(Duration::from_secs(20));
    let stop = old.path("stop-reading");
    let reading = start_reader(&mnt.join("data/blob"), size, &stop)?;
    std::thread::sleep(Duration::from_millis(100));

    // Push leg: the old daemon sends its state and the /dev/fuse fd.
    let listener = std::os::unix::net::UnixListener::bind(&supervisor)?;
    let fetch = std::thread::spawn(move || {
        let (conn, _) = listener.accept()?;
        let received = daemon_core::fdpass::receive(&conn, 256 * 1024, 64 << 20);
        drop(listener);
        received
    });
    let reply = exchange(&old.sock, b"PUT /api/v1/daemon/fuse/sendfd HTTP/1.1\r\n\r\n");
    if !reply.starts_with("HTTP/1.1 204 ") {
        return Err(format!("sendfd: {reply}").into());
    }
    let (state, mut fds) = fetch.join().map_err(|_| "fetch panicked")??;
    let fuse_fd = fds.pop().ok_or("no fd came with the state")?;
    std::fs::remove_file(&supervisor)?;

    let killed_at = Instant::now();
    old.child.kill()?;
    old.child.wait()?;

    // Pull leg: a successor started with --upgrade takes the state and the same connection.
    let next_dir = tempfile::tempdir()?;
    let listener = std::os::unix::net::UnixListener::bind(&supervisor)?;
    let offer = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        daemon_core::fdpass::send(&mut conn, &state, std::os::fd::AsFd::as_fd(&fuse_fd))
    });
    let config = old.path("config.json");
    let new = MockProcess::start_in(
        next_dir,
        &[
            "--mountpoint",
            mnt.to_str().ok_or("path")?,
            "--mock-fuse",
            "--upgrade",
            "--id",
            "d1",
            "--supervisor",
            &sup,
            "--bootstrap",
            boot.to_str().ok_or("path")?,
            "--config",
            config.to_str().ok_or("path")?,
        ],
    );
    for call in ["takeover", "start"] {
        let path = if call == "takeover" { "/api/v1/daemon/fuse/takeover" } else { "/api/v1/daemon/start" };
        let reply = exchange(&new.sock, format!("PUT {path} HTTP/1.1\r\n\r\n").as_bytes());
        if !reply.starts_with("HTTP/1.1 204 ") {
            return Err(format!("{call}: {reply}").into());
        }
    }
    offer.join().map_err(|_| "offer panicked")??;
    let served_at = killed_at.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&stop, b"")?;
    let output = reading.wait_with_output()?;
    let stats: mock_nydusd::reader::ReaderStats = serde_json::from_slice(&output.stdout)?;
    eprintln!("failover with a live reader: {stats:?}; SIGKILL to serving again {served_at:?}");
    if stats.failures > 0 || stats.reads == 0 {
        return Err(format!("reader saw {stats:?}").into());
    }
    drop(new);
    Ok(())
}

/// A privileged test: its name, what it needs, and its body.
type Privileged = (&'static str, &'static [Requirement], fn() -> Result<(), Failed>);

fn main() {
    if let Ok(spec) = std::env::var(READER_ROLE) {
        println!("{}", mock_nydusd::reader::run_spec(&spec));
        return;
    }
    let args = Arguments::from_args();
    let tests: Vec<Privileged> = vec![
        (
            "crash_leftovers_make_a_fuse_daemon_start_in_init",
            &[Requirement::Root],
            crash_leftovers_make_a_fuse_daemon_start_in_init,
        ),
        (
            "fuse_session_serves_files_and_sigterm_unmounts",
            &[Requirement::Root, Requirement::Fuse],
            fuse_session_serves_files_and_sigterm_unmounts,
        ),
        (
            "an_external_umount_stops_the_daemon",
            &[Requirement::Root, Requirement::Fuse],
            an_external_umount_stops_the_daemon,
        ),
        (
            "failover_keeps_a_live_reader_reading",
            &[Requirement::Root, Requirement::Fuse],
            failover_keeps_a_live_reader_reading,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, requirements, test)| {
            let reason = unmet(requirements);
            if let Some(reason) = &reason {
                eprintln!("skipping {name}: {reason}");
            }
            let trial = Trial::test(name, move || match &reason {
                Some(reason) => Err(format!("skipped: {reason}").into()),
                None => test(),
            });
            trial.with_ignored_flag(unmet(requirements).is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
