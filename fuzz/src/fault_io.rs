//! A WAL I/O layer over the real file system that fails the Nth call: of one
//! kind, or of any kind. A failing `write_at` may first write half of its
//! bytes, as a torn write would. The store under test sees it through
//! `Store::open_with_io`; the fuzz input arms and heals it between steps.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use factwal::wal::io::{FileBytes, StdIo, WalFile, WalIo};

/// Every call of the WAL I/O traits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoCall {
    /// `WalIo::create_dir_all`.
    CreateDirAll,
    /// `WalIo::list`.
    List,
    /// `WalIo::create`.
    Create,
    /// `WalIo::open`.
    Open,
    /// `WalIo::read`.
    Read,
    /// `WalIo::rename`.
    Rename,
    /// `WalIo::remove`.
    Remove,
    /// `WalIo::sync_dir`.
    SyncDir,
    /// `WalFile::write_at`.
    WriteAt,
    /// `WalFile::sync_data`.
    SyncData,
    /// `WalFile::allocate`.
    Allocate,
    /// `WalFile::len_bytes`.
    LenBytes,
}

impl IoCall {
    /// Every kind, in a fixed order (the fuzz input picks by index).
    pub const ALL: [IoCall; 12] = [
        IoCall::CreateDirAll,
        IoCall::List,
        IoCall::Create,
        IoCall::Open,
        IoCall::Read,
        IoCall::Rename,
        IoCall::Remove,
        IoCall::SyncDir,
        IoCall::WriteAt,
        IoCall::SyncData,
        IoCall::Allocate,
        IoCall::LenBytes,
    ];
}

/// One injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The kind of call counted; `None` counts every call.
    pub call: Option<IoCall>,
    /// Which counted call fails, from when the fault is armed (1 = the next).
    pub nth: u32,
    /// Every counted call after the nth fails too.
    pub sticky: bool,
    /// The OS error returned (EIO, ENOSPC, ...).
    pub errno: i32,
    /// A failing `write_at` first writes the first half of its bytes.
    pub torn_write: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    fault: Option<Fault>,
    counted: u32,
    fired: u64,
}

/// The fault-injecting I/O layer. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FaultIo {
    state: Arc<Mutex<FaultState>>,
}

impl FaultIo {
    /// Arms `fault`, replacing any other; counting starts now.
    pub fn arm(&self, fault: Fault) {
        let mut state = self.lock();
        state.fault = Some(fault);
        state.counted = 0;
    }

    /// Disarms every fault.
    pub fn heal(&self) {
        self.lock().fault = None;
    }

    /// How many calls have failed so far, in all.
    pub fn fired(&self) -> u64 {
        self.lock().fired
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call; the fault, if it fails this call.
    fn check(&self, call: IoCall) -> Option<Fault> {
        let mut state = self.lock();
        let fault = state.fault?;
        if fault.call.is_some_and(|counted| counted != call) {
            return None;
        }
        state.counted = state.counted.saturating_add(1);
        let fails = state.counted == fault.nth || (fault.sticky && state.counted > fault.nth);
        if fails {
            state.fired += 1;
        }
        fails.then_some(fault)
    }

    fn guard(&self, call: IoCall) -> io::Result<()> {
        match self.check(call) {
            Some(fault) => Err(io::Error::from_raw_os_error(fault.errno)),
            None => Ok(()),
        }
    }

    fn wrap(&self, file: Arc<dyn WalFile>) -> Arc<dyn WalFile> {
        Arc::new(FaultFile { inner: file, io: self.clone() })
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn WalFile>,
    io: FaultIo,
}

impl WalFile for FaultFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if let Some(fault) = self.io.check(IoCall::WriteAt) {
            if fault.torn_write {
                self.inner.write_at(offset, &bytes[..bytes.len() / 2])?;
            }
            return Err(io::Error::from_raw_os_error(fault.errno));
        }
        self.inner.write_at(offset, bytes)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.io.guard(IoCall::SyncData)?;
        self.inner.sync_data()
    }
    fn allocate(&self, bytes: u64) -> io::Result<()> {
        self.io.guard(IoCall::Allocate)?;
        self.inner.allocate(bytes)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.io.guard(IoCall::LenBytes)?;
        self.inner.len_bytes()
    }
}

impl WalIo for FaultIo {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.guard(IoCall::CreateDirAll)?;
        StdIo.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.guard(IoCall::List)?;
        StdIo.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        self.guard(IoCall::Create)?;
        Ok(self.wrap(StdIo.create(path)?))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        self.guard(IoCall::Open)?;
        Ok(self.wrap(StdIo.open(path)?))
    }
    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        self.guard(IoCall::Read)?;
        StdIo.read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.guard(IoCall::Rename)?;
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.guard(IoCall::Remove)?;
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.guard(IoCall::SyncDir)?;
        StdIo.sync_dir(dir)
    }
}
