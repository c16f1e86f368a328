//! The `recovery` target: a store whose redb holds a few folded batches and
//! whose WAL directory holds crafted segment files (valid or mutated headers;
//! valid, bit-flipped, truncated, stale or re-numbered records; garbage,
//! zeros and truncations), opened read-only, then read-write, then again.
//!
//! Segments are written with the store's identity, another store's, or none
//! (format 1), and cut short or extended.
//!
//! What it checks, besides "never panics, never hangs":
//! - `ReadOnlyStore::open` leaves every file byte-identical, and its reads work;
//! - `Store::open` returns Ok, or `Error::Corrupted` or
//!   `Error::ForeignSegment` with every file unchanged; under point-in-time
//!   recovery only a segment of another store (or of no store) is refused;
//! - a segment whose size differs from its header's never opens as it was
//!   written: it is refused, or point-in-time recovery drops from it;
//! - when both open, the read-write store shows what the read-only one showed;
//! - a log made only of whole valid records in order gives back exactly the
//!   folded batches and those records;
//! - after a read-write open, a new write is acknowledged with the next LSN,
//!   close is clean, and a second open (and a read-only open) shows the same
//!   facts plus that write.

use std::path::Path;

use factwal::testing::{apply_ops, read_all, snapshot_files, FactMap};
use factwal::wal::format::{encode_record, SegmentHeader};
use factwal::wal::segment::segment_file_name;
use factwal::{Batch, Config, Error, Lsn, Op, ReadOnlyStore, RecoveryMode, Store, StoreId};

use crate::support::{assert_unchanged, encode_payload, scratch_dir};

/// Segment size of the store and of the crafted segments.
pub const SEGMENT_BYTES: u64 = 4096;
/// Largest record payload of the store.
pub const MAX_RECORD_BYTES: u64 = 1024;
const SEGMENT_HEADER_BYTES: usize = 64;

/// A crafted store.
#[derive(Debug, Clone, PartialEq)]
pub struct Crafted {
    /// The recovery mode of both opens.
    pub recovery_mode: RecoveryMode,
    /// Batches written and folded into redb before the WAL is crafted: the
    /// store's `applied_lsn`.
    pub folded_batches: u8,
    /// Leave a `.wal.tmp` file of an interrupted segment creation.
    pub temporary_file: bool,
    /// The store was closed cleanly before the WAL was crafted (else it
    /// crashed, its WAL in use): after a clean close no segment may hold a
    /// record redb lacks.
    pub clean_close: bool,
    /// The number of the first segment.
    pub first_number: u64,
    /// The segment files, in order.
    pub segments: Vec<SegmentSpec>,
}

/// One crafted segment file.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentSpec {
    /// Its number is the previous one's plus this (0 overwrites the previous file).
    pub number_step: u8,
    /// Its header.
    pub header: HeaderSpec,
    /// Its `lsn_first` minus the LSN that would follow on from the previous segment.
    pub lsn_first_delta: i8,
    /// What follows the header, back to back.
    pub pieces: Vec<Piece>,
    /// How the file ends.
    pub end: SegmentEnd,
}

/// A segment header.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderSpec {
    /// As the writer makes it.
    Valid,
    /// Valid but for one flipped bit (of 512).
    BitFlip(u16),
    /// Valid, naming the next segment's number.
    WrongNumber,
    /// These bytes instead of a header.
    Garbage(Vec<u8>),
    /// Valid, but of another store.
    OtherStore,
    /// A valid format-1 header: no store identity.
    Format1,
    /// Valid, of this store, but written by another opening (epoch).
    OtherEpoch,
}

/// Bytes after the header.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A valid record with the next LSN.
    Record(Vec<Op>),
    /// A valid record with the next LSN plus `delta`; the LSN after it follows on.
    RecordLsn {
        /// Added to the next LSN.
        delta: i8,
        /// The batch.
        ops: Vec<Op>,
    },
    /// A record with the next LSN and one bit flipped (modulo its length).
    BitFlipped {
        /// Which bit.
        bit: u16,
        /// The batch.
        ops: Vec<Op>,
    },
    /// The first `keep` bytes (modulo its length) of a record with the next LSN.
    Truncated {
        /// How many bytes stay.
        keep: u16,
        /// The batch.
        ops: Vec<Op>,
    },
    /// A record with the next LSN framed for another segment (stale salt).
    Foreign(Vec<Op>),
    /// A record with the next LSN, a valid checksum, and this raw payload.
    RawPayload(Vec<u8>),
    /// Raw bytes.
    Garbage(Vec<u8>),
    /// Zero bytes.
    Zeros(u16),
}

/// How a segment file ends.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentEnd {
    /// Zeros up to `SEGMENT_BYTES`, as preallocated.
    Preallocated,
    /// Right after the last piece.
    Exact,
    /// Cut to this many bytes (or left shorter).
    Cut(u16),
    /// Preallocated, then these bytes at the very end.
    GarbageAtEnd(Vec<u8>),
}

/// The config every open uses.
pub fn config(data_dir: &Path, recovery_mode: RecoveryMode) -> Config {
    Config::new(data_dir)
        .segment_bytes(SEGMENT_BYTES)
        .max_record_bytes(MAX_RECORD_BYTES)
        .wal_bytes_max(4 * SEGMENT_BYTES)
        .recovery_mode(recovery_mode)
}

/// The batch folded before the WAL is crafted, number `n` (from 1).
fn folded_batch(n: u8) -> Vec<Op> {
    vec![Op::Assert { session: "s0".into(), fact: format!("folded-{n}"), value: vec![n; 3] }]
}

/// Builds the store, opens it every way, and checks what the module says.
pub fn run(crafted: &Crafted) {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("data");
    let (folded, owner) = fold_prefix(&data_dir, crafted.folded_batches, crafted.clean_close);
    let expected = write_segments(&data_dir.join("wal"), crafted, owner);
    let config = config(&data_dir, crafted.recovery_mode);

    let before = snapshot_files(&data_dir);
    let read_only = ReadOnlyStore::open(&config).map(|store| read_all(&store));
    assert_unchanged(&before, &snapshot_files(&data_dir), "ReadOnlyStore::open");

    let store = match Store::open(config.clone()) {
        Ok(store) => store,
        Err(error @ Error::Corrupted { .. }) => {
            assert_ne!(
                crafted.recovery_mode,
                RecoveryMode::PointInTime,
                "point-in-time refused to open: {error}"
            );
            assert_unchanged(
                &before,
                &snapshot_files(&data_dir),
                &format!("a refused open ({error})"),
            );
            return;
        }
        Err(error @ Error::ForeignSegment { .. }) => {
            let foreign = crafted
                .segments
                .iter()
                .any(|s| matches!(s.header, HeaderSpec::OtherStore | HeaderSpec::Format1));
            assert!(
                foreign,
                "a segment refused as another store's, but none was written so: {error}"
            );
            assert_unchanged(
                &before,
                &snapshot_files(&data_dir),
                &format!("a refused open ({error})"),
            );
            return;
        }
        Err(error @ Error::WalMismatch { .. }) => {
            let other_epoch = crafted.segments.iter().any(|s| s.header == HeaderSpec::OtherEpoch);
            assert!(
                other_epoch || crafted.clean_close,
                "a WAL refused as not the store's: {error}"
            );
            assert_unchanged(
                &before,
                &snapshot_files(&data_dir),
                &format!("a refused open ({error})"),
            );
            return;
        }
        Err(other) => panic!("Store::open gave an untyped refusal: {other:?}"),
    };
    if crafted.recovery_mode != RecoveryMode::PointInTime {
        // Every segment was read by an open that did not refuse: none may
        // have been cut short or extended (never a clean end).
        assert!(
            segment_sizes_whole(&before),
            "a segment of the wrong size was read as a clean end"
        );
    }
    let opened = read_all(&store);
    if let Ok(read_only) = &read_only {
        assert_eq!(&opened, read_only, "the read-write open disagrees with the read-only one");
    }
    if let Some(records) = expected {
        let mut facts = folded;
        records.iter().for_each(|ops| apply_ops(&mut facts, ops));
        assert_eq!(
            opened, facts,
            "a log of valid records gives back exactly the folded batches and its records"
        );
    }
    check_reopen(store, &config, opened);
}

/// After a successful open: a write, a clean close, and two more opens that agree.
fn check_reopen(store: Store, config: &Config, mut facts: FactMap) {
    let lsn_last = store.stats().expect("stats of an open store").lsn_last;
    let probe = Batch::new().assert("probe", "p", b"x".to_vec());
    let lsn = store.write(probe).expect("a write after recovery");
    assert_eq!(lsn, lsn_last + 1, "the first write after recovery takes the next LSN");
    facts.insert(("probe".into(), "p".into()), b"x".to_vec());
    let report = store.close();
    assert!(report.is_clean(), "close after recovery: {report:?}");

    let store = Store::open(config.clone()).expect("a second open after a clean close");
    assert_eq!(read_all(&store), facts, "the second open disagrees with the first");
    assert_eq!(
        store.stats().expect("stats").lsn_last,
        lsn,
        "the second open lost or invented an LSN"
    );
    let report = store.close();
    assert!(report.is_clean(), "second close: {report:?}");
    let read_only =
        ReadOnlyStore::open(config).expect("a read-only open of a cleanly closed store");
    assert_eq!(read_all(&read_only), facts, "the read-only open disagrees after close");
}

/// True when every segment file in the snapshot with a readable header has
/// the size that header gives.
fn segment_sizes_whole(files: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>) -> bool {
    files.iter().filter(|(path, _)| path.extension().is_some_and(|e| e == "wal")).all(
        |(_, bytes)| {
            SegmentHeader::decode(bytes)
                .map_or(true, |header| header.segment_bytes == bytes.len() as u64)
        },
    )
}

/// The store the crafted segments are written for.
#[derive(Debug, Clone, Copy)]
pub struct SegmentOwner {
    /// Its identity.
    pub store_id: StoreId,
    /// The epoch of the opening whose WAL is in use (of the last opening,
    /// after a clean close).
    pub epoch: u32,
}

/// Writes and folds the first batches (redb's `applied_lsn`), then closes
/// the store cleanly or leaves it as a crash would, and empties its WAL
/// directory; returns the facts and whose segments the WAL may hold.
fn fold_prefix(data_dir: &Path, batches: u8, clean_close: bool) -> (FactMap, SegmentOwner) {
    let store = Store::open(config(data_dir, RecoveryMode::default())).expect("open a new store");
    let store_id = store.store_id();
    let mut facts = FactMap::new();
    for n in 1..=batches {
        let ops = folded_batch(n);
        apply_ops(&mut facts, &ops);
        store.write(Batch::from(ops)).expect("write a batch to fold");
    }
    let wal_dir = data_dir.join("wal");
    let epoch = segment_epoch(&wal_dir);
    if clean_close {
        let report = store.close();
        assert!(report.is_clean(), "close of the prefix store: {report:?}");
    } else {
        store.checkpoint(factwal::CheckpointMode::Truncate).expect("fold the prefix");
        store.simulate_crash();
    }
    for entry in std::fs::read_dir(&wal_dir).expect("list the WAL directory").flatten() {
        if entry.path().extension().is_some_and(|e| e == "wal") {
            std::fs::remove_file(entry.path()).expect("empty the WAL directory");
        }
    }
    (facts, SegmentOwner { store_id, epoch })
}

/// The epoch in the header of the (one) segment of `wal_dir`.
fn segment_epoch(wal_dir: &Path) -> u32 {
    let entries = std::fs::read_dir(wal_dir).expect("list the WAL directory");
    let segment = entries
        .flatten()
        .find(|e| e.path().extension().is_some_and(|e| e == "wal"))
        .expect("a segment");
    let bytes = std::fs::read(segment.path()).expect("read the segment");
    SegmentHeader::decode(&bytes).expect("the store's own header").epoch
}

/// A salt per segment number, and another for stale records.
fn salt_of(number: u64) -> u64 {
    0x5a17_0000_0000_0000 ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Writes the crafted segment files; returns the batches a correct recovery
/// must replay when the log is made only of whole valid records in order
/// (`None` when it is not).
fn write_segments(wal_dir: &Path, crafted: &Crafted, owner: SegmentOwner) -> Option<Vec<Vec<Op>>> {
    std::fs::create_dir_all(wal_dir).expect("create the WAL directory");
    let mut pristine = Some(Vec::new());
    let mut number = crafted.first_number;
    let mut lsn_next: Lsn = Lsn::from(crafted.folded_batches) + 1;
    for (index, spec) in crafted.segments.iter().enumerate() {
        if index > 0 {
            number += u64::from(spec.number_step);
        }
        let lsn_first = lsn_next.saturating_add_signed(i64::from(spec.lsn_first_delta)).max(1);
        let (store_id, epoch) = match spec.header {
            HeaderSpec::OtherStore => {
                (StoreId::from_u64(owner.store_id.get() ^ 0x5a5a), owner.epoch)
            }
            HeaderSpec::Format1 => (None, 0),
            HeaderSpec::OtherEpoch => (Some(owner.store_id), owner.epoch ^ 0x0f0f),
            _ => (Some(owner.store_id), owner.epoch),
        };
        let header = SegmentHeader {
            number,
            lsn_first,
            salt: salt_of(number),
            segment_bytes: SEGMENT_BYTES,
            store_id,
            epoch,
        };
        let mut bytes = header_bytes(&spec.header, &header);
        lsn_next = lsn_first;
        for piece in &spec.pieces {
            lsn_next = write_piece(&mut bytes, &header, lsn_next, piece);
        }
        end_segment(&mut bytes, &spec.end);
        let fits = bytes.len() as u64 == SEGMENT_BYTES;
        if let Some(records) =
            pristine.as_mut().filter(|_| fits && !crafted.clean_close && is_pristine(index, spec))
        {
            records.extend(spec.pieces.iter().filter_map(|piece| match piece {
                Piece::Record(ops) => Some(ops.clone()),
                _ => None,
            }));
        } else {
            pristine = None;
        }
        std::fs::write(wal_dir.join(segment_file_name(number)), bytes)
            .expect("write a crafted segment");
    }
    if crafted.temporary_file {
        std::fs::write(wal_dir.join(format!("{:020}.wal.tmp", number + 1)), [7u8; 100])
            .expect("write a .tmp");
    }
    pristine
}

/// True for a segment as the writer makes it: a valid header of this store
/// following on from the previous segment, whole valid records in order,
/// preallocated zeros or nothing after them (the file's size is checked
/// apart).
fn is_pristine(index: usize, spec: &SegmentSpec) -> bool {
    (index == 0 || spec.number_step == 1)
        && spec.header == HeaderSpec::Valid
        && spec.lsn_first_delta == 0
        && matches!(spec.end, SegmentEnd::Preallocated | SegmentEnd::Exact)
        && !matches!(
            spec.header,
            HeaderSpec::OtherStore | HeaderSpec::Format1 | HeaderSpec::OtherEpoch
        )
        && spec.pieces.iter().all(|piece| matches!(piece, Piece::Record(_)))
}

fn header_bytes(spec: &HeaderSpec, header: &SegmentHeader) -> Vec<u8> {
    match spec {
        HeaderSpec::Valid
        | HeaderSpec::OtherStore
        | HeaderSpec::Format1
        | HeaderSpec::OtherEpoch => header.encode().to_vec(),
        HeaderSpec::BitFlip(bit) => {
            let mut bytes = header.encode();
            let bit = usize::from(*bit) % (SEGMENT_HEADER_BYTES * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            bytes.to_vec()
        }
        HeaderSpec::WrongNumber => {
            SegmentHeader { number: header.number + 1, ..*header }.encode().to_vec()
        }
        HeaderSpec::Garbage(bytes) => bytes.clone(),
    }
}

/// Appends one piece; returns the LSN that follows.
fn write_piece(bytes: &mut Vec<u8>, header: &SegmentHeader, lsn: Lsn, piece: &Piece) -> Lsn {
    let record = |lsn: Lsn, ops: &[Op], header: &SegmentHeader| {
        let mut record = Vec::new();
        encode_record(&mut record, header, lsn, &encode_payload(ops));
        record
    };
    match piece {
        Piece::Record(ops) => {
            bytes.extend(record(lsn, ops, header));
            lsn + 1
        }
        Piece::RecordLsn { delta, ops } => {
            let lsn = lsn.saturating_add_signed(i64::from(*delta));
            bytes.extend(record(lsn, ops, header));
            lsn.saturating_add(1)
        }
        Piece::BitFlipped { bit, ops } => {
            let mut flipped = record(lsn, ops, header);
            let bit = usize::from(*bit) % (flipped.len() * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            bytes.extend(flipped);
            lsn + 1
        }
        Piece::Truncated { keep, ops } => {
            let whole = record(lsn, ops, header);
            bytes.extend(&whole[..usize::from(*keep) % whole.len()]);
            lsn + 1
        }
        Piece::Foreign(ops) => {
            let stale = SegmentHeader { salt: salt_of(header.number) ^ 1, ..*header };
            bytes.extend(record(lsn, ops, &stale));
            lsn
        }
        Piece::RawPayload(payload) => {
            let mut framed = Vec::new();
            encode_record(&mut framed, header, lsn, payload);
            bytes.extend(framed);
            lsn + 1
        }
        Piece::Garbage(garbage) => {
            bytes.extend(garbage);
            lsn
        }
        Piece::Zeros(count) => {
            bytes.resize(bytes.len() + usize::from(*count), 0);
            lsn
        }
    }
}

fn end_segment(bytes: &mut Vec<u8>, end: &SegmentEnd) {
    let preallocated = (SEGMENT_BYTES as usize).max(bytes.len());
    match end {
        SegmentEnd::Preallocated => bytes.resize(preallocated, 0),
        SegmentEnd::Exact => {}
        SegmentEnd::Cut(length) => bytes.truncate(usize::from(*length)),
        SegmentEnd::GarbageAtEnd(garbage) => {
            bytes.resize(preallocated, 0);
            let length = garbage.len().min(bytes.len());
            let at = bytes.len() - length;
            bytes[at..].copy_from_slice(&garbage[..length]);
        }
    }
}
