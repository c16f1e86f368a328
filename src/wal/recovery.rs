//! Reading the WAL back: scan every segment in order, check headers, salts,
//! checksums and the LSN chain, and decide what the bytes mean.
//!
//! The scan itself never changes anything. It returns the records to replay
//! and, when the log does not end cleanly, the [`Repair`] that opening the
//! store read-write applies before anything else. Corruption that the recovery
//! mode does not allow is an [`Error::Corrupted`] naming file, offset and LSN.
//!
//! The rules (docs/FORMAT.md has the long form):
//! - Every segment must belong to this store (its header's identity), be in
//!   a format version this build reads, and have the size its header gives.
//! - Segment numbers must be consecutive, and each segment's `lsn_first` must
//!   follow on from the LSNs before it. A later segment whose `lsn_first` is
//!   lower than the next LSN of the one before it marks the tail of that one
//!   as abandoned (written by a write that failed and was never acknowledged).
//! - Records are judged by the format's own bounds and their segment's size,
//!   never by today's `max_record_bytes`.
//! - In the last segment, an unreadable record with no valid record of the
//!   same segment after it is a torn tail: dropped with a WARN. It is what a
//!   crash leaves of a write that was never acknowledged, but the same bytes
//!   could be the last acknowledged record damaged later; the scan cannot
//!   tell the two apart, and says so.
//! - Anything else invalid is mid-log corruption.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CorruptionKind, Error, IoOp, Lsn, Result};
use crate::identity::StoreId;
use crate::wal::format::{
    self, Decoded, HeaderError, Search, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
use crate::wal::io::WalIo;
use crate::wal::segment::{is_temporary_file_name, parse_segment_file_name, segment_file_name};

/// What recovery does when the WAL does not end cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Drop an unreadable last record (what a crash leaves of a write it cut
    /// short, never acknowledged; or the last acknowledged record damaged
    /// later, which nothing tells apart) with a WARN; refuse to open on
    /// corruption anywhere else.
    #[default]
    TolerateCorruptedTail,
    /// Refuse to open even on an unreadable last record.
    AbsoluteConsistency,
    /// Keep the valid prefix of the log and drop everything after the first
    /// invalid record, with an ERROR. The operator's explicit choice.
    PointInTime,
}

/// One record read back from the WAL, its payload decoded into a `P` (for
/// the store, a [`Batch`](crate::Batch): the WAL itself knows nothing of what
/// a payload means).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecoveredRecord<P> {
    /// Its LSN.
    pub lsn: Lsn,
    /// The segment holding it.
    pub segment_number: u64,
    /// Its offset in that segment.
    pub offset: u64,
    /// The decoded payload.
    pub payload: P,
    /// Bytes of its payload.
    pub payload_bytes: u64,
}

impl<P> RecoveredRecord<P> {
    /// The file name of the segment holding it, e.g.
    /// `00000000000000000003.wal`.
    pub fn segment_file_name(&self) -> String {
        segment_file_name(self.segment_number)
    }

    /// Bytes it takes in its segment: record header and payload.
    pub fn bytes(&self) -> u64 {
        format::RECORD_HEADER_BYTES + self.payload_bytes
    }
}

/// What the scan found in one segment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// The segment file.
    pub path: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Offset just past its last valid record.
    pub end_offset: u64,
    /// Valid records it holds (those kept by recovery).
    pub records: u64,
    /// LSN of its last kept record, if any.
    pub lsn_last: Option<Lsn>,
}

/// A change recovery must make before the store is used.
#[derive(Debug)]
pub enum Repair {
    /// A torn tail: bytes at `offset` in the last segment that were never
    /// acknowledged. Zeroed when the store opens read-write.
    TornTail {
        /// The segment.
        path: PathBuf,
        /// Where the invalid bytes begin.
        offset: u64,
        /// How many non-zero bytes are dropped.
        bytes: u64,
    },
    /// Point-in-time recovery: everything from `corruption` on is dropped.
    DropAfter {
        /// What was found; its path and offset are where the kept prefix ends.
        corruption: Box<Error>,
        /// Segments wholly after the cut, removed when the store opens read-write.
        removed_segments: Vec<PathBuf>,
        /// What is dropped that could still be read.
        dropped: Dropped,
    },
}

/// What point-in-time recovery drops beyond the damage that could still be
/// read: records with a valid checksum of their own segment, found after the
/// cut, whatever their order. Records whose bytes are damaged cannot be
/// counted; the LSN where the kept prefix ends says what is certainly kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// Readable records dropped.
    pub records: u64,
    /// The lowest and highest LSN among them.
    pub lsn_range: Option<(Lsn, Lsn)>,
    /// Non-zero bytes dropped after the cut in the segment holding it.
    pub tail_bytes: u64,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lsn_range {
            Some((first, last)) => {
                write!(f, "{} readable records (LSN {first}..={last})", self.records)?
            }
            None => f.write_str("no readable record")?,
        }
        write!(
            f,
            "; {} non-zero bytes zeroed in the damaged segment from the cut on",
            self.tail_bytes
        )
    }
}

/// The outcome of a scan.
#[derive(Debug)]
pub struct Recovered<P> {
    /// Every segment kept, in order.
    pub segments: Vec<SegmentSummary>,
    /// Records with LSN above `applied_lsn` (all records with `keep_folded`),
    /// in order.
    pub records: Vec<RecoveredRecord<P>>,
    /// The last LSN of the log, or `applied_lsn` when the log holds nothing later.
    pub lsn_last: Lsn,
    /// Repairs to make, if the log did not end cleanly.
    pub repairs: Vec<Repair>,
    /// Leftover temporary files from an interrupted segment creation.
    pub temporary_files: Vec<PathBuf>,
}

/// Which segments may be in the WAL, from what `state.redb` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A store made by format 1: no identity, and only format-1 segments.
    Format1,
    /// The WAL may hold acknowledged records redb lacks: every segment must
    /// be this store's and written by the opening whose epoch redb recorded.
    InUse {
        /// The store.
        store_id: StoreId,
        /// The epoch of the opening that was using the WAL.
        epoch: u32,
    },
    /// redb holds everything acknowledged that the WAL ever held (the last
    /// close was clean, or no WAL-mode open ever ran). Segments of this store
    /// may be left over from a removal that failed or was cut short. Only
    /// the opening that marked the store clean (`epoch`) can have left a
    /// record redb lacks: a write of its that failed, never acknowledged.
    /// Such a record in a segment of any other opening comes from another
    /// copy of the store.
    Idle {
        /// The store.
        store_id: StoreId,
        /// The opening that marked the store clean (0: none).
        epoch: u32,
    },
}

impl Owner {
    fn store_id(self) -> Option<StoreId> {
        match self {
            Owner::Format1 => None,
            Owner::InUse { store_id, .. } | Owner::Idle { store_id, .. } => Some(store_id),
        }
    }
}

/// How to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// The LSN redb already holds. When unknown (`None`), the scan checks
    /// everything that does not depend on it (every header, checksum, payload
    /// and the LSN chain) and keeps no record.
    pub applied_lsn: Option<Lsn>,
    /// What to do when the log does not end cleanly.
    pub mode: RecoveryMode,
    /// Keep records at or below `applied_lsn` too (for inspection tools).
    pub keep_folded: bool,
    /// Which segments may be in the WAL.
    pub owner: Owner,
    /// The redb file that says which store this is, named in a refusal.
    pub state_path: PathBuf,
}

/// What a payload must decode as; a payload it refuses (`None`) is
/// [`CorruptionKind::BadPayload`].
pub type Decode<P> = fn(&[u8]) -> Option<P>;

/// Scans the WAL directory, decoding every payload with `decode`.
pub fn scan<P>(
    io: &dyn WalIo,
    dir: &Path,
    options: &ScanOptions,
    decode: Decode<P>,
) -> Result<Recovered<P>> {
    let ScanOptions { applied_lsn, mode, keep_folded, .. } = *options;
    let mut recovered = Recovered {
        segments: Vec::new(),
        records: Vec::new(),
        lsn_last: applied_lsn.unwrap_or(0),
        repairs: Vec::new(),
        temporary_files: Vec::new(),
    };
    let names = match io.list(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(recovered),
        Err(error) => return Err(Error::io(dir, IoOp::List, "WAL directory", error)),
    };
    let mut numbers: Vec<u64> =
        names.iter().filter_map(|name| parse_segment_file_name(name)).collect();
    numbers.sort_unstable();
    recovered.temporary_files = names
        .iter()
        .filter(|name| is_temporary_file_name(name))
        .map(|name| dir.join(name))
        .collect();

    let owner = options.owner;
    let state_path = options.state_path.as_path();
    let mut scanner =
        Scanner { dir, applied_lsn, keep_folded, owner, state_path, decode, recovered };
    for (index, &number) in numbers.iter().enumerate() {
        let is_last = index + 1 == numbers.len();
        if let Err(corruption) = scanner.scan_segment(io, number, is_last) {
            if mode != RecoveryMode::PointInTime || !matches!(corruption, Error::Corrupted { .. }) {
                return Err(corruption);
            }
            // Every segment from here on goes, except one whose valid prefix
            // was kept (its summary was recorded; it is zeroed from the
            // corruption on instead).
            let kept = |path: &PathBuf| {
                scanner.recovered.segments.iter().any(|segment| &segment.path == path)
            };
            let removed_segments: Vec<PathBuf> = numbers[index..]
                .iter()
                .map(|&n| dir.join(segment_file_name(n)))
                .filter(|path| !kept(path))
                .collect();
            let dropped =
                describe_dropped(io, &corruption, &scanner.recovered.segments, &removed_segments);
            scanner.recovered.repairs.push(Repair::DropAfter {
                corruption: Box::new(corruption),
                removed_segments,
                dropped,
            });
            break;
        }
    }
    // After the whole scan, when records abandoned by a failed write are
    // already dropped: nothing redb lacks may come from another opening.
    scanner.check_idle()?;
    if mode == RecoveryMode::AbsoluteConsistency {
        if let Some(Repair::TornTail { path, offset, .. }) = scanner.recovered.repairs.first() {
            let lsn = scanner.recovered.lsn_last + 1;
            return Err(Error::Corrupted {
                path: path.clone(),
                offset: *offset,
                lsn,
                kind: CorruptionKind::TornTail,
            });
        }
    }
    debug_assert_scan_postconditions(&scanner.recovered, applied_lsn, keep_folded);
    Ok(scanner.recovered)
}

/// What every successful scan hands back: records dense and in LSN order,
/// none past the log's last LSN, none already folded unless asked for.
fn debug_assert_scan_postconditions<P>(
    recovered: &Recovered<P>,
    applied_lsn: Option<Lsn>,
    keep_folded: bool,
) {
    let records = &recovered.records;
    debug_assert!(
        records.windows(2).all(|pair| pair[1].lsn == pair[0].lsn + 1),
        "recovered records are dense and in LSN order"
    );
    debug_assert!(
        records.last().is_none_or(|last| last.lsn <= recovered.lsn_last),
        "no record past the log's last LSN"
    );
    debug_assert!(
        keep_folded || records.iter().all(|r| applied_lsn.is_some_and(|applied| r.lsn > applied)),
        "only unfolded records are kept"
    );
    debug_assert!(
        recovered.lsn_last >= applied_lsn.unwrap_or(0),
        "the log never ends before what redb holds"
    );
}

struct Scanner<'a, P> {
    dir: &'a Path,
    applied_lsn: Option<Lsn>,
    keep_folded: bool,
    owner: Owner,
    state_path: &'a Path,
    decode: Decode<P>,
    recovered: Recovered<P>,
}

impl<P> Scanner<'_, P> {
    /// The LSN the next record of the log must carry.
    fn lsn_expected(&self) -> Lsn {
        match self.recovered.segments.last() {
            Some(segment) => segment.lsn_last.map_or(segment.header.lsn_first, |lsn| lsn + 1),
            None => self.applied_lsn.unwrap_or(0) + 1,
        }
    }

    fn scan_segment(&mut self, io: &dyn WalIo, number: u64, is_last: bool) -> Result<()> {
        let path = self.dir.join(segment_file_name(number));
        let corrupted = |path: &Path, offset, lsn, kind| Error::Corrupted {
            path: path.to_path_buf(),
            offset,
            lsn,
            kind,
        };
        if let Some(previous) = self.recovered.segments.last() {
            if number != previous.header.number + 1 {
                let missing = self.dir.join(segment_file_name(previous.header.number + 1));
                return Err(corrupted(
                    &missing,
                    0,
                    self.lsn_expected(),
                    CorruptionKind::MissingSegment,
                ));
            }
        }
        let bytes = io.read(&path).map_err(|e| Error::io(&path, IoOp::Read, "segment", e))?;
        let bytes: &[u8] = (*bytes).as_ref();
        let lsn_expected = self.lsn_expected();
        let header = match SegmentHeader::decode(bytes) {
            Ok(header) => header,
            Err(HeaderError::NewerVersion(found)) => {
                return Err(Error::UnsupportedFormatVersion {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                })
            }
            Err(HeaderError::Invalid) => {
                return Err(corrupted(&path, 0, lsn_expected, CorruptionKind::BadSegmentHeader))
            }
        };
        if header.number != number {
            return Err(corrupted(&path, 0, lsn_expected, CorruptionKind::SegmentNumberMismatch));
        }
        self.check_owner(&path, &header)?;
        self.check_chain(&path, &header, lsn_expected)?;

        let mut summary = SegmentSummary {
            path: path.clone(),
            header,
            file_bytes: bytes.len() as u64,
            end_offset: SEGMENT_HEADER_BYTES,
            records: 0,
            lsn_last: None,
        };
        // The summary is kept even when the segment turns out corrupted, so
        // that point-in-time recovery keeps its valid prefix.
        let outcome = self.read_records(&path, &header, bytes, &mut summary).and_then(|lsn_next| {
            // Segments are preallocated whole: a file of another size was
            // cut short (or extended) after it was written, and whatever the
            // missing part held is gone. Never a clean end.
            let file_bytes = bytes.len() as u64;
            if file_bytes != header.segment_bytes {
                let kind = CorruptionKind::SegmentSizeMismatch {
                    file_bytes,
                    header_bytes: header.segment_bytes,
                };
                return Err(corrupted(&path, summary.end_offset, lsn_next, kind));
            }
            if is_last {
                self.check_tail(&path, &header, bytes, summary.end_offset, lsn_next)
            } else {
                Ok(())
            }
        });
        if let Some(lsn_last) = summary.lsn_last {
            self.recovered.lsn_last = self.recovered.lsn_last.max(lsn_last);
        }
        self.recovered.segments.push(summary);
        outcome
    }

    /// Reads the valid records at the start of a segment, in LSN order, and
    /// returns the LSN the next one would carry.
    fn read_records(
        &mut self,
        path: &Path,
        header: &SegmentHeader,
        bytes: &[u8],
        summary: &mut SegmentSummary,
    ) -> Result<Lsn> {
        let mut lsn_next = header.lsn_first;
        loop {
            let frame = bytes.get(summary.end_offset as usize..).map_or(Decoded::Zeroes, |rest| {
                format::decode_record(rest, header, header.max_record_bytes())
            });
            let Decoded::Valid { lsn, payload, encoded_bytes } = frame else { return Ok(lsn_next) };
            if lsn != lsn_next {
                return Ok(lsn_next);
            }
            // Every payload is decoded, folded or not, so that every scan
            // (read-write open, read-only inspection, before or after redb is
            // known) applies the same rule to the same bytes.
            let decoded = (self.decode)(payload).ok_or_else(|| Error::Corrupted {
                path: path.to_path_buf(),
                offset: summary.end_offset,
                lsn,
                kind: CorruptionKind::BadPayload,
            })?;
            let unfolded = self.applied_lsn.is_some_and(|applied| lsn > applied);
            let wanted = self.keep_folded || unfolded;
            if wanted {
                let payload_bytes = payload.len() as u64;
                let offset = summary.end_offset;
                self.recovered.records.push(RecoveredRecord {
                    lsn,
                    segment_number: header.number,
                    offset,
                    payload: decoded,
                    payload_bytes,
                });
            }
            summary.end_offset += encoded_bytes;
            summary.records += 1;
            summary.lsn_last = Some(lsn);
            lsn_next = lsn + 1;
        }
    }

    /// A segment must belong to this store. A format-1 store (no identity
    /// yet) reads only format-1 segments; it gets its identity when it is
    /// next opened read-write, after those are folded and removed. While the
    /// WAL is in use, a segment must also come from the opening that was
    /// using it: any other is a copy of another WAL of the store (an older
    /// or a diverged one), and reading it would mix two histories.
    fn check_owner(&self, path: &Path, header: &SegmentHeader) -> Result<()> {
        if header.store_id != self.owner.store_id() {
            return Err(Error::ForeignSegment {
                path: path.to_path_buf(),
                segment_store: header.store_id,
                state: self.state_path.to_path_buf(),
                store: self.owner.store_id(),
            });
        }
        match self.owner {
            Owner::InUse { epoch, .. } if header.epoch != epoch => Err(self.mismatch(format!(
                "segment {} was written by another opening of this store (epoch {:08x}) than the one state.redb \
                 says was using the WAL (epoch {epoch:08x}): it comes from another copy of this store's WAL",
                path.display(),
                header.epoch
            ))),
            _ => Ok(()),
        }
    }

    /// Under an `Idle` owner: a record redb lacks may only come from the
    /// opening that marked the store clean (see `Owner::Idle`).
    fn check_idle(&self) -> Result<()> {
        let (Owner::Idle { epoch, .. }, Some(applied)) = (self.owner, self.applied_lsn) else {
            return Ok(());
        };
        let segments = &self.recovered.segments;
        let foreign = self.recovered.records.iter().filter(|record| record.lsn > applied).find_map(
            |record| {
                let segment = segments.iter().find(|s| s.header.number == record.segment_number)?;
                (segment.header.epoch != epoch).then_some((segment, record.lsn))
            },
        );
        match foreign {
            None => Ok(()),
            Some((segment, lsn)) => Err(self.mismatch(format!(
                "segment {} holds LSN {lsn}, which state.redb lacks (it holds up to LSN {applied}), although \
                 state.redb says it holds everything acknowledged (the segment was written by another opening, \
                 epoch {:08x}): it comes from another copy of this store",
                segment.path.display(),
                segment.header.epoch
            ))),
        }
    }

    fn mismatch(&self, detail: String) -> Error {
        Error::WalMismatch {
            wal_dir: self.dir.to_path_buf(),
            state: self.state_path.to_path_buf(),
            detail,
        }
    }

    /// A segment's first LSN must follow on from what came before. A lower
    /// one marks the previous segment's last records as abandoned.
    fn check_chain(
        &mut self,
        path: &Path,
        header: &SegmentHeader,
        lsn_expected: Lsn,
    ) -> Result<()> {
        // Where the first segment must start depends on redb's applied_lsn.
        let unknowable = self.recovered.segments.is_empty() && self.applied_lsn.is_none();
        if header.lsn_first > lsn_expected && !unknowable {
            // Records between are missing. Point at the end of the previous
            // segment (where its valid data stops) when there is one.
            let (path, offset) = match self.recovered.segments.last() {
                Some(previous) => (previous.path.clone(), previous.end_offset),
                None => (path.to_path_buf(), SEGMENT_HEADER_BYTES),
            };
            return Err(Error::Corrupted {
                path,
                offset,
                lsn: lsn_expected,
                kind: CorruptionKind::LsnGap,
            });
        }
        if header.lsn_first < lsn_expected && !self.recovered.segments.is_empty() {
            self.drop_abandoned_records(header.lsn_first);
        }
        Ok(())
    }

    /// Forgets records at or above `lsn_first` of the next segment: a write
    /// that failed (disk full) left them in the previous segment, unacknowledged,
    /// and the writer moved on to a new segment starting at `lsn_first`.
    fn drop_abandoned_records(&mut self, lsn_first: Lsn) {
        self.recovered.records.retain(|record| record.lsn < lsn_first);
        if let Some(previous) = self.recovered.segments.last_mut() {
            let kept = lsn_first.saturating_sub(previous.header.lsn_first);
            previous.records = previous.records.min(kept);
            previous.lsn_last = kept.checked_sub(1).map(|k| previous.header.lsn_first + k);
        }
        self.recovered.lsn_last = self.applied_lsn.unwrap_or(0).max(lsn_first - 1);
    }

    /// In the last segment: nothing after the valid records (clean end), a
    /// torn tail, or valid records after an invalid one (corruption).
    fn check_tail(
        &mut self,
        path: &Path,
        header: &SegmentHeader,
        bytes: &[u8],
        end: u64,
        lsn_next: Lsn,
    ) -> Result<()> {
        let rest = bytes.get(end as usize..).unwrap_or_default();
        let mut budget = checksum_budget(bytes);
        let search =
            format::search_valid_record(rest, header, header.max_record_bytes(), &mut budget);
        if let Search::Found(position, _) | Search::Undecided(position) = search {
            tracing::debug!(target: "factwal::recovery", at = end + position, ?search, "data after an invalid record");
            return Err(Error::Corrupted {
                path: path.to_path_buf(),
                offset: end,
                lsn: lsn_next,
                kind: CorruptionKind::ChecksumMismatch,
            });
        }
        let garbage_bytes = rest.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1);
        if garbage_bytes > 0 {
            self.recovered.repairs.push(Repair::TornTail {
                path: path.to_path_buf(),
                offset: end,
                bytes: garbage_bytes,
            });
        }
        Ok(())
    }
}

/// What point-in-time recovery drops that could still be read: records
/// after the cut in the segment holding the corruption, and every record of
/// the segments it removes (each judged against its own header).
fn describe_dropped(
    io: &dyn WalIo,
    corruption: &Error,
    kept: &[SegmentSummary],
    removed: &[PathBuf],
) -> Dropped {
    let mut dropped = Dropped::default();
    let mut count = |lsns: Vec<Lsn>| {
        for lsn in lsns {
            dropped.records += 1;
            dropped.lsn_range = Some(match dropped.lsn_range {
                Some((first, last)) => (first.min(lsn), last.max(lsn)),
                None => (lsn, lsn),
            });
        }
    };
    if let Error::Corrupted { path, offset, .. } = corruption {
        if kept.iter().any(|segment| &segment.path == path) {
            if let Ok(bytes) = io.read(path) {
                let bytes: &[u8] = (*bytes).as_ref();
                if let (Ok(header), Some(rest)) =
                    (SegmentHeader::decode(bytes), bytes.get(*offset as usize..))
                {
                    let tail_bytes =
                        rest.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1);
                    count(
                        readable_records(rest, &header)
                            .into_iter()
                            .map(|(_, lsn, _)| lsn)
                            .collect(),
                    );
                    dropped.tail_bytes = tail_bytes;
                }
            }
        }
    }
    for path in removed {
        if let Ok(bytes) = io.read(path) {
            let bytes: &[u8] = (*bytes).as_ref();
            if let (Ok(header), Some(rest)) =
                (SegmentHeader::decode(bytes), bytes.get(SEGMENT_HEADER_BYTES as usize..))
            {
                count(readable_records(rest, &header).into_iter().map(|(_, lsn, _)| lsn).collect());
            }
        }
    }
    dropped
}

/// Every record of `header`'s segment that can be read in `bytes`, in file
/// order, skipping damage between them (the search is bounded, as the tail
/// check's is): offset in `bytes`, LSN and payload. For what point-in-time
/// recovery drops, and for salvage, which keeps what follows damage.
pub fn readable_records<'a>(bytes: &'a [u8], header: &SegmentHeader) -> Vec<(u64, Lsn, &'a [u8])> {
    let max_record_bytes = header.max_record_bytes();
    let mut budget = checksum_budget(bytes);
    let mut found = Vec::new();
    let mut position = 0usize;
    while position < bytes.len() {
        match format::decode_record(&bytes[position..], header, max_record_bytes) {
            Decoded::Valid { lsn, payload, encoded_bytes } => {
                found.push((position as u64, lsn, payload));
                position += encoded_bytes as usize;
            }
            Decoded::Zeroes | Decoded::Invalid => {
                match format::search_valid_record(
                    &bytes[position..],
                    header,
                    max_record_bytes,
                    &mut budget,
                ) {
                    Search::Found(step, _) => position += step as usize,
                    Search::NotFound | Search::Undecided(_) => break,
                }
            }
        }
    }
    found
}

/// Bytes a search after an invalid record may checksum in a segment of this
/// size: a few times the segment, so bytes crafted to look like endless
/// overlapping records are refused, not scanned for minutes.
fn checksum_budget(segment: &[u8]) -> u64 {
    4 * segment.len() as u64 + (1 << 20)
}
