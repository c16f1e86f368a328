//! Read-only inspection of a store, for the command line's `facts`,
//! `inspect`, `dump` and `verify` and for anyone looking at a crashed store.
//!
//! Nothing on disk changes: the WAL is only read, the lock file is locked
//! shared (never created), and redb is opened read-only. redb refuses a
//! read-only open of a database that needs repair, which is what any crash
//! leaves behind; the inspector then opens a private copy of `state.redb` in
//! the system temp directory (repaired there, removed on drop).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, RecoveryMode};
use crate::error::{Error, Lsn, Result};
use crate::state::{Generation, Overlay, Tables, View};
use crate::store::LOCK_FILE_NAME;
use crate::wal::io::StdIo;
use crate::wal::recovery::{self, RecoveredRecord, Repair, ScanOptions, SegmentSummary};

/// What is wrong with the end of a WAL, if anything.
#[derive(Debug)]
pub enum WalProblem {
    /// A torn tail: what a read-write open would drop (with a WARN).
    TornTail {
        /// The segment.
        path: PathBuf,
        /// Where the invalid bytes begin.
        offset: u64,
        /// Non-zero bytes that would be dropped.
        bytes: u64,
    },
    /// Mid-log corruption: a read-write open refuses (unless point-in-time).
    Corrupted(Error),
}

/// A store opened for reading only.
pub struct ReadOnlyStore {
    config: Config,
    tables: Tables,
    overlay: Overlay,
    applied_lsn: Lsn,
    segments: Vec<SegmentSummary>,
    records: Vec<RecoveredRecord>,
    problem: Option<WalProblem>,
    redb_copy: Option<PathBuf>,
    _lock: Option<File>,
}

impl std::fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyStore").field("data_dir", &self.config.persistence.data_dir).finish_non_exhaustive()
    }
}

impl ReadOnlyStore {
    /// Opens the store described by `config` without changing anything.
    /// Fails with `Error::Locked` while a writer holds the store.
    pub fn open(config: &Config) -> Result<ReadOnlyStore> {
        config.validate()?;
        let data_dir = &config.persistence.data_dir;
        if !data_dir.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
            return Err(Error::io(data_dir, "open data directory", source));
        }
        let lock = lock_shared(data_dir)?;
        let state_path = config.state_path();
        let (tables, redb_copy) = open_redb_read_only(&state_path)?;
        let applied_lsn = tables.applied_lsn()?;
        let options = ScanOptions {
            applied_lsn: Some(applied_lsn),
            mode: RecoveryMode::PointInTime,
            payload_bytes_max: config.persistence.max_record_bytes,
            keep_folded: true,
        };
        let recovered = recovery::scan(&StdIo, &config.wal_dir(), &options)?;
        let problem = recovered.repairs.into_iter().next().map(|repair| match repair {
            Repair::TornTail { path, offset, bytes } => WalProblem::TornTail { path, offset, bytes },
            Repair::DropAfter { corruption, .. } => WalProblem::Corrupted(*corruption),
        });
        let mut generation = Generation::default();
        for record in recovered.records.iter().filter(|record| record.lsn > applied_lsn) {
            generation.apply(record.lsn, record.batch.clone(), record.payload_bytes);
        }
        let overlay = Overlay::default();
        overlay.push_generation(generation);
        Ok(ReadOnlyStore {
            config: config.clone(),
            tables,
            overlay,
            applied_lsn,
            segments: recovered.segments,
            records: recovered.records,
            problem,
            redb_copy,
            _lock: lock,
        })
    }

    fn view(&self) -> View<'_> {
        View { overlay: &self.overlay, tables: &self.tables }
    }

    /// One fact's value, as a read-write open would give it.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        self.view().fact(session, fact)
    }

    /// Every fact of a session.
    pub fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        self.view().facts(session)
    }

    /// Every session holding at least one fact.
    pub fn sessions(&self) -> Result<Vec<String>> {
        self.view().sessions()
    }

    /// The LSN redb holds.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// The WAL's segments, with what the scan found in each.
    pub fn segments(&self) -> &[SegmentSummary] {
        &self.segments
    }

    /// Every valid record of the WAL (folded ones too), in LSN order, up to
    /// the first problem.
    pub fn records(&self) -> &[RecoveredRecord] {
        &self.records
    }

    /// Records a read-write open would replay.
    pub fn unfolded_records(&self) -> usize {
        self.records.iter().filter(|record| record.lsn > self.applied_lsn).count()
    }

    /// A torn tail or corruption at the end of the valid records, if any.
    pub fn problem(&self) -> Option<&WalProblem> {
        self.problem.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Size of `state.redb` in bytes.
    pub fn redb_bytes(&self) -> Result<u64> {
        let path = self.config.state_path();
        std::fs::metadata(&path).map(|m| m.len()).map_err(|e| Error::io(path, "stat", e))
    }

    /// Runs redb's integrity check on a private copy of `state.redb` (the
    /// check needs a writable database).
    pub fn check_redb_integrity(&self) -> Result<bool> {
        let copy = copy_to_temp(&self.config.state_path())?;
        let outcome = Tables::open(&copy).and_then(|mut tables| {
            let result = tables.check_integrity();
            let _ = tables.close();
            result
        });
        let _ = std::fs::remove_file(&copy);
        outcome
    }
}

impl Drop for ReadOnlyStore {
    fn drop(&mut self) {
        if let Some(copy) = &self.redb_copy {
            let _ = std::fs::remove_file(copy);
        }
    }
}

/// Locks the lock file shared, without creating it: a writer (exclusive)
/// cannot start meanwhile, and one already running makes this fail.
fn lock_shared(data_dir: &Path) -> Result<Option<File>> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(&path, "open lock file", error)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(error)) => Err(Error::io(&path, "lock", error)),
    }
}

fn open_redb_read_only(path: &Path) -> Result<(Tables, Option<PathBuf>)> {
    if !path.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no state.redb: not a factwal store");
        return Err(Error::io(path, "open state", source));
    }
    match Tables::open_read_only(path) {
        Ok(tables) => Ok((tables, None)),
        Err(Error::Redb { source: redb::Error::RepairAborted, .. }) => {
            let copy = copy_to_temp(path)?;
            match Tables::open(&copy) {
                Ok(tables) => Ok((tables, Some(copy))),
                Err(error) => {
                    let _ = std::fs::remove_file(&copy);
                    Err(error)
                }
            }
        }
        Err(error) => Err(error),
    }
}

fn copy_to_temp(path: &Path) -> Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let copy = std::env::temp_dir().join(format!("factwal-inspect-{}-{nanos}.redb", std::process::id()));
    std::fs::copy(path, &copy).map_err(|e| Error::io(path, "copy state for inspection", e))?;
    Ok(copy)
}
