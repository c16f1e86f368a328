//! Segment files: their names, and how a new one comes into being.
//!
//! A segment is created under a temporary name, given its full size, its
//! header written and synced, then renamed into place and its directory
//! synced (invariant 10). A file with a segment's name therefore always has a
//! durable, valid header, and the per-write sync never changes a file's size.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Lsn, Result};
use crate::wal::format::SegmentHeader;
use crate::wal::io::{WalFile, WalIo};

const SEGMENT_SUFFIX: &str = ".wal";
const TEMPORARY_SUFFIX: &str = ".wal.tmp";
const NUMBER_DIGITS: usize = 20;

/// The file name of segment `number`: twenty digits, so names sort by number.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:0NUMBER_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The segment number a file name stands for, if it is a segment's name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True for a segment left half-created by a crash.
pub fn is_temporary_file_name(name: &str) -> bool {
    name.strip_suffix(TEMPORARY_SUFFIX).is_some_and(|digits| digits.len() == NUMBER_DIGITS)
}

/// An open segment, ready for appends.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its header as written.
    pub header: SegmentHeader,
    /// Its path.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<dyn WalFile>,
}

/// Creates segment `number` in `dir`, whose first record will be `lsn_first`,
/// and makes it durable (file and directory) before returning.
pub fn create_segment(io: &dyn WalIo, dir: &Path, number: u64, lsn_first: Lsn, segment_bytes: u64) -> Result<Segment> {
    let path = dir.join(segment_file_name(number));
    let temporary = dir.join(format!("{number:0NUMBER_DIGITS$}{TEMPORARY_SUFFIX}"));
    match io.remove(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io(&temporary, "remove stale temporary segment", error)),
    }
    let file = io.create(&temporary).map_err(|e| Error::io(&temporary, "create segment", e))?;
    let header = SegmentHeader { number, lsn_first, salt: random_salt(number), segment_bytes };
    let prepared = file
        .allocate(segment_bytes)
        .map_err(|e| Error::io(&temporary, "preallocate segment", e))
        .and_then(|()| file.write_at(0, &header.encode()).map_err(|e| Error::io(&temporary, "write segment header", e)))
        .and_then(|()| file.sync_data().map_err(|e| Error::io(&temporary, "sync new segment", e)));
    if let Err(error) = prepared {
        // Best effort: a half-made temporary file is never read as a segment,
        // and the next attempt removes it anyway.
        let _ = io.remove(&temporary);
        return Err(error);
    }
    io.rename(&temporary, &path).map_err(|e| Error::io(&path, "rename new segment into place", e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, "sync WAL directory after creating a segment", e))?;
    Ok(Segment { header, path, file })
}

/// A salt that differs for every segment ever created: the process's random
/// hasher keys mixed with the segment number and the time.
fn random_salt(number: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((number, nanos, std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_number_and_parse_back() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_file_name("00000000000000000042.wal"), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.wal.tmp"), None);
        assert!(is_temporary_file_name("00000000000000000042.wal.tmp"));
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(random_salt(1), random_salt(1));
    }
}
