//! A fault-injecting, crash-simulating disk for tests, fuzzing and
//! simulation. Not used by the engine itself.
//!
//! [`SimDisk`] sits under both of the store's I/O seams: [`SimDisk::wal_io`]
//! (the WAL's file operations) and [`SimDisk::state_io`] (redb's storage
//! backend, wrapping redb's own `FileBackend`, with `close` and the locking
//! methods forwarded). Files are real files in a real directory; the disk also
//! keeps, in memory, what is *durable*: each file's content as of its last
//! sync, and each directory's entries as of its last directory sync. That is
//! the media model of `docs/DESIGN.md`:
//!
//! 1. a sync that returned makes the file's written data durable;
//! 2. an unsynced write may be lost, or persist only up to some byte;
//! 3. bytes outside a write's range do not change;
//! 4. a created, renamed or removed entry is durable only once its directory
//!    is synced.
//!
//! It can fail the Nth operation of a kind with any errno (EIO, ENOSPC, once
//! or from then on), crash at the Nth mutating operation (every later one
//! fails), and then simulate a power loss ([`SimDisk::power_loss`]): every
//! file goes back to its durable content, the last unsynced write can be torn
//! at any byte, and unsynced directory changes are forgotten.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{BackendError, StorageBackend};

use crate::state::StateIo;
use crate::sync::lock;
use crate::wal::io::{FileBytes, StdIo, WalFile, WalIo};

/// Kinds of operation a fault rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Writing file bytes (WAL records, segment zero-fill, redb pages).
    Write,
    /// Syncing a file's data.
    Sync,
    /// Preallocating or resizing a file.
    Resize,
    /// Creating a file or directory.
    Create,
    /// Renaming an entry.
    Rename,
    /// Removing an entry.
    Remove,
    /// Syncing a directory.
    SyncDir,
}

/// Which side of the store an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// WAL files and directories.
    Wal,
    /// The redb file.
    State,
}

/// How a power loss treats the last unsynced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// The last unsynced write keeps this many of its first bytes (capped at
    /// its length); everything else unsynced is lost.
    KeepPrefix(usize),
}

#[derive(Debug, Clone)]
struct FaultRule {
    kind: OpKind,
    side: Option<Side>,
    nth: u64,
    errno: i32,
    sticky: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8>, sequence: u64 },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    is_dir: bool,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct DiskState {
    inodes: HashMap<u64, Inode>,
    inode_next: u64,
    /// Entries now, and as of the last sync of their directory.
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    mutations: u64,
    crash_at: Option<u64>,
    fail_mutation_at: Option<(u64, i32)>,
    crashed: bool,
    rules: Vec<FaultRule>,
    counts: HashMap<OpKind, u64>,
    write_sequence: u64,
    injected: u64,
}

/// The simulated disk. See the module docs.
pub struct SimDisk {
    root: PathBuf,
    state: Mutex<DiskState>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisk").field("root", &self.root).finish_non_exhaustive()
    }
}

fn crash_error() -> io::Error {
    io::Error::other("simulated crash: the process is dead")
}

impl SimDisk {
    /// A disk rooted at an existing, empty directory (taken as durable).
    pub fn new(root: impl Into<PathBuf>) -> Arc<SimDisk> {
        Arc::new(SimDisk { root: root.into(), state: Mutex::new(DiskState::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        lock(&self.state)
    }

    /// The WAL's I/O seam over this disk.
    pub fn wal_io(self: &Arc<Self>) -> Arc<dyn WalIo> {
        Arc::new(SimWalIo { disk: self.clone() })
    }

    /// redb's I/O seam over this disk.
    pub fn state_io(self: &Arc<Self>) -> Arc<dyn StateIo> {
        Arc::new(SimStateIo { disk: self.clone() })
    }

    /// Fails the `nth` next operation of `kind` (on `side`, or either when
    /// `None`) with `errno`; with `sticky`, every later one too.
    pub fn fail_nth(&self, kind: OpKind, side: Option<Side>, nth: u64, errno: i32, sticky: bool) {
        let mut state = self.lock();
        let nth = state.counts.get(&kind).copied().unwrap_or(0) + nth;
        state.rules.push(FaultRule { kind, side, nth, errno, sticky });
    }

    /// Removes every fault rule (the disk has space again, say).
    pub fn heal(&self) {
        self.lock().rules.clear();
    }

    /// Crashes the process at the `nth` mutating operation from now: it and
    /// every later one fail.
    pub fn crash_at(&self, nth: u64) {
        let mut state = self.lock();
        state.crash_at = Some(state.mutations + nth);
    }

    /// Fails the `nth` mutating operation from now (whatever its kind) with
    /// `errno`, once; the process carries on.
    pub fn fail_mutation(&self, nth: u64, errno: i32) {
        let mut state = self.lock();
        state.fail_mutation_at = Some((state.mutations + nth, errno));
    }

    /// Operations of `kind` so far (both sides), failed ones included.
    pub fn count(&self, kind: OpKind) -> u64 {
        self.lock().counts.get(&kind).copied().unwrap_or(0)
    }

    /// Mutating operations so far.
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// True once the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Faults injected so far (rules that fired, crash included).
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The process died; the machine did not. Everything written stays (in
    /// the page cache, on its way to the disk) and the next process can run.
    pub fn process_restart(&self) {
        let mut state = self.lock();
        state.crashed = false;
        state.crash_at = None;
        state.fail_mutation_at = None;
        state.rules.clear();
    }

    /// The machine lost power: only durable data and entries remain, plus a
    /// prefix of the last unsynced write if `tear` keeps one. The real files
    /// are rewritten to match, and the disk is ready for the next process.
    pub fn power_loss(&self, tear: Tear) -> io::Result<()> {
        let mut state = self.lock();
        if let Tear::KeepPrefix(keep) = tear {
            apply_torn_write(&mut state, keep);
        }
        let old_names: Vec<PathBuf> = state.names.keys().cloned().collect();
        state.names = state.durable_names.clone();
        for inode in state.inodes.values_mut() {
            inode.pending.clear();
        }
        for path in old_names.iter().rev() {
            if !state.names.contains_key(path) {
                remove_any(path)?;
            }
        }
        for (path, id) in &state.names {
            let inode = &state.inodes[id];
            if inode.is_dir {
                std::fs::create_dir_all(path)?;
            } else {
                std::fs::write(path, &inode.durable)?;
            }
        }
        state.crashed = false;
        state.crash_at = None;
        state.fail_mutation_at = None;
        state.rules.clear();
        Ok(())
    }

    /// Counts a mutating operation and decides whether it fails.
    fn check(&self, kind: OpKind, side: Side) -> io::Result<()> {
        let mut state = self.lock();
        if state.crashed {
            return Err(crash_error());
        }
        state.mutations += 1;
        if state.crash_at.is_some_and(|at| state.mutations >= at) {
            state.crashed = true;
            state.injected += 1;
            return Err(crash_error());
        }
        if let Some((at, errno)) = state.fail_mutation_at {
            if state.mutations == at {
                state.injected += 1;
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let call = {
            let count = state.counts.entry(kind).or_insert(0);
            *count += 1;
            *count
        };
        let fired = state.rules.iter().find(|rule| {
            rule.kind == kind
                && rule.side.is_none_or(|s| s == side)
                && (call == rule.nth || (rule.sticky && call > rule.nth))
        });
        if let Some(rule) = fired {
            let errno = rule.errno;
            state.injected += 1;
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    fn inode_of(&self, path: &Path) -> Option<u64> {
        self.lock().names.get(path).copied()
    }

    /// Registers a path the first time it is seen: files that existed before
    /// the disk was created are taken as durable.
    fn known(&self, path: &Path, is_dir: bool) -> u64 {
        let mut state = self.lock();
        if let Some(&id) = state.names.get(path) {
            return id;
        }
        let durable = if is_dir { Vec::new() } else { std::fs::read(path).unwrap_or_default() };
        let id = new_inode(&mut state, is_dir, durable);
        state.names.insert(path.to_path_buf(), id);
        state.durable_names.insert(path.to_path_buf(), id);
        id
    }

    fn record(&self, id: u64, pending: Pending) {
        let mut state = self.lock();
        let pending = match pending {
            Pending::Write { offset, bytes, .. } => {
                state.write_sequence += 1;
                Pending::Write { offset, bytes, sequence: state.write_sequence }
            }
            other => other,
        };
        if let Some(inode) = state.inodes.get_mut(&id) {
            inode.pending.push(pending);
        }
    }

    fn sync_inode(&self, id: u64) {
        let mut state = self.lock();
        if let Some(inode) = state.inodes.get_mut(&id) {
            for pending in std::mem::take(&mut inode.pending) {
                apply(&mut inode.durable, &pending);
            }
        }
    }

    fn sync_directory(&self, dir: &Path) {
        let mut state = self.lock();
        let children = |names: &BTreeMap<PathBuf, u64>| -> Vec<PathBuf> {
            names.keys().filter(|p| p.parent() == Some(dir)).cloned().collect()
        };
        for child in children(&state.durable_names) {
            state.durable_names.remove(&child);
        }
        for child in children(&state.names) {
            let id = state.names[&child];
            state.durable_names.insert(child, id);
        }
    }
}

fn new_inode(state: &mut DiskState, is_dir: bool, durable: Vec<u8>) -> u64 {
    state.inode_next += 1;
    let id = state.inode_next;
    state.inodes.insert(id, Inode { is_dir, durable, pending: Vec::new() });
    id
}

fn apply(content: &mut Vec<u8>, pending: &Pending) {
    match pending {
        Pending::Write { offset, bytes, .. } => {
            let end = *offset as usize + bytes.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => content.resize(*len as usize, 0),
    }
}

/// Keeps a prefix of the most recent unsynced write, if its file survives.
fn apply_torn_write(state: &mut DiskState, keep: usize) {
    let durable_ids: Vec<u64> = state.durable_names.values().copied().collect();
    let last = durable_ids
        .iter()
        .filter_map(|id| {
            state.inodes[id].pending.iter().rev().find_map(|p| match p {
                Pending::Write { sequence, .. } => Some((*sequence, *id)),
                Pending::SetLen(_) => None,
            })
        })
        .max();
    let Some((sequence, id)) = last else { return };
    let inode = state.inodes.get_mut(&id).expect("durable names point at inodes");
    let torn = inode.pending.iter().find_map(|p| match p {
        Pending::Write { offset, bytes, sequence: s } if *s == sequence => Some(Pending::Write {
            offset: *offset,
            bytes: bytes[..keep.min(bytes.len())].to_vec(),
            sequence,
        }),
        _ => None,
    });
    if let Some(torn) = torn {
        apply(&mut inode.durable, &torn);
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[derive(Debug)]
struct SimWalIo {
    disk: Arc<SimDisk>,
}

impl WalIo for SimWalIo {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut cursor = Some(path);
        while let Some(dir) = cursor.filter(|d| !d.exists()) {
            missing.push(dir.to_path_buf());
            cursor = dir.parent();
        }
        for dir in missing.iter().rev() {
            self.disk.check(OpKind::Create, Side::Wal)?;
            std::fs::create_dir(dir).or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })?;
            let mut state = self.disk.lock();
            let id = new_inode(&mut state, true, Vec::new());
            state.names.insert(dir.clone(), id);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdIo.list(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        self.disk.check(OpKind::Create, Side::Wal)?;
        let file = StdIo.create(path)?;
        let mut state = self.disk.lock();
        let id = new_inode(&mut state, false, Vec::new());
        state.names.insert(path.to_path_buf(), id);
        Ok(Arc::new(SimWalFile { disk: self.disk.clone(), id, file }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let file = StdIo.open(path)?;
        let id = self.disk.known(path, false);
        Ok(Arc::new(SimWalFile { disk: self.disk.clone(), id, file }))
    }

    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        StdIo.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.check(OpKind::Rename, Side::Wal)?;
        self.disk.known(from, false);
        std::fs::rename(from, to)?;
        let mut state = self.disk.lock();
        if let Some(id) = state.names.remove(from) {
            state.names.insert(to.to_path_buf(), id);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.check(OpKind::Remove, Side::Wal)?;
        self.disk.known(path, false);
        std::fs::remove_file(path)?;
        self.disk.lock().names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.check(OpKind::SyncDir, Side::Wal)?;
        self.disk.sync_directory(dir);
        Ok(())
    }
}

#[derive(Debug)]
struct SimWalFile {
    disk: Arc<SimDisk>,
    id: u64,
    file: Arc<dyn WalFile>,
}

impl WalFile for SimWalFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.disk.check(OpKind::Write, Side::Wal)?;
        self.file.write_at(offset, bytes)?;
        self.disk.record(self.id, Pending::Write { offset, bytes: bytes.to_vec(), sequence: 0 });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.check(OpKind::Sync, Side::Wal)?;
        self.disk.sync_inode(self.id);
        Ok(())
    }

    fn allocate(&self, bytes: u64) -> io::Result<()> {
        self.disk.check(OpKind::Resize, Side::Wal)?;
        let from = self.file.len_bytes()?;
        self.file.allocate(bytes)?;
        if bytes > from {
            self.disk.record(self.id, Pending::SetLen(bytes));
        }
        Ok(())
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.file.len_bytes()
    }
}

#[derive(Debug)]
struct SimStateIo {
    disk: Arc<SimDisk>,
}

impl StateIo for SimStateIo {
    fn open_backend(&self, path: &Path) -> io::Result<(Box<dyn StorageBackend>, bool)> {
        let created = self.disk.inode_of(path).is_none() && !path.exists();
        if created {
            self.disk.check(OpKind::Create, Side::State)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let id = if created {
            let mut state = self.disk.lock();
            let id = new_inode(&mut state, false, Vec::new());
            state.names.insert(path.to_path_buf(), id);
            id
        } else {
            self.disk.known(path, false)
        };
        let file_for_io = file.try_clone()?;
        let inner = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        Ok((
            Box::new(SimBackend { disk: self.disk.clone(), id, inner, file: file_for_io }),
            created,
        ))
    }
}

/// redb's file backend with every mutation counted, checked and recorded.
struct SimBackend {
    disk: Arc<SimDisk>,
    id: u64,
    inner: redb::backends::FileBackend,
    /// The same open file, for length queries without going through redb.
    file: File,
}

impl fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBackend").field("inode", &self.id).finish_non_exhaustive()
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.disk.check(OpKind::Resize, Side::State)?;
        self.inner.set_len(len)?;
        self.disk.record(self.id, Pending::SetLen(len));
        Ok(())
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.disk.check(OpKind::Sync, Side::State)?;
        self.disk.sync_inode(self.id);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.disk.check(OpKind::Write, Side::State)?;
        self.file.write_all_at(data, offset)?;
        self.disk.record(self.id, Pending::Write { offset, bytes: data.to_vec(), sequence: 0 });
        Ok(())
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
