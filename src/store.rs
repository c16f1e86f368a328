//! The façade: [`Store`] ties the WAL, the overlay and redb together.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::batch::Batch;
use crate::checkpoint::{
    self, checkpoint_pass, CheckpointMode, CheckpointState, CheckpointStats, LoopStart, PassReport,
};
use crate::config::Config;
use crate::core::{shutdown, Core, Line, Record};
use crate::error::{Error, IoOp, Lsn, Result};
use crate::held::{self, InFlight};
use crate::identity::StoreId;
use crate::open::{absolute, open_store, Opened};
use crate::report::{CloseReport, RecoveryReport, StoreStats};
use crate::state::{FactLookup, Generation, Overlay, StateIo, StdStateIo, Tables, View, WalMark};
use crate::sync::lock;
use crate::ticket::WriteTicket;
use crate::wal::io::{StdIo, WalIo};
use crate::wal::{Pending, Release, Wal, WalOptions};

/// Most writes [`Store::write_many`] keeps in flight at once.
pub const WRITE_MANY_IN_FLIGHT: usize = 1024;

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
        f.debug_struct("Store")
            .field("data_dir", &self.core.config.persistence.data_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store described by `config`, recovering
    /// whatever the WAL holds. Starts no thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use factwal::{Config, Error, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(Config::new(dir.path()))?;
    /// assert_eq!(store.recovery().records_replayed, 0);
    /// // While it is open, no other store (in this process or another) opens it.
    /// assert!(matches!(Store::open(Config::new(dir.path())), Err(Error::Locked { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The checks made before recovery (configuration, locks, which WAL is
    /// the store's, what `state.redb` and the segments say) change nothing
    /// on disk when they refuse, but for the data directory and its lock
    /// file, made when missing. A failure during recovery leaves what it did
    /// so far (a new `state.redb`, records folded, segments removed), which
    /// the next open takes up. The errors:
    /// - `Config`: the configuration does not validate;
    /// - `Io`: a directory or file cannot be made, opened or read (the error
    ///   names it), or is of the wrong kind;
    /// - `Locked`: another open store or process holds the directory;
    /// - `Corrupted`: the WAL is damaged (see `persistence.recovery_mode`);
    /// - `WalMismatch`, `ForeignSegment`: the WAL directory is not this
    ///   store's, or not as `state.redb` left it;
    /// - `StateCorrupted`, `Redb`: `state.redb` is damaged;
    /// - `UnsupportedFormatVersion`: a newer factwal wrote the files.
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
    pub fn open_with(
        config: Config,
        io: Arc<dyn WalIo>,
        state_io: Arc<dyn StateIo>,
    ) -> Result<Store> {
        Store::open_on(config, io, state_io)
    }

    /// Opens over the given I/O layers under the WAL and under redb:
    /// recovery (`crate::open`), then the WAL, then the store around them.
    fn open_on(config: Config, io: Arc<dyn WalIo>, state_io: Arc<dyn StateIo>) -> Result<Store> {
        let opened = open_store(&config, &*io, &*state_io)?;
        let overlay = Arc::new(Overlay::default());
        let wal = match config.persistence.wal_enabled {
            true => Some(start_wal(&config, io, &opened, overlay.clone())?),
            false => None,
        };
        let core = assemble_core(config, opened, overlay, wal, state_io)?;
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
    ///
    /// # Examples
    ///
    /// ```
    /// use factwal::{Batch, Config, Error, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(Config::new(dir.path()))?;
    /// // Every operation of a batch lands, or none does.
    /// let batch = Batch::new().assert("s1", "risk", b"high".to_vec()).drop_session("s2");
    /// let lsn = store.write(batch)?;
    /// assert_eq!(store.stats()?.lsn_last, lsn);
    /// // A batch that breaks a rule is refused before anything is written.
    /// assert!(matches!(store.write(Batch::new()), Err(Error::InvalidArgument(_))));
    /// assert_eq!(store.stats()?.lsn_last, lsn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing is acknowledged when this fails:
    /// - `InvalidArgument` or `LimitExceeded`: an empty batch, or one over a
    ///   limit (operations, id bytes, `persistence.max_record_bytes`);
    /// - `Closed`: the store is closing or closed;
    /// - `Poisoned`: an earlier sync failed; the store must be reopened
    ///   (the cause is inside);
    /// - `Io`: the write failed (on a full disk, it may be retried once
    ///   space returns); in direct mode also `Redb` or `StateCorrupted`;
    /// - any error of the checkpoint pass a writer runs at
    ///   `persistence.wal_bytes_max` (back-pressure).
    pub fn write(&self, batch: Batch) -> Result<Lsn> {
        let payload = self.accept(&batch)?;
        let payload_bytes = payload.len() as u64;
        let Some(wal) = &self.core.wal else {
            return self.write_direct(batch, payload_bytes);
        };
        if self.core.line.held() > 0 {
            // Writes without a thread are held back: this one queues behind
            // them, so that one caller's writes keep their order.
            return self.queue_task(payload, (batch, payload_bytes), None).wait();
        }
        if held::wal_full(&self.core) {
            held::make_room(&self.core)?;
        }
        wal.append(payload, (batch, payload_bytes))
    }

    /// The checks every write passes before anything is queued, and its
    /// encoding.
    fn accept(&self, batch: &Batch) -> Result<Vec<u8>> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        batch.validate()?;
        let payload = batch.encode();
        let limit = self.core.config.persistence.max_record_bytes;
        if payload.len() as u64 > limit {
            return Err(Error::LimitExceeded {
                what: "record bytes",
                actual: payload.len() as u64,
                limit,
            });
        }
        Ok(payload)
    }

    /// Asserts (inserts or replaces) one fact.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.assert("s1", "risk", b"high")?;
    /// store.assert("s1", "risk", b"low")?;
    /// assert_eq!(store.fact("s1", "risk")?, Some(b"low".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`Store::write`].
    pub fn assert(&self, session: &str, fact: &str, value: &[u8]) -> Result<Lsn> {
        self.write(Batch::new().assert(session, fact, value))
    }

    /// Retracts (deletes) one fact.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.assert("s1", "risk", b"high")?;
    /// store.retract("s1", "risk")?;
    /// assert_eq!(store.fact("s1", "risk")?, None);
    /// // Retracting what is not there is a write like any other.
    /// store.retract("s1", "risk")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`Store::write`].
    pub fn retract(&self, session: &str, fact: &str) -> Result<Lsn> {
        self.write(Batch::new().retract(session, fact))
    }

    /// Drops a whole session.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.assert("s1", "risk", b"high")?;
    /// store.assert("s1", "score", b"7")?;
    /// store.drop_session("s1")?;
    /// assert!(store.facts("s1")?.is_empty());
    /// assert!(store.sessions()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`Store::write`].
    pub fn drop_session(&self, session: &str) -> Result<Lsn> {
        self.write(Batch::new().drop_session(session))
    }

    /// Writes a batch without holding the calling thread while it becomes
    /// durable: the batch is queued into the same group commit as
    /// [`Store::write`]'s, and the returned [`WriteTicket`] (a future, or
    /// [`WriteTicket::wait`] from a thread) resolves to its LSN once it is
    /// durable and visible, with `write`'s durability, ordering, failure and
    /// poisoning rules. The thread that finishes the group wakes it: no
    /// runtime is needed, and any executor works.
    ///
    /// The batch is accepted when this returns; dropping the ticket does not
    /// withdraw it. Batches written one after the other from one thread get
    /// LSNs in that order. The call itself never waits for the disk: it
    /// checks and encodes the batch and queues it. At
    /// `persistence.wal_bytes_max` (back-pressure), where `write` runs a
    /// checkpoint pass on its caller's thread, the batch waits in a line
    /// instead, and a thread of the store's makes room and queues it (a
    /// close before then resolves it to `Closed`, never written). At most
    /// `persistence.max_writes_in_flight` such writes are accepted and not
    /// yet settled; past it the ticket is ready with `LimitExceeded`. In
    /// direct mode (`wal_enabled = false`) there is no group commit to wait
    /// for: the write is committed to redb before this returns, and the
    /// ticket is ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use factwal::{Batch, Config, Store};
    ///
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(Config::new(dir.path()))?;
    /// // Three writes in flight from one thread, then their outcomes.
    /// let tickets: Vec<_> = (0..3)
    ///     .map(|i| store.write_async(Batch::new().assert("s1", format!("f{i}"), b"v".to_vec())))
    ///     .collect();
    /// let lsns: Vec<u64> = tickets.into_iter().map(|t| t.wait()).collect::<Result<_, _>>()?;
    /// assert_eq!(lsns, [1, 2, 3]);
    /// assert_eq!(store.facts("s1")?.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Through the ticket: those of [`Store::write`]; `LimitExceeded` past
    /// `persistence.max_writes_in_flight`; `Io` when the commit or the
    /// admitter thread cannot be started.
    pub fn write_async(&self, batch: Batch) -> WriteTicket {
        let payload = match self.accept(&batch) {
            Ok(payload) => payload,
            Err(refusal) => return WriteTicket::settled(Err(refusal)),
        };
        let payload_bytes = payload.len() as u64;
        if self.core.wal.is_none() {
            return WriteTicket::settled(self.write_direct(batch, payload_bytes));
        }
        let limit = self.core.config.persistence.max_writes_in_flight;
        match InFlight::take(&self.core.in_flight, limit) {
            Ok(permit) => self.queue_task(payload, (batch, payload_bytes), Some(permit)),
            Err(refusal) => WriteTicket::settled(Err(refusal)),
        }
    }

    /// Writes batches from one thread with many of them in flight at once,
    /// so they share syncs as concurrent writers do, and returns each
    /// outcome, in order: [`Store::write_async`] for each batch and
    /// [`WriteTicket::wait`] for each ticket, with at most
    /// [`WRITE_MANY_IN_FLIGHT`] (or `persistence.max_writes_in_flight`, if
    /// lower) in flight at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// use factwal::{Batch, Config, Store};
    ///
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(Config::new(dir.path()))?;
    /// let batches = (0..100).map(|i| Batch::new().assert("s1", format!("f{i}"), b"v".to_vec()));
    /// let outcomes = store.write_many(batches);
    /// assert!(outcomes.iter().all(|outcome| outcome.is_ok()));
    /// // A hundred writes, far fewer syncs.
    /// assert!(store.stats()?.wal.groups < 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Each outcome can be any error of [`Store::write_async`].
    pub fn write_many(&self, batches: impl IntoIterator<Item = Batch>) -> Vec<Result<Lsn>> {
        let limit = self.core.config.persistence.max_writes_in_flight;
        let window = WRITE_MANY_IN_FLIGHT.min(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut outcomes = Vec::new();
        let mut in_flight = std::collections::VecDeque::with_capacity(window);
        for batch in batches {
            if in_flight.len() >= window {
                outcomes.extend(in_flight.pop_front().map(WriteTicket::wait));
            }
            in_flight.push_back(self.write_async(batch));
        }
        outcomes.extend(in_flight.into_iter().map(WriteTicket::wait));
        outcomes
    }

    /// Queues a checked write without a thread to wait for it (or holds it
    /// back, see `crate::held`); `permit` counts it in flight until settled.
    fn queue_task(
        &self,
        payload: Vec<u8>,
        record: Record,
        permit: Option<InFlight>,
    ) -> WriteTicket {
        if let Err(error) = self.start_committer() {
            return WriteTicket::settled(Err(error));
        }
        let release = permit.map(|permit| Box::new(permit) as Release);
        let (pending, receipt) = Pending::new(release);
        held::queue_or_hold(&self.core, payload, record, pending);
        WriteTicket::queued(receipt)
    }

    /// Starts the thread that leads groups of `write_async`'s writes, once.
    fn start_committer(&self) -> Result<()> {
        let mut committer = lock(&self.core.committer);
        if committer.is_some() {
            return Ok(());
        }
        let core = Arc::clone(&self.core);
        let dispatch = tracing::dispatcher::get_default(|dispatch| dispatch.clone());
        let spawned = std::thread::Builder::new().name("factwal-commit".into()).spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                if let Some(wal) = &core.wal {
                    wal.commit_for_tasks();
                }
            });
        });
        let handle = spawned.map_err(|source| {
            Error::io(&self.core.config.persistence.data_dir, IoOp::Spawn, "commit thread", source)
        })?;
        *committer = Some(handle);
        Ok(())
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
                // A commit that failed for lack of space left the file as of
                // the last commit, which a reopen reads back (now, or before
                // the next write if this one fails too). After a failed sync
                // nothing is reopened: every later write is refused with
                // `StateSyncFailed` until the store is reopened.
                let _ = self.core.reopen_state_if_failed();
                Err(error)
            }
        }
    }

    fn tables(&self) -> Result<RwLockReadGuard<'_, Option<Tables>>> {
        self.core.tables()
    }

    fn view<R>(&self, read: impl FnOnce(&View<'_>) -> Result<R>) -> Result<R> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.core.state_reopen_failed() {
            // A failure here is the one `tables` reports.
            let _ = self.core.reopen_state_if_failed();
        }
        let tables = self.tables()?;
        let tables = tables.as_ref().ok_or(Error::Closed)?;
        read(&View { overlay: &self.core.overlay, tables })
    }

    /// One fact's value, as of every write acknowledged before this call.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.assert("s1", "risk", b"high")?;
    /// assert_eq!(store.fact("s1", "risk")?, Some(b"high".to_vec()));
    /// assert_eq!(store.fact("s1", "never-written")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed` once the store is closed; `StateCorrupted` when what
    /// `state.redb` returns fails its checksum (nothing wrong is returned);
    /// `Redb` or `Io` when redb cannot be read, or reopened after an I/O
    /// failure.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        // What the overlay knows needs no redb (which may be closed while a
        // full disk keeps it from reopening).
        match self.core.overlay.fact(session, fact) {
            FactLookup::Value(value) => Ok(Some(value)),
            FactLookup::Absent => Ok(None),
            FactLookup::Base => self.view(|view| view.fact(session, fact)),
        }
    }

    /// Every fact of a session, by fact id.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.write(factwal::Batch::new().assert("s1", "b", b"2".to_vec()).assert("s1", "a", b"1".to_vec()))?;
    /// let facts = store.facts("s1")?;
    /// assert_eq!(facts.keys().collect::<Vec<_>>(), ["a", "b"]);
    /// assert!(store.facts("s2")?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed` once the store is closed; `StateCorrupted` when what
    /// `state.redb` returns fails its checksum (nothing wrong is returned);
    /// `Redb` or `Io` when redb cannot be read, or reopened after an I/O
    /// failure.
    pub fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        self.view(|view| view.facts(session))
    }

    /// Every session holding at least one fact, sorted.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.assert("s2", "f", b"v")?;
    /// store.assert("s1", "f", b"v")?;
    /// assert_eq!(store.sessions()?, ["s1", "s2"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed` once the store is closed; `StateCorrupted` when what
    /// `state.redb` returns fails its checksum (nothing wrong is returned);
    /// `Redb` or `Io` when redb cannot be read, or reopened after an I/O
    /// failure.
    pub fn sessions(&self) -> Result<Vec<String>> {
        self.view(|view| view.sessions())
    }

    /// Runs one checkpoint pass now. Passes never overlap: this waits for a
    /// pass in progress (the loop's, say) to finish first. The pass is
    /// reported and sampled like the loop's.
    ///
    /// # Examples
    ///
    /// ```
    /// use factwal::{CheckpointMode, Config, Store};
    ///
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(Config::new(dir.path()))?;
    /// let lsn = store.assert("s1", "risk", b"high")?;
    /// assert_eq!(store.stats()?.applied_lsn, 0);
    /// let report = store.checkpoint(CheckpointMode::Passive)?;
    /// assert_eq!((report.applied_lsn, report.checkpointed_frames), (lsn, 1));
    /// assert_eq!(store.stats()?.applied_lsn, lsn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed`; `Poisoned` when the WAL failed in a way that leaves the
    /// overlay unsure (the next open recovers from disk); `Io`, `Redb` or
    /// `StateCorrupted` from the fold or the segment removal. A failed pass
    /// loses nothing acknowledged: the WAL keeps every record.
    pub fn checkpoint(&self, mode: CheckpointMode) -> Result<PassReport> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let held = lock(&self.core.checkpoint.lock);
        // A close may have begun while this waited for the lock.
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        checkpoint_pass(&*self.core, mode, &held)
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
    /// assert!(store.close().is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed`; `InvalidArgument` for an interval over a day; `Io` when the
    /// thread cannot be spawned.
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
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = factwal::Store::open(factwal::Config::new(dir.path()))?;
    /// store.assert("s1", "risk", b"high")?;
    /// let stats = store.stats()?;
    /// assert_eq!((stats.lsn_last, stats.applied_lsn, stats.unfolded.records), (1, 0, 1));
    /// assert_eq!((stats.wal.records, stats.wal.groups), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// None today: it reads counters only. The `Result` leaves room for
    /// figures that need redb.
    pub fn stats(&self) -> Result<StoreStats> {
        let lsn_next = match &self.core.wal {
            Some(wal) => wal.lsn_next(),
            None => self.core.applied_lsn_cached() + 1,
        };
        let applied_lsn = self.core.applied_lsn_cached();
        let wal = self.core.wal.as_ref().map(Wal::counters).unwrap_or_default();
        Ok(StoreStats {
            lsn_last: lsn_next - 1,
            applied_lsn,
            unfolded: self.core.overlay.stats(),
            wal,
            writes_in_flight: self.core.in_flight.load(Ordering::Acquire),
            writes_held: self.core.line.held() as u64,
        })
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
    /// call made after it begins returns `Error::Closed`, reads included,
    /// and no checkpoint loop can start. A read that holds redb is waited
    /// for (at most `checkpoint.join_timeout_s`). Once the checkpoint thread
    /// has stopped and redb is closed, the directory lock is released, so
    /// the store can be opened again while old handles linger (otherwise it
    /// is released when the last handle goes; the report says which). A
    /// second close waits for the first, then returns a report whose
    /// `truncate` and `redb_close` are `Err(Error::Closed)`.
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
        // Writes without a thread: the queued ones were led by the stop,
        // the held ones are answered `Closed` (never written), and neither
        // thread outlives the crash.
        if let Some(committer) = lock(&self.core.committer).take() {
            let _ = committer.join();
        }
        self.core.line.stop();
        checkpoint::stop_loop(&*self.core, self.core.join_timeout());
        drop(crate::sync::write(&self.core.tables).take());
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

/// Starts the WAL after recovery: its first segment follows the last one
/// recovery saw, its first LSN the last recovered one. Once that segment
/// exists acknowledged writes may wait in this WAL, so redb is told so (and
/// where the WAL is) before any write is taken.
fn start_wal(
    config: &Config,
    io: Arc<dyn WalIo>,
    opened: &Opened,
    overlay: Arc<Overlay>,
) -> Result<Wal<Record>> {
    let wal_dir = config.wal_dir();
    let epoch = new_epoch();
    let options = WalOptions {
        dir: wal_dir.clone(),
        segment_bytes: config.persistence.segment_bytes,
        max_record_bytes: config.persistence.max_record_bytes,
        store_id: opened.store_id,
        epoch,
    };
    let sink = Box::new(move |lsn_first, records| overlay.apply(lsn_first, records));
    let wal = Wal::start(io, options, opened.number_next, opened.lsn_last + 1, sink)?;
    opened.tables.mark_wal(WalMark { dir: &absolute(&wal_dir), in_use: true, epoch })?;
    Ok(wal)
}

/// The store's shared state around what recovery opened and the WAL.
fn assemble_core(
    config: Config,
    opened: Opened,
    overlay: Arc<Overlay>,
    wal: Option<Wal<Record>>,
    state_io: Arc<dyn StateIo>,
) -> Result<Core> {
    let applied_lsn = opened.tables.applied_lsn()?;
    let wal_dir_recorded = absolute(&config.wal_dir());
    let checkpoint = CheckpointState::new(config.checkpoint.samples, config.checkpoint.warn_ms);
    Ok(Core {
        config,
        tables: RwLock::new(Some(opened.tables)),
        overlay,
        wal,
        direct_writes: Mutex::new(()),
        applied_lsn: AtomicU64::new(applied_lsn),
        checkpoint,
        closed: AtomicBool::new(false),
        close_serial: Mutex::new(()),
        lock_files: Mutex::new(opened.locks),
        state_failure: Mutex::new(None),
        state_sync_failure_reported: AtomicBool::new(false),
        committer: Mutex::new(None),
        line: Line::default(),
        in_flight: Arc::new(AtomicU64::new(0)),
        recovery: opened.recovery,
        state_io,
        store_id: opened.store_id,
        wal_dir_recorded,
    })
}

/// A new opening's epoch: random, never 0 (format 1's "none").
fn new_epoch() -> u32 {
    (crate::identity::random_u64("factwal WAL epoch") as u32).max(1)
}

// The store is meant to be shared by many threads.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Store>();
};
