//! Mid-log corruption: a flipped bit in a record with valid data after it, a
//! missing segment, a damaged segment header, a header naming another
//! segment. Recovery must refuse to open, naming the file, the offset and the
//! LSN, and change nothing on disk; point-in-time recovery keeps the valid
//! prefix. Files in the WAL directory that are not segments are left alone,
//! except leftover temporary segments, which go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use factwal::testing::{changed_files, snapshot_files};
use factwal::wal::format::SegmentHeader;
use factwal::{Config, CorruptionKind, Error, RecoveryMode, Store};
use tempfile::TempDir;

mod common;
use common::{
    assert_batch, batch_of, records_in, Fact, RecordAt, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

/// Batches written before the crash: LSN `n` is batch `n`. With ~1 KiB
/// records and 16 KiB segments they fill three segments.
const BATCHES: u64 = 40;
const FILLER_BYTES: usize = 1000;

/// The facts of batch `n`; every fact id is used by one batch only, so a
/// batch's presence can be read off its own facts.
fn batch_facts(n: u64) -> Vec<Fact> {
    let session = format!("session-{}", n % 3);
    vec![
        (session.clone(), format!("b{n}-f0"), format!("v{n}").into_bytes()),
        (session, format!("b{n}-filler"), vec![n as u8; FILLER_BYTES]),
    ]
}

/// Checks that batches below `lsn_first_missing` are all present and the
/// rest all absent.
fn assert_prefix(store: &Store, lsn_first_missing: u64, context: &str) {
    for n in 1..=BATCHES {
        assert_batch(store, &batch_facts(n), n < lsn_first_missing, context);
    }
}

/// A crashed store holding batches 1..=BATCHES in three segments. Paths are
/// relative to the data directory, so they apply to every copy.
struct Pristine {
    dir: TempDir,
    segments: Vec<(PathBuf, Vec<RecordAt>)>,
}

fn pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    for n in 1..=BATCHES {
        assert_eq!(store.write(batch_of(&batch_facts(n))).unwrap(), n);
    }
    store.simulate_crash();
    let segments: Vec<(PathBuf, Vec<RecordAt>)> = common::segment_paths(&dir.path().join("wal"))
        .into_iter()
        .map(|path| (path.strip_prefix(dir.path()).unwrap().to_path_buf(), records_in(&path)))
        .collect();
    let names: Vec<String> = segments.iter().map(|(path, _)| path.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "wal/00000000000000000001.wal",
            "wal/00000000000000000002.wal",
            "wal/00000000000000000003.wal"
        ]
    );
    let lsns: Vec<u64> =
        segments.iter().flat_map(|(_, records)| records.iter().map(|r| r.lsn)).collect();
    assert_eq!(lsns, (1..=BATCHES).collect::<Vec<_>>(), "every batch is one record, in order");
    assert!(segments.iter().all(|(_, records)| records.len() >= 3), "{segments:?}");
    Pristine { dir, segments }
}

impl Pristine {
    /// A fresh copy of the crashed store to damage.
    fn copy(&self) -> TempDir {
        let work = tempfile::tempdir().unwrap();
        common::copy_dir(self.dir.path(), work.path());
        work
    }

    /// Segment `number` (1-based) in a copy: its path and records.
    fn segment(&self, work: &TempDir, number: usize) -> (PathBuf, Vec<RecordAt>) {
        let (relative, records) = &self.segments[number - 1];
        (work.path().join(relative), records.clone())
    }
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

type Corruption = (PathBuf, u64, u64, CorruptionKind);

fn corruption_of(result: Result<Store, Error>) -> Corruption {
    match result {
        Err(Error::Corrupted { path, offset, lsn, kind }) => (path, offset, lsn, kind),
        Err(other) => panic!("expected Error::Corrupted, got {other:?}"),
        Ok(_) => panic!("expected Error::Corrupted, the store opened"),
    }
}

/// Files outside the WAL directory that refused opens changed: for each, how
/// many opens changed it and the first that did.
type ChangedOutsideWal = BTreeMap<PathBuf, (usize, String)>;

/// Opens twice: each open must fail with exactly `expected` and leave the
/// WAL directory byte-identical. Files changed outside the WAL directory are
/// added to `changed_outside_wal`, which the caller asserts last, once every
/// other check of the test has run.
fn assert_refused(
    config: &Config,
    expected: &Corruption,
    context: &str,
    changed_outside_wal: &mut ChangedOutsideWal,
) {
    let data_dir = config.persistence.data_dir.clone();
    let before = snapshot_files(&data_dir);
    for attempt in 1..=2 {
        let context = format!("{context}, attempt {attempt}");
        assert_eq!(&corruption_of(Store::open(config.clone())), expected, "{context}");
        let (in_wal, outside): (Vec<_>, Vec<_>) =
            changed_files(&before, &snapshot_files(&data_dir))
                .into_iter()
                .partition(|path| path.starts_with(config.wal_dir()));
        assert_eq!(in_wal, Vec::<PathBuf>::new(), "{context}: WAL changed by a refused open");
        for path in outside {
            let name = path.strip_prefix(&data_dir).unwrap().to_path_buf();
            changed_outside_wal.entry(name).or_insert((0, context.clone())).0 += 1;
        }
    }
}

fn assert_nothing_changed_outside_wal(changed_outside_wal: ChangedOutsideWal) {
    assert_eq!(
        changed_outside_wal,
        ChangedOutsideWal::new(),
        "files changed by refused opens: (count, first)"
    );
}

#[test]
fn bit_flip_in_first_segment_is_refused_and_changes_nothing() {
    // Flips one payload bit of the third record of the first of three
    // segments. Its segment stops being readable there, so the next segment's
    // first LSN no longer follows on: the open is refused as an LSN gap at the
    // damaged record (file, offset and LSN), in both refusing modes, twice,
    // and no file changes.
    let pristine = pristine();
    let work = pristine.copy();
    let (segment, records) = pristine.segment(&work, 1);
    let damaged = records[2];
    flip_bit(
        &segment,
        damaged.offset + RECORD_HEADER_BYTES + (damaged.bytes - RECORD_HEADER_BYTES) / 2,
        3,
    );
    let expected = (segment, damaged.offset, damaged.lsn, CorruptionKind::LsnGap);

    let mut changed = ChangedOutsideWal::new();
    assert_refused(&common::small_config(work.path()), &expected, "default mode", &mut changed);
    let absolute =
        common::small_config(work.path()).recovery_mode(RecoveryMode::AbsoluteConsistency);
    assert_refused(&absolute, &expected, "absolute consistency", &mut changed);
    assert_nothing_changed_outside_wal(changed);
}

#[test]
fn point_in_time_keeps_the_prefix_before_a_bit_flip() {
    // Same damage as above, opened under point-in-time recovery: batches
    // before the damaged record are kept, it and everything after (the rest
    // of its segment and two more segments) are gone, one ERROR names the
    // corruption and the two segments removed. The log then goes on from the
    // damaged record's LSN, and a default-mode reopen after a crash sees the
    // same state with no WARN or ERROR.
    let pristine = pristine();
    let work = pristine.copy();
    let (segment, records) = pristine.segment(&work, 1);
    let damaged = records[2];
    flip_bit(
        &segment,
        damaged.offset + RECORD_HEADER_BYTES + (damaged.bytes - RECORD_HEADER_BYTES) / 2,
        3,
    );
    let corruption = Error::Corrupted {
        path: segment,
        offset: damaged.offset,
        lsn: damaged.lsn,
        kind: CorruptionKind::LsnGap,
    };

    let config = common::small_config(work.path()).recovery_mode(RecoveryMode::PointInTime);
    let (opened, events) = common::capture(|| Store::open(config));
    let store = opened.unwrap();
    let reported: Vec<_> = common::warnings_and_errors(&events)
        .into_iter()
        .map(|e| (e.target.as_str(), e.level, e.fields.clone()))
        .collect();
    // Records 4..=40 follow the damaged one (3): each can still be read, and
    // the ERROR says they are dropped.
    let dropped = format!(
        "37 readable records (LSN 4..=40); {} non-zero bytes zeroed in the damaged segment from the cut on",
        records.last().map(|r| r.offset + r.bytes).unwrap() - damaged.offset
    );
    let fields = [
        ("corruption".to_string(), corruption.to_string()),
        ("dropped".to_string(), dropped),
        ("removed_segments".to_string(), "2".into()),
    ];
    assert_eq!(
        reported,
        vec![("factwal::recovery", tracing::Level::ERROR, fields.into_iter().collect())]
    );
    assert_prefix(&store, damaged.lsn, "point in time");
    assert_eq!(store.stats().unwrap().lsn_last, damaged.lsn - 1);
    let after = vec![("after".to_string(), "f".to_string(), b"after the cut".to_vec())];
    assert_eq!(
        store.write(batch_of(&after)).unwrap(),
        damaged.lsn,
        "LSNs go on from the kept prefix"
    );
    store.simulate_crash();

    let (opened, events) = common::capture(|| Store::open(common::small_config(work.path())));
    let store = opened.unwrap();
    assert_eq!(common::warnings_and_errors(&events).len(), 0, "{events:?}");
    assert_prefix(&store, damaged.lsn, "default mode after point in time");
    assert_batch(&store, &after, true, "default mode after point in time");
    assert_eq!(store.stats().unwrap().lsn_last, damaged.lsn);
    assert!(store.close().is_clean());
}

#[test]
fn bit_flip_in_last_segment_before_valid_records_is_not_a_torn_tail() {
    // Damages the first record of the last segment, which two or more valid
    // records follow, once in its payload and once in its length field: that
    // is corruption, not a torn tail, so the default mode refuses it too,
    // naming the record, and changes nothing.
    let pristine = pristine();
    let mut changed = ChangedOutsideWal::new();
    for (what, field_at) in [("payload", RECORD_HEADER_BYTES + 10), ("length field", 4)] {
        let work = pristine.copy();
        let (segment, records) = pristine.segment(&work, 3);
        let damaged = records[0];
        flip_bit(&segment, damaged.offset + field_at, 0);
        let expected = (segment, damaged.offset, damaged.lsn, CorruptionKind::ChecksumMismatch);
        assert_refused(&common::small_config(work.path()), &expected, what, &mut changed);
    }
    assert_nothing_changed_outside_wal(changed);
}

#[test]
fn missing_middle_segment_is_refused() {
    // Deletes the second of three segments: the open is refused naming the
    // missing file and the first LSN it held, and nothing changes.
    let pristine = pristine();
    let work = pristine.copy();
    let (missing, records) = pristine.segment(&work, 2);
    std::fs::remove_file(&missing).unwrap();
    let expected = (missing, 0, records[0].lsn, CorruptionKind::MissingSegment);
    let mut changed = ChangedOutsideWal::new();
    assert_refused(&common::small_config(work.path()), &expected, "missing", &mut changed);
    assert_nothing_changed_outside_wal(changed);
}

#[test]
fn damaged_segment_header_is_refused() {
    // Flips one bit in each field of a segment header (magic, version, header
    // size, number, first LSN, salt, size, reserved, checksum), in the first,
    // a middle and the last segment, each on a fresh copy: every one is a bad
    // segment header at offset 0 of that file, expecting its first LSN.
    let pristine = pristine();
    let mut changed = ChangedOutsideWal::new();
    for number in 1..=3 {
        for byte in [0, 8, 12, 16, 24, 32, 40, 48, 60] {
            let work = pristine.copy();
            let (segment, records) = pristine.segment(&work, number);
            flip_bit(&segment, byte, 1);
            let expected = (segment, 0, records[0].lsn, CorruptionKind::BadSegmentHeader);
            let context = format!("segment {number}, byte {byte}");
            assert_refused(&common::small_config(work.path()), &expected, &context, &mut changed);
        }
    }
    assert_nothing_changed_outside_wal(changed);
}

#[test]
fn header_naming_another_segment_is_refused() {
    // Two ways a valid header can sit under the wrong name: segments 2 and 3
    // swapped on disk, and segment 2's header rewritten (with a correct
    // checksum) to claim number 9. Either way the file named 2 is refused at
    // offset 0 as a number mismatch, and nothing changes.
    let pristine = pristine();
    let mut changed = ChangedOutsideWal::new();

    let work = pristine.copy();
    let (second, records) = pristine.segment(&work, 2);
    let (third, _) = pristine.segment(&work, 3);
    let parked = second.with_extension("parked");
    std::fs::rename(&second, &parked).unwrap();
    std::fs::rename(&third, &second).unwrap();
    std::fs::rename(&parked, &third).unwrap();
    let expected = (second, 0, records[0].lsn, CorruptionKind::SegmentNumberMismatch);
    assert_refused(&common::small_config(work.path()), &expected, "swapped", &mut changed);

    let work = pristine.copy();
    let (second, records) = pristine.segment(&work, 2);
    let mut bytes = std::fs::read(&second).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    assert_eq!(header.number, 2);
    bytes[..SEGMENT_HEADER_BYTES as usize]
        .copy_from_slice(&SegmentHeader { number: 9, ..header }.encode());
    std::fs::write(&second, bytes).unwrap();
    let expected = (second, 0, records[0].lsn, CorruptionKind::SegmentNumberMismatch);
    assert_refused(&common::small_config(work.path()), &expected, "renumbered", &mut changed);
    assert_nothing_changed_outside_wal(changed);
}

#[test]
fn other_files_in_the_wal_directory_are_ignored_and_temporaries_removed() {
    // Adds files that are not segments (a note, a name with too few digits,
    // a segment name with another suffix) and a leftover temporary segment
    // with a number the store will not create itself: the open replays every
    // batch with no WARN or ERROR, leaves the other files byte for byte, and
    // removes the temporary one.
    let pristine = pristine();
    let work = pristine.copy();
    let wal_dir = work.path().join("wal");
    let bystanders = [
        ("notes.txt", b"operator notes".to_vec()),
        ("0000000000000000005.wal", vec![0xAB; 4096]),
        ("00000000000000000002.wal.bak", std::fs::read(pristine.segment(&work, 2).0).unwrap()),
    ];
    for (name, bytes) in &bystanders {
        std::fs::write(wal_dir.join(name), bytes).unwrap();
    }
    let temporary = wal_dir.join("00000000000000000099.wal.tmp");
    std::fs::write(&temporary, vec![0xCD; 4096]).unwrap();

    let (opened, events) = common::capture(|| Store::open(common::small_config(work.path())));
    let store = opened.unwrap();
    assert_eq!(common::warnings_and_errors(&events).len(), 0, "{events:?}");
    assert_prefix(&store, BATCHES + 1, "with bystanders");
    assert!(!temporary.exists(), "the leftover temporary segment is removed");
    for (name, bytes) in &bystanders {
        assert_eq!(&std::fs::read(wal_dir.join(name)).unwrap(), bytes, "{name} left alone");
    }
    let names: Vec<String> =
        common::segment_paths(&wal_dir).iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        [wal_dir.join("00000000000000000004.wal").display().to_string()],
        "a fresh segment"
    );
    assert!(store.close().is_clean());
    for (name, bytes) in &bystanders {
        assert_eq!(
            &std::fs::read(wal_dir.join(name)).unwrap(),
            bytes,
            "{name} left alone by close"
        );
    }
}
