//! Session state in redb: the `facts` table keyed by (session, fact id), a
//! `sessions` table with each session's fact count, and a `store` table of
//! records about the store itself (format version, identity, the
//! `applied_lsn` that says which WAL records redb already holds, and where
//! the WAL lives). `applied_lsn` is only ever written in the same
//! transaction as the facts it covers (invariant 4).
//!
//! Every value carries an end-to-end checksum: a fact's covers its session,
//! fact id and value, a store record's covers its key and value. A bit
//! flipped in the file after redb wrote it is reported as
//! [`Error::StateCorrupted`], never returned as a value. A session's fact
//! count is checked against the facts read, so a damaged tree that loses or
//! invents facts is caught on the same read.
//!
//! redb can panic on a damaged file. Every call into redb runs inside
//! [`Tables::contain`], which turns a panic into `Error::StateCorrupted` and
//! latches: after a panic, or after an I/O failure that redb latches itself,
//! nothing more is asked of that handle (the store reopens it, or reports).
//!
//! Format 1 (factwal 0.1) kept `applied_lsn` as a plain `u64` in a `meta`
//! table and values without checksums. Such a file is read as it is, and
//! upgraded in one transaction by the next read-write open.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend, Table,
    TableDefinition, TableHandle,
};

use crate::error::{panic_message, Error, IoOp, Lsn, Result, StateDamage};
use crate::identity::StoreId;
use crate::state::io::{BoxedBackend, ScratchBackend};
use crate::state::overlay::Generation;
use crate::sync::lock;

const FACTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("facts");
const SESSIONS: TableDefinition<&str, u64> = TableDefinition::new("sessions");
const STORE: TableDefinition<&str, &[u8]> = TableDefinition::new("store");
/// Format 1's record table: `applied_lsn` as a plain `u64`.
const META_FORMAT_1: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The format of `state.redb` this build writes.
pub const STATE_FORMAT_VERSION: u32 = 2;
/// Bytes of a fact value's checksum, before the value.
const FACT_CHECKSUM_BYTES: usize = 4;
/// Most memory a read-only inspection may use for redb's writes (repairing a
/// crashed file writes its allocator state, a small part of the file).
const SCRATCH_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Keys of the `store` table.
mod key {
    pub const FORMAT_VERSION: &str = "format_version";
    pub const STORE_ID: &str = "store_id";
    pub const APPLIED_LSN: &str = "applied_lsn";
    pub const WAL_DIR: &str = "wal_dir";
    pub const WAL_IN_USE: &str = "wal_in_use";
    pub const WAL_EPOCH: &str = "wal_epoch";
}

/// What `state.redb` says about the store it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreRecord {
    /// The file's format version (1 or 2).
    pub format_version: u32,
    /// The store's identity; `None` for a format-1 file.
    pub store_id: Option<StoreId>,
    /// Every WAL record up to this LSN is in the tables.
    pub applied_lsn: Lsn,
    /// The WAL directory the store last used (absolute); `None` before the
    /// first WAL-mode open, and in format 1.
    pub wal_dir: Option<PathBuf>,
    /// True while the WAL may hold acknowledged records the tables lack: set
    /// once a read-write WAL-mode open has its first segment, cleared by the
    /// fold that closes the store cleanly (and by the fold at open).
    pub wal_in_use: bool,
    /// The epoch of the opening that last used the WAL: every segment it
    /// wrote carries it (0 before the first WAL-mode open, and in format 1).
    pub wal_epoch: u32,
}

/// Where the store's WAL is and whether it is in use, written with a fold
/// or on its own.
#[derive(Debug, Clone, Copy)]
pub struct WalMark<'a> {
    /// The WAL directory (absolute).
    pub dir: &'a Path,
    /// See [`StoreRecord::wal_in_use`].
    pub in_use: bool,
    /// See [`StoreRecord::wal_epoch`].
    pub epoch: u32,
}

/// What one fold wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Facts inserted or replaced.
    pub facts_written: u64,
    /// Facts removed (retracts and dropped sessions).
    pub facts_removed: u64,
}

/// Why a handle stopped being used.
#[derive(Debug, Clone)]
enum Latch {
    /// redb panicked: its state is unknown, and the file is likely damaged.
    Panicked(Error),
    /// An I/O failure redb latched ("previous I/O error"): the file is as of
    /// the last commit, and a new handle can carry on.
    Io(Error),
}

/// The redb side of the store.
pub struct Tables {
    /// Always `Some` until the handle is closed or dropped (redb's own drop,
    /// which may read the damaged file, runs contained).
    db: Option<Database>,
    path: PathBuf,
    format_version: u32,
    latch: Mutex<Option<Latch>>,
    /// Set by the backend when a sync of the file failed (see
    /// [`Tables::sync_failed`]).
    sync_failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Runs `body`, turning a panic into an error of redb's file at `path`.
fn catch<R>(path: &Path, what: &'static str, body: impl FnOnce() -> Result<R>) -> Result<R> {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(outcome) => outcome,
        Err(payload) => Err(Error::StateCorrupted {
            path: path.to_path_buf(),
            kind: StateDamage::Panicked,
            detail: format!("redb panicked while {what}: {}", panic_message(&*payload)),
        }),
    }
}

/// Turns redb's error into factwal's: damage is `StateCorrupted`, a file of
/// a redb format this build cannot read is `UnsupportedFormatVersion`, the
/// rest (I/O above all) is `Error::Redb`.
fn classify(path: &Path, error: impl Into<redb::Error>) -> Error {
    let error = error.into();
    let damaged = |detail: String| Error::StateCorrupted {
        path: path.to_path_buf(),
        kind: StateDamage::Unreadable,
        detail,
    };
    match error {
        redb::Error::Corrupted(detail) => damaged(detail),
        redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => damaged(error.to_string()),
        redb::Error::Io(ref source) if source.kind() == std::io::ErrorKind::InvalidData => {
            damaged(error.to_string())
        }
        redb::Error::UpgradeRequired(version) => Error::UnsupportedFormatVersion {
            path: path.to_path_buf(),
            found: u32::from(version),
            supported: STATE_FORMAT_VERSION,
        },
        other => Error::redb(path, other),
    }
}

impl Tables {
    /// Creates a new database of the current format over `backend` (an empty
    /// file), recording `store_id`.
    pub fn create(
        path: &Path,
        backend: Box<dyn StorageBackend>,
        cache_bytes: usize,
        store_id: StoreId,
    ) -> Result<Tables> {
        let sync_failed = Arc::new(AtomicBool::new(false));
        let db = open_database(path, backend, cache_bytes, &sync_failed)?;
        let tables = Tables {
            db: Some(db),
            path: path.to_path_buf(),
            format_version: STATE_FORMAT_VERSION,
            latch: Mutex::new(None),
            sync_failed,
        };
        tables.write("creating the tables", |txn, _| {
            txn.open_table(FACTS)?;
            txn.open_table(SESSIONS)?;
            let mut store = txn.open_table(STORE)?;
            put_record(&mut store, key::FORMAT_VERSION, &STATE_FORMAT_VERSION.to_le_bytes())?;
            put_record(&mut store, key::STORE_ID, &store_id.get().to_le_bytes())?;
            put_record(&mut store, key::APPLIED_LSN, &0u64.to_le_bytes())?;
            Ok(())
        })?;
        Ok(tables)
    }

    /// Opens an existing database over `backend`. A file of a newer format is
    /// refused; a format-1 file is read as it is (see [`Tables::upgrade`]).
    pub fn open(
        path: &Path,
        backend: Box<dyn StorageBackend>,
        cache_bytes: usize,
    ) -> Result<Tables> {
        let empty = backend.len().map_err(|e| Error::io(path, IoOp::Stat, "state file", e))? == 0;
        if empty {
            return Err(Error::StateCorrupted {
                path: path.to_path_buf(),
                kind: StateDamage::Unreadable,
                detail: "the file is empty (a factwal store's state.redb never is)".into(),
            });
        }
        let sync_failed = Arc::new(AtomicBool::new(false));
        let db = open_database(path, backend, cache_bytes, &sync_failed)?;
        let mut tables = Tables {
            db: Some(db),
            path: path.to_path_buf(),
            format_version: 0,
            latch: Mutex::new(None),
            sync_failed,
        };
        tables.format_version = tables.read_format_version()?;
        if tables.format_version > STATE_FORMAT_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                path: path.to_path_buf(),
                found: tables.format_version,
                supported: STATE_FORMAT_VERSION,
            });
        }
        Ok(tables)
    }

    /// Opens `path` without changing a byte of it: redb's writes (the repair
    /// of a crashed file) are kept in memory. For the inspection tools.
    pub fn open_unchanged(path: &Path, cache_bytes: usize) -> Result<Tables> {
        let backend = ScratchBackend::open(path, SCRATCH_BYTES_MAX)
            .map_err(|e| Error::io(path, IoOp::Open, "state", e))?;
        Tables::open(path, Box::new(backend), cache_bytes)
    }

    /// The file's format version.
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    fn read_format_version(&self) -> Result<u32> {
        self.read("reading the format version", |snapshot| {
            let txn = &snapshot.txn;
            let tables = txn.list_tables().map_err(|e| classify(&self.path, e))?;
            let names: Vec<String> = tables.map(|table| table.name().to_string()).collect();
            if names.iter().any(|name| name == STORE.name()) {
                let bytes = snapshot.record(key::FORMAT_VERSION)?;
                return decode_u32(&self.path, key::FORMAT_VERSION, &bytes);
            }
            if names.iter().any(|name| name == META_FORMAT_1.name()) {
                return Ok(1);
            }
            Err(Error::StateCorrupted {
                path: self.path.clone(),
                kind: StateDamage::Unreadable,
                detail: "a redb database without factwal's tables: not a factwal store".into(),
            })
        })
    }

    /// Runs `body` on the database unless the handle is latched; a panic
    /// becomes `StateCorrupted`, and it and a latching I/O error latch.
    fn contain<R>(
        &self,
        what: &'static str,
        body: impl FnOnce(&Database) -> Result<R>,
    ) -> Result<R> {
        // After a panic redb's state is unknown: it is asked nothing more.
        // After an I/O failure it refuses writes itself ("previous I/O
        // error") but may still serve reads from what it holds.
        if let Some(Latch::Panicked(error)) = self.latched() {
            return Err(error.clone());
        }
        let db = self.db.as_ref().ok_or(Error::Closed)?;
        let outcome = catch(&self.path, what, || body(db));
        if let Err(error) = &outcome {
            let latch = match error {
                Error::StateCorrupted { kind: StateDamage::Panicked, .. } => {
                    Some(Latch::Panicked(error.clone()))
                }
                Error::Redb { source, .. }
                    if matches!(**source, redb::Error::Io(_) | redb::Error::PreviousIo) =>
                {
                    Some(Latch::Io(error.clone()))
                }
                _ => None,
            };
            if let Some(latch) = latch {
                lock(&self.latch).get_or_insert(latch);
            }
        }
        outcome
    }

    fn latched(&self) -> Option<Latch> {
        lock(&self.latch).clone()
    }

    /// True when an I/O failure latched this handle: the file holds the last
    /// commit, and a new handle (a reopen) can carry on. Never after a
    /// failed sync (see [`Tables::sync_failed`]).
    pub fn needs_reopen(&self) -> bool {
        matches!(self.latched(), Some(Latch::Io(_))) && self.sync_failed().is_none()
    }

    /// The failure latched after a sync of the file failed, if one did. The
    /// kernel may then have dropped the pages it could not write while the
    /// page cache still shows them, so the file reads as holding a commit
    /// the disk may lack: no handle may trust it again in this process (the
    /// fsync failure PostgreSQL met in 2018). Only a reopen of the store,
    /// which reads the file from the disk after redb's recovery, can.
    pub fn sync_failed(&self) -> Option<Error> {
        if !self.sync_failed.load(Ordering::Acquire) {
            return None;
        }
        match self.latched() {
            Some(Latch::Io(error) | Latch::Panicked(error)) => Some(error),
            None => Some(Error::io(
                &self.path,
                IoOp::Sync,
                "state file",
                std::io::Error::other("a sync of the state file failed"),
            )),
        }
    }

    /// Runs `body` in a read transaction.
    pub fn read<R>(
        &self,
        what: &'static str,
        body: impl FnOnce(&Snapshot<'_>) -> Result<R>,
    ) -> Result<R> {
        self.contain(what, |db| {
            let txn = db.begin_read().map_err(|e| classify(&self.path, e))?;
            let snapshot = Snapshot { txn, tables: self };
            let outcome = body(&snapshot);
            drop(snapshot);
            outcome
        })
    }

    /// Runs `body` in one durable write transaction and commits it.
    fn write<R>(
        &self,
        what: &'static str,
        body: impl FnOnce(&redb::WriteTransaction, &Path) -> std::result::Result<R, WriteError>,
    ) -> Result<R> {
        self.contain(what, |db| {
            let mut txn = db.begin_write().map_err(|e| classify(&self.path, e))?;
            txn.set_durability(Durability::Immediate).map_err(|e| classify(&self.path, e))?;
            let outcome = body(&txn, &self.path);
            match outcome {
                Ok(value) => {
                    txn.commit().map_err(|e| classify(&self.path, e))?;
                    Ok(value)
                }
                Err(error) => {
                    let _ = txn.abort();
                    Err(error.into_error(&self.path))
                }
            }
        })
    }

    /// What the file says about its store.
    pub fn record(&self) -> Result<StoreRecord> {
        let format_version = self.format_version;
        self.read("reading the store record", |snapshot| {
            if format_version == 1 {
                let meta =
                    snapshot.txn.open_table(META_FORMAT_1).map_err(|e| classify(&self.path, e))?;
                let applied = meta.get(key::APPLIED_LSN).map_err(|e| classify(&self.path, e))?;
                let applied_lsn = applied.map_or(0, |guard| guard.value());
                let wal_dir = None;
                return Ok(StoreRecord {
                    format_version,
                    store_id: None,
                    applied_lsn,
                    wal_dir,
                    wal_in_use: false,
                    wal_epoch: 0,
                });
            }
            let id = decode_u64(&self.path, key::STORE_ID, &snapshot.record(key::STORE_ID)?)?;
            let store_id =
                StoreId::from_u64(id).ok_or_else(|| bad_record(&self.path, key::STORE_ID))?;
            let applied_lsn =
                decode_u64(&self.path, key::APPLIED_LSN, &snapshot.record(key::APPLIED_LSN)?)?;
            let wal_dir = snapshot
                .optional_record(key::WAL_DIR)?
                .map(|bytes| PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)));
            let wal_in_use = match snapshot.optional_record(key::WAL_IN_USE)?.as_deref() {
                None | Some([0]) => false,
                Some([1]) => true,
                Some(_) => return Err(bad_record(&self.path, key::WAL_IN_USE)),
            };
            let wal_epoch = match snapshot.optional_record(key::WAL_EPOCH)? {
                Some(bytes) => decode_u32(&self.path, key::WAL_EPOCH, &bytes)?,
                None => 0,
            };
            Ok(StoreRecord {
                format_version,
                store_id: Some(store_id),
                applied_lsn,
                wal_dir,
                wal_in_use,
                wal_epoch,
            })
        })
    }

    /// The LSN of the last record redb holds (0 for a new store).
    pub fn applied_lsn(&self) -> Result<Lsn> {
        Ok(self.record()?.applied_lsn)
    }

    /// Folds generations (oldest first) into redb in ONE durable transaction
    /// that also sets `applied_lsn` to `lsn` and, when given, where the WAL
    /// is. Applying a generation whose effects redb already holds changes
    /// nothing (invariant 5).
    pub fn fold(
        &self,
        generations: &[Arc<Generation>],
        lsn: Lsn,
        wal: Option<WalMark<'_>>,
    ) -> Result<FoldStats> {
        // Generations come oldest first, each after the one before, and `lsn`
        // covers them all: the fold never records an LSN it does not hold.
        debug_assert!(
            generations.windows(2).all(|pair| pair[0].lsn_last < pair[1].lsn_last),
            "generations are folded in LSN order"
        );
        debug_assert!(
            generations.last().is_none_or(|last| last.lsn_last <= lsn),
            "the applied LSN covers every generation folded"
        );
        let format_version = self.format_version;
        self.write("folding records", |txn, path| {
            let mut facts = txn.open_table(FACTS)?;
            let mut sessions = txn.open_table(SESSIONS)?;
            let applied = read_applied_lsn(txn, path, format_version)?;
            if lsn < applied {
                return Err(WriteError::Damage(
                    StateDamage::BadStoreRecord,
                    format!("applied_lsn would go back from {applied} to {lsn}"),
                ));
            }
            let mut stats = FoldStats::default();
            for generation in generations {
                for (session, delta) in &generation.sessions {
                    fold_session(
                        &mut facts,
                        &mut sessions,
                        session,
                        delta,
                        format_version,
                        &mut stats,
                    )?;
                }
            }
            write_applied_lsn(txn, format_version, lsn)?;
            if let Some(mark) = wal {
                write_wal_mark(txn, format_version, mark)?;
            }
            Ok(stats)
        })
    }

    /// Records where the WAL is, in a commit of its own.
    pub fn mark_wal(&self, mark: WalMark<'_>) -> Result<()> {
        let format_version = self.format_version;
        self.write("recording the WAL directory", |txn, _| {
            write_wal_mark(txn, format_version, mark)
        })
    }

    /// Upgrades a format-1 file to the current format in one transaction:
    /// every fact gets its checksum, and the store record (with `store_id`
    /// and the applied LSN) replaces format 1's `meta` table.
    pub fn upgrade(&mut self, store_id: StoreId) -> Result<()> {
        if self.format_version == STATE_FORMAT_VERSION {
            return Ok(());
        }
        self.write("upgrading the file from format 1", |txn, path| {
            let applied_lsn = read_applied_lsn(txn, path, 1)?;
            let mut facts = txn.open_table(FACTS)?;
            let mut rewritten = Vec::new();
            for entry in facts.iter()? {
                let (key, value) = entry?;
                let (session, fact) = key.value();
                rewritten.push((session.to_string(), fact.to_string(), value.value().to_vec()));
            }
            for (session, fact, value) in &rewritten {
                facts.insert(
                    (session.as_str(), fact.as_str()),
                    encode_fact(session, fact, value).as_slice(),
                )?;
            }
            drop(facts);
            txn.delete_table(META_FORMAT_1)?;
            let mut store = txn.open_table(STORE)?;
            put_record(&mut store, key::FORMAT_VERSION, &STATE_FORMAT_VERSION.to_le_bytes())?;
            put_record(&mut store, key::STORE_ID, &store_id.get().to_le_bytes())?;
            put_record(&mut store, key::APPLIED_LSN, &applied_lsn.to_le_bytes())?;
            Ok(())
        })?;
        self.format_version = STATE_FORMAT_VERSION;
        Ok(())
    }

    /// Runs redb's integrity check (it verifies every page checksum). Needs
    /// no transaction in flight; on a handle from [`Tables::open_unchanged`]
    /// whatever it repairs stays in memory.
    pub fn check_integrity(&mut self) -> Result<bool> {
        if let Some(Latch::Panicked(error) | Latch::Io(error)) = self.latched() {
            return Err(error.clone());
        }
        let path = self.path.clone();
        let db = self.db.as_mut().ok_or(Error::Closed)?;
        catch(&path, "checking integrity", || db.check_integrity().map_err(|e| classify(&path, e)))
    }

    /// Closes redb, reporting any error it meets while doing so. A handle
    /// latched by a panic is dropped without asking redb for anything more
    /// than it does on drop, with that contained too.
    pub fn close(mut self) -> Result<()> {
        let latched = self.latched();
        let Some(db) = self.db.take() else { return Ok(()) };
        catch(&self.path, "closing", || match latched {
            Some(Latch::Panicked(error) | Latch::Io(error)) => {
                drop(db);
                Err(error.clone())
            }
            None => db.close().map_err(|e| classify(&self.path, e)),
        })
    }
}

impl Drop for Tables {
    /// redb's drop closes the database, which can read a damaged file:
    /// contained like every other call.
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = catch(&self.path, "closing", || {
                drop(db);
                Ok(())
            });
        }
    }
}

fn open_database(
    path: &Path,
    backend: Box<dyn StorageBackend>,
    cache_bytes: usize,
    sync_failed: &Arc<AtomicBool>,
) -> Result<Database> {
    let backend = BoxedBackend { inner: backend, sync_failed: sync_failed.clone() };
    catch(path, "opening", || {
        redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| classify(path, e))
    })
}

/// An error inside a write transaction: redb's own, or damage found.
enum WriteError {
    Redb(redb::Error),
    Damage(StateDamage, String),
}

macro_rules! write_error_from {
    ($($source:ty),*) => {
        $(impl From<$source> for WriteError {
            fn from(error: $source) -> Self {
                WriteError::Redb(error.into())
            }
        })*
    };
}

write_error_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

impl WriteError {
    fn into_error(self, path: &Path) -> Error {
        match self {
            WriteError::Redb(error) => classify(path, error),
            WriteError::Damage(kind, detail) => {
                Error::StateCorrupted { path: path.to_path_buf(), kind, detail }
            }
        }
    }
}

/// Applies one session's changes inside a fold, keeping its fact count.
fn fold_session(
    facts: &mut Table<(&str, &str), &[u8]>,
    sessions: &mut Table<&str, u64>,
    session: &str,
    delta: &crate::state::overlay::SessionDelta,
    format_version: u32,
    stats: &mut FoldStats,
) -> std::result::Result<(), WriteError> {
    let mut count = sessions.get(session)?.map_or(0, |g| g.value());
    if delta.dropped && count > 0 {
        let end = format!("{session}\0");
        facts.retain_in((session, "")..(end.as_str(), ""), |_, _| false)?;
        stats.facts_removed += count;
        count = 0;
    }
    let count_damaged =
        || WriteError::Damage(StateDamage::CountMismatch, format!("session {session:?}"));
    // One buffer for every value this session's facts store (checksum and
    // value), instead of an allocation per fact.
    let mut stored = Vec::new();
    for (fact, value) in &delta.facts {
        let key = (session, fact.as_str());
        match value {
            Some(value) => {
                stored.clear();
                if format_version > 1 {
                    stored.extend_from_slice(&fact_checksum(session, fact, value).to_le_bytes());
                }
                stored.extend_from_slice(value);
                let old = facts.insert(key, stored.as_slice())?;
                count += u64::from(old.is_none());
                stats.facts_written += 1;
            }
            None => {
                let old = facts.remove(key)?;
                if old.is_some() {
                    count = count.checked_sub(1).ok_or_else(count_damaged)?;
                    stats.facts_removed += 1;
                }
            }
        }
    }
    if count == 0 {
        sessions.remove(session)?;
    } else {
        sessions.insert(session, count)?;
    }
    Ok(())
}

fn read_applied_lsn(
    txn: &redb::WriteTransaction,
    path: &Path,
    format_version: u32,
) -> std::result::Result<Lsn, WriteError> {
    if format_version == 1 {
        let meta = txn.open_table(META_FORMAT_1)?;
        let applied = meta.get(key::APPLIED_LSN)?.map_or(0, |guard| guard.value());
        return Ok(applied);
    }
    let store = txn.open_table(STORE)?;
    let bytes = match store.get(key::APPLIED_LSN)? {
        Some(guard) => checked_record(key::APPLIED_LSN, guard.value()),
        None => None,
    };
    let bytes = bytes
        .ok_or(WriteError::Damage(StateDamage::BadStoreRecord, key::APPLIED_LSN.to_string()))?;
    decode_u64(path, key::APPLIED_LSN, &bytes)
        .map_err(|_| WriteError::Damage(StateDamage::BadStoreRecord, key::APPLIED_LSN.to_string()))
}

fn write_applied_lsn(
    txn: &redb::WriteTransaction,
    format_version: u32,
    lsn: Lsn,
) -> std::result::Result<(), WriteError> {
    if format_version == 1 {
        txn.open_table(META_FORMAT_1)?.insert(key::APPLIED_LSN, lsn)?;
    } else {
        put_record(&mut txn.open_table(STORE)?, key::APPLIED_LSN, &lsn.to_le_bytes())?;
    }
    Ok(())
}

fn write_wal_mark(
    txn: &redb::WriteTransaction,
    format_version: u32,
    mark: WalMark<'_>,
) -> std::result::Result<(), WriteError> {
    if format_version == 1 {
        // A format-1 file is upgraded before its first WAL-mode use.
        return Ok(());
    }
    let mut store = txn.open_table(STORE)?;
    put_record(&mut store, key::WAL_DIR, mark.dir.as_os_str().as_bytes())?;
    put_record(&mut store, key::WAL_IN_USE, &[u8::from(mark.in_use)])?;
    put_record(&mut store, key::WAL_EPOCH, &mark.epoch.to_le_bytes())?;
    Ok(())
}

/// Writes a store record: the value, then a CRC-32 of key and value.
fn put_record(
    store: &mut Table<&str, &[u8]>,
    key: &str,
    value: &[u8],
) -> std::result::Result<(), WriteError> {
    let mut bytes = value.to_vec();
    bytes.extend_from_slice(&record_checksum(key, value).to_le_bytes());
    store.insert(key, bytes.as_slice())?;
    Ok(())
}

fn record_checksum(key: &str, value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key.as_bytes());
    hasher.update(&[0]);
    hasher.update(value);
    hasher.finalize()
}

/// A store record's value when its checksum holds.
fn checked_record(key: &str, stored: &[u8]) -> Option<Vec<u8>> {
    let split = stored.len().checked_sub(4)?;
    let (value, crc) = stored.split_at(split);
    (record_checksum(key, value).to_le_bytes() == crc).then(|| value.to_vec())
}

fn bad_record(path: &Path, key: &str) -> Error {
    Error::StateCorrupted {
        path: path.to_path_buf(),
        kind: StateDamage::BadStoreRecord,
        detail: format!("store record `{key}` is missing or fails its checksum"),
    }
}

fn decode_u64(path: &Path, key: &str, bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| bad_record(path, key))?;
    Ok(u64::from_le_bytes(bytes))
}

fn decode_u32(path: &Path, key: &str, bytes: &[u8]) -> Result<u32> {
    let bytes: [u8; 4] = bytes.try_into().map_err(|_| bad_record(path, key))?;
    Ok(u32::from_le_bytes(bytes))
}

/// A fact as stored: CRC-32 of (session, fact, value), then the value.
pub(crate) fn encode_fact(session: &str, fact: &str, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(FACT_CHECKSUM_BYTES + value.len());
    stored.extend_from_slice(&fact_checksum(session, fact, value).to_le_bytes());
    stored.extend_from_slice(value);
    stored
}

fn fact_checksum(session: &str, fact: &str, value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in [session.as_bytes(), fact.as_bytes()] {
        hasher.update(&(part.len() as u32).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(value);
    hasher.finalize()
}

/// A consistent read view of redb, handed to [`Tables::read`]'s closure.
pub struct Snapshot<'a> {
    txn: ReadTransaction,
    tables: &'a Tables,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("tables", self.tables).finish_non_exhaustive()
    }
}

impl Snapshot<'_> {
    fn error(&self, error: impl Into<redb::Error>) -> Error {
        classify(&self.tables.path, error)
    }

    fn damaged(&self, kind: StateDamage, detail: String) -> Error {
        Error::StateCorrupted { path: self.tables.path.clone(), kind, detail }
    }

    fn optional_record(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let store = self.txn.open_table(STORE).map_err(|e| self.error(e))?;
        let Some(guard) = store.get(key).map_err(|e| self.error(e))? else { return Ok(None) };
        let value =
            checked_record(key, guard.value()).ok_or_else(|| bad_record(&self.tables.path, key))?;
        Ok(Some(value))
    }

    fn record(&self, key: &str) -> Result<Vec<u8>> {
        self.optional_record(key)?.ok_or_else(|| bad_record(&self.tables.path, key))
    }

    /// A stored fact's value, once its checksum holds.
    fn value(&self, session: &str, fact: &str, stored: &[u8]) -> Result<Vec<u8>> {
        if self.tables.format_version == 1 {
            return Ok(stored.to_vec());
        }
        let checked = stored.split_at_checked(FACT_CHECKSUM_BYTES).and_then(|(crc, value)| {
            (fact_checksum(session, fact, value).to_le_bytes() == crc).then(|| value.to_vec())
        });
        checked.ok_or_else(|| {
            self.damaged(
                StateDamage::ChecksumMismatch,
                format!("session {session:?}, fact {fact:?}"),
            )
        })
    }

    /// One fact's value.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(FACTS).map_err(|e| self.error(e))?;
        let stored = table.get((session, fact)).map_err(|e| self.error(e))?;
        stored.map(|guard| self.value(session, fact, guard.value())).transpose()
    }

    /// Every fact of one session, checked against the session's fact count.
    pub fn session(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let table = self.txn.open_table(FACTS).map_err(|e| self.error(e))?;
        let end = format!("{session}\0");
        let mut facts = BTreeMap::new();
        for entry in table.range((session, "")..(end.as_str(), "")).map_err(|e| self.error(e))? {
            let (key, stored) = entry.map_err(|e| self.error(e))?;
            let (found_session, fact) = key.value();
            if found_session != session {
                let detail =
                    format!("session {session:?}: a key of session {found_session:?} in its range");
                return Err(self.damaged(StateDamage::Unreadable, detail));
            }
            facts.insert(fact.to_string(), self.value(session, fact, stored.value())?);
        }
        let sessions = self.txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
        let count =
            sessions.get(session).map_err(|e| self.error(e))?.map_or(0, |guard| guard.value());
        if count != facts.len() as u64 {
            let detail =
                format!("session {session:?}: {count} facts recorded, {} found", facts.len());
            return Err(self.damaged(StateDamage::CountMismatch, detail));
        }
        Ok(facts)
    }

    /// Every session with at least one fact, and its fact count.
    pub fn sessions(&self) -> Result<BTreeMap<String, u64>> {
        let table = self.txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
        let mut sessions = BTreeMap::new();
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            sessions.insert(key.value().to_string(), value.value());
        }
        Ok(sessions)
    }

    /// Visits facts in key order (`reverse`: from the last), strictly after
    /// (before) `from` when given, each with its checked value or the error
    /// that stopped it from being read, until `visit` returns false. Stops
    /// at an error of the iteration itself (a damaged tree). For salvage,
    /// which walks a damaged tree from both ends.
    pub fn walk_facts(
        &self,
        from: Option<(&str, &str)>,
        reverse: bool,
        mut visit: impl FnMut(&str, &str, Result<Vec<u8>>) -> bool,
    ) -> Result<()> {
        use std::ops::Bound::{Excluded, Unbounded};
        let table = self.txn.open_table(FACTS).map_err(|e| self.error(e))?;
        let bounds = match (from, reverse) {
            (None, _) => (Unbounded, Unbounded),
            (Some(key), false) => (Excluded(key), Unbounded),
            (Some(key), true) => (Unbounded, Excluded(key)),
        };
        let range = table.range::<(&str, &str)>(bounds).map_err(|e| self.error(e))?;
        let mut step = |entry: std::result::Result<_, redb::StorageError>| -> Result<bool> {
            let (key, stored): (redb::AccessGuard<'_, (&str, &str)>, redb::AccessGuard<'_, &[u8]>) =
                entry.map_err(|e| self.error(e))?;
            let (session, fact) = key.value();
            Ok(visit(session, fact, self.value(session, fact, stored.value())))
        };
        if reverse {
            for entry in range.rev() {
                if !step(entry)? {
                    break;
                }
            }
        } else {
            for entry in range {
                if !step(entry)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Visits every fact in key order, each with its checked value or the
    /// error that stopped it from being read; stops at an error of the
    /// iteration itself (a damaged tree). For `verify`.
    pub fn scan_facts(&self, mut visit: impl FnMut(&str, &str, Result<Vec<u8>>)) -> Result<()> {
        let table = self.txn.open_table(FACTS).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, stored) = entry.map_err(|e| self.error(e))?;
            let (session, fact) = key.value();
            visit(session, fact, self.value(session, fact, stored.value()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::state::StateIo;

    #[test]
    fn fact_checksums_cover_keys_and_value() {
        // The same value under another session or fact id, or one bit
        // changed anywhere, fails the checksum.
        let stored = encode_fact("s", "f", b"value");
        let sum = fact_checksum("s", "f", b"value").to_le_bytes();
        assert_eq!(&stored[..4], &sum);
        assert_ne!(fact_checksum("s", "g", b"value"), fact_checksum("s", "f", b"value"));
        assert_ne!(fact_checksum("sf", "", b"value"), fact_checksum("s", "f", b"value"));
        for bit in 0..stored.len() * 8 {
            let mut flipped = stored.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let (crc, value) = flipped.split_at(4);
            assert_ne!(fact_checksum("s", "f", value).to_le_bytes(), crc, "bit {bit}");
        }
        assert_eq!(checked_record("k", b"\x01"), None, "too short for a checksum");
        let mut record = 7u64.to_le_bytes().to_vec();
        record
            .extend_from_slice(&record_checksum("applied_lsn", &7u64.to_le_bytes()).to_le_bytes());
        assert_eq!(checked_record("applied_lsn", &record), Some(7u64.to_le_bytes().to_vec()));
        assert_eq!(checked_record("store_id", &record), None, "a record moved to another key");
    }

    /// Every session with its count, and every fact, as the tables hold them.
    type Contents = (BTreeMap<String, u64>, Vec<(String, String, Vec<u8>)>);

    fn contents(tables: &Tables) -> Contents {
        tables
            .read("test", |snapshot| {
                let mut facts = Vec::new();
                snapshot.walk_facts(None, false, |session, fact, value| {
                    facts.push((session.to_string(), fact.to_string(), value.unwrap()));
                    true
                })?;
                Ok((snapshot.sessions()?, facts))
            })
            .unwrap()
    }

    #[test]
    fn folding_a_generation_twice_changes_nothing() {
        // Invariant 5: a fold repeated after a crash between its commit and
        // the release of its records (or a reopen that replays them) must
        // leave the tables as one fold did: facts, session counts, and
        // the sessions a drop emptied.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (backend, _) = crate::state::StdStateIo.open_backend(&path).unwrap();
        let tables = Tables::create(&path, backend, 1 << 20, StoreId::new_random()).unwrap();
        let before = {
            let mut generation = Generation::default();
            generation.apply(
                1,
                Batch::new().assert("a", "x", b"1".to_vec()).assert("b", "y", b"2".to_vec()),
                10,
            );
            generation.apply(2, Batch::new().assert("c", "z", b"3".to_vec()), 10);
            Arc::new(generation)
        };
        tables.fold(&[before], 2, None).unwrap();
        let mut generation = Generation::default();
        generation.apply(
            3,
            Batch::new().assert("a", "x", b"one".to_vec()).assert("a", "w", b"4".to_vec()),
            10,
        );
        generation.apply(
            4,
            Batch::new().retract("b", "y").drop_session("c").assert("c", "n", b"5".to_vec()),
            10,
        );
        generation.apply(5, Batch::new().assert("d", "q", b"6".to_vec()).retract("a", "w"), 10);
        let generation = Arc::new(generation);
        let first = tables.fold(&[Arc::clone(&generation)], 5, None).unwrap();
        let once = contents(&tables);
        let expected_facts = vec![
            ("a".to_string(), "x".to_string(), b"one".to_vec()),
            ("c".to_string(), "n".to_string(), b"5".to_vec()),
            ("d".to_string(), "q".to_string(), b"6".to_vec()),
        ];
        assert_eq!(once.1, expected_facts);
        assert_eq!(
            once.0,
            BTreeMap::from([("a".to_string(), 1), ("c".to_string(), 1), ("d".to_string(), 1)])
        );
        assert_eq!(first.facts_written, 3, "the generation reduces to its last value per fact");
        tables.fold(&[generation], 5, None).unwrap();
        assert_eq!(contents(&tables), once, "the second fold changed the tables");
        assert_eq!(tables.applied_lsn().unwrap(), 5);
    }
}
