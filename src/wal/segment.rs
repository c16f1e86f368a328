//! Segment files: their names, and how a new one comes into being.
//!
//! A segment is created under a temporary name, given its full size in zeros
//! and synced ("prepared", possibly ahead of need on another thread), then
//! its header written and synced, then renamed into place and its directory
//! synced (invariant 10). A file with a segment's name therefore always has a
//! durable, valid header, and the per-write sync never changes a file's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoOp, Lsn, Result};
use crate::identity::{random_u64, StoreId};
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

/// A file that will become segment `number`: created under its temporary
/// name, given its full size in zeros and synced, but with no header yet, so
/// it is never read as a segment (the next read-write open removes it).
#[derive(Debug)]
pub struct PreparedSegment {
    /// The segment it will become.
    pub number: u64,
    /// Its temporary path.
    pub path: PathBuf,
    file: Arc<dyn WalFile>,
}

/// The temporary name of segment `number` in `dir`.
fn temporary_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:0NUMBER_DIGITS$}{TEMPORARY_SUFFIX}"))
}

/// Prepares the file for segment `number` (see [`PreparedSegment`]). This is
/// the slow part of making a segment (zero-filling it and writing the zeros
/// back), and touches nothing a writer uses, so it can run ahead of need on
/// another thread.
pub fn prepare_segment(
    io: &dyn WalIo,
    dir: &Path,
    number: u64,
    segment_bytes: u64,
) -> Result<PreparedSegment> {
    let prepared = zero_filled_temporary(io, dir, number, segment_bytes)?;
    if let Err(source) = prepared.file.sync_data() {
        let error = Error::io(&prepared.path, IoOp::Sync, "preallocated segment", source);
        discard_prepared(io, prepared);
        return Err(error);
    }
    Ok(prepared)
}

/// The temporary file of segment `number`, in zeros, not yet synced.
fn zero_filled_temporary(
    io: &dyn WalIo,
    dir: &Path,
    number: u64,
    segment_bytes: u64,
) -> Result<PreparedSegment> {
    let path = temporary_path(dir, number);
    match io.remove(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io(&path, IoOp::Remove, "stale temporary segment", error)),
    }
    let file = io.create(&path).map_err(|e| Error::io(&path, IoOp::Create, "segment", e))?;
    let prepared = PreparedSegment { number, path, file };
    if let Err(source) = prepared.file.allocate(segment_bytes) {
        let error = Error::io(&prepared.path, IoOp::Allocate, "segment", source);
        discard_prepared(io, prepared);
        return Err(error);
    }
    Ok(prepared)
}

/// Removes a prepared file that will not be used. Best effort: a temporary
/// file is never read as a segment, and the next open removes it anyway.
pub fn discard_prepared(io: &dyn WalIo, prepared: PreparedSegment) {
    let _ = io.remove(&prepared.path);
}

/// What a new segment's header says besides its number and first LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentShape {
    /// The store the segment belongs to.
    pub store_id: StoreId,
    /// The opening of the store that writes it.
    pub epoch: u32,
    /// The file's preallocated size.
    pub segment_bytes: u64,
}

/// Turns a prepared file into segment `prepared.number`, whose first record
/// will be `lsn_first`: writes and syncs its header, renames it into place
/// and syncs the directory, so it is durable before any record in it is
/// written (invariant 10). On failure the file is discarded.
pub fn install_segment(
    io: &dyn WalIo,
    dir: &Path,
    prepared: PreparedSegment,
    lsn_first: Lsn,
    shape: SegmentShape,
) -> Result<Segment> {
    let number = prepared.number;
    let header = SegmentHeader {
        number,
        lsn_first,
        salt: random_u64(("factwal segment salt", number)),
        segment_bytes: shape.segment_bytes,
        store_id: Some(shape.store_id),
        epoch: shape.epoch,
    };
    let temporary = &prepared.path;
    let written = prepared
        .file
        .write_at(0, &header.encode())
        .map_err(|e| Error::io(temporary, IoOp::Write, "segment header", e))
        .and_then(|()| {
            prepared
                .file
                .sync_data()
                .map_err(|e| Error::io(temporary, IoOp::Sync, "new segment", e))
        });
    if let Err(error) = written {
        discard_prepared(io, prepared);
        return Err(error);
    }
    let path = dir.join(segment_file_name(number));
    io.rename(temporary, &path)
        .map_err(|e| Error::io(&path, IoOp::Rename, "new segment into place", e))?;
    io.sync_dir(dir)
        .map_err(|e| Error::io(dir, IoOp::SyncDir, "WAL directory after creating a segment", e))?;
    Ok(Segment { header, path, file: prepared.file })
}

/// Creates segment `number` in `dir`, whose first record will be `lsn_first`,
/// and makes it durable (file and directory) before returning.
pub fn create_segment(
    io: &dyn WalIo,
    dir: &Path,
    number: u64,
    lsn_first: Lsn,
    shape: SegmentShape,
) -> Result<Segment> {
    // One sync, in `install_segment`, covers the zeros and the header.
    let prepared = zero_filled_temporary(io, dir, number, shape.segment_bytes)?;
    install_segment(io, dir, prepared, lsn_first, shape)
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
        let salt = || random_u64(("factwal segment salt", 1u64));
        assert_ne!(salt(), salt());
    }
}
