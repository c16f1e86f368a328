//! The façade: [`Store`] ties the WAL, the overlay and redb together.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::checkpoint::{
    self, checkpoint_pass, CheckpointMode, CheckpointState, CheckpointStats, LoopStart, PassReport,
};
use crate::config::Config;
use crate::error::{error_chain, Error, Lsn, Result};
use crate::identity::StoreId;
use crate::open::{absolute, open_store};
use crate::state::{FactLookup, Generation, Overlay, OverlayStats, StateIo, StdStateIo, Tables, View, WalMark};
use crate::wal::io::{StdIo, WalIo};
use crate::wal::recovery::Repair;
use crate::wal::{Wal, WalCounters, WalOptions};

type Record = (Batch, u64);

/// What [`Store::close`] did. Close never stops half-way: each step runs even
/// when an earlier one failed, and every failure is reported here (and in an
/// ERROR event).
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "a close that did not finish cleanly leaves the WAL for the next open: check `is_clean()`"]
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
    /// The checkpoint thread died before close (a panic, with its message):
    /// periodic passes had stopped.
    pub loop_failure: Option<String>,
}

impl CloseReport {
    /// True when every step succeeded (and the checkpoint thread, if one
    /// ran, lived to be stopped).
    pub fn is_clean(&self) -> bool {
        self.loop_joined
            && self.loop_failure.is_none()
            && self.truncate.is_ok()
            && self.redb_close.is_ok()
            && self.lock_released
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
    /// An unreadable last record that was dropped: segment, offset, non-zero
    /// bytes. What a crash leaves of a write that was never acknowledged (or,
    /// rarely, the last acknowledged record damaged later).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Point-in-time recovery dropped everything after this corruption; the
    /// text also says what could still be read of what was dropped.
    pub dropped_after: Option<String>,
    /// The WAL directory moved: the one `state.redb` recorded before this open.
    pub wal_moved_from: Option<PathBuf>,
}

impl RecoveryReport {
    pub(crate) fn from_repairs(repairs: &[Repair]) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        for repair in repairs {
            match repair {
                Repair::TornTail { path, offset, bytes } => report.torn_tail = Some((path.clone(), *offset, *bytes)),
                Repair::DropAfter { corruption, removed_segments, dropped } => {
                    report.dropped_after = Some(format!(
                        "{corruption}; dropped: {dropped} and {} later segment file(s)",
                        removed_segments.len()
                    ));
                }
            }
        }
        report
    }
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
    /// Direct mode: serialises writes. The next LSN is always the one after
    /// `applied_lsn`: each direct write is one commit that lands or not.
    direct_writes: Mutex<()>,
    /// The `applied_lsn` redb holds, as of the last fold.
    applied_lsn: AtomicU64,
    pub(crate) checkpoint: CheckpointState,
    closed: AtomicBool,
    /// The data directory's lock, and the WAL directory's when it is another.
    lock_files: Mutex<Vec<File>>,
    /// Why redb is not open while the store is: a reopen after an I/O
    /// failure failed (see `reopen_state_if_failed`).
    state_failure: Mutex<Option<Arc<Error>>>,
    recovery: RecoveryReport,
    /// Opens `state.redb` again after an I/O failure redb latched.
    state_io: Arc<dyn StateIo>,
    store_id: StoreId,
    /// The WAL directory as recorded in `state.redb` (absolute).
    wal_dir_recorded: PathBuf,
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
        Store::open_on(config, Arc::new(StdIo), Arc::new(StdStateIo))
    }

    /// Opens with a given WAL I/O layer (fault injection in tests; feature
    /// `testing`).
    #[cfg(feature = "testing")]
    pub fn open_with_io(config: Config, io: Arc<dyn WalIo>) -> Result<Store> {
        Store::open_on(config, io, Arc::new(StdStateIo))
    }

    /// Opens with given I/O layers under the WAL and under redb (the
    /// fault-injecting simulator; feature `testing`).
    #[cfg(feature = "testing")]
    pub fn open_with(config: Config, io: Arc<dyn WalIo>, state_io: Arc<dyn StateIo>) -> Result<Store> {
        Store::open_on(config, io, state_io)
    }

    /// Opens over the given I/O layers under the WAL and under redb.
    fn open_on(config: Config, io: Arc<dyn WalIo>, state_io: Arc<dyn StateIo>) -> Result<Store> {
        let opened = open_store(&config, &*io, &*state_io)?;
        let applied_lsn = opened.tables.applied_lsn()?;
        let wal_dir = config.wal_dir();
        let overlay = Arc::new(Overlay::default());
        let wal = if config.persistence.wal_enabled {
            let epoch = new_epoch();
            let options = WalOptions {
                dir: wal_dir.clone(),
                segment_bytes: config.persistence.segment_bytes,
                payload_bytes_max: config.persistence.max_record_bytes,
                store_id: opened.store_id,
                epoch,
            };
            let sink_overlay = overlay.clone();
            let sink = Box::new(move |lsn_first, records| sink_overlay.apply(lsn_first, records));
            let wal = Wal::start(io.clone(), options, opened.number_next, opened.lsn_last + 1, sink)?;
            // The first segment exists: from now on acknowledged writes may
            // wait in this WAL, and redb says so (and where it is).
            opened.tables.mark_wal(WalMark { dir: &absolute(&wal_dir), in_use: true, epoch })?;
            Some(wal)
        } else {
            None
        };
        let checkpoint = CheckpointState::new(config.checkpoint.samples, config.checkpoint.warn_ms);
        let core = Core {
            config,
            tables: RwLock::new(Some(opened.tables)),
            overlay,
            wal,
            direct_writes: Mutex::new(()),
            applied_lsn: AtomicU64::new(applied_lsn),
            checkpoint,
            closed: AtomicBool::new(false),
            lock_files: Mutex::new(opened.locks),
            state_failure: Mutex::new(None),
            recovery: opened.recovery,
            state_io,
            store_id: opened.store_id,
            wal_dir_recorded: absolute(&wal_dir),
        };
        Ok(Store { core: Arc::new(core) })
    }

    /// The store's identity, made when it was created and written in every
    /// WAL segment it writes.
    pub fn store_id(&self) -> StoreId {
        self.core.store_id
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
        let _serialised = lock(&self.core.direct_writes);
        self.core.reopen_state_if_failed()?;
        let lsn = self.core.applied_lsn_cached() + 1;
        let mut generation = Generation::default();
        generation.apply(lsn, batch, payload_bytes);
        let outcome = {
            let tables = self.tables()?;
            let tables = tables.as_ref().ok_or(Error::Closed)?;
            tables.fold(&[Arc::new(generation)], lsn, None)
        };
        match outcome {
            Ok(_) => {
                self.core.applied_lsn.store(lsn, Ordering::Release);
                Ok(lsn)
            }
            Err(error) => {
                // A commit can fail after its data reached redb (a failed
                // final sync, say): the next LSN must follow what redb
                // holds, which a reopen reads back (now, or before the next
                // write if this one fails too).
                let _ = self.core.reopen_state_if_failed();
                Err(error)
            }
        }
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
        self.core.tables()
    }

    fn view<R>(&self, read: impl FnOnce(&View<'_>) -> Result<R>) -> Result<R> {
        if self.core.state_reopen_failed() {
            // A failure here is the one `tables` reports.
            let _ = self.core.reopen_state_if_failed();
        }
        let tables = self.tables()?;
        let tables = tables.as_ref().ok_or(Error::Closed)?;
        read(&View { overlay: &self.core.overlay, tables })
    }

    /// One fact's value, as of every write acknowledged before this call.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        // What the overlay knows needs no redb (which may be closed while a
        // full disk keeps it from reopening).
        match self.core.overlay.fact(session, fact) {
            FactLookup::Value(value) => Ok(Some(value)),
            FactLookup::Absent => Ok(None),
            FactLookup::Base => self.view(|view| view.fact(session, fact)),
        }
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
    #[cfg(feature = "testing")]
    pub fn set_checkpoint_delay_for_test(&self, delay: Duration) {
        self.core.checkpoint.hooks.set_delay(delay);
    }

    /// Test hook: the next checkpoint pass panics, as a bug inside it would.
    #[cfg(feature = "testing")]
    pub fn panic_next_checkpoint_pass_for_test(&self) {
        self.core.checkpoint.hooks.panic_next_pass();
    }

    /// Test hook: the most checkpoint passes ever seen running at once.
    #[cfg(feature = "testing")]
    pub fn max_concurrent_passes_for_test(&self) -> usize {
        self.core.checkpoint.hooks.passes_active_max()
    }

    /// LSNs, and how much is waiting to be folded.
    pub fn stats(&self) -> Result<StoreStats> {
        let lsn_next = match &self.core.wal {
            Some(wal) => wal.lsn_next(),
            None => self.core.applied_lsn_cached() + 1,
        };
        let applied_lsn = self.core.applied_lsn_cached();
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
        self.close_shared()
    }

    /// Closes a store that other threads may still hold (an `Arc<Store>`
    /// shared by request handlers), with the steps and report of
    /// [`Store::close`], without waiting for the other handles to go.
    ///
    /// A write queued before the close is made durable and acknowledged; a
    /// call made after it returns `Error::Closed`, as does every later read;
    /// a read that holds redb is waited for (at most
    /// `checkpoint.join_timeout_s`). The directory lock is released, so the
    /// store can be opened again while old handles linger. A second close
    /// returns a report whose steps are all `Err(Error::Closed)`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use factwal::{Config, Error, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Arc::new(Store::open(Config::new(dir.path()))?);
    /// let handler = Arc::clone(&store);
    /// handler.assert("s1", "f", b"v")?;
    /// assert!(store.close_shared().is_clean());
    /// assert!(matches!(handler.assert("s1", "g", b"w"), Err(Error::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close_shared(&self) -> CloseReport {
        shutdown(&self.core).unwrap_or_else(|| CloseReport {
            loop_joined: true,
            summary: CheckpointStats::default(),
            truncate: Err(Error::Closed),
            redb_close: Err(Error::Closed),
            lock_released: true,
            loop_failure: None,
        })
    }

    /// Drops the store the way a crashed process would leave it: no final
    /// pass, no truncation; only file handles and the lock are released. For
    /// tests of recovery.
    #[cfg(feature = "testing")]
    pub fn simulate_crash(self) {
        self.core.closed.store(true, Ordering::Release);
        if let Some(wal) = &self.core.wal {
            wal.stop();
        }
        checkpoint::stop_loop(&self.core, self.core.join_timeout());
        drop(self.core.tables.write().unwrap_or_else(PoisonError::into_inner).take());
        lock(&self.core.lock_files).clear();
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
        lock(&core.lock_files).clear();
    } else {
        tracing::error!(target: "factwal::checkpoint", path = %core.config.persistence.data_dir.display(),
            "close: directory lock kept until the checkpoint thread ends");
    }
    let loop_failure = lock(&core.checkpoint.loop_failure).clone();
    Some(CloseReport { loop_joined, summary, truncate, redb_close, lock_released, loop_failure })
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
            None => self.applied_lsn_cached(),
        }
    }

    /// redb, when open; otherwise why not (closed, or a failed reopen).
    fn tables(&self) -> Result<RwLockReadGuard<'_, Option<Tables>>> {
        let guard = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            return Err(match lock(&self.state_failure).as_ref() {
                Some(failure) if !self.closed.load(Ordering::Acquire) => failure.duplicate(),
                _ => Error::Closed,
            });
        }
        Ok(guard)
    }

    /// True when redb is closed because its reopen after an I/O failure
    /// failed: readers then try the reopen themselves.
    pub(crate) fn state_reopen_failed(&self) -> bool {
        lock(&self.state_failure).is_some()
    }

    /// After an I/O failure that redb latched (a full disk during a fold,
    /// say), redb answers every later call with "previous I/O error" until
    /// it is reopened. The file holds the last commit, and the WAL and the
    /// overlay still hold every record since, so reopening loses nothing:
    /// this does it, once no one is using the handle, and resumes folding
    /// from what the file says it holds. A reopen that fails (the disk still
    /// full) is reported by the next use and retried then.
    pub(crate) fn reopen_state_if_failed(&self) -> Result<()> {
        let needed = |guard: &Option<Tables>| match guard {
            Some(tables) => tables.needs_reopen(),
            None => lock(&self.state_failure).is_some() && !self.closed.load(Ordering::Acquire),
        };
        if !needed(&self.tables.read().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(());
        }
        let mut guard = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        if !needed(&guard) {
            return Ok(());
        }
        if let Some(failed) = guard.take() {
            let _ = failed.close();
        }
        let path = self.config.state_path();
        let cache_bytes = self.config.persistence.redb_cache_bytes as usize;
        let reopened = self
            .state_io
            .open_backend(&path)
            .map_err(|e| Error::io(&path, "reopen state file", e))
            .and_then(|(backend, _)| Tables::open(&path, backend, cache_bytes))
            .and_then(|tables| tables.applied_lsn().map(|applied| (tables, applied)));
        match reopened {
            Ok((tables, applied)) => {
                // The failed commit may have landed after all (its final
                // sync failed, say): follow what the file holds.
                self.applied_lsn.store(applied, Ordering::Release);
                self.overlay.release_through(applied);
                *guard = Some(tables);
                *lock(&self.state_failure) = None;
                tracing::warn!(target: "factwal::checkpoint", path = %path.display(), applied_lsn = applied,
                    "state.redb reopened after an I/O failure; folding resumes");
                Ok(())
            }
            Err(error) => {
                tracing::error!(target: "factwal::checkpoint", path = %path.display(), error = %error_chain(&error),
                    "reopening state.redb after an I/O failure failed; the WAL keeps every record, retrying later");
                *lock(&self.state_failure) = Some(Arc::new(error.duplicate()));
                Err(error)
            }
        }
    }

    /// One checkpoint pass, uninstrumented. The caller holds the checkpoint
    /// lock (see `checkpoint::checkpoint_pass`, which reports it).
    pub(crate) fn run_pass(&self, mode: CheckpointMode) -> Result<PassReport> {
        let mut report = PassReport::begin(mode);
        if let Some(wal) = self.wal.as_ref().filter(|wal| wal.sink_failed()) {
            // The overlay may miss or half-hold records: folding it could
            // write a half-applied batch. The WAL holds them all for the
            // next open, which recovers from the disk.
            let cause = wal.poisoned().unwrap_or_else(|| Arc::new(Error::Closed));
            return Err(Error::Poisoned { cause });
        }
        self.reopen_state_if_failed()?;
        let tables_guard = self.tables()?;
        let tables = tables_guard.as_ref().ok_or(Error::Closed)?;
        // The final pass of a clean close also records, in the same commit,
        // that the WAL will hold nothing redb lacks.
        let closing = mode == CheckpointMode::Truncate && self.wal.is_some() && self.closed.load(Ordering::Acquire);
        let fold = |report: &mut PassReport| -> Result<()> {
            let generations = self.overlay.freeze();
            report.log_frames = generations.iter().map(|g| g.records).sum();
            report.applied_lsn = self.applied_lsn_cached();
            let lsn_last = generations.last().map(|g| g.lsn_last);
            if lsn_last.is_some() || closing {
                let lsn = lsn_last.unwrap_or(report.applied_lsn);
                let epoch = self.wal.as_ref().map_or(0, Wal::epoch);
                let mark = closing.then_some(WalMark { dir: &self.wal_dir_recorded, in_use: false, epoch });
                tables.fold(&generations, lsn, mark)?;
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

/// A new opening's epoch: random, never 0 (format 1's "none").
fn new_epoch() -> u32 {
    (crate::identity::random_u64("factwal WAL epoch") as u32).max(1)
}

/// Numbers of the segment files in a WAL directory, sorted.
#[cfg(feature = "testing")]
pub fn segment_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            entry.ok().and_then(|e| crate::wal::segment::parse_segment_file_name(&e.file_name().to_string_lossy()))
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

// The store is meant to be shared by many threads.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Store>();
};
