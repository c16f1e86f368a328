//! The checkpoint loop prepares the next WAL segment's file ahead of need
//! (zero-filled and synced under its temporary name), so that rolling into a
//! new segment does not make every writer wait for a zero-fill. These tests
//! check that the roll uses that file, that nothing is lost or left behind
//! around it (close, crash), and that a failed preparation harms nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{capture, small_config};
use factwal::testing::{Fault, OpKind, SimDisk};
use factwal::{Batch, Config, Store};

const LOOP_INTERVAL: Duration = Duration::from_millis(10);

/// The temporary files (`*.wal.tmp`) of a WAL directory.
fn temporary_files(wal_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wal_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".wal.tmp"))
        .collect();
    files.sort();
    files
}

/// Waits (at most 20 s) until `ready` holds.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes 300-byte facts `f{from}..f{to}` to session `s`.
fn write_facts(store: &Store, from: usize, to: usize) {
    for i in from..to {
        store.write(Batch::new().assert("s", format!("f{i}"), vec![i as u8; 300])).unwrap();
    }
}

/// Writes facts from `f{from}` on until the log has rolled into a new
/// segment; returns how many facts there are then.
fn write_until_roll(store: &Store, from: usize) -> usize {
    let created = store.stats().unwrap().wal.segments_created;
    let mut next = from;
    while store.stats().unwrap().wal.segments_created == created {
        assert!(next < from + 1000, "no roll after 1000 writes");
        write_facts(store, next, next + 1);
        next += 1;
    }
    next
}

fn assert_facts(store: &Store, count: usize) {
    let facts = store.facts("s").unwrap();
    assert_eq!(facts.len(), count);
    for i in 0..count {
        assert_eq!(facts[&format!("f{i}")], vec![i as u8; 300], "fact f{i}");
    }
}

#[test]
fn the_loop_prepares_the_next_segment_and_the_roll_uses_it() {
    // With the loop running, the file of segment 2 appears as a zero-filled
    // temporary file of the full segment size before the log needs it; the
    // roll into segment 2 uses it (counted, and the temporary name is gone),
    // and later rolls keep finding one ready. A clean close leaves no file
    // in the WAL directory, and a reopen gives back every fact.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let wal_dir = config.wal_dir();
    let store = Store::open(config.clone()).unwrap();
    store.start_checkpoint_loop(LOOP_INTERVAL).unwrap();
    let spare = wal_dir.join(format!("{:020}.wal.tmp", 2));
    // The file exists from the start of its preparation; it is whole once
    // it has its full length.
    let full_length = config.persistence.segment_bytes;
    wait_until("segment 2 is prepared", || {
        temporary_files(&wal_dir) == vec![spare.clone()]
            && std::fs::metadata(&spare).is_ok_and(|m| m.len() == full_length)
    });
    let bytes = std::fs::read(&spare).unwrap();
    assert!(bytes.iter().all(|&b| b == 0), "a prepared segment is all zeros, with no header yet");

    let mut written = write_until_roll(&store, 0);
    let counters = store.stats().unwrap().wal;
    assert_eq!((counters.segments_created, counters.segments_prepared), (2, 1));
    assert!(!spare.exists(), "the prepared file became segment 2");
    assert!(wal_dir.join(format!("{:020}.wal", 2)).exists());

    // Each later segment, once the loop has had a tick to prepare it.
    for number in 3..=5 {
        wait_until("the next segment is prepared", || {
            temporary_files(&wal_dir) == vec![wal_dir.join(format!("{number:020}.wal.tmp"))]
        });
        written = write_until_roll(&store, written);
        let counters = store.stats().unwrap().wal;
        assert_eq!((counters.segments_created, counters.segments_prepared), (number, number - 1));
    }
    assert_facts(&store, written);
    // Close with a prepared file waiting: it goes too.
    wait_until("segment 6 is prepared", || temporary_files(&wal_dir).len() == 1);
    assert!(store.close().is_clean());
    let left: Vec<_> =
        std::fs::read_dir(&wal_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(
        left,
        vec![factwal::LOCK_FILE_NAME],
        "close leaves no file but the lock in the WAL directory"
    );

    let store = Store::open(config).unwrap();
    assert_facts(&store, written);
}

#[test]
fn a_crash_with_a_prepared_segment_loses_nothing_and_the_file_is_removed() {
    // A crash while a prepared file waits under its temporary name: the next
    // open replays every acknowledged write, removes the file, and the log
    // goes on (and rolls) normally.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let wal_dir = config.wal_dir();
    let store = Store::open(config.clone()).unwrap();
    store.start_checkpoint_loop(LOOP_INTERVAL).unwrap();
    write_facts(&store, 0, 50);
    wait_until("a segment is prepared", || temporary_files(&wal_dir).len() == 1);
    store.simulate_crash();

    let store = Store::open(config.clone()).unwrap();
    assert_eq!(
        temporary_files(&wal_dir),
        Vec::<PathBuf>::new(),
        "the open removed the prepared file"
    );
    assert_facts(&store, 50);
    write_facts(&store, 50, 150);
    assert!(store.close().is_clean());
    let store = Store::open(config).unwrap();
    assert_facts(&store, 150);
}

/// Opens with the WAL over the simulated disk, starts the loop with events
/// captured, arms a fault on the next call of `kind` while no write is in
/// flight, so that the preparation is the operation that fails, and returns
/// the store with the events once the loop has reported the failure and then
/// prepared the file after all.
fn open_and_fail_the_preparation(config: &Config, kind: OpKind) -> Vec<common::CapturedEvent> {
    let disk = SimDisk::new(&config.persistence.data_dir);
    let (store, events) = capture(|| {
        let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
        // Segment 1 exists; the loop's first tick prepares segment 2. The
        // fault is armed before the loop starts, so that tick meets it.
        let calls_before = disk.count(kind);
        disk.fail(Fault::nth(kind, 1, libc::EIO));
        store.start_checkpoint_loop(LOOP_INTERVAL).unwrap();
        // The failed attempt's file exists for a moment too: wait for the
        // call after the failed one (a later tick's attempt, which the roll
        // into segment 2 then waits for if it is still under way).
        let wal_dir = config.wal_dir();
        wait_until("a later tick prepared the file", || {
            disk.count(kind) >= calls_before + 2 && temporary_files(&wal_dir).len() == 1
        });
        // The log is not poisoned: writes go on, across segments.
        write_facts(&store, 0, 150);
        assert_facts(&store, 150);
        assert!(store.stats().unwrap().wal.segments_prepared >= 1);
        store
    });
    assert!(store.close().is_clean());
    events
}

#[test]
fn a_failed_preparation_is_reported_and_harms_nothing() {
    // A zero-fill (EIO) or a sync (EIO) that fails while the loop prepares a
    // segment: an ERROR names the WAL directory and the failed operation;
    // the file is discarded, nothing is poisoned (the file never held a
    // record, and is never used or synced again), a later tick prepares it
    // afresh, and writes go on. Every fact survives a reopen.
    for (kind, operation) in
        [(OpKind::Resize, "preallocate segment"), (OpKind::Sync, "sync preallocated segment")]
    {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(dir.path());
        let events = open_and_fail_the_preparation(&config, kind);
        let errors: Vec<_> = events
            .iter()
            .filter(|e| e.level == tracing::Level::ERROR && e.target == "factwal::checkpoint")
            .collect();
        assert_eq!(errors.len(), 1, "{kind:?}: {errors:?}");
        assert_eq!(
            errors[0].message,
            "preparing the next segment failed; the roll into it will make it instead"
        );
        assert_eq!(errors[0].fields["wal_dir"], config.wal_dir().display().to_string());
        let chain = &errors[0].fields["error"];
        assert!(
            chain.contains(operation) && chain.contains("00000000000000000002.wal.tmp"),
            "{kind:?}: {chain}"
        );
        let store = Store::open(config).unwrap();
        assert_facts(&store, 150);
    }
}

#[test]
fn without_the_loop_rolls_make_their_own_segments() {
    // No loop, no preparation: every roll zero-fills its own segment, and no
    // temporary file is ever left in the WAL directory.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Arc::new(Store::open(config.clone()).unwrap());
    write_facts(&store, 0, 150);
    let counters = store.stats().unwrap().wal;
    assert!(counters.segments_created >= 4, "{counters:?}");
    assert_eq!(counters.segments_prepared, 0);
    assert_eq!(temporary_files(&config.wal_dir()), Vec::<PathBuf>::new());
}
