//! Tests that need real mounts, or a host tool (mkfs.erofs). A failover under a live reader is the scenario
//! `privileged/failover-live-reader.yaml`, where daemon-core's supervisor plays its part. Whether each runs is decided when tests are listed: on a
//! host without what it needs it is listed as ignored, and the reason is printed, so a
//! skip never shows as a pass. Run `cargo nextest run --run-ignored all` to see the reason
//! as a failure.

mod common;

use std::path::Path;

use host_facts::{Requirement, unmet};
use libtest_mimic::{Arguments, Failed, Trial};
use testkit::{MockProcess, exchange};

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
    let mock = MockProcess::start_in(common::mock(), dir, &["--mountpoint", mnt.path().to_str().ok_or("path")?]);
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
    Ok(MockProcess::start_in(common::mock(), dir, &args))
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
    let expected: Vec<u8> = (0..300_000u64).map(mock_nydusd::pattern_byte).collect();
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
    if status.code() != Some(0) || host_facts::mountinfo::is_mounted(&mnt)? {
        return Err(
            format!("after SIGTERM: {status}, still mounted: {}", host_facts::mountinfo::is_mounted(&mnt)?).into()
        );
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

/// Held reads (the control socket's `PUT /fuse/hold-reads`): a reader's READ is taken from
/// /dev/fuse and never answered, `GET /fuse` counts it, and the reader waits until the
/// daemon dies and the kernel ends the connection (no supervisor keeps it): ECONNABORTED.
fn a_held_read_waits_until_the_connection_ends() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    let mut mock = fuse_mock(dir, r#"{"data/blob":{"size":8192}}"#, &[])?;
    // The attributes are looked up before holding starts: only the READ waits.
    std::fs::metadata(mnt.join("data/blob"))?;
    let held = exchange(&mock.control, b"PUT /fuse/hold-reads HTTP/1.1\r\n\r\n");
    if !held.starts_with("HTTP/1.1 204") {
        return Err(format!("hold-reads: {held}").into());
    }
    let file = mnt.join("data/blob");
    let reader = std::thread::spawn(move || std::fs::read(file));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = exchange(&mock.control, b"GET /fuse HTTP/1.1\r\n\r\n");
        if status.contains(r#""held_reads":1"#) {
            if !status.contains(r#""failover":null"#) {
                return Err(format!("a mounting daemon applied a failover policy: {status}").into());
            }
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no read was held within 5 s: {status}").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    if reader.is_finished() {
        return Err(format!("the held read returned: {:?}", reader.join()).into());
    }
    mock.child.kill()?;
    mock.child.wait()?;
    let read = reader.join().map_err(|_| "the reader panicked")?;
    match read {
        Err(e) if e.raw_os_error() == Some(nix::libc::ECONNABORTED) => {}
        other => return Err(format!("the held read ended with {other:?}, not ECONNABORTED").into()),
    }
    let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
    Ok(())
}

/// The fscache service's image of a mock tree: built with mkfs.erofs, its scratch files
/// gone; an erofs bootstrap served as it is; a leftover scratch directory never built
/// into; a build that fails half-way leaves nothing for the next one.
fn an_erofs_image_is_built_from_a_mock_tree() -> Result<(), Failed> {
    use mock_nydusd::fscache::image::{ImageError, image_for};
    let dir = tempfile::tempdir()?;
    let boot = dir.path().join("image.boot");
    std::fs::write(&boot, r#"{"mock_tree": {"etc/os-release": "NAME=x\n", "data/blob": {"size": 70000}}}"#)?;
    let image = image_for(&boot, &dir.path().join("scratch"))?;
    let bytes = std::fs::read(&image)?;
    let magic = bytes.get(1024..1028).map(|m| u32::from_le_bytes(m.try_into().unwrap_or_default()));
    if magic != Some(0xE0F5_E1E2) {
        return Err(format!("{} is no erofs image (magic {magic:x?})", image.display()).into());
    }
    if dir.path().join("scratch/tree").exists() {
        return Err("the scratch files stayed".into());
    }
    if image_for(&image, &dir.path().join("other"))? != image {
        return Err("an erofs bootstrap is not served as it is".into());
    }
    match image_for(&boot, &dir.path().join("scratch")) {
        Err(ImageError::Write { .. }) => {}
        other => return Err(format!("a leftover scratch directory was built into: {other:?}").into()),
    }
    let long = "n".repeat(300);
    std::fs::write(&boot, format!(r#"{{"mock_tree": {{"ok": "x", "{long}": "y"}}}}"#))?;
    if image_for(&boot, &dir.path().join("failed")).is_ok() || dir.path().join("failed").exists() {
        return Err("a failed build left its scratch directory".into());
    }
    Ok(())
}

/// A privileged test: its name, what it needs, and its body.
type Privileged = (&'static str, &'static [Requirement], fn() -> Result<(), Failed>);

fn main() {
    let args = Arguments::from_args();
    let tests: Vec<Privileged> = vec![
        (
            "an_erofs_image_is_built_from_a_mock_tree",
            &[Requirement::MkfsErofs],
            an_erofs_image_is_built_from_a_mock_tree,
        ),
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
            "a_held_read_waits_until_the_connection_ends",
            &[Requirement::Root, Requirement::Fuse],
            a_held_read_waits_until_the_connection_ends,
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
