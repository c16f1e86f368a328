//! Folding the WAL into redb: one checkpoint pass.
//!
//! A pass freezes the overlay's active generation (a short hand-off: writers
//! keep appending to a fresh one), folds every frozen generation into redb in
//! ONE durable transaction that also records the new `applied_lsn`, drops
//! those generations from the overlay, and only then removes the segments the
//! commit covers (invariant 6). Passes never overlap: every caller takes the
//! store's checkpoint lock for the whole pass.

use std::time::{Duration, Instant};

use crate::error::Lsn;

/// How much a pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
pub struct PassReport {
    /// The pass's mode.
    pub mode: CheckpointMode,
    /// True when the pass could not fold every record that was in the WAL
    /// when it began.
    pub busy: bool,
    /// Records in the WAL, not yet folded, when the pass began.
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
    pub(crate) fn begin(mode: CheckpointMode) -> (Self, Instant) {
        let report = PassReport {
            mode,
            busy: false,
            log_frames: 0,
            checkpointed_frames: 0,
            applied_lsn: 0,
            segments_removed: 0,
            elapsed: Duration::ZERO,
        };
        (report, Instant::now())
    }

    /// Elapsed milliseconds, as in the checkpoint events.
    pub fn elapsed_ms(&self) -> u64 {
        self.elapsed.as_millis() as u64
    }
}
