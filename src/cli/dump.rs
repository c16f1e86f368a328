//! `factwal dump`: the WAL's records, one line each, the way `pg_waldump`
//! shows PostgreSQL's. Read-only.

use std::process::ExitCode;

use factwal::{Batch, Op, RecoveredRecord, WalProblem};
use serde::Serialize;

use super::output::{self, plain_text, Out};

/// An id in a plain dump line: quoted when it could be misread (a `/`
/// separates session and fact there).
fn id(text: &str) -> std::borrow::Cow<'_, str> {
    plain_text(text, &['/', ','])
}
use super::problem::{self, open_read_only};
use super::{CliError, StoreArgs, EXIT_CORRUPTED};

/// Print the WAL's records, one line each, in LSN order.
///
/// Each line gives the LSN, segment, offset, bytes on disk, whether redb
/// already holds the record (folded), and its operations
/// (`assert s1/f3 (12 bytes)`, `retract s1/f4`, `drop s2`). Read-only.
///
/// Records are listed up to the first problem. An unreadable last record is then reported
/// on stderr (exit 0: a crash leaves one); corruption is reported on stderr
/// naming file, offset and LSN, with exit 2.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Start at this LSN.
    #[arg(long, value_name = "N", default_value_t = 0)]
    from_lsn: u64,
    /// Print at most K records.
    #[arg(long, value_name = "K")]
    limit: Option<usize>,
    /// One JSON object per record and line (keys documented in README.md).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct RecordJson {
    lsn: u64,
    segment: String,
    offset: u64,
    bytes: u64,
    folded: bool,
    ops: Vec<OpJson>,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OpJson {
    Assert { session: String, fact: String, value_bytes: usize },
    Retract { session: String, fact: String },
    DropSession { session: String },
}

pub fn run(args: &DumpArgs) -> Result<ExitCode, CliError> {
    let store = open_read_only(&args.store)?;
    let mut out = Out::new();
    let records = store.records().iter().filter(|record| record.lsn >= args.from_lsn);
    for record in records.take(args.limit.unwrap_or(usize::MAX)) {
        let json = record_json(record, store.applied_lsn());
        if args.json {
            out.json(&json)?;
        } else {
            out.line(plain_line(&json))?;
        }
    }
    out.flush()?;
    match store.problem() {
        None => Ok(ExitCode::SUCCESS),
        Some(torn @ WalProblem::TornTail { .. }) => {
            output::eprint_line(&format!(
                "factwal: the WAL ends in an {}",
                problem::describe(torn)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Some(WalProblem::Corrupted(error)) => Err(CliError::with_code(
            EXIT_CORRUPTED,
            format!("{error}; records after it are not shown"),
        )),
        Some(other) => Err(CliError::with_code(
            EXIT_CORRUPTED,
            format!("{}; records after it are not shown", problem::describe(other)),
        )),
    }
}

fn record_json(record: &RecoveredRecord<Batch>, applied_lsn: u64) -> RecordJson {
    let ops = record
        .payload
        .ops()
        .iter()
        .map(|op| match op {
            Op::Assert { session, fact, value } => OpJson::Assert {
                session: session.clone(),
                fact: fact.clone(),
                value_bytes: value.len(),
            },
            Op::Retract { session, fact } => {
                OpJson::Retract { session: session.clone(), fact: fact.clone() }
            }
            Op::DropSession { session } => OpJson::DropSession { session: session.clone() },
        })
        .collect();
    RecordJson {
        lsn: record.lsn,
        segment: record.segment_file_name(),
        offset: record.offset,
        bytes: record.bytes(),
        folded: record.lsn <= applied_lsn,
        ops,
    }
}

fn plain_line(record: &RecordJson) -> String {
    let ops: Vec<String> = record
        .ops
        .iter()
        .map(|op| match op {
            OpJson::Assert { session, fact, value_bytes } => {
                format!("assert {}/{} ({value_bytes} bytes)", id(session), id(fact))
            }
            OpJson::Retract { session, fact } => format!("retract {}/{}", id(session), id(fact)),
            OpJson::DropSession { session } => format!("drop {}", id(session)),
        })
        .collect();
    let folded = if record.folded { "folded" } else { "unfolded" };
    format!(
        "lsn={} segment={} offset={} bytes={} {folded}: {}",
        record.lsn,
        record.segment,
        record.offset,
        record.bytes,
        ops.join(", ")
    )
}
