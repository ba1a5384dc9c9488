//! Listening on a Unix socket path the way nydusd and the snapshotter do: a file left at
//! the path by a dead owner is replaced, and the new socket is its owner's only (0600),
//! since whoever connects steers a daemon or plants a FUSE fd.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Removes whatever is at `path`, binds a listener there and makes it mode 0600.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leftover_is_replaced_and_the_socket_is_private() {
        let dir = std::env::temp_dir().join(format!("host-facts-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        std::fs::write(&path, b"left by a dead owner").unwrap();
        let listener = bind_private(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
