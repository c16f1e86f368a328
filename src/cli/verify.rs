//! `factwal verify`: is this store sound? A full scan of the WAL, redb's own
//! integrity check, and every fact's checksum, with an exit code a script
//! can act on. Read-only.

use std::process::ExitCode;

use factwal::{Error, StateCheck, WalProblem};

use super::output::{self, Out};
use super::problem;
use super::{CliError, StoreArgs, EXIT_CORRUPTED, EXIT_UNSUPPORTED_VERSION};

/// Exit code: only an unreadable last record, which a read-write open drops
/// with a WARN.
const EXIT_TORN_TAIL: u8 = 1;
/// Exit code: the store could not be verified (missing, locked, bad config,
/// a WAL that is not this store's).
const EXIT_NOT_VERIFIED: u8 = 3;

/// Check a store: every WAL header, checksum and LSN, redb's integrity, every fact's checksum
///
/// Scans every segment (header, size, identity, record checksums, the LSN
/// chain), then runs redb's integrity check and reads every fact of
/// state.redb, checking its checksum and each session's fact count. Changes
/// nothing on disk and leaves no file behind.
///
/// Exit codes:
///   0  clean
///   1  only an unreadable last record: what a crash leaves of a write that
///      was never acknowledged (or, rarely, the last acknowledged record
///      damaged later); a read-write open drops it (file, offset and bytes
///      are printed)
///   2  corruption: in the WAL (file, offset and LSN are printed) or in
///      state.redb (the damaged facts or redb's finding are printed)
///   3  could not verify: missing or locked directory, bad config, I/O error,
///      a WAL that is not this store's
///   4  a file in a newer format version than this factwal reads
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: &VerifyArgs) -> ExitCode {
    match verify(args) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Verdict(error)) => {
            let code = match &error {
                Error::UnsupportedFormatVersion { .. } => EXIT_UNSUPPORTED_VERSION,
                _ => EXIT_CORRUPTED,
            };
            output::eprint_line(&format!("factwal: {error}"));
            ExitCode::from(code)
        }
        Err(Failure::Cannot(error)) => {
            if !error.message.is_empty() {
                output::eprint_line(&format!("factwal: cannot verify: {}", error.message));
            }
            ExitCode::from(if error.code == super::EXIT_BROKEN_PIPE {
                error.code
            } else {
                EXIT_NOT_VERIFIED
            })
        }
    }
}

/// Why verify stopped early: a finding about the store (damage, a newer
/// format), or a failure to look at it.
enum Failure {
    Verdict(Error),
    Cannot(CliError),
}

impl From<CliError> for Failure {
    fn from(error: CliError) -> Failure {
        Failure::Cannot(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        if error.is_corruption() || matches!(error, Error::UnsupportedFormatVersion { .. }) {
            Failure::Verdict(error)
        } else {
            Failure::Cannot(CliError::from(error))
        }
    }
}

/// Prints what it found and returns the exit code.
fn verify(args: &VerifyArgs) -> Result<u8, Failure> {
    let config = args.store.config()?;
    let store = factwal::ReadOnlyStore::open(&config)?;
    let state = store.check_state()?;
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
    report_state(&mut out, &state, &config.state_path(), &mut failures)?;
    if !state.is_sound() {
        code = EXIT_CORRUPTED;
    }
    out.flush()?;
    // Scripts and people reading stderr get the verdict in one line too.
    if !failures.is_empty() {
        output::eprint_line(&format!("factwal: {}", failures.join("; ")));
    }
    Ok(code)
}

fn report_state(
    out: &mut Out,
    state: &StateCheck,
    path: &std::path::Path,
    failures: &mut Vec<String>,
) -> Result<(), CliError> {
    if state.integrity {
        out.line("redb: integrity check passed")?;
    }
    for problem in &state.problems {
        out.line(format_args!("redb: {problem}"))?;
    }
    let kept = state.problems.len() as u64;
    if state.problems_found > kept {
        out.line(format_args!("redb: ... and {} more problems", state.problems_found - kept))?;
    }
    out.line(format_args!(
        "redb: {} sessions, {} facts with a sound checksum",
        state.sessions, state.facts_sound
    ))?;
    if !state.is_sound() {
        let first = state
            .problems
            .first()
            .map_or_else(String::new, |problem| format!(", the first: {problem}"));
        failures.push(format!(
            "{} is damaged: {} problem(s) found{first}",
            path.display(),
            state.problems_found
        ));
    }
    Ok(())
}
