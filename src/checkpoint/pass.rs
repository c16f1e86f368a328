//! One checkpoint pass, instrumented: events, samples, and the test hooks.

use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "testing")]
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::stats::{CheckpointStats, Samples};
use super::thread::{LoopControl, LoopThread};
use super::{CheckpointMode, Checkpointed, PassReport};
use crate::error::error_chain;
use crate::error::{Error, Result};
use crate::sync::lock;

const TARGET: &str = "factwal::checkpoint";

/// Everything the store keeps for checkpointing.
#[derive(Debug)]
pub(crate) struct CheckpointState {
    /// Held for the whole of every pass: passes never overlap.
    pub(crate) lock: Mutex<()>,
    samples: Mutex<Samples>,
    warn_ms: u64,
    pub(crate) control: Mutex<LoopControl>,
    pub(crate) wake: Condvar,
    /// Set when a writer has asked the loop to run early; cleared by the loop.
    pub(crate) wake_pending: AtomicBool,
    pub(crate) thread: Mutex<Option<LoopThread>>,
    /// Why the loop thread died, if it did (a panic): close reports it.
    pub(crate) loop_failure: Mutex<Option<String>>,
    summary_emitted: AtomicBool,
    #[cfg(feature = "testing")]
    pub(crate) hooks: TestHooks,
}

/// What the tests may make a pass do, and what they may ask of it (feature
/// `testing`; a production build has none of it).
#[cfg(feature = "testing")]
#[derive(Debug, Default)]
pub(crate) struct TestHooks {
    delay_ns: AtomicU64,
    panic_next: AtomicBool,
    passes_active: AtomicUsize,
    passes_active_max: AtomicUsize,
}

#[cfg(feature = "testing")]
impl TestHooks {
    /// Makes every later pass sleep this long inside its measured time.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_ns.store(delay.as_nanos() as u64, Ordering::Release);
    }

    /// The next pass panics (as a bug inside it would).
    pub(crate) fn panic_next_pass(&self) {
        self.panic_next.store(true, Ordering::Release);
    }

    /// The most passes ever seen running at once (should be 1).
    pub(crate) fn passes_active_max(&self) -> usize {
        self.passes_active_max.load(Ordering::Acquire)
    }

    /// A pass begins: counted, delayed, or made to panic.
    fn enter(&self) {
        let active = self.passes_active.fetch_add(1, Ordering::AcqRel) + 1;
        self.passes_active_max.fetch_max(active, Ordering::AcqRel);
        let delay = self.delay_ns.load(Ordering::Acquire);
        if delay > 0 {
            std::thread::sleep(Duration::from_nanos(delay));
        }
        if self.panic_next.swap(false, Ordering::AcqRel) {
            self.passes_active.fetch_sub(1, Ordering::AcqRel);
            panic!("checkpoint pass test hook: a panic inside the pass");
        }
    }

    /// A pass ends.
    fn leave(&self) {
        self.passes_active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CheckpointState {
    pub(crate) fn new(samples: usize, warn_ms: u64) -> CheckpointState {
        CheckpointState {
            lock: Mutex::new(()),
            samples: Mutex::new(Samples::new(samples)),
            warn_ms,
            control: Mutex::new(LoopControl::default()),
            wake: Condvar::new(),
            wake_pending: AtomicBool::new(false),
            thread: Mutex::new(None),
            loop_failure: Mutex::new(None),
            summary_emitted: AtomicBool::new(false),
            #[cfg(feature = "testing")]
            hooks: TestHooks::default(),
        }
    }

    /// Takes the pass lock, waiting at most `timeout`.
    pub(crate) fn lock_within(&self, timeout: Duration) -> Option<MutexGuard<'_, ()>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lock.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    return Some(poisoned.into_inner())
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return None
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> CheckpointStats {
        lock(&self.samples).stats()
    }

    /// Emits the INFO "checkpoint summary" once per store.
    pub(crate) fn emit_summary(&self) {
        if self.summary_emitted.swap(true, Ordering::AcqRel) {
            return;
        }
        let stats = self.stats();
        match (stats.p50, stats.p95, stats.max) {
            (Some(p50), Some(p95), Some(max)) => tracing::info!(
                target: TARGET,
                n = stats.n,
                p50_ms = millis(p50),
                p95_ms = millis(p95),
                max_ms = millis(max),
                "checkpoint summary"
            ),
            _ => tracing::info!(target: TARGET, n = 0, "checkpoint summary"),
        }
    }
}

/// Milliseconds with microsecond resolution, for events.
pub(crate) fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// Runs one pass with the checkpoint lock held (`_held` proves it), then
/// reports it: INFO always, WARN when slow, ERROR with the error chain when it
/// failed. Its duration goes into the samples either way.
pub(crate) fn checkpoint_pass(
    core: &impl Checkpointed,
    mode: CheckpointMode,
    _held: &MutexGuard<'_, ()>,
) -> Result<PassReport> {
    let state = core.checkpoint_state();
    let started = Instant::now();
    #[cfg(feature = "testing")]
    state.hooks.enter();
    let lsn_before = core.applied_lsn_cached();
    let outcome = core.run_pass(mode).map(|mut report| {
        report.elapsed = started.elapsed();
        report
    });
    let elapsed = started.elapsed();
    #[cfg(feature = "testing")]
    state.hooks.leave();
    lock(&state.samples).record(elapsed);
    match &outcome {
        Ok(report) => report_pass(report, state.warn_ms),
        Err(error) => tracing::error!(
            target: TARGET,
            mode = mode.as_str(),
            lsn_from = lsn_before + 1,
            lsn_to = core.lsn_last_acknowledged(),
            wal_dir = %core.config().wal_dir().display(),
            elapsed_ms = millis(elapsed),
            error = %error_chain(error),
            "checkpoint pass failed"
        ),
    }
    outcome
}

fn report_pass(report: &PassReport, warn_ms: u64) {
    let elapsed_ms = millis(report.elapsed);
    tracing::info!(
        target: TARGET,
        mode = report.mode.as_str(),
        busy = report.busy,
        log_frames = report.log_frames,
        checkpointed_frames = report.checkpointed_frames,
        elapsed_ms,
        applied_lsn = report.applied_lsn,
        segments_removed = report.segments_removed,
        "checkpoint pass"
    );
    if elapsed_ms > warn_ms as f64 {
        tracing::warn!(
            target: TARGET,
            busy = report.busy,
            log_frames = report.log_frames,
            checkpointed_frames = report.checkpointed_frames,
            elapsed_ms,
            warn_ms,
            "checkpoint slow"
        );
    }
}

/// The error a close step reports when it could not get what it needed in time.
pub(crate) fn timeout(what: &'static str, waited: Duration) -> Error {
    Error::Timeout { what, waited_ms: waited.as_millis() as u64 }
}
