//! The checkpoint loop: one thread, started explicitly by the application,
//! running a PASSIVE pass on every tick, or earlier when writers report that
//! `checkpoint.wal_bytes_trigger` unfolded bytes have built up.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pass::checkpoint_pass;
use super::{CheckpointMode, Checkpointed};
use crate::config::CHECKPOINT_INTERVAL_S_MAX;
use crate::error::{panic_message, Error, IoOp, Result};
use crate::sync::lock;

const TARGET: &str = "factwal::checkpoint";

/// What the loop is told.
#[derive(Debug, Default)]
pub(crate) struct LoopControl {
    pub(crate) running: bool,
    pub(crate) stop: bool,
}

/// The running loop thread.
#[derive(Debug)]
pub(crate) struct LoopThread {
    handle: JoinHandle<()>,
    /// Disconnects when the thread ends (its sender is dropped), so close can
    /// wait for it with a timeout.
    ended: mpsc::Receiver<()>,
}

/// What `start_checkpoint_loop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopStart {
    /// A loop thread was started.
    Started,
    /// A loop was already running; nothing changed (its interval stays).
    AlreadyRunning,
    /// The interval was zero: no thread, no pass.
    Disabled,
}

/// Starts the loop thread unless one runs or `interval` is zero. The thread
/// inherits the caller's tracing dispatcher.
pub(crate) fn start_loop<S: Checkpointed>(core: &Arc<S>, interval: Duration) -> Result<LoopStart> {
    let interval_max = Duration::from_secs_f64(CHECKPOINT_INTERVAL_S_MAX);
    if interval > interval_max {
        return Err(Error::InvalidArgument(format!(
            "checkpoint interval {interval:?} is above the limit of {interval_max:?} (0 disables the loop)"
        )));
    }
    if interval.is_zero() {
        tracing::info!(target: TARGET, interval_s = 0.0, "checkpoint loop disabled: interval is 0, no thread started");
        return Ok(LoopStart::Disabled);
    }
    let mut thread = lock(&core.checkpoint_state().thread);
    if thread.is_some() {
        tracing::info!(target: TARGET, "checkpoint loop already running; this call changes nothing");
        return Ok(LoopStart::AlreadyRunning);
    }
    // Checked under the thread lock, which the close's stop_loop also takes:
    // either the close finds this thread and stops it, or this call sees
    // the close and starts nothing. A stop already asked is never cleared.
    if core.is_closed() {
        return Err(Error::Closed);
    }
    lock(&core.checkpoint_state().control).running = true;
    let dispatch = tracing::dispatcher::get_default(|dispatch| dispatch.clone());
    let (ended_sender, ended) = mpsc::channel::<()>();
    let loop_core = Arc::clone(core);
    let spawned = std::thread::Builder::new().name("factwal-checkpoint".into()).spawn(move || {
        let _ended = ended_sender;
        tracing::dispatcher::with_default(&dispatch, || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_loop(&*loop_core, interval)));
            if let Err(payload) = outcome {
                let message = panic_message(&*payload);
                tracing::error!(target: TARGET, panic = %message,
                    "checkpoint thread died: no more periodic passes (writers still fold under back-pressure)");
                *lock(&loop_core.checkpoint_state().loop_failure) = Some(message);
                lock(&loop_core.checkpoint_state().control).running = false;
            }
        });
    });
    match spawned {
        Ok(handle) => {
            *thread = Some(LoopThread { handle, ended });
            tracing::info!(target: TARGET, interval_s = interval.as_secs_f64(), "checkpoint loop started");
            Ok(LoopStart::Started)
        }
        Err(source) => {
            lock(&core.checkpoint_state().control).running = false;
            Err(Error::io(
                &core.config().persistence.data_dir,
                IoOp::Spawn,
                "checkpoint thread",
                source,
            ))
        }
    }
}

fn run_loop(core: &impl Checkpointed, interval: Duration) {
    let state = core.checkpoint_state();
    loop {
        let mut control = lock(&state.control);
        let deadline = Instant::now() + interval;
        loop {
            if control.stop || state.wake_pending.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            control = state
                .wake
                .wait_timeout(control, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if control.stop {
            break;
        }
        drop(control);
        state.wake_pending.store(false, Ordering::Release);
        let held = lock(&state.lock);
        if lock(&state.control).stop {
            break;
        }
        // Errors are reported (ERROR, with the chain) inside the pass; the
        // loop carries on at the next tick.
        let _ = checkpoint_pass(core, CheckpointMode::Passive, &held);
        drop(held);
        // Outside the pass (and its measurement): make the next segment's
        // file now, so the roll into it does not make writers wait.
        core.prepare_next_segment();
    }
    lock(&state.control).running = false;
}

/// Asks the loop to run a pass now (unfolded bytes passed the trigger).
pub(crate) fn request_early_pass(core: &impl Checkpointed) {
    let state = core.checkpoint_state();
    if !state.wake_pending.swap(true, Ordering::AcqRel) {
        let _control = lock(&state.control);
        state.wake.notify_one();
    }
}

/// Signals the loop to stop and waits for its thread at most `timeout`.
/// Returns false (after an ERROR) when the thread did not end in time; it is
/// then left to finish on its own.
pub(crate) fn stop_loop(core: &impl Checkpointed, timeout: Duration) -> bool {
    let state = core.checkpoint_state();
    lock(&state.control).stop = true;
    state.wake.notify_all();
    let Some(thread) = lock(&state.thread).take() else {
        return true;
    };
    match thread.ended.recv_timeout(timeout) {
        Err(RecvTimeoutError::Disconnected) => {
            if thread.handle.join().is_err() {
                tracing::error!(target: TARGET, "checkpoint thread panicked");
            }
            true
        }
        Ok(()) | Err(RecvTimeoutError::Timeout) => {
            tracing::error!(
                target: TARGET,
                join_timeout_s = timeout.as_secs_f64(),
                "checkpoint thread did not stop in time; closing without it"
            );
            false
        }
    }
}
