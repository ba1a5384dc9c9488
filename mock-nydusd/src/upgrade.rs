//! The supervisor legs of failover and hot upgrade (`nydusd-api.md` §4.2–§4.3), written
//! as nydusd's upgrade backend does them and apart from daemon-core's supervisor, which is
//! tested against this side: nydusd never listens on `--supervisor`; it connects once per
//! transfer. Pushing is one `sendmsg` with the whole blob and exactly one fd, then plain
//! writes of what the kernel did not take, then close. Pulling is one 32 KiB `recvmsg`
//! with room for 16 fds, then plain reads to EOF (fds arriving after the first message are
//! not looked for, as in nydusd).

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// nydusd's first read on takeover: 32 KiB.
const FIRST_READ: usize = 32 * 1024;
/// fd slots in that first read.
const FIRST_READ_FDS: usize = 16;
/// Largest state the mock accepts from a supervisor.
const MAX_STATE: usize = 64 * 1024 * 1024;

/// What the mock hands to its successor: the mounts it serves. Real nydusd sends a
/// versionize-encoded record (§4.4); the supervisor treats the blob as opaque bytes, so
/// JSON serves the same purpose and is readable in journals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Mounted instances, by in-FUSE path.
    pub mounts: Vec<SavedMount>,
    /// Singleton blob-cache entries.
    #[serde(default)]
    pub blobs: Vec<crate::blob_cache::BlobCacheEntry>,
}

impl SavedState {
    /// The lengths of the strings nydusd's state record holds, in the order it serialises
    /// them (`nydusd-api.md` §4.4), for versionize's bounds.
    pub fn strings(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for m in &self.mounts {
            out.extend([m.mountpoint.len(), m.cmd.source.len(), m.cmd.config.len(), m.mountpoint.len()]);
            out.extend(m.cmd.prefetch_files.iter().flatten().map(String::len));
        }
        for b in &self.blobs {
            out.extend(b.state_strings());
        }
        out
    }
}

/// One mounted instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMount {
    /// In-FUSE path.
    pub mountpoint: String,
    /// The mount command that created it.
    pub cmd: nydusd_api::MountRequest,
}

/// Why a transfer failed; `Display` is the text nydusd puts inside `UpgradeManager("...")`.
#[derive(Debug)]
pub enum TransferError {
    /// connect() failed.
    Connect(std::io::Error),
    /// sendmsg/recvmsg or read/write failed.
    Io(std::io::Error),
    /// No fd came with the state.
    NoEnoughFds,
    /// The blob did not decode.
    Decode(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "StorageBackendError(CreateUnixStream({e:?}))"),
            Self::Io(e) => write!(f, "StorageBackendError(Io({e:?}))"),
            Self::NoEnoughFds => f.write_str("StorageBackendError(NoEnoughFds)"),
            Self::Decode(e) => write!(f, "Deserialize({e:?})"),
        }
    }
}

/// Push leg: connect, one `sendmsg` with the blob and `fd`, the rest by plain writes, close.
pub fn push(supervisor: &Path, blob: &[u8], fd: BorrowedFd<'_>) -> Result<(), TransferError> {
    let mut stream = UnixStream::connect(supervisor).map_err(TransferError::Connect)?;
    let fds = [fd.as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(blob)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(|e| TransferError::Io(e.into()))?,
        }
    };
    stream.write_all(&blob[sent..]).map_err(TransferError::Io)
}

/// How long the pull leg waits for the supervisor to send: a supervisor that accepts and
/// never writes would otherwise hold the takeover, and the API lock with it, for ever.
pub const PULL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Pull leg: the first 32 KiB `recvmsg` must bring the fd; the rest is read to EOF. Each
/// read waits at most [`PULL_DEADLINE`], and more than the largest state is refused.
pub fn pull(supervisor: &Path) -> Result<(Vec<u8>, OwnedFd), TransferError> {
    let stream = UnixStream::connect(supervisor).map_err(TransferError::Connect)?;
    stream.set_read_timeout(Some(PULL_DEADLINE)).map_err(TransferError::Io)?;
    receive(&stream)
}

fn receive(stream: &UnixStream) -> Result<(Vec<u8>, OwnedFd), TransferError> {
    let mut data = vec![0u8; FIRST_READ];
    let mut space = nix::cmsg_space!([RawFd; FIRST_READ_FDS]);
    let (first, mut fds) = loop {
        let mut iov = [IoSliceMut::new(&mut data)];
        match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(TransferError::Io(e.into())),
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(|e| TransferError::Io(e.into()))? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: SCM_RIGHTS installed these fds in our table; nothing else owns them.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (msg.bytes, fds);
            }
        }
    };
    data.truncate(first);
    if first > 0 {
        let limit = (MAX_STATE - first) as u64 + 1;
        stream.take(limit).read_to_end(&mut data).map_err(TransferError::Io)?;
        if data.len() > MAX_STATE {
            return Err(TransferError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the supervisor sent more than {MAX_STATE} bytes of state"),
            )));
        }
    }
    if fds.is_empty() {
        return Err(TransferError::NoEnoughFds);
    }
    // Extra fds are closed when dropped; nydusd only warns about them.
    Ok((data, fds.swap_remove(0)))
}

/// Encodes the state blob.
pub fn encode(state: &SavedState) -> Vec<u8> {
    serde_json::to_vec(state).expect("saved state always serialises")
}

/// Decodes a state blob.
pub fn decode(blob: &[u8]) -> Result<SavedState, TransferError> {
    serde_json::from_slice(blob).map_err(|e| TransferError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    #[test]
    fn push_delivers_blob_and_the_same_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sup.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let file = tempfile::tempfile().unwrap();
        let blob = vec![7u8; 100_000];
        let sender = {
            let sock = sock.clone();
            let blob = blob.clone();
            let fd = file.try_clone().unwrap();
            std::thread::spawn(move || push(&sock, &blob, std::os::fd::AsFd::as_fd(&fd)).unwrap())
        };
        let (conn, _) = listener.accept().unwrap();
        let (data, fd) = receive(&conn).unwrap();
        assert_eq!(data, blob, "a blob larger than the first read arrives whole");
        sender.join().unwrap();
        // Same open file description: a write through one fd moves the other's offset.
        let received = std::fs::File::from(fd);
        (&file).write_all(b"hello").unwrap();
        use std::io::Seek;
        assert_eq!((&received).stream_position().unwrap(), 5);
    }

    #[test]
    fn pull_without_fd_is_no_enough_fds() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sup.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"{}").unwrap();
        });
        let err = pull(&sock).unwrap_err();
        server.join().unwrap();
        assert_eq!(err.to_string(), "StorageBackendError(NoEnoughFds)");
    }

    #[test]
    fn connect_errors_render_like_nydusd() {
        let dir = tempfile::tempdir().unwrap();
        let err = pull(&dir.path().join("absent.sock")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"StorageBackendError(CreateUnixStream(Os { code: 2, kind: NotFound, message: "No such file or directory" }))"#
        );
    }
}
