//! Read-only inspection of a store, for the command line's `facts`,
//! `inspect`, `dump` and `verify` and for anyone looking at a crashed store.
//!
//! Nothing on disk changes and nothing is left behind: the WAL is only read,
//! the lock files are locked shared (never created), and redb is opened
//! over a backend that reads `state.redb` and keeps redb's own writes (the
//! repair of a file a crash left behind) in memory. No copy of the file is
//! made anywhere, so an interrupted tool leaves nothing to clean up.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::batch::Batch;
use crate::config::{Config, RecoveryMode};
use crate::error::{Error, IoOp, Lsn, Result, StateDamage};
use crate::files::{self, DirState};
use crate::open::{judge_wal, owner_of, WalFacts};
use crate::state::{Generation, Overlay, StoreRecord, Tables, View};
use crate::wal::io::StdIo;
use crate::wal::recovery::{self, Dropped, RecoveredRecord, Repair, ScanOptions, SegmentSummary};

/// What is wrong with the end of a WAL, if anything.
#[derive(Debug)]
#[non_exhaustive]
pub enum WalProblem {
    /// An unreadable last record: what a read-write open would drop (with a
    /// WARN). A crash leaves one when it cuts short a write that was never
    /// acknowledged; the same bytes can also be the last acknowledged record
    /// damaged later, which nothing on disk can tell apart.
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

/// What [`ReadOnlyStore::check_state`] found in `state.redb`.
#[derive(Debug)]
#[non_exhaustive]
pub struct StateCheck {
    /// redb's own integrity check (every page checksum) passed.
    pub integrity: bool,
    /// Facts read whose checksum holds.
    pub facts_sound: u64,
    /// Sessions in the sessions table.
    pub sessions: u64,
    /// Every problem found (damaged facts, wrong counts, unreadable parts),
    /// at most [`StateCheck::PROBLEMS_MAX`] of them.
    pub problems: Vec<Error>,
    /// Problems found in all, including those not kept.
    pub problems_found: u64,
}

impl StateCheck {
    /// Most problems kept (the count goes on).
    pub const PROBLEMS_MAX: usize = 100;

    /// True when nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.integrity && self.problems_found == 0
    }

    fn note(&mut self, problem: Error) {
        self.problems_found += 1;
        if self.problems.len() < StateCheck::PROBLEMS_MAX {
            self.problems.push(problem);
        }
    }
}

/// A store opened for reading only.
pub struct ReadOnlyStore {
    config: Config,
    tables: Tables,
    overlay: Overlay,
    record: StoreRecord,
    segments: Vec<SegmentSummary>,
    records: Vec<RecoveredRecord<Batch>>,
    problem: Option<WalProblem>,
    dropped: Option<Dropped>,
    _locks: Vec<File>,
}

impl std::fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyStore")
            .field("data_dir", &self.config.persistence.data_dir)
            .finish_non_exhaustive()
    }
}

impl ReadOnlyStore {
    /// Opens the store described by `config` without changing anything.
    /// Fails with `Error::Locked` while a writer holds the store, and with
    /// the error a read-write open would give for a WAL that is not this
    /// store's or a file of a newer format.
    ///
    /// # Examples
    ///
    /// ```
    /// use factwal::{Config, Error, ReadOnlyStore, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let config = Config::new(dir.path());
    /// let store = Store::open(config.clone())?;
    /// store.assert("s1", "risk", b"high")?;
    /// // A writer holds the store: inspection waits for it to close.
    /// assert!(matches!(ReadOnlyStore::open(&config), Err(Error::Locked { .. })));
    /// let _ = store.close();
    /// let inspected = ReadOnlyStore::open(&config)?;
    /// assert_eq!(inspected.fact("s1", "risk")?, Some(b"high".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing on disk changes: `Config`, `Io`, `Locked` (a writer holds
    /// the store), `WalMismatch`, `ForeignSegment`, `StateCorrupted`, `Redb`,
    /// `UnsupportedFormatVersion`. A damaged WAL is not an error here: the
    /// store opens and [`ReadOnlyStore::problem`] says what and where.
    pub fn open(config: &Config) -> Result<ReadOnlyStore> {
        config.validate()?;
        let locks = lock_shared(config)?;
        let (wal_dir, state_path) = (config.wal_dir(), config.state_path());
        let tables = open_state_unchanged(&state_path, config.persistence.redb_cache_bytes)?;
        let record = tables.record()?;
        let mode = config.persistence.recovery_mode;
        judge_wal(&WalFacts::gather(&StdIo, Some(&record), &wal_dir, mode)?)
            .into_result(&wal_dir, &state_path)?;
        // Point-in-time, so the scan reads up to the first problem and says
        // what a read-write open would make of it, without refusing.
        let options = ScanOptions {
            applied_lsn: Some(record.applied_lsn),
            mode: RecoveryMode::PointInTime,
            keep_folded: true,
            owner: owner_of(Some(&record), crate::identity::StoreId::new_random()),
            state_path,
        };
        let recovered = recovery::scan(&StdIo, &wal_dir, &options, Batch::decode)?;
        let (problem, dropped) = problem_of(recovered.repairs);
        let overlay = overlay_of_unfolded(&recovered.records, record.applied_lsn);
        Ok(ReadOnlyStore {
            config: config.clone(),
            tables,
            overlay,
            record,
            segments: recovered.segments,
            records: recovered.records,
            problem,
            dropped,
            _locks: locks,
        })
    }

    fn view(&self) -> View<'_> {
        View { overlay: &self.overlay, tables: &self.tables }
    }

    /// One fact's value, as a read-write open would give it.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = factwal::Config::new(dir.path());
    /// # let store = factwal::Store::open(config.clone())?;
    /// # store.assert("s1", "risk", b"high")?;
    /// # let _ = store.close();
    /// let inspected = factwal::ReadOnlyStore::open(&config)?;
    /// assert_eq!(inspected.fact("s1", "risk")?, Some(b"high".to_vec()));
    /// assert_eq!(inspected.fact("s1", "never-written")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `StateCorrupted` when what `state.redb` returns fails its checksum
    /// (nothing wrong is returned); `Redb` when it cannot be read.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        self.view().fact(session, fact)
    }

    /// Every fact of a session.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = factwal::Config::new(dir.path());
    /// # let store = factwal::Store::open(config.clone())?;
    /// # store.assert("s1", "risk", b"high")?;
    /// # let _ = store.close();
    /// let inspected = factwal::ReadOnlyStore::open(&config)?;
    /// assert_eq!(inspected.facts("s1")?.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `StateCorrupted` when what `state.redb` returns fails its checksum
    /// (nothing wrong is returned); `Redb` when it cannot be read.
    pub fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        self.view().facts(session)
    }

    /// Every session holding at least one fact.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = factwal::Config::new(dir.path());
    /// # let store = factwal::Store::open(config.clone())?;
    /// # store.assert("s1", "risk", b"high")?;
    /// # let _ = store.close();
    /// let inspected = factwal::ReadOnlyStore::open(&config)?;
    /// assert_eq!(inspected.sessions()?, ["s1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `StateCorrupted` when what `state.redb` returns fails its checksum
    /// (nothing wrong is returned); `Redb` when it cannot be read.
    pub fn sessions(&self) -> Result<Vec<String>> {
        self.view().sessions()
    }

    /// The LSN redb holds.
    pub fn applied_lsn(&self) -> Lsn {
        self.record.applied_lsn
    }

    /// What `state.redb` says about the store: identity, format, where its
    /// WAL lives and whether the last close was clean.
    pub fn store_record(&self) -> &StoreRecord {
        &self.record
    }

    /// The WAL's segments, with what the scan found in each.
    pub fn segments(&self) -> &[SegmentSummary] {
        &self.segments
    }

    /// Every valid record of the WAL (folded ones too), in LSN order, up to
    /// the first problem.
    pub fn records(&self) -> &[RecoveredRecord<Batch>] {
        &self.records
    }

    /// Records a read-write open would replay.
    pub fn unfolded_records(&self) -> usize {
        self.records.iter().filter(|record| record.lsn > self.record.applied_lsn).count()
    }

    /// An unreadable last record or corruption at the end of the valid
    /// records, if any.
    pub fn problem(&self) -> Option<&WalProblem> {
        self.problem.as_ref()
    }

    /// Under corruption: what point-in-time recovery would drop that can
    /// still be read (records after the damage, and their LSNs).
    pub fn point_in_time_drops(&self) -> Option<&Dropped> {
        self.dropped.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Size of `state.redb` in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = factwal::Config::new(dir.path());
    /// # let _ = factwal::Store::open(config.clone())?.close();
    /// let inspected = factwal::ReadOnlyStore::open(&config)?;
    /// assert_eq!(inspected.redb_bytes()?, std::fs::metadata(config.state_path())?.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Io` when `state.redb` cannot be examined.
    pub fn redb_bytes(&self) -> Result<u64> {
        let path = self.config.state_path();
        std::fs::metadata(&path).map(|m| m.len()).map_err(|e| Error::io(path, IoOp::Stat, "", e))
    }

    /// Checks all of `state.redb`: redb's integrity check (every page
    /// checksum), every fact's checksum, and every session's fact count
    /// against its facts. Damage is reported in the result, not as an error;
    /// an error means the check could not run. Changes nothing on disk.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = factwal::Config::new(dir.path());
    /// # let store = factwal::Store::open(config.clone())?;
    /// # store.assert("s1", "risk", b"high")?;
    /// # let _ = store.close();
    /// let inspected = factwal::ReadOnlyStore::open(&config)?;
    /// assert!(inspected.check_state()?.is_sound());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Io` or `Redb` when the check cannot run; damage found is in the
    /// returned [`StateCheck`], not an error.
    pub fn check_state(&self) -> Result<StateCheck> {
        let path = self.config.state_path();
        let mut check = StateCheck {
            integrity: true,
            facts_sound: 0,
            sessions: 0,
            problems: Vec::new(),
            problems_found: 0,
        };
        match Tables::open_unchanged(&path, self.config.persistence.redb_cache_bytes as usize) {
            Ok(mut fresh) => {
                match fresh.check_integrity() {
                    Ok(true) => {}
                    Ok(false) => {
                        check.integrity = false;
                        check.note(Error::StateCorrupted {
                            path: path.clone(),
                            kind: StateDamage::IntegrityCheckFailed,
                            detail: "redb found damaged pages and would have to repair them".into(),
                        });
                    }
                    Err(error) if error.is_corruption() => {
                        check.integrity = false;
                        check.note(error);
                    }
                    Err(error) => return Err(error),
                }
                let _ = fresh.close();
            }
            Err(error) if error.is_corruption() => {
                check.integrity = false;
                check.note(error);
            }
            Err(error) => return Err(error),
        }
        self.check_facts(&mut check);
        Ok(check)
    }

    /// Every fact's checksum, and each session's count against the facts
    /// found under it.
    fn check_facts(&self, check: &mut StateCheck) {
        let path = self.config.state_path();
        let outcome = self.tables.read("checking every fact", |snapshot| {
            let recorded = snapshot.sessions()?;
            let mut found: BTreeMap<String, u64> = BTreeMap::new();
            let mut damaged = Vec::new();
            snapshot.scan_facts(|session, _, value| {
                *found.entry(session.to_string()).or_default() += 1;
                match value {
                    Ok(_) => check.facts_sound += 1,
                    Err(error) => damaged.push(error),
                }
            })?;
            Ok((recorded, found, damaged))
        });
        match outcome {
            Ok((recorded, found, damaged)) => {
                check.sessions = recorded.len() as u64;
                for error in damaged {
                    check.note(error);
                }
                let names: std::collections::BTreeSet<&String> =
                    recorded.keys().chain(found.keys()).collect();
                for session in names {
                    let (expected, actual) = (
                        recorded.get(session).copied().unwrap_or(0),
                        found.get(session).copied().unwrap_or(0),
                    );
                    if expected != actual {
                        check.note(Error::StateCorrupted {
                            path: path.clone(),
                            kind: StateDamage::CountMismatch,
                            detail: format!(
                                "session {session:?}: {expected} facts recorded, {actual} found"
                            ),
                        });
                    }
                }
            }
            Err(error) => check.note(error),
        }
    }
}

/// Locks the data directory shared, and the WAL directory when it is
/// another one: no writer starts while the store is inspected, and one
/// running makes this fail with `Locked`. A missing data directory is an
/// error (inspection creates nothing).
fn lock_shared(config: &Config) -> Result<Vec<File>> {
    let data_dir = &config.persistence.data_dir;
    if files::dir_state(data_dir, "data directory")? == DirState::Missing {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
        return Err(Error::io(data_dir, IoOp::Open, "data directory", source));
    }
    let mut locks: Vec<File> = files::lock_shared(data_dir)?.into_iter().collect();
    let wal_dir = config.wal_dir();
    let wal_exists = files::dir_state(&wal_dir, "WAL directory")? == DirState::Directory;
    if wal_exists && !files::same_dir(&wal_dir, data_dir) {
        locks.extend(files::lock_shared(&wal_dir)?);
    }
    Ok(locks)
}

/// `state.redb`, opened without changing a byte (a crashed file is repaired
/// in memory only); a missing one means the directory is not a store.
fn open_state_unchanged(state_path: &Path, cache_bytes: u64) -> Result<Tables> {
    match std::fs::metadata(state_path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let source = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no state.redb: not a factwal store",
            );
            return Err(Error::io(state_path, IoOp::Open, "state", source));
        }
        Err(error) => return Err(Error::io(state_path, IoOp::Open, "state", error)),
        Ok(_) => {}
    }
    Tables::open_unchanged(state_path, cache_bytes as usize)
}

/// What a point-in-time scan's repair says about the WAL: the problem a
/// read-write open would meet, and what point-in-time recovery would drop.
fn problem_of(repairs: Vec<Repair>) -> (Option<WalProblem>, Option<Dropped>) {
    match repairs.into_iter().next() {
        None => (None, None),
        Some(Repair::TornTail { path, offset, bytes }) => {
            (Some(WalProblem::TornTail { path, offset, bytes }), None)
        }
        Some(Repair::DropAfter { corruption, dropped, .. }) => {
            (Some(WalProblem::Corrupted(*corruption)), Some(dropped))
        }
    }
}

/// The records redb lacks, as the overlay a read-write open would replay.
fn overlay_of_unfolded(records: &[RecoveredRecord<Batch>], applied_lsn: Lsn) -> Overlay {
    let mut generation = Generation::default();
    for record in records.iter().filter(|r| r.lsn > applied_lsn) {
        generation.apply(record.lsn, record.payload.clone(), record.payload_bytes);
    }
    let overlay = Overlay::default();
    overlay.push_generation(generation);
    overlay
}
