//! The I/O seam under redb: how the store gets the storage backend for
//! `state.redb`. [`StdStateIo`] opens the real file; the fault-injecting
//! simulator wraps it to count, fail and forget operations.

use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use redb::{BackendError, StorageBackend};

use crate::wal::io::FILE_MODE;

/// Opens the storage backend of the redb file.
pub trait StateIo: Send + Sync + Debug {
    /// Opens `path`, creating it (mode 0600) when missing. Returns the
    /// backend and whether the file was created.
    fn open_backend(&self, path: &Path) -> io::Result<(Box<dyn StorageBackend>, bool)>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStateIo;

impl StateIo for StdStateIo {
    fn open_backend(&self, path: &Path) -> io::Result<(Box<dyn StorageBackend>, bool)> {
        let created = !path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(path)?;
        let backend = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        Ok((Box::new(backend), created))
    }
}

/// A boxed backend, passed to redb (which takes `impl StorageBackend`).
/// Every method is forwarded, `close` and the locking methods included:
/// without them redb's file locking would silently be lost.
#[derive(Debug)]
pub(crate) struct BoxedBackend(pub(crate) Box<dyn StorageBackend>);

impl StorageBackend for BoxedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), io::Error> {
        self.0.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}
