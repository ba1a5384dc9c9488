//! The kernel's on-demand cachefiles protocol (`include/uapi/linux/cachefiles.h`): the
//! messages a daemon reads from `/dev/cachefiles` once it bound in on-demand mode, and the
//! commands it writes back. Every message is one `read(2)`, at most
//! [`MAX_MESSAGE`] bytes: a header of four `u32`s (message id, opcode, total length,
//! object id), then the opcode's payload, all in the host's byte order.

/// The largest message the kernel sends (`CACHEFILES_MSG_MAX_SIZE`).
pub const MAX_MESSAGE: usize = 1024;

/// `_IOW(0x98, 1, int)`: the read of a message id is complete, its data is in the cache file.
pub const IOC_READ_COMPLETE: u64 = 0x4004_9801;

const HEADER: usize = 16;

/// One request from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An erofs mount (or a device of its image) wants a cookie's data: `fd` is an
    /// anonymous fd the kernel installed in this process for the object's cache file.
    Open { msg_id: u32, object_id: u32, volume_key: String, cookie_key: String, fd: i32 },
    /// The range `offset..offset+len` of the object is missing from its cache file.
    Read { msg_id: u32, object_id: u32, offset: u64, len: u64 },
    /// The object is no longer used; its anonymous fd can be closed.
    Close { msg_id: u32, object_id: u32 },
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a cachefiles message of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("a cachefiles message says it is {said} bytes long, but {read} were read")]
    Length { said: u32, read: usize },
    #[error("an unknown cachefiles opcode {0}")]
    Opcode(u32),
    #[error("a cachefiles {0} message's payload is cut short")]
    Payload(&'static str),
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// A key as the kernel gives it: bytes, the volume key with a NUL at its end.
fn key(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Reads one message.
pub fn parse(bytes: &[u8]) -> Result<Message, ProtocolError> {
    let (Some(msg_id), Some(opcode), Some(len), Some(object_id)) =
        (u32_at(bytes, 0), u32_at(bytes, 4), u32_at(bytes, 8), u32_at(bytes, 12))
    else {
        return Err(ProtocolError::Short(bytes.len()));
    };
    if len as usize != bytes.len() {
        return Err(ProtocolError::Length { said: len, read: bytes.len() });
    }
    let payload = &bytes[HEADER..];
    match opcode {
        0 => {
            let (Some(volume_size), Some(cookie_size), Some(fd)) =
                (u32_at(payload, 0), u32_at(payload, 4), u32_at(payload, 8))
            else {
                return Err(ProtocolError::Payload("OPEN"));
            };
            let keys = payload.get(16..).ok_or(ProtocolError::Payload("OPEN"))?;
            let (volume_size, cookie_size) = (volume_size as usize, cookie_size as usize);
            let volume = keys.get(..volume_size).ok_or(ProtocolError::Payload("OPEN"))?;
            let cookie = keys.get(volume_size..volume_size + cookie_size).ok_or(ProtocolError::Payload("OPEN"))?;
            Ok(Message::Open { msg_id, object_id, volume_key: key(volume), cookie_key: key(cookie), fd: fd as i32 })
        }
        1 => Ok(Message::Close { msg_id, object_id }),
        2 => {
            let (Some(offset), Some(len)) = (u64_at(payload, 0), u64_at(payload, 8)) else {
                return Err(ProtocolError::Payload("READ"));
            };
            Ok(Message::Read { msg_id, object_id, offset, len })
        }
        other => Err(ProtocolError::Opcode(other)),
    }
}

/// The reply to an OPEN: the cache file's size, or a negative errno that fails the mount.
pub fn copen(msg_id: u32, size_or_errno: i64) -> String {
    format!("copen {msg_id},{size_or_errno}")
}

/// The erofs domain a volume key names: `erofs,<domain>` (the fsid when the mount gave no
/// `domain_id`).
pub fn domain_of(volume_key: &str) -> &str {
    volume_key.strip_prefix("erofs,").unwrap_or(volume_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msg_id: u32, opcode: u32, object_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&msg_id.to_ne_bytes());
        out.extend_from_slice(&opcode.to_ne_bytes());
        out.extend_from_slice(&((HEADER + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&object_id.to_ne_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn open_payload(volume: &[u8], cookie: &[u8], fd: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(volume.len() as u32).to_ne_bytes());
        p.extend_from_slice(&(cookie.len() as u32).to_ne_bytes());
        p.extend_from_slice(&fd.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(volume);
        p.extend_from_slice(cookie);
        p
    }

    #[test]
    fn the_three_messages_read_as_the_kernel_writes_them() {
        let open = message(7, 0, 3, &open_payload(b"erofs,dom\0", b"abc123", 9));
        assert_eq!(
            parse(&open).unwrap(),
            Message::Open {
                msg_id: 7,
                object_id: 3,
                volume_key: "erofs,dom".into(),
                cookie_key: "abc123".into(),
                fd: 9
            }
        );
        let mut read = Vec::new();
        read.extend_from_slice(&4096u64.to_ne_bytes());
        read.extend_from_slice(&8192u64.to_ne_bytes());
        assert_eq!(
            parse(&message(8, 2, 3, &read)).unwrap(),
            Message::Read { msg_id: 8, object_id: 3, offset: 4096, len: 8192 }
        );
        assert_eq!(parse(&message(9, 1, 3, &[])).unwrap(), Message::Close { msg_id: 9, object_id: 3 });
        assert_eq!(domain_of("erofs,dom"), "dom");
        assert_eq!(copen(7, 4096), "copen 7,4096");
        assert_eq!(copen(7, -2), "copen 7,-2");
    }

    #[test]
    fn damaged_messages_are_refused_by_name_never_read_past_their_end() {
        assert_eq!(parse(&[0; 15]), Err(ProtocolError::Short(15)));
        let mut long = message(1, 1, 1, &[]);
        long.push(0);
        assert_eq!(parse(&long), Err(ProtocolError::Length { said: 16, read: 17 }));
        assert_eq!(parse(&message(1, 9, 1, &[])), Err(ProtocolError::Opcode(9)));
        assert_eq!(parse(&message(1, 2, 1, &[0; 15])), Err(ProtocolError::Payload("READ")));
        // Key sizes that run past the message.
        let mut lying = open_payload(b"erofs,d\0", b"c", 3);
        lying[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(parse(&message(1, 0, 1, &lying)), Err(ProtocolError::Payload("OPEN")));
        lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        lying[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse(&message(1, 0, 1, &lying)), Err(ProtocolError::Payload("OPEN")));
    }
}
