//! Files as the tests see them: every file of a directory tree with its
//! bytes (to prove that an operation changed nothing), what differs between
//! two such snapshots, and the segments of a WAL directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::wal::segment::parse_segment_file_name;

/// Every file under `dir` with its bytes. A directory that does not exist
/// holds no file; any other failure to read panics, naming the path.
pub fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => panic!("snapshot: cannot list {}: {error}", dir.display()),
        };
        for entry in entries {
            let path = entry
                .unwrap_or_else(|error| panic!("snapshot: listing {}: {error}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_else(|error| {
                    panic!("snapshot: reading {}: {error}", path.display())
                });
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// The files added, removed or changed between two snapshots, in path order.
pub fn changed_files(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<PathBuf> {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.into_iter().filter(|path| before.get(*path) != after.get(*path)).cloned().collect()
}

/// The numbers of the segment files in a WAL directory, sorted.
pub fn segment_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(number) = parse_segment_file_name(&entry?.file_name().to_string_lossy()) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_show_exactly_the_files_that_changed() {
        // A tree of three files, one in a subdirectory; then one changed,
        // one removed, one added. changed_files names exactly those three,
        // and a directory that does not exist snapshots as empty.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        for name in ["a", "b", "sub/c"] {
            std::fs::write(root.join(name), name).unwrap();
        }
        let before = snapshot_files(root);
        assert_eq!(before.len(), 3);
        assert_eq!(before[&root.join("sub/c")], b"sub/c");
        std::fs::write(root.join("a"), "changed").unwrap();
        std::fs::remove_file(root.join("b")).unwrap();
        std::fs::write(root.join("sub/d"), "new").unwrap();
        let after = snapshot_files(root);
        assert_eq!(
            changed_files(&before, &after),
            vec![root.join("a"), root.join("b"), root.join("sub/d")]
        );
        assert_eq!(changed_files(&after, &after), Vec::<PathBuf>::new());
        assert!(snapshot_files(&root.join("missing")).is_empty());
    }

    #[test]
    fn segment_numbers_are_the_segment_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["00000000000000000010.wal", "00000000000000000002.wal"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        for other in ["00000000000000000003.wal.tmp", "LOCK", "2.wal"] {
            std::fs::write(dir.path().join(other), b"").unwrap();
        }
        assert_eq!(segment_numbers(dir.path()).unwrap(), vec![2, 10]);
        let missing = segment_numbers(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
