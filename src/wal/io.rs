//! The one small I/O trait under the WAL. Every file operation the WAL makes
//! goes through [`WalIo`] and [`WalFile`], so tests can put a fault-injecting
//! implementation underneath without touching the engine. [`StdIo`] is the real
//! one, over `std::fs`.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, IoOp, Result};
use crate::files::{open_regular, DIR_MODE, FILE_MODE};

/// The bytes of a whole file, read for recovery.
pub type FileBytes = Box<dyn AsRef<[u8]> + Send + Sync>;

/// File-system operations the WAL needs.
pub trait WalIo: Send + Sync + Debug {
    /// Creates a directory and its parents (mode 0700) when missing.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new file (mode 0600); fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<FileBytes>;
    /// Renames a file (atomically replacing `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Syncs a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait WalFile: Send + Sync + Debug {
    /// Writes all of `bytes` at `offset`.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Gives the file `bytes` of allocated, zeroed space, so that later writes
    /// within it never change the file's size.
    fn allocate(&self, bytes: u64) -> io::Result<()>;
    /// The file's length.
    fn len_bytes(&self) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdIo;

impl WalIo for StdIo {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let file = open_regular(path, OpenOptions::new().read(true).write(true))?;
        Ok(Arc::new(StdFile { file }))
    }

    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        // A FIFO or a directory named like a segment is refused here, at
        // once (reading a FIFO would wait for a writer forever).
        let file = open_regular(path, OpenOptions::new().read(true))?;
        if file.metadata()?.len() == 0 {
            return Ok(Box::new(Vec::new()));
        }
        // SAFETY: the map is read-only and the file is a WAL segment of a store
        // whose directory lock this process holds (or, for the read-only tools,
        // one no writer holds), so no one truncates or rewrites it while mapped.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Box::new(map))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl WalFile for StdFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, bytes: u64) -> io::Result<()> {
        // Zeros are written rather than fallocated: measured on ext4, the first
        // sync into each block of an fallocated (unwritten) extent costs ~1.8x,
        // because the extent conversion goes through the journal; written zeros
        // cost ~35 ms per 64 MiB once, at segment creation. See docs/DESIGN.md.
        const CHUNK_BYTES: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK_BYTES as usize];
        let mut offset = self.len_bytes()?;
        while offset < bytes {
            let chunk = (bytes - offset).min(CHUNK_BYTES);
            self.file.write_all_at(&zeros[..chunk as usize], offset)?;
            offset += chunk;
        }
        Ok(())
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// Creates `dir` and any missing parent, syncing the parent of each one
/// created so the new entries survive a power loss (invariant 10).
pub(crate) fn ensure_durable_dir(io: &dyn WalIo, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || io.list(path).is_ok() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    io.create_dir_all(dir).map_err(|e| Error::io(dir, IoOp::Create, "directory", e))?;
    for created in missing.iter().rev() {
        let parent =
            created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        io.sync_dir(parent).map_err(|e| Error::io(parent, IoOp::SyncDir, "directory", e))?;
    }
    Ok(())
}
