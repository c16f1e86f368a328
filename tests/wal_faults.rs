//! Invariant 9 and the disk-full behaviour: a failed sync, or a failed write
//! other than "disk full", poisons the WAL so nothing more is acknowledged
//! until reopen, and a failed fsync is never retried; a full disk fails only
//! the writes it hits, and writing resumes once space comes back.
//!
//! Every test runs the store's WAL over the simulated disk
//! (`factwal::testing::SimDisk`), which fails the Nth call of one kind of file
//! operation with an errno, and uses its call counters to prove that a
//! poisoned WAL touches the disk no more. One-shot faults are
//! used wherever a retry would go unnoticed with a sticky one: if the engine
//! retried, the retry would succeed and the test would see it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use factwal::testing::{Fault, OpKind, SimDisk};
use factwal::wal::format::{
    decode_record, encode_record, Decoded, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use factwal::{Batch, Config, Error, IoOp, Lsn, Result, Store};

// Linux errno values. `libc` is a normal dependency of the crate, not a
// dev-dependency, so the tests spell the numbers out.
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// The calls counted, in the order of `counts`.
const OPS: [OpKind; 5] =
    [OpKind::Write, OpKind::Sync, OpKind::Resize, OpKind::SyncDir, OpKind::Remove];

/// Segments large enough that no test rolls over by accident.
fn large_segments(dir: &Path) -> Config {
    Config::new(dir).segment_bytes(1 << 20).max_record_bytes(4096).wal_bytes_max(1 << 24)
}

/// Small segments, so a few near-limit records fill one and the test decides
/// which write rolls into the next.
fn small_segments(dir: &Path) -> Config {
    Config::new(dir).segment_bytes(8192).max_record_bytes(1024).wal_bytes_max(1 << 20)
}

fn segment_path(config: &Config, number: u64) -> PathBuf {
    config.wal_dir().join(format!("{number:020}.wal"))
}

fn temporary_path(config: &Config, number: u64) -> PathBuf {
    config.wal_dir().join(format!("{number:020}.wal.tmp"))
}

/// Every file name in the WAL directory, sorted.
/// The WAL directory's files, but its lock file.
fn wal_files(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(config.wal_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.retain(|name| name != factwal::LOCK_FILE_NAME);
    names.sort();
    names
}

/// A batch of two asserts, so that "all or nothing" can be checked.
fn pair(session: &str, i: u64, value: &str) -> Batch {
    Batch::new().assert(session, format!("f{i}"), value.as_bytes().to_vec()).assert(
        session,
        format!("g{i}"),
        value.as_bytes().to_vec(),
    )
}

/// Whether both facts of `pair(session, i, value)` are present; panics when
/// only one is (a torn batch).
fn pair_present(store: &Store, session: &str, i: u64, value: &str) -> bool {
    let f = store.fact(session, &format!("f{i}")).unwrap();
    let g = store.fact(session, &format!("g{i}")).unwrap();
    assert_eq!(f, g, "batch {session}/{i} is all or nothing");
    match f {
        Some(found) => {
            assert_eq!(found, value.as_bytes());
            true
        }
        None => false,
    }
}

/// Two 450-byte values: a record of about 950 bytes, so eight fill a small
/// segment and the payload stays under the 1024-byte record limit.
fn big_pair(i: u64) -> Batch {
    pair("s", i, &format!("{i:0>450}"))
}

fn big_pair_present(store: &Store, i: u64) -> bool {
    pair_present(store, "s", i, &format!("{i:0>450}"))
}

fn counts(disk: &SimDisk) -> Vec<u64> {
    OPS.iter().map(|&op| disk.count(op)).collect()
}

/// Asserts `error` is `Error::Io` on `path` for `operation` on `what`,
/// with `errno`.
fn assert_io(error: &Error, path: &Path, operation: IoOp, what: &str, errno: i32) {
    match error {
        Error::Io { path: at, operation: op, what: on, source } => {
            assert_eq!(
                (at.as_path(), *op, *on, source.raw_os_error()),
                (path, operation, what, Some(errno)),
                "{error}"
            );
        }
        other => panic!("expected an I/O error on {}, got {other:?}", path.display()),
    }
}

/// Asserts the write was refused as poisoned and returns the cause.
fn expect_poisoned(result: Result<Lsn>) -> Arc<Error> {
    match result {
        Err(Error::Poisoned { cause }) => cause,
        other => panic!("expected Error::Poisoned, got {other:?}"),
    }
}

/// Writes `pair("s", i, "v")` for i in `range`, asserting each gets LSN i.
fn write_pairs(store: &Store, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert_eq!(store.write(pair("s", i, "v")).unwrap(), i);
    }
}

/// Records that fit one small segment: the size of one `big_pair` record is
/// read from the segment after writing LSN 1, which must be `big_pair(1)`.
fn small_segment_capacity(config: &Config) -> u64 {
    let bytes = std::fs::read(segment_path(config, 1)).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let Decoded::Valid { lsn: 1, encoded_bytes, .. } = decode_record(&bytes[64..], &header, 1024)
    else {
        panic!("segment 1 starts with LSN 1");
    };
    let capacity = (config.persistence.segment_bytes - SEGMENT_HEADER_BYTES) / encoded_bytes;
    // Below ten, every record of segment 1 has the same size (one-digit ids).
    assert!((2..10).contains(&capacity), "a handful of records per segment, got {capacity}");
    capacity
}

/// Fills segment 1 of a fresh store with `big_pair` records 1..=capacity;
/// returns the capacity. The next write must roll into segment 2.
fn fill_first_segment(store: &Store, config: &Config) -> u64 {
    assert_eq!(store.write(big_pair(1)).unwrap(), 1);
    let capacity = small_segment_capacity(config);
    for i in 2..=capacity {
        assert_eq!(store.write(big_pair(i)).unwrap(), i);
    }
    assert_eq!(
        common::segment_paths(&config.wal_dir()),
        vec![segment_path(config, 1)],
        "no roll yet"
    );
    capacity
}

/// The poisoned-store checks shared by every poisoning fault: later writes
/// are refused with the same cause and do not touch the disk, reads still
/// work, and the store reports `lsn_last` unchanged.
fn assert_stays_poisoned(store: &Store, disk: &SimDisk, cause: &Arc<Error>, lsn_last: Lsn) {
    let before = counts(disk);
    for attempt in 0..3 {
        let later = expect_poisoned(store.write(pair("later", attempt, "never")));
        assert!(Arc::ptr_eq(&later, cause), "later writes report the original failure");
    }
    assert_eq!(
        counts(disk),
        before,
        "a poisoned WAL neither writes, syncs, creates nor removes files"
    );
    assert_eq!(store.facts("later").unwrap().len(), 0);
    assert_eq!(store.stats().unwrap().lsn_last, lsn_last);
}

#[test]
fn failed_sync_poisons_until_reopen_and_is_never_retried() {
    // Five acknowledged writes, then a one-shot EIO on the next fdatasync.
    // The write hit by it and every later one are refused as poisoned, with
    // no further write or sync reaching the disk (a retried fsync would
    // succeed and be counted); reads still see the five. After a crash and a
    // healthy reopen the five are there, the failed batch is all or nothing
    // (its bytes reached the page cache, so recovery may find them), and LSNs
    // continue right after the last recovered record.
    let dir = tempfile::tempdir().unwrap();
    let config = large_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    write_pairs(&store, 1..=5);

    let before = counts(&disk);
    disk.fail(Fault::nth(OpKind::Sync, 1, EIO));
    let cause = expect_poisoned(store.write(pair("s", 6, "unacknowledged")));
    assert_io(&cause, &segment_path(&config, 1), IoOp::Sync, "records", EIO);
    assert_eq!(
        counts(&disk),
        vec![before[0] + 1, before[1] + 1, before[2], before[3], before[4]],
        "one write, one failed sync"
    );
    assert!(
        !pair_present(&store, "s", 6, "unacknowledged"),
        "a write that failed its sync is never visible"
    );
    assert_stays_poisoned(&store, &disk, &cause, 5);
    for i in 1..=5 {
        assert!(pair_present(&store, "s", i, "v"));
    }
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    for i in 1..=5 {
        assert!(pair_present(&store, "s", i, "v"), "acknowledged write {i} survives");
    }
    let failed_present = pair_present(&store, "s", 6, "unacknowledged");
    let lsn_last = 5 + u64::from(failed_present);
    assert_eq!(store.stats().unwrap().lsn_last, lsn_last);
    assert_eq!(store.facts("later").unwrap().len(), 0);
    assert_eq!(store.write(pair("s", 7, "v")).unwrap(), lsn_last + 1, "LSNs stay dense");
}

#[test]
fn sync_failing_with_enospc_poisons_too() {
    // Some file systems (NFS, thin provisioning) report a full disk at fsync
    // time, after dropping the dirty pages. Only a failed *write* with ENOSPC
    // is harmless; a failed sync poisons whatever its errno.
    let dir = tempfile::tempdir().unwrap();
    let config = large_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    write_pairs(&store, 1..=2);
    disk.fail(Fault::nth(OpKind::Sync, 1, ENOSPC));
    let cause = expect_poisoned(store.write(pair("s", 3, "unacknowledged")));
    assert_io(&cause, &segment_path(&config, 1), IoOp::Sync, "records", ENOSPC);
    assert_stays_poisoned(&store, &disk, &cause, 2);
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    assert!(pair_present(&store, "s", 1, "v") && pair_present(&store, "s", 2, "v"));
    let lsn_last = 2 + u64::from(pair_present(&store, "s", 3, "unacknowledged"));
    assert_eq!(store.write(pair("s", 4, "v")).unwrap(), lsn_last + 1);
}

/// One thread's writes: the write's index and what it returned.
type ThreadOutcomes = Vec<(u64, Result<Lsn>)>;

#[test]
fn concurrent_writers_acknowledge_nothing_after_a_failed_sync() {
    // Eight threads write two-fact batches in a loop while the 20th fdatasync
    // from now fails once with EIO. Each thread keeps writing until it has
    // seen an error, then makes three more attempts (at most 1000 writes in
    // all, far more than 20 groups can take). Checks: the Ok LSNs are
    // exactly 1..=n; once a write has failed, no write started afterwards (in
    // any thread) returns Ok; every error is the poisoning sync failure;
    // exactly 20 writes and 20 syncs reached the disk; and after a healthy
    // reopen every Ok write is present, every failed one all or nothing, and
    // LSNs continue densely.
    const THREADS: u64 = 8;
    const FAILED_SYNC: u64 = 20;
    const WRITES_PER_THREAD_MAX: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let config = large_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Arc::new(Store::open_with_io(config.clone(), disk.wal_io()).unwrap());
    let before = counts(&disk);
    disk.fail(Fault::nth(OpKind::Sync, FAILED_SYNC, EIO));
    let failure_seen = Arc::new(AtomicBool::new(false));

    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = store.clone();
            let failure_seen = failure_seen.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut attempts_after_error = 0;
                // Bounded, so that an engine that never fails makes this test
                // fail (no error seen) instead of spinning forever.
                for i in 0..WRITES_PER_THREAD_MAX {
                    let started_after_failure = failure_seen.load(Ordering::SeqCst);
                    let result = store.write(pair(&format!("t{thread}"), i, "v"));
                    if result.is_err() {
                        failure_seen.store(true, Ordering::SeqCst);
                    }
                    assert!(
                        !started_after_failure || result.is_err(),
                        "thread {thread} write {i} started after a failure yet returned {result:?}"
                    );
                    if result.is_err() || attempts_after_error > 0 {
                        attempts_after_error += 1;
                    }
                    outcomes.push((i, result));
                    if attempts_after_error > 3 {
                        break;
                    }
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<(u64, ThreadOutcomes)> =
        handles.into_iter().enumerate().map(|(t, h)| (t as u64, h.join().unwrap())).collect();

    let mut ok_lsns = BTreeSet::new();
    let mut cause: Option<Arc<Error>> = None;
    for (thread, results) in &outcomes {
        let first_error =
            results.iter().position(|(_, r)| r.is_err()).expect("every thread saw the failure");
        assert_eq!(
            results.len(),
            first_error + 4,
            "thread {thread}: three attempts after the first error"
        );
        for (i, result) in results {
            match result {
                Ok(lsn) => {
                    assert!(*i < first_error as u64, "thread {thread}: Ok after an error");
                    assert!(ok_lsns.insert(*lsn), "LSN {lsn} acknowledged twice");
                }
                Err(Error::Poisoned { cause: c }) => {
                    let first = cause.get_or_insert_with(|| c.clone());
                    assert!(Arc::ptr_eq(first, c), "one failure poisons every writer");
                }
                Err(other) => panic!("thread {thread} write {i}: expected Poisoned, got {other:?}"),
            }
        }
    }
    assert_io(&cause.unwrap(), &segment_path(&config, 1), IoOp::Sync, "records", EIO);
    let acknowledged = ok_lsns.len() as u64;
    assert!(acknowledged >= FAILED_SYNC - 1, "19 groups of at least one write each were synced");
    assert_eq!(ok_lsns, (1..=acknowledged).collect(), "acknowledged LSNs are dense");
    let after = counts(&disk);
    assert_eq!(
        after,
        vec![before[0] + FAILED_SYNC, before[1] + FAILED_SYNC, before[2], before[3], before[4]],
        "one write and one sync per group up to the failed sync, nothing after it"
    );
    Arc::try_unwrap(store).unwrap().simulate_crash();

    let store = Store::open(config).unwrap();
    let mut failed_present = 0;
    for (thread, results) in &outcomes {
        for (i, result) in results {
            let present = pair_present(&store, &format!("t{thread}"), *i, "v");
            match result {
                Ok(_) => assert!(present, "acknowledged write t{thread}/{i} survives"),
                Err(_) => failed_present += u64::from(present),
            }
        }
    }
    let lsn_last = store.stats().unwrap().lsn_last;
    assert_eq!(lsn_last, acknowledged + failed_present, "recovered LSNs are dense");
    assert_eq!(store.write(pair("after", 0, "v")).unwrap(), lsn_last + 1);
}

#[test]
fn enospc_on_a_record_write_fails_only_that_write_and_writing_resumes_after_healing() {
    // Three acknowledged writes, then every write call fails with ENOSPC
    // (sticky: the disk stays full). The next write fails with Error::Io
    // naming segment 1; the one after needs a new segment and fails writing
    // its header, naming the temporary file, which is cleaned up. The WAL is
    // not poisoned: after heal() the same store acknowledges writes again,
    // with LSNs right after the last acknowledged one, in a new segment.
    // After a crash and reopen every acknowledged write is there, the failed
    // ones are not, and LSNs continue densely.
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    write_pairs(&store, 1..=3);

    disk.fail(Fault::nth(OpKind::Write, 1, ENOSPC).from_then_on());
    let error = store.write(pair("full", 1, "x")).unwrap_err();
    assert_io(&error, &segment_path(&config, 1), IoOp::Write, "records", ENOSPC);
    let error = store.write(pair("full", 2, "x")).unwrap_err();
    assert_io(&error, &temporary_path(&config, 2), IoOp::Write, "segment header", ENOSPC);
    assert_eq!(wal_files(&config), vec![format!("{:020}.wal", 1)], "no half-made segment is left");
    assert_eq!(store.facts("full").unwrap().len(), 0, "failed writes are never visible");
    assert_eq!(store.stats().unwrap().lsn_last, 3);

    disk.heal();
    write_pairs(&store, 4..=6);
    assert_eq!(
        common::segment_paths(&config.wal_dir()),
        vec![segment_path(&config, 1), segment_path(&config, 2)]
    );
    for i in 1..=6 {
        assert!(pair_present(&store, "s", i, "v"));
    }
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    for i in 1..=6 {
        assert!(pair_present(&store, "s", i, "v"), "acknowledged write {i} survives");
    }
    assert_eq!(store.facts("full").unwrap().len(), 0);
    assert_eq!(store.stats().unwrap().lsn_last, 6);
    assert_eq!(store.write(pair("s", 7, "v")).unwrap(), 7);
}

#[test]
fn enospc_leftover_of_the_failed_write_is_not_replayed_once_the_log_moved_on() {
    // A real ENOSPC may leave part of the write behind, possibly whole valid
    // records. Three acknowledged writes, a one-shot ENOSPC on the fourth
    // ("doomed"), then two acknowledged writes, which land in segment 2 at
    // LSNs 4 and 5. After the crash the doomed batch's record is planted in
    // segment 1 right after LSN 3, framed for segment 1 as LSN 4, as the
    // failed write could have left it. Reopening must drop it (segment 2
    // starts at LSN 4, so segment 1's records from LSN 4 on were abandoned)
    // and keep exactly LSNs 1-5.
    let doomed = pair("doomed", 4, "never acknowledged");
    let doomed_payload = payload_of(doomed.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    write_pairs(&store, 1..=3);
    disk.fail(Fault::nth(OpKind::Write, 1, ENOSPC));
    assert_io(
        &store.write(doomed).unwrap_err(),
        &segment_path(&config, 1),
        IoOp::Write,
        "records",
        ENOSPC,
    );
    write_pairs(&store, 4..=5);
    store.simulate_crash();

    let path = segment_path(&config, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let mut end = SEGMENT_HEADER_BYTES as usize;
    for lsn in 1..=3 {
        let Decoded::Valid { lsn: found, encoded_bytes, .. } =
            decode_record(&bytes[end..], &header, 1024)
        else {
            panic!("segment 1 holds LSN {lsn}");
        };
        assert_eq!(found, lsn);
        end += encoded_bytes as usize;
    }
    let mut leftover = Vec::new();
    encode_record(&mut leftover, &header, 4, &doomed_payload);
    bytes[end..end + leftover.len()].copy_from_slice(&leftover);
    std::fs::write(&path, &bytes).unwrap();
    let next = std::fs::read(segment_path(&config, 2)).unwrap();
    assert_eq!(
        SegmentHeader::decode(&next).unwrap().lsn_first,
        4,
        "the log went on at LSN 4 in segment 2"
    );

    let store = Store::open(config).unwrap();
    assert!(
        !pair_present(&store, "doomed", 4, "never acknowledged"),
        "the failed write is not replayed"
    );
    for i in 1..=5 {
        assert!(pair_present(&store, "s", i, "v"), "acknowledged write {i} survives");
    }
    assert_eq!(store.stats().unwrap().lsn_last, 5);
    assert_eq!(store.write(pair("s", 6, "v")).unwrap(), 6);
}

/// The payload the engine writes for `batch` (the encoding is private to the
/// crate): written through a scratch store and read back from its segment.
fn payload_of(batch: Batch) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let store = Store::open(config.clone()).unwrap();
    store.write(batch).unwrap();
    store.simulate_crash();
    let bytes = std::fs::read(segment_path(&config, 1)).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    match decode_record(&bytes[SEGMENT_HEADER_BYTES as usize..], &header, 1024) {
        Decoded::Valid { lsn: 1, payload, .. } => payload.to_vec(),
        other => panic!("expected the scratch record, got {other:?}"),
    }
}

#[test]
fn enospc_creating_a_new_segment_fails_the_write_and_writing_resumes_after_healing() {
    // Segment 1 is filled exactly (8 KiB segments, ~950-byte records) with
    // preallocation failing with ENOSPC from then on. The write that must
    // roll into segment 2 fails with Error::Io naming the temporary file being
    // preallocated, twice in a row, and leaves no file behind; nothing is
    // poisoned, so after heal() the same batch is retried and acknowledged
    // with the next LSN, in segment 2. After a crash and reopen every
    // acknowledged write is there, and LSNs continue densely.
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    disk.fail(Fault::nth(OpKind::Resize, 1, ENOSPC).from_then_on());
    let capacity = fill_first_segment(&store, &config);

    let next = capacity + 1;
    for _ in 0..2 {
        let error = store.write(big_pair(next)).unwrap_err();
        assert_io(&error, &temporary_path(&config, 2), IoOp::Allocate, "segment", ENOSPC);
        assert_eq!(
            wal_files(&config),
            vec![format!("{:020}.wal", 1)],
            "no half-made segment is left"
        );
    }
    assert!(!big_pair_present(&store, next));
    assert_eq!(store.stats().unwrap().lsn_last, capacity);

    disk.heal();
    assert_eq!(store.write(big_pair(next)).unwrap(), next, "the retry gets the next LSN");
    assert_eq!(store.write(big_pair(next + 1)).unwrap(), next + 1);
    assert_eq!(
        common::segment_paths(&config.wal_dir()),
        vec![segment_path(&config, 1), segment_path(&config, 2)]
    );
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    for i in 1..=next + 1 {
        assert!(big_pair_present(&store, i), "acknowledged write {i} survives");
    }
    assert_eq!(store.stats().unwrap().lsn_last, next + 1);
    assert_eq!(store.write(pair("s", 0, "v")).unwrap(), next + 2);
}

#[test]
fn failed_directory_sync_while_creating_a_segment_poisons() {
    // Segment 1 is filled exactly; the write that rolls into segment 2 hits a
    // one-shot EIO on the directory sync that makes the new segment's name
    // durable (invariant 10). `classify` in src/wal/writer.rs treats every
    // failed sync (`IoOp::is_sync`: a file's or a directory's) as poisoning,
    // so the write is
    // refused as poisoned with the directory as the failed path, and so is
    // every later one, without any file operation. After a crash and reopen
    // the acknowledged records are all there, the refused one is not (no
    // record was written), and LSNs continue densely.
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    let capacity = fill_first_segment(&store, &config);

    let before = counts(&disk);
    disk.fail(Fault::nth(OpKind::SyncDir, 1, EIO));
    let cause = expect_poisoned(store.write(big_pair(capacity + 1)));
    assert_io(
        &cause,
        &config.wal_dir(),
        IoOp::SyncDir,
        "WAL directory after creating a segment",
        EIO,
    );
    // Segment creation ran up to the directory sync: removal of a leftover
    // temporary file (none), preallocate, header write, header sync, rename;
    // no record was written.
    assert_eq!(
        counts(&disk),
        vec![before[0] + 1, before[1] + 1, before[2] + 1, before[3] + 1, before[4] + 1]
    );
    assert!(!big_pair_present(&store, capacity + 1));
    assert_stays_poisoned(&store, &disk, &cause, capacity);
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    for i in 1..=capacity {
        assert!(big_pair_present(&store, i), "acknowledged write {i} survives");
    }
    assert!(!big_pair_present(&store, capacity + 1));
    assert_eq!(store.stats().unwrap().lsn_last, capacity);
    assert_eq!(store.write(pair("s", 0, "v")).unwrap(), capacity + 1);
}

#[test]
fn failed_sync_of_a_new_segment_header_poisons() {
    // Segment 1 is filled exactly; the write that rolls into segment 2 hits a
    // one-shot EIO on the fdatasync of the new segment's header. A failed
    // fsync is never retried, whatever file it was for: the write and every
    // later one are refused as poisoned, and the temporary file is removed.
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    let capacity = fill_first_segment(&store, &config);

    disk.fail(Fault::nth(OpKind::Sync, 1, EIO));
    let cause = expect_poisoned(store.write(big_pair(capacity + 1)));
    assert_io(&cause, &temporary_path(&config, 2), IoOp::Sync, "new segment", EIO);
    assert_eq!(wal_files(&config), vec![format!("{:020}.wal", 1)]);
    assert_stays_poisoned(&store, &disk, &cause, capacity);
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    for i in 1..=capacity {
        assert!(big_pair_present(&store, i), "acknowledged write {i} survives");
    }
    assert_eq!(store.stats().unwrap().lsn_last, capacity);
    assert_eq!(store.write(pair("s", 0, "v")).unwrap(), capacity + 1);
}

#[test]
fn write_error_other_than_enospc_poisons() {
    // Five acknowledged writes, then a one-shot EIO on the next record write.
    // Unlike ENOSPC, EIO says nothing about what reached the file, so the
    // write is refused as poisoned and so is every later one, with no file
    // operation (a retry would succeed and be counted). After a crash and a
    // healthy reopen exactly the five acknowledged writes are there (the
    // fault fails the call before any byte is written).
    let dir = tempfile::tempdir().unwrap();
    let config = large_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    write_pairs(&store, 1..=5);

    let before = counts(&disk);
    disk.fail(Fault::nth(OpKind::Write, 1, EIO));
    let cause = expect_poisoned(store.write(pair("s", 6, "unacknowledged")));
    assert_io(&cause, &segment_path(&config, 1), IoOp::Write, "records", EIO);
    assert_eq!(
        counts(&disk),
        vec![before[0] + 1, before[1], before[2], before[3], before[4]],
        "no sync after a failed write"
    );
    assert!(!pair_present(&store, "s", 6, "unacknowledged"));
    assert_stays_poisoned(&store, &disk, &cause, 5);
    for i in 1..=5 {
        assert!(pair_present(&store, "s", i, "v"));
    }
    store.simulate_crash();

    let store = Store::open(config).unwrap();
    for i in 1..=5 {
        assert!(pair_present(&store, "s", i, "v"), "acknowledged write {i} survives");
    }
    assert!(!pair_present(&store, "s", 6, "unacknowledged"));
    assert_eq!(store.stats().unwrap().lsn_last, 5);
    assert_eq!(store.write(pair("s", 7, "v")).unwrap(), 6);
}

#[test]
fn poisoning_the_wal_is_an_error_event_the_moment_it_happens() {
    // A failed sync poisons the WAL: one ERROR on target factwal::wal, with
    // the WAL directory and the cause (the sync that failed, its errno),
    // emitted before the failed write returns, and only once however many
    // writes are refused afterwards.
    let dir = tempfile::tempdir().unwrap();
    let config = large_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    store.write(pair("s", 1, "ok")).unwrap();
    disk.fail(Fault::nth(OpKind::Sync, 1, EIO));
    let (refused, events) = common::capture(|| {
        let first = store.write(pair("s", 2, "lost?"));
        let later = store.write(pair("s", 3, "refused"));
        (first, later)
    });
    expect_poisoned(refused.0);
    expect_poisoned(refused.1);
    let poisoned: Vec<_> =
        events.iter().filter(|e| e.message.starts_with("WAL poisoned")).collect();
    assert_eq!(poisoned.len(), 1, "{events:?}");
    let event = poisoned[0];
    assert_eq!((event.target.as_str(), event.level), ("factwal::wal", tracing::Level::ERROR));
    assert_eq!(event.fields["wal_dir"], config.wal_dir().display().to_string());
    let cause = &event.fields["cause"];
    assert!(cause.contains("sync records") && cause.contains("os error 5"), "{cause}");
    drop(store);
}

#[test]
fn a_panic_under_the_leader_poisons_and_close_returns() {
    // Eight threads write while the I/O layer under the WAL panics on the
    // tenth record write. The panic must not leave the leader flag set:
    // every writer returns (acknowledged, or Poisoned naming the panic),
    // the WAL is poisoned, close returns, and a reopen gives back every
    // acknowledged write. Before the fix, close waited forever.
    let dir = tempfile::tempdir().unwrap();
    let config = large_segments(dir.path());
    let disk = SimDisk::new(dir.path());
    let record_writes = AtomicU64::new(0);
    disk.before(OpKind::Write, None, move |call| {
        let is_record = call.offset >= Some(SEGMENT_HEADER_BYTES);
        if is_record && record_writes.fetch_add(1, Ordering::SeqCst) + 1 >= 10 {
            panic!("a bug in the I/O layer");
        }
    });
    let store = Arc::new(Store::open_with_io(config.clone(), disk.wal_io()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..20u64)
                    .filter_map(|i| {
                        let value = format!("t{thread}-{i}");
                        match store.write(pair("s", thread * 100 + i, &value)) {
                            Ok(_) => Some((thread * 100 + i, value)),
                            Err(Error::Poisoned { cause }) => {
                                assert!(matches!(*cause, Error::Panicked { .. }), "{cause}");
                                None
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acknowledged: Vec<(u64, String)> =
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < 160,
        "{} acknowledged",
        acknowledged.len()
    );
    let (done, finished) = std::sync::mpsc::channel();
    let closing = std::thread::spawn(move || {
        let store = Arc::try_unwrap(store).expect("the writers are gone");
        let report = store.close();
        done.send(()).unwrap();
        report
    });
    finished.recv_timeout(std::time::Duration::from_secs(30)).expect("close returned");
    // Clean or not (the poisoned WAL acknowledged nothing more, and close
    // may still fold what it had), the reopen below is what must find every
    // acknowledged write.
    let _either = closing.join().unwrap();
    let store = Store::open(config).unwrap();
    for (i, value) in &acknowledged {
        assert!(pair_present(&store, "s", *i, value), "acknowledged write {i} lost");
    }
    assert!(store.close().is_clean());
}
