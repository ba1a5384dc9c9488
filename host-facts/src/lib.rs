//! What a Linux host has and shows, read the one way every crate here reads it.
//!
//! * [`kernel`]: the host's name and kernel release (uname).
//! * [`mountinfo`]: the mounts in `/proc/self/mountinfo`, with the kernel's octal escapes
//!   undone, so a path with a space matches.
//! * [`process`]: a process's state, start time and arguments from `/proc/<pid>`;
//!   [`pidfd`]: a handle on one process that no reused pid can redirect.
//! * [`requirement`]: the capabilities privileged tests and scenarios are gated on, each
//!   check answering with the reason it fails.
//! * [`unix_socket`]: a private socket bound where a dead owner's may still lie.
//!
//! The daemon library, the mock and the harness all depend on this crate, and on nothing
//! of each other's for these facts: the mock can then be tested against the library
//! without sharing its code.

pub mod kernel;
pub mod mountinfo;
pub mod pidfd;
pub mod process;
pub mod requirement;
pub mod unix_socket;

pub use requirement::{NYDUSD_2_4, Requirement, find_on_path, installed_nydusd, nydusd_2_4, on_path, unmet};
