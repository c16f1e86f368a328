//! The façade: [`Store`] ties the WAL, the overlay and redb together.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::checkpoint::{
    self, checkpoint_pass, CheckpointMode, CheckpointState, CheckpointStats, LoopStart, PassReport,
};
use crate::config::Config;
use crate::error::{Error, Lsn, Result};
use crate::state::{Generation, Overlay, OverlayStats, StateIo, StdStateIo, Tables, View};
use crate::wal::io::{StdIo, WalIo, FILE_MODE};
use crate::wal::recovery::{self, Recovered, Repair, ScanOptions};
use crate::wal::segment::parse_segment_file_name;
use crate::wal::{Wal, WalCounters, WalOptions};

/// Name of the lock file in the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

type Record = (Batch, u64);

/// What [`Store::close`] did. Close never stops half-way: each step runs even
/// when an earlier one failed, and every failure is reported here (and in an
/// ERROR event).
#[derive(Debug)]
#[non_exhaustive]
pub struct CloseReport {
    /// False when the checkpoint thread did not stop within
    /// `checkpoint.join_timeout_s` (it was left to finish on its own).
    pub loop_joined: bool,
    /// The pass-duration statistics emitted in the summary.
    pub summary: CheckpointStats,
    /// The final TRUNCATE pass: folds everything and removes every segment.
    pub truncate: Result<PassReport>,
    /// Closing redb.
    pub redb_close: Result<()>,
    /// False when the directory lock is kept because a checkpoint thread that
    /// did not stop still uses the store; it is released when that thread ends.
    pub lock_released: bool,
}

impl CloseReport {
    /// True when every step succeeded.
    pub fn is_clean(&self) -> bool {
        self.loop_joined && self.truncate.is_ok() && self.redb_close.is_ok() && self.lock_released
    }
}

/// What opening the store found in the WAL and did about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Records folded into redb at open (acknowledged before the last
    /// process ended but not yet folded).
    pub records_replayed: u64,
    /// Segment files read and then removed.
    pub segments_removed: usize,
    /// A torn tail that was dropped: segment, offset, non-zero bytes.
    pub torn_tail: Option<(std::path::PathBuf, u64, u64)>,
    /// Point-in-time recovery dropped everything after this corruption.
    pub dropped_after: Option<String>,
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// The LSN of the last acknowledged write (0 when none).
    pub lsn_last: Lsn,
    /// The LSN redb holds.
    pub applied_lsn: Lsn,
    /// Records and bytes acknowledged but not yet folded into redb.
    pub unfolded: OverlayStats,
    /// Group commit counters (all zero in direct mode): records per group
    /// is `wal.records / wal.groups`.
    pub wal: WalCounters,
}

pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) tables: RwLock<Option<Tables>>,
    pub(crate) overlay: Arc<Overlay>,
    pub(crate) wal: Option<Wal<Record>>,
    /// Direct mode: the next LSN, and the lock that serialises writes.
    direct_lsn_next: Mutex<Lsn>,
    /// The `applied_lsn` redb holds, as of the last fold.
    applied_lsn: AtomicU64,
    pub(crate) checkpoint: CheckpointState,
    closed: AtomicBool,
    lock_file: Mutex<Option<File>>,
    recovery: RecoveryReport,
}

fn lock<G>(mutex: &Mutex<G>) -> MutexGuard<'_, G> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An open store. `Send + Sync`: share it between threads with an `Arc`.
///
/// ```
/// use factwal::{Batch, Config, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(Config::new(dir.path()))?;
/// // The write returns once the batch is synced to the WAL.
/// let lsn = store.write(Batch::new().assert("session-7", "risk", b"high".to_vec()).retract("session-7", "draft"))?;
/// assert_eq!(lsn, 1);
/// store.assert("session-7", "score", b"42")?;
/// assert_eq!(store.fact("session-7", "risk")?, Some(b"high".to_vec()));
/// assert_eq!(store.facts("session-7")?.len(), 2);
/// assert_eq!(store.sessions()?, vec!["session-7".to_string()]);
/// assert!(store.close().is_clean());
///
/// // Reopening gives back every acknowledged write.
/// let store = Store::open(Config::new(dir.path()))?;
/// assert_eq!(store.fact("session-7", "score")?, Some(b"42".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Store {
    core: Arc<Core>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("data_dir", &self.core.config.persistence.data_dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store described by `config`, recovering
    /// whatever the WAL holds. Starts no thread.
    pub fn open(config: Config) -> Result<Store> {
        Store::open_with_io(config, Arc::new(StdIo))
    }

    /// Opens with a given WAL I/O layer (fault injection in tests).
    #[doc(hidden)]
    pub fn open_with_io(config: Config, io: Arc<dyn WalIo>) -> Result<Store> {
        Store::open_with(config, io, Arc::new(StdStateIo))
    }

    /// Opens with given I/O layers under the WAL and under redb (the
    /// fault-injecting simulator).
    #[doc(hidden)]
    pub fn open_with(config: Config, io: Arc<dyn WalIo>, state_io: Arc<dyn StateIo>) -> Result<Store> {
        config.validate()?;
        let data_dir = config.persistence.data_dir.clone();
        ensure_durable_dir(&*io, &data_dir)?;
        let lock_file = lock_directory(&data_dir)?;
        let wal_dir = config.wal_dir();
        let mut scan = ScanOptions {
            applied_lsn: None,
            mode: config.persistence.recovery_mode,
            payload_bytes_max: config.persistence.max_record_bytes,
            keep_folded: false,
        };
        // Check the WAL before redb is opened read-write: that open may
        // rewrite redb's file (repair after a crash), and a refused open must
        // change nothing on disk. A cleanly closed redb opens read-only, which
        // gives applied_lsn and so the whole check; one that needs repair
        // cannot, and the check that depends on applied_lsn (does the first
        // segment follow on from it?) then waits for the read-write open.
        let state_path = config.state_path();
        scan.applied_lsn = applied_lsn_read_only(&state_path);
        let early = recovery::scan(&*io, &wal_dir, &scan)?;
        let tables = open_state(&*io, &*state_io, &data_dir, &state_path)?;
        let applied_lsn = tables.applied_lsn()?;
        let recovered = match scan.applied_lsn {
            Some(read_only) if read_only == applied_lsn => early,
            _ => recovery::scan(&*io, &wal_dir, &ScanOptions { applied_lsn: Some(applied_lsn), ..scan })?,
        };
        apply_repairs(&*io, &wal_dir, &recovered)?;
        let mut recovery = RecoveryReport::default();
        for repair in &recovered.repairs {
            match repair {
                Repair::TornTail { path, offset, bytes } => recovery.torn_tail = Some((path.clone(), *offset, *bytes)),
                Repair::DropAfter { corruption, .. } => recovery.dropped_after = Some(corruption.to_string()),
            }
        }
        recovery.records_replayed = recovered.records.len() as u64;
        recovery.segments_removed = recovered.segments.len();
        let (lsn_last, number_next) = replay(&*io, &wal_dir, &tables, recovered)?;
        let applied_lsn = tables.applied_lsn()?;

        let overlay = Arc::new(Overlay::default());
        let wal = if config.persistence.wal_enabled {
            let options = WalOptions {
                dir: wal_dir,
                segment_bytes: config.persistence.segment_bytes,
                payload_bytes_max: config.persistence.max_record_bytes,
            };
            let sink_overlay = overlay.clone();
            let sink = Box::new(move |lsn_first, records| sink_overlay.apply(lsn_first, records));
            Some(Wal::start(io.clone(), options, number_next, lsn_last + 1, sink)?)
        } else {
            None
        };
        let checkpoint = CheckpointState::new(config.checkpoint.samples, config.checkpoint.warn_ms);
        let core = Core {
            config,
            tables: RwLock::new(Some(tables)),
            overlay,
            wal,
            direct_lsn_next: Mutex::new(lsn_last + 1),
            applied_lsn: AtomicU64::new(applied_lsn),
            checkpoint,
            closed: AtomicBool::new(false),
            lock_file: Mutex::new(Some(lock_file)),
            recovery,
        };
        Ok(Store { core: Arc::new(core) })
    }

    /// What opening the store found in the WAL and did about it.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.core.recovery
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Writes a batch atomically. Returns its LSN once it is durable: synced
    /// to the WAL (WAL mode) or committed to redb (direct mode). Readers see
    /// it from then on, never before.
    pub fn write(&self, batch: Batch) -> Result<Lsn> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        batch.validate()?;
        let payload = batch.encode();
        let limit = self.core.config.persistence.max_record_bytes;
        if payload.len() as u64 > limit {
            return Err(Error::LimitExceeded { what: "record bytes", actual: payload.len() as u64, limit });
        }
        match &self.core.wal {
            Some(wal) => {
                self.relieve_pressure()?;
                let payload_bytes = payload.len() as u64;
                wal.append(payload, (batch, payload_bytes))
            }
            None => self.write_direct(batch, payload.len() as u64),
        }
    }

    /// Asserts (inserts or replaces) one fact.
    pub fn assert(&self, session: &str, fact: &str, value: &[u8]) -> Result<Lsn> {
        self.write(Batch::new().assert(session, fact, value))
    }

    /// Retracts (deletes) one fact.
    pub fn retract(&self, session: &str, fact: &str) -> Result<Lsn> {
        self.write(Batch::new().retract(session, fact))
    }

    /// Drops a whole session.
    pub fn drop_session(&self, session: &str) -> Result<Lsn> {
        self.write(Batch::new().drop_session(session))
    }

    fn write_direct(&self, batch: Batch, payload_bytes: u64) -> Result<Lsn> {
        let mut lsn_next = lock(&self.core.direct_lsn_next);
        let lsn = *lsn_next;
        let mut generation = Generation::default();
        generation.apply(lsn, batch, payload_bytes);
        let tables = self.tables()?;
        let tables = tables.as_ref().ok_or(Error::Closed)?;
        if let Err(error) = tables.fold(&[Arc::new(generation)], lsn) {
            // A commit can fail after its data reached redb (a failed final
            // sync, say): the next write must not reuse an LSN redb may
            // already hold. Follow what redb says it holds.
            if let Ok(applied) = tables.applied_lsn() {
                *lsn_next = applied + 1;
                self.core.applied_lsn.store(applied, Ordering::Release);
            }
            return Err(error);
        }
        self.core.applied_lsn.store(lsn, Ordering::Release);
        *lsn_next += 1;
        Ok(lsn)
    }

    /// Wakes the loop early past `checkpoint.wal_bytes_trigger`, and applies
    /// back-pressure at `persistence.wal_bytes_max`: the writer waits for the
    /// pass in progress (the checkpoint lock) and, if the WAL is still full
    /// after it, runs one itself. The WAL, and the memory held for unfolded
    /// records, stay bounded by about `wal_bytes_max` plus one segment.
    fn relieve_pressure(&self) -> Result<()> {
        let bytes = self.core.overlay.bytes();
        if bytes >= self.core.config.checkpoint.wal_bytes_trigger {
            checkpoint::request_early_pass(&self.core);
        }
        let limit = self.core.config.persistence.wal_bytes_max;
        if bytes < limit {
            return Ok(());
        }
        let held = lock(&self.core.checkpoint.lock);
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.core.overlay.bytes() >= limit {
            checkpoint_pass(&self.core, CheckpointMode::Passive, &held)?;
        }
        Ok(())
    }

    fn tables(&self) -> Result<RwLockReadGuard<'_, Option<Tables>>> {
        let guard = self.core.tables.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            return Err(Error::Closed);
        }
        Ok(guard)
    }

    fn view<R>(&self, read: impl FnOnce(&View<'_>) -> Result<R>) -> Result<R> {
        let tables = self.tables()?;
        let tables = tables.as_ref().ok_or(Error::Closed)?;
        read(&View { overlay: &self.core.overlay, tables })
    }

    /// One fact's value, as of every write acknowledged before this call.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        self.view(|view| view.fact(session, fact))
    }

    /// Every fact of a session, by fact id.
    pub fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        self.view(|view| view.facts(session))
    }

    /// Every session holding at least one fact, sorted.
    pub fn sessions(&self) -> Result<Vec<String>> {
        self.view(|view| view.sessions())
    }

    /// Runs one checkpoint pass now. Passes never overlap: this waits for a
    /// pass in progress (the loop's, say) to finish first. The pass is
    /// reported and sampled like the loop's.
    pub fn checkpoint(&self, mode: CheckpointMode) -> Result<PassReport> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let held = lock(&self.core.checkpoint.lock);
        checkpoint_pass(&self.core, mode, &held)
    }

    /// Starts the checkpoint loop: a thread running a PASSIVE pass every
    /// `interval`, and earlier once `checkpoint.wal_bytes_trigger` unfolded
    /// bytes have built up. Call it once at start-up (`Store::open` never
    /// starts a thread). A zero interval disables the loop: no thread, one
    /// INFO event. A second call while the loop runs changes nothing and
    /// returns [`LoopStart::AlreadyRunning`]. The thread reports through the
    /// tracing dispatcher current at this call.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// let interval = store.config().checkpoint_interval().unwrap_or_default();
    /// assert_eq!(store.start_checkpoint_loop(interval)?, factwal::LoopStart::Started);
    /// assert_eq!(store.start_checkpoint_loop(interval)?, factwal::LoopStart::AlreadyRunning);
    /// store.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_checkpoint_loop(&self, interval: Duration) -> Result<LoopStart> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        checkpoint::start_loop(&self.core, interval)
    }

    /// n, p50, p95 and max of the last `checkpoint.samples` pass durations.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.core.checkpoint.stats()
    }

    /// Test hook: every later pass sleeps this long inside its measured time.
    #[doc(hidden)]
    pub fn set_checkpoint_delay_for_test(&self, delay: Duration) {
        self.core.checkpoint.set_delay_for_test(delay);
    }

    /// Test hook: the most checkpoint passes ever seen running at once.
    #[doc(hidden)]
    pub fn max_concurrent_passes_for_test(&self) -> usize {
        self.core.checkpoint.passes_active_max()
    }

    /// LSNs, and how much is waiting to be folded.
    pub fn stats(&self) -> Result<StoreStats> {
        let lsn_next = match &self.core.wal {
            Some(wal) => wal.lsn_next(),
            None => *lock(&self.core.direct_lsn_next),
        };
        let applied_lsn = self.tables()?.as_ref().ok_or(Error::Closed)?.applied_lsn()?;
        let wal = self.core.wal.as_ref().map(Wal::counters).unwrap_or_default();
        Ok(StoreStats { lsn_last: lsn_next - 1, applied_lsn, unfolded: self.core.overlay.stats(), wal })
    }

    /// Closes the store. It never panics and never skips a step because an
    /// earlier one failed; the steps, in order:
    ///
    /// 1. stop accepting writes (later ones get `Error::Closed`) and let the
    ///    writes already queued finish;
    /// 2. signal the checkpoint loop to stop;
    /// 3. join its thread, waiting at most `checkpoint.join_timeout_s` (ERROR
    ///    and carry on if it does not stop);
    /// 4. emit the INFO "checkpoint summary" once (n, p50_ms, p95_ms, max_ms);
    /// 5. TRUNCATE pass: fold everything, then remove every WAL segment and
    ///    sync the directory; if it fails, ERROR with context and carry on:
    ///    the WAL stays for the next open to replay;
    /// 6. close redb;
    /// 7. release the directory lock.
    ///
    /// The returned report carries each step's outcome. Dropping a store
    /// without calling `close` does the same, best effort.
    pub fn close(self) -> CloseReport {
        shutdown(&self.core).unwrap_or_else(|| CloseReport {
            loop_joined: true,
            summary: CheckpointStats::default(),
            truncate: Err(Error::Closed),
            redb_close: Err(Error::Closed),
            lock_released: true,
        })
    }

    /// Drops the store the way a crashed process would leave it: no final
    /// pass, no truncation; only file handles and the lock are released. For
    /// tests of recovery.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.core.closed.store(true, Ordering::Release);
        if let Some(wal) = &self.core.wal {
            wal.stop();
        }
        checkpoint::stop_loop(&self.core, self.core.join_timeout());
        drop(self.core.tables.write().unwrap_or_else(PoisonError::into_inner).take());
        drop(lock(&self.core.lock_file).take());
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.core.config.persistence.data_dir
    }
}

impl Drop for Store {
    /// Dropping without [`Store::close`] does the same, best effort.
    fn drop(&mut self) {
        let _ = shutdown(&self.core);
    }
}

/// Runs the close sequence once; `None` when it already ran.
fn shutdown(core: &Core) -> Option<CloseReport> {
    if core.closed.swap(true, Ordering::AcqRel) {
        return None;
    }
    if let Some(wal) = &core.wal {
        wal.stop();
    }
    let join_timeout = core.join_timeout();
    let loop_joined = checkpoint::stop_loop(core, join_timeout);
    core.checkpoint.emit_summary();
    let summary = core.checkpoint.stats();
    let truncate = match core.checkpoint.lock_within(join_timeout) {
        Some(held) => checkpoint_pass(core, CheckpointMode::Truncate, &held),
        None => Err(checkpoint::timeout("the running checkpoint pass to finish", join_timeout)),
    };
    if let Err(error) = &truncate {
        tracing::error!(target: "factwal::checkpoint", error = %error_chain(error),
            wal_dir = %core.config.wal_dir().display(),
            "close: truncate pass failed; the WAL stays for the next open to replay");
    }
    let redb_close = close_tables(core, join_timeout);
    if let Err(error) = &redb_close {
        tracing::error!(target: "factwal::checkpoint", error = %error_chain(error),
            path = %core.config.state_path().display(), "close: closing redb failed");
    }
    // A checkpoint thread that did not stop may still write to redb: the lock
    // stays with it, and is released when that thread drops the store's core.
    let lock_released = loop_joined;
    if lock_released {
        drop(lock(&core.lock_file).take());
    } else {
        tracing::error!(target: "factwal::checkpoint", path = %core.config.persistence.data_dir.display(),
            "close: directory lock kept until the checkpoint thread ends");
    }
    Some(CloseReport { loop_joined, summary, truncate, redb_close, lock_released })
}

/// Takes redb out of the core and closes it, waiting at most `timeout` for
/// readers or a stuck pass to let go.
fn close_tables(core: &Core, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match core.tables.try_write() {
            Ok(mut guard) => return guard.take().map_or(Ok(()), Tables::close),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                return poisoned.into_inner().take().map_or(Ok(()), Tables::close);
            }
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => {
                return Err(checkpoint::timeout("redb to be released by its last user", timeout));
            }
            Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

impl Core {
    pub(crate) fn join_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.config.checkpoint.join_timeout_s)
    }

    /// The `applied_lsn` as of the last fold, without touching redb.
    pub(crate) fn applied_lsn_cached(&self) -> Lsn {
        self.applied_lsn.load(Ordering::Acquire)
    }

    /// The LSN of the last acknowledged write.
    pub(crate) fn lsn_last_acknowledged(&self) -> Lsn {
        match &self.wal {
            Some(wal) => wal.lsn_next() - 1,
            None => *lock(&self.direct_lsn_next) - 1,
        }
    }

    /// One checkpoint pass, uninstrumented. The caller holds the checkpoint
    /// lock (see `checkpoint::checkpoint_pass`, which reports it).
    pub(crate) fn run_pass(&self, mode: CheckpointMode) -> Result<PassReport> {
        let mut report = PassReport::begin(mode);
        let tables_guard = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let tables = tables_guard.as_ref().ok_or(Error::Closed)?;
        let fold = |report: &mut PassReport| -> Result<()> {
            let generations = self.overlay.freeze();
            report.log_frames = generations.iter().map(|g| g.records).sum();
            report.applied_lsn = self.applied_lsn_cached();
            if let Some(lsn) = generations.last().map(|g| g.lsn_last) {
                tables.fold(&generations, lsn)?;
                self.applied_lsn.store(lsn, Ordering::Release);
                self.overlay.release_through(lsn);
                report.checkpointed_frames = report.log_frames;
                report.applied_lsn = lsn;
            }
            Ok(())
        };
        let outcome = match (&self.wal, mode) {
            (None, _) => fold(&mut report),
            (Some(wal), CheckpointMode::Passive) => fold(&mut report).and_then(|()| {
                report.segments_removed = wal.release_through(report.applied_lsn)?;
                Ok(())
            }),
            (Some(wal), CheckpointMode::Truncate) => wal.truncate_with(|| fold(&mut report)).map(|removed| {
                report.segments_removed = removed;
            }),
        };
        report.busy = report.checkpointed_frames < report.log_frames;
        outcome.map(|()| report)
    }

    /// Makes the next WAL segment's file ahead of need (WAL mode only). A
    /// failure is reported (ERROR) and harms nothing: the roll then makes the
    /// segment itself.
    pub(crate) fn prepare_next_segment(&self) {
        let Some(wal) = &self.wal else { return };
        let started = Instant::now();
        match wal.prepare_next_segment() {
            Ok(true) => tracing::debug!(
                target: "factwal::checkpoint",
                elapsed_ms = checkpoint::millis(started.elapsed()),
                "next segment prepared"
            ),
            Ok(false) => {}
            Err(error) => tracing::error!(
                target: "factwal::checkpoint",
                wal_dir = %wal.dir().display(),
                error = %error_chain(&error),
                "preparing the next segment failed; the roll into it will make it instead"
            ),
        }
    }
}

/// The error and every source under it, joined by ": ".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// redb's `applied_lsn` through a read-only open, when the file exists and
/// was closed cleanly (a read-only open never writes).
fn applied_lsn_read_only(state_path: &Path) -> Option<Lsn> {
    if !state_path.is_file() {
        return None;
    }
    let tables = Tables::open_read_only(state_path).ok()?;
    let applied = tables.applied_lsn().ok();
    let _ = tables.close();
    applied
}

/// Opens `state.redb`, creating it first if missing. A new database is
/// initialised under a temporary name, closed, renamed into place and its
/// directory synced: a crash while redb writes its first pages must never
/// leave a half-made `state.redb` that no later open can read.
fn open_state(io: &dyn WalIo, state_io: &dyn StateIo, data_dir: &Path, state_path: &Path) -> Result<Tables> {
    let name = state_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let names = io.list(data_dir).map_err(|e| Error::io(data_dir, "list data directory", e))?;
    if !names.contains(&name) {
        let temporary = data_dir.join(format!("{name}.tmp"));
        if names.contains(&format!("{name}.tmp")) {
            io.remove(&temporary).map_err(|e| Error::io(&temporary, "remove half-made state file", e))?;
        }
        let (backend, _) =
            state_io.open_backend(&temporary).map_err(|e| Error::io(&temporary, "create state file", e))?;
        Tables::open_backend(&temporary, backend)?.close()?;
        io.rename(&temporary, state_path).map_err(|e| Error::io(state_path, "rename new state file into place", e))?;
        // The new entry must be durable before any WAL segment is removed
        // on the strength of what the file holds.
        io.sync_dir(data_dir).map_err(|e| Error::io(data_dir, "sync data directory", e))?;
    }
    let (backend, _) = state_io.open_backend(state_path).map_err(|e| Error::io(state_path, "open state file", e))?;
    Tables::open_backend(state_path, backend)
}

/// Creates `dir` and any missing parent, syncing the parent of each one
/// created so the new entries survive a power loss (invariant 10).
pub(crate) fn ensure_durable_dir(io: &dyn WalIo, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || io.list(path).is_ok() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    io.create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    for created in missing.iter().rev() {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        io.sync_dir(parent).map_err(|e| Error::io(parent, "sync directory", e))?;
    }
    Ok(())
}

/// Takes the directory lock: a second open, from this process or another,
/// gets `Error::Locked`.
fn lock_directory(data_dir: &Path) -> Result<File> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|e| Error::io(&path, "open lock file", e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(e)) => Err(Error::io(&path, "lock", e)),
    }
}

/// Makes the repairs recovery asked for durable, before anything else
/// changes: zero a torn tail; for point-in-time, zero the rest of the
/// segment holding the corruption and remove every later segment. Temporary
/// files of interrupted segment creations go too.
fn apply_repairs(io: &dyn WalIo, wal_dir: &Path, recovered: &Recovered) -> Result<()> {
    for repair in &recovered.repairs {
        match repair {
            Repair::TornTail { path, offset, bytes } => {
                tracing::warn!(target: "factwal::recovery", file = %path.display(), offset, bytes_dropped = bytes,
                    "torn tail truncated: the last record was never acknowledged");
                zero_range(io, path, *offset, *bytes)?;
            }
            Repair::DropAfter { corruption, removed_segments } => {
                tracing::error!(target: "factwal::recovery", corruption = %corruption,
                    removed_segments = removed_segments.len(),
                    "point-in-time recovery: keeping the valid prefix, dropping everything after it");
                if let Error::Corrupted { path, offset, .. } = &**corruption {
                    if recovered.segments.iter().any(|segment| &segment.path == path) {
                        let file_bytes =
                            io.open(path).and_then(|f| f.len_bytes()).map_err(|e| Error::io(path, "stat", e))?;
                        zero_range(io, path, *offset, file_bytes.saturating_sub(*offset))?;
                    }
                }
                for path in removed_segments {
                    io.remove(path).map_err(|e| Error::io(path, "remove segment after corruption", e))?;
                }
            }
        }
    }
    for path in &recovered.temporary_files {
        io.remove(path).map_err(|e| Error::io(path, "remove temporary segment", e))?;
    }
    if !recovered.repairs.is_empty() || !recovered.temporary_files.is_empty() {
        io.sync_dir(wal_dir).map_err(|e| Error::io(wal_dir, "sync WAL directory", e))?;
    }
    Ok(())
}

fn zero_range(io: &dyn WalIo, path: &Path, offset: u64, bytes: u64) -> Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let file = io.open(path).map_err(|e| Error::io(path, "open segment for repair", e))?;
    let zeros = vec![0u8; bytes.min(CHUNK_BYTES) as usize];
    let mut done = 0;
    while done < bytes {
        let chunk = (bytes - done).min(CHUNK_BYTES);
        file.write_at(offset + done, &zeros[..chunk as usize]).map_err(|e| Error::io(path, "zero torn tail", e))?;
        done += chunk;
    }
    file.sync_data().map_err(|e| Error::io(path, "sync repaired segment", e))
}

/// Folds the recovered records into redb in one transaction, then removes
/// the segments that held them (all of which the commit now covers).
/// Returns the last LSN and the number for the next segment.
fn replay(io: &dyn WalIo, wal_dir: &Path, tables: &Tables, recovered: Recovered) -> Result<(Lsn, u64)> {
    let number_next = recovered.segments.last().map_or(1, |segment| segment.header.number + 1);
    let replayed = recovered.records.len();
    if replayed > 0 {
        let mut generation = Generation::default();
        for record in recovered.records {
            generation.apply(record.lsn, record.batch, record.payload_bytes);
        }
        let lsn = generation.lsn_last;
        tables.fold(&[Arc::new(generation)], lsn)?;
        tracing::info!(target: "factwal::recovery", records = replayed, lsn_last = lsn, "replayed WAL into redb");
    }
    for segment in &recovered.segments {
        io.remove(&segment.path).map_err(|e| Error::io(&segment.path, "remove replayed segment", e))?;
    }
    if !recovered.segments.is_empty() {
        io.sync_dir(wal_dir).map_err(|e| Error::io(wal_dir, "sync WAL directory", e))?;
    }
    Ok((recovered.lsn_last, number_next))
}

/// Numbers of the segment files in a WAL directory, sorted.
#[doc(hidden)]
pub fn segment_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().and_then(|e| parse_segment_file_name(&e.file_name().to_string_lossy())))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

// The store is meant to be shared by many threads.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Store>();
};
