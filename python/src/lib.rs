//! `factwal._factwal`: the Rust side of the Python package. The Python
//! module `factwal` (python/factwal/__init__.py) re-exports what is here and
//! adds the asyncio API on top of [`Completions`].
//!
//! Every call that can wait for the disk, redb or another thread releases
//! the GIL (`Python::detach`), so Python threads writing at once share
//! syncs as Rust threads do. No thread of factwal's ever takes the GIL: an
//! async write is completed through a pipe the event loop watches.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyString};

use factwal::{Batch as RustBatch, CheckpointMode, Config, Error, Lsn, Op, RecoveryMode};

create_exception!(_factwal, FactwalError, PyException, "Base class of every factwal error.");
create_exception!(_factwal, ConfigError, FactwalError, "The configuration is refused.");
create_exception!(_factwal, IoError, FactwalError, "A file or directory operation failed.");
create_exception!(
    _factwal,
    Locked,
    FactwalError,
    "Another open store or process holds the directory."
);
create_exception!(_factwal, Corrupted, FactwalError, "The WAL is damaged.");
create_exception!(_factwal, StateCorrupted, FactwalError, "state.redb is damaged.");
create_exception!(
    _factwal,
    ForeignSegment,
    FactwalError,
    "A WAL segment belongs to another store."
);
create_exception!(
    _factwal,
    WalMismatch,
    FactwalError,
    "The WAL directory does not fit state.redb."
);
create_exception!(
    _factwal,
    UnsupportedFormatVersion,
    FactwalError,
    "A newer factwal wrote these files."
);
create_exception!(_factwal, Poisoned, FactwalError, "An earlier sync failed: reopen the store.");
create_exception!(
    _factwal,
    StateSyncFailed,
    FactwalError,
    "A sync of state.redb failed: nothing more is folded until reopen."
);
create_exception!(
    _factwal,
    LimitExceeded,
    FactwalError,
    "A limit was exceeded; nothing was written."
);
create_exception!(_factwal, Closed, FactwalError, "The store is closed.");
create_exception!(
    _factwal,
    InvalidArgument,
    FactwalError,
    "An argument is invalid; nothing was written."
);
create_exception!(_factwal, RedbError, FactwalError, "redb failed.");
create_exception!(_factwal, Timeout, FactwalError, "A wait timed out.");
create_exception!(
    _factwal,
    InternalError,
    FactwalError,
    "An internal failure (a panic) was caught."
);

/// The Python exception for `error`, with its message and what it names as
/// attributes (`path`, `offset`, `lsn`, `kind`, `key`, `what`, `actual`,
/// `limit`, `operation`, `errno`, `cause`), `None` where it names nothing.
fn to_py(error: Error) -> PyErr {
    Python::attach(|py| {
        let message = error.to_string();
        let (pyerr, attrs): (PyErr, Vec<(&str, Py<PyAny>)>) = match &error {
            Error::Io { path, operation, what, source } => (
                IoError::new_err(message),
                vec![
                    ("path", path_obj(py, path)),
                    ("operation", text(py, &format!("{operation:?}"))),
                    ("what", text(py, what)),
                    (
                        "errno",
                        source
                            .raw_os_error()
                            .map_or_else(|| py.None(), |errno| int_obj(py, errno as u64)),
                    ),
                ],
            ),
            Error::Corrupted { path, offset, lsn, kind } => (
                Corrupted::new_err(message),
                vec![
                    ("path", path_obj(py, path)),
                    ("offset", int_obj(py, *offset)),
                    ("lsn", int_obj(py, *lsn)),
                    ("kind", text(py, &kind.to_string())),
                ],
            ),
            Error::StateCorrupted { path, kind, .. } => (
                StateCorrupted::new_err(message),
                vec![("path", path_obj(py, path)), ("kind", text(py, &kind.to_string()))],
            ),
            Error::ForeignSegment { path, .. } => {
                (ForeignSegment::new_err(message), vec![("path", path_obj(py, path))])
            }
            Error::WalMismatch { wal_dir, .. } => {
                (WalMismatch::new_err(message), vec![("path", path_obj(py, wal_dir))])
            }
            Error::UnsupportedFormatVersion { path, .. } => {
                (UnsupportedFormatVersion::new_err(message), vec![("path", path_obj(py, path))])
            }
            Error::Locked { path } => {
                (Locked::new_err(message), vec![("path", path_obj(py, path))])
            }
            Error::LimitExceeded { what, actual, limit } => (
                LimitExceeded::new_err(message),
                vec![
                    ("what", text(py, what)),
                    ("actual", int_obj(py, *actual)),
                    ("limit", int_obj(py, *limit)),
                ],
            ),
            Error::Poisoned { cause } => {
                (Poisoned::new_err(message), vec![("cause", text(py, &cause.to_string()))])
            }
            Error::StateSyncFailed { path, cause } => (
                StateSyncFailed::new_err(message),
                vec![("path", path_obj(py, path)), ("cause", text(py, &cause.to_string()))],
            ),
            Error::Closed => (Closed::new_err(message), vec![]),
            Error::Config { path, key, .. } => (
                ConfigError::new_err(message),
                vec![("path", path_obj(py, path)), ("key", text(py, key))],
            ),
            Error::Redb { path, .. } => {
                (RedbError::new_err(message), vec![("path", path_obj(py, path))])
            }
            Error::Timeout { .. } => (Timeout::new_err(message), vec![]),
            Error::InvalidArgument(_) => (InvalidArgument::new_err(message), vec![]),
            Error::Panicked { .. } => (InternalError::new_err(message), vec![]),
            _ => (FactwalError::new_err(message), vec![]),
        };
        let value = pyerr.value(py);
        for name in [
            "path",
            "offset",
            "lsn",
            "kind",
            "key",
            "what",
            "actual",
            "limit",
            "operation",
            "errno",
            "cause",
        ] {
            let _ = value.setattr(name, py.None());
        }
        for (name, attr) in attrs {
            let _ = value.setattr(name, attr);
        }
        pyerr
    })
}

fn text(py: Python<'_>, text: &str) -> Py<PyAny> {
    PyString::new(py, text).into_any().unbind()
}

fn path_obj(py: Python<'_>, path: &std::path::Path) -> Py<PyAny> {
    text(py, &path.display().to_string())
}

fn int_obj(py: Python<'_>, value: u64) -> Py<PyAny> {
    match value.into_pyobject(py) {
        Ok(int) => int.into_any().unbind(),
        Err(never) => match never {},
    }
}

trait OrPy<T> {
    fn or_py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for factwal::Result<T> {
    fn or_py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Operations written together: all land or none does.
#[pyclass(module = "factwal._factwal", skip_from_py_object)]
#[derive(Clone, Default)]
struct Batch {
    ops: Vec<Op>,
}

#[pymethods]
impl Batch {
    #[new]
    fn new() -> Self {
        Batch::default()
    }

    /// Adds: set `fact` of `session` to `value` (bytes). Returns the batch.
    fn assert_fact<'py>(
        mut slf: PyRefMut<'py, Self>,
        session: String,
        fact: String,
        value: PyBackedBytes,
    ) -> PyRefMut<'py, Self> {
        slf.ops.push(Op::Assert { session, fact, value: value.to_vec() });
        slf
    }

    /// Adds: remove `fact` of `session`. Returns the batch.
    fn retract_fact<'py>(
        mut slf: PyRefMut<'py, Self>,
        session: String,
        fact: String,
    ) -> PyRefMut<'py, Self> {
        slf.ops.push(Op::Retract { session, fact });
        slf
    }

    /// Adds: remove every fact of `session`. Returns the batch.
    fn drop_session<'py>(mut slf: PyRefMut<'py, Self>, session: String) -> PyRefMut<'py, Self> {
        slf.ops.push(Op::DropSession { session });
        slf
    }

    fn __len__(&self) -> usize {
        self.ops.len()
    }

    fn __repr__(&self) -> String {
        format!("Batch({} operations)", self.ops.len())
    }
}

impl Batch {
    fn to_rust(&self) -> RustBatch {
        RustBatch::from(self.ops.clone())
    }
}

/// The configuration: a TOML file (`config`) or the defaults for
/// `data_dir`, then each keyword that is not `None`.
#[allow(clippy::too_many_arguments)]
fn build_config(
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    wal_path: Option<PathBuf>,
    wal_enabled: Option<bool>,
    segment_bytes: Option<u64>,
    max_record_bytes: Option<u64>,
    wal_bytes_max: Option<u64>,
    recovery_mode: Option<String>,
    redb_cache_bytes: Option<u64>,
    max_writes_in_flight: Option<u64>,
) -> PyResult<Config> {
    let mut built =
        match (&config, &data_dir) {
            (Some(path), _) => Config::from_file(path).or_py()?,
            (None, Some(dir)) => Config::new(dir),
            (None, None) => return Err(InvalidArgument::new_err(
                "invalid argument: give data_dir, or a config file that names persistence.data_dir",
            )),
        };
    if let Some(dir) = data_dir {
        built.persistence.data_dir = dir;
    }
    if let Some(path) = wal_path {
        built = built.wal_path(path);
    }
    if let Some(enabled) = wal_enabled {
        built = built.wal_enabled(enabled);
    }
    if let Some(bytes) = segment_bytes {
        built = built.segment_bytes(bytes);
    }
    if let Some(bytes) = max_record_bytes {
        built = built.max_record_bytes(bytes);
    }
    if let Some(bytes) = wal_bytes_max {
        built = built.wal_bytes_max(bytes);
    }
    if let Some(mode) = recovery_mode {
        let mode = match mode.as_str() {
            "tolerate-corrupted-tail" => RecoveryMode::TolerateCorruptedTail,
            "absolute-consistency" => RecoveryMode::AbsoluteConsistency,
            "point-in-time" => RecoveryMode::PointInTime,
            other => {
                return Err(ConfigError::new_err(format!(
                "config error: recovery_mode = {other:?}: expected \"tolerate-corrupted-tail\", \
                     \"absolute-consistency\" or \"point-in-time\""
            )))
            }
        };
        built = built.recovery_mode(mode);
    }
    if let Some(bytes) = redb_cache_bytes {
        built = built.redb_cache_bytes(bytes);
    }
    if let Some(writes) = max_writes_in_flight {
        built = built.max_writes_in_flight(writes);
    }
    Ok(built)
}

/// What `stats()` returns.
#[pyclass(module = "factwal._factwal", get_all, frozen)]
struct Stats {
    lsn_last: u64,
    applied_lsn: u64,
    unfolded_records: u64,
    unfolded_bytes: u64,
    wal_records: u64,
    wal_groups: u64,
    segments_created: u64,
    writes_in_flight: u64,
    writes_held: u64,
}

#[pymethods]
impl Stats {
    fn __repr__(&self) -> String {
        format!(
            "Stats(lsn_last={}, applied_lsn={}, unfolded_records={}, unfolded_bytes={}, wal_records={}, \
             wal_groups={}, segments_created={}, writes_in_flight={}, writes_held={})",
            self.lsn_last,
            self.applied_lsn,
            self.unfolded_records,
            self.unfolded_bytes,
            self.wal_records,
            self.wal_groups,
            self.segments_created,
            self.writes_in_flight,
            self.writes_held
        )
    }
}

/// What a checkpoint pass did.
#[pyclass(module = "factwal._factwal", get_all, frozen)]
struct PassReport {
    mode: String,
    busy: bool,
    log_frames: u64,
    checkpointed_frames: u64,
    applied_lsn: u64,
    segments_removed: usize,
    elapsed_s: f64,
}

#[pymethods]
impl PassReport {
    fn __repr__(&self) -> String {
        format!(
            "PassReport(mode={:?}, busy={}, log_frames={}, checkpointed_frames={}, applied_lsn={}, \
             segments_removed={}, elapsed_s={:.6})",
            self.mode,
            self.busy,
            self.log_frames,
            self.checkpointed_frames,
            self.applied_lsn,
            self.segments_removed,
            self.elapsed_s
        )
    }
}

impl From<factwal::PassReport> for PassReport {
    fn from(report: factwal::PassReport) -> Self {
        PassReport {
            mode: report.mode.as_str().to_string(),
            busy: report.busy,
            log_frames: report.log_frames,
            checkpointed_frames: report.checkpointed_frames,
            applied_lsn: report.applied_lsn,
            segments_removed: report.segments_removed,
            elapsed_s: report.elapsed.as_secs_f64(),
        }
    }
}

/// Checkpoint pass durations: count and percentiles in seconds (`None`
/// before the first pass).
#[pyclass(module = "factwal._factwal", get_all, frozen)]
struct CheckpointStats {
    n: usize,
    p50_s: Option<f64>,
    p95_s: Option<f64>,
    max_s: Option<f64>,
}

#[pymethods]
impl CheckpointStats {
    fn __repr__(&self) -> String {
        format!(
            "CheckpointStats(n={}, p50_s={:?}, p95_s={:?}, max_s={:?})",
            self.n, self.p50_s, self.p95_s, self.max_s
        )
    }
}

impl From<factwal::CheckpointStats> for CheckpointStats {
    fn from(stats: factwal::CheckpointStats) -> Self {
        let seconds = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        CheckpointStats {
            n: stats.n,
            p50_s: seconds(stats.p50),
            p95_s: seconds(stats.p95),
            max_s: seconds(stats.max),
        }
    }
}

/// What `close()` did: `clean` when every step succeeded; otherwise the
/// failed steps' messages (the WAL stays for the next open to replay).
#[pyclass(module = "factwal._factwal", get_all, frozen)]
struct CloseReport {
    clean: bool,
    loop_joined: bool,
    lock_released: bool,
    truncate_error: Option<String>,
    redb_close_error: Option<String>,
    loop_failure: Option<String>,
}

#[pymethods]
impl CloseReport {
    fn __repr__(&self) -> String {
        format!(
            "CloseReport(clean={}, loop_joined={}, lock_released={}, truncate_error={:?}, redb_close_error={:?}, \
             loop_failure={:?})",
            self.clean, self.loop_joined, self.lock_released, self.truncate_error, self.redb_close_error, self.loop_failure
        )
    }

    fn __bool__(&self) -> bool {
        self.clean
    }
}

impl From<factwal::CloseReport> for CloseReport {
    fn from(report: factwal::CloseReport) -> Self {
        CloseReport {
            clean: report.is_clean(),
            loop_joined: report.loop_joined,
            lock_released: report.lock_released,
            truncate_error: report.truncate.as_ref().err().map(ToString::to_string),
            redb_close_error: report.redb_close.as_ref().err().map(ToString::to_string),
            loop_failure: report.loop_failure.clone(),
        }
    }
}

fn facts_dict<'py>(
    py: Python<'py>,
    facts: BTreeMap<String, Vec<u8>>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (fact, value) in facts {
        dict.set_item(fact, PyBytes::new(py, &value))?;
    }
    Ok(dict)
}

/// An open store (the Python `factwal.Store` adds the context manager and
/// the asyncio API).
#[pyclass(module = "factwal._factwal", subclass, frozen)]
struct Store {
    store: Arc<factwal::Store>,
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (data_dir=None, *, config=None, wal_path=None, wal_enabled=None, segment_bytes=None,
        max_record_bytes=None, wal_bytes_max=None, recovery_mode=None, redb_cache_bytes=None,
        max_writes_in_flight=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data_dir: Option<PathBuf>,
        config: Option<PathBuf>,
        wal_path: Option<PathBuf>,
        wal_enabled: Option<bool>,
        segment_bytes: Option<u64>,
        max_record_bytes: Option<u64>,
        wal_bytes_max: Option<u64>,
        recovery_mode: Option<String>,
        redb_cache_bytes: Option<u64>,
        max_writes_in_flight: Option<u64>,
    ) -> PyResult<Self> {
        let config = build_config(
            data_dir,
            config,
            wal_path,
            wal_enabled,
            segment_bytes,
            max_record_bytes,
            wal_bytes_max,
            recovery_mode,
            redb_cache_bytes,
            max_writes_in_flight,
        )?;
        let store = py.detach(|| factwal::Store::open(config)).or_py()?;
        Ok(Store { store: Arc::new(store) })
    }

    /// Writes the batch atomically; returns its LSN once it is durable.
    fn write(&self, py: Python<'_>, batch: &Batch) -> PyResult<Lsn> {
        let batch = batch.to_rust();
        py.detach(|| self.store.write(batch)).or_py()
    }

    /// Sets one fact; returns the LSN once durable.
    fn assert_fact(
        &self,
        py: Python<'_>,
        session: String,
        fact: String,
        value: PyBackedBytes,
    ) -> PyResult<Lsn> {
        let batch = RustBatch::new().assert(session, fact, value.to_vec());
        py.detach(|| self.store.write(batch)).or_py()
    }

    /// Removes one fact; returns the LSN once durable.
    fn retract_fact(&self, py: Python<'_>, session: String, fact: String) -> PyResult<Lsn> {
        let batch = RustBatch::new().retract(session, fact);
        py.detach(|| self.store.write(batch)).or_py()
    }

    /// Removes a session's facts; returns the LSN once durable.
    fn drop_session(&self, py: Python<'_>, session: String) -> PyResult<Lsn> {
        let batch = RustBatch::new().drop_session(session);
        py.detach(|| self.store.write(batch)).or_py()
    }

    /// Queues the batch without waiting; its outcome arrives through
    /// `completions` under `token` (the asyncio API's plumbing).
    fn submit(&self, batch: &Batch, completions: &Completions, token: u64) {
        let ticket = self.store.write_async(batch.to_rust());
        TicketWaker::start(ticket, token, completions.shared.clone());
    }

    fn fact<'py>(
        &self,
        py: Python<'py>,
        session: String,
        fact: String,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = py.detach(|| self.store.fact(&session, &fact)).or_py()?;
        Ok(value.map(|value| PyBytes::new(py, &value)))
    }

    fn facts<'py>(&self, py: Python<'py>, session: String) -> PyResult<Bound<'py, PyDict>> {
        let facts = py.detach(|| self.store.facts(&session)).or_py()?;
        facts_dict(py, facts)
    }

    fn sessions(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.store.sessions()).or_py()
    }

    #[pyo3(signature = (mode="passive"))]
    fn checkpoint(&self, py: Python<'_>, mode: &str) -> PyResult<PassReport> {
        let mode = match mode {
            "passive" => CheckpointMode::Passive,
            "truncate" => CheckpointMode::Truncate,
            other => {
                return Err(InvalidArgument::new_err(format!(
                "invalid argument: checkpoint mode {other:?}: expected \"passive\" or \"truncate\""
            )))
            }
        };
        Ok(py.detach(|| self.store.checkpoint(mode)).or_py()?.into())
    }

    /// Starts the checkpoint loop; returns "started", "already-running" or
    /// "disabled" (interval 0).
    fn start_checkpoint_loop(&self, py: Python<'_>, interval_s: f64) -> PyResult<&'static str> {
        if !interval_s.is_finite() || interval_s < 0.0 {
            return Err(InvalidArgument::new_err(format!(
                "invalid argument: interval_s = {interval_s}: must be a finite number of seconds, at least 0"
            )));
        }
        let interval = Duration::from_secs_f64(interval_s);
        let started = py.detach(|| self.store.start_checkpoint_loop(interval)).or_py()?;
        Ok(match started {
            factwal::LoopStart::Started => "started",
            factwal::LoopStart::AlreadyRunning => "already-running",
            _ => "disabled",
        })
    }

    fn stats(&self) -> PyResult<Stats> {
        let stats = self.store.stats().or_py()?;
        Ok(Stats {
            lsn_last: stats.lsn_last,
            applied_lsn: stats.applied_lsn,
            unfolded_records: stats.unfolded.records,
            unfolded_bytes: stats.unfolded.bytes,
            wal_records: stats.wal.records,
            wal_groups: stats.wal.groups,
            segments_created: stats.wal.segments_created,
            writes_in_flight: stats.writes_in_flight,
            writes_held: stats.writes_held,
        })
    }

    fn checkpoint_stats(&self) -> CheckpointStats {
        self.store.checkpoint_stats().into()
    }

    /// Closes the store (idempotent: a second close reports nothing done).
    fn close(&self, py: Python<'_>) -> CloseReport {
        py.detach(|| self.store.close_shared()).into()
    }

    #[getter]
    fn store_id(&self) -> String {
        self.store.store_id().to_string()
    }

    #[getter]
    fn data_dir(&self) -> String {
        self.store.data_dir().display().to_string()
    }
}

/// A store opened for reading only, while no writer has it open; changes
/// no file.
#[pyclass(module = "factwal._factwal", subclass, frozen)]
struct ReadOnlyStore {
    store: Mutex<Option<factwal::ReadOnlyStore>>,
}

impl ReadOnlyStore {
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        read: impl FnOnce(&factwal::ReadOnlyStore) -> factwal::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            match store.as_ref() {
                Some(store) => read(store),
                None => Err(Error::Closed),
            }
        })
        .or_py()
    }
}

#[pymethods]
impl ReadOnlyStore {
    #[new]
    #[pyo3(signature = (data_dir=None, *, config=None, wal_path=None))]
    fn new(
        py: Python<'_>,
        data_dir: Option<PathBuf>,
        config: Option<PathBuf>,
        wal_path: Option<PathBuf>,
    ) -> PyResult<Self> {
        let config =
            build_config(data_dir, config, wal_path, None, None, None, None, None, None, None)?;
        let store = py.detach(|| factwal::ReadOnlyStore::open(&config)).or_py()?;
        Ok(ReadOnlyStore { store: Mutex::new(Some(store)) })
    }

    fn fact<'py>(
        &self,
        py: Python<'py>,
        session: String,
        fact: String,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = self.with(py, |store| store.fact(&session, &fact))?;
        Ok(value.map(|value| PyBytes::new(py, &value)))
    }

    fn facts<'py>(&self, py: Python<'py>, session: String) -> PyResult<Bound<'py, PyDict>> {
        let facts = self.with(py, |store| store.facts(&session))?;
        facts_dict(py, facts)
    }

    fn sessions(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |store| store.sessions())
    }

    fn close(&self) {
        self.store.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Where async writes' outcomes wait for the event loop: a queue and a
/// pipe. The thread that finishes a write's group pushes the outcome and,
/// if the queue was empty, writes one byte to the pipe; the loop, watching
/// the pipe's read end (`loop.add_reader`), drains both. That thread never
/// takes the GIL.
#[pyclass(module = "factwal._factwal", frozen)]
struct Completions {
    shared: Arc<Shared>,
}

struct Shared {
    done: Mutex<Vec<(u64, factwal::Result<Lsn>)>>,
    read_end: OwnedFd,
    write_end: OwnedFd,
}

impl Shared {
    fn push(&self, token: u64, outcome: factwal::Result<Lsn>) {
        let was_empty = {
            let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
            done.push((token, outcome));
            done.len() == 1
        };
        if was_empty {
            // Non-blocking: a full pipe already has bytes the loop will read.
            // SAFETY: writes one byte from a valid buffer to an open fd.
            let _ = unsafe { libc::write(self.write_end.as_raw_fd(), b"!".as_ptr().cast(), 1) };
        }
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds, which OwnedFd then owns.
        let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if made != 0 {
            let error = std::io::Error::last_os_error();
            return Err(IoError::new_err(format!(
                "I/O error: pipe for async completions: {error}"
            )));
        }
        // SAFETY: both fds were just made and are owned by nothing else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Completions {
            shared: Arc::new(Shared { done: Mutex::new(Vec::new()), read_end, write_end }),
        })
    }

    /// The pipe's read end, for `loop.add_reader`.
    fn fileno(&self) -> i32 {
        self.shared.read_end.as_raw_fd()
    }

    /// Empties the pipe and returns every outcome since the last drain:
    /// `(token, lsn, None)` or `(token, None, exception)`.
    fn drain(&self, py: Python<'_>) -> Vec<(u64, Option<Lsn>, Option<PyErr>)> {
        let mut scratch = [0u8; 256];
        // SAFETY: reads into a valid buffer from an open, non-blocking fd.
        while unsafe {
            libc::read(self.shared.read_end.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len())
        } > 0
        {}
        let done =
            std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(PoisonError::into_inner));
        let _ = py;
        done.into_iter()
            .map(|(token, outcome)| match outcome {
                Ok(lsn) => (token, Some(lsn), None),
                Err(error) => (token, None, Some(to_py(error))),
            })
            .collect()
    }
}

/// A ticket's waker: polls the ticket when woken and, once it is ready,
/// hands the outcome to the completions.
struct TicketWaker {
    ticket: Mutex<Option<factwal::WriteTicket>>,
    token: u64,
    shared: Arc<Shared>,
}

impl TicketWaker {
    fn start(ticket: factwal::WriteTicket, token: u64, shared: Arc<Shared>) {
        let waker = Arc::new(TicketWaker { ticket: Mutex::new(Some(ticket)), token, shared });
        waker.poll();
    }

    fn poll(self: &Arc<Self>) {
        let mut slot = self.ticket.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ticket) = slot.as_mut() else { return };
        let waker = Waker::from(self.clone());
        if let Poll::Ready(outcome) = Pin::new(ticket).poll(&mut Context::from_waker(&waker)) {
            slot.take();
            drop(slot);
            self.shared.push(self.token, outcome);
        }
    }
}

impl Wake for TicketWaker {
    fn wake(self: Arc<Self>) {
        self.poll();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.poll();
    }
}

/// Raises the exception one example of each error kind becomes, so that
/// the tests check every kind's class and attributes, including those no
/// test can provoke from Python (a failed fsync, a caught panic). Not API.
#[pyfunction]
fn _raise_for_test(kind: &str) -> PyResult<()> {
    let path = PathBuf::from("/data/wal/00000000000000000003.wal");
    let eio = || Arc::new(std::io::Error::from_raw_os_error(libc::EIO));
    let io = Error::Io {
        path: path.clone(),
        operation: factwal::IoOp::Sync,
        what: "segment",
        source: eio(),
    };
    let error = match kind {
        "Io" => io,
        "Corrupted" => Error::Corrupted {
            path,
            offset: 4096,
            lsn: 17,
            kind: factwal::CorruptionKind::ChecksumMismatch,
        },
        "StateCorrupted" => Error::StateCorrupted {
            path: PathBuf::from("/data/state.redb"),
            kind: factwal::StateDamage::ChecksumMismatch,
            detail: "fact s1/f1".into(),
        },
        "ForeignSegment" => Error::ForeignSegment {
            path,
            segment_store: None,
            state: PathBuf::from("/data/state.redb"),
            store: None,
        },
        "WalMismatch" => Error::WalMismatch {
            wal_dir: PathBuf::from("/data/wal"),
            state: PathBuf::from("/data/state.redb"),
            detail: "another store's".into(),
        },
        "UnsupportedFormatVersion" => {
            Error::UnsupportedFormatVersion { path, found: 3, supported: 2 }
        }
        "Panicked" => Error::Panicked { what: "folding", message: "boom".into() },
        "Locked" => Error::Locked { path: PathBuf::from("/data/LOCK") },
        "LimitExceeded" => Error::LimitExceeded { what: "record bytes", actual: 5000, limit: 4096 },
        "Poisoned" => Error::Poisoned { cause: Arc::new(io) },
        "StateSyncFailed" => {
            Error::StateSyncFailed { path: PathBuf::from("/data/state.redb"), cause: Arc::new(io) }
        }
        "Closed" => Error::Closed,
        "Config" => Error::Config {
            path: PathBuf::from("/etc/factwal.toml"),
            key: "persistence.segment_bytes".into(),
            value: "1".into(),
            reason: "too small".into(),
        },
        "Timeout" => Error::Timeout { what: "the checkpoint thread", waited_ms: 5000 },
        "InvalidArgument" => Error::InvalidArgument("an empty batch".into()),
        other => return Err(InvalidArgument::new_err(format!("no example error {other:?}"))),
    };
    Err(to_py(error))
}

#[pymodule]
fn _factwal(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(_raise_for_test, module)?)?;
    let py = module.py();
    module.add_class::<Batch>()?;
    module.add_class::<Store>()?;
    module.add_class::<ReadOnlyStore>()?;
    module.add_class::<Completions>()?;
    module.add_class::<Stats>()?;
    module.add_class::<PassReport>()?;
    module.add_class::<CheckpointStats>()?;
    module.add_class::<CloseReport>()?;
    module.add("Error", py.get_type::<FactwalError>())?;
    module.add("ConfigError", py.get_type::<ConfigError>())?;
    module.add("IoError", py.get_type::<IoError>())?;
    module.add("Locked", py.get_type::<Locked>())?;
    module.add("Corrupted", py.get_type::<Corrupted>())?;
    module.add("StateCorrupted", py.get_type::<StateCorrupted>())?;
    module.add("ForeignSegment", py.get_type::<ForeignSegment>())?;
    module.add("WalMismatch", py.get_type::<WalMismatch>())?;
    module.add("UnsupportedFormatVersion", py.get_type::<UnsupportedFormatVersion>())?;
    module.add("Poisoned", py.get_type::<Poisoned>())?;
    module.add("StateSyncFailed", py.get_type::<StateSyncFailed>())?;
    module.add("LimitExceeded", py.get_type::<LimitExceeded>())?;
    module.add("Closed", py.get_type::<Closed>())?;
    module.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    module.add("RedbError", py.get_type::<RedbError>())?;
    module.add("Timeout", py.get_type::<Timeout>())?;
    module.add("InternalError", py.get_type::<InternalError>())?;
    module.add("ID_BYTES_MAX", factwal::ID_BYTES_MAX)?;
    module.add("BATCH_OPS_MAX", factwal::BATCH_OPS_MAX)?;
    Ok(())
}
