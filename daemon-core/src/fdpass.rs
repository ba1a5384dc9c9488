//! Passing a state blob and file descriptors over a Unix stream with `SCM_RIGHTS`, the
//! way nydusd and its supervisor do (`nydusd-api.md` §4.2–§4.3): the sender puts the fd
//! into the first `sendmsg` and writes the rest of the blob plainly, then closes; the
//! receiver reads to EOF, collecting every fd that comes along.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// fd slots per `recvmsg`; the snapshotter's supervisor allows 64.
const MAX_FDS: usize = 64;

/// Sends `data` with `fd` attached to its first part.
pub fn send(stream: &mut UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(data)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    stream.write_all(&data[sent..])
}

/// Reads until EOF in `chunk`-byte `recvmsg` calls; returns the bytes and every fd received
/// (close-on-exec). `limit` bounds the bytes accepted, so a misbehaving peer cannot grow
/// the buffer without end.
pub fn receive(stream: &UnixStream, chunk: usize, limit: usize) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => msg,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: SCM_RIGHTS installed these fds in our table; nothing else owns them.
                fds.extend(received.into_iter().map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }));
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Ok((data, fds));
        }
        if data.len() + n > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("peer sent more than {limit} bytes of state"),
            ));
        }
        data.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;
    use std::os::fd::AsFd;

    #[test]
    fn a_large_blob_and_the_same_open_file_arrive() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let blob: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sender = {
            let blob = blob.clone();
            let fd = file.try_clone().unwrap();
            std::thread::spawn(move || {
                send(&mut a, &blob, fd.as_fd()).unwrap();
            })
        };
        let (data, fds) = receive(&b, 256 * 1024, 16 * 1024 * 1024).unwrap();
        sender.join().unwrap();
        assert_eq!(data, blob);
        assert_eq!(fds.len(), 1);
        // Same open file description: a write through one fd moves the other's offset.
        let received = std::fs::File::from(fds.into_iter().next().unwrap());
        (&file).write_all(b"hello").unwrap();
        assert_eq!((&received).stream_position().unwrap(), 5);
    }

    #[test]
    fn more_than_the_limit_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let sender = std::thread::spawn(move || {
            let _ = send(&mut a, &[0u8; 10_000], file.as_fd());
        });
        let err = receive(&b, 4096, 5000).unwrap_err();
        sender.join().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
