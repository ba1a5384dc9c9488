//! erofs over fscache in on-demand mode, served for real: as `nydusd singleton --fscache
//! DIR` does, the mock opens `/dev/cachefiles`, binds it in on-demand mode and answers the
//! kernel's requests for every blob bound through `PUT /api/v2/blobs`:
//!
//! * OPEN (an erofs mount with `fsid=`, `domain_id=`): the bound bootstrap of that domain
//!   and id, its image's size in `copen`, or `-ENOENT` when none is bound (the mount fails);
//! * READ: the requested range of the image written into the object's cache file through
//!   the anonymous fd the kernel gave, then `CACHEFILES_IOC_READ_COMPLETE`;
//! * CLOSE: the anonymous fd closed.
//!
//! A successor that takes the device over (`--upgrade`, takeover) writes `restore`
//! instead of binding: the kernel sends the requests its predecessor left unanswered
//! again. See [`protocol`] for the messages and [`image`] for what is served.

pub mod image;
pub mod protocol;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::io::unix::AsyncFd;

use crate::script::{FscacheAction, FscacheRequest};
use crate::server::Shared;
use protocol::Message;

/// Why the device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("/dev/cachefiles refused `{command}`")]
    Command {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the cachefiles device read-write, as nydusd does.
pub fn open(path: &Path) -> Result<OwnedFd, DeviceError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| DeviceError::Open { path: path.to_owned(), source })
}

/// Whether `path` is the kernel's device rather than the file the harness puts in its
/// place on hosts without on-demand fscache.
pub fn is_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// Whether `fd` is a character device (a cachefiles fd a predecessor handed over, not the
/// placeholder file the harness gives on hosts without on-demand fscache).
pub fn is_device_fd(fd: &impl AsFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFCHR)
}

/// Writes one command to the device.
fn command(device: &impl AsFd, text: &str) -> Result<(), DeviceError> {
    let failed = |source| DeviceError::Command { command: text.to_owned(), source };
    match nix::unistd::write(device, text.as_bytes()) {
        Ok(n) if n == text.len() => Ok(()),
        Ok(_) => Err(failed(std::io::Error::other("written in part"))),
        Err(errno) => Err(failed(std::io::Error::from(errno))),
    }
}

/// A fresh start: the cache directory, the tag, and on-demand mode. The directory must not
/// be on tmpfs (EOPNOTSUPP); a kernel without on-demand support refuses with EINVAL.
pub fn bind(device: &impl AsFd, dir: &Path, tag: Option<&str>) -> Result<(), DeviceError> {
    command(device, &format!("dir {}", dir.display()))?;
    if let Some(tag) = tag {
        command(device, &format!("tag {tag}"))?;
    }
    command(device, "bind ondemand")
}

/// A successor's start on the device its predecessor bound: the kernel sends again what
/// was left unanswered.
pub fn restore(device: &impl AsFd) -> Result<(), DeviceError> {
    command(device, "restore")
}

/// An object the kernel opened: its anonymous fd and the image it reads.
#[derive(Debug)]
struct Object {
    fd: OwnedFd,
    image: Arc<std::fs::File>,
    cookie: String,
    /// The cache file's size (the image's, in whole pages): no READ writes past it.
    size: u64,
}

/// A raw fd, borrowed only to ask the kernel whether it is open.
fn fd_of(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used for one fcntl(F_GETFD) only, which fails harmlessly (EBADF) on an fd
    // that is not open; the borrow owns nothing.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Answers the kernel until the device fails (it does not end otherwise: the process
/// exits with it). `scratch` holds the images built from mock trees.
pub async fn serve(device: OwnedFd, shared: Arc<Shared>, scratch: PathBuf) {
    let journal = |event: &str, fields| shared.journal.record(event, fields);
    if let Err(e) = nix::fcntl::fcntl(&device, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)) {
        journal("fscache_failed", json!({ "error": format!("cannot make the device non-blocking: {e}") }));
        return;
    }
    // SAFETY: `device` is an open fd owned by the AsyncFd for its whole life, and
    // `OwnedFd::as_raw_fd` always returns that same fd.
    let device = match unsafe { AsyncFd::register_with_interest(device, tokio::io::Interest::READABLE) } {
        Ok(device) => device,
        Err(e) => {
            journal("fscache_failed", json!({ "error": format!("cannot watch the device: {e}") }));
            return;
        }
    };
    let mut objects: HashMap<u32, Object> = HashMap::new();
    // Anonymous fds of OPENs left unanswered on purpose: closing one would answer it.
    let mut unanswered: Vec<OwnedFd> = Vec::new();
    let (mut opens, mut reads) = (0u64, 0u64);
    let mut images = Images { built: HashMap::new(), attempts: 0, scratch };
    let mut buffer = vec![0u8; protocol::MAX_MESSAGE];
    loop {
        let mut ready = match device.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                journal("fscache_failed", json!({ "error": format!("cannot wait on the device: {e}") }));
                return;
            }
        };
        let n = match nix::unistd::read(device.get_ref(), &mut buffer) {
            // Nothing new: the kernel answers a read with 0 when no request waits.
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => {
                ready.clear_ready();
                continue;
            }
            Ok(n) => n,
            Err(errno) => {
                journal("fscache_failed", json!({ "error": format!("cannot read the device: {errno}") }));
                return;
            }
        };
        let message = match protocol::parse(&buffer[..n]) {
            Ok(message) => message,
            Err(e) => {
                journal("fscache_message_refused", json!({ "error": e.to_string() }));
                continue;
            }
        };
        match message {
            Message::Open { msg_id, object_id, volume_key, cookie_key, fd } => {
                // The kernel installs a fresh fd for each OPEN; anything else (a standard
                // stream, the device itself, no fd) is a message not to trust with ownership.
                if fd <= 2 || fd == device.get_ref().as_raw_fd() || nix::fcntl::fcntl(fd_of(fd), nix::fcntl::FcntlArg::F_GETFD).is_err() {
                    let reply = -i64::from(nix::libc::EINVAL);
                    let outcome = command(device.get_ref(), &protocol::copen(msg_id, reply));
                    journal("fscache_message_refused", json!({ "error": format!("OPEN {msg_id} names fd {fd}, not a fresh one"), "copen": reply,
                                                              "reply_failed": outcome.err().map(|e| chain(&e)) }));
                    continue;
                }
                // SAFETY: the kernel installed this fd in our table for this message (checked
                // open, and none of ours above) and nothing else owns it; it is closed with
                // the object.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let domain = protocol::domain_of(&volume_key).to_owned();
                opens += 1;
                match scripted(&shared, FscacheRequest::Open, &cookie_key, opens) {
                    Some(FscacheAction::Never) => {
                        journal("fscache_open", json!({ "domain_id": domain, "blob_id": cookie_key, "object": object_id, "scripted": "never" }));
                        unanswered.push(fd);
                        continue;
                    }
                    Some(FscacheAction::Fail) => {
                        let reply = -i64::from(nix::libc::EIO);
                        let outcome = command(device.get_ref(), &protocol::copen(msg_id, reply));
                        journal("fscache_open", json!({ "domain_id": domain, "blob_id": cookie_key, "object": object_id, "copen": reply, "scripted": "fail",
                                                       "reply_failed": outcome.err().map(|e| chain(&e)) }));
                        continue;
                    }
                    None => {}
                }
                let image = images.open(&shared, &domain, &cookie_key).await;
                let reply = match &image {
                    Ok(file) => file.metadata().map(|m| m.len() as i64).unwrap_or(-(nix::libc::EIO as i64)),
                    Err(errno) => -i64::from(*errno),
                };
                let outcome = command(device.get_ref(), &protocol::copen(msg_id, reply));
                journal(
                    "fscache_open",
                    json!({ "domain_id": domain, "blob_id": cookie_key, "object": object_id, "copen": reply,
                            "error": image.as_ref().err().map(|&errno| if errno == nix::libc::ENOENT { "no such blob bound" } else { "its image could not be served (see fscache_image_failed)" }),
                            "reply_failed": outcome.err().map(|e| chain(&e)) }),
                );
                if let Ok(image) = image {
                    // The cache file is as large as the copen said: reads stop there.
                    let size = u64::try_from(reply).unwrap_or(0).next_multiple_of(4096);
                    objects.insert(object_id, Object { fd, image, cookie: cookie_key, size });
                }
            }
            Message::Read { msg_id, object_id, offset, len } => {
                let Some(object) = objects.get(&object_id) else {
                    journal("fscache_read", json!({ "object": object_id, "offset": offset, "len": len, "error": "unknown object" }));
                    continue;
                };
                reads += 1;
                match scripted(&shared, FscacheRequest::Read, &object.cookie, reads) {
                    Some(FscacheAction::Never) => {
                        journal("fscache_read", json!({ "blob_id": object.cookie, "object": object_id, "offset": offset, "len": len, "scripted": "never" }));
                        continue;
                    }
                    Some(FscacheAction::Fail) => {
                        // Completed with nothing written: the range is still missing from the
                        // cache file, and the kernel fails the read.
                        let completed = read_complete(&object.fd, msg_id);
                        journal("fscache_read", json!({ "blob_id": object.cookie, "object": object_id, "offset": offset, "len": len, "scripted": "fail",
                                                       "complete_failed": completed.err().map(|e| e.to_string()) }));
                        continue;
                    }
                    None => {}
                }
                let copied = copy_range(&object.image, &object.fd, offset, len.min(object.size.saturating_sub(offset)));
                let completed = read_complete(&object.fd, msg_id);
                journal(
                    "fscache_read",
                    json!({ "blob_id": object.cookie, "object": object_id, "offset": offset, "len": len,
                            "error": copied.err().map(|e| e.to_string()),
                            "complete_failed": completed.err().map(|e| e.to_string()) }),
                );
            }
            Message::Close { object_id, .. } => {
                let closed = objects.remove(&object_id);
                journal("fscache_close", json!({ "object": object_id, "blob_id": closed.map(|o| o.cookie) }));
            }
        }
    }
}

/// Tells the kernel the read `msg_id` of the object behind `fd` is done.
fn read_complete(fd: &OwnedFd, msg_id: u32) -> std::io::Result<()> {
    // SAFETY: an ioctl on the object's own anonymous fd, with the message id as its
    // integer argument, as the kernel's UAPI defines it.
    let done = unsafe { nix::libc::ioctl(fd.as_raw_fd(), protocol::IOC_READ_COMPLETE as _, msg_id as nix::libc::c_int) };
    if done < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// What the script says to do instead of answering the `nth` request of kind `on`.
fn scripted(shared: &Shared, on: FscacheRequest, blob_id: &str, nth: u64) -> Option<FscacheAction> {
    let script = shared.script.lock().unwrap_or_else(|e| e.into_inner());
    script.script().fscache.iter().find(|rule| rule.catches(on, blob_id, nth, shared.process)).map(|rule| rule.action)
}

/// The images served, one per bound bootstrap, and where new ones are built.
struct Images {
    built: HashMap<String, Arc<std::fs::File>>,
    /// Builds tried: each gets a directory of its own under `scratch`.
    attempts: u64,
    scratch: PathBuf,
}

impl Images {
    /// The image of the bootstrap bound as (`domain`, `blob`), opened once per key; an
    /// errno for the kernel when there is none (ENOENT: not bound; EIO: not servable).
    async fn open(&mut self, shared: &Shared, domain: &str, blob: &str) -> Result<Arc<std::fs::File>, i32> {
        let metadata = {
            let mut model = shared.model.lock().await;
            let metadata = model.bound_metadata(domain, blob).ok_or(nix::libc::ENOENT)?;
            model.blob_opened(blob);
            metadata
        };
        // Keyed by the bootstrap too: a blob unbound and bound again may name another image.
        let key = format!("{domain}/{blob}/{}", metadata.display());
        if let Some(file) = self.built.get(&key) {
            return Ok(file.clone());
        }
        self.attempts += 1;
        let scratch = self.scratch.join(self.attempts.to_string());
        let built = tokio::task::spawn_blocking(move || image::image_for(&metadata, &scratch)).await;
        let path = match built {
            Ok(Ok(path)) => path,
            Ok(Err(e)) => {
                shared.journal.record("fscache_image_failed", json!({ "blob_id": blob, "error": chain(&e) }));
                return Err(nix::libc::EIO);
            }
            Err(_) => return Err(nix::libc::EIO),
        };
        let file = Arc::new(std::fs::File::open(&path).map_err(|e| e.raw_os_error().unwrap_or(nix::libc::EIO))?);
        self.built.insert(key, file.clone());
        Ok(file)
    }
}

/// Copies `offset..offset+len` of the image into the cache file, zeros past the image's end
/// (the kernel asks in whole pages). The cache file takes direct I/O only: the bytes must
/// come from a page-aligned buffer (anything else is EINVAL).
fn copy_range(image: &std::fs::File, cache: &OwnedFd, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    const PAGE: usize = 4096;
    let mut storage = vec![0u8; CHUNK.min(len) as usize + PAGE];
    let start = storage.as_ptr().align_offset(PAGE);
    let buffer = &mut storage[start..start + CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done) as usize;
        let chunk = &mut buffer[..n];
        let mut filled = 0;
        while filled < n {
            match image.read_at(&mut chunk[filled..], offset + done + filled as u64)? {
                0 => break,
                read => filled += read,
            }
        }
        chunk[filled..].fill(0);
        let mut written = 0;
        while written < n {
            written += nix::sys::uio::pwrite(cache, &chunk[written..], (offset + done + written as u64) as i64)?;
        }
        done += n as u64;
    }
    Ok(())
}

/// An error with its sources, for the journal and for a refused start.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// The service against a stand-in for the kernel: a SOCK_SEQPACKET pair keeps each message
/// whole, as `/dev/cachefiles` does, and a regular file stands in for an object's anonymous
/// fd. What the kernel alone can do (the READ_COMPLETE ioctl) fails here and is journaled;
/// the VM tests run it against the real device.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, Model, ModelOptions};
    use std::io::Read;
    use std::os::fd::IntoRawFd;

    fn message(msg_id: u32, opcode: u32, object_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [msg_id, opcode, 16 + payload.len() as u32, object_id] {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    fn open(msg_id: u32, object_id: u32, volume: &str, cookie: &str, fd: i32) -> Vec<u8> {
        let volume = format!("{volume}\0");
        let mut p = Vec::new();
        for word in [volume.len() as u32, cookie.len() as u32, fd as u32, 0] {
            p.extend_from_slice(&word.to_ne_bytes());
        }
        p.extend_from_slice(volume.as_bytes());
        p.extend_from_slice(cookie.as_bytes());
        message(msg_id, 0, object_id, &p)
    }

    fn read(msg_id: u32, object_id: u32, offset: u64, len: u64) -> Vec<u8> {
        let mut p = offset.to_ne_bytes().to_vec();
        p.extend_from_slice(&len.to_ne_bytes());
        message(msg_id, 2, object_id, &p)
    }

    /// What the daemon wrote back, within 5 s.
    fn reply(kernel: &std::os::unix::net::UnixDatagram) -> String {
        kernel.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buffer = [0u8; 256];
        let n = kernel.recv(&mut buffer).expect("a reply within 5 s");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_read_and_faults_are_answered_as_the_kernel_expects() {
        let dir = tempfile::tempdir().unwrap();
        // An erofs image is served as it is: its magic at 1024, then known bytes.
        let mut image: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        image[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        let boot = dir.path().join("image.boot");
        std::fs::write(&boot, &image).unwrap();
        let options = ModelOptions {
            version: crate::version::NydusdVersion::V2_4,
            shuffle_maps: false,
            id: None,
            supervisor: None,
            mode: Mode::Singleton,
            build: crate::build_info::build_info(crate::version::NydusdVersion::V2_4, None),
            abort_like_nydusd: false,
            fscache_dir: Some(dir.path().to_owned()),
            fuse: None,
            fscache_service: None,
        };
        let mut model = Model::new(options, "info".into());
        let entry = serde_json::json!({
            "type": "bootstrap", "id": "blob1", "domain_id": "dom",
            "config": {"id": "blob1", "backend_type": "localfs", "backend_config": {"dir": dir.path()},
                       "cache_type": "fscache", "cache_config": {"work_dir": dir.path()}, "metadata_path": boot}
        });
        let created = model.handle(crate::routes::Route::CreateBlob(entry.to_string().into_bytes()));
        assert_eq!(created.response.status, 204);
        let script: crate::script::Script =
            serde_json::from_value(serde_json::json!({ "fscache": [{ "on": "open", "blob_id": "failing", "action": "fail" }] }))
                .unwrap();
        let journal_file = dir.path().join("journal.jsonl");
        let journal = crate::journal::Journal::open_limited(&journal_file, 1 << 20).unwrap();
        let (shared, _) = Shared::new(model, journal, crate::script::ScriptRunner::new(script), 1, None);
        let shared = Arc::new(shared);
        let (kernel, daemon) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let device_fd = daemon.as_raw_fd();
        // A datagram pair keeps message boundaries as SOCK_SEQPACKET and the device do.
        let service = tokio::spawn(serve(OwnedFd::from(daemon), shared, dir.path().join("scratch")));

        let cache_path = dir.path().join("object-1.cache");
        let cache = std::fs::File::create(&cache_path).unwrap();
        let anon = cache.try_clone().unwrap().into_raw_fd();
        kernel.send(&open(1, 1, "erofs,dom", "blob1", anon)).unwrap();
        assert_eq!(tokio::task::block_in_place(|| reply(&kernel)), "copen 1,8192");
        kernel.send(&read(2, 1, 4096, 4096)).unwrap();
        // Not in the domain it was bound in: nydusd looks up (domain, fsid) exactly.
        let other = cache.try_clone().unwrap().into_raw_fd();
        kernel.send(&open(3, 2, "erofs,blob1", "blob1", other)).unwrap();
        assert_eq!(tokio::task::block_in_place(|| reply(&kernel)), "copen 3,-2");
        // Damaged messages are journaled and skipped; the next one is answered.
        kernel.send(&[1, 2, 3]).unwrap();
        kernel.send(&message(4, 9, 1, &[])).unwrap();
        let failing = cache.try_clone().unwrap().into_raw_fd();
        kernel.send(&open(5, 3, "erofs,dom", "failing", failing)).unwrap();
        assert_eq!(tokio::task::block_in_place(|| reply(&kernel)), "copen 5,-5");
        // A READ past the image is cut at its end: the cache file never grows beyond it.
        kernel.send(&read(8, 1, 0, 256 << 20)).unwrap();
        // fds a kernel never gives: none, a standard stream, the device itself. Refused,
        // answered, and none of them closed (this test still writes to stderr, and the
        // device still answers below).
        for (msg_id, fd) in [(9, -1), (10, 2), (11, device_fd)] {
            kernel.send(&open(msg_id, 9, "erofs,dom", "blob1", fd)).unwrap();
            assert_eq!(tokio::task::block_in_place(|| reply(&kernel)), format!("copen {msg_id},-22"));
        }
        kernel.send(&message(6, 1, 1, &[])).unwrap();
        // Messages are handled in order: once this one is answered, the ones before it are
        // journaled.
        let last = cache.try_clone().unwrap().into_raw_fd();
        kernel.send(&open(7, 4, "erofs,none", "none", last)).unwrap();
        assert_eq!(tokio::task::block_in_place(|| reply(&kernel)), "copen 7,-2");

        let mut written = Vec::new();
        std::fs::File::open(&cache_path).unwrap().read_to_end(&mut written).unwrap();
        // Both READs were written, the second cut at the image's end: exactly the image.
        assert_eq!(written.len(), 8192, "the cache file stops at the image's end");
        assert!(written == image, "with the image's bytes");
        // The last OPEN is journaled just after its reply.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let journal = loop {
            let journal = std::fs::read_to_string(&journal_file).unwrap();
            if journal.matches("\"fscache_open\"").count() == 4 || std::time::Instant::now() > deadline {
                break journal;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let events: Vec<serde_json::Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let of = |event: &str| events.iter().filter(|e| e["event"] == event).cloned().collect::<Vec<_>>();
        assert_eq!(of("fscache_open").len(), 4, "{journal}");
        assert_eq!(of("fscache_close").len(), 1, "{journal}");
        assert_eq!(of("fscache_open")[2]["scripted"], "fail", "{journal}");
        assert_eq!(of("fscache_message_refused").len(), 5, "{journal}");
        let read = &of("fscache_read")[0];
        assert_eq!((read["offset"].as_u64(), read["len"].as_u64(), &read["error"]), (Some(4096), Some(4096), &serde_json::Value::Null));
        // A regular file has no READ_COMPLETE: only the kernel's anonymous fd has.
        assert!(read["complete_failed"].is_string(), "{read}");
        drop(kernel);
        service.abort();
    }
}
