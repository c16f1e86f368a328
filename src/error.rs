//! The one public error type of factwal.
//!
//! Every variant carries the context an operator needs to act: the path, the
//! byte offset and the LSN where it applies. Recovery errors are typed
//! ([`CorruptionKind`]), never free-form strings.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

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
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            CorruptionKind::BadSegmentHeader => "bad segment header",
            CorruptionKind::SegmentNumberMismatch => "segment header does not match file name",
            CorruptionKind::ChecksumMismatch => "record checksum mismatch with valid records after it",
            CorruptionKind::LsnGap => "LSN gap: records are missing",
            CorruptionKind::MissingSegment => "a segment file is missing",
            CorruptionKind::TornTail => "torn tail (partial last record)",
            CorruptionKind::BadPayload => "record payload does not decode",
        };
        f.write_str(text)
    }
}

/// Every error factwal returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("I/O error: {operation} {}: {source}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// What was being done: "open", "write", "sync", ...
        operation: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
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

    /// The store is closed or closing.
    #[error("store is closed")]
    Closed,

    /// The configuration is invalid.
    #[error("config error in {}: key `{key}` = {value}: {reason}", path.display())]
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
        /// redb's own error.
        #[source]
        source: redb::Error,
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

/// The result type of factwal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, operation: &'static str, source: io::Error) -> Self {
        Error::Io { path: path.into(), operation, source }
    }

    pub(crate) fn redb(path: impl Into<PathBuf>, source: impl Into<redb::Error>) -> Self {
        Error::Redb { path: path.into(), source: source.into() }
    }

    /// A copy of this error for each writer of a group that failed together.
    /// I/O errors keep their OS error code (or kind and text).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, operation, source } => {
                let source = match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                };
                Error::Io { path: path.clone(), operation, source }
            }
            Error::Corrupted { path, offset, lsn, kind } => {
                Error::Corrupted { path: path.clone(), offset: *offset, lsn: *lsn, kind: *kind }
            }
            Error::Locked { path } => Error::Locked { path: path.clone() },
            Error::LimitExceeded { what, actual, limit } => {
                Error::LimitExceeded { what, actual: *actual, limit: *limit }
            }
            Error::Poisoned { cause } => Error::Poisoned { cause: cause.clone() },
            Error::Closed => Error::Closed,
            Error::Config { path, key, value, reason } => {
                Error::Config { path: path.clone(), key: key.clone(), value: value.clone(), reason: reason.clone() }
            }
            // redb's error is not Clone: keep its text under the same variant.
            Error::Redb { path, source } => {
                Error::Redb { path: path.clone(), source: redb::Error::Io(io::Error::other(source.to_string())) }
            }
            Error::Timeout { what, waited_ms } => Error::Timeout { what, waited_ms: *waited_ms },
            Error::InvalidArgument(text) => Error::InvalidArgument(text.clone()),
        }
    }

    /// True for a full disk (ENOSPC) or an exhausted quota (EDQUOT).
    pub(crate) fn is_out_of_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            _ => false,
        }
    }
}
