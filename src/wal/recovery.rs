//! Reading the WAL back: scan every segment in order, check headers, salts,
//! checksums and the LSN chain, and decide what the bytes mean.
//!
//! The scan itself never changes anything. It returns the records to replay
//! and, when the log does not end cleanly, the [`Repair`] that opening the
//! store read-write applies before anything else. Corruption that the recovery
//! mode does not allow is an [`Error::Corrupted`] naming file, offset and LSN.
//!
//! # Decision table
//!
//! What the scan does with what it finds. (`open::judge_wal` decides, before
//! the scan, whether the WAL directory can be this store's at all;
//! docs/FORMAT.md has the byte-level rules.) Segments are read in number
//! order, and in each the checks run in this order, the first that fails
//! deciding: the number follows the previous one; the header decodes; it
//! names the file's number; it is the store's (and the opening's); its first
//! LSN follows on; its records; the file's size; and, in the last segment
//! only, what follows the valid records. Once every segment is read, records
//! newer than redb under an [`Owner::Idle`] are checked, and absolute
//! consistency turns a torn tail into a refusal. Records are judged by the
//! format's bounds and their segment's size, never by today's
//! `max_record_bytes`. A torn tail is what a crash leaves of a write never
//! acknowledged, or the last acknowledged record damaged later: nothing on
//! disk tells the two apart, and the WARN says so.
//!
//! "Kept" records are those returned for replay: above the applied LSN
//! (`ScanOptions::applied_lsn`, "applied" below), in LSN order. `Kind @ file,
//! offset, LSN` is an [`Error::Corrupted`] with that [`CorruptionKind`].
//! Point-in-time recovery turns exactly those into a [`Repair::DropAfter`]
//! ("cut there": the prefix before the cut kept, the segments after it
//! removed, the readable records after it counted in [`Dropped`]); any other
//! error it refuses as the other modes do. `decision_table`, in this module's
//! tests, holds one row per case under the same name and checks all three
//! outcomes of each exactly, and that this table and docs/DESIGN.md's list the
//! same cases in the same order; the other tests named go through
//! `Store::open`.
//!
//! | case | the scan finds | tolerate-corrupted-tail (default) | absolute-consistency | point-in-time | tested by |
//! |---|---|---|---|---|---|
//! | missing WAL directory | no WAL directory | nothing kept; `lsn_last` = applied | as default | as default | `decision_table` |
//! | empty WAL directory | no segment file | nothing kept; `lsn_last` = applied | as default | as default | `decision_table` |
//! | clean end | whole records with consecutive LSNs, then zeros to the end of the last segment | every record kept | as default | as default | `decision_table`; `tests/torn_tail.rs::a_clean_end_opens_without_a_warning` |
//! | records redb already holds | records at or below applied | read and checked, not kept | as default | as default | `decision_table` |
//! | LSN redb holds unknown | `applied_lsn: None` (no caller passes it today) | the first segment may start at any LSN; nothing kept; `lsn_last` = the last record's | as default | as default | `decision_table` |
//! | torn tail | in the last segment, non-zero bytes after the valid records, and no valid record of the segment after them | prefix kept; [`Repair::TornTail`] (where the bytes start, how many are non-zero) | `TornTail @ segment, where the bytes start, lsn_last + 1` | as default | `decision_table`; `tests/torn_tail.rs::every_cut_inside_the_last_record_drops_exactly_that_batch`, `tests/torn_tail.rs::absolute_consistency_refuses_a_torn_tail_and_changes_nothing` |
//! | torn tail redb already holds | the same, the torn record at or below applied | `TornTail` repair; nothing kept | `TornTail`, LSN applied + 1, not the torn record's (note 1) | as default | `decision_table` |
//! | whole record with an unexpected LSN, last in the log | in the last segment, after the valid records, a record of the segment with a valid checksum but not the next LSN, and nothing valid after it | `LsnOutOfSequence { found } @ segment, where the valid records stop, the next LSN` (note 2) | as default | cut there; the record counts as readable | `decision_table` |
//! | invalid record, valid record after it | in the last segment, an invalid record, and a valid record of the segment anywhere after it | `ChecksumMismatch @ segment, the invalid record, its LSN` | as default | cut there: prefix kept, nothing removed | `decision_table`; `tests/corruption.rs::bit_flip_in_last_segment_before_valid_records_is_not_a_torn_tail` |
//! | search budget runs out | in the last segment, after an invalid record, bytes that would take more checksumming than the budget (4 × the segment + 1 MiB) to search | `ChecksumMismatch` as above | as default | cut there | `decision_table` |
//! | invalid record in a segment before the last | a segment whose valid records stop early, followed by a segment starting after the LSNs lost | `LsnGap @ that segment, where its valid records stop, the first LSN lost` | as default | cut there: the later segments removed | `decision_table`; `tests/corruption.rs::bit_flip_in_first_segment_is_refused_and_changes_nothing`, `tests/corruption.rs::point_in_time_keeps_the_prefix_before_a_bit_flip` |
//! | abandoned tail, no whole record | non-zero bytes after the valid records of a segment before the last, the next segment following on | ignored: every record kept, no repair | as default | as default | `decision_table` |
//! | abandoned tail, whole records | a segment starting below the LSN after the previous segment's last record (a failed write's records, never acknowledged; the writer went on in a new segment) | the previous segment's records from that LSN on dropped, the rest kept | as default | as default | `decision_table`; `tests/wal_faults.rs::enospc_leftover_of_the_failed_write_is_not_replayed_once_the_log_moved_on` |
//! | later segment starting below the one before it | a segment starting below the previous segment's own first LSN (the writer never makes one) | `LsnOutOfSequence { found: its first LSN } @ that segment, 0, the LSN expected` (note 3) | as default | cut there, that segment and later ones removed | `decision_table` |
//! | LSN gap between segments | a segment starting above the LSN after the previous segment's last record | `LsnGap @ previous segment, where its valid records stop, the LSN expected` | as default | cut there: this segment and later ones removed | `decision_table` |
//! | LSN gap before the first segment | the first segment starting above applied + 1 | `LsnGap @ first segment, 64, applied + 1` | as default | cut there: every segment removed | `decision_table`; `tests/fuzz_regressions.rs::open_refused_for_an_lsn_gap_before_the_first_segment_changes_no_file`, `tests/fuzz_regressions.rs::point_in_time_drop_of_a_first_segment_after_an_lsn_gap_does_not_come_back` |
//! | missing segment number | a hole in the segment numbers | `MissingSegment @ the missing file, 0, the LSN expected` | as default | cut there: the segments after the hole removed | `decision_table`; `tests/corruption.rs::missing_middle_segment_is_refused` |
//! | bad segment header | a header that does not decode (magic, version, sizes, reserved bytes, checksum, first LSN 0) | `BadSegmentHeader @ segment, 0, the LSN expected` | as default | cut there: it and later segments removed; its records not counted | `decision_table`; `tests/corruption.rs::damaged_segment_header_is_refused` |
//! | segment number mismatch | a valid header naming another number than its file's | `SegmentNumberMismatch @ segment, 0, the LSN expected` | as default | cut there: it and later segments removed | `decision_table`; `tests/corruption.rs::header_naming_another_segment_is_refused` |
//! | segment file cut short | a segment file shorter than its header's `segment_bytes` | `SegmentSizeMismatch { file_bytes, header_bytes } @ segment, where its valid records stop, the next LSN` | as default | cut there: its valid records kept, later segments removed | `decision_table`; `tests/torn_tail.rs::a_segment_file_cut_short_is_refused_in_every_mode`, `tests/operator_mistakes.rs::a_segment_file_cut_short_is_damage_not_a_clean_end` |
//! | segment file extended | a segment file, not the last, longer than its header's `segment_bytes` | `SegmentSizeMismatch` as above | as default | as above | `decision_table` |
//! | bad payload | a record with a valid checksum whose payload the decoder refuses | `BadPayload @ segment, the record, its LSN` | as default | cut there; the record counts as readable | `decision_table` |
//! | bad payload redb already holds | the same, at or below applied | `BadPayload` as above | as default | as above | `decision_table`; `tests/fuzz_regressions.rs::read_only_open_shows_what_a_read_write_open_gives_past_a_bad_folded_payload` |
//! | segment of a newer format | a whole, checksummed header of a newer version | [`Error::UnsupportedFormatVersion`] | as default | as default | `decision_table`; `tests/operator_mistakes.rs::a_segment_of_a_newer_format_is_not_called_corruption_and_point_in_time_keeps_it` |
//! | another store's segment | a header with another store's identity | [`Error::ForeignSegment`] | as default | as default | `decision_table`; `tests/operator_mistakes.rs::a_segment_of_another_store_is_refused_naming_both` |
//! | format-1 segment, format-2 store | a header with no identity | [`Error::ForeignSegment`] | as default | as default | `decision_table` |
//! | format-1 segments, format-1 store | [`Owner::Format1`], headers with no identity | every record kept | as default | as default | `decision_table`; `tests/format_upgrade.rs::a_format_1_store_reads_as_0_1_read_it_then_upgrades_on_its_first_read_write_open` |
//! | format-2 segment, format-1 store | [`Owner::Format1`], a header with an identity | [`Error::ForeignSegment`] | as default | as default | `decision_table` |
//! | another opening's segment, WAL in use | [`Owner::InUse`], a header of another epoch | [`Error::WalMismatch`] | as default | as default | `decision_table`; `tests/segment_identity.rs::a_segment_from_another_opening_of_the_store_is_refused` |
//! | closed cleanly, newer record of the closing opening | [`Owner::Idle`], a record above applied in a segment of the epoch that closed the store (a failed write its close could not remove) | kept | as default | as default | `decision_table`; `tests/fuzz_regressions.rs::a_close_that_cannot_remove_a_failed_write_still_reopens` |
//! | closed cleanly, newer record of another opening | [`Owner::Idle`], a record above applied in a segment of another epoch | [`Error::WalMismatch`] | as default | as default | `decision_table`; `tests/segment_identity.rs::a_record_newer_than_state_redb_after_a_clean_close_is_refused` |
//! | closed cleanly, another opening's folded records | [`Owner::Idle`], a segment of another epoch holding only records at or below applied | accepted; nothing kept | as default | as default | `decision_table` |
//! | temporary and other files | `<number>.wal.tmp` files; names that are not a segment's | temporary files listed in [`Recovered::temporary_files`], never read (a read-write open removes them); others ignored | as default | as default | `decision_table`; `tests/corruption.rs::other_files_in_the_wal_directory_are_ignored_and_temporaries_removed` |
//!
//! Notes, where the code does something one might not expect:
//!
//! 1. Under absolute consistency a torn tail is refused with `lsn_last + 1`,
//!    the LSN after the highest of applied and the last record read, not the
//!    LSN the tail check expected at that offset: the two differ when the torn
//!    record is one redb already holds.
//! 2. A record whose checksum, salt and number hold but whose LSN is not the
//!    next one ends the valid records as damage does. No crash leaves one (a
//!    write cut short leaves a record that does not check), so at the end of
//!    the log it is refused as `LsnOutOfSequence`, never zeroed as a torn
//!    tail. (It used to be: the search for valid data after the valid records
//!    starts one byte in and never saw it; found while writing this table.)
//! 3. A segment never starts before the segment before it: it is made after
//!    every record durable at the time, and it starts where the one before it
//!    did only when none of that one's records became durable. One that does
//!    (it can only be crafted, with a checksummed header and the opening's
//!    epoch) is refused. (It used to take the place of acknowledged records of
//!    every earlier segment; found while writing this table.)

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
            scanner.cut_at(io, corruption, &numbers[index..]);
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
    /// Point-in-time recovery's answer to `corruption`, met in the first of
    /// the segments `from`: every one of them goes, except one whose valid
    /// prefix was kept (its summary was recorded; it is zeroed from the
    /// corruption on instead), and what can still be read there is counted.
    fn cut_at(&mut self, io: &dyn WalIo, corruption: Error, from: &[u64]) {
        let kept = |path: &PathBuf| self.recovered.segments.iter().any(|s| &s.path == path);
        let removed_segments: Vec<PathBuf> = from
            .iter()
            .map(|&n| self.dir.join(segment_file_name(n)))
            .filter(|path| !kept(path))
            .collect();
        let dropped =
            describe_dropped(io, &corruption, &self.recovered.segments, &removed_segments);
        self.recovered.repairs.push(Repair::DropAfter {
            corruption: Box::new(corruption),
            removed_segments,
            dropped,
        });
    }

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
        if let Some(previous) = self.recovered.segments.last() {
            // A segment starts after every record durable when it was made,
            // so never before the segment before it (it may start where that
            // one did, when none of that one's records became durable).
            if header.lsn_first < previous.header.lsn_first {
                return Err(Error::Corrupted {
                    path: path.to_path_buf(),
                    offset: 0,
                    lsn: lsn_expected,
                    kind: CorruptionKind::LsnOutOfSequence { found: header.lsn_first },
                });
            }
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
        // A whole record of this segment right where the valid ones stop,
        // only not the next LSN: no crash writes one, so it is not a torn
        // tail to zero with a WARN (the search below starts past it).
        if let Decoded::Valid { lsn: found, .. } =
            format::decode_record(rest, header, header.max_record_bytes())
        {
            return Err(Error::Corrupted {
                path: path.to_path_buf(),
                offset: end,
                lsn: lsn_next,
                kind: CorruptionKind::LsnOutOfSequence { found },
            });
        }
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

#[cfg(test)]
mod tests {
    //! The module doc's decision table, in code. Each row writes a real WAL
    //! directory into a temporary directory (segments built with the format's
    //! own encoders, read back through `StdIo`), scans it once in each
    //! recovery mode, and compares what the scan returned with what the row
    //! expects for that mode: the records kept (segment and LSN), the last
    //! LSN, the repairs and the temporary files, or the error with its kind,
    //! file, offset and LSN. Every wrong cell is reported, named by its row
    //! and mode. The doc tables (here and in docs/DESIGN.md) must list the
    //! same cases in the same order.

    use std::collections::BTreeMap;

    use super::*;
    use crate::wal::format::{encode_record, RECORD_HEADER_BYTES};
    use crate::wal::io::StdIo;

    use CorruptionKind as Kind;
    use Piece::{BadPayload, Damaged, Record, Torn};

    /// Small segments: every row's records fit one with room to spare.
    const SEGMENT_BYTES: u64 = 1024;
    /// Every record's payload: its LSN, then `PAYLOAD_GOOD` (or
    /// `PAYLOAD_BAD`, which the decoder refuses). Neither ends in a zero, so
    /// a record's last byte counts in the non-zero bytes a repair reports.
    const PAYLOAD_BYTES: u64 = 16;
    const PAYLOAD_GOOD: &[u8; 8] = b"payload.";
    const PAYLOAD_BAD: &[u8; 8] = b"garbage.";
    const RECORD_BYTES: u64 = RECORD_HEADER_BYTES + PAYLOAD_BYTES;
    /// The opening that was using the WAL, and another one.
    const EPOCH: u32 = 0xe0;
    const OTHER_EPOCH: u32 = 0xe1;

    fn store() -> StoreId {
        StoreId::from_u64(0x5eed).unwrap()
    }

    fn other_store() -> StoreId {
        StoreId::from_u64(0xf0e).unwrap()
    }

    /// Offset of the record at `index` (from 0) of a segment of whole records.
    fn at(index: u64) -> u64 {
        SEGMENT_HEADER_BYTES + index * RECORD_BYTES
    }

    fn name(number: u64) -> String {
        segment_file_name(number)
    }

    /// The decoder the scan is given: the LSN a payload carries, if it is one.
    fn decode(payload: &[u8]) -> Option<Lsn> {
        let (lsn, rest) = payload.split_first_chunk::<8>()?;
        (rest == PAYLOAD_GOOD).then_some(u64::from_le_bytes(*lsn))
    }

    /// What a row writes into a segment after its header, in order.
    #[derive(Debug, Clone)]
    enum Piece {
        /// A whole record of the segment.
        Record(Lsn),
        /// A whole record whose checksum holds and whose payload the decoder
        /// refuses.
        BadPayload(Lsn),
        /// A whole record with a payload bit flipped after its checksum.
        Damaged(Lsn),
        /// The first half of a record; the second half of its place is zeros.
        Torn(Lsn),
        /// Raw bytes.
        Bytes(Vec<u8>),
    }

    /// The header of segment `number`, of this store and this opening. The
    /// salt's high half is large (see `budget_breaker`).
    fn header(number: u64, lsn_first: Lsn) -> SegmentHeader {
        SegmentHeader {
            number,
            lsn_first,
            salt: 0xface_0000_0000_0000 | number,
            segment_bytes: SEGMENT_BYTES,
            store_id: Some(store()),
            epoch: EPOCH,
        }
    }

    /// A segment file: `header`, `pieces`, then zeros up to the header's size.
    fn segment_bytes(header: &SegmentHeader, pieces: &[Piece]) -> Vec<u8> {
        let mut bytes = header.encode().to_vec();
        for piece in pieces {
            let start = bytes.len();
            let record = |bytes: &mut Vec<u8>, lsn: Lsn, tail: &[u8; 8]| {
                let payload = [lsn.to_le_bytes(), *tail].concat();
                encode_record(bytes, header, lsn, &payload);
            };
            match piece {
                Record(lsn) => record(&mut bytes, *lsn, PAYLOAD_GOOD),
                BadPayload(lsn) => record(&mut bytes, *lsn, PAYLOAD_BAD),
                Damaged(lsn) => {
                    record(&mut bytes, *lsn, PAYLOAD_GOOD);
                    bytes[start + RECORD_HEADER_BYTES as usize] ^= 1;
                }
                Torn(lsn) => {
                    record(&mut bytes, *lsn, PAYLOAD_GOOD);
                    bytes[start + RECORD_BYTES as usize / 2..].fill(0);
                }
                Piece::Bytes(raw) => bytes.extend_from_slice(raw),
            }
        }
        assert!(bytes.len() as u64 <= header.segment_bytes, "the pieces overflow the segment");
        bytes.resize(header.segment_bytes as usize, 0);
        bytes
    }

    /// A whole, checksummed segment header of format 3 (twice as long as
    /// format 2's), as a later factwal might write it.
    fn newer_segment_bytes(number: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; SEGMENT_BYTES as usize];
        bytes[0..8].copy_from_slice(&format::SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&128u32.to_le_bytes());
        bytes[16..24].copy_from_slice(&number.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..124]);
        bytes[124..128].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Bytes after an invalid record that the tail check cannot judge within
    /// its checksum budget: every 16 bytes the segment's number and salt, so
    /// the first candidate record claims a length (the salt's high half)
    /// beyond the budget. 321 bytes, the last one non-zero.
    fn budget_breaker(header: &SegmentHeader) -> Vec<u8> {
        let mut bytes = vec![0xab];
        for _ in 0..20 {
            bytes.extend_from_slice(&header.number.to_le_bytes());
            bytes.extend_from_slice(&header.salt.to_le_bytes());
        }
        bytes
    }

    /// One file a row puts in the WAL directory: its name and bytes.
    type File = (String, Vec<u8>);

    /// Segment `number` of this store and opening, from `lsn_first`.
    fn segment(number: u64, lsn_first: Lsn, pieces: &[Piece]) -> File {
        segment_of(header(number, lsn_first), pieces)
    }

    /// A segment with this header, named after its number.
    fn segment_of(header: SegmentHeader, pieces: &[Piece]) -> File {
        (name(header.number), segment_bytes(&header, pieces))
    }

    fn file(name: &str, bytes: Vec<u8>) -> File {
        (name.to_string(), bytes)
    }

    fn edited((name, mut bytes): File, change: impl FnOnce(&mut Vec<u8>)) -> File {
        change(&mut bytes);
        (name, bytes)
    }

    /// Creates the WAL directory `dir` with these files; `None`: no directory.
    fn write(files: &Option<Vec<File>>, dir: &Path) {
        let Some(files) = files else { return };
        std::fs::create_dir(dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// The WAL directory's files and their bytes; `None` when it is missing.
    fn snapshot(dir: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
        let entries = std::fs::read_dir(dir).ok()?;
        Some(
            entries
                .map(|entry| {
                    let path = entry.unwrap().path();
                    (path.clone(), std::fs::read(path).unwrap())
                })
                .collect(),
        )
    }

    /// What a scan gave, files named by their name in the WAL directory, so
    /// a row can say it without knowing where its directory is.
    #[derive(Debug, Clone, PartialEq)]
    enum Outcome {
        Scanned {
            /// The records returned: segment number and LSN.
            records: Vec<(u64, Lsn)>,
            lsn_last: Lsn,
            repairs: Vec<Fix>,
            temporary_files: Vec<String>,
        },
        Refused(Refusal),
    }

    /// A [`Repair`], files named as in [`Outcome`].
    #[derive(Debug, Clone, PartialEq)]
    enum Fix {
        TornTail { file: String, offset: u64, bytes: u64 },
        DropAfter { at: Refusal, removed: Vec<String>, dropped: Dropped },
    }

    /// An [`Error`], files named as in [`Outcome`].
    #[derive(Debug, Clone, PartialEq)]
    enum Refusal {
        Corrupted {
            file: String,
            offset: u64,
            lsn: Lsn,
            kind: CorruptionKind,
        },
        UnsupportedFormatVersion {
            file: String,
            found: u32,
            supported: u32,
        },
        ForeignSegment {
            file: String,
            segment_store: Option<StoreId>,
            store: Option<StoreId>,
        },
        /// The detail, the WAL directory's path in it written `$WAL`.
        WalMismatch {
            detail: String,
        },
        /// Anything else, or one of the above naming another WAL directory
        /// or `state.redb` than the scan was given.
        Other(String),
    }

    fn describe(dir: &Path, state: &Path, case: &str, scanned: Result<Recovered<Lsn>>) -> Outcome {
        let recovered = match scanned {
            Ok(recovered) => recovered,
            Err(error) => return Outcome::Refused(refusal(dir, state, &error)),
        };
        let records = recovered
            .records
            .iter()
            .map(|record| {
                // Paired with the encoder above: the decoder's value is the
                // LSN the payload was written for.
                assert_eq!(record.payload, record.lsn, "{case}: a payload read back as another");
                (record.segment_number, record.lsn)
            })
            .collect();
        let repairs = recovered
            .repairs
            .iter()
            .map(|repair| match repair {
                Repair::TornTail { path, offset, bytes } => {
                    Fix::TornTail { file: file_name(dir, path), offset: *offset, bytes: *bytes }
                }
                Repair::DropAfter { corruption, removed_segments, dropped } => Fix::DropAfter {
                    at: refusal(dir, state, corruption),
                    removed: removed_segments.iter().map(|path| file_name(dir, path)).collect(),
                    dropped: dropped.clone(),
                },
            })
            .collect();
        let temporary_files =
            recovered.temporary_files.iter().map(|path| file_name(dir, path)).collect();
        Outcome::Scanned { records, lsn_last: recovered.lsn_last, repairs, temporary_files }
    }

    fn refusal(dir: &Path, state: &Path, error: &Error) -> Refusal {
        match error {
            Error::Corrupted { path, offset, lsn, kind } => Refusal::Corrupted {
                file: file_name(dir, path),
                offset: *offset,
                lsn: *lsn,
                kind: *kind,
            },
            Error::UnsupportedFormatVersion { path, found, supported } => {
                let file = file_name(dir, path);
                Refusal::UnsupportedFormatVersion { file, found: *found, supported: *supported }
            }
            Error::ForeignSegment { path, segment_store, state: named, store }
                if named == state =>
            {
                let file = file_name(dir, path);
                Refusal::ForeignSegment { file, segment_store: *segment_store, store: *store }
            }
            Error::WalMismatch { wal_dir, state: named, detail }
                if wal_dir == dir && named == state =>
            {
                Refusal::WalMismatch { detail: detail.replace(&dir.display().to_string(), "$WAL") }
            }
            other => Refusal::Other(format!("{other:?}")),
        }
    }

    /// `path`'s name in the WAL directory `dir`, or all of it when elsewhere.
    fn file_name(dir: &Path, path: &Path) -> String {
        path.strip_prefix(dir).unwrap_or(path).display().to_string()
    }

    /// A scan that kept these records (segment number, LSN) and ends at
    /// `lsn_last`, with no repair and no temporary file.
    fn scanned(records: &[(u64, Lsn)], lsn_last: Lsn) -> Outcome {
        let records = records.to_vec();
        Outcome::Scanned { records, lsn_last, repairs: Vec::new(), temporary_files: Vec::new() }
    }

    fn corrupted(number: u64, offset: u64, lsn: Lsn, kind: CorruptionKind) -> Refusal {
        Refusal::Corrupted { file: name(number), offset, lsn, kind }
    }

    /// A segment file of `file_bytes` whose header says `SEGMENT_BYTES`.
    fn size_mismatch(file_bytes: u64) -> CorruptionKind {
        Kind::SegmentSizeMismatch { file_bytes, header_bytes: SEGMENT_BYTES }
    }

    /// The same outcome in every mode.
    fn every_mode(outcome: Outcome) -> [Outcome; 3] {
        [outcome.clone(), outcome.clone(), outcome]
    }

    /// A torn tail at `offset` of segment `number`, `bytes` of it non-zero:
    /// dropped after `kept` by a repair, except under absolute consistency,
    /// which refuses it naming `lsn`.
    fn torn_tail(kept: Outcome, number: u64, offset: u64, bytes: u64, lsn: Lsn) -> [Outcome; 3] {
        let Outcome::Scanned { records, lsn_last, temporary_files, .. } = kept else {
            unreachable!("a torn tail is dropped after what a scan keeps")
        };
        let repairs = vec![Fix::TornTail { file: name(number), offset, bytes }];
        let dropped = Outcome::Scanned { records, lsn_last, repairs, temporary_files };
        let refused = Outcome::Refused(corrupted(number, offset, lsn, Kind::TornTail));
        [dropped.clone(), refused, dropped]
    }

    /// What point-in-time recovery drops besides the damage: the segments it
    /// removes, and the readable records and non-zero bytes after the cut.
    struct Cut {
        removed: &'static [u64],
        records: u64,
        lsns: Option<(Lsn, Lsn)>,
        tail_bytes: u64,
    }

    /// Refused with `refusal` in the two refusing modes; point-in-time keeps
    /// `kept` and cuts there.
    fn refused_or_cut(refusal: Refusal, kept: Outcome, cut: Cut) -> [Outcome; 3] {
        let Outcome::Scanned { records, lsn_last, temporary_files, .. } = kept else {
            unreachable!("point-in-time recovery cuts after what a scan keeps")
        };
        let Cut { removed, records: dropped_records, lsns, tail_bytes } = cut;
        let repairs = vec![Fix::DropAfter {
            at: refusal.clone(),
            removed: removed.iter().map(|&number| name(number)).collect(),
            dropped: Dropped { records: dropped_records, lsn_range: lsns, tail_bytes },
        }];
        let refused = Outcome::Refused(refusal);
        let cut = Outcome::Scanned { records, lsn_last, repairs, temporary_files };
        [refused.clone(), refused, cut]
    }

    /// One case the scan tells apart, and its outcome in each mode.
    struct Row {
        case: &'static str,
        /// The WAL directory's files; `None`: no WAL directory.
        wal: Option<Vec<File>>,
        /// The LSN redb holds (`ScanOptions::applied_lsn`).
        applied_lsn: Option<Lsn>,
        owner: Owner,
        /// Under TolerateCorruptedTail, AbsoluteConsistency, PointInTime.
        outcomes: [Outcome; 3],
    }

    const MODES: [RecoveryMode; 3] = [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
    ];

    /// `WalMismatch` details, as `check_owner` and `check_idle` word them.
    const ANOTHER_OPENING_IN_USE: &str = "segment $WAL/00000000000000000002.wal was written by \
        another opening of this store (epoch 000000e1) than the one state.redb says was using the \
        WAL (epoch 000000e0): it comes from another copy of this store's WAL";
    const ANOTHER_OPENING_IDLE: &str = "segment $WAL/00000000000000000001.wal holds LSN 2, which \
        state.redb lacks (it holds up to LSN 1), although state.redb says it holds everything \
        acknowledged (the segment was written by another opening, epoch 000000e1): it comes from \
        another copy of this store";

    /// The table, in the doc tables' order (their first column is `case`).
    /// Every row states its inputs: the WAL directory, the LSN redb holds and
    /// which segments may be there; a crashed store's WAL is in use by
    /// opening `EPOCH`.
    fn rows() -> Vec<Row> {
        let in_use = Owner::InUse { store_id: store(), epoch: EPOCH };
        let idle = Owner::Idle { store_id: store(), epoch: EPOCH };
        let format_1 = SegmentHeader { store_id: None, epoch: 0, ..header(1, 1) };
        let other_opening =
            |number, lsn_first| SegmentHeader { epoch: OTHER_EPOCH, ..header(number, lsn_first) };
        let breaker = Piece::Bytes(budget_breaker(&header(1, 1)));
        vec![
            Row {
                case: "missing WAL directory",
                wal: None,
                applied_lsn: Some(5),
                owner: in_use,
                outcomes: every_mode(scanned(&[], 5)),
            },
            Row {
                case: "empty WAL directory",
                wal: Some(vec![]),
                applied_lsn: Some(5),
                owner: in_use,
                outcomes: every_mode(scanned(&[], 5)),
            },
            Row {
                case: "clean end",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2)]),
                    segment(2, 3, &[Record(3)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(scanned(&[(1, 1), (1, 2), (2, 3)], 3)),
            },
            Row {
                case: "records redb already holds",
                wal: Some(vec![segment(1, 1, &[Record(1), Record(2), Record(3), Record(4)])]),
                applied_lsn: Some(2),
                owner: in_use,
                outcomes: every_mode(scanned(&[(1, 3), (1, 4)], 4)),
            },
            Row {
                case: "LSN redb holds unknown",
                wal: Some(vec![segment(1, 5, &[Record(5), Record(6)])]),
                applied_lsn: None,
                owner: in_use,
                outcomes: every_mode(scanned(&[], 6)),
            },
            Row {
                // The torn record keeps its checksum, length, LSN and salt:
                // 24 non-zero bytes.
                case: "torn tail",
                wal: Some(vec![segment(1, 1, &[Record(1), Record(2), Torn(3)])]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: torn_tail(scanned(&[(1, 1), (1, 2)], 2), 1, at(2), 24, 3),
            },
            Row {
                // Refused naming LSN 4, the one after redb's, while the torn
                // record is LSN 3 (note 1).
                case: "torn tail redb already holds",
                wal: Some(vec![segment(1, 1, &[Record(1), Record(2), Torn(3)])]),
                applied_lsn: Some(3),
                owner: in_use,
                outcomes: torn_tail(scanned(&[], 3), 1, at(2), 24, 4),
            },
            Row {
                case: "whole record with an unexpected LSN, last in the log",
                wal: Some(vec![segment(1, 1, &[Record(1), Record(2), Record(5)])]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(2), 3, Kind::LsnOutOfSequence { found: 5 }),
                    scanned(&[(1, 1), (1, 2)], 2),
                    Cut { removed: &[], records: 1, lsns: Some((5, 5)), tail_bytes: RECORD_BYTES },
                ),
            },
            Row {
                case: "invalid record, valid record after it",
                wal: Some(vec![segment(1, 1, &[Record(1), Damaged(2), Record(3)])]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(1), 2, Kind::ChecksumMismatch),
                    scanned(&[(1, 1)], 1),
                    Cut { removed: &[], records: 1, lsns: Some((3, 3)), tail_bytes: 96 },
                ),
            },
            Row {
                case: "search budget runs out",
                wal: Some(vec![segment(1, 1, &[Record(1), breaker])]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(1), 2, Kind::ChecksumMismatch),
                    scanned(&[(1, 1)], 1),
                    Cut { removed: &[], records: 0, lsns: None, tail_bytes: 321 },
                ),
            },
            Row {
                case: "invalid record in a segment before the last",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Damaged(2), Record(3)]),
                    segment(2, 4, &[Record(4), Record(5)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(1), 2, Kind::LsnGap),
                    scanned(&[(1, 1)], 1),
                    Cut { removed: &[2], records: 3, lsns: Some((3, 5)), tail_bytes: 96 },
                ),
            },
            Row {
                case: "abandoned tail, no whole record",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2), Torn(3)]),
                    segment(2, 3, &[Record(3)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(scanned(&[(1, 1), (1, 2), (2, 3)], 3)),
            },
            Row {
                case: "abandoned tail, whole records",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2), Record(3)]),
                    segment(2, 3, &[Record(3), Record(4)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(scanned(&[(1, 1), (1, 2), (2, 3), (2, 4)], 4)),
            },
            Row {
                case: "later segment starting below the one before it",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2), Record(3)]),
                    segment(2, 4, &[Record(4)]),
                    segment(3, 2, &[Record(2), Record(3)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(3, 0, 5, Kind::LsnOutOfSequence { found: 2 }),
                    scanned(&[(1, 1), (1, 2), (1, 3), (2, 4)], 4),
                    Cut { removed: &[3], records: 2, lsns: Some((2, 3)), tail_bytes: 0 },
                ),
            },
            Row {
                case: "LSN gap between segments",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2)]),
                    segment(2, 4, &[Record(4)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(2), 3, Kind::LsnGap),
                    scanned(&[(1, 1), (1, 2)], 2),
                    Cut { removed: &[2], records: 1, lsns: Some((4, 4)), tail_bytes: 0 },
                ),
            },
            Row {
                case: "LSN gap before the first segment",
                wal: Some(vec![segment(1, 5, &[Record(5)])]),
                applied_lsn: Some(2),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, SEGMENT_HEADER_BYTES, 3, Kind::LsnGap),
                    scanned(&[], 2),
                    Cut { removed: &[1], records: 1, lsns: Some((5, 5)), tail_bytes: 0 },
                ),
            },
            Row {
                case: "missing segment number",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2)]),
                    segment(3, 3, &[Record(3)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(2, 0, 3, Kind::MissingSegment),
                    scanned(&[(1, 1), (1, 2)], 2),
                    Cut { removed: &[3], records: 1, lsns: Some((3, 3)), tail_bytes: 0 },
                ),
            },
            Row {
                // One bit of the header's checksum flipped.
                case: "bad segment header",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2)]),
                    edited(segment(2, 3, &[Record(3)]), |bytes| bytes[60] ^= 1),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(2, 0, 3, Kind::BadSegmentHeader),
                    scanned(&[(1, 1), (1, 2)], 2),
                    Cut { removed: &[2], records: 0, lsns: None, tail_bytes: 0 },
                ),
            },
            Row {
                case: "segment number mismatch",
                wal: Some(vec![
                    segment(1, 1, &[Record(1), Record(2)]),
                    file(&name(2), segment_bytes(&header(9, 3), &[Record(3)])),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(2, 0, 3, Kind::SegmentNumberMismatch),
                    scanned(&[(1, 1), (1, 2)], 2),
                    Cut { removed: &[2], records: 1, lsns: Some((3, 3)), tail_bytes: 0 },
                ),
            },
            Row {
                // Cut at a record boundary, where it would otherwise read
                // as a clean end.
                case: "segment file cut short",
                wal: Some(vec![edited(segment(1, 1, &[Record(1), Record(2)]), |bytes| {
                    bytes.truncate(at(2) as usize)
                })]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(2), 3, size_mismatch(at(2))),
                    scanned(&[(1, 1), (1, 2)], 2),
                    Cut { removed: &[], records: 0, lsns: None, tail_bytes: 0 },
                ),
            },
            Row {
                case: "segment file extended",
                wal: Some(vec![
                    edited(segment(1, 1, &[Record(1)]), |bytes| {
                        bytes.resize(2 * SEGMENT_BYTES as usize, 0)
                    }),
                    segment(2, 2, &[Record(2)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(1), 2, size_mismatch(2 * SEGMENT_BYTES)),
                    scanned(&[(1, 1)], 1),
                    Cut { removed: &[2], records: 1, lsns: Some((2, 2)), tail_bytes: 0 },
                ),
            },
            Row {
                case: "bad payload",
                wal: Some(vec![segment(1, 1, &[Record(1), BadPayload(2), Record(3)])]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(1), 2, Kind::BadPayload),
                    scanned(&[(1, 1)], 1),
                    Cut { removed: &[], records: 2, lsns: Some((2, 3)), tail_bytes: 96 },
                ),
            },
            Row {
                case: "bad payload redb already holds",
                wal: Some(vec![segment(1, 1, &[Record(1), BadPayload(2), Record(3)])]),
                applied_lsn: Some(2),
                owner: in_use,
                outcomes: refused_or_cut(
                    corrupted(1, at(1), 2, Kind::BadPayload),
                    scanned(&[], 2),
                    Cut { removed: &[], records: 2, lsns: Some((2, 3)), tail_bytes: 96 },
                ),
            },
            Row {
                case: "segment of a newer format",
                wal: Some(vec![
                    segment(1, 1, &[Record(1)]),
                    file(&name(2), newer_segment_bytes(2)),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(Outcome::Refused(Refusal::UnsupportedFormatVersion {
                    file: name(2),
                    found: 3,
                    supported: 2,
                })),
            },
            Row {
                case: "another store's segment",
                wal: Some(vec![
                    segment(1, 1, &[Record(1)]),
                    segment_of(
                        SegmentHeader { store_id: Some(other_store()), ..header(2, 2) },
                        &[Record(2)],
                    ),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(Outcome::Refused(Refusal::ForeignSegment {
                    file: name(2),
                    segment_store: Some(other_store()),
                    store: Some(store()),
                })),
            },
            Row {
                case: "format-1 segment, format-2 store",
                wal: Some(vec![segment_of(format_1, &[Record(1)])]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(Outcome::Refused(Refusal::ForeignSegment {
                    file: name(1),
                    segment_store: None,
                    store: Some(store()),
                })),
            },
            Row {
                case: "format-1 segments, format-1 store",
                wal: Some(vec![segment_of(format_1, &[Record(1), Record(2)])]),
                applied_lsn: Some(0),
                owner: Owner::Format1,
                outcomes: every_mode(scanned(&[(1, 1), (1, 2)], 2)),
            },
            Row {
                case: "format-2 segment, format-1 store",
                wal: Some(vec![segment(1, 1, &[Record(1)])]),
                applied_lsn: Some(0),
                owner: Owner::Format1,
                outcomes: every_mode(Outcome::Refused(Refusal::ForeignSegment {
                    file: name(1),
                    segment_store: Some(store()),
                    store: None,
                })),
            },
            Row {
                case: "another opening's segment, WAL in use",
                wal: Some(vec![
                    segment(1, 1, &[Record(1)]),
                    segment_of(other_opening(2, 2), &[Record(2)]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(Outcome::Refused(Refusal::WalMismatch {
                    detail: ANOTHER_OPENING_IN_USE.to_string(),
                })),
            },
            Row {
                case: "closed cleanly, newer record of the closing opening",
                wal: Some(vec![segment(1, 1, &[Record(1), Record(2)])]),
                applied_lsn: Some(1),
                owner: idle,
                outcomes: every_mode(scanned(&[(1, 2)], 2)),
            },
            Row {
                case: "closed cleanly, newer record of another opening",
                wal: Some(vec![segment_of(other_opening(1, 1), &[Record(1), Record(2)])]),
                applied_lsn: Some(1),
                owner: idle,
                outcomes: every_mode(Outcome::Refused(Refusal::WalMismatch {
                    detail: ANOTHER_OPENING_IDLE.to_string(),
                })),
            },
            Row {
                case: "closed cleanly, another opening's folded records",
                wal: Some(vec![segment_of(other_opening(1, 1), &[Record(1), Record(2)])]),
                applied_lsn: Some(2),
                owner: idle,
                outcomes: every_mode(scanned(&[], 2)),
            },
            Row {
                case: "temporary and other files",
                wal: Some(vec![
                    segment(1, 1, &[Record(1)]),
                    file(TEMPORARY, vec![0xcd; SEGMENT_BYTES as usize]),
                    file("notes.txt", b"operator notes".to_vec()),
                    file("0000000000000000005.wal", vec![0xab; 64]),
                ]),
                applied_lsn: Some(0),
                owner: in_use,
                outcomes: every_mode(Outcome::Scanned {
                    records: vec![(1, 1)],
                    lsn_last: 1,
                    repairs: Vec::new(),
                    temporary_files: vec![TEMPORARY.to_string()],
                }),
            },
        ]
    }

    /// A leftover temporary segment: never read, listed for removal.
    const TEMPORARY: &str = "00000000000000000002.wal.tmp";

    /// Every `CorruptionKind` a row expects, by position in the enum. The
    /// match is exhaustive, so a new kind does not compile until it has a
    /// place here, and then the table needs a row for it.
    fn kinds_expected(rows: &[Row]) -> [bool; 9] {
        let mut seen = [false; 9];
        let mut see = |refusal: &Refusal| {
            if let Refusal::Corrupted { kind, .. } = refusal {
                seen[match kind {
                    Kind::BadSegmentHeader => 0,
                    Kind::SegmentNumberMismatch => 1,
                    Kind::ChecksumMismatch => 2,
                    Kind::LsnGap => 3,
                    Kind::MissingSegment => 4,
                    Kind::TornTail => 5,
                    Kind::BadPayload => 6,
                    Kind::SegmentSizeMismatch { .. } => 7,
                    Kind::LsnOutOfSequence { .. } => 8,
                }] = true;
            }
        };
        for outcome in rows.iter().flat_map(|row| &row.outcomes) {
            match outcome {
                Outcome::Refused(refusal) => see(refusal),
                Outcome::Scanned { repairs, .. } => {
                    for fix in repairs {
                        if let Fix::DropAfter { at, .. } = fix {
                            see(at);
                        }
                    }
                }
            }
        }
        seen
    }

    /// The first column of the table whose header row starts with
    /// `| case | the scan finds |`, in `text` (lines after `prefix`).
    fn doc_cases(text: &str, prefix: &str) -> Vec<String> {
        let mut lines = text.lines().map(|line| line.strip_prefix(prefix).unwrap_or(line).trim());
        let header = lines.position(|line| line.starts_with("| case | the scan finds |"));
        assert!(header.is_some(), "no decision table");
        lines
            .skip(1)
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.split('|').nth(1).unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn decision_table() {
        // Builds each row's WAL directory, scans it in each mode with the
        // row's applied LSN and owner, and compares the described result
        // with the row's expectation for that mode; collects every wrong
        // cell before failing, so one run shows the whole damage. The scan
        // must not change a byte of the directory. Then the table itself is
        // checked: every corruption kind appears, case names are unique, and
        // both doc tables list exactly these cases in this order.
        let rows = rows();
        let mut wrong = Vec::new();
        for row in &rows {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("wal");
            let state_path = root.path().join("state.redb");
            write(&row.wal, &dir);
            let before = snapshot(&dir);
            for (mode, expected) in MODES.into_iter().zip(&row.outcomes) {
                let options = ScanOptions {
                    applied_lsn: row.applied_lsn,
                    mode,
                    keep_folded: false,
                    owner: row.owner,
                    state_path: state_path.clone(),
                };
                let scanned = scan(&StdIo, &dir, &options, decode);
                let found = describe(&dir, &state_path, row.case, scanned);
                if &found != expected {
                    wrong.push(format!(
                        "{} ({mode:?}):\n    expected {expected:?}\n    found    {found:?}",
                        row.case
                    ));
                }
            }
            assert_eq!(snapshot(&dir), before, "{}: the scan changed the WAL directory", row.case);
        }
        assert!(wrong.is_empty(), "{} wrong cells:\n{}", wrong.len(), wrong.join("\n"));

        assert_eq!(kinds_expected(&rows), [true; 9], "a corruption kind no row expects");
        let cases: Vec<String> = rows.iter().map(|row| row.case.to_string()).collect();
        let mut unique = cases.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), cases.len(), "two rows share a name");
        assert_eq!(doc_cases(include_str!("recovery.rs"), "//!"), cases, "module doc's table");
        let design = include_str!("../../docs/DESIGN.md");
        assert_eq!(doc_cases(design, ""), cases, "docs/DESIGN.md's table");
    }
}
