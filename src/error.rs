//! The one public error type of factwal.
//!
//! Every variant carries the context an operator needs to act: the path, the
//! byte offset and the LSN where it applies. Recovery errors are typed
//! ([`CorruptionKind`]), never free-form strings.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::identity::StoreId;

/// A log sequence number: the identity of one acknowledged batch.
///
/// LSNs are dense and increasing: the first batch ever written is LSN 1, and
/// each later batch takes the next number, across reopens.
pub type Lsn = u64;

/// What is wrong with the bytes found at a place in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// A segment header has a bad magic, version, size or checksum.
    BadSegmentHeader,
    /// A segment's header names a different segment number than its file name.
    SegmentNumberMismatch,
    /// A record's checksum does not match its bytes, or its header is not
    /// plausible, and valid records follow it.
    ChecksumMismatch,
    /// The LSNs do not follow on from each other: records are missing.
    LsnGap,
    /// A segment file in the middle of the sequence is missing.
    MissingSegment,
    /// The last segment ends in a partial or invalid record. Only reported as an
    /// error under [`RecoveryMode::AbsoluteConsistency`](crate::RecoveryMode).
    TornTail,
    /// A record's checksum is valid but its payload does not decode.
    BadPayload,
    /// A whole record (or a segment's first LSN) carries an LSN out of
    /// sequence where no crash can leave one: a valid record after the last
    /// one that follows on, or a segment starting before the one before it.
    LsnOutOfSequence {
        /// The LSN found there.
        found: Lsn,
    },
    /// A segment file's size differs from the size its header gives: the
    /// file was cut short (or extended) after it was written. Segments are
    /// preallocated whole, so this is damage, never a clean end.
    SegmentSizeMismatch {
        /// The file's size.
        file_bytes: u64,
        /// The size its header gives.
        header_bytes: u64,
    },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            CorruptionKind::BadSegmentHeader => "bad segment header",
            CorruptionKind::SegmentNumberMismatch => "segment header does not match file name",
            CorruptionKind::ChecksumMismatch => {
                "record checksum mismatch with valid records after it"
            }
            CorruptionKind::LsnGap => "LSN gap: records are missing",
            CorruptionKind::MissingSegment => "a segment file is missing",
            CorruptionKind::TornTail => "torn tail (partial last record)",
            CorruptionKind::BadPayload => "record payload does not decode",
            CorruptionKind::LsnOutOfSequence { found } => {
                return write!(f, "LSN {found} out of sequence");
            }
            CorruptionKind::SegmentSizeMismatch { file_bytes, header_bytes } => {
                let how = if file_bytes < header_bytes { "cut short" } else { "extended" };
                return write!(
                    f,
                    "segment file is {file_bytes} bytes but its header says {header_bytes} ({how})"
                );
            }
        };
        f.write_str(text)
    }
}

/// What is wrong with `state.redb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateDamage {
    /// redb refused the file as damaged (or as not a database at all).
    Unreadable,
    /// redb panicked on the file's contents; the panic was contained.
    Panicked,
    /// A fact's checksum does not match its session, fact id and value.
    ChecksumMismatch,
    /// A session's recorded fact count does not match the facts found.
    CountMismatch,
    /// A store record (applied LSN, identity, WAL location) fails its checksum.
    BadStoreRecord,
    /// redb's own integrity check failed.
    IntegrityCheckFailed,
}

impl fmt::Display for StateDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateDamage::Unreadable => "redb cannot read the file",
            StateDamage::Panicked => "redb failed on damaged contents",
            StateDamage::ChecksumMismatch => "fact checksum mismatch",
            StateDamage::CountMismatch => "session fact count mismatch",
            StateDamage::BadStoreRecord => "store record checksum mismatch",
            StateDamage::IntegrityCheckFailed => "redb integrity check failed",
        })
    }
}

/// What kind of I/O call failed. It decides how the engine reacts: after a
/// failed sync ([`IoOp::Sync`], [`IoOp::SyncDir`]) the kernel may have
/// dropped the dirty pages it could not write, so the WAL is poisoned; most
/// other failures leave nothing behind that recovery could misread and are
/// retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoOp {
    /// Opening a file or directory, or checking what is at a path.
    Open,
    /// Reading a file.
    Read,
    /// Writing file bytes.
    Write,
    /// Syncing a file's data (`fdatasync`).
    Sync,
    /// Syncing a directory, which makes its created, renamed and removed
    /// entries durable.
    SyncDir,
    /// Creating a file or directory.
    Create,
    /// Renaming an entry.
    Rename,
    /// Removing an entry.
    Remove,
    /// Preallocating a file's blocks.
    Allocate,
    /// Listing a directory.
    List,
    /// Taking a file lock.
    Lock,
    /// Reading a file's metadata.
    Stat,
    /// Starting a thread.
    Spawn,
}

impl IoOp {
    /// True for a sync of a file or a directory.
    pub fn is_sync(self) -> bool {
        matches!(self, IoOp::Sync | IoOp::SyncDir)
    }

    /// The verb an error message starts with.
    fn verb(self) -> &'static str {
        match self {
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Sync | IoOp::SyncDir => "sync",
            IoOp::Create => "create",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::Allocate => "preallocate",
            IoOp::List => "list",
            IoOp::Lock => "lock",
            IoOp::Stat => "stat",
            IoOp::Spawn => "spawn",
        }
    }
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// "sync records": the verb, then what it was applied to when there is more
/// to say.
fn describe_io(operation: IoOp, what: &str) -> String {
    match what {
        "" => operation.verb().to_string(),
        what => format!("{} {what}", operation.verb()),
    }
}

/// Every error factwal returns. Cloning is cheap: the OS's and redb's errors
/// are shared, so one failure can be handed to every writer it concerns.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("I/O error: {} {}: {source}", describe_io(*operation, what), path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// What kind of call failed.
        operation: IoOp,
        /// What it was applied to, or why: "records", "new segment into place".
        what: &'static str,
        /// The operating system's error (shared, so the error can be cloned
        /// for every writer of a group that failed together).
        #[source]
        source: Arc<io::Error>,
    },

    /// The WAL holds bytes that recovery cannot accept. Nothing on disk was
    /// changed; see the README's "Operating factwal" for what to do.
    #[error("WAL corrupted: {kind} in {} at offset {offset} (LSN {lsn})", path.display())]
    Corrupted {
        /// The segment file.
        path: PathBuf,
        /// Byte offset within the file.
        offset: u64,
        /// The LSN expected at that place.
        lsn: Lsn,
        /// What is wrong there.
        kind: CorruptionKind,
    },

    /// `state.redb` is damaged: bytes changed after redb wrote them. Nothing
    /// wrong is ever returned as a value; see the README's runbook
    /// (`factwal verify`, `factwal salvage`).
    #[error("state corrupted: {kind} in {}: {detail}", path.display())]
    StateCorrupted {
        /// The redb file.
        path: PathBuf,
        /// What is wrong.
        kind: StateDamage,
        /// Where (session and fact) or what redb said.
        detail: String,
    },

    /// A WAL segment of another store was found in this store's WAL. A WAL
    /// belongs to exactly one store: nothing was read from it or changed.
    #[error(
        "WAL segment {} belongs to another store ({}), not to the store of {} ({}): move it out of the WAL \
         directory, or point wal_path at this store's own WAL",
        path.display(), crate::identity::describe(*segment_store), state.display(), crate::identity::describe(*store)
    )]
    ForeignSegment {
        /// The segment file.
        path: PathBuf,
        /// The identity in its header.
        segment_store: Option<StoreId>,
        /// The redb file that names this store's identity.
        state: PathBuf,
        /// This store's identity.
        store: Option<StoreId>,
    },

    /// The WAL directory in force cannot be this store's WAL (it is empty
    /// while acknowledged writes may wait there, or the WAL recorded in
    /// `state.redb` still holds segments). Nothing was changed.
    #[error("WAL directory {} does not fit {}: {detail}", wal_dir.display(), state.display())]
    WalMismatch {
        /// The WAL directory in force.
        wal_dir: PathBuf,
        /// The redb file that records where this store's WAL lives.
        state: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },

    /// A file is written in a format version newer than this build reads.
    /// Not damage: nothing was changed; open it with a newer factwal.
    #[error(
        "{} is in format version {found}, newer than this factwal reads (up to {supported}): \
         open it with the factwal that wrote it or a newer one; nothing was changed",
        path.display()
    )]
    UnsupportedFormatVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// Code inside factwal (or inside a layer it calls) panicked; the panic
    /// was contained and turned into this error. When a panic unwound the
    /// thread leading a WAL group commit, the writers that leader owed an
    /// outcome get this error as the cause of [`Error::Poisoned`]; the
    /// panic's own message then went to the panic hook.
    #[error("internal failure while {what}: panic: {message}")]
    Panicked {
        /// What was being done.
        what: &'static str,
        /// The panic's message.
        message: String,
    },

    /// Another store (in this or another process) holds the directory.
    #[error("store is locked by another open store or process: {}", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A named limit was exceeded; nothing was written.
    #[error("limit exceeded: {what} is {actual}, the limit is {limit}")]
    LimitExceeded {
        /// Which limit: "record bytes", "batch operations", ...
        what: &'static str,
        /// The size that was asked for.
        actual: u64,
        /// The limit in force.
        limit: u64,
    },

    /// An earlier sync or write failed; the WAL acknowledges nothing more until
    /// the store is reopened.
    #[error("WAL poisoned by an earlier failure, reopen the store: {cause}")]
    Poisoned {
        /// The failure that poisoned the WAL.
        #[source]
        cause: Arc<Error>,
    },

    /// A sync of `state.redb` failed earlier. The kernel may have dropped
    /// what it could not write while still showing it, so nothing more is
    /// folded into the file, and no WAL segment removed on its strength, until
    /// the store is reopened (which recovers from the disk and the WAL). In
    /// WAL mode writes go on into the WAL until `persistence.wal_bytes_max`;
    /// in direct mode they are refused.
    #[error(
        "a sync of {} failed earlier: nothing more is folded into it until the store is reopened \
         (the WAL keeps every record since its last good commit): {cause}",
        path.display()
    )]
    StateSyncFailed {
        /// The redb file.
        path: PathBuf,
        /// The failure redb reported.
        #[source]
        cause: Arc<Error>,
    },

    /// The store is closed or closing.
    #[error("store is closed")]
    Closed,

    /// The configuration is invalid.
    #[error("config error in {}: {}", path.display(), config_detail(key, value, reason))]
    Config {
        /// The config file, or `<builder>` for values set in code.
        path: PathBuf,
        /// The key, with its table: `persistence.segment_bytes`.
        key: String,
        /// The offending value as written.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// redb reported an error.
    #[error("redb error on {}: {source}", path.display())]
    Redb {
        /// The redb file.
        path: PathBuf,
        /// redb's own error (shared, as for [`Error::Io`]).
        #[source]
        source: Arc<redb::Error>,
    },

    /// A step of closing the store could not get what it needed in time (a
    /// checkpoint pass still running, for instance); it was skipped and the
    /// WAL left for the next open to replay.
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        waited_ms: u64,
    },

    /// A caller-supplied value is invalid (an empty session id, say).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// "key `k` = v: reason", or "table [k]: reason" / "key `k`: reason" when
/// there is no value to show (an unknown table, a missing key).
fn config_detail(key: &str, value: &str, reason: &str) -> String {
    match value {
        "" if !key.contains('.') && !key.starts_with('<') => format!("table [{key}]: {reason}"),
        "" => format!("key `{key}`: {reason}"),
        value => format!("key `{key}` = {value}: {reason}"),
    }
}

/// The error and every source under it, joined by ": ".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// The result type of factwal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        operation: IoOp,
        what: &'static str,
        source: io::Error,
    ) -> Self {
        Error::Io { path: path.into(), operation, what, source: Arc::new(source) }
    }

    pub(crate) fn redb(path: impl Into<PathBuf>, source: impl Into<redb::Error>) -> Self {
        Error::Redb { path: path.into(), source: Arc::new(source.into()) }
    }

    /// True for damage to data on disk: WAL corruption ([`Error::Corrupted`])
    /// or a damaged `state.redb` ([`Error::StateCorrupted`]).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupted { .. } | Error::StateCorrupted { .. })
    }

    /// True for a full disk (ENOSPC) or an exhausted quota (EDQUOT).
    pub(crate) fn is_out_of_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_syncs_are_syncs() {
        let syncs: Vec<IoOp> = [
            IoOp::Open,
            IoOp::Read,
            IoOp::Write,
            IoOp::Sync,
            IoOp::SyncDir,
            IoOp::Create,
            IoOp::Rename,
            IoOp::Remove,
            IoOp::Allocate,
            IoOp::List,
            IoOp::Lock,
            IoOp::Stat,
            IoOp::Spawn,
        ]
        .into_iter()
        .filter(|op| op.is_sync())
        .collect();
        assert_eq!(syncs, [IoOp::Sync, IoOp::SyncDir]);
    }

    #[test]
    fn a_cloned_io_error_keeps_its_os_error_and_message() {
        let error = Error::io(
            "/d/00000000000000000001.wal",
            IoOp::Sync,
            "records",
            io::Error::from_raw_os_error(libc::EIO),
        );
        let copy = error.clone();
        assert_eq!(copy.to_string(), error.to_string());
        assert!(
            copy.to_string().starts_with("I/O error: sync records /d/00000000000000000001.wal: "),
            "{copy}"
        );
        let Error::Io { operation, what, source, .. } = &copy else { panic!("{copy:?}") };
        assert_eq!(
            (*operation, *what, source.raw_os_error()),
            (IoOp::Sync, "records", Some(libc::EIO))
        );
        let lock = Error::io("/d/LOCK", IoOp::Lock, "", io::Error::from_raw_os_error(libc::ENOLCK));
        assert!(lock.to_string().starts_with("I/O error: lock /d/LOCK: "), "{lock}");
        let full =
            Error::io("/d/x", IoOp::Write, "records", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(full.clone().is_out_of_space());
    }
}
