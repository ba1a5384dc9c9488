//! A read-only loop device over an image file, for kernels that cannot mount erofs from a
//! file directly (before 6.12), as nydus-snapshotter's tarfs mode attaches one with
//! losetup. The device is configured in one `LOOP_CONFIGURE` (Linux 5.8) with
//! `LO_FLAGS_AUTOCLEAR`, so the kernel detaches it when its last user goes: the mount's
//! umount, or, if the mount never happens, the close of the fd held here.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

// <linux/loop.h>; the libc crate does not carry them.
const LOOP_CTL_GET_FREE: nix::libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: nix::libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A configured loop device; the device detaches itself once this and every mount of it
/// are gone.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    _device: OwnedFd,
}

impl LoopDevice {
    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Attaches `image` read-only to a free loop device. Another process may take the free
/// device first (EBUSY); that is retried with the next free one.
pub fn attach_read_only(image: &Path) -> std::io::Result<LoopDevice> {
    let named = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
    let file = std::fs::File::open(image).map_err(|e| named(&image.display().to_string(), e))?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| named("/dev/loop-control (the loop module)", e))?;
    let mut last = None;
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { nix::libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if number < 0 {
            return Err(named("LOOP_CTL_GET_FREE", std::io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| named(&path.display().to_string(), e))?
            .into();
        let mut info: LoopInfo64 =
            // SAFETY: an all-zero loop_info64 is valid (no offset, no limit, no name, no key).
            unsafe { std::mem::zeroed() };
        info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let kept = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..kept].copy_from_slice(&name[..kept]);
        let config = LoopConfig { fd: file.as_raw_fd() as u32, block_size: 0, info, reserved: [0; 8] };
        // SAFETY: LOOP_CONFIGURE reads one loop_config, which lives across the call.
        let configured =
            unsafe { nix::libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &config as *const LoopConfig) };
        if configured == 0 {
            return Ok(LoopDevice { path, _device: device });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(nix::libc::EBUSY) {
            return Err(named(&format!("LOOP_CONFIGURE {}", path.display()), e));
        }
        last = Some(e);
    }
    Err(named("no free loop device after 8 tries", last.unwrap_or_else(|| std::io::Error::other("EBUSY"))))
}
