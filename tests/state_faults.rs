//! Faults under redb: a full disk while folding (or, in direct mode, while
//! writing) must not stick. redb latches an I/O failure ("previous I/O
//! error") until it is reopened; the store reopens it, and once space
//! returns, folding and writing resume with nothing lost. A failed *sync* is
//! different: the file is never trusted again until the store is reopened.
//! The faults are injected by the simulated disk under redb's storage
//! backend.

use std::sync::Arc;

use factwal::testing::{Fault, OpKind, Side, SimDisk};
use factwal::{Batch, CheckpointMode, Config, Error, Store};

mod common;

const ENOSPC: i32 = 28;

fn config(dir: &std::path::Path) -> Config {
    common::small_config(dir)
}

fn open(disk: &Arc<SimDisk>, config: Config) -> Store {
    Store::open_with(config, disk.wal_io(), disk.state_io()).unwrap()
}

fn is_out_of_space(error: &Error) -> bool {
    let text = factwal_error_chain(error);
    text.contains("No space left on device") || text.contains("os error 28")
}

fn factwal_error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn a_full_disk_inside_a_fold_recovers_once_space_returns() {
    // WAL mode: redb's writes fail with ENOSPC from some point on. Writes go
    // on (they only need the WAL) while checkpoint passes fail; once space
    // returns, the next pass reopens redb and folds everything, close is
    // clean, and a reopen holds every acknowledged write. Before the fix,
    // every later pass (and close) failed with "previous I/O error" for
    // good, and writes failed once back-pressure needed a pass.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let store = open(&disk, config(dir.path()));
    for i in 0..20 {
        store.assert("s", &format!("before{i}"), b"x").unwrap();
    }
    disk.fail(Fault::nth(OpKind::Write, 1, ENOSPC).on(Side::State).from_then_on());
    for i in 0..20 {
        store.assert("s", &format!("during{i}"), b"y").unwrap();
    }
    let failed = store.checkpoint(CheckpointMode::Passive).unwrap_err();
    assert!(is_out_of_space(&failed), "{failed}");
    // The next pass tries to reopen redb, whose repair needs space too.
    let failed = store.checkpoint(CheckpointMode::Passive).unwrap_err();
    assert!(is_out_of_space(&failed), "{failed}");
    // An unfolded fact is read from the overlay alone.
    assert_eq!(store.fact("s", "during7").unwrap(), Some(b"y".to_vec()));
    disk.heal();
    // A read reopens redb too, once there is space.
    assert_eq!(store.facts("s").unwrap().len(), 40);
    for i in 0..20 {
        store.assert("s", &format!("after{i}"), b"z").unwrap();
    }
    let pass = store.checkpoint(CheckpointMode::Passive).unwrap();
    assert_eq!(pass.applied_lsn, 60, "the pass after the reopen folds everything");
    assert_eq!(store.stats().unwrap().applied_lsn, 60);
    assert!(store.close().is_clean());
    let store = open(&disk, config(dir.path()));
    assert_eq!(store.facts("s").unwrap().len(), 60);
    assert!(store.close().is_clean());
}

#[test]
fn a_full_disk_under_back_pressure_does_not_stop_writes_after_space_returns() {
    // A WAL bound so small that writers fold themselves: while redb has no
    // space the writes that need a pass fail with ENOSPC (nothing of them is
    // acknowledged); once space returns they succeed again, without a reopen
    // of the store.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let config = Config::new(dir.path())
        .segment_bytes(16 * 1024)
        .max_record_bytes(4096)
        .wal_bytes_max(16 * 1024);
    let store = open(&disk, config.clone());
    disk.fail(Fault::nth(OpKind::Write, 1, ENOSPC).on(Side::State).from_then_on());
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        match store.write(Batch::new().assert("s", format!("f{i}"), vec![b'v'; 500])) {
            Ok(_) => acknowledged.push(i),
            Err(error) => {
                assert!(is_out_of_space(&error), "{error}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "back-pressure needed a pass while redb had no space");
    disk.heal();
    for i in 100..200 {
        store.write(Batch::new().assert("s", format!("f{i}"), vec![b'v'; 500])).unwrap();
        acknowledged.push(i);
    }
    assert!(store.close().is_clean());
    let store = open(&disk, config);
    let facts = store.facts("s").unwrap();
    for i in &acknowledged {
        assert!(facts.contains_key(&format!("f{i}")), "acknowledged write f{i} lost");
    }
    assert!(store.close().is_clean());
}

#[test]
fn a_full_disk_in_direct_mode_fails_that_write_and_the_next_ones_succeed() {
    // Direct mode: each write is a redb commit. While redb has no space the
    // writes fail; once space returns, the next write succeeds (redb is
    // reopened first) with the next LSN after what redb holds.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let store = open(&disk, config(dir.path()).wal_enabled(false));
    assert_eq!(store.assert("s", "a", b"1").unwrap(), 1);
    disk.fail(Fault::nth(OpKind::Write, 1, ENOSPC).on(Side::State).from_then_on());
    for fact in ["b", "c"] {
        let error = store.assert("s", fact, b"2").unwrap_err();
        assert!(is_out_of_space(&error), "{error}");
    }
    disk.heal();
    let lsn = store.assert("s", "d", b"3").unwrap();
    assert_eq!(lsn, store.stats().unwrap().applied_lsn);
    assert_eq!(store.fact("s", "d").unwrap(), Some(b"3".to_vec()));
    assert_eq!(store.fact("s", "a").unwrap(), Some(b"1".to_vec()));
    assert!(store.close().is_clean());
    let store = open(&disk, config(dir.path()).wal_enabled(false));
    assert_eq!(store.fact("s", "d").unwrap(), Some(b"3".to_vec()));
    assert!(store.close().is_clean());
}

const EIO: i32 = 5;

/// Every fact of session `s` the store holds.
fn facts_of(store: &Store) -> Vec<String> {
    store.facts("s").unwrap().into_keys().collect()
}

#[test]
fn a_failed_sync_of_state_redb_is_never_trusted_again_in_this_process() {
    // WAL mode. One sync of state.redb fails with EIO: the first, second or
    // third from the moment the fault is armed (each fold of the three
    // passes below commits with one sync), so that it lands in the first
    // fold and in later ones. The kernel may have
    // dropped the pages it could not write while still showing them (the
    // simulated disk does). Before the fix, the next pass reopened redb,
    // believed the applied LSN the page cache showed, committed on top of
    // the lost pages and removed the WAL segments holding those records:
    // after a power loss 40 acknowledged writes were gone (a failure at the
    // second sync). Now, from the failure on, every pass (and the close)
    // fails with StateSyncFailed, no segment is removed, writes go on into
    // the WAL, and after a power loss the reopen holds them all.
    for nth in 1..=3 {
        a_failed_sync_at(nth);
    }
}

fn a_failed_sync_at(nth: u64) {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let store = open(&disk, config(dir.path()));
    let mut acknowledged = Vec::new();
    let mut write = |prefix: &str, value: &[u8]| {
        for i in 0..20 {
            store.assert("s", &format!("{prefix}{i:02}"), value).unwrap();
            acknowledged.push(format!("{prefix}{i:02}"));
        }
    };
    write("a", b"x");
    store.checkpoint(CheckpointMode::Truncate).unwrap();
    write("b", b"y");
    disk.fail(Fault::nth(OpKind::Sync, nth, EIO).on(Side::State));
    let mut failed = false;
    let mut outcomes = Vec::new();
    for (prefix, value) in [("c", b"z"), ("d", b"w")] {
        outcomes.push(store.checkpoint(CheckpointMode::Truncate));
        write(prefix, value);
    }
    let segments = factwal::testing::segment_numbers(&dir.path().join("wal")).unwrap();
    for outcome in outcomes.into_iter().chain([store.checkpoint(CheckpointMode::Passive)]) {
        match outcome {
            Ok(_) => assert!(!failed, "sync {nth}: a pass succeeded after the failed sync"),
            Err(Error::Redb { .. }) if !failed => failed = true,
            Err(Error::StateSyncFailed { path, cause }) if failed => {
                assert_eq!(path, dir.path().join("state.redb"));
                assert!(matches!(*cause, Error::Redb { .. }), "sync {nth}: {cause:?}");
            }
            other => panic!("sync {nth}: unexpected {other:?}"),
        }
    }
    assert!(failed, "sync {nth}: the fault fired");
    assert_eq!(
        factwal::testing::segment_numbers(&dir.path().join("wal")).unwrap(),
        segments,
        "sync {nth}: no segment is removed on the strength of state.redb"
    );
    acknowledged.sort();
    assert_eq!(facts_of(&store), acknowledged, "sync {nth}: reads see every acknowledged write");
    let report = store.close();
    assert!(!report.is_clean(), "sync {nth}: {report:?}");
    disk.power_loss(factwal::testing::Tear::DropUnsynced).unwrap();
    let store = open(&disk, config(dir.path()));
    assert_eq!(facts_of(&store), acknowledged, "sync {nth}: nothing acknowledged is lost");
    assert!(store.close().is_clean());
}

#[test]
fn a_failed_sync_of_state_redb_in_direct_mode_refuses_every_later_write_until_reopen() {
    // Direct mode: the write whose commit's sync fails is refused (not
    // acknowledged), and so is every later one, with StateSyncFailed, until
    // the store is reopened; after a power loss the reopen holds exactly
    // the writes acknowledged before the failure.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let store = open(&disk, config(dir.path()).wal_enabled(false));
    store.assert("s", "a", b"1").unwrap();
    disk.fail(Fault::nth(OpKind::Sync, 1, EIO).on(Side::State));
    assert!(matches!(store.assert("s", "b", b"2"), Err(Error::Redb { .. })));
    for fact in ["c", "d"] {
        assert!(matches!(store.assert("s", fact, b"3"), Err(Error::StateSyncFailed { .. })));
    }
    drop(store);
    disk.power_loss(factwal::testing::Tear::DropUnsynced).unwrap();
    let store = open(&disk, config(dir.path()).wal_enabled(false));
    assert_eq!(facts_of(&store), ["a"]);
    assert_eq!(store.assert("s", "e", b"4").unwrap(), 2, "the next LSN follows what redb holds");
    assert!(store.close().is_clean());
}
