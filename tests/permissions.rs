//! File modes: every directory factwal creates is 0700 and every file 0600,
//! so session state is private to its owner. The process umask is set to 0
//! here, so a mode the engine did not ask for explicitly would show up as
//! 0777 or 0666 instead of hiding behind the usual 022 or 077.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use factwal::{Store, LOCK_FILE_NAME};

mod common;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

fn clear_umask() {
    static CLEARED: Once = Once::new();
    // SAFETY: umask only swaps the process's file-creation mask; it cannot
    // fail and touches no memory. Every test in this binary wants mask 0.
    CLEARED.call_once(|| unsafe {
        libc::umask(0);
    });
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_mode(path: &Path, expected: u32) {
    assert_eq!(
        mode(path),
        expected,
        "{} is {:o}, expected {expected:o}",
        path.display(),
        mode(path)
    );
}

/// Checks every directory and file under `root`, `root` included.
fn assert_tree_private(root: &Path) {
    assert_mode(root, DIR_MODE);
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_tree_private(&path);
        } else {
            assert_mode(&path, FILE_MODE);
        }
    }
}

/// Checks the data directory's files by name, and the segment files of
/// `wal_dir` when given, then every other entry of both trees; returns the
/// segments seen.
fn check_store_files(data_dir: &Path, wal_dir: Option<&Path>) -> Vec<PathBuf> {
    assert_mode(&data_dir.join("state.redb"), FILE_MODE);
    assert_mode(&data_dir.join(LOCK_FILE_NAME), FILE_MODE);
    assert_tree_private(data_dir);
    let Some(wal_dir) = wal_dir else { return Vec::new() };
    assert_tree_private(wal_dir);
    let segments = common::segment_paths(wal_dir);
    assert!(!segments.is_empty(), "an open WAL-mode store has a segment");
    for segment in &segments {
        assert_mode(segment, FILE_MODE);
    }
    segments
}

/// Writes enough ~1 KiB records to roll through several 16 KiB segments.
fn fill_segments(store: &Store) {
    for i in 0..40 {
        store.assert("s", &format!("f{i}"), &[7; 1000]).unwrap();
    }
}

#[test]
fn default_layout_is_private() {
    // Opens a store in a data directory that does not exist yet (nor does its
    // parent), rolls several segments, crashes and reopens (recovery starts a
    // new segment), and checks every directory and file mode at each stage.
    clear_umask();
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("parent");
    let data_dir = parent.join("data");
    let wal_dir = data_dir.join("wal");
    let store = Store::open(common::small_config(&data_dir)).unwrap();
    assert_mode(&parent, DIR_MODE);
    check_store_files(&data_dir, Some(&wal_dir));
    fill_segments(&store);
    let segments = check_store_files(&data_dir, Some(&wal_dir));
    assert!(segments.len() >= 2, "rolled segments are checked too: {segments:?}");
    store.simulate_crash();

    let store = Store::open(common::small_config(&data_dir)).unwrap();
    check_store_files(&data_dir, Some(&wal_dir));
    assert_eq!(store.facts("s").unwrap().len(), 40);
    assert!(store.close().is_clean());
    check_store_files(&data_dir, None);
    assert_mode(&wal_dir, DIR_MODE);
}

#[test]
fn custom_wal_path_is_private() {
    // Puts the WAL in a separate, not yet existing directory tree, and checks
    // that every directory created for it is 0700 and its segments 0600.
    clear_umask();
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let wal_parent = root.path().join("fast-disk");
    let wal_dir = wal_parent.join("deep").join("factwal-wal");
    let store = Store::open(common::small_config(&data_dir).wal_path(&wal_dir)).unwrap();
    fill_segments(&store);
    let segments = check_store_files(&data_dir, Some(&wal_dir));
    assert!(segments.len() >= 2, "{segments:?}");
    assert_mode(&wal_parent, DIR_MODE);
    assert_mode(&wal_parent.join("deep"), DIR_MODE);
    assert!(!data_dir.join("wal").exists(), "the default WAL directory is not used");
    assert!(store.close().is_clean());
}

#[test]
fn direct_mode_files_are_private() {
    // Direct mode has no WAL; its data directory, redb file and lock file
    // must still be 0700 and 0600, before and after a write and a close.
    clear_umask();
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let store = Store::open(common::small_config(&data_dir).wal_enabled(false)).unwrap();
    check_store_files(&data_dir, None);
    store.assert("s", "f", b"v").unwrap();
    assert!(store.close().is_clean());
    check_store_files(&data_dir, None);
}
