//! The parts of the FUSE kernel protocol (`include/uapi/linux/fuse.h`, 7.x) a read-only
//! server needs, encoded and decoded by hand in little-endian byte order: no unsafe casts
//! of kernel buffers.

/// `struct fuse_in_header` size.
pub const IN_HEADER: usize = 40;
/// `struct fuse_out_header` size.
pub const OUT_HEADER: usize = 16;

/// Opcodes handled (others get ENOSYS).
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const ACCESS: u32 = 34;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
}

/// `FUSE_NOTIFY_RESEND` (7.40, Linux 6.9): the kernel puts requests a dead daemon had read
/// but not answered back on the queue.
pub const NOTIFY_RESEND: i32 = 7;

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Total length.
    pub len: u32,
    /// Opcode.
    pub opcode: u32,
    /// Request id, echoed in the reply.
    pub unique: u64,
    /// Inode the request is about.
    pub nodeid: u64,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl InHeader {
    /// Decodes the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(Self { len: u32_at(b, 0)?, opcode: u32_at(b, 4)?, unique: u64_at(b, 8)?, nodeid: u64_at(b, 16)? })
    }
}

/// `fuse_init_in`: the kernel's major and minor version.
pub fn init_in(body: &[u8]) -> Option<(u32, u32, u32)> {
    Some((u32_at(body, 0)?, u32_at(body, 4)?, u32_at(body, 8)?))
}

/// `fuse_read_in` (also READDIR): offset and size.
pub fn read_in(body: &[u8]) -> Option<(u64, u32)> {
    Some((u64_at(body, 8)?, u32_at(body, 16)?))
}

/// `fuse_batch_forget_in` and `fuse_forget_in` need no decoding: they get no reply.
/// A reply: header plus body.
pub fn reply(unique: u64, error: i32, body: &[u8]) -> Vec<u8> {
    let len = (OUT_HEADER + body.len()) as u32;
    let mut out = Vec::with_capacity(len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&error.to_le_bytes());
    out.extend_from_slice(&unique.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// An error reply (`errno` positive).
pub fn error(unique: u64, errno: i32) -> Vec<u8> {
    reply(unique, -errno, &[])
}

/// The resend notification (unique 0, the code in the error field).
pub fn notify_resend() -> Vec<u8> {
    reply(0, NOTIFY_RESEND, &[])
}

/// `fuse_init_out` for protocol 7.`minor`.
pub fn init_out(minor: u32, max_readahead: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&7u32.to_le_bytes());
    b.extend_from_slice(&minor.to_le_bytes());
    b.extend_from_slice(&max_readahead.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // flags: nothing optional
    b.extend_from_slice(&16u16.to_le_bytes()); // max_background
    b.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
    b.extend_from_slice(&(128 * 1024u32).to_le_bytes()); // max_write
    b.extend_from_slice(&1u32.to_le_bytes()); // time_gran
    b.extend_from_slice(&0u16.to_le_bytes()); // max_pages (unused without FUSE_MAX_PAGES)
    b.extend_from_slice(&0u16.to_le_bytes()); // map_alignment
    b.extend_from_slice(&0u32.to_le_bytes()); // flags2
    b.extend_from_slice(&0u32.to_le_bytes()); // max_stack_depth
    b.extend_from_slice(&[0u8; 24]); // unused
    b
}

/// What `fuse_attr` says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// File type and permission bits.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
}

fn attr_bytes(a: &Attr, b: &mut Vec<u8>) {
    b.extend_from_slice(&a.ino.to_le_bytes());
    b.extend_from_slice(&a.size.to_le_bytes());
    b.extend_from_slice(&a.size.div_ceil(512).to_le_bytes()); // blocks
    b.extend_from_slice(&[0u8; 24]); // atime, mtime, ctime
    b.extend_from_slice(&[0u8; 12]); // their nanoseconds
    b.extend_from_slice(&a.mode.to_le_bytes());
    b.extend_from_slice(&a.nlink.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // uid
    b.extend_from_slice(&0u32.to_le_bytes()); // gid
    b.extend_from_slice(&0u32.to_le_bytes()); // rdev
    b.extend_from_slice(&4096u32.to_le_bytes()); // blksize
    b.extend_from_slice(&0u32.to_le_bytes()); // flags
}

/// How long the kernel may cache entries and attributes: the tree is read-only.
const VALID_SECS: u64 = 1;

/// `fuse_entry_out`.
pub fn entry_out(a: &Attr) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&a.ino.to_le_bytes()); // nodeid
    b.extend_from_slice(&0u64.to_le_bytes()); // generation
    b.extend_from_slice(&VALID_SECS.to_le_bytes()); // entry_valid
    b.extend_from_slice(&VALID_SECS.to_le_bytes()); // attr_valid
    b.extend_from_slice(&[0u8; 8]); // nanoseconds
    attr_bytes(a, &mut b);
    b
}

/// `fuse_attr_out`.
pub fn attr_out(a: &Attr) -> Vec<u8> {
    let mut b = Vec::with_capacity(104);
    b.extend_from_slice(&VALID_SECS.to_le_bytes());
    b.extend_from_slice(&[0u8; 8]); // nsec + dummy
    attr_bytes(a, &mut b);
    b
}

/// `fuse_open_out` with file handle 0 (files are found by inode).
pub fn open_out() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    // FOPEN_DIRECT_IO (1 << 0): every read reaches the daemon instead of the page cache,
    // so a reader during failover really depends on the daemon (the point of the test).
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b
}

/// `fuse_kstatfs`.
pub fn statfs_out(files: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(80);
    for v in [0u64, 0, 0, files, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in [4096u32, 255, 4096, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 24]);
    b
}

/// Appends one `fuse_dirent` if it fits in `limit` bytes; returns whether it did.
pub fn push_dirent(out: &mut Vec<u8>, limit: usize, ino: u64, offset: u64, kind: u32, name: &str) -> bool {
    let size = (24 + name.len()).div_ceil(8) * 8;
    if out.len() + size > limit {
        return false;
    }
    out.extend_from_slice(&ino.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + size - 24 - name.len(), 0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernels_sizes() {
        let a = Attr { ino: 1, size: 0, mode: 0o40755, nlink: 2 };
        assert_eq!(init_out(31, 0).len(), 64);
        assert_eq!(entry_out(&a).len(), 128);
        assert_eq!(attr_out(&a).len(), 104);
        assert_eq!(open_out().len(), 16);
        assert_eq!(statfs_out(1).len(), 80);
        assert_eq!(reply(9, 0, &[1, 2]).len(), OUT_HEADER + 2);
    }

    #[test]
    fn dirents_are_padded_to_eight_bytes_and_stop_at_the_limit() {
        let mut out = Vec::new();
        assert!(push_dirent(&mut out, 100, 5, 1, 8, "abc"));
        assert_eq!(out.len(), 32);
        assert!(!push_dirent(&mut out, 40, 6, 2, 8, "x"));
        assert_eq!(out.len(), 32);
    }

    #[test]
    fn headers_decode() {
        let mut raw = vec![0u8; 40];
        raw[0..4].copy_from_slice(&40u32.to_le_bytes());
        raw[4..8].copy_from_slice(&op::GETATTR.to_le_bytes());
        raw[8..16].copy_from_slice(&77u64.to_le_bytes());
        raw[16..24].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(InHeader::parse(&raw), Some(InHeader { len: 40, opcode: op::GETATTR, unique: 77, nodeid: 1 }));
        assert_eq!(InHeader::parse(&raw[..10]), None);
    }
}
