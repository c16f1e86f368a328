//! The state one open store shares among its handles, its checkpoint thread
//! and its writers: redb, the overlay, the WAL and the checkpoint state, with
//! the operations on them that the façade ([`crate::store`]) and the
//! checkpoint loop both use: a pass, the redb reopen after an I/O failure,
//! and the close sequence.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::checkpoint::{
    self, checkpoint_pass, CheckpointMode, CheckpointState, Checkpointed, PassReport,
};
use crate::config::Config;
use crate::error::{error_chain, Error, IoOp, Lsn, Result};
use crate::identity::StoreId;
use crate::report::{CloseReport, RecoveryReport};
use crate::state::{Overlay, StateIo, Tables, WalMark};
use crate::sync::{lock, read, write};
use crate::wal::{Pending, Wal};

/// A WAL record as the store queues it: the batch and its payload bytes.
pub(crate) type Record = (Batch, u64);

/// One write waiting in the line: what `Wal::submit` takes.
pub(crate) struct HeldWrite {
    pub(crate) payload: Vec<u8>,
    pub(crate) record: Record,
    pub(crate) pending: Pending,
}

/// The line of writes held back at `persistence.wal_bytes_max` and the
/// admitter that empties it (`crate::held`).
#[derive(Default)]
pub(crate) struct Line {
    pub(crate) queue: Mutex<VecDeque<HeldWrite>>,
    /// The queue's length, read without the lock by writers deciding
    /// whether they may go straight to the WAL. The admitter lowers it only
    /// after the writes it took are queued in the WAL, so a writer that
    /// reads 0 queues after them.
    pub(crate) count: AtomicUsize,
    /// Wakes the admitter: a write was held, or the store is closing.
    pub(crate) wake: Condvar,
    pub(crate) admitter: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line").field("count", &self.count.load(Ordering::Relaxed)).finish()
    }
}

impl Line {
    /// Writes held now (a snapshot).
    pub(crate) fn held(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Wakes the admitter at close and waits for it to answer what it
    /// held. The caller has set `closed`.
    pub(crate) fn stop(&self) {
        {
            let _queue = lock(&self.queue);
            self.wake.notify_all();
        }
        if let Some(admitter) = lock(&self.admitter).take() {
            if admitter.join().is_err() {
                tracing::error!(target: "factwal::wal", "the admitter thread panicked");
            }
        }
    }
}

pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) tables: RwLock<Option<Tables>>,
    pub(crate) overlay: Arc<Overlay>,
    pub(crate) wal: Option<Wal<Record>>,
    /// Direct mode: serialises writes. The next LSN is always the one after
    /// `applied_lsn`: each direct write is one commit that lands or not.
    pub(crate) direct_writes: Mutex<()>,
    /// The `applied_lsn` redb holds, as of the last fold.
    pub(crate) applied_lsn: AtomicU64,
    pub(crate) checkpoint: CheckpointState,
    pub(crate) closed: AtomicBool,
    /// Held for the whole close sequence: closes never run side by side.
    pub(crate) close_serial: Mutex<()>,
    /// The data directory's lock, and the WAL directory's when it is another.
    pub(crate) lock_files: Mutex<Vec<File>>,
    /// Why redb is not open while the store is: a reopen after an I/O
    /// failure failed (see `reopen_state_if_failed`).
    pub(crate) state_failure: Mutex<Option<Error>>,
    /// A failed sync of `state.redb` was reported (once, as an ERROR).
    pub(crate) state_sync_failure_reported: AtomicBool,
    /// The thread that leads groups of writes queued without a thread of
    /// their own (`Store::write_async`), started by the first of them and
    /// joined by the close once the WAL is stopped.
    pub(crate) committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// `write_async`'s writes held back at `persistence.wal_bytes_max`,
    /// and the thread that queues them once there is room.
    pub(crate) line: Line,
    /// Writes without a thread accepted and not yet settled (bounded by
    /// `persistence.max_writes_in_flight`).
    pub(crate) in_flight: Arc<AtomicU64>,
    pub(crate) recovery: RecoveryReport,
    /// Opens `state.redb` again after an I/O failure redb latched.
    pub(crate) state_io: Arc<dyn StateIo>,
    pub(crate) store_id: StoreId,
    /// The WAL directory as recorded in `state.redb` (absolute).
    pub(crate) wal_dir_recorded: PathBuf,
}

/// Runs the close sequence once; `None` when it already ran.
pub(crate) fn shutdown(core: &Core) -> Option<CloseReport> {
    // A second close (close_shared from two threads, or Drop) waits for the
    // first to finish, then finds it done.
    let _serial = lock(&core.close_serial);
    if core.closed.swap(true, Ordering::AcqRel) {
        return None;
    }
    if let Some(wal) = &core.wal {
        wal.stop();
    }
    // The committer returns once `stop` has let it lead what was queued.
    if let Some(committer) = lock(&core.committer).take() {
        if committer.join().is_err() {
            tracing::error!(target: "factwal::wal", "the WAL's commit thread panicked");
        }
    }
    // Writes still held back by back-pressure were never queued: `Closed`.
    core.line.stop();
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
    // A checkpoint thread that did not stop may still write to redb, and a
    // reader that kept redb open still holds it: the lock stays with them,
    // and is released when the last of them drops the store's core.
    let lock_released = loop_joined && redb_close.is_ok();
    if lock_released {
        lock(&core.lock_files).clear();
    } else {
        tracing::error!(target: "factwal::checkpoint", path = %core.config.persistence.data_dir.display(),
            "close: directory lock kept until the checkpoint thread ends and redb is released");
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
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(1))
            }
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
    pub(crate) fn tables(&self) -> Result<RwLockReadGuard<'_, Option<Tables>>> {
        let guard = read(&self.tables);
        if guard.is_none() {
            return Err(match lock(&self.state_failure).as_ref() {
                Some(failure) if !self.closed.load(Ordering::Acquire) => failure.clone(),
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
    ///
    /// Never after a failed sync of the file: then the file is not to be
    /// trusted again in this process (see `Tables::sync_failed`), nothing
    /// more is folded into it and no segment is removed on its strength, and
    /// this says so with [`Error::StateSyncFailed`]. The next open recovers
    /// from what the disk holds and the WAL.
    pub(crate) fn reopen_state_if_failed(&self) -> Result<()> {
        if let Some(cause) = read(&self.tables).as_ref().and_then(Tables::sync_failed) {
            let path = self.config.state_path();
            if !self.state_sync_failure_reported.swap(true, Ordering::AcqRel) {
                tracing::error!(target: "factwal::checkpoint", path = %path.display(), error = %error_chain(&cause),
                    "a sync of state.redb failed: the kernel may have dropped what it could not write, so nothing more \
                     is folded into it until the store is reopened; the WAL keeps every record since the last good \
                     commit, and writes go on until persistence.wal_bytes_max");
            }
            return Err(Error::StateSyncFailed { path, cause: Arc::new(cause) });
        }
        let needed = |guard: &Option<Tables>| match guard {
            Some(tables) => tables.needs_reopen(),
            None => lock(&self.state_failure).is_some() && !self.closed.load(Ordering::Acquire),
        };
        if !needed(&read(&self.tables)) {
            return Ok(());
        }
        let mut guard = write(&self.tables);
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
            .map_err(|e| Error::io(&path, IoOp::Open, "state file again", e))
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
                *lock(&self.state_failure) = Some(error.clone());
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
        let closing = mode == CheckpointMode::Truncate
            && self.wal.is_some()
            && self.closed.load(Ordering::Acquire);
        let fold = |report: &mut PassReport| -> Result<()> {
            let generations = self.overlay.freeze();
            report.log_frames = generations.iter().map(|g| g.records).sum();
            report.applied_lsn = self.applied_lsn_cached();
            let lsn_last = generations.last().map(|g| g.lsn_last);
            if lsn_last.is_some() || closing {
                let lsn = lsn_last.unwrap_or(report.applied_lsn);
                let epoch = self.wal.as_ref().map_or(0, Wal::epoch);
                let mark = closing.then_some(WalMark {
                    dir: &self.wal_dir_recorded,
                    in_use: false,
                    epoch,
                });
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
            (Some(wal), CheckpointMode::Truncate) => {
                wal.truncate_with(|| fold(&mut report)).map(|removed| {
                    report.segments_removed = removed;
                })
            }
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

impl Checkpointed for Core {
    fn checkpoint_state(&self) -> &CheckpointState {
        &self.checkpoint
    }

    fn run_pass(&self, mode: CheckpointMode) -> Result<PassReport> {
        Core::run_pass(self, mode)
    }

    fn applied_lsn_cached(&self) -> Lsn {
        Core::applied_lsn_cached(self)
    }

    fn lsn_last_acknowledged(&self) -> Lsn {
        Core::lsn_last_acknowledged(self)
    }

    fn prepare_next_segment(&self) {
        Core::prepare_next_segment(self)
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
