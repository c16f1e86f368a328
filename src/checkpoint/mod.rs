//! Folding the WAL into redb: checkpoint passes and the loop that runs them.
//!
//! A pass freezes the overlay's active generation (a short hand-off: writers
//! keep appending to a fresh one), folds every frozen generation into redb in
//! ONE durable transaction that also records the new `applied_lsn`, drops
//! those generations from the overlay, and only then removes the segments the
//! commit covers (invariant 6).
//!
//! Passes never overlap. The single loop thread is the mechanism that keeps
//! the periodic passes apart; a manual [`Store::checkpoint`](crate::Store::checkpoint),
//! a writer relieving back-pressure, and the close path all take the same
//! checkpoint lock for the whole pass, so at most one pass runs at a time.
//!
//! Every pass, whoever runs it, emits one INFO event on target
//! `factwal::checkpoint` (mode, busy, log_frames, checkpointed_frames,
//! elapsed_ms), a WARN "checkpoint slow" with the same counters when it took
//! longer than `checkpoint.warn_ms`, and records its duration for
//! [`CheckpointStats`]. A failed pass is an ERROR with the whole error chain
//! and its context (mode, LSN range, WAL directory); the loop carries on at
//! the next tick.

mod pass;
mod stats;
mod thread;

use std::time::Duration;

use crate::config::Config;
use crate::error::{Lsn, Result};

pub(crate) use pass::{checkpoint_pass, millis, timeout, CheckpointState};
pub use stats::CheckpointStats;
pub use thread::LoopStart;
pub(crate) use thread::{request_early_pass, start_loop, stop_loop};

/// What the checkpoint machinery needs of the store it checkpoints (the
/// store's core implements it): the pass itself, the state shared by all who
/// run passes, and what the events name. It keeps `checkpoint/` from
/// depending on the store.
pub(crate) trait Checkpointed: Send + Sync + 'static {
    /// The lock, samples and loop control shared by everyone who runs passes.
    fn checkpoint_state(&self) -> &CheckpointState;
    /// One pass, uninstrumented; the caller holds the checkpoint lock.
    fn run_pass(&self, mode: CheckpointMode) -> Result<PassReport>;
    /// The LSN redb holds, as of the last fold.
    fn applied_lsn_cached(&self) -> Lsn;
    /// The LSN of the last acknowledged write.
    fn lsn_last_acknowledged(&self) -> Lsn;
    /// Makes the next WAL segment's file ahead of need (WAL mode only).
    fn prepare_next_segment(&self);
    /// The store's configuration: its directories name what failed.
    fn config(&self) -> &Config;
    /// True once the store's close has begun: no loop may start after it.
    fn is_closed(&self) -> bool;
}

/// How much a pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckpointMode {
    /// Fold what is there and remove the segments the fold covers; writers
    /// carry on meanwhile.
    #[default]
    Passive,
    /// Fold everything, then remove every segment, the active one included
    /// (a new one is started if the store stays open). Writers wait for it.
    Truncate,
}

impl CheckpointMode {
    /// "passive" or "truncate", as in the checkpoint events.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "passive",
            CheckpointMode::Truncate => "truncate",
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassReport {
    /// The pass's mode.
    pub mode: CheckpointMode,
    /// True when the pass could not fold every record that was in the WAL
    /// when it began.
    pub busy: bool,
    /// Records in the WAL, not yet folded, when the pass began. (A "frame"
    /// here is a record: the two counts keep the names SQLite's
    /// `wal_checkpoint` gives them, which the observability contract and the
    /// pass's events use; everywhere else factwal says "record".)
    pub log_frames: u64,
    /// Records this pass folded.
    pub checkpointed_frames: u64,
    /// The `applied_lsn` redb holds after the pass.
    pub applied_lsn: Lsn,
    /// Segment files removed.
    pub segments_removed: usize,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

impl PassReport {
    pub(crate) fn begin(mode: CheckpointMode) -> Self {
        PassReport {
            mode,
            busy: false,
            log_frames: 0,
            checkpointed_frames: 0,
            applied_lsn: 0,
            segments_removed: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Elapsed milliseconds (microsecond resolution), as in the events.
    pub fn elapsed_ms(&self) -> f64 {
        millis(self.elapsed)
    }
}
