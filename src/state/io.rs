//! The I/O seam under redb: how the store gets the storage backend for
//! `state.redb`. [`StdStateIo`] opens the real file; the fault-injecting
//! simulator wraps it to count, fail and forget operations.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{BackendError, StorageBackend};

use crate::files::open_regular;
use crate::files::FILE_MODE;
use crate::sync::lock;

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
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false).mode(FILE_MODE);
        let file = open_regular(path, &mut options)?;
        let backend = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        Ok((Box::new(backend), created))
    }
}

/// A boxed backend, passed to redb (which takes `impl StorageBackend`).
/// Every method is forwarded, `close` and the locking methods included:
/// without them redb's file locking would silently be lost. It remembers a
/// failed `sync_data`: after one, what the file reads back (the page cache)
/// may differ from what the disk holds, so the handle's owner must not trust
/// the file again in this process (see `Tables::sync_failed`).
#[derive(Debug)]
pub(crate) struct BoxedBackend {
    pub(crate) inner: Box<dyn StorageBackend>,
    pub(crate) sync_failed: Arc<AtomicBool>,
}

impl StorageBackend for BoxedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        let outcome = self.inner.sync_data();
        if outcome.is_err() {
            self.sync_failed.store(true, Ordering::Release);
        }
        outcome
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Bytes of one page of [`ScratchBackend`]'s private copy.
const SCRATCH_PAGE_BYTES: u64 = 4096;

/// A redb storage backend that reads a database file and keeps every write
/// in memory, so that redb can open (and repair, after a crash) a database
/// without a byte of the file changing and without a temporary copy that an
/// interrupted process could leave behind. The read-only inspection tools
/// use it. Memory is bounded: writes beyond `bytes_max` fail.
#[derive(Debug)]
pub struct ScratchBackend {
    file: File,
    state: Mutex<Scratch>,
    bytes_max: u64,
}

#[derive(Debug)]
struct Scratch {
    /// The length redb sees.
    len: u64,
    /// The file's bytes at and after this offset read as zeros: redb cut the
    /// database shorter at some point, and what it grows back is new.
    base_end: u64,
    /// Pages written, by page number.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl ScratchBackend {
    /// Opens `path` for reading only; writes are kept in at most `bytes_max`
    /// bytes of memory.
    pub fn open(path: &Path, bytes_max: u64) -> io::Result<ScratchBackend> {
        let file = open_regular(path, OpenOptions::new().read(true))?;
        let len = file.metadata()?.len();
        let state = Scratch { len, base_end: len, pages: BTreeMap::new() };
        Ok(ScratchBackend { file, state: Mutex::new(state), bytes_max })
    }

    fn state(&self) -> MutexGuard<'_, Scratch> {
        lock(&self.state)
    }

    /// Fills `out` with the bytes at `offset`: written pages, else the file
    /// (up to `base_end`), else zeros.
    fn read_into(&self, state: &Scratch, offset: u64, out: &mut [u8]) -> io::Result<()> {
        for piece in pieces(offset, out.len()) {
            let target = &mut out[piece.done..piece.done + piece.len];
            match state.pages.get(&piece.page) {
                Some(bytes) => {
                    target.copy_from_slice(&bytes[piece.within..piece.within + piece.len])
                }
                None => {
                    target.fill(0);
                    let at = offset + piece.done as u64;
                    let readable = state.base_end.saturating_sub(at).min(piece.len as u64) as usize;
                    if readable > 0 {
                        self.file.read_exact_at(&mut target[..readable], at)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl StorageBackend for ScratchBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.state();
        if offset.saturating_add(out.len() as u64) > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the database",
            ));
        }
        self.read_into(&state, offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state();
        if len < state.len {
            state.base_end = state.base_end.min(len);
            let first_gone = len.div_ceil(SCRATCH_PAGE_BYTES);
            state.pages.retain(|&page, _| page < first_gone);
            if let Some(page) = state.pages.get_mut(&(len / SCRATCH_PAGE_BYTES)) {
                page[(len % SCRATCH_PAGE_BYTES) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.state();
        for Piece { page, within, done, len } in pieces(offset, data.len()) {
            if !state.pages.contains_key(&page) {
                if (state.pages.len() as u64 + 1) * SCRATCH_PAGE_BYTES > self.bytes_max {
                    let text = format!(
                        "inspection needs more than {} bytes of scratch memory",
                        self.bytes_max
                    );
                    return Err(io::Error::new(io::ErrorKind::OutOfMemory, text));
                }
                let mut bytes = vec![0u8; SCRATCH_PAGE_BYTES as usize].into_boxed_slice();
                self.read_into(&state, page * SCRATCH_PAGE_BYTES, &mut bytes)?;
                state.pages.insert(page, bytes);
            }
            let bytes = state.pages.get_mut(&page).expect("the page was just inserted");
            bytes[within..within + len].copy_from_slice(&data[done..done + len]);
        }
        let end = offset + data.len() as u64;
        state.len = state.len.max(end);
        Ok(())
    }
}

/// The part of a byte range that falls in one scratch page.
struct Piece {
    /// The page's number.
    page: u64,
    /// Where in the page the part begins.
    within: usize,
    /// Bytes of the range before this part.
    done: usize,
    /// The part's length.
    len: usize,
}

/// `len` bytes at `offset`, page by page.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = Piece> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = offset + done as u64;
        let within = (at % SCRATCH_PAGE_BYTES) as usize;
        let part = (SCRATCH_PAGE_BYTES as usize - within).min(len - done);
        let piece = Piece { page: at / SCRATCH_PAGE_BYTES, within, done, len: part };
        done += part;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_writes_stay_in_memory_and_read_back() {
        // Reads see the file, then what was written over it; shrinking and
        // growing again reads zeros; the file never changes; the memory
        // bound is enforced.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let original: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let backend = ScratchBackend::open(&path, 3 * SCRATCH_PAGE_BYTES).unwrap();
        let mut out = vec![0u8; 100];
        backend.read(4090, &mut out).unwrap();
        assert_eq!(out, original[4090..4190]);
        backend.write(4095, &[0xAA; 3]).unwrap();
        backend.read(4094, &mut out[..5]).unwrap();
        assert_eq!(out[..5], [original[4094], 0xAA, 0xAA, 0xAA, original[4098]]);
        backend.set_len(5000).unwrap();
        backend.set_len(9000).unwrap();
        backend.read(4990, &mut out[..20]).unwrap();
        assert_eq!(out[..10], original[4990..5000]);
        assert_eq!(out[10..20], [0; 10]);
        assert!(backend.read(8990, &mut out[..20]).is_err(), "past the end");
        backend.write(20_000, &[1]).unwrap();
        assert_eq!(backend.len().unwrap(), 20_001);
        let error = backend.write(40_000, &[1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
        assert_eq!(std::fs::read(&path).unwrap(), original, "the file never changes");
    }
}
