//! The discovery marker: a file holding the intake's address.
//!
//! The function-side library reads it at startup to learn that the extension
//! is there and where to send. It is written after the socket is bound and
//! before registering, so it exists before the function's init starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Writes `addr` (e.g. `127.0.0.1:2001`, no newline) to `path` atomically:
/// a reader sees either no file or the whole address.
pub fn write(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the marker, so a function started later does not send into the void.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log!(Warn, "cannot remove marker {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_removes() {
        let path = std::env::temp_dir().join(format!("marker-test-{}", std::process::id()));
        let addr: SocketAddr = "127.0.0.1:2001".parse().unwrap();
        write(&path, addr).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "127.0.0.1:2001");
        remove(&path);
        assert!(!path.exists());
        remove(&path);
    }
}
