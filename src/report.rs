//! What the store reports: on close, at open, and in its counters.

use std::path::PathBuf;

use crate::checkpoint::{CheckpointStats, PassReport};
use crate::error::{Lsn, Result};
use crate::state::OverlayStats;
use crate::wal::recovery::Repair;
use crate::wal::WalCounters;

/// What [`Store::close`](crate::Store::close) did. Close never stops half-way: each step runs even
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
                Repair::TornTail { path, offset, bytes } => {
                    report.torn_tail = Some((path.clone(), *offset, *bytes))
                }
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
#[non_exhaustive]
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
    /// Writes without a thread (`Store::write_async`) accepted and not yet
    /// settled, bounded by `persistence.max_writes_in_flight`.
    pub writes_in_flight: u64,
    /// Of those, the ones held back at `persistence.wal_bytes_max`, waiting
    /// for a checkpoint pass before they are queued into the WAL.
    pub writes_held: u64,
}
