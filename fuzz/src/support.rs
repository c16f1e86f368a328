//! What every fuzz target shares: scratch directories, file snapshots, a
//! reference model of the facts, an independent encoder of the batch payload
//! (written from docs/FORMAT.md, not from the engine), and an in-memory WAL
//! directory for scanning without touching the disk.
//!
//! Only `std`, `tempfile` and `factwal` are used here, so that
//! `tests/fuzz_regressions.rs` can include this file as it is.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use factwal::wal::io::{FileBytes, WalFile, WalIo};
use factwal::{Op, ReadOnlyStore, Store};

/// Every fact of a store: (session, fact) to value.
pub type FactMap = BTreeMap<(String, String), Vec<u8>>;

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

/// Every file under `dir` with its bytes: to prove that nothing changed.
pub fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read a file to snapshot"));
            }
        }
    }
    files
}

/// Panics, naming each file that differs and the first differing offset,
/// unless the two snapshots are equal.
pub fn assert_unchanged(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    if before == after {
        return;
    }
    let mut differences = Vec::new();
    for path in before.keys().chain(after.keys().filter(|path| !before.contains_key(*path))) {
        match (before.get(path), after.get(path)) {
            (Some(old), Some(new)) if old != new => {
                let offset = old
                    .iter()
                    .zip(new)
                    .position(|(a, b)| a != b)
                    .unwrap_or(old.len().min(new.len()));
                differences.push(format!(
                    "{}: changed from offset {offset} ({} -> {} bytes)",
                    path.display(),
                    old.len(),
                    new.len()
                ));
            }
            (Some(_), None) => differences.push(format!("{}: removed", path.display())),
            (None, Some(_)) => differences.push(format!("{}: created", path.display())),
            _ => {}
        }
    }
    panic!("{what} changed files:\n  {}", differences.join("\n  "));
}

/// Applies a batch to the model, operation by operation, as the store does.
pub fn apply_ops(facts: &mut FactMap, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Assert { session, fact, value } => {
                facts.insert((session.clone(), fact.clone()), value.clone());
            }
            Op::Retract { session, fact } => {
                facts.remove(&(session.clone(), fact.clone()));
            }
            Op::DropSession { session } => facts.retain(|(s, _), _| s != session),
        }
    }
}

/// The two ways of reading a store's facts.
pub trait ReadFacts {
    /// Every session holding a fact.
    fn sessions(&self) -> factwal::Result<Vec<String>>;
    /// Every fact of one session.
    fn facts(&self, session: &str) -> factwal::Result<BTreeMap<String, Vec<u8>>>;
}

impl ReadFacts for Store {
    fn sessions(&self) -> factwal::Result<Vec<String>> {
        Store::sessions(self)
    }
    fn facts(&self, session: &str) -> factwal::Result<BTreeMap<String, Vec<u8>>> {
        Store::facts(self, session)
    }
}

impl ReadFacts for ReadOnlyStore {
    fn sessions(&self) -> factwal::Result<Vec<String>> {
        ReadOnlyStore::sessions(self)
    }
    fn facts(&self, session: &str) -> factwal::Result<BTreeMap<String, Vec<u8>>> {
        ReadOnlyStore::facts(self, session)
    }
}

/// Reads every fact through `sessions()` and `facts()`, checking that the
/// two agree: a listed session holds at least one fact.
pub fn read_all(store: &dyn ReadFacts) -> FactMap {
    let sessions = store.sessions().expect("sessions() on an open store");
    assert!(
        sessions.windows(2).all(|pair| pair[0] < pair[1]),
        "sessions() not sorted and unique: {sessions:?}"
    );
    let mut facts = FactMap::new();
    for session in sessions {
        let of_session = store.facts(&session).expect("facts() of a listed session");
        assert!(!of_session.is_empty(), "sessions() lists {session:?}, which holds no fact");
        for (fact, value) in of_session {
            facts.insert((session.clone(), fact), value);
        }
    }
    facts
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

/// The file name of segment `number` (docs/FORMAT.md: 20 digits, `.wal`).
pub fn segment_file_name(number: u64) -> String {
    format!("{number:020}.wal")
}
