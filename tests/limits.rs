//! Every named limit, checked at the limit and one past it: a refused write
//! returns the named error and leaves no trace (no byte on disk changes, no
//! LSN is used up), and a refused configuration names its key.

use std::path::Path;

use factwal::testing::snapshot_files;
use factwal::{Batch, Config, Error, Op, Store, BATCH_OPS_MAX, ID_BYTES_MAX};

mod common;

/// WAL mode (true) and direct mode (false).
const MODES: [bool; 2] = [true, false];

/// The record limit of `common::small_config`.
const RECORD_BYTES_MAX: u64 = 4 * 1024;

fn open_small(dir: &Path, wal_enabled: bool) -> Store {
    Store::open(common::small_config(dir).wal_enabled(wal_enabled)).unwrap()
}

/// Bytes a one-assert batch of `(session, fact)` encodes to beyond its
/// value, learned from the store's own refusal of a value far too large, so
/// the test does not depend on the encoding (the value's length prefix has
/// the same width for every size used here).
fn payload_overhead(store: &Store, session: &str, fact: &str) -> u64 {
    let probe_bytes = 2 * RECORD_BYTES_MAX as usize;
    match store.assert(session, fact, &vec![7; probe_bytes]) {
        Err(Error::LimitExceeded { what: "record bytes", actual, limit: RECORD_BYTES_MAX }) => {
            actual - probe_bytes as u64
        }
        other => panic!("expected a record-bytes refusal, got {other:?}"),
    }
}

#[test]
fn oversized_record_is_refused_and_nothing_is_written() {
    // In each mode, snapshots every file of the store, writes a record one
    // byte over max_record_bytes, and checks the refusal names the limit with
    // the exact sizes, that no file changed by a single byte, and that the
    // next successful write gets the LSN the refused one would have had.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_small(dir.path(), wal_enabled);
        assert_eq!(store.assert("s", "before", b"1").unwrap(), 1);
        let overhead = payload_overhead(&store, "s", "big");
        let files_before = snapshot_files(dir.path());
        let value_bytes = (RECORD_BYTES_MAX - overhead + 1) as usize;
        let error = store.assert("s", "big", &vec![1; value_bytes]).unwrap_err();
        assert!(
            matches!(error, Error::LimitExceeded { what: "record bytes", actual, limit: RECORD_BYTES_MAX } if actual == RECORD_BYTES_MAX + 1),
            "wal={wal_enabled}: {error:?}"
        );
        assert_eq!(snapshot_files(dir.path()), files_before, "wal={wal_enabled}: nothing written");
        assert_eq!(store.stats().unwrap().lsn_last, 1);
        assert_eq!(store.fact("s", "big").unwrap(), None);
        assert_eq!(
            store.assert("s", "after", b"2").unwrap(),
            2,
            "wal={wal_enabled}: the refused write used no LSN"
        );
        store.simulate_crash();

        let store = open_small(dir.path(), wal_enabled);
        assert_eq!(
            store.fact("s", "big").unwrap(),
            None,
            "wal={wal_enabled}: nothing to recover either"
        );
        assert_eq!(store.facts("s").unwrap().len(), 2);
        assert_eq!(store.stats().unwrap().lsn_last, 2);
    }
}

#[test]
fn record_exactly_at_the_limit_is_accepted() {
    // Sizes a value so that the encoded batch is exactly max_record_bytes,
    // writes it (it must fit a segment holding other records too), and reads
    // it back, also after a crash and reopen; one byte more is refused.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_small(dir.path(), wal_enabled);
        store.assert("s", "small", b"x").unwrap();
        let value_bytes = (RECORD_BYTES_MAX - payload_overhead(&store, "s", "at-limit-1")) as usize;
        let at_limit = vec![9; value_bytes];
        assert_eq!(store.assert("s", "at-limit-1", &at_limit).unwrap(), 2, "wal={wal_enabled}");
        assert_eq!(store.assert("s", "at-limit-2", &at_limit).unwrap(), 3);
        let error = store.assert("s", "at-limit-3", &vec![9; value_bytes + 1]).unwrap_err();
        assert!(
            matches!(error, Error::LimitExceeded { what: "record bytes", actual, .. } if actual == RECORD_BYTES_MAX + 1)
        );
        assert_eq!(store.fact("s", "at-limit-1").unwrap(), Some(at_limit.clone()));
        store.simulate_crash();
        let store = open_small(dir.path(), wal_enabled);
        assert_eq!(store.fact("s", "at-limit-1").unwrap(), Some(at_limit.clone()));
        assert_eq!(store.fact("s", "at-limit-2").unwrap(), Some(at_limit));
        assert_eq!(store.stats().unwrap().lsn_last, 3);
    }
}

/// A config with room for the largest batch and the longest ids.
fn roomy_config(dir: &Path) -> Config {
    Config::new(dir).segment_bytes(1 << 20).max_record_bytes(512 * 1024).wal_bytes_max(8 << 20)
}

fn drops(count: usize) -> Batch {
    Batch::from((0..count).map(|_| Op::DropSession { session: "s".into() }).collect::<Vec<_>>())
}

#[test]
fn batch_operation_count_is_limited() {
    // A batch of BATCH_OPS_MAX + 1 operations (small enough in bytes to fit a
    // record) is refused as "batch operations" and uses no LSN; a batch of
    // exactly BATCH_OPS_MAX is accepted.
    assert_eq!(BATCH_OPS_MAX, 65_536);
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(roomy_config(dir.path()).wal_enabled(wal_enabled)).unwrap();
        let error = store.write(drops(BATCH_OPS_MAX + 1)).unwrap_err();
        assert!(
            matches!(
                error,
                Error::LimitExceeded { what: "batch operations", actual: 65_537, limit: 65_536 }
            ),
            "wal={wal_enabled}: {error:?}"
        );
        assert_eq!(store.stats().unwrap().lsn_last, 0);
        assert_eq!(store.write(drops(BATCH_OPS_MAX)).unwrap(), 1, "wal={wal_enabled}");
    }
}

#[test]
fn ids_longer_than_the_limit_are_refused() {
    // Session and fact ids of ID_BYTES_MAX + 1 bytes are refused with the id
    // named, for each operation kind that carries them; ids of exactly
    // ID_BYTES_MAX bytes are accepted and read back.
    assert_eq!(ID_BYTES_MAX, 4096);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(roomy_config(dir.path())).unwrap();
    let long = "x".repeat(ID_BYTES_MAX + 1);
    let limit = ID_BYTES_MAX as u64;
    let refusals = [
        ("session id", store.assert(&long, "f", b"v")),
        ("session id", store.retract(&long, "f")),
        ("session id", store.drop_session(&long)),
        ("fact id", store.assert("s", &long, b"v")),
        ("fact id", store.retract("s", &long)),
        // One bad id spoils the whole batch, wherever it is.
        (
            "fact id",
            store.write(Batch::new().assert("s", "ok", b"v".to_vec()).retract("s", long.clone())),
        ),
    ];
    for (index, (what_expected, result)) in refusals.into_iter().enumerate() {
        match result {
            Err(Error::LimitExceeded { what, actual: 4097, limit: l })
                if what == what_expected && l == limit => {}
            other => panic!("refusal {index}: expected {what_expected} limit, got {other:?}"),
        }
    }
    assert_eq!(store.stats().unwrap().lsn_last, 0);
    assert_eq!(store.fact("s", "ok").unwrap(), None);
    let longest = "y".repeat(ID_BYTES_MAX);
    assert_eq!(store.assert(&longest, &longest, b"v").unwrap(), 1);
    assert_eq!(store.fact(&longest, &longest).unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.sessions().unwrap(), vec![longest]);
}

#[test]
fn empty_batch_and_empty_ids_are_invalid_arguments() {
    // An empty batch and empty session or fact ids, in each operation kind,
    // are refused as InvalidArgument in both modes; none of them uses an LSN
    // or writes a byte.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_small(dir.path(), wal_enabled);
        let files_before = snapshot_files(dir.path());
        let refusals = [
            store.write(Batch::new()),
            store.assert("", "f", b"v"),
            store.assert("s", "", b"v"),
            store.retract("", "f"),
            store.retract("s", ""),
            store.drop_session(""),
            store.write(Batch::new().assert("s", "ok", b"v".to_vec()).drop_session("")),
        ];
        for (index, result) in refusals.into_iter().enumerate() {
            assert!(
                matches!(result, Err(Error::InvalidArgument(_))),
                "wal={wal_enabled} refusal {index}: {result:?}"
            );
        }
        assert_eq!(snapshot_files(dir.path()), files_before);
        assert_eq!(store.fact("s", "ok").unwrap(), None);
        assert_eq!(store.assert("s", "ok", b"v").unwrap(), 1);
    }
}

fn config_refusal(config: Config) -> (String, String) {
    let data_dir = config.persistence.data_dir.clone();
    match Store::open(config) {
        Err(Error::Config { key, value, path, .. }) => {
            assert_eq!(path, Path::new("<builder>"));
            assert!(!data_dir.exists(), "a refused config creates nothing");
            (key, value)
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn config_limits_are_enforced_and_named() {
    // Opens stores with each out-of-range size and checks the refusal names
    // the key and the value and creates no directory; the values at each
    // bound open fine.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refused = |config: Config| config_refusal(config);
    assert_eq!(
        refused(Config::new(&data).segment_bytes(4095).max_record_bytes(1024)),
        key("segment_bytes", 4095)
    );
    assert_eq!(
        refused(Config::new(&data).segment_bytes(8191).max_record_bytes(8096)),
        key("segment_bytes", 8191)
    );
    assert_eq!(refused(Config::new(&data).max_record_bytes(0)), key("max_record_bytes", 0));
    assert_eq!(
        refused(Config::new(&data).segment_bytes((1 << 30) + 1).wal_bytes_max(2 << 30)),
        key("segment_bytes", (1 << 30) + 1)
    );
    assert_eq!(
        refused(Config::new(&data).max_record_bytes((256 << 20) + 1)),
        key("max_record_bytes", (256 << 20) + 1)
    );

    for (segment_bytes, max_record_bytes) in [(4096, 4000), (8192, 8096)] {
        let dir = tempfile::tempdir().unwrap();
        let config =
            Config::new(dir.path()).segment_bytes(segment_bytes).max_record_bytes(max_record_bytes);
        let store = Store::open(config).unwrap();
        store.assert("s", "f", &vec![0; max_record_bytes as usize - 16]).unwrap();
        assert!(store.close().is_clean());
    }
}

fn key(name: &str, value: u64) -> (String, String) {
    (format!("persistence.{name}"), value.to_string())
}
