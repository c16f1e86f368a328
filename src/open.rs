//! Opening a store read-write: the order of checks and changes that makes a
//! refused open change nothing on disk, and an accepted one give back every
//! acknowledged write.
//!
//! 1. Lock the data directory, and the WAL directory when it is another one.
//! 2. Read what `state.redb` says (identity, applied LSN, where its WAL
//!    lives, whether the last close was clean) without changing a byte: a
//!    crashed file is repaired in memory only.
//! 3. Decide whether the WAL directory in force can be this store's WAL
//!    ([`judge_wal`], a decision table), and scan it: every segment must
//!    belong to the store, be readable by this build, and be whole.
//! 4. Only then open redb read-write, make the repairs recovery asked for,
//!    fold the unfolded records, remove the old segments, and upgrade a
//!    format-1 store.
//!
//! The store then starts the WAL (a new segment) and records, in redb, that
//! the WAL at this directory is in use.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::Batch;
use crate::config::{Config, RecoveryMode};
use crate::error::{Error, IoOp, Lsn, Result};
use crate::files::{self, DirState};
use crate::identity::StoreId;
use crate::report::RecoveryReport;
use crate::state::{Generation, StateIo, StoreRecord, Tables, WalMark};
use crate::wal::io::WalIo;
use crate::wal::recovery::{self, Owner, Recovered, Repair, ScanOptions};
use crate::wal::segment::parse_segment_file_name;

/// What a read-write open found and made ready.
pub(crate) struct Opened {
    pub(crate) tables: Tables,
    /// The directory locks, held while the store is open.
    pub(crate) locks: Vec<File>,
    pub(crate) recovery: RecoveryReport,
    /// The last LSN of the log (0 when nothing was ever written).
    pub(crate) lsn_last: Lsn,
    /// The number the next segment takes.
    pub(crate) number_next: u64,
    pub(crate) store_id: StoreId,
}

/// Opens (or creates) the store described by `config`; see the module
/// documentation for the order of steps.
pub(crate) fn open_store(
    config: &Config,
    io: &dyn WalIo,
    state_io: &dyn StateIo,
) -> Result<Opened> {
    let checked = check(config, io)?;
    recover(config, io, state_io, checked)
}

/// Everything decided before anything on disk changes (but the data
/// directory and its lock file, created when missing).
struct Checked {
    locks: Vec<File>,
    wal_exists: bool,
    scan: ScanOptions,
    early: Recovered<Batch>,
    verdict: Verdict,
    new_id: StoreId,
}

/// Steps 1 to 3: locks, what `state.redb` says, the decision table and the
/// scan. A refusal here changes nothing on disk.
fn check(config: &Config, io: &dyn WalIo) -> Result<Checked> {
    config.validate()?;
    let data_dir = &config.persistence.data_dir;
    if files::dir_state(data_dir, "data directory")? == DirState::Missing {
        crate::wal::io::ensure_durable_dir(io, data_dir)?;
    }
    let mut locks = vec![files::lock_exclusive(data_dir)?];
    let wal_dir = config.wal_dir();
    let wal_exists = files::dir_state(&wal_dir, "WAL directory")? == DirState::Directory;
    if wal_exists && !files::same_dir(&wal_dir, data_dir) {
        locks.push(files::lock_exclusive(&wal_dir)?);
    }
    let state_path = config.state_path();
    let record = read_record_unchanged(&state_path, config.persistence.redb_cache_bytes as usize)?;
    let mode = config.persistence.recovery_mode;
    let verdict = judge_wal(&WalFacts::gather(io, record.as_ref(), &wal_dir, mode)?);
    if let Verdict::Refuse(detail) = &verdict {
        let (wal_dir, state, detail) = (wal_dir.clone(), state_path.clone(), detail.clone());
        return Err(Error::WalMismatch { wal_dir, state, detail });
    }
    let new_id = StoreId::new_random();
    let scan = ScanOptions {
        applied_lsn: Some(record.as_ref().map_or(0, |r| r.applied_lsn)),
        mode,
        keep_folded: false,
        owner: owner_of(record.as_ref(), new_id),
        state_path,
    };
    let early = recovery::scan(io, &wal_dir, &scan, Batch::decode)?;
    Ok(Checked { locks, wal_exists, scan, early, verdict, new_id })
}

/// Step 4: redb opened for writing, the repairs made, the unfolded records
/// folded, the old segments removed, a format-1 store upgraded.
fn recover(
    config: &Config,
    io: &dyn WalIo,
    state_io: &dyn StateIo,
    checked: Checked,
) -> Result<Opened> {
    let Checked { mut locks, wal_exists, scan, early, verdict, new_id } = checked;
    let (data_dir, wal_dir, state_path) =
        (&config.persistence.data_dir, config.wal_dir(), config.state_path());
    let cache_bytes = config.persistence.redb_cache_bytes as usize;
    let mut tables = open_state(io, state_io, data_dir, &state_path, cache_bytes, new_id)?;
    let now = tables.record()?;
    let recovered = scan_again_if_redb_moved_on(io, &wal_dir, scan, early, now.applied_lsn)?;
    apply_repairs(io, &wal_dir, &recovered)?;
    let mut recovery = RecoveryReport::from_repairs(&recovered.repairs);
    recovery.records_replayed = recovered.records.len() as u64;
    recovery.segments_removed = recovered.segments.len();
    recovery.wal_moved_from = report_verdict(verdict, &wal_dir, &state_path);
    // The WAL location recorded with the clean mark: where it was, unless
    // this open moves it.
    let recorded_dir = now.wal_dir.clone().unwrap_or_else(|| absolute(&wal_dir));
    let (lsn_last, number_next) =
        replay(io, &wal_dir, &tables, recovered, now.wal_in_use, now.wal_epoch, &recorded_dir)?;
    let store_id = upgrade_if_format_1(&mut tables, new_id, &state_path)?;
    if config.persistence.wal_enabled && !wal_exists {
        create_wal_dir(io, &wal_dir, data_dir, &mut locks)?;
    }
    Ok(Opened { tables, locks, recovery, lsn_last, number_next, store_id })
}

/// The early scan judged records against the applied LSN read before redb
/// was opened for writing. The two agree unless redb's repair on a real open
/// came out differently from the one made in memory; then the WAL is scanned
/// again against what redb now holds, so no record is judged by a stale LSN.
fn scan_again_if_redb_moved_on(
    io: &dyn WalIo,
    wal_dir: &Path,
    scan: ScanOptions,
    early: Recovered<Batch>,
    applied_lsn: Lsn,
) -> Result<Recovered<Batch>> {
    if scan.applied_lsn == Some(applied_lsn) {
        return Ok(early);
    }
    let options = ScanOptions { applied_lsn: Some(applied_lsn), ..scan };
    recovery::scan(io, wal_dir, &options, Batch::decode)
}

/// Says what the WAL verdict means for this open, and returns where the WAL
/// was when it moved.
fn report_verdict(verdict: Verdict, wal_dir: &Path, state_path: &Path) -> Option<PathBuf> {
    match verdict {
        Verdict::WithoutWal => {
            tracing::error!(target: "factwal::recovery", wal_dir = %wal_dir.display(),
            state = %state_path.display(),
            "point-in-time recovery: the WAL is missing although the last close was not clean; opening with \
             state.redb alone, so writes acknowledged after its applied LSN are lost");
            None
        }
        Verdict::Moved(previous) => {
            tracing::info!(target: "factwal::recovery", from = %previous.display(), to = %wal_dir.display(),
                "WAL directory changed since the last open (the store was moved or copied, or wal_path changed)");
            Some(previous)
        }
        Verdict::Proceed | Verdict::Refuse(_) => None,
    }
}

/// Gives a format-1 store (no identity yet) its identity, once everything
/// it held is folded; returns the store's identity.
fn upgrade_if_format_1(tables: &mut Tables, new_id: StoreId, state_path: &Path) -> Result<StoreId> {
    if tables.format_version() < crate::state::STATE_FORMAT_VERSION {
        tables.upgrade(new_id)?;
        tracing::info!(target: "factwal::recovery", path = %state_path.display(), store_id = %new_id,
            "state.redb upgraded from format 1");
    }
    tables.record()?.store_id.ok_or_else(|| Error::StateCorrupted {
        path: state_path.to_path_buf(),
        kind: crate::error::StateDamage::BadStoreRecord,
        detail: "no store identity after the upgrade".into(),
    })
}

/// Creates the WAL directory durably, and locks it when it is not the data
/// directory (which is locked already).
fn create_wal_dir(
    io: &dyn WalIo,
    wal_dir: &Path,
    data_dir: &Path,
    locks: &mut Vec<File>,
) -> Result<()> {
    crate::wal::io::ensure_durable_dir(io, wal_dir)?;
    if !files::same_dir(wal_dir, data_dir) {
        locks.push(files::lock_exclusive(wal_dir)?);
    }
    Ok(())
}

/// The WAL directory as recorded in `state.redb`: absolute, with symbolic
/// links resolved when it exists.
pub(crate) fn absolute(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

/// What `state.redb` says, read without changing a byte of it; `None` when
/// there is no `state.redb` (a new store).
pub(crate) fn read_record_unchanged(
    state_path: &Path,
    cache_bytes: usize,
) -> Result<Option<StoreRecord>> {
    match std::fs::metadata(state_path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(state_path, IoOp::Open, "state", error)),
        Ok(_) => {}
    }
    let tables = Tables::open_unchanged(state_path, cache_bytes)?;
    let record = tables.record();
    let _ = tables.close();
    record.map(Some)
}

/// What decides whether the WAL directory in force can be the store's WAL.
#[derive(Debug)]
pub(crate) struct WalFacts<'a> {
    /// What `state.redb` says; `None` when there is none.
    pub(crate) record: Option<&'a StoreRecord>,
    /// Segment files in the WAL directory in force.
    pub(crate) wal_segments: usize,
    /// The recorded WAL directory, when it is not the one in force.
    pub(crate) recorded_elsewhere: Option<PathBuf>,
    pub(crate) mode: RecoveryMode,
}

impl<'a> WalFacts<'a> {
    pub(crate) fn gather(
        io: &dyn WalIo,
        record: Option<&'a StoreRecord>,
        wal_dir: &Path,
        mode: RecoveryMode,
    ) -> Result<WalFacts<'a>> {
        let wal_segments = count_segments(io, wal_dir)?;
        let recorded = record.and_then(|record| record.wal_dir.clone());
        let recorded_elsewhere = recorded.filter(|recorded| !same_place(recorded, wal_dir));
        Ok(WalFacts { record, wal_segments, recorded_elsewhere, mode })
    }
}

/// True when `recorded` (absolute, as `state.redb` keeps it) names the same
/// directory as `dir`.
fn same_place(recorded: &Path, dir: &Path) -> bool {
    files::same_dir(recorded, dir) || recorded == absolute(dir)
}

/// Segment files in `dir` (0 when it does not exist).
fn count_segments(io: &dyn WalIo, dir: &Path) -> Result<usize> {
    match io.list(dir) {
        Ok(names) => {
            Ok(names.iter().filter(|name| parse_segment_file_name(name).is_some()).count())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(Error::io(dir, IoOp::List, "WAL directory", error)),
    }
}

/// The outcome of [`judge_wal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on; the scan checks that every segment is the store's.
    Proceed,
    /// Go on, with the WAL in another directory than `state.redb` recorded
    /// (which held nothing redb lacks).
    Moved(PathBuf),
    /// The WAL is missing while acknowledged writes may wait there, and the
    /// operator chose point-in-time recovery: open from redb's state alone.
    WithoutWal,
    /// It cannot be the store's WAL: why, and what to do.
    Refuse(String),
}

impl Verdict {
    /// Proceeds (with the directory the WAL moved from, if it moved) or
    /// refuses with `Error::WalMismatch`.
    pub(crate) fn into_result(self, wal_dir: &Path, state_path: &Path) -> Result<Option<PathBuf>> {
        match self {
            Verdict::Proceed | Verdict::WithoutWal => Ok(None),
            Verdict::Moved(from) => Ok(Some(from)),
            Verdict::Refuse(detail) => Err(Error::WalMismatch {
                wal_dir: wal_dir.to_path_buf(),
                state: state_path.to_path_buf(),
                detail,
            }),
        }
    }
}

/// The decision table for the WAL directory in force, checked before
/// anything changes. The first row that applies decides:
///
/// | state.redb | WAL directory in force | verdict |
/// |---|---|---|
/// | none (a new store) | holds segments | refuse: a WAL is read only with its own state.redb |
/// | WAL in use (last close not clean) | holds no segment | refuse; point-in-time: open without it |
/// | WAL recorded in another directory | any | proceed, the WAL moved |
/// | otherwise | any | proceed |
///
/// Then the scan checks every segment against what `state.redb` says (see
/// `recovery::Owner`): another store's segment, one written by another
/// opening while the WAL was in use, or one holding records redb lacks
/// after a clean close, is refused. Paths only name things in messages:
/// whether a segment belongs is decided by what it carries, so a store
/// copied whole (`cp -a`) opens, and two copies never mix.
pub(crate) fn judge_wal(facts: &WalFacts<'_>) -> Verdict {
    let Some(record) = facts.record else {
        if facts.wal_segments > 0 {
            return Verdict::Refuse(format!(
                "it holds {} segment(s) but there is no state.redb: a WAL is only read with the state.redb of \
                 its own store (is the data directory right?)",
                facts.wal_segments
            ));
        }
        return Verdict::Proceed;
    };
    if record.wal_in_use && facts.wal_segments == 0 {
        if facts.mode == RecoveryMode::PointInTime {
            return Verdict::WithoutWal;
        }
        let recorded = record
            .wal_dir
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |d| d.display().to_string());
        return Verdict::Refuse(format!(
            "the last close was not clean, so acknowledged writes may wait in the WAL (last used at \
             {recorded}), but this directory holds no segment: give the right --wal-path (persistence.wal_path); \
             if that WAL is truly lost, recovery_mode = \"point-in-time\" opens from state.redb alone, \
             losing what the WAL held"
        ));
    }
    match &facts.recorded_elsewhere {
        Some(recorded) => Verdict::Moved(recorded.clone()),
        None => Verdict::Proceed,
    }
}

/// Which segments the scan accepts, from what `state.redb` says (`None`: a
/// new store, whose identity will be `new_id`).
pub(crate) fn owner_of(record: Option<&StoreRecord>, new_id: StoreId) -> Owner {
    match record {
        None => Owner::Idle { store_id: new_id, epoch: 0 },
        Some(StoreRecord { store_id: None, .. }) => Owner::Format1,
        Some(StoreRecord { store_id: Some(store_id), wal_in_use: true, wal_epoch, .. }) => {
            Owner::InUse { store_id: *store_id, epoch: *wal_epoch }
        }
        Some(StoreRecord { store_id: Some(store_id), wal_epoch, .. }) => {
            Owner::Idle { store_id: *store_id, epoch: *wal_epoch }
        }
    }
}

/// Opens `state.redb`, creating it first if missing. A new database is
/// initialised under a temporary name, closed, renamed into place and its
/// directory synced: a crash while redb writes its first pages must never
/// leave a half-made `state.redb` that no later open can read.
fn open_state(
    io: &dyn WalIo,
    state_io: &dyn StateIo,
    data_dir: &Path,
    state_path: &Path,
    cache_bytes: usize,
    new_id: StoreId,
) -> Result<Tables> {
    let name = state_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let names =
        io.list(data_dir).map_err(|e| Error::io(data_dir, IoOp::List, "data directory", e))?;
    if !names.contains(&name) {
        let temporary = data_dir.join(format!("{name}.tmp"));
        if names.contains(&format!("{name}.tmp")) {
            io.remove(&temporary)
                .map_err(|e| Error::io(&temporary, IoOp::Remove, "half-made state file", e))?;
        }
        let (backend, _) = state_io
            .open_backend(&temporary)
            .map_err(|e| Error::io(&temporary, IoOp::Create, "state file", e))?;
        Tables::create(&temporary, backend, cache_bytes, new_id)?.close()?;
        io.rename(&temporary, state_path)
            .map_err(|e| Error::io(state_path, IoOp::Rename, "new state file into place", e))?;
        // The new entry must be durable before any WAL segment is removed
        // on the strength of what the file holds.
        io.sync_dir(data_dir)
            .map_err(|e| Error::io(data_dir, IoOp::SyncDir, "data directory", e))?;
    }
    let (backend, _) = state_io
        .open_backend(state_path)
        .map_err(|e| Error::io(state_path, IoOp::Open, "state file", e))?;
    Tables::open(state_path, backend, cache_bytes)
}

/// Makes the repairs recovery asked for durable, before anything else
/// changes: zero a torn tail; for point-in-time, zero the rest of the
/// segment holding the corruption and remove every later segment. Temporary
/// files of interrupted segment creations go too.
fn apply_repairs(io: &dyn WalIo, wal_dir: &Path, recovered: &Recovered<Batch>) -> Result<()> {
    for repair in &recovered.repairs {
        match repair {
            Repair::TornTail { path, offset, bytes } => {
                tracing::warn!(target: "factwal::recovery", file = %path.display(), offset, bytes_dropped = bytes,
                    "unreadable last record dropped: the remains of a write a crash cut short before it was \
                     acknowledged, or (rarely) the last acknowledged record damaged later");
                zero_range(io, path, *offset, *bytes)?;
            }
            Repair::DropAfter { corruption, removed_segments, dropped } => {
                tracing::error!(target: "factwal::recovery", corruption = %corruption,
                    removed_segments = removed_segments.len(), dropped = %dropped,
                    "point-in-time recovery: keeping the valid prefix, dropping everything after it");
                if let Error::Corrupted { path, offset, .. } = &**corruption {
                    if recovered.segments.iter().any(|segment| &segment.path == path) {
                        let file_bytes = io
                            .open(path)
                            .and_then(|f| f.len_bytes())
                            .map_err(|e| Error::io(path, IoOp::Stat, "", e))?;
                        zero_range(io, path, *offset, file_bytes.saturating_sub(*offset))?;
                    }
                }
                for path in removed_segments {
                    io.remove(path).map_err(|e| {
                        Error::io(path, IoOp::Remove, "segment after corruption", e)
                    })?;
                }
            }
        }
    }
    for path in &recovered.temporary_files {
        io.remove(path).map_err(|e| Error::io(path, IoOp::Remove, "temporary segment", e))?;
    }
    if !recovered.repairs.is_empty() || !recovered.temporary_files.is_empty() {
        io.sync_dir(wal_dir).map_err(|e| Error::io(wal_dir, IoOp::SyncDir, "WAL directory", e))?;
    }
    Ok(())
}

fn zero_range(io: &dyn WalIo, path: &Path, offset: u64, bytes: u64) -> Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let file = io.open(path).map_err(|e| Error::io(path, IoOp::Open, "segment for repair", e))?;
    let zeros = vec![0u8; bytes.min(CHUNK_BYTES) as usize];
    let mut done = 0;
    while done < bytes {
        let chunk = (bytes - done).min(CHUNK_BYTES);
        file.write_at(offset + done, &zeros[..chunk as usize])
            .map_err(|e| Error::io(path, IoOp::Write, "zeros over the torn tail", e))?;
        done += chunk;
    }
    file.sync_data().map_err(|e| Error::io(path, IoOp::Sync, "repaired segment", e))
}

/// Folds the recovered records into redb in one transaction, which also
/// clears the "WAL in use" mark (redb now holds everything the WAL did),
/// then removes the segments that held them. Returns the last LSN and the
/// number for the next segment.
fn replay(
    io: &dyn WalIo,
    wal_dir: &Path,
    tables: &Tables,
    recovered: Recovered<Batch>,
    wal_in_use: bool,
    wal_epoch: u32,
    recorded_dir: &Path,
) -> Result<(Lsn, u64)> {
    let number_next = recovered.segments.last().map_or(1, |segment| segment.header.number + 1);
    let replayed = recovered.records.len();
    // The mark is cleared before any segment is removed: a crash between the
    // removals and the next segment's creation must not leave "in use" with
    // an empty WAL, which the next open would refuse.
    if replayed > 0 || wal_in_use {
        let mut generation = Generation::default();
        for record in recovered.records {
            generation.apply(record.lsn, record.payload, record.payload_bytes);
        }
        let lsn = if replayed > 0 { generation.lsn_last } else { recovered.lsn_last };
        let mark = WalMark { dir: recorded_dir, in_use: false, epoch: wal_epoch };
        tables.fold(&[Arc::new(generation)], lsn, Some(mark))?;
        if replayed > 0 {
            tracing::info!(target: "factwal::recovery", records = replayed, lsn_last = lsn, "replayed WAL into redb");
        }
    }
    for segment in &recovered.segments {
        io.remove(&segment.path)
            .map_err(|e| Error::io(&segment.path, IoOp::Remove, "replayed segment", e))?;
    }
    if !recovered.segments.is_empty() {
        io.sync_dir(wal_dir).map_err(|e| Error::io(wal_dir, IoOp::SyncDir, "WAL directory", e))?;
    }
    Ok((recovered.lsn_last, number_next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wal_dir: Option<&str>, wal_in_use: bool) -> StoreRecord {
        StoreRecord {
            format_version: 2,
            store_id: StoreId::from_u64(7),
            applied_lsn: 10,
            wal_dir: wal_dir.map(PathBuf::from),
            wal_in_use,
            wal_epoch: 3,
        }
    }

    fn facts<'a>(
        record: Option<&'a StoreRecord>,
        wal_segments: usize,
        elsewhere: Option<&str>,
        mode: RecoveryMode,
    ) -> WalFacts<'a> {
        WalFacts { record, wal_segments, recorded_elsewhere: elsewhere.map(PathBuf::from), mode }
    }

    #[test]
    fn the_decision_table_row_by_row() {
        // Each row of judge_wal's table, and the rows' order where two apply.
        let default = RecoveryMode::TolerateCorruptedTail;
        let pit = RecoveryMode::PointInTime;
        let refused = |verdict: Verdict, words: &str| match verdict {
            Verdict::Refuse(detail) => assert!(detail.contains(words), "{detail}"),
            other => panic!("expected a refusal mentioning {words:?}, got {other:?}"),
        };
        // No state.redb.
        refused(judge_wal(&facts(None, 2, None, default)), "no state.redb");
        assert_eq!(judge_wal(&facts(None, 0, None, default)), Verdict::Proceed);
        // Not clean, and no segment here: refused, also when it moved.
        let unclean = record(Some("/w"), true);
        refused(judge_wal(&facts(Some(&unclean), 0, None, default)), "last close was not clean");
        refused(judge_wal(&facts(Some(&unclean), 0, Some("/w"), default)), "last used at /w");
        assert_eq!(judge_wal(&facts(Some(&unclean), 0, Some("/w"), pit)), Verdict::WithoutWal);
        // Moved; not moved.
        let clean = record(Some("/w"), false);
        assert_eq!(
            judge_wal(&facts(Some(&clean), 0, Some("/w"), default)),
            Verdict::Moved("/w".into())
        );
        assert_eq!(
            judge_wal(&facts(Some(&unclean), 2, Some("/w"), default)),
            Verdict::Moved("/w".into())
        );
        assert_eq!(judge_wal(&facts(Some(&unclean), 2, None, default)), Verdict::Proceed);
        assert_eq!(judge_wal(&facts(Some(&clean), 0, None, default)), Verdict::Proceed);
    }

    #[test]
    fn the_owner_follows_the_record() {
        let new_id = StoreId::from_u64(99).unwrap();
        let id = StoreId::from_u64(7).unwrap();
        assert_eq!(owner_of(None, new_id), Owner::Idle { store_id: new_id, epoch: 0 });
        assert_eq!(
            owner_of(Some(&record(None, true)), new_id),
            Owner::InUse { store_id: id, epoch: 3 }
        );
        assert_eq!(
            owner_of(Some(&record(None, false)), new_id),
            Owner::Idle { store_id: id, epoch: 3 }
        );
        let format_1 = StoreRecord { store_id: None, format_version: 1, ..record(None, false) };
        assert_eq!(owner_of(Some(&format_1), new_id), Owner::Format1);
    }
}
