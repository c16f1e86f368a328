//! The read-only inspector: it reads a crashed store (WAL replay in memory,
//! redb needing repair) and a cleanly closed one, changes no byte on disk,
//! and refuses while a writer holds the store.

use factwal::testing::snapshot_files;
use factwal::{Batch, CheckpointMode, Error, ReadOnlyStore, Store, WalProblem};

mod common;
use common::small_config;

#[test]
fn reads_a_crashed_store_without_changing_a_byte() {
    // Folded and unfolded writes, then a crash: the inspector sees the same
    // facts a reopen would, and every file stays byte-identical.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    for i in 0..40 {
        store
            .write(Batch::new().assert(format!("s{}", i % 4), format!("f{i}"), vec![i as u8; 30]))
            .unwrap();
    }
    store.checkpoint(CheckpointMode::Passive).unwrap();
    store.write(Batch::new().retract("s0", "f0").drop_session("s1")).unwrap();
    store.assert("s9", "late", b"x").unwrap();
    store.simulate_crash();

    let before = snapshot_files(dir.path());
    let inspector = ReadOnlyStore::open(&config).unwrap();
    assert_eq!(inspector.applied_lsn(), 40);
    assert_eq!(inspector.unfolded_records(), 2);
    assert_eq!(inspector.records().len(), 42, "folded records still in the WAL are listed too");
    assert!(inspector.problem().is_none());
    assert_eq!(inspector.sessions().unwrap(), vec!["s0", "s2", "s3", "s9"]);
    assert_eq!(inspector.facts("s0").unwrap().len(), 9);
    assert_eq!(inspector.fact("s9", "late").unwrap(), Some(b"x".to_vec()));
    assert!(inspector.check_state().unwrap().is_sound());
    drop(inspector);
    assert_eq!(snapshot_files(dir.path()), before, "inspection changed files");

    let store = Store::open(config).unwrap();
    assert_eq!(store.sessions().unwrap(), vec!["s0", "s2", "s3", "s9"]);
    assert_eq!(store.facts("s0").unwrap().len(), 9);
}

#[test]
fn reports_a_torn_tail_and_refuses_while_a_writer_runs() {
    // A writer holds the store: Locked. After a crash with garbage after the
    // last record: the torn tail is reported, not repaired.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    store.assert("s", "f", b"v").unwrap();
    assert!(matches!(ReadOnlyStore::open(&config), Err(Error::Locked { .. })));
    store.simulate_crash();
    let segment = common::segment_paths(&config.wal_dir()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The only record ends well before byte 1024 of the 16 KiB segment.
    bytes[1024] = 0xFF;
    std::fs::write(&segment, &bytes).unwrap();
    let before = snapshot_files(dir.path());
    let inspector = ReadOnlyStore::open(&config).unwrap();
    assert!(
        matches!(inspector.problem(), Some(WalProblem::TornTail { .. })),
        "{:?}",
        inspector.problem()
    );
    assert_eq!(inspector.fact("s", "f").unwrap(), Some(b"v".to_vec()));
    drop(inspector);
    assert_eq!(snapshot_files(dir.path()), before);
}

#[test]
fn missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let error = ReadOnlyStore::open(&small_config(&missing)).unwrap_err();
    assert!(error.to_string().contains("nope"), "{error}");
}

#[test]
fn open_reports_what_recovery_did() {
    // A crash with 3 unfolded records and garbage after them: the reopen
    // reports 3 replayed records, the segment it removed, and the torn tail.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    for i in 0..3 {
        store.assert("s", &format!("f{i}"), b"v").unwrap();
    }
    store.simulate_crash();
    let segment = common::segment_paths(&config.wal_dir()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[2048] = 0x7F;
    std::fs::write(&segment, &bytes).unwrap();
    let store = Store::open(config.clone()).unwrap();
    let report = store.recovery().clone();
    assert_eq!(report.records_replayed, 3);
    assert_eq!(report.segments_removed, 1);
    let (path, _, bytes_dropped) = report.torn_tail.expect("torn tail reported");
    assert_eq!(path, segment);
    assert!(bytes_dropped >= 1);
    assert_eq!(report.dropped_after, None);
    assert!(store.close().is_clean());
    let store = Store::open(config).unwrap();
    assert_eq!(
        store.recovery(),
        &factwal::RecoveryReport::default(),
        "a clean close leaves nothing to recover"
    );
}
