//! Tests that need real mounts. Whether each runs is decided when tests are listed: on a
//! host without what it needs it is listed as ignored, and the reason is printed, so a
//! skip never shows as a pass. Run `cargo nextest run --run-ignored all` to see the reason
//! as a failure.

mod common;

use std::path::Path;

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

/// A privileged test: its name, what it needs, and its body.
type Privileged = (&'static str, &'static [Requirement], fn() -> Result<(), Failed>);

fn main() {
    let args = Arguments::from_args();
    let tests: Vec<Privileged> = vec![(
        "crash_leftovers_make_a_fuse_daemon_start_in_init",
        &[Requirement::Root],
        crash_leftovers_make_a_fuse_daemon_start_in_init,
    )];
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
