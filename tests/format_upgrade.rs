//! A store made by factwal 0.1 (format 1: no store identity in segment
//! headers or state.redb, values without checksums) opens with this build.
//!
//! `tests/fixtures/format1/store` was made by the 0.1 binary (`factwal load`
//! with 4 KiB segments, killed with SIGKILL): state.redb folded up to LSN
//! 1721, 18 format-1 segments hold LSN 1721..=2718. `expected_facts.jsonl`
//! is what the 0.1 binary's `factwal facts --json` printed for it. The test
//! works on a copy, so the fixture never changes.

use std::path::Path;
use std::process::{Command, Stdio};

use factwal::testing::snapshot_files;
use factwal::{Batch, Config, ReadOnlyStore, Store};

mod common;

fn fixture_copy() -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/store");
    let work = tempfile::tempdir().unwrap();
    common::copy_dir(&source, &work.path().join("store"));
    work
}

fn config(store: &Path) -> Config {
    Config::new(store).segment_bytes(4096).max_record_bytes(1024).wal_bytes_max(65536)
}

/// `factwal facts --json` lines, sorted.
fn facts_json(store: &Path) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_factwal"))
        .args(["facts", "--json", "--dir", &store.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let mut lines: Vec<String> =
        String::from_utf8(output.stdout).unwrap().lines().map(String::from).collect();
    lines.sort();
    lines
}

fn expected() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/expected_facts.jsonl");
    let mut lines: Vec<String> =
        std::fs::read_to_string(path).unwrap().lines().map(String::from).collect();
    lines.sort();
    lines
}

#[test]
fn a_format_1_store_reads_as_0_1_read_it_then_upgrades_on_its_first_read_write_open() {
    // Read-only first: the same facts 0.1 showed, the file untouched, the
    // record saying format 1 with no identity. Then a read-write open
    // replays the format-1 WAL, upgrades state.redb (identity, checksums)
    // and writes format-2 segments from then on; the facts stay the same,
    // verify passes, and the store keeps working across reopens.
    let work = fixture_copy();
    let store_dir = work.path().join("store");
    let before = snapshot_files(&store_dir);
    assert_eq!(facts_json(&store_dir), expected(), "read-only, as 0.1 read it");
    assert_eq!(snapshot_files(&store_dir), before, "reading changed the fixture copy");
    let inspected = ReadOnlyStore::open(&config(&store_dir)).unwrap();
    assert_eq!(inspected.store_record().format_version, 1);
    assert_eq!(inspected.store_record().store_id, None);
    assert_eq!(inspected.applied_lsn(), 1721);
    assert_eq!(inspected.records().last().map(|r| r.lsn), Some(2718));
    drop(inspected);

    let store = Store::open(config(&store_dir)).unwrap();
    assert_eq!(store.recovery().records_replayed, 2718 - 1721);
    assert_eq!(store.stats().unwrap().lsn_last, 2718);
    let lsn = store.write(Batch::new().assert("s9", "after-upgrade", b"x".to_vec())).unwrap();
    assert_eq!(lsn, 2719, "LSNs go on");
    let store_id = store.store_id();
    store.simulate_crash();

    let inspected = ReadOnlyStore::open(&config(&store_dir)).unwrap();
    assert_eq!(inspected.store_record().format_version, 2);
    assert_eq!(inspected.store_record().store_id, Some(store_id));
    assert!(inspected.check_state().unwrap().is_sound());
    for segment in inspected.segments() {
        assert_eq!(segment.header.version(), 2, "{}", segment.path.display());
        assert_eq!(segment.header.store_id, Some(store_id));
    }
    drop(inspected);
    let mut with_new = expected();
    with_new.push("{\"session\":\"s9\",\"fact\":\"after-upgrade\",\"value\":\"x\"}".to_string());
    with_new.sort();
    assert_eq!(facts_json(&store_dir), with_new, "after the upgrade and a crash");
    let store = Store::open(config(&store_dir)).unwrap();
    assert_eq!(store.store_id(), store_id, "the identity is made once");
    assert!(store.close().is_clean());
    let verify = Command::new(env!("CARGO_BIN_EXE_factwal"))
        .args(["verify", "--dir", &store_dir.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stderr));
}
