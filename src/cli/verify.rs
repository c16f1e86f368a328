//! `factwal verify`: is this store sound? A full scan of the WAL plus redb's
//! own integrity check, with an exit code a script can act on. Read-only.

use std::process::ExitCode;

use factwal::WalProblem;

use super::output::{self, Out};
use super::problem::{self, open_read_only};
use super::{CliError, StoreArgs, EXIT_CORRUPTED};

/// Exit code: only a torn tail, which a read-write open drops with a WARN.
const EXIT_TORN_TAIL: u8 = 1;
/// Exit code: the store could not be verified (missing, locked, bad config).
const EXIT_NOT_VERIFIED: u8 = 3;

/// Check a store: every WAL header, checksum and LSN, and redb's integrity
///
/// Scans every segment header, record checksum, segment identity and the
/// LSN chain, then runs redb's integrity check (on a private copy).
/// Changes nothing on disk.
///
/// Exit codes:
///   0  clean
///   1  only a torn tail: the remains of a write that was never
///      acknowledged; a read-write open drops it (file, offset and bytes
///      are printed)
///   2  corruption (file, offset and LSN are printed), or redb's integrity
///      check failed
///   3  could not verify: missing or locked directory, bad config, I/O error
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: &VerifyArgs) -> ExitCode {
    match verify(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            output::eprint_line(&format!("factwal: cannot verify: {}", error.message));
            ExitCode::from(EXIT_NOT_VERIFIED)
        }
    }
}

/// Prints what it found and returns the exit code.
fn verify(args: &VerifyArgs) -> Result<u8, CliError> {
    let store = open_read_only(&args.store)?;
    let redb_sound = store.check_redb_integrity()?;
    let records = store.records();
    let mut out = Out::new();
    let lsns = match (records.first(), records.last()) {
        (Some(first), Some(last)) => format!("LSN {}..={}", first.lsn, last.lsn),
        _ => "no records".to_string(),
    };
    out.line(format_args!(
        "wal: {} segments, {} valid records ({lsns}); redb holds up to LSN {}",
        store.segments().len(),
        records.len(),
        store.applied_lsn()
    ))?;
    let mut code = 0;
    let mut failures = Vec::new();
    match store.problem() {
        None => out.line("wal: clean")?,
        Some(problem) => {
            let is_torn = matches!(problem, WalProblem::TornTail { .. });
            code = if is_torn { EXIT_TORN_TAIL } else { EXIT_CORRUPTED };
            failures.push(problem::describe(problem));
            out.line(format_args!("wal: {}", problem::describe(problem)))?;
        }
    }
    if redb_sound {
        out.line("redb: integrity check passed")?;
    } else {
        code = EXIT_CORRUPTED;
        let path = store.config().state_path();
        failures.push(format!("redb integrity check failed: {}", path.display()));
        out.line(format_args!("redb: integrity check FAILED for {}", path.display()))?;
    }
    out.flush()?;
    // Scripts and people reading stderr get the verdict in one line too.
    if !failures.is_empty() {
        output::eprint_line(&format!("factwal: {}", failures.join("; ")));
    }
    Ok(code)
}
