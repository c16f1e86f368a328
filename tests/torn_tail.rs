//! Torn tails: the last record of the last segment cut short, at every byte,
//! by zeroing the rest of the preallocated space (what a crash leaves: a
//! write never changes a segment's size). Recovery must drop exactly that
//! record with a WARN, keep every earlier batch, refuse under absolute
//! consistency, and let the log continue with dense LSNs afterwards.
//!
//! A segment *file* cut short (truncated) is not a torn tail but damage,
//! refused in every recovery mode, whatever the cut: at a record boundary
//! too, where the file would otherwise end exactly like a clean log.

use std::path::{Path, PathBuf};

use factwal::testing::{changed_files, snapshot_files};
use factwal::{CorruptionKind, Error, RecoveryMode, Store};
use tempfile::TempDir;

mod common;
use common::{assert_batch, batch_of, records_in, Fact, RecordAt};

/// Batches written before the crash: LSN `n` is batch `n`.
const BATCHES: u64 = 7;
/// Large enough that batches 1..=6 do not fit one 16 KiB segment, so the torn
/// record sits in the second segment behind a valid record of its own.
const FILLER_BYTES: usize = 2600;

/// The facts of batch `n`; every fact id is used by one batch only, so a
/// batch's presence can be read off its own facts.
fn batch_facts(n: u64) -> Vec<Fact> {
    let mut facts: Vec<Fact> = (0..3)
        .map(|k| {
            (format!("session-{}", n % 2), format!("b{n}-f{k}"), format!("v{n}-{k}").into_bytes())
        })
        .collect();
    if n < BATCHES {
        facts.push((
            format!("session-{}", n % 2),
            format!("b{n}-filler"),
            vec![b'a' + n as u8; FILLER_BYTES],
        ));
    }
    facts
}

/// A crashed store holding batches 1..=BATCHES, and where its last record is.
struct Pristine {
    dir: TempDir,
    last_segment: PathBuf,
    last_record: RecordAt,
}

fn pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    for n in 1..=BATCHES {
        assert_eq!(store.write(batch_of(&batch_facts(n))).unwrap(), n);
    }
    store.simulate_crash();
    let segments = common::segment_paths(&dir.path().join("wal"));
    assert_eq!(segments.len(), 2, "the batches span two segments: {segments:?}");
    let last_segment = segments[1].clone();
    let records = records_in(&last_segment);
    assert_eq!(
        records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![BATCHES - 1, BATCHES],
        "last segment layout"
    );
    let last_record = records[1];
    Pristine { dir, last_segment, last_record }
}

/// A fresh copy of the pristine store, and the path of its last segment.
fn fresh_copy(pristine: &Pristine) -> (TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    common::copy_dir(pristine.dir.path(), work.path());
    let relative = pristine.last_segment.strip_prefix(pristine.dir.path()).unwrap();
    let last_segment = work.path().join(relative);
    (work, last_segment)
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The file ends at the cut (`set_len`).
    Truncate,
    /// The file keeps its size; everything from the cut on is zero.
    ZeroRest,
}

fn cut_at(path: &Path, at: u64, cut: Cut) {
    match cut {
        Cut::Truncate => {
            std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(at).unwrap()
        }
        Cut::ZeroRest => {
            let mut bytes = std::fs::read(path).unwrap();
            bytes[at as usize..].fill(0);
            std::fs::write(path, bytes).unwrap();
        }
    }
}

/// Bytes recovery must report as dropped: up to the last non-zero byte the
/// cut leaves of the torn record.
fn garbage_bytes(segment: &[u8], record: RecordAt, at: u64) -> u64 {
    let kept = &segment[record.offset as usize..at as usize];
    kept.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1)
}

fn corruption_of(result: Result<Store, Error>) -> (PathBuf, u64, u64, CorruptionKind) {
    match result {
        Err(Error::Corrupted { path, offset, lsn, kind }) => (path, offset, lsn, kind),
        Err(other) => panic!("expected Error::Corrupted, got {other:?}"),
        Ok(_) => panic!("expected Error::Corrupted, the store opened"),
    }
}

#[test]
fn every_cut_inside_the_last_record_drops_exactly_that_batch() {
    // For every cut point from the last record's first byte to just past its
    // last, zeroing the rest of the file, on a fresh copy of a crashed store:
    // open must succeed, batches 1..=6 stay, batch 7 is there only when the
    // cut left it whole, and a WARN names the file, the record's offset and
    // the non-zero bytes dropped whenever there were any.
    let pristine = pristine();
    let record = pristine.last_record;
    let segment_bytes = std::fs::read(&pristine.last_segment).unwrap();
    let record_end = record.offset + record.bytes;
    let mut warned = 0;
    for cut in [Cut::ZeroRest] {
        for at in record.offset..=record_end {
            let context = format!("{cut:?} at {at} (record {}..{record_end})", record.offset);
            let (work, last_segment) = fresh_copy(&pristine);
            cut_at(&last_segment, at, cut);
            let (opened, events) =
                common::capture(|| Store::open(common::small_config(work.path())));
            let store = opened.unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
            for n in 1..BATCHES {
                assert_batch(&store, &batch_facts(n), true, &context);
            }
            let whole = at == record_end;
            assert_batch(&store, &batch_facts(BATCHES), whole, &context);
            assert_eq!(
                store.stats().unwrap().lsn_last,
                if whole { BATCHES } else { BATCHES - 1 },
                "{context}"
            );

            let dropped = if whole { 0 } else { garbage_bytes(&segment_bytes, record, at) };
            let reported: Vec<_> = common::warnings_and_errors(&events)
                .into_iter()
                .map(|e| (e.target.as_str(), e.level, e.fields.clone()))
                .collect();
            if dropped == 0 {
                assert_eq!(
                    reported,
                    vec![],
                    "{context}: nothing was dropped, so nothing to report"
                );
            } else {
                let fields = [
                    ("bytes_dropped".to_string(), dropped.to_string()),
                    ("file".to_string(), last_segment.display().to_string()),
                    ("offset".to_string(), record.offset.to_string()),
                ];
                assert_eq!(
                    reported,
                    vec![("factwal::recovery", tracing::Level::WARN, fields.into_iter().collect())],
                    "{context}"
                );
                warned += 1;
            }
            store.simulate_crash();
        }
    }
    // Guards against a vacuous run: every cut past the record's length field
    // (bytes 4..8, non-zero for any payload under 16 MiB) leaves garbage.
    assert!(warned >= record.bytes - 8, "only {warned} cuts warned");
}

#[test]
fn a_segment_file_cut_short_is_refused_in_every_mode() {
    // The last segment's file truncated at every point of its last record,
    // at both of that record's boundaries among them: the default and
    // absolute-consistency opens refuse with SegmentSizeMismatch naming the
    // file, where its valid records end and the next LSN, and change no
    // byte; point-in-time keeps the valid prefix and its ERROR says the
    // segment was cut. A cut at a record boundary (whole records, then the
    // end of the file) must not pass for a clean end.
    let pristine = pristine();
    let record = pristine.last_record;
    let record_end = record.offset + record.bytes;
    for at in [
        record.offset,
        record.offset + 1,
        record.offset + record.bytes / 2,
        record_end - 1,
        record_end,
    ] {
        let context = format!("truncated at {at} (record {}..{record_end})", record.offset);
        let (work, last_segment) = fresh_copy(&pristine);
        cut_at(&last_segment, at, Cut::Truncate);
        let kept_end = if at == record_end { record_end } else { record.offset };
        let lsn_next = if at == record_end { BATCHES + 1 } else { BATCHES };
        let kind = CorruptionKind::SegmentSizeMismatch { file_bytes: at, header_bytes: 16 * 1024 };
        let before = snapshot_files(work.path());
        for mode in [RecoveryMode::TolerateCorruptedTail, RecoveryMode::AbsoluteConsistency] {
            let config = common::small_config(work.path()).recovery_mode(mode);
            let refused = corruption_of(Store::open(config));
            assert_eq!(
                refused,
                (last_segment.clone(), kept_end, lsn_next, kind),
                "{context}, {mode:?}"
            );
            assert_eq!(changed_files(&before, &snapshot_files(work.path())), Vec::<PathBuf>::new());
        }
        let config = common::small_config(work.path()).recovery_mode(RecoveryMode::PointInTime);
        let (opened, events) = common::capture(|| Store::open(config));
        let store = opened.unwrap_or_else(|e| panic!("{context}: point-in-time refused: {e}"));
        for n in 1..BATCHES {
            assert_batch(&store, &batch_facts(n), true, &context);
        }
        assert_batch(&store, &batch_facts(BATCHES), at == record_end, &context);
        let errors: Vec<_> = common::warnings_and_errors(&events)
            .into_iter()
            .map(|e| e.fields["corruption"].clone())
            .collect();
        assert_eq!(errors.len(), 1, "{context}: {events:?}");
        assert!(errors[0].contains(&format!(
            "segment file is {at} bytes but its header says 16384 (cut short)"
        )));
        store.simulate_crash();
    }
}

#[test]
fn absolute_consistency_refuses_a_torn_tail_and_changes_nothing() {
    // The torn tail that the default mode drops is refused under absolute
    // consistency, twice, with the file, the torn record's offset and its LSN,
    // and without a byte of the data directory changing. The intact log opens
    // in that mode, and the torn one still opens in the default mode after.
    let pristine = pristine();
    let record = pristine.last_record;
    let absolute =
        |dir: &Path| common::small_config(dir).recovery_mode(RecoveryMode::AbsoluteConsistency);

    let (intact, _) = fresh_copy(&pristine);
    let store = Store::open(absolute(intact.path())).expect("a log that ends cleanly opens");
    assert_batch(&store, &batch_facts(BATCHES), true, "intact");
    store.simulate_crash();

    // Changes outside the WAL directory are asserted last, so that every
    // other check has run when they fail the test.
    let mut changed_outside_wal = Vec::new();
    for cut in [Cut::ZeroRest] {
        let (work, last_segment) = fresh_copy(&pristine);
        cut_at(&last_segment, record.offset + record.bytes / 2, cut);
        let before = snapshot_files(work.path());
        for attempt in 1..=2 {
            let expected = (last_segment.clone(), record.offset, BATCHES, CorruptionKind::TornTail);
            assert_eq!(
                corruption_of(Store::open(absolute(work.path()))),
                expected,
                "{cut:?}, attempt {attempt}"
            );
            let (in_wal, outside): (Vec<_>, Vec<_>) =
                changed_files(&before, &snapshot_files(work.path()))
                    .into_iter()
                    .partition(|path| path.starts_with(work.path().join("wal")));
            assert_eq!(
                in_wal,
                Vec::<PathBuf>::new(),
                "{cut:?}, attempt {attempt}: WAL changed by a refused open"
            );
            changed_outside_wal.extend(
                outside.into_iter().map(|path| format!("{cut:?}, attempt {attempt}: {path:?}")),
            );
        }
        let store = Store::open(common::small_config(work.path())).unwrap();
        assert_batch(&store, &batch_facts(BATCHES - 1), true, "default mode after refusal");
        assert_batch(&store, &batch_facts(BATCHES), false, "default mode after refusal");
        store.simulate_crash();
    }
    assert_eq!(
        changed_outside_wal,
        Vec::<String>::new(),
        "files outside the WAL changed by a refused open"
    );
}

#[test]
fn a_clean_end_opens_without_a_warning() {
    // The crashed log ends with whole records followed by preallocated zeros:
    // recovery replays all seven batches and reports no WARN or ERROR at all.
    let pristine = pristine();
    let (work, _) = fresh_copy(&pristine);
    let (opened, events) = common::capture(|| Store::open(common::small_config(work.path())));
    let store = opened.unwrap();
    assert_eq!(common::warnings_and_errors(&events).len(), 0, "{events:?}");
    let replayed: Vec<_> = events
        .iter()
        .filter(|e| e.target == "factwal::recovery" && e.message == "replayed WAL into redb")
        .map(|e| (e.fields["records"].clone(), e.fields["lsn_last"].clone()))
        .collect();
    assert_eq!(replayed, vec![(BATCHES.to_string(), BATCHES.to_string())]);
    for n in 1..=BATCHES {
        assert_batch(&store, &batch_facts(n), true, "clean end");
    }
    assert_eq!(store.stats().unwrap().lsn_last, BATCHES);
    store.simulate_crash();
}

#[test]
fn lsns_continue_densely_after_a_torn_tail() {
    // Tears the last record, opens (dropping LSN 7), writes three batches,
    // crashes, reopens, then closes and reopens: the new batches take LSNs
    // 7, 8, 9 in turn, the torn batch never reappears, and every kept batch
    // is there after each reopen.
    let pristine = pristine();
    let record = pristine.last_record;
    let (work, last_segment) = fresh_copy(&pristine);
    cut_at(&last_segment, record.offset + record.bytes / 2, Cut::ZeroRest);
    let config = common::small_config(work.path());

    let store = Store::open(config.clone()).unwrap();
    assert_eq!(store.stats().unwrap().lsn_last, BATCHES - 1);
    let after: Vec<Vec<Fact>> = (0..3)
        .map(|k| vec![(format!("after-{k}"), "f".to_string(), format!("after {k}").into_bytes())])
        .collect();
    let lsns: Vec<u64> = after.iter().map(|facts| store.write(batch_of(facts)).unwrap()).collect();
    assert_eq!(
        lsns,
        vec![BATCHES, BATCHES + 1, BATCHES + 2],
        "the first write after the torn tail reuses LSN 7"
    );
    store.simulate_crash();

    let check = |store: &Store, context: &str| {
        for n in 1..BATCHES {
            assert_batch(store, &batch_facts(n), true, context);
        }
        assert_batch(store, &batch_facts(BATCHES), false, context);
        for facts in &after {
            assert_batch(store, facts, true, context);
        }
        assert_eq!(store.stats().unwrap().lsn_last, BATCHES + 2, "{context}");
    };
    let (opened, events) = common::capture(|| Store::open(config.clone()));
    let store = opened.unwrap();
    assert_eq!(
        common::warnings_and_errors(&events).len(),
        0,
        "the repaired log ends cleanly: {events:?}"
    );
    check(&store, "after crash");
    assert!(store.close().is_clean());

    let store = Store::open(config).unwrap();
    check(&store, "after close");
    assert_eq!(
        store.write(batch_of(&[("next".into(), "f".into(), b"x".to_vec())])).unwrap(),
        BATCHES + 3
    );
    assert!(store.close().is_clean());
}
