//! The host's name and running kernel, as reports name them.

/// The host's name (`uname -n`) and kernel release (`uname -r`); `localhost` and
/// `unknown` when uname fails.
pub fn host_and_release() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (u.nodename().to_string_lossy().into_owned(), u.release().to_string_lossy().into_owned()),
        Err(_) => ("localhost".into(), "unknown".into()),
    }
}

/// The running kernel's release (`uname -r`), or `unknown`.
pub fn release() -> String {
    host_and_release().1
}
