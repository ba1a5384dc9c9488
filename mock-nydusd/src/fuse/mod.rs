//! A real FUSE session (`--mock-fuse`, root and /dev/fuse needed): the mock mounts its
//! `--mountpoint` and serves a small read-only tree (see [`tree`]), so a failover can be
//! watched by a process reading files through the mount.
//!
//! The `/dev/fuse` fd is what sendfd hands to the supervisor. A successor that takes it
//! over serves the same kernel connection without mounting or a new INIT, after applying
//! its failover policy as nydusd does ([`PendingRequestPolicy`]): under `resend` (nydusd's
//! default) it asks the kernel to queue again the requests its predecessor had read but
//! not answered (FUSE_NOTIFY_RESEND, Linux 6.9+), falling back to the connection's sysfs
//! `resend` file; under `flush` it writes that connection's `flush` file. Mainline kernels
//! have neither file, so before 6.9 such requests are lost: their callers wait in the
//! kernel until the connection ends. [`FailoverOutcome`] says which case applied.
//!
//! A fault puts a request in that state on purpose: while reads are held
//! ([`FuseSession::hold_reads`]), the session takes READ requests from the device and
//! answers none, as a daemon that dies in the middle of serving them.
//!
//! When the connection ends because the mount went away, the session reports it, and the
//! daemon stops as if signalled (nydusd does the same).

pub mod abi;
pub mod tree;

use nydusd_api::PendingRequestPolicy;

use crate::nydusd_error::NydusdError;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use nix::mount::{MntFlags, MsFlags};

use tree::Tree;

/// Called once when the kernel connection ends (the mount disappeared).
#[derive(Clone)]
pub struct OnEnd(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

/// How FUSE sessions are made.
#[derive(Debug, Clone)]
pub struct FuseConfig {
    /// The host mountpoint (`--mountpoint`).
    pub mountpoint: PathBuf,
    /// Worker threads reading the connection.
    pub threads: usize,
    /// What a successor does about requests its predecessor left unanswered.
    pub policy: PendingRequestPolicy,
    /// What to do when the connection ends.
    pub on_end: OnEnd,
}

/// What applying the failover policy came to at a takeover.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailoverOutcome {
    pub policy: PendingRequestPolicy,
    /// Whether the kernel took the request: requests the predecessor had read are queued
    /// again (resend) or ended (flush). When false they are lost, and their callers wait
    /// until the connection ends.
    pub applied: bool,
    /// What each attempt got, in order (`FUSE_NOTIFY_RESEND: EINVAL`, …).
    pub detail: String,
}

/// READ requests taken from the device and never answered, while holding is on.
#[derive(Debug, Default)]
struct HeldReads {
    on: std::sync::atomic::AtomicBool,
    uniques: std::sync::Mutex<Vec<u64>>,
}

/// A live session.
#[derive(Debug)]
pub struct FuseSession {
    fd: Arc<OwnedFd>,
    tree: Arc<RwLock<Tree>>,
    mountpoint: PathBuf,
    held: Arc<HeldReads>,
    failover: Option<FailoverOutcome>,
}

impl FuseSession {
    /// Opens /dev/fuse, mounts it at the mountpoint and starts serving (INIT included).
    pub fn mount(config: &FuseConfig, tree: Tree) -> Result<Self, NydusdError> {
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| NydusdError::words(format!("cannot open /dev/fuse: {e}")))?
            .into();
        let options = format!("fd={},rootmode=40000,user_id=0,group_id=0,allow_other", fd.as_raw_fd());
        nix::mount::mount(
            Some("nydusfs"),
            &config.mountpoint,
            Some("fuse.nydusfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
            Some(options.as_str()),
        )
        .map_err(|e| NydusdError::words(format!("cannot mount FUSE at {}: {e}", config.mountpoint.display())))?;
        Ok(Self::serve(config, fd, tree, None))
    }

    /// Serves a connection taken over from a predecessor, after applying the failover
    /// policy to what the predecessor left unanswered.
    pub fn adopt(config: &FuseConfig, fd: OwnedFd, tree: Tree) -> Self {
        let outcome = apply_failover_policy(config.policy, fd.as_fd(), &config.mountpoint);
        Self::serve(config, fd, tree, Some(outcome))
    }

    fn serve(config: &FuseConfig, fd: OwnedFd, tree: Tree, failover: Option<FailoverOutcome>) -> Self {
        let fd = Arc::new(fd);
        let tree = Arc::new(RwLock::new(tree));
        let held = Arc::new(HeldReads::default());
        let ended = Arc::new(std::sync::Once::new());
        for n in 0..config.threads.max(1) {
            let (fd, tree, held, ended, on_end) =
                (fd.clone(), tree.clone(), held.clone(), ended.clone(), config.on_end.clone());
            let _ = std::thread::Builder::new().name(format!("fuse-{n}")).spawn(move || {
                worker(&fd, &tree, &held);
                ended.call_once(|| (on_end.0)());
            });
        }
        Self { fd, tree, mountpoint: config.mountpoint.clone(), held, failover }
    }

    /// From now on, READ requests are taken from the device and never answered.
    pub fn hold_reads(&self) {
        self.held.on.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many READ requests are held.
    pub fn held_reads(&self) -> usize {
        self.held.uniques.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The failover policy's outcome, for a session taken over from a predecessor.
    pub fn failover(&self) -> Option<&FailoverOutcome> {
        self.failover.as_ref()
    }

    /// The `/dev/fuse` fd, for sendfd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Replaces the served tree (after a mount or umount through the API).
    pub fn set_tree(&self, tree: Tree) {
        *self.tree.write().unwrap_or_else(|e| e.into_inner()) = tree;
    }

    /// Detaches the mount (graceful stop from RUNNING or READY).
    pub fn unmount(&self) {
        let _ = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH);
    }
}

/// Why a FUSE connection's sysfs file could not be written (noted, not fatal).
#[derive(Debug, thiserror::Error)]
enum SysfsFailure {
    #[error("{path}: {0}", path = host_facts::mountinfo::PATH)]
    Mountinfo(std::io::Error),
    #[error("{} is not a FUSE mount", .0.display())]
    NotFuse(std::path::PathBuf),
    #[error("{path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Applies `policy` on a taken-over connection as nydusd's `drain_fuse_requests` does;
/// each failure is only noted.
fn apply_failover_policy(policy: PendingRequestPolicy, fd: BorrowedFd<'_>, mountpoint: &std::path::Path) -> FailoverOutcome {
    let mut detail = Vec::new();
    // The connection's sysfs directory is named by the mount's device minor. It is read
    // from mountinfo: a stat of the mountpoint would wait for this very daemon.
    let sysfs = |file: &str| -> Result<(), SysfsFailure> {
        let minor = host_facts::mountinfo::read()
            .map_err(SysfsFailure::Mountinfo)?
            .into_iter()
            .rfind(|m| m.mount_point == mountpoint && m.is_fuse())
            .ok_or_else(|| SysfsFailure::NotFuse(mountpoint.to_owned()))?
            .minor;
        let path = format!("/sys/fs/fuse/connections/{minor}/{file}");
        std::fs::write(&path, "1").map_err(|source| SysfsFailure::Write { path, source })
    };
    let applied = match policy {
        PendingRequestPolicy::None => false,
        PendingRequestPolicy::Resend => match nix::unistd::write(fd, &abi::notify_resend()) {
            Ok(_) => {
                detail.push("FUSE_NOTIFY_RESEND: accepted".to_owned());
                true
            }
            Err(e) => {
                // Kernels before 6.9 know no such notification (EINVAL).
                detail.push(format!("FUSE_NOTIFY_RESEND: {e}"));
                match sysfs("resend") {
                    Ok(()) => {
                        detail.push("sysfs resend: written".to_owned());
                        true
                    }
                    Err(e) => {
                        detail.push(format!("sysfs resend: {e}"));
                        false
                    }
                }
            }
        },
        PendingRequestPolicy::Flush => match sysfs("flush") {
            Ok(()) => {
                detail.push("sysfs flush: written".to_owned());
                true
            }
            Err(e) => {
                detail.push(format!("sysfs flush: {e}"));
                false
            }
        },
    };
    FailoverOutcome { policy, applied, detail: detail.join("; ") }
}

/// Reads and answers requests until the connection ends.
fn worker(fd: &OwnedFd, tree: &RwLock<Tree>, held: &HeldReads) {
    let mut buf = vec![0u8; (1 << 20) + 4096];
    loop {
        let n = match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(nix::Error::EINTR | nix::Error::EAGAIN | nix::Error::ENOENT) => continue,
            // ENODEV: unmounted or aborted; anything else: the fd is unusable.
            Err(_) => return,
        };
        let request = &buf[..n];
        let Some(header) = abi::InHeader::parse(request) else { continue };
        let body = &request[abi::IN_HEADER.min(request.len())..];
        if header.opcode == abi::op::READ && held.on.load(std::sync::atomic::Ordering::SeqCst) {
            held.uniques.lock().unwrap_or_else(|e| e.into_inner()).push(header.unique);
            continue;
        }
        let reply = {
            let tree = tree.read().unwrap_or_else(|e| e.into_inner());
            answer(&header, body, &tree)
        };
        if let Some(reply) = reply {
            // ENOENT: the request was interrupted meanwhile; nothing to do.
            let _ = nix::unistd::write(fd.as_fd(), &reply);
        }
        if header.opcode == abi::op::DESTROY {
            return;
        }
    }
}

fn answer(h: &abi::InHeader, body: &[u8], tree: &Tree) -> Option<Vec<u8>> {
    use abi::op;
    let unique = h.unique;
    let enoent = || abi::error(unique, nix::libc::ENOENT);
    Some(match h.opcode {
        op::INIT => match abi::init_in(body) {
            Some((7, minor, readahead)) => abi::reply(unique, 0, &abi::init_out(minor.min(31), readahead)),
            _ => abi::error(unique, nix::libc::EPROTO),
        },
        op::LOOKUP => {
            let name = body.split(|b| *b == 0).next().map(String::from_utf8_lossy).unwrap_or_default();
            match tree.lookup(h.nodeid, &name) {
                Some(attr) => abi::reply(unique, 0, &abi::entry_out(&attr)),
                None => enoent(),
            }
        }
        op::GETATTR => match tree.attr(h.nodeid) {
            Some(attr) => abi::reply(unique, 0, &abi::attr_out(&attr)),
            None => enoent(),
        },
        op::OPEN | op::OPENDIR => match tree.attr(h.nodeid) {
            Some(_) => abi::reply(unique, 0, &abi::open_out()),
            None => enoent(),
        },
        op::READ => match abi::read_in(body).and_then(|(off, size)| tree.read(h.nodeid, off, size)) {
            Some(data) => abi::reply(unique, 0, &data),
            None => abi::error(unique, nix::libc::EISDIR),
        },
        op::READDIR => {
            let (offset, size) = abi::read_in(body).unwrap_or((0, 4096));
            match tree.entries(h.nodeid) {
                Some(entries) => {
                    let mut out = Vec::new();
                    for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                        if !abi::push_dirent(&mut out, size as usize, *ino, i as u64 + 1, *kind, name) {
                            break;
                        }
                    }
                    abi::reply(unique, 0, &out)
                }
                None => abi::error(unique, nix::libc::ENOTDIR),
            }
        }
        op::STATFS => abi::reply(unique, 0, &abi::statfs_out(tree.node_count() as u64)),
        op::RELEASE | op::RELEASEDIR | op::FLUSH | op::ACCESS | op::DESTROY => abi::reply(unique, 0, &[]),
        // No reply is expected for these.
        op::FORGET | op::BATCH_FORGET | op::INTERRUPT => return None,
        _ => abi::error(unique, nix::libc::ENOSYS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, nodeid: u64, body: &[u8]) -> (abi::InHeader, Vec<u8>) {
        (abi::InHeader { len: (40 + body.len()) as u32, opcode, unique: 5, nodeid }, body.to_vec())
    }

    fn status(reply: &[u8]) -> i32 {
        i32::from_le_bytes(reply[4..8].try_into().unwrap())
    }

    #[test]
    fn requests_are_answered_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("b");
        std::fs::write(&boot, r#"{"mock_tree":{"f":"data"}}"#).unwrap();
        let tree = Tree::build([("/s", boot.to_str().unwrap())]);
        let (h, b) = request(abi::op::LOOKUP, tree::ROOT, b"s\0");
        let entry = answer(&h, &b, &tree).unwrap();
        assert_eq!(status(&entry), 0);
        assert_eq!(entry.len(), 16 + 128);
        let (h, b) = request(abi::op::LOOKUP, tree::ROOT, b"missing\0");
        assert_eq!(status(&answer(&h, &b, &tree).unwrap()), -nix::libc::ENOENT);
        let (h, b) = request(abi::op::FORGET, 2, &[0; 8]);
        assert!(answer(&h, &b, &tree).is_none(), "FORGET gets no reply");
        let (h, b) = request(999, 1, &[]);
        assert_eq!(status(&answer(&h, &b, &tree).unwrap()), -nix::libc::ENOSYS);
        let mut init = vec![0u8; 64];
        init[0..4].copy_from_slice(&7u32.to_le_bytes());
        init[4..8].copy_from_slice(&41u32.to_le_bytes());
        let (h, b) = request(abi::op::INIT, 0, &init);
        let reply = answer(&h, &b, &tree).unwrap();
        assert_eq!(u32::from_le_bytes(reply[20..24].try_into().unwrap()), 31, "minor capped at what we speak");
    }
}
