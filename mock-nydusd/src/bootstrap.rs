//! The bootstrap a RAFS mount names, read as far as nydusd reads it before it answers: the
//! file opened, a RAFS v5 superblock tried (8 KiB, magic `RAFS`), then an erofs one at 1 KiB
//! (RAFS v6), and the blob table that says which blobs the instance's cache will hold.
//! The mock also takes its JSON stand-in (`{"mock_tree": …}`, see `fuse::tree`), which
//! real nydusd refuses as too short.
//!
//! Reads are bounded: the superblock's 8 KiB, a stand-in up to [`MAX_STAND_IN_BYTES`], and
//! a blob table up to [`MAX_BLOB_TABLE_BYTES`]; nothing else of the file is read.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::version::NydusdVersion;

/// The v5 superblock nydusd reads first, whole.
const V5_SUPERBLOCK_BYTES: usize = 8192;
const V5_MAGIC: u32 = 0x5241_4653;
const V5_VERSION: u32 = 0x500;
const V6_SUPER_OFFSET: usize = 1024;
const V6_MAGIC: u32 = 0xE0F5_E1E2;
/// The RAFS v6 extended superblock follows the erofs one (128 bytes at 1 KiB).
const V6_EXT_OFFSET: usize = V6_SUPER_OFFSET + 128;
const V6_BLOB_ENTRY_BYTES: usize = 256;
const BLOB_ID_BYTES: usize = 64;
/// The largest stand-in read.
pub const MAX_STAND_IN_BYTES: u64 = 16 * 1024 * 1024;
/// The largest blob table read (a v6 table of 4096 blobs).
const MAX_BLOB_TABLE_BYTES: u64 = 4096 * V6_BLOB_ENTRY_BYTES as u64;

/// What a bootstrap turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A RAFS image with the ids of its blobs.
    Rafs {
        /// 5 or 6.
        version: u8,
        /// The blob table's ids, in order.
        blob_ids: Vec<String>,
    },
    /// The mock's JSON stand-in.
    StandIn,
}

/// Why nydusd could not fill the superblock: the io::Error it would have had.
#[derive(Debug)]
pub struct SuperblockError(pub std::io::Error);

impl SuperblockError {
    /// The `FillSuperBlock` part of nydusd's message, as `version` words it.
    pub fn fill_superblock_text(&self, version: NydusdVersion) -> String {
        match version {
            NydusdVersion::V2_4 => format!("Failed to fill superBlock: {}`", self.0),
            NydusdVersion::V2_2 => format!("FillSuperblock({:?})", self.0),
        }
    }

    /// The `ReadMetadata` part of a remount's message: the bootstrap could not be opened.
    pub fn read_metadata_text(&self, version: NydusdVersion, path: &str) -> String {
        match version {
            NydusdVersion::V2_4 => format!("Failed to read metadata: {}`", self.0),
            NydusdVersion::V2_2 => format!("ReadMetadata({:?}, {path:?})", self.0),
        }
    }
}

/// Opens `path` for reading without blocking: a FIFO without a writer would otherwise hold
/// the open, and with it every request behind the model's lock (nydusd would hang on it;
/// the mock answers that the file is too short instead).
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::os::unix::fs::OpenOptionsExt::custom_flags(std::fs::OpenOptions::new().read(true), nix::libc::O_NONBLOCK)
        .open(path)
}

/// Opens only, as a remount does before it reads anything.
pub fn open(path: &Path) -> Result<(), SuperblockError> {
    let file = open_nonblocking(path).map_err(SuperblockError)?;
    // Opening a directory succeeds; its first read is what fails.
    if file.metadata().map_err(SuperblockError)?.is_dir() {
        return Err(SuperblockError(std::io::Error::from_raw_os_error(nix::libc::EISDIR)));
    }
    Ok(())
}

/// Reads the superblock and blob table of `path`.
pub fn read(path: &Path) -> Result<Bootstrap, SuperblockError> {
    let mut file = open_nonblocking(path).map_err(SuperblockError)?;
    let mut head = Vec::with_capacity(V5_SUPERBLOCK_BYTES);
    match (&mut file).take(V5_SUPERBLOCK_BYTES as u64).read_to_end(&mut head) {
        Ok(_) => {}
        // A FIFO or socket with nothing to read yet: as short as an empty file.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(SuperblockError(e)),
    }
    if is_stand_in(&head, &mut file) {
        return Ok(Bootstrap::StandIn);
    }
    if head.len() < V5_SUPERBLOCK_BYTES {
        return Err(SuperblockError::short());
    }
    let (u32_at, u64_at) = (|at| le_u32(&head, at), |at| le_u64(&head, at));
    let file_size = file.metadata().map_err(SuperblockError)?.len();
    // nydusd's superblock checks all end in a bare EINVAL.
    let invalid = || SuperblockError(std::io::Error::from_raw_os_error(nix::libc::EINVAL));
    if u32_at(0) == V5_MAGIC && u32_at(4) == V5_VERSION {
        let (table_offset, table_size) = (u64_at(48), u64::from(u32_at(64)));
        if !v5_superblock_holds(&head, file_size) {
            return Err(invalid());
        }
        let table = read_table(&mut file, table_offset, table_size)?;
        return Ok(Bootstrap::Rafs { version: 5, blob_ids: v5_blob_ids(&table).ok_or_else(invalid)? });
    }
    if u32_at(V6_SUPER_OFFSET) == V6_MAGIC {
        let (table_offset, table_size) = (u64_at(V6_EXT_OFFSET + 8), u64::from(u32_at(V6_EXT_OFFSET + 16)));
        let within = table_offset.checked_add(table_size).is_some_and(|end| end <= file_size);
        if !table_size.is_multiple_of(V6_BLOB_ENTRY_BYTES as u64) || !within {
            return Err(invalid());
        }
        let table = read_table(&mut file, table_offset, table_size)?;
        let blob_ids = table
            .chunks_exact(V6_BLOB_ENTRY_BYTES)
            .map(|entry| blob_id(&entry[..BLOB_ID_BYTES]))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?;
        return Ok(Bootstrap::Rafs { version: 6, blob_ids: blob_ids.into_iter().filter(|id| !id.is_empty()).collect() });
    }
    Err(SuperblockError(std::io::Error::other("invalid RAFS superblock")))
}

/// The little-endian u32 at `at` of the superblock (always inside its 8 KiB).
fn le_u32(head: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"))
}

/// The little-endian u64 at `at` of the superblock.
fn le_u64(head: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"))
}

/// The v5 superblock's own sizes and tables, as nydusd's `RafsV5SuperBlock::validate`
/// checks them: an 8 KiB superblock in a longer file, a power-of-two block size from 4 KiB
/// to 16 MiB, no more inodes than inode-table entries, and inode and blob tables inside the
/// metadata after the superblock without overlapping.
fn v5_superblock_holds(head: &[u8], file_size: u64) -> bool {
    let (u32_at, u64_at) = (|at| le_u32(head, at), |at| le_u64(head, at));
    let block_size = u64::from(u32_at(12));
    let range = |offset: u64, size: u64| offset.checked_add(size).map(|end| (offset, end));
    let inside = |(start, end): (u64, u64)| start >= V5_SUPERBLOCK_BYTES as u64 && end <= file_size;
    let inode_table = range(u64_at(32), u64::from(u32_at(56)) * 4);
    let blob_table = range(u64_at(48), u64::from(u32_at(64)));
    let (Some(inode_table), Some(blob_table)) = (inode_table, blob_table) else { return false };
    u32_at(8) as usize == V5_SUPERBLOCK_BYTES
        && file_size > V5_SUPERBLOCK_BYTES as u64
        && block_size.is_power_of_two()
        && block_size >= 0x1000
        && (block_size <= 16 << 20 || block_size == 4 << 20)
        && u64_at(24) <= u64::from(u32_at(56))
        && inside(inode_table)
        && inside(blob_table)
        && (blob_table.1 <= inode_table.0 || inode_table.1 <= blob_table.0 || inode_table.0 == inode_table.1)
}

impl SuperblockError {
    /// `read_exact`'s error for a short file, which is what nydusd's superblock read gets.
    fn short() -> Self {
        let mut buf = [0u8; 1];
        let short = (&[][..]).read_exact(&mut buf).expect_err("reading one byte from nothing fails");
        SuperblockError(short)
    }
}

/// A stand-in starts with `{`; it is one when the whole file (bounded) is a JSON object
/// with a `mock_tree`.
fn is_stand_in(head: &[u8], file: &mut std::fs::File) -> bool {
    if head.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return false;
    }
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(0)).is_err() || file.take(MAX_STAND_IN_BYTES + 1).read_to_end(&mut text).is_err() {
        return false;
    }
    text.len() as u64 <= MAX_STAND_IN_BYTES
        && serde_json::from_slice::<serde_json::Value>(&text).is_ok_and(|v| v.get("mock_tree").is_some())
}

fn read_table(file: &mut std::fs::File, offset: u64, size: u64) -> Result<Vec<u8>, SuperblockError> {
    let size = size.min(MAX_BLOB_TABLE_BYTES);
    let mut table = Vec::new();
    file.seek(SeekFrom::Start(offset)).map_err(SuperblockError)?;
    file.take(size).read_to_end(&mut table).map_err(SuperblockError)?;
    Ok(table)
}

/// A blob id: the bytes before the first NUL, which must be UTF-8 (nydusd refuses the
/// table otherwise).
fn blob_id(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).ok()
}

/// The v5 table: each entry is two u32s (readahead offset and size) and a NUL-ended id;
/// zeros pad the table to 8 bytes. `None` when an id is not UTF-8.
fn v5_blob_ids(table: &[u8]) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    let mut rest = table;
    while rest.len() > 8 {
        rest = &rest[8..];
        // Advance by the raw bytes of the id, not by its decoded length.
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let id = blob_id(&rest[..end])?;
        if id.is_empty() {
            break;
        }
        rest = &rest[(end + 1).min(rest.len())..];
        ids.push(id);
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_image(ids: &[&str]) -> Vec<u8> {
        let mut image = vec![0u8; 8192];
        image[V6_SUPER_OFFSET..V6_SUPER_OFFSET + 4].copy_from_slice(&V6_MAGIC.to_le_bytes());
        image[V6_EXT_OFFSET + 8..V6_EXT_OFFSET + 16].copy_from_slice(&4096u64.to_le_bytes());
        let size = (ids.len() * V6_BLOB_ENTRY_BYTES) as u32;
        image[V6_EXT_OFFSET + 16..V6_EXT_OFFSET + 20].copy_from_slice(&size.to_le_bytes());
        for (i, id) in ids.iter().enumerate() {
            let at = 4096 + i * V6_BLOB_ENTRY_BYTES;
            image[at..at + id.len()].copy_from_slice(id.as_bytes());
        }
        image
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    #[test]
    fn a_v6_table_names_its_blobs() {
        let file = write(&v6_image(&["a".repeat(64).as_str(), "b".repeat(64).as_str()]));
        assert_eq!(read(file.path()).unwrap(), Bootstrap::Rafs { version: 6, blob_ids: vec!["a".repeat(64), "b".repeat(64)] });
    }

    #[test]
    fn a_v5_table_names_its_blobs() {
        let mut image = vec![0u8; 8192];
        image[0..4].copy_from_slice(&V5_MAGIC.to_le_bytes());
        image[4..8].copy_from_slice(&V5_VERSION.to_le_bytes());
        image[8..12].copy_from_slice(&8192u32.to_le_bytes());
        image[12..16].copy_from_slice(&4096u32.to_le_bytes());
        image[32..40].copy_from_slice(&8192u64.to_le_bytes());
        image[48..56].copy_from_slice(&8192u64.to_le_bytes());
        let mut table = Vec::new();
        for id in ["x1", "y22"] {
            table.extend_from_slice(&[0u8; 8]);
            table.extend_from_slice(id.as_bytes());
            table.push(0);
        }
        table.resize(table.len().next_multiple_of(8), 0);
        image[64..68].copy_from_slice(&(table.len() as u32).to_le_bytes());
        image.extend_from_slice(&table);
        let file = write(&image);
        assert_eq!(read(file.path()).unwrap(), Bootstrap::Rafs { version: 5, blob_ids: vec!["x1".into(), "y22".into()] });
        // Only the magic and version: the rest of the superblock does not hold.
        let bare = write(&image[..8].iter().copied().chain(std::iter::repeat_n(0, 8192)).collect::<Vec<u8>>());
        assert_eq!(read(bare.path()).unwrap_err().0.raw_os_error(), Some(nix::libc::EINVAL));
    }

    #[test]
    fn short_large_and_missing_files_fail_as_nydusd_says() {
        let short = write(b"hello");
        let big = write(&vec![b'x'; 20_000]);
        let dir = tempfile::tempdir().unwrap();
        let texts = |path: &Path| {
            let e = read(path).unwrap_err();
            (e.fill_superblock_text(NydusdVersion::V2_4), e.fill_superblock_text(NydusdVersion::V2_2))
        };
        assert_eq!(
            texts(short.path()),
            (
                "Failed to fill superBlock: failed to fill whole buffer`".into(),
                r#"FillSuperblock(Error { kind: UnexpectedEof, message: "failed to fill whole buffer" })"#.into()
            )
        );
        assert_eq!(texts(big.path()).0, "Failed to fill superBlock: invalid RAFS superblock`");
        assert_eq!(texts(big.path()).1, r#"FillSuperblock(Custom { kind: Other, error: "invalid RAFS superblock" })"#);
        assert_eq!(texts(&dir.path().join("none")).0, "Failed to fill superBlock: No such file or directory (os error 2)`");
        assert_eq!(texts(dir.path()).0, "Failed to fill superBlock: Is a directory (os error 21)`");
    }

    #[test]
    fn a_fifo_without_a_writer_is_answered_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
        let e = read(&fifo).unwrap_err();
        assert_eq!(e.fill_superblock_text(NydusdVersion::V2_4), "Failed to fill superBlock: failed to fill whole buffer`");
        assert!(open(&fifo).is_ok());
    }

    #[test]
    fn a_stand_in_is_taken_and_a_bad_table_is_refused_as_nydusd_refuses_it() {
        assert_eq!(read(write(br#" {"mock_tree": {"a": "b"}}"#).path()).unwrap(), Bootstrap::StandIn);
        let einval = |image: Vec<u8>| read(write(&image).path()).unwrap_err().0.raw_os_error();
        let with_size = |size: u32| {
            let mut image = v6_image(&["c".repeat(64).as_str()]);
            image[V6_EXT_OFFSET + 16..V6_EXT_OFFSET + 20].copy_from_slice(&size.to_le_bytes());
            image
        };
        // Past the end of the file; not a whole number of entries.
        assert_eq!(einval(with_size(u32::MAX)), Some(nix::libc::EINVAL));
        assert_eq!(einval(with_size(7)), Some(nix::libc::EINVAL));
        // An id that is not UTF-8.
        let mut image = v6_image(&["c".repeat(64).as_str()]);
        image[4096..4096 + 64].fill(0xff);
        assert_eq!(einval(image), Some(nix::libc::EINVAL));
    }
}
