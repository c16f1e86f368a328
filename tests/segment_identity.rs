//! Invariant 7: a record left over in a recycled or preallocated segment is
//! never replayed.
//!
//! Each test builds a WAL directory byte by byte with the public format
//! functions, opens the store read-write, and checks exactly which facts came
//! back, which LSN comes next and what recovery reported. Every stale record
//! is framed with a valid checksum over its own fields and carries the LSN
//! recovery expects next, at the offset where it expects the next record, so
//! the segment identity check in `format::decode_record` (salt and number) is
//! the only thing keeping it out: each such test first asserts that the same
//! bytes decode as `Decoded::Valid` when the identity is ignored.

mod common;

use std::path::{Path, PathBuf};

use common::CapturedEvent;
use factwal::testing::snapshot_files;
use factwal::wal::format::{
    decode_record, encode_record, Decoded, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use factwal::{Batch, Config, Lsn, Store};

/// `common::small_config`'s segment size and record limit.
const SEGMENT_BYTES: u64 = 16 * 1024;
const MAX_RECORD_BYTES: u64 = 4 * 1024;

/// One record as found in a segment file.
#[derive(Debug, Clone)]
struct OnDisk {
    offset: u64,
    lsn: Lsn,
    payload: Vec<u8>,
}

impl OnDisk {
    fn end(&self) -> u64 {
        self.offset + 32 + self.payload.len() as u64
    }
}

/// The header and the valid records at the start of a segment file.
fn read_segment(path: &Path) -> (SegmentHeader, Vec<OnDisk>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let header = SegmentHeader::decode(&bytes).expect("a valid segment header");
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Decoded::Valid { lsn, payload, encoded_bytes } =
        decode_record(&bytes[offset as usize..], &header, MAX_RECORD_BYTES)
    {
        records.push(OnDisk { offset, lsn, payload: payload.to_vec() });
        offset += encoded_bytes;
    }
    (header, records, bytes)
}

/// The payloads the engine writes for these batches, in order: written through
/// a scratch store and read back from its segment file (the batch encoding is
/// private to the crate).
fn payloads_of(batches: Vec<Batch>) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let count = batches.len();
    for batch in batches {
        store.write(batch).unwrap();
    }
    store.simulate_crash();
    let paths = common::segment_paths(&config.wal_dir());
    assert_eq!(paths.len(), 1, "the scratch batches fit one segment");
    let (_, records, _) = read_segment(&paths[0]);
    assert_eq!(records.len(), count);
    records.into_iter().map(|record| record.payload).collect()
}

fn assert_batch(fact: &str, value: &str) -> Batch {
    Batch::new().assert("s", fact, value.as_bytes().to_vec())
}

/// Writes a segment file: `header`, then each record framed with the identity
/// given for it (its own salt and number), then zeros up to
/// `header.segment_bytes`. Returns the offset just past each record.
fn craft_segment(
    path: &Path,
    header: &SegmentHeader,
    records: &[(SegmentHeader, Lsn, &[u8])],
) -> Vec<u64> {
    let mut bytes = header.encode().to_vec();
    let mut ends = Vec::new();
    for (identity, lsn, payload) in records {
        encode_record(&mut bytes, identity, *lsn, payload);
        ends.push(bytes.len() as u64);
    }
    assert!(bytes.len() as u64 <= header.segment_bytes, "the crafted records fit the segment");
    bytes.resize(header.segment_bytes as usize, 0);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    ends
}

fn segment_path(config: &Config, number: u64) -> PathBuf {
    config.wal_dir().join(format!("{number:020}.wal"))
}

/// Opens the store, capturing every tracing event of the open.
fn open_capturing(config: &Config) -> (Store, Vec<CapturedEvent>) {
    let (store, events) = common::capture(|| Store::open(config.clone()));
    (store.unwrap(), events)
}

/// The (file, offset, bytes_dropped) of every torn-tail WARN, after checking
/// that no other WARN or ERROR was emitted.
fn torn_tail_warnings(events: &[CapturedEvent]) -> Vec<(String, String, String)> {
    let loud: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.level, tracing::Level::WARN | tracing::Level::ERROR))
        .collect();
    loud.iter()
        .map(|event| {
            assert_eq!(event.target, "factwal::recovery", "unexpected event {event:?}");
            assert!(
                event.message.starts_with("unreadable last record dropped"),
                "unexpected event {event:?}"
            );
            (
                event.fields["file"].clone(),
                event.fields["offset"].clone(),
                event.fields["bytes_dropped"].clone(),
            )
        })
        .collect()
}

/// The records count of the "replayed WAL into redb" INFO, if it was emitted.
fn replayed_records(events: &[CapturedEvent]) -> Option<String> {
    events
        .iter()
        .find(|e| e.message == "replayed WAL into redb")
        .map(|e| e.fields["records"].clone())
}

#[test]
fn recycled_segment_does_not_replay_the_records_of_its_previous_life() {
    // Store A writes LSNs 1-5, closes (folded, WAL emptied, so segment numbers
    // restart at 1), reopens and writes LSNs 6-10 ("stale" facts) into segment
    // 1, then crashes. Store B writes LSNs 1-5 ("live" facts) and closes, so
    // it expects LSN 6 in its next segment, number 1. A recycler then reuses
    // A's file as B's segment 1: only the header is rewritten (same number,
    // lsn_first 6, a new salt), so A's record at offset 64 is LSN 6 of
    // segment 1 with a valid checksum and differs from what B expects only in
    // its salt. B must open without replaying any stale fact.
    let old_dir = tempfile::tempdir().unwrap();
    let old_config = common::small_config(old_dir.path());
    let store = Store::open(old_config.clone()).unwrap();
    for i in 1..=5 {
        store.write(assert_batch(&format!("first{i}"), "first life")).unwrap();
    }
    assert!(store.close().is_clean());
    let store = Store::open(old_config.clone()).unwrap();
    for i in 6..=10 {
        assert_eq!(
            store.write(Batch::new().assert("stale", format!("f{i}"), format!("old-{i}"))).unwrap(),
            i
        );
    }
    store.simulate_crash();
    let old_path = segment_path(&old_config, 1);
    assert_eq!(common::segment_paths(&old_config.wal_dir()), vec![old_path.clone()]);
    let (old_header, old_records, old_bytes) = read_segment(&old_path);
    assert_eq!(old_records.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
    assert_eq!(old_records[0].offset, SEGMENT_HEADER_BYTES);

    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let store_id = store.store_id();
    for i in 1..=5 {
        assert_eq!(
            store.write(Batch::new().assert("live", format!("f{i}"), format!("new-{i}"))).unwrap(),
            i
        );
    }
    assert!(store.close().is_clean());
    assert!(common::segment_paths(&config.wal_dir()).is_empty(), "close emptied the WAL");

    // The recycler writes a header of B's own (its identity, a new salt).
    let recycled = SegmentHeader {
        number: 1,
        lsn_first: 6,
        salt: old_header.salt ^ 0x5a5a_5a5a_5a5a_5a5a,
        store_id: Some(store_id),
        ..old_header
    };
    let mut bytes = old_bytes.clone();
    bytes[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&recycled.encode());
    let path = segment_path(&config, 1);
    std::fs::write(&path, &bytes).unwrap();
    // The premise: the stale record is exactly what B expects next except for
    // its salt, so only the salt check stands between it and a replay.
    let rest = &bytes[SEGMENT_HEADER_BYTES as usize..];
    let ignoring_salt = SegmentHeader { salt: old_header.salt, ..recycled };
    assert!(matches!(
        decode_record(rest, &ignoring_salt, MAX_RECORD_BYTES),
        Decoded::Valid { lsn: 6, .. }
    ));
    assert_eq!(decode_record(rest, &recycled, MAX_RECORD_BYTES), Decoded::Invalid);

    let (store, events) = open_capturing(&config);
    assert_eq!(
        store.facts("stale").unwrap().len(),
        0,
        "no record of the file's previous life is replayed"
    );
    let live = store.facts("live").unwrap();
    assert_eq!(live.len(), 5);
    for i in 1..=5 {
        assert_eq!(live[&format!("f{i}")], format!("new-{i}").into_bytes());
    }
    assert_eq!(replayed_records(&events), None, "nothing was replayed");
    // What the engine does: the stale records are non-zero bytes after the
    // last valid record (none) of the last segment, and no record with this
    // segment's salt follows them, so recovery classifies them as a torn tail:
    // one WARN naming the file, offset 64 and every stale byte (the old
    // records end in a non-zero value byte), which it then zeroes.
    let stale_bytes = old_records.last().unwrap().end() - SEGMENT_HEADER_BYTES;
    assert_eq!(
        torn_tail_warnings(&events),
        vec![(
            path.display().to_string(),
            SEGMENT_HEADER_BYTES.to_string(),
            stale_bytes.to_string()
        )]
    );
    assert_eq!(store.stats().unwrap().lsn_last, 5);
    assert_eq!(
        store.write(assert_batch("after", "x")).unwrap(),
        6,
        "LSNs continue from B's own history"
    );
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    assert_eq!(store.facts("stale").unwrap().len(), 0);
    assert_eq!(store.facts("live").unwrap().len(), 5);
    assert_eq!(store.fact("s", "after").unwrap(), Some(b"x".to_vec()));
    assert_eq!(store.stats().unwrap().lsn_last, 6);
}

#[test]
fn stale_record_with_the_expected_lsn_and_another_salt_after_the_last_valid_record_is_not_replayed()
{
    // Segment 1 holds LSNs 1 and 2, then LSNs 3 and 4 framed for an earlier
    // segment 1 with another salt (numbers restart at 1 after a close, so an
    // old file with the same number is the realistic source). The stale LSN 3
    // sits exactly where LSN 3 is expected, so only the salt check stops it.
    let payloads = payloads_of(vec![
        assert_batch("f1", "one"),
        assert_batch("f2", "two"),
        assert_batch("stale3", "old three"),
        assert_batch("stale4", "old four"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let (store_id, epoch) = common::crashed_empty_store(&config);
    let header = SegmentHeader {
        number: 1,
        lsn_first: 1,
        salt: 0x1234_5678_9abc_def0,
        segment_bytes: SEGMENT_BYTES,
        store_id: Some(store_id),
        epoch,
    };
    let foreign = SegmentHeader { salt: 0x0fed_cba9_8765_4321, ..header };
    let path = segment_path(&config, 1);
    let ends = craft_segment(
        &path,
        &header,
        &[
            (header, 1, &payloads[0]),
            (header, 2, &payloads[1]),
            (foreign, 3, &payloads[2]),
            (foreign, 4, &payloads[3]),
        ],
    );
    let bytes = std::fs::read(&path).unwrap();
    let stale = &bytes[ends[1] as usize..];
    let ignoring_salt = SegmentHeader { salt: foreign.salt, ..header };
    assert!(matches!(
        decode_record(stale, &ignoring_salt, MAX_RECORD_BYTES),
        Decoded::Valid { lsn: 3, .. }
    ));

    let (store, events) = open_capturing(&config);
    let facts = store.facts("s").unwrap();
    assert_eq!(
        facts.keys().collect::<Vec<_>>(),
        vec!["f1", "f2"],
        "exactly LSNs 1 and 2 are replayed"
    );
    assert_eq!(replayed_records(&events), Some("2".to_string()));
    // The stale records are non-zero bytes with no record of this segment's
    // salt after them: a torn tail, reported and zeroed.
    assert_eq!(
        torn_tail_warnings(&events),
        vec![(path.display().to_string(), ends[1].to_string(), (ends[3] - ends[1]).to_string())]
    );
    assert_eq!(store.stats().unwrap().lsn_last, 2);
    assert_eq!(
        store.write(assert_batch("f3", "three")).unwrap(),
        3,
        "LSN 3 is free for the next write"
    );
    assert_eq!(store.fact("s", "f3").unwrap(), Some(b"three".to_vec()));
    assert_eq!(store.fact("s", "stale3").unwrap(), None);
}

#[test]
fn record_with_the_right_salt_but_another_segment_number_is_not_replayed() {
    // Segment 1 holds LSNs 1 and 2, then an LSN 3 record with segment 1's
    // salt but segment 2's number in its header. It sits where LSN 3 is
    // expected, so only the number check stops it.
    let payloads = payloads_of(vec![
        assert_batch("f1", "one"),
        assert_batch("f2", "two"),
        assert_batch("stale3", "x"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let (store_id, epoch) = common::crashed_empty_store(&config);
    let header = SegmentHeader {
        number: 1,
        lsn_first: 1,
        salt: 0x1234_5678_9abc_def0,
        segment_bytes: SEGMENT_BYTES,
        store_id: Some(store_id),
        epoch,
    };
    let renumbered = SegmentHeader { number: 2, ..header };
    let path = segment_path(&config, 1);
    let ends = craft_segment(
        &path,
        &header,
        &[(header, 1, &payloads[0]), (header, 2, &payloads[1]), (renumbered, 3, &payloads[2])],
    );
    let bytes = std::fs::read(&path).unwrap();
    let stale = &bytes[ends[1] as usize..];
    let ignoring_number = SegmentHeader { number: 2, ..header };
    assert!(matches!(
        decode_record(stale, &ignoring_number, MAX_RECORD_BYTES),
        Decoded::Valid { lsn: 3, .. }
    ));

    let (store, events) = open_capturing(&config);
    let facts = store.facts("s").unwrap();
    assert_eq!(
        facts.keys().collect::<Vec<_>>(),
        vec!["f1", "f2"],
        "exactly LSNs 1 and 2 are replayed"
    );
    assert_eq!(replayed_records(&events), Some("2".to_string()));
    assert_eq!(
        torn_tail_warnings(&events),
        vec![(path.display().to_string(), ends[1].to_string(), (ends[2] - ends[1]).to_string())]
    );
    assert_eq!(store.stats().unwrap().lsn_last, 2);
    assert_eq!(store.write(assert_batch("f3", "three")).unwrap(), 3);
}

#[test]
fn zeroed_preallocated_tail_replays_exactly_the_valid_records_without_a_warning() {
    // Two layouts of preallocated space after valid records: a real segment
    // written by the store (zero-filled to segment_bytes) and a crafted one
    // whose zero tail is shorter than a record header. Each reopen must replay
    // exactly the valid records and stay silent: zeros are space never
    // written, not a torn record. Zeros cannot pass for a record with or
    // without the identity check (their length field is 0), so what this
    // guards is the zero classification and the torn-tail byte count; it
    // would fail if zeroed space were reported (or zeroed) as dropped bytes.
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    for i in 1..=3 {
        assert_eq!(store.write(assert_batch(&format!("f{i}"), "v")).unwrap(), i);
    }
    store.simulate_crash();
    let path = segment_path(&config, 1);
    let (_, records, bytes) = read_segment(&path);
    assert_eq!(bytes.len() as u64, SEGMENT_BYTES, "the segment is preallocated to its full size");
    assert_eq!(records.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(
        bytes[records[2].end() as usize..].iter().all(|&b| b == 0),
        "the preallocated tail is zeros"
    );

    let (store, events) = open_capturing(&config);
    assert_eq!(torn_tail_warnings(&events), vec![]);
    assert_eq!(replayed_records(&events), Some("3".to_string()));
    assert_eq!(store.facts("s").unwrap().keys().collect::<Vec<_>>(), vec!["f1", "f2", "f3"]);
    assert_eq!(store.stats().unwrap().lsn_last, 3);
    assert_eq!(store.write(assert_batch("f4", "v")).unwrap(), 4);
    store.simulate_crash();

    // A segment whose preallocated tail is 10 zero bytes: too short for a
    // record header, still just zeros.
    let payloads = payloads_of(vec![assert_batch("g1", "one"), assert_batch("g2", "two")]);
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let records_bytes: u64 = payloads.iter().map(|p| 32 + p.len() as u64).sum();
    let segment_bytes = SEGMENT_HEADER_BYTES + records_bytes + 10;
    let (store_id, epoch) = common::crashed_empty_store(&config);
    let header = SegmentHeader {
        number: 1,
        lsn_first: 1,
        salt: 77,
        segment_bytes,
        store_id: Some(store_id),
        epoch,
    };
    let path = segment_path(&config, 1);
    let ends =
        craft_segment(&path, &header, &[(header, 1, &payloads[0]), (header, 2, &payloads[1])]);
    assert_eq!(std::fs::metadata(&path).unwrap().len() - ends[1], 10);

    let (store, events) = open_capturing(&config);
    assert_eq!(torn_tail_warnings(&events), vec![]);
    assert_eq!(replayed_records(&events), Some("2".to_string()));
    assert_eq!(store.facts("s").unwrap().keys().collect::<Vec<_>>(), vec!["g1", "g2"]);
    assert_eq!(store.write(assert_batch("g3", "v")).unwrap(), 3);
}

#[test]
fn a_segment_from_another_opening_of_the_store_is_refused() {
    // A crashed store's WAL (in use, epoch E) gets a segment written by
    // another opening of the same store (epoch E'): a copy of another WAL of
    // this store, e.g. of a backup that diverged. Refused with WalMismatch
    // naming the segment and both epochs; nothing changes. Identity alone
    // (the same store) would let it through.
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    for i in 1..=3 {
        store.write(assert_batch(&format!("f{i}"), "v")).unwrap();
    }
    store.simulate_crash();
    let path = segment_path(&config, 1);
    let (header, _, bytes) = read_segment(&path);
    let other = SegmentHeader { epoch: header.epoch ^ 0x1, number: 2, lsn_first: 4, ..header };
    let mut next = other.encode().to_vec();
    next.resize(bytes.len(), 0);
    std::fs::write(segment_path(&config, 2), next).unwrap();
    let before = snapshot_files(dir.path());
    match Store::open(config.clone()) {
        Err(factwal::Error::WalMismatch { detail, .. }) => {
            assert!(detail.contains("written by another opening of this store"), "{detail}");
            assert!(detail.contains(&format!("{:08x}", other.epoch)), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot_files(dir.path()), before);
}

#[test]
fn a_record_newer_than_state_redb_after_a_clean_close_is_refused() {
    // After a clean close state.redb holds everything its WAL ever held. A
    // segment of the same store holding a newer record (copied from another
    // copy of the store that went on writing) is refused, not replayed.
    let payloads = payloads_of(vec![assert_batch("elsewhere", "written by another copy")]);
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let store_id = store.store_id();
    store.write(assert_batch("f1", "v")).unwrap();
    assert!(store.close().is_clean());
    let header = SegmentHeader {
        number: 1,
        lsn_first: 2,
        salt: 99,
        segment_bytes: SEGMENT_BYTES,
        store_id: Some(store_id),
        epoch: 7,
    };
    craft_segment(&segment_path(&config, 1), &header, &[(header, 2, &payloads[0])]);
    let before = snapshot_files(dir.path());
    match Store::open(config.clone()) {
        Err(factwal::Error::WalMismatch { detail, .. }) => {
            assert!(detail.contains("holds LSN 2, which state.redb lacks"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot_files(dir.path()), before);
}
