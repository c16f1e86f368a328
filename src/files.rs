//! File-system helpers the store's layers share: opening only regular
//! files, telling what a path is, durable directory creation, and the
//! directory locks.

use std::fs::{File, Metadata, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, IoOp, Result};

/// Mode of every directory factwal creates: its owner's only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file factwal creates: session state is private.
pub const FILE_MODE: u32 = 0o600;

/// Name of the lock file in the data directory (and in the WAL directory,
/// when that is another directory).
pub const LOCK_FILE_NAME: &str = "LOCK";

/// What kind of file system object `metadata` describes, for messages.
pub(crate) fn kind_of(metadata: &Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn not_regular(metadata: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", kind_of(metadata)),
    )
}

/// Opens `path` only if it is a regular file (following symbolic links).
/// The open itself never blocks (a FIFO would otherwise wait for a writer
/// forever) and the type is checked on the opened file, so nothing can swap
/// the file between the check and the use.
pub(crate) fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options.custom_flags(libc::O_NONBLOCK).open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(not_regular(&metadata));
    }
    Ok(file)
}

/// What is at a path that should be a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirState {
    /// Nothing: it can be created.
    Missing,
    /// A directory.
    Directory,
}

/// Checks that `path` is a directory or missing; anything else (a file, a
/// FIFO) is refused with an error naming what it is.
pub(crate) fn dir_state(path: &Path, what: &'static str) -> Result<DirState> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(DirState::Directory),
        Ok(metadata) => {
            let source = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("is {}, not a directory", kind_of(&metadata)),
            );
            Err(Error::io(path, IoOp::Open, what, source))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(DirState::Missing),
        Err(error) => Err(Error::io(path, IoOp::Open, what, error)),
    }
}

/// Takes the exclusive lock of a directory (its `LOCK` file, created when
/// missing): a second open, from this process or another, gets
/// `Error::Locked`. The lock lasts as long as the returned file.
pub(crate) fn lock_exclusive(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false).mode(FILE_MODE);
    let file = open_regular(&path, &mut options)
        .map_err(|e| Error::io(&path, IoOp::Open, "lock file", e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(e)) => Err(Error::io(&path, IoOp::Lock, "", e)),
    }
}

/// Locks a directory's lock file shared, without creating it: a writer
/// (exclusive) cannot start meanwhile, and one already running makes this
/// fail. `None` when there is no lock file (no writer ever opened it).
pub(crate) fn lock_shared(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = match open_regular(&path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(&path, IoOp::Open, "lock file", error)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(error)) => Err(Error::io(&path, IoOp::Lock, "", error)),
    }
}

/// True when `a` and `b` are the same existing directory.
pub(crate) fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        // Opening a FIFO for reading would wait for a writer forever; the
        // check must refuse it at once, and name what it is.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let error = open_regular(&fifo, OpenOptions::new().read(true)).unwrap_err();
        assert_eq!(error.to_string(), "is a FIFO, not a regular file");
        let error = open_regular(dir.path(), OpenOptions::new().read(true)).unwrap_err();
        assert_eq!(error.to_string(), "is a directory, not a regular file");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file, OpenOptions::new().read(true)).is_ok());
        assert_eq!(
            dir_state(&file, "directory").unwrap_err().to_string(),
            format!(
                "I/O error: open directory {}: is a regular file, not a directory",
                file.display()
            )
        );
        assert_eq!(dir_state(dir.path(), "directory").unwrap(), DirState::Directory);
        assert_eq!(dir_state(&dir.path().join("none"), "directory").unwrap(), DirState::Missing);
    }
}
