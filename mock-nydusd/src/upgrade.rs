//! The supervisor legs of failover and hot upgrade (`nydusd-api.md` §4.2–§4.3): nydusd
//! never listens on `--supervisor`; it connects once per transfer.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use daemon_core::fdpass;
use serde::{Deserialize, Serialize};

/// nydusd's first read on takeover: 32 KiB.
const FIRST_READ: usize = 32 * 1024;
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

/// One mounted instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMount {
    /// In-FUSE path.
    pub mountpoint: String,
    /// The mount command that created it.
    pub cmd: daemon_core::MountRequest,
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

/// Push leg: one `sendmsg` with the blob and exactly one fd, the rest by plain writes, close.
pub fn push(supervisor: &Path, blob: &[u8], fd: BorrowedFd<'_>) -> Result<(), TransferError> {
    let mut stream = UnixStream::connect(supervisor).map_err(TransferError::Connect)?;
    fdpass::send(&mut stream, blob, fd).map_err(TransferError::Io)
}

/// How long the pull leg waits for the supervisor to send: a supervisor that accepts and
/// never writes would otherwise hold the takeover, and the API lock with it, for ever.
pub const PULL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Pull leg: reads in 32 KiB `recvmsg` calls to EOF; the first fd is kept. Each read
/// waits at most [`PULL_DEADLINE`].
pub fn pull(supervisor: &Path) -> Result<(Vec<u8>, OwnedFd), TransferError> {
    let stream = UnixStream::connect(supervisor).map_err(TransferError::Connect)?;
    stream.set_read_timeout(Some(PULL_DEADLINE)).map_err(TransferError::Io)?;
    let (data, mut fds) = fdpass::receive(&stream, FIRST_READ, MAX_STATE).map_err(TransferError::Io)?;
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
        let (data, fds) = fdpass::receive(&conn, 256 * 1024, MAX_STATE).unwrap();
        assert_eq!(fds.len(), 1);
        assert_eq!(data, blob);
        sender.join().unwrap();
        // Same open file description: a write through one fd moves the other's offset.
        let received = std::fs::File::from(fds.into_iter().next().unwrap());
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
