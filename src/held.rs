//! Writes without a thread, held back by back-pressure: where
//! [`Store::write_async`](crate::Store::write_async) leaves a batch when the
//! WAL is at `persistence.wal_bytes_max`, so that no caller's thread runs
//! (or waits for) the checkpoint pass that makes room, and the bound on
//! such writes in flight (`persistence.max_writes_in_flight`).
//!
//! A blocking `write` at the limit runs the pass itself, on its own
//! thread. A task cannot: it would block the runtime's thread. So its
//! batch joins the *line*, a queue in call order with its mailbox already
//! made (the caller holds the receipt), and one thread per store, the
//! *admitter*, started by the first held write, makes room as `write` would
//! (waits for the pass in progress, runs one if the WAL is still full) and
//! then queues every held batch into the WAL's group commit, in order. The
//! caller's task waits for its ticket like any other; no thread waits for
//! it.
//!
//! Order: a batch is held when the line is not empty, not only when the WAL
//! is full, and the admitter empties the line (queueing each batch into the
//! WAL) before the line counts as empty again, so batches from one caller
//! reach the WAL in the order they were written. A blocking `write` that
//! finds the line not empty goes through it too.
//!
//! Lock rule: the line's lock is taken before the WAL's (`Wal::submit`
//! under it keeps the order), never the other way, and nothing else is
//! taken under it. Outcomes (refusals) are settled after it is released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use crate::checkpoint::{self, checkpoint_pass, CheckpointMode};
use crate::core::{Core, HeldWrite, Record};
use crate::error::{Error, IoOp, Result};
use crate::sync::lock;
use crate::wal::{Pending, Refused};

/// Queues a task's write into the WAL, or holds it in the line when the
/// WAL is full or the line is not empty. Never blocks on I/O or a pass.
pub(crate) fn queue_or_hold(core: &Arc<Core>, payload: Vec<u8>, record: Record, pending: Pending) {
    let Some(wal) = &core.wal else {
        unreachable!("only WAL mode queues writes");
    };
    let full = wal_full(core);
    let line = &core.line;
    if !full && line.count.load(Ordering::Acquire) == 0 {
        return settle_refused(wal.submit(payload, record, pending));
    }
    if let Err(error) = start_admitter(core) {
        return pending.settle(Err(error));
    }
    let mut queue = lock(&line.queue);
    if core.closed.load(Ordering::Acquire) {
        drop(queue);
        return pending.settle(Err(Error::Closed));
    }
    if queue.is_empty() && !wal_full(core) {
        let refused = wal.submit(payload, record, pending);
        drop(queue);
        return settle_refused(refused);
    }
    queue.push_back(HeldWrite { payload, record, pending });
    line.count.store(queue.len(), Ordering::Release);
    line.wake.notify_one();
}

/// True at `persistence.wal_bytes_max`; past `checkpoint.wal_bytes_trigger`
/// it also wakes the checkpoint loop early.
pub(crate) fn wal_full(core: &Core) -> bool {
    let bytes = core.overlay.bytes();
    if bytes >= core.config.checkpoint.wal_bytes_trigger {
        checkpoint::request_early_pass(core);
    }
    bytes >= core.config.persistence.wal_bytes_max
}

/// Back-pressure, on the calling thread: waits for the pass in progress
/// (the checkpoint lock) and, if the WAL is still full after it, runs one.
pub(crate) fn make_room(core: &Core) -> Result<()> {
    let held = lock(&core.checkpoint.lock);
    if core.closed.load(Ordering::Acquire) {
        return Err(Error::Closed);
    }
    if core.overlay.bytes() >= core.config.persistence.wal_bytes_max {
        checkpoint_pass(core, CheckpointMode::Passive, &held)?;
    }
    Ok(())
}

fn settle_refused(refused: std::result::Result<(), Refused>) {
    if let Err(Refused { error, pending }) = refused {
        pending.settle(Err(error));
    }
}

/// Starts the admitter once.
fn start_admitter(core: &Arc<Core>) -> Result<()> {
    let mut admitter = lock(&core.line.admitter);
    if admitter.is_some() {
        return Ok(());
    }
    let owned = Arc::clone(core);
    let dispatch = tracing::dispatcher::get_default(|dispatch| dispatch.clone());
    let spawned = std::thread::Builder::new().name("factwal-admit".into()).spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || admit(&owned));
    });
    let handle = spawned.map_err(|source| {
        Error::io(&core.config.persistence.data_dir, IoOp::Spawn, "admitter thread", source)
    })?;
    *admitter = Some(handle);
    Ok(())
}

/// The admitter: whenever writes are held, makes room and queues them all
/// into the WAL, in order; a failure to make room is every held write's
/// outcome (none of them was written). At close, the held writes are
/// answered `Closed`.
fn admit(core: &Core) {
    let line = &core.line;
    loop {
        {
            let mut queue = lock(&line.queue);
            while queue.is_empty() && !core.closed.load(Ordering::Acquire) {
                queue = line.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
            if core.closed.load(Ordering::Acquire) {
                let closing: Vec<HeldWrite> = queue.drain(..).collect();
                line.count.store(0, Ordering::Release);
                drop(queue);
                for write in closing {
                    write.pending.settle(Err(Error::Closed));
                }
                return;
            }
        }
        let started = std::time::Instant::now();
        let room = make_room(core);
        let mut queue = lock(&line.queue);
        let writes: Vec<HeldWrite> = queue.drain(..).collect();
        tracing::debug!(target: "factwal::wal", held = writes.len(),
            waited_ms = started.elapsed().as_secs_f64() * 1e3, room = room.is_ok(),
            "back-pressure: held async writes admitted after a checkpoint pass");
        let mut unsettled = Vec::new();
        match &room {
            Ok(()) => {
                let wal = core.wal.as_ref().expect("only WAL mode holds writes");
                for write in writes {
                    if let Err(refused) = wal.submit(write.payload, write.record, write.pending) {
                        unsettled.push((refused.pending, refused.error));
                    }
                }
            }
            Err(error) => {
                unsettled.extend(writes.into_iter().map(|write| (write.pending, error.clone())));
            }
        }
        line.count.store(0, Ordering::Release);
        drop(queue);
        for (pending, error) in unsettled {
            pending.settle(Err(error));
        }
    }
}

/// A write without a thread counted against `persistence.max_writes_in_flight`
/// from its call until its outcome is posted (the WAL's mailbox drops it).
pub(crate) struct InFlight(Arc<AtomicU64>);

impl InFlight {
    /// Counts one more write in flight, or refuses at the bound.
    pub(crate) fn take(count: &Arc<AtomicU64>, limit: u64) -> Result<InFlight> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::LimitExceeded {
                what: "writes in flight (persistence.max_writes_in_flight)",
                actual: before + 1,
                limit,
            });
        }
        Ok(InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
