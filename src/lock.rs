//! Advisory lock files (`flock`): held while the process that took them lives, released by the
//! kernel when it exits or is killed, so a crashed holder never blocks anyone for good.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

impl LockFile {
    /// Takes the lock at `path` (created if missing) and writes `holder` into it, or returns
    /// what the current holder wrote.
    pub fn try_acquire(path: &Path, holder: &str) -> std::io::Result<Result<Self, String>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                file.write_all(holder.as_bytes())?;
                file.flush()?;
                Ok(Ok(Self { _file: file }))
            }
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let text = text.trim();
                Ok(Err(if text.is_empty() {
                    "another process".into()
                } else {
                    text.to_string()
                }))
            }
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock at `path` (created if missing), waiting while another process holds it.
    pub fn acquire(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.lock()?;
        Ok(Self { _file: file })
    }

    /// True when some live process holds the lock at `path`.
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => false,
        }
    }
}

/// `pid N on HOST since UNIX` for this process.
pub fn holder_note() -> String {
    format!(
        "pid {} on {} since {}",
        std::process::id(),
        crate::provenance::hostname(),
        crate::clock::unix_now()
    )
}
