//! The simulated disk: the one fault-injecting layer under both of the
//! store's I/O seams. Not used by the engine itself.
//!
//! [`SimDisk`] sits under [`SimDisk::wal_io`] (the WAL's file operations) and
//! [`SimDisk::state_io`] (redb's storage backend, wrapping redb's own
//! `FileBackend`, with `close` and the locking methods forwarded). Files are
//! real files; the disk also keeps, in memory, what is *durable*: each
//! file's content as of its last sync, and each directory's entries as of
//! its last directory sync. That is the media model of `docs/DESIGN.md`:
//!
//! 1. a sync that returned makes the file's written data durable;
//! 2. an unsynced write may be lost, or persist only up to some byte;
//! 3. bytes outside a write's range do not change;
//! 4. a created, renamed or removed entry is durable only once its directory
//!    is synced;
//! 5. a sync that fails may lose the file's unsynced writes for good while
//!    reads still show them (Linux marks the pages it could not write clean,
//!    so a later sync does not write them again): a failed sync forgets them
//!    from the durable image, and only writes made after it reach the disk
//!    with the next sync.
//!
//! What it injects, all counted on the same calls ([`OpKind`]):
//! - a [`Fault`]: the Nth call of a kind (or of any kind, or the Nth mutating
//!   call) fails with an errno, once or from then on, on one side or both; a
//!   failing write may first write half of its bytes (a torn write);
//! - a crash ([`SimDisk::crash_at`]): the Nth mutating call and every later
//!   one fail, after which the test simulates a power loss
//!   ([`SimDisk::power_loss`]: every file back to its durable content, the
//!   last unsynced write possibly torn at any byte, unsynced directory
//!   changes forgotten) or a process restart;
//! - hooks ([`SimDisk::before`]) run before a kind of call, outside the
//!   disk's lock: a slow sync, a panicking write, or a [`Gate`] that holds
//!   calls until the test lets them through ([`SimDisk::gate`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{BackendError, StorageBackend};

use super::gate::Gate;
use crate::state::StateIo;
use crate::sync::lock;
use crate::wal::io::{FileBytes, StdIo, WalFile, WalIo};

/// Every kind of call of the two I/O seams. The WAL's calls are named in
/// each variant; redb's backend makes `Create` and `Open` (its file, new or
/// existing), `Read`, `Write`, `Sync`, `Resize` (`set_len`) and `Len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `WalIo::create_dir_all`, once for each directory it creates.
    CreateDir,
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
    /// `WalFile::write_at` (WAL records, segment headers).
    Write,
    /// `WalFile::sync_data`.
    Sync,
    /// `WalFile::allocate` (a segment's zero-fill).
    Resize,
    /// `WalFile::len_bytes`.
    Len,
}

impl OpKind {
    /// Every kind, in a fixed order: the fuzz targets' input picks a kind by
    /// its index here, so the order is part of their corpus's meaning.
    pub const ALL: [OpKind; 12] = [
        OpKind::CreateDir,
        OpKind::List,
        OpKind::Create,
        OpKind::Open,
        OpKind::Read,
        OpKind::Rename,
        OpKind::Remove,
        OpKind::SyncDir,
        OpKind::Write,
        OpKind::Sync,
        OpKind::Resize,
        OpKind::Len,
    ];

    /// True for the calls that change what is on the disk: only these are
    /// counted as mutations, fail once the process has crashed, and can be
    /// crash points.
    pub fn mutates(self) -> bool {
        !matches!(self, OpKind::List | OpKind::Open | OpKind::Read | OpKind::Len)
    }
}

/// Which side of the store a call belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// WAL files and directories.
    Wal,
    /// The redb file.
    State,
}

/// Which calls a [`Fault`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// The calls of one kind.
    Of(OpKind),
    /// Every call, of every kind.
    Any,
    /// Every mutating call ([`OpKind::mutates`]).
    Mutating,
}

impl Calls {
    fn contain(self, kind: OpKind) -> bool {
        match self {
            Calls::Of(counted) => counted == kind,
            Calls::Any => true,
            Calls::Mutating => kind.mutates(),
        }
    }
}

/// One injected failure: which call fails, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The calls counted.
    pub calls: Calls,
    /// The side counted; `None` counts both.
    pub side: Option<Side>,
    /// Which counted call fails, counting from when the fault is added
    /// (1 = the next one).
    pub nth: u64,
    /// Every counted call after the nth fails too (a disk that stays full).
    pub sticky: bool,
    /// The OS error returned (EIO, ENOSPC, ...).
    pub errno: i32,
    /// A failing write first writes the first half of its bytes.
    pub torn_write: bool,
}

impl Fault {
    /// The `nth` call of `kind` from now fails once with `errno`, on either side.
    pub fn nth(kind: OpKind, nth: u64, errno: i32) -> Fault {
        Fault { calls: Calls::Of(kind), side: None, nth, sticky: false, errno, torn_write: false }
    }

    /// The `nth` mutating call from now, whatever its kind, fails once with
    /// `errno`.
    pub fn nth_mutation(nth: u64, errno: i32) -> Fault {
        Fault { calls: Calls::Mutating, side: None, nth, sticky: false, errno, torn_write: false }
    }

    /// Counts only the calls on `side`.
    pub fn on(self, side: Side) -> Fault {
        Fault { side: Some(side), ..self }
    }

    /// Fails every counted call from the nth on.
    pub fn from_then_on(self) -> Fault {
        Fault { sticky: true, ..self }
    }

    fn counts(&self, call: &Call) -> bool {
        self.calls.contain(call.kind) && self.side.is_none_or(|side| side == call.side)
    }
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

/// A call about to be made, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Its kind.
    pub kind: OpKind,
    /// Its side.
    pub side: Side,
    /// Where a `Write` writes; `None` for every other kind.
    pub offset: Option<u64>,
}

impl Call {
    fn new(kind: OpKind, side: Side) -> Call {
        Call { kind, side, offset: None }
    }

    fn write(side: Side, offset: u64) -> Call {
        Call { kind: OpKind::Write, side, offset: Some(offset) }
    }
}

/// What a hook does before a call.
pub(super) type Hook = Arc<dyn Fn(&Call) + Send + Sync>;

struct HookRule {
    kind: OpKind,
    side: Option<Side>,
    hook: Hook,
}

#[derive(Debug)]
struct FaultRule {
    fault: Fault,
    /// Calls counted since the fault was added.
    counted: u64,
}

/// Why the disk failed a call.
#[derive(Debug, Clone, Copy)]
enum Injected {
    /// The process has crashed: every mutating call fails.
    Crash,
    /// A fault fired.
    Fault(Fault),
}

impl From<Injected> for io::Error {
    fn from(injected: Injected) -> io::Error {
        match injected {
            Injected::Crash => io::Error::other("simulated crash: the process is dead"),
            Injected::Fault(fault) => io::Error::from_raw_os_error(fault.errno),
        }
    }
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

#[derive(Default)]
struct DiskState {
    inodes: HashMap<u64, Inode>,
    inode_next: u64,
    /// Entries now, and as of the last sync of their directory.
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    mutations: u64,
    crash_at: Option<u64>,
    crashed: bool,
    rules: Vec<FaultRule>,
    hooks: Vec<HookRule>,
    counts: HashMap<OpKind, u64>,
    write_sequence: u64,
    injected: u64,
}

impl DiskState {
    /// Counts a call and decides whether it fails.
    fn decide(&mut self, call: &Call) -> Result<(), Injected> {
        if call.kind.mutates() {
            if self.crashed {
                return Err(Injected::Crash);
            }
            self.mutations += 1;
            if self.crash_at.is_some_and(|at| self.mutations >= at) {
                self.crashed = true;
                self.injected += 1;
                return Err(Injected::Crash);
            }
        }
        *self.counts.entry(call.kind).or_insert(0) += 1;
        // Every rule counts the call, whether or not an earlier one fails it.
        let mut fired = None;
        for rule in self.rules.iter_mut().filter(|rule| rule.fault.counts(call)) {
            rule.counted += 1;
            let fault = rule.fault;
            let fails = rule.counted == fault.nth || (fault.sticky && rule.counted > fault.nth);
            if fails && fired.is_none() {
                fired = Some(fault);
            }
        }
        match fired {
            Some(fault) => {
                self.injected += 1;
                Err(Injected::Fault(fault))
            }
            None => Ok(()),
        }
    }

    /// What a process restart forgets: the crash and every fault rule.
    fn forget_faults(&mut self) {
        self.crashed = false;
        self.crash_at = None;
        self.rules.clear();
    }
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

impl SimDisk {
    /// A disk for the files under `root`, an existing directory. Files that
    /// exist before the disk first touches them are taken as durable.
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

    /// Adds `fault`; its counting starts now. Faults add up: a call fails
    /// when any of them fails it.
    pub fn fail(&self, fault: Fault) {
        self.lock().rules.push(FaultRule { fault, counted: 0 });
    }

    /// Removes every fault (the disk has space again, say). Hooks stay.
    pub fn heal(&self) {
        self.lock().rules.clear();
    }

    /// Crashes the process at the `nth` mutating call from now: it and every
    /// later one fail.
    pub fn crash_at(&self, nth: u64) {
        let mut state = self.lock();
        state.crash_at = Some(state.mutations + nth);
    }

    /// Runs `hook` before every call of `kind` (on `side`, or either when
    /// `None`), before the call is counted and outside the disk's lock, so
    /// that it may sleep, block or panic. Hooks stay for the disk's life.
    pub fn before(
        &self,
        kind: OpKind,
        side: Option<Side>,
        hook: impl Fn(&Call) + Send + Sync + 'static,
    ) {
        self.lock().hooks.push(HookRule { kind, side, hook: Arc::new(hook) });
    }

    /// A closed gate before every call of `kind` (on `side`, or either when
    /// `None`): each such call waits until the gate lets it through.
    pub fn gate(&self, kind: OpKind, side: Option<Side>) -> Gate {
        let (gate, hook) = Gate::closed();
        self.lock().hooks.push(HookRule { kind, side, hook });
        gate
    }

    /// Calls of `kind` so far, both sides, failed ones included (a mutating
    /// call refused because the process has crashed is not counted).
    pub fn count(&self, kind: OpKind) -> u64 {
        self.lock().counts.get(&kind).copied().unwrap_or(0)
    }

    /// Mutating calls so far.
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// True once the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Failures injected so far (faults that fired, the crash included).
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The process died; the machine did not. Everything written stays (in
    /// the page cache, on its way to the disk) and the next process can run.
    pub fn process_restart(&self) {
        self.lock().forget_faults();
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
        state.forget_faults();
        Ok(())
    }

    /// Runs the hooks for `call`, then counts it and decides whether it fails.
    fn enter(&self, call: Call) -> Result<(), Injected> {
        let hooks: Vec<Hook> = self
            .lock()
            .hooks
            .iter()
            .filter(|rule| rule.kind == call.kind && rule.side.is_none_or(|s| s == call.side))
            .map(|rule| rule.hook.clone())
            .collect();
        for hook in hooks {
            hook(&call);
        }
        self.lock().decide(&call)
    }

    /// [`SimDisk::enter`] for a call other than a write.
    fn check(&self, kind: OpKind, side: Side) -> io::Result<()> {
        Ok(self.enter(Call::new(kind, side))?)
    }

    /// A write of `bytes` at `offset` into inode `id`, made by `write_at`
    /// unless the disk fails it; a failing torn write makes (and records)
    /// the first half of it first.
    fn write(
        &self,
        side: Side,
        id: u64,
        offset: u64,
        bytes: &[u8],
        write_at: impl Fn(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let written = match self.enter(Call::write(side, offset)) {
            Ok(()) => bytes,
            Err(Injected::Fault(fault)) if fault.torn_write => {
                let half = &bytes[..bytes.len() / 2];
                write_at(half)?;
                self.record(id, Pending::Write { offset, bytes: half.to_vec(), sequence: 0 });
                return Err(Injected::Fault(fault).into());
            }
            Err(injected) => return Err(injected.into()),
        };
        write_at(written)?;
        self.record(id, Pending::Write { offset, bytes: written.to_vec(), sequence: 0 });
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

    /// A file's `sync_data`: its unsynced writes become durable, or, when
    /// the sync fails other than by the crash, are lost to the disk (rule 5).
    fn sync(&self, side: Side, id: u64) -> io::Result<()> {
        if let Err(error) = self.check(OpKind::Sync, side) {
            if !self.crashed() {
                if let Some(inode) = self.lock().inodes.get_mut(&id) {
                    inode.pending.clear();
                }
            }
            return Err(error);
        }
        self.sync_inode(id);
        Ok(())
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
            self.disk.check(OpKind::CreateDir, Side::Wal)?;
            // Its parent exists by now: this creates `dir` alone, with the
            // engine's directory mode.
            StdIo.create_dir_all(dir)?;
            let mut state = self.disk.lock();
            let id = new_inode(&mut state, true, Vec::new());
            state.names.insert(dir.clone(), id);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.check(OpKind::List, Side::Wal)?;
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
        self.disk.check(OpKind::Open, Side::Wal)?;
        let file = StdIo.open(path)?;
        let id = self.disk.known(path, false);
        Ok(Arc::new(SimWalFile { disk: self.disk.clone(), id, file }))
    }

    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        self.disk.check(OpKind::Read, Side::Wal)?;
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
        self.disk.write(Side::Wal, self.id, offset, bytes, |kept| self.file.write_at(offset, kept))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.sync(Side::Wal, self.id)
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
        self.disk.check(OpKind::Len, Side::Wal)?;
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
        let kind = if created { OpKind::Create } else { OpKind::Open };
        self.disk.check(kind, Side::State)?;
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

/// redb's file backend with every call counted and checked, and every
/// mutation recorded.
struct SimBackend {
    disk: Arc<SimDisk>,
    id: u64,
    inner: redb::backends::FileBackend,
    /// The same open file, for writes that bypass redb's backend (a torn
    /// write writes only part of what redb asked for).
    file: File,
}

impl fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBackend").field("inode", &self.id).finish_non_exhaustive()
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.disk.check(OpKind::Len, Side::State)?;
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.disk.check(OpKind::Read, Side::State)?;
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.disk.check(OpKind::Resize, Side::State)?;
        self.inner.set_len(len)?;
        self.disk.record(self.id, Pending::SetLen(len));
        Ok(())
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.disk.sync(Side::State, self.id)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.disk
            .write(Side::State, self.id, offset, data, |kept| self.file.write_all_at(kept, offset))
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

#[cfg(test)]
mod tests {
    use super::*;

    const EIO: i32 = 5;
    const ENOSPC: i32 = 28;

    fn errno(result: io::Result<()>) -> Option<i32> {
        result.err().map(|error| error.raw_os_error().expect("an injected errno"))
    }

    /// A disk over a fresh directory, with one file created in it.
    fn disk_with_file() -> (tempfile::TempDir, Arc<SimDisk>, Arc<dyn WalFile>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path());
        let path = dir.path().join("file");
        let file = disk.wal_io().create(&path).unwrap();
        (dir, disk, file, path)
    }

    #[test]
    fn a_fault_fails_the_nth_call_it_counts_once_or_from_then_on() {
        // The second write from now fails once with EIO; the syncs fail
        // with ENOSPC from the first on, until healed. Counts include the
        // failed calls; `injected` counts each failure.
        let (_dir, disk, file, _) = disk_with_file();
        disk.fail(Fault::nth(OpKind::Write, 2, EIO));
        let writes: Vec<_> = (0..3).map(|i| errno(file.write_at(i, b"x"))).collect();
        assert_eq!(writes, vec![None, Some(EIO), None]);
        disk.fail(Fault::nth(OpKind::Sync, 1, ENOSPC).from_then_on());
        assert_eq!(errno(file.sync_data()), Some(ENOSPC));
        assert_eq!(errno(file.sync_data()), Some(ENOSPC));
        disk.heal();
        assert_eq!(errno(file.sync_data()), None);
        assert_eq!((disk.count(OpKind::Write), disk.count(OpKind::Sync)), (3, 3));
        assert_eq!(disk.injected(), 3);
    }

    #[test]
    fn a_fault_counts_only_the_calls_and_the_side_it_names() {
        // `Any` counts reads and listings too, `Mutating` skips them, and a
        // fault on the state side never sees a WAL call.
        let (dir, disk, file, path) = disk_with_file();
        let io = disk.wal_io();
        disk.fail(Fault::nth(OpKind::Write, 1, EIO).on(Side::State));
        disk.fail(Fault { calls: Calls::Any, ..Fault::nth(OpKind::Write, 3, EIO) });
        disk.fail(Fault::nth_mutation(2, ENOSPC));
        assert!(io.list(dir.path()).is_ok()); // Any: 1
        assert!(io.read(&path).is_ok()); // Any: 2
        assert_eq!(errno(file.write_at(0, b"x")), Some(EIO)); // Any: 3, Mutating: 1
        assert_eq!(errno(file.sync_data()), Some(ENOSPC)); // Any: 4, Mutating: 2
        assert!(file.len_bytes().is_ok());
        assert_eq!(disk.injected(), 2);
    }

    #[test]
    fn a_torn_write_writes_the_first_half_then_fails() {
        let (_dir, disk, file, path) = disk_with_file();
        disk.fail(Fault { torn_write: true, ..Fault::nth(OpKind::Write, 1, EIO) });
        assert_eq!(errno(file.write_at(2, b"abcdefgh")), Some(EIO));
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abcd");
        // A write that fails without tearing writes nothing.
        disk.fail(Fault::nth(OpKind::Write, 1, EIO));
        assert_eq!(errno(file.write_at(0, b"zz")), Some(EIO));
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abcd");
    }

    #[test]
    fn a_power_loss_after_a_crash_keeps_what_was_synced_and_a_torn_prefix() {
        // "synced" is synced with its directory entry; "unsynced" is
        // written but not synced; the next mutation is the crash point. A
        // power loss keeping 3 bytes of the last unsynced write leaves
        // "synceduns"; a file created after the last directory sync is gone.
        let (dir, disk, file, path) = disk_with_file();
        let io = disk.wal_io();
        io.sync_dir(dir.path()).unwrap();
        file.write_at(0, b"synced").unwrap();
        file.sync_data().unwrap();
        file.write_at(6, b"unsynced").unwrap();
        let late = dir.path().join("late");
        io.create(&late).unwrap();
        disk.crash_at(1);
        assert!(file.sync_data().is_err(), "the crash point fails");
        assert!(disk.crashed());
        assert!(file.write_at(0, b"dead").is_err(), "a dead process mutates nothing");
        assert_eq!(std::fs::read(&path).unwrap(), b"syncedunsynced");
        disk.power_loss(Tear::KeepPrefix(3)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"synceduns");
        assert!(!late.exists());
        assert!(!disk.crashed());
        // Mutations: create, sync_dir, write, sync, write, create, crash.
        assert_eq!(disk.mutations(), 7);
    }

    #[test]
    fn a_failed_sync_loses_the_unsynced_writes_for_good_while_reads_show_them() {
        // "lost" is written, then its sync fails: reads still show it, but a
        // later successful sync (of "kept", written after) does not make it
        // durable, so a power loss leaves "kept" over the durable zeros.
        let (dir, disk, file, path) = disk_with_file();
        disk.wal_io().sync_dir(dir.path()).unwrap();
        file.write_at(0, b"lost").unwrap();
        disk.fail(Fault::nth(OpKind::Sync, 1, EIO));
        assert_eq!(errno(file.sync_data()), Some(EIO));
        assert_eq!(std::fs::read(&path).unwrap(), b"lost", "the page cache still shows it");
        file.write_at(4, b"kept").unwrap();
        file.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"lostkept");
        disk.power_loss(Tear::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0\0kept");
    }

    #[test]
    fn hooks_run_before_the_calls_they_name_and_before_counting() {
        let (_dir, disk, file, _) = disk_with_file();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // Weak: the disk holds the hook, which must not keep the disk alive.
        let counter = Arc::downgrade(&disk);
        disk.before(OpKind::Write, Some(Side::Wal), move |call| {
            let writes = counter.upgrade().map(|disk| disk.count(OpKind::Write));
            lock(&record).push((*call, writes));
        });
        disk.before(OpKind::Write, Some(Side::State), |_| panic!("not a state write"));
        file.write_at(10, b"x").unwrap();
        file.sync_data().unwrap();
        file.write_at(20, b"y").unwrap();
        let wal_write =
            |offset| Call { kind: OpKind::Write, side: Side::Wal, offset: Some(offset) };
        assert_eq!(*lock(&seen), vec![(wal_write(10), Some(0)), (wal_write(20), Some(1))]);
    }
}
