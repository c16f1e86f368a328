//! What the read-only subcommands say about a WAL that does not end cleanly:
//! one line for people, one JSON object for scripts, and whether a
//! read-write open would refuse the store.

use std::path::Path;

use factwal::{Config, Error, ReadOnlyStore, RecoveryMode, WalProblem};
use serde::Serialize;

use super::{CliError, StoreArgs, EXIT_CORRUPTED};

/// Opens the store the flags describe without changing a byte of it.
pub fn open_read_only(args: &StoreArgs) -> Result<ReadOnlyStore, CliError> {
    let config = args.config()?;
    Ok(ReadOnlyStore::open(&config)?)
}

/// The `problem` object of `inspect --json`.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProblemJson {
    /// `{"kind":"torn_tail","file","offset","bytes"}`
    TornTail { file: String, offset: u64, bytes: u64 },
    /// `{"kind":"corrupted","file","offset","lsn","detail"}`
    Corrupted { file: String, offset: u64, lsn: u64, detail: String },
    /// `{"kind":"error","detail"}`: a problem of another kind.
    Error { detail: String },
}

pub fn json(problem: &WalProblem) -> ProblemJson {
    match problem {
        WalProblem::TornTail { path, offset, bytes } => ProblemJson::TornTail {
            file: path.display().to_string(),
            offset: *offset,
            bytes: *bytes,
        },
        WalProblem::Corrupted(Error::Corrupted { path, offset, lsn, kind }) => {
            ProblemJson::Corrupted {
                file: path.display().to_string(),
                offset: *offset,
                lsn: *lsn,
                detail: kind.to_string(),
            }
        }
        WalProblem::Corrupted(other) => ProblemJson::Error { detail: other.to_string() },
        other => ProblemJson::Error { detail: describe(other) },
    }
}

/// One line naming the file, the offset and (for corruption) the LSN.
pub fn describe(problem: &WalProblem) -> String {
    match problem {
        WalProblem::TornTail { path, offset, bytes } => format!(
            "unreadable last record in {} at offset {offset}: a read-write open would drop these {bytes} bytes \
             (what a crash leaves of a write it cut short before it was acknowledged, or the last acknowledged \
             record damaged later; nothing on disk tells the two apart)",
            path.display()
        ),
        WalProblem::Corrupted(error) => error.to_string(),
        // A kind newer than this command line (the library and the command
        // line ship together, so not expected).
        other => format!("a WAL problem: {other:?}"),
    }
}

/// The error a read-write open with this configuration would give, if any:
/// corruption unless the recovery mode is point-in-time, and a torn tail
/// under absolute-consistency.
pub fn refusal(problem: Option<&WalProblem>, config: &Config) -> Option<CliError> {
    let mode = config.persistence.recovery_mode;
    match problem? {
        WalProblem::Corrupted(error) if mode != RecoveryMode::PointInTime => {
            Some(CliError::from(error))
        }
        torn @ WalProblem::TornTail { .. } if mode == RecoveryMode::AbsoluteConsistency => {
            Some(CliError::with_code(
                EXIT_CORRUPTED,
                format!("{} (refused: recovery_mode is absolute-consistency)", describe(torn)),
            ))
        }
        _ => None,
    }
}

/// A segment's file name, for compact lines.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}
