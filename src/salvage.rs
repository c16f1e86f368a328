//! Salvage: copy everything still readable from a damaged store into a new
//! one, fold the WAL on top, and say exactly what could not be recovered.
//!
//! The damaged store is only read (locked shared, redb over a scratch
//! backend, as the inspection tools do). `state.redb` is walked from both
//! ends: a damaged page stops a walk, so the facts before it come from the
//! walk forward, those after it from the walk backward, and every session
//! the sessions table names in between is tried on its own. Each fact's
//! checksum is checked; a damaged one is reported, never copied. What the
//! WAL holds after `applied_lsn` (all of it, when `state.redb` cannot say)
//! is replayed on top, in LSN order, every readable batch of it: replaying a
//! suffix of the log over a state that already holds part of it gives the
//! same state, so this is exact either way, and a damaged batch is skipped
//! (and named by its LSN) rather than ending the replay. A loss that a replayed record
//! overwrites (the fact asserted or retracted again, its session dropped)
//! is no loss and is reported as restored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::Batch;
use crate::config::Config;
use crate::error::{Error, IoOp, Lsn, Result};
use crate::files::{self, DirState};
use crate::identity::StoreId;
use crate::state::{Generation, StateIo, StdStateIo, StoreRecord, Tables};
use crate::wal::format::{HeaderError, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use crate::wal::io::{StdIo, WalIo};
use crate::wal::recovery::{readable_records, RecoveredRecord};
use crate::wal::segment::{parse_segment_file_name, segment_file_name};

/// Value bytes gathered before they are written to the new store in one
/// transaction: bounds salvage's memory whatever the store's size.
const CHUNK_VALUE_BYTES: usize = 64 * 1024 * 1024;
/// Most sessions inside an unreadable stretch tried one by one.
const PROBED_SESSIONS_MAX: usize = 100_000;

/// Something salvage could not recover.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// One fact whose stored value fails its checksum (the ids are as read:
    /// a damaged id is named as it was found).
    Fact {
        /// The session id.
        session: String,
        /// The fact id.
        fact: String,
    },
    /// A session the sessions table records with more facts than were found.
    Session {
        /// The session id.
        session: String,
        /// Facts the sessions table records.
        recorded: u64,
        /// Facts found (damaged ones included).
        found: u64,
    },
    /// Facts between two keys could not be read at all (a damaged page of
    /// the tree): which facts, and of which sessions, is unknown beyond
    /// what [`Loss::Session`] entries say.
    Range {
        /// The last key read before the damage, if any.
        after: Option<(String, String)>,
        /// The first key read after the damage, if any.
        before: Option<(String, String)>,
    },
    /// `state.redb` could not be read at all: only the WAL was salvaged.
    State {
        /// Why.
        reason: String,
    },
    /// WAL records (whole batches) that could not be read: damaged, or in a
    /// segment that could not be. The records around them were replayed.
    WalRecords {
        /// The first LSN lost.
        lsn_first: Lsn,
        /// The last LSN lost.
        lsn_last: Lsn,
    },
    /// A WAL segment file whose header could not be read: none of its
    /// records could be (a gap in the LSNs says which, when a later segment
    /// follows).
    WalSegment {
        /// The segment file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |key: &Option<(String, String)>| match key {
            Some((session, fact)) => format!("({session:?}, {fact:?})"),
            None => "the end".to_string(),
        };
        match self {
            Loss::Fact { session, fact } => write!(f, "session {session:?}, fact {fact:?}: value damaged"),
            Loss::Session { session, recorded, found } => {
                write!(f, "session {session:?}: {recorded} facts recorded, {found} found")
            }
            Loss::Range { after, before } => {
                write!(f, "facts between {} and {} unreadable", key(after), key(before))
            }
            Loss::State { reason } => write!(f, "state.redb unreadable ({reason}): only the WAL was salvaged"),
            Loss::WalRecords { lsn_first, lsn_last } if lsn_first == lsn_last => {
                write!(f, "WAL record LSN {lsn_first} unreadable: its batch is lost, the records after it were kept")
            }
            Loss::WalRecords { lsn_first, lsn_last } => write!(
                f,
                "WAL records LSN {lsn_first}..={lsn_last} unreadable: their batches are lost, the records after them \
                 were kept"
            ),
            Loss::WalSegment { path, reason } => write!(f, "WAL segment {} unreadable: {reason}", path.display()),
        }
    }
}

/// What [`salvage`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SalvageReport {
    /// The new store's data directory.
    pub to: PathBuf,
    /// The new store's identity.
    pub store_id: StoreId,
    /// Facts copied from `state.redb` (checksums holding).
    pub facts_copied: u64,
    /// The applied LSN the damaged `state.redb` recorded, when readable.
    pub applied_lsn: Option<Lsn>,
    /// WAL records replayed on top, and their LSN range.
    pub wal_records_replayed: u64,
    /// The first and last LSN replayed.
    pub wal_lsn_range: Option<(Lsn, Lsn)>,
    /// An unreadable last record of the WAL that was left out (the remains
    /// of an unacknowledged write, or the last acknowledged record damaged).
    pub wal_torn_tail: Option<String>,
    /// Everything that could not be recovered.
    pub lost: Vec<Loss>,
    /// Damaged facts and sessions that a replayed WAL record wrote again,
    /// so nothing of them is lost.
    pub restored: Vec<Loss>,
    /// Sessions and facts the new store holds.
    pub sessions: u64,
    /// Facts the new store holds.
    pub facts: u64,
    /// The new store's last LSN.
    pub lsn_last: Lsn,
}

impl SalvageReport {
    /// True when nothing was lost.
    pub fn is_complete(&self) -> bool {
        self.lost.is_empty()
    }
}

/// Copies everything readable from the store `damaged` describes into a new
/// store in `to` (a directory that must not exist, or be empty), folds the
/// damaged store's WAL on top, and reports what could not be recovered. The
/// damaged store is not changed. The new store gets its own identity; its
/// WAL is started by its first open, wherever that open's configuration says
/// (never in the damaged store's WAL directory, which holds the damaged
/// store's segments).
///
/// # Examples
///
/// ```
/// use factwal::{salvage, Config, Store};
///
/// let dir = tempfile::tempdir()?;
/// let damaged = Config::new(dir.path().join("damaged"));
/// let store = Store::open(damaged.clone())?;
/// store.assert("s1", "risk", b"high")?;
/// let _ = store.close();
/// let rescued = dir.path().join("rescued");
/// let report = salvage(&damaged, &rescued)?;
/// assert!(report.is_complete());
/// let store = Store::open(Config::new(&rescued))?;
/// assert_eq!(store.fact("s1", "risk")?, Some(b"high".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// The damaged store is never changed. `InvalidArgument` when `to` is not
/// empty, or is the damaged store's data or WAL directory; `Config`;
/// `Locked` when a process holds either store; `Io` when a file cannot be
/// read or written; `ForeignSegment` when a segment is another store's;
/// `Redb` or `StateCorrupted` when the new store cannot be written;
/// `UnsupportedFormatVersion` for files of a newer factwal. A salvage that
/// fails may leave a partial store in `to` (its lock file, a temporary
/// state file): empty `to` before trying again. What was lost is in the
/// report, not an error.
pub fn salvage(damaged: &Config, to: &Path) -> Result<SalvageReport> {
    damaged.validate()?;
    let data_dir = &damaged.persistence.data_dir;
    if files::dir_state(data_dir, "data directory")? == DirState::Missing {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
        return Err(Error::io(data_dir, IoOp::Open, "data directory", source));
    }
    let _locks = lock_shared(damaged)?;
    check_destination(to, damaged)?;
    let cache_bytes = damaged.persistence.redb_cache_bytes as usize;
    let state_path = damaged.state_path();
    let record =
        Tables::open_unchanged(&state_path, cache_bytes).and_then(|tables| tables.record()).ok();
    let wal = read_wal(damaged, record.as_ref())?;

    crate::wal::io::ensure_durable_dir(&StdIo, to)?;
    let destination_lock = files::lock_exclusive(to)?;
    let store_id = StoreId::new_random();
    let final_path = to.join("state.redb");
    let temporary = to.join("state.redb.salvage");
    let outcome = build(&state_path, cache_bytes, record.as_ref(), wal, &temporary, store_id);
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
    };
    std::fs::rename(&temporary, &final_path)
        .map_err(|e| Error::io(&final_path, IoOp::Rename, "salvaged state", e))?;
    StdIo.sync_dir(to).map_err(|e| Error::io(to, IoOp::SyncDir, "salvaged store directory", e))?;
    drop(destination_lock);
    Ok(SalvageReport { to: to.to_path_buf(), ..report })
}

/// The damaged store's directories, locked shared: no writer meanwhile.
fn lock_shared(config: &Config) -> Result<Vec<File>> {
    let data_dir = &config.persistence.data_dir;
    let mut locks: Vec<File> = files::lock_shared(data_dir)?.into_iter().collect();
    let wal_dir = config.wal_dir();
    if files::dir_state(&wal_dir, "WAL directory")? == DirState::Directory
        && !files::same_dir(&wal_dir, data_dir)
    {
        locks.extend(files::lock_shared(&wal_dir)?);
    }
    Ok(locks)
}

/// The destination must be new (or an empty directory), and not the damaged
/// store's own directories.
fn check_destination(to: &Path, damaged: &Config) -> Result<()> {
    let refuse =
        |why: &str| Error::InvalidArgument(format!("salvage destination {}: {why}", to.display()));
    if files::dir_state(to, "salvage destination")? == DirState::Directory {
        let mut entries = std::fs::read_dir(to)
            .map_err(|e| Error::io(to, IoOp::List, "salvage destination", e))?;
        if entries.next().is_some() {
            return Err(refuse("is not empty (salvage makes a new store; give a new directory)"));
        }
        if files::same_dir(to, &damaged.persistence.data_dir)
            || files::same_dir(to, &damaged.wal_dir())
        {
            return Err(refuse("is the damaged store's own directory"));
        }
    }
    Ok(())
}

/// What the damaged WAL gives: the records to replay, in LSN order, and
/// what could not be read.
struct WalHarvest {
    records: Vec<RecoveredRecord<Batch>>,
    torn_tail: Option<String>,
    lost: Vec<Loss>,
}

/// Every readable record of the WAL after `applied_lsn` (all of them when
/// `state.redb` cannot say), damage skipped rather than stopped at: unlike a
/// point-in-time open, which keeps only the prefix before the first damage,
/// salvage keeps every batch it can read and names the LSNs it could not.
/// Replaying all but a damaged batch gives the state the store would have
/// had if that one write had failed: each fact holds its last write that
/// could be read. The LSN chain says exactly which batches are missing.
fn read_wal(config: &Config, record: Option<&StoreRecord>) -> Result<WalHarvest> {
    let wal_dir = config.wal_dir();
    let store_id = match record {
        Some(record) => record.store_id,
        None => store_of_segments(&wal_dir)?,
    };
    let mut harvest = WalHarvest { records: Vec::new(), torn_tail: None, lost: Vec::new() };
    let mut segments = Vec::new();
    for number in segment_numbers_in(&wal_dir)? {
        let path = wal_dir.join(segment_file_name(number));
        match read_segment(config, &path, number, store_id)? {
            Ok(segment) => {
                harvest.torn_tail = segment.garbage.clone();
                segments.push(segment);
            }
            Err(reason) => harvest.lost.push(Loss::WalSegment { path, reason }),
        }
    }
    let (records, gaps) = in_lsn_order(segments, record.map(|r| r.applied_lsn));
    harvest.records = records;
    harvest.lost.extend(gaps);
    Ok(harvest)
}

/// What salvage reads of one segment.
struct SegmentRead {
    header: SegmentHeader,
    records: Vec<RecoveredRecord<Batch>>,
    /// Non-zero bytes after its last readable record, described.
    garbage: Option<String>,
}

/// Every readable record of one segment, or why none can be read. Another
/// store's segment, or one of a newer format, stops salvage (an error).
fn read_segment(
    config: &Config,
    path: &Path,
    number: u64,
    store_id: Option<StoreId>,
) -> Result<std::result::Result<SegmentRead, String>> {
    let bytes = match StdIo.read(path) {
        Ok(bytes) => bytes,
        Err(error) => return Ok(Err(error.to_string())),
    };
    let bytes: &[u8] = (*bytes).as_ref();
    let header = match SegmentHeader::decode(bytes) {
        Ok(header) if header.number == number => header,
        Ok(_) => return Ok(Err("its header names another segment number".into())),
        Err(HeaderError::NewerVersion(found)) => {
            return Err(Error::UnsupportedFormatVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(HeaderError::Invalid) => return Ok(Err("bad segment header".into())),
    };
    if header.store_id != store_id {
        let state = config.state_path();
        let (path, segment_store) = (path.to_path_buf(), header.store_id);
        return Err(Error::ForeignSegment { path, segment_store, state, store: store_id });
    }
    let body = bytes.get(SEGMENT_HEADER_BYTES as usize..).unwrap_or_default();
    let found = readable_records(body, &header);
    let records = found
        .iter()
        .filter_map(|&(offset, lsn, payload)| {
            let batch = Batch::decode(payload)?;
            let offset = offset + SEGMENT_HEADER_BYTES;
            Some(RecoveredRecord {
                lsn,
                segment_number: number,
                offset,
                payload: batch,
                payload_bytes: payload.len() as u64,
            })
        })
        .collect();
    let end = found.last().map_or(0, |&(offset, _, payload)| offset as usize + 32 + payload.len());
    let tail = body.get(end..).unwrap_or_default();
    let garbage = tail.iter().rposition(|&b| b != 0).map(|last| {
        format!(
            "{} bytes at offset {} of {}",
            last + 1,
            end as u64 + SEGMENT_HEADER_BYTES,
            path.display()
        )
    });
    Ok(Ok(SegmentRead { header, records, garbage }))
}

/// The records to replay (after `applied_lsn`, all when unknown), in LSN
/// order, and the LSN ranges missing among them. A segment's records at or
/// above the next segment's first LSN were abandoned (a write that failed
/// for lack of space, never acknowledged): the next segment holds the log
/// from there.
fn in_lsn_order(
    segments: Vec<SegmentRead>,
    applied: Option<Lsn>,
) -> (Vec<RecoveredRecord<Batch>>, Vec<Loss>) {
    let firsts: Vec<Lsn> = segments.iter().map(|segment| segment.header.lsn_first).collect();
    let mut by_lsn: BTreeMap<Lsn, RecoveredRecord<Batch>> = BTreeMap::new();
    for (index, segment) in segments.into_iter().enumerate() {
        let next_first = firsts.get(index + 1).copied().unwrap_or(Lsn::MAX);
        for record in segment.records.into_iter().filter(|record| record.lsn < next_first) {
            by_lsn.insert(record.lsn, record);
        }
    }
    by_lsn.retain(|&lsn, _| applied.is_none_or(|applied| lsn > applied));
    let mut gaps = Vec::new();
    let mut expected = applied.map(|applied| applied + 1).or_else(|| by_lsn.keys().next().copied());
    for &lsn in by_lsn.keys() {
        if let Some(first) = expected.filter(|&first| first < lsn) {
            gaps.push(Loss::WalRecords { lsn_first: first, lsn_last: lsn - 1 });
        }
        expected = Some(lsn + 1);
    }
    (by_lsn.into_values().collect(), gaps)
}

/// Numbers of the segment files in `dir`, sorted (none when it is missing).
fn segment_numbers_in(dir: &Path) -> Result<Vec<u64>> {
    let mut numbers: Vec<u64> = match StdIo.list(dir) {
        Ok(names) => names.iter().filter_map(|name| parse_segment_file_name(name)).collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(Error::io(dir, IoOp::List, "WAL directory", error)),
    };
    numbers.sort_unstable();
    Ok(numbers)
}

/// When `state.redb` cannot say whose the WAL is: the first readable
/// segment header does (`None`: format 1, or no segment).
fn store_of_segments(wal_dir: &Path) -> Result<Option<StoreId>> {
    for number in segment_numbers_in(wal_dir)? {
        let path = wal_dir.join(segment_file_name(number));
        let Ok(bytes) = StdIo.read(&path) else { continue };
        if let Ok(header) = SegmentHeader::decode((*bytes).as_ref()) {
            return Ok(header.store_id);
        }
    }
    Ok(None)
}

/// Writes the new store's `state.redb` at `temporary`.
fn build(
    state_path: &Path,
    cache_bytes: usize,
    record: Option<&StoreRecord>,
    wal: WalHarvest,
    temporary: &Path,
    store_id: StoreId,
) -> Result<SalvageReport> {
    let (backend, _) = StdStateIo
        .open_backend(temporary)
        .map_err(|e| Error::io(temporary, IoOp::Create, "salvaged state", e))?;
    let tables = Tables::create(temporary, backend, cache_bytes, store_id)?;
    let mut writer =
        ChunkWriter { tables: &tables, generation: Generation::default(), value_bytes: 0 };
    let harvest = harvest_state(state_path, cache_bytes, record, &mut writer)?;
    writer.flush()?;

    let mut report = SalvageReport {
        to: PathBuf::new(),
        store_id,
        facts_copied: harvest.facts_copied,
        applied_lsn: record.map(|r| r.applied_lsn),
        wal_records_replayed: wal.records.len() as u64,
        wal_lsn_range: wal
            .records
            .first()
            .zip(wal.records.last())
            .map(|(first, last)| (first.lsn, last.lsn)),
        wal_torn_tail: wal.torn_tail,
        lost: Vec::new(),
        restored: Vec::new(),
        sessions: 0,
        facts: 0,
        lsn_last: 0,
    };
    let lsn_last = wal.records.last().map_or(record.map_or(0, |r| r.applied_lsn), |last| last.lsn);
    let mut replayed = Generation::default();
    for record in wal.records {
        replayed.apply_after_gap(record.lsn, record.payload, record.payload_bytes);
    }
    let mut losses = harvest.losses;
    losses.extend(wal.lost);
    let (lost, restored) = settle(losses, &replayed);
    report.lost = lost;
    report.restored = restored;
    tables.fold(&[Arc::new(replayed)], lsn_last, None)?;
    let (sessions, facts) = tables.read("counting the salvaged store", |snapshot| {
        let sessions = snapshot.sessions()?;
        Ok((sessions.len() as u64, sessions.values().sum()))
    })?;
    report.sessions = sessions;
    report.facts = facts;
    report.lsn_last = lsn_last;
    tables.close()?;
    let file = std::fs::File::open(temporary)
        .map_err(|e| Error::io(temporary, IoOp::Open, "salvaged state", e))?;
    file.sync_all().map_err(|e| Error::io(temporary, IoOp::Sync, "salvaged state", e))?;
    Ok(report)
}

/// Gathers copied facts into generations and folds them into the new store
/// a chunk at a time.
struct ChunkWriter<'a> {
    tables: &'a Tables,
    generation: Generation,
    value_bytes: usize,
}

impl ChunkWriter<'_> {
    fn put(&mut self, session: &str, fact: &str, value: Vec<u8>) -> Result<()> {
        self.value_bytes += value.len() + session.len() + fact.len();
        let delta = self.generation.sessions.entry(session.to_string()).or_default();
        delta.facts.insert(fact.to_string(), Some(value));
        self.generation.records += 1;
        if self.value_bytes >= CHUNK_VALUE_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.generation.records == 0 {
            return Ok(());
        }
        let generation = std::mem::take(&mut self.generation);
        self.value_bytes = 0;
        self.tables.fold(&[Arc::new(generation)], 0, None).map(|_| ())
    }
}

/// What reading the damaged `state.redb` gave.
#[derive(Default)]
struct StateHarvest {
    facts_copied: u64,
    losses: Vec<Loss>,
}

/// Reads every readable fact of the damaged `state.redb` into `writer`:
/// forward from the start until damage stops the walk, then around the
/// damage, then what the sessions table says is still missing.
fn harvest_state(
    state_path: &Path,
    cache_bytes: usize,
    record: Option<&StoreRecord>,
    writer: &mut ChunkWriter<'_>,
) -> Result<StateHarvest> {
    let open = || Tables::open_unchanged(state_path, cache_bytes);
    let tables = match open() {
        Ok(tables) => tables,
        Err(error) => {
            let losses = vec![Loss::State { reason: error.to_string() }];
            return Ok(StateHarvest { facts_copied: 0, losses });
        }
    };
    let mut copier = Copier { writer, found: BTreeMap::new(), harvest: StateHarvest::default() };
    if record.is_none() {
        let reason = "its store record is unreadable".into();
        copier.harvest.losses.push(Loss::State { reason });
    }
    let recorded = tables.read("reading the sessions table", |snapshot| snapshot.sessions()).ok();
    let forward = walk(&tables, None, false, |s, f, v| copier.copy(s, f, v).map(|()| true))?;
    drop(tables);
    if !forward.reached_end {
        walk_around_damage(&open, recorded.as_ref(), forward.last, &mut copier)?;
    }
    copier.note_sessions_short(recorded.as_ref());
    Ok(copier.harvest)
}

/// Copies facts into the new store, counting them by session, and records
/// each fact whose value cannot be read.
struct Copier<'w, 'a> {
    writer: &'w mut ChunkWriter<'a>,
    found: BTreeMap<String, u64>,
    harvest: StateHarvest,
}

impl Copier<'_, '_> {
    fn copy(&mut self, session: &str, fact: &str, value: Result<Vec<u8>>) -> Result<()> {
        *self.found.entry(session.to_string()).or_default() += 1;
        match value {
            Ok(value) => {
                self.harvest.facts_copied += 1;
                self.writer.put(session, fact, value)
            }
            Err(_) => {
                let loss = Loss::Fact { session: session.into(), fact: fact.into() };
                self.harvest.losses.push(loss);
                Ok(())
            }
        }
    }

    /// Every session the sessions table counts more facts for than were
    /// found is a loss.
    fn note_sessions_short(&mut self, recorded: Option<&BTreeMap<String, u64>>) {
        for (session, count) in recorded.into_iter().flatten() {
            let seen = self.found.get(session).copied().unwrap_or(0);
            if seen < *count {
                let session = session.clone();
                self.harvest.losses.push(Loss::Session { session, recorded: *count, found: seen });
            }
        }
    }
}

/// After a forward walk stopped at damage past `after` (the last key read):
/// backward from the end, on a fresh handle, down to that key; then every
/// session the sessions table names in the stretch between, on its own, so
/// that a damaged page only loses what sits behind it. The stretch between
/// is a loss.
fn walk_around_damage(
    open: &dyn Fn() -> Result<Tables>,
    recorded: Option<&BTreeMap<String, u64>>,
    after: Option<(String, String)>,
    copier: &mut Copier<'_, '_>,
) -> Result<()> {
    let above =
        |s: &str, f: &str| after.as_ref().is_none_or(|(a, b)| (s, f) > (a.as_str(), b.as_str()));
    let backward = walk(&open()?, None, true, |s, f, v| {
        if above(s, f) {
            copier.copy(s, f, v).map(|()| true)
        } else {
            Ok(false)
        }
    })?;
    let before = backward.last;
    let below =
        |s: &str, f: &str| before.as_ref().is_none_or(|(a, b)| (s, f) < (a.as_str(), b.as_str()));
    for session in sessions_within(recorded, after.as_ref(), before.as_ref())
        .into_iter()
        .take(PROBED_SESSIONS_MAX)
    {
        let start = match &after {
            Some((s, f)) if *s == session => (s.clone(), f.clone()),
            _ => (session.clone(), String::new()),
        };
        walk(&open()?, Some((&start.0, &start.1)), false, |s, f, v| {
            if s != session || !below(s, f) {
                return Ok(false);
            }
            copier.copy(s, f, v).map(|()| true)
        })?;
    }
    copier.harvest.losses.push(Loss::Range { after, before });
    Ok(())
}

/// Recorded sessions from the session of `after` to that of `before`
/// (every one when a side is unknown).
fn sessions_within(
    recorded: Option<&BTreeMap<String, u64>>,
    after: Option<&(String, String)>,
    before: Option<&(String, String)>,
) -> BTreeSet<String> {
    let Some(recorded) = recorded else { return BTreeSet::new() };
    recorded
        .keys()
        .filter(|session| after.is_none_or(|(s, _)| session.as_str() >= s.as_str()))
        .filter(|session| before.is_none_or(|(s, _)| session.as_str() <= s.as_str()))
        .cloned()
        .collect()
}

/// How a walk over the facts ended.
struct Walked {
    /// The last key read.
    last: Option<(String, String)>,
    /// False when damage (an error or a contained panic) stopped it.
    reached_end: bool,
}

/// Walks facts from one end (or after `from`) while `visit` returns true.
/// A damaged page ends it early, and latches the handle: the caller opens a
/// fresh one for the next walk. An error from `visit` (writing the new
/// store) is salvage's own and returned.
fn walk(
    tables: &Tables,
    from: Option<(&str, &str)>,
    reverse: bool,
    mut visit: impl FnMut(&str, &str, Result<Vec<u8>>) -> Result<bool>,
) -> Result<Walked> {
    let mut last: Option<(String, String)> = None;
    let mut failure = None;
    let outcome = tables.read("salvaging facts", |snapshot| {
        snapshot.walk_facts(from, reverse, |session, fact, value| {
            match visit(session, fact, value) {
                Ok(go_on) => {
                    if go_on {
                        last = Some((session.to_string(), fact.to_string()));
                    }
                    go_on
                }
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }
        })
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(Walked { last, reached_end: outcome.is_ok() }),
    }
}

/// Splits losses into those still lost after the WAL replay and those the
/// replay wrote again.
fn settle(losses: Vec<Loss>, replayed: &Generation) -> (Vec<Loss>, Vec<Loss>) {
    let rewritten = |session: &str, fact: Option<&str>| match replayed.sessions.get(session) {
        Some(delta) => delta.dropped || fact.is_some_and(|fact| delta.facts.contains_key(fact)),
        None => false,
    };
    losses.into_iter().partition(|loss| match loss {
        Loss::Fact { session, fact } => !rewritten(session, Some(fact)),
        Loss::Session { session, .. } => !rewritten(session, None),
        _ => true,
    })
}
