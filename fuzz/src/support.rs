//! What the fuzz targets share beyond `factwal::testing` (the fact model,
//! file snapshots and the simulated disk, which the crate's tests use too):
//! scratch directories, a snapshot comparison that says what changed, an
//! independent encoder of the batch payload (written from docs/FORMAT.md, not
//! from the engine), and an in-memory WAL directory for scanning without
//! touching the disk.
//!
//! Only `std`, `tempfile` and `factwal` are used here, so that
//! `tests/fuzz_regressions.rs` can include this file as it is.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use factwal::testing::changed_files;
use factwal::wal::io::{FileBytes, WalFile, WalIo};
use factwal::Op;

/// A fresh directory for one run. On tmpfs when there is one (`/dev/shm`):
/// syncs cost nothing there, which keeps the store targets fast. The
/// `FACTWAL_FUZZ_TMP` variable overrides the place.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = match std::env::var_os("FACTWAL_FUZZ_TMP") {
        Some(dir) => PathBuf::from(dir),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    tempfile::Builder::new()
        .prefix("factwal-fuzz-")
        .tempdir_in(base)
        .expect("create a scratch directory")
}

/// Panics, naming each file that differs and the first differing offset,
/// unless the two snapshots are equal.
pub fn assert_unchanged(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let changed = changed_files(before, after);
    if changed.is_empty() {
        return;
    }
    let differences: Vec<String> = changed
        .iter()
        .map(|path| match (before.get(path), after.get(path)) {
            (Some(old), Some(new)) => {
                let offset = old
                    .iter()
                    .zip(new)
                    .position(|(a, b)| a != b)
                    .unwrap_or(old.len().min(new.len()));
                format!(
                    "{}: changed from offset {offset} ({} -> {} bytes)",
                    path.display(),
                    old.len(),
                    new.len()
                )
            }
            (Some(_), None) => format!("{}: removed", path.display()),
            (None, _) => format!("{}: created", path.display()),
        })
        .collect();
    panic!("{what} changed files:\n  {}", differences.join("\n  "));
}

/// Encodes a batch payload as docs/FORMAT.md lays it out: a LEB128 count,
/// then each operation as postcard writes it (variant tag, then each string
/// or byte string as a LEB128 length and its bytes).
pub fn encode_payload(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    push_varint(&mut out, ops.len() as u64);
    for op in ops {
        match op {
            Op::Assert { session, fact, value } => {
                out.push(0);
                push_bytes(&mut out, session.as_bytes());
                push_bytes(&mut out, fact.as_bytes());
                push_bytes(&mut out, value);
            }
            Op::Retract { session, fact } => {
                out.push(1);
                push_bytes(&mut out, session.as_bytes());
                push_bytes(&mut out, fact.as_bytes());
            }
            Op::DropSession { session } => {
                out.push(2);
                push_bytes(&mut out, session.as_bytes());
            }
        }
    }
    out
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A WAL directory held in memory: enough for `recovery::scan`, which only
/// lists and reads. Every change is refused.
#[derive(Debug, Default)]
pub struct MemoryDir {
    /// File name to bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "in-memory WAL directory is read-only")
}

fn file_name(path: &Path) -> io::Result<String> {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| io::ErrorKind::NotFound.into())
}

impl WalIo for MemoryDir {
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn list(&self, _: &Path) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }
    fn create(&self, _: &Path) -> io::Result<Arc<dyn WalFile>> {
        Err(read_only())
    }
    fn open(&self, _: &Path) -> io::Result<Arc<dyn WalFile>> {
        Err(read_only())
    }
    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        let bytes = self.files.get(&file_name(path)?).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(bytes.clone()))
    }
    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn remove(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
}
