//! A real nydusd for the tests that hold the mock to it (`framing.rs`,
//! `mount_validation.rs`): found, checked for the privileges it needs here, started on a
//! directory's `api.sock` and `mnt/`, and killed, reaped and unmounted on drop.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use host_facts::{Requirement, unmet};

/// `found` (a nydusd binary, or why there is none), if this host lets it serve FUSE.
pub fn usable(found: Result<PathBuf, String>) -> Result<PathBuf, String> {
    let binary = found?;
    match unmet(&[Requirement::Root, Requirement::Fuse]) {
        Some(reason) => Err(reason),
        None => Ok(binary),
    }
}

/// A real nydusd serving FUSE on `dir/mnt`, its API on `dir/api.sock`.
pub struct RealNydusd {
    child: Child,
    dir: PathBuf,
}

impl RealNydusd {
    /// Starts `binary` on `dir` and waits (10 s at most) for its API socket.
    pub fn start_in(binary: &Path, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir.join("mnt")).map_err(|e| format!("mnt: {e}"))?;
        let child = Command::new(binary)
            .arg("--apisock")
            .arg(dir.join("api.sock"))
            .arg("--mountpoint")
            .arg(dir.join("mnt"))
            // Root here lacks CAP_SYS_RESOURCE, so nydusd must not raise its fd limit.
            .args(["--log-level", "warn", "--rlimit-nofile", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let daemon = Self { child, dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(daemon.sock()).is_err() {
            if Instant::now() > deadline {
                return Err("real nydusd never opened its API socket".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(daemon)
    }

    /// Its API socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
}

impl Drop for RealNydusd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.dir.join("mnt"), nix::mount::MntFlags::MNT_DETACH);
    }
}
