//! `factwal salvage`: the way out of a damaged store. Copies everything
//! still readable into a new store, folds the WAL on top, and names what
//! could not be recovered. The damaged store is not changed.

use std::path::PathBuf;
use std::process::ExitCode;

use factwal::{Loss, SalvageReport};
use serde::Serialize;

use super::output::{grouped, Out};
use super::{CliError, StoreArgs, EXIT_CORRUPTED};

/// Copy everything readable from a damaged store into a new one
///
/// Reads the damaged store (changing nothing: it is locked shared, and
/// state.redb is read through a private scratch copy in memory), copies
/// every fact whose checksum holds into a new store in --to, replays every
/// readable WAL record on top (a damaged one is skipped, not an end), and
/// prints what could not be recovered: damaged facts, sessions missing
/// facts, key ranges that could not be read, WAL records (by LSN) lost. A loss that a later WAL record wrote again
/// is reported as restored. The new store has its own identity; move it into
/// place and give it a fresh WAL directory (see README, "Damaged state.redb").
///
/// Exit codes: 0 everything was recovered; 2 the new store was made, but
/// something was lost (listed); 1 salvage failed (nothing was made).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct SalvageArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The new store's data directory: must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// One JSON object (keys documented in README.md).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ReportJson {
    to: String,
    store_id: String,
    facts_copied: u64,
    applied_lsn: Option<u64>,
    wal_records_replayed: u64,
    wal_lsn_first: Option<u64>,
    wal_lsn_last: Option<u64>,
    wal_torn_tail: Option<String>,
    sessions: u64,
    facts: u64,
    lsn_last: u64,
    lost: Vec<LossJson>,
    restored: Vec<LossJson>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LossJson {
    Fact { session: String, fact: String },
    Session { session: String, recorded: u64, found: u64 },
    Range { after: Option<(String, String)>, before: Option<(String, String)> },
    State { reason: String },
    WalRecords { lsn_first: u64, lsn_last: u64 },
    WalSegment { path: String, reason: String },
    Other { detail: String },
}

fn loss_json(loss: &Loss) -> LossJson {
    match loss {
        Loss::Fact { session, fact } => {
            LossJson::Fact { session: session.clone(), fact: fact.clone() }
        }
        Loss::Session { session, recorded, found } => {
            LossJson::Session { session: session.clone(), recorded: *recorded, found: *found }
        }
        Loss::Range { after, before } => {
            LossJson::Range { after: after.clone(), before: before.clone() }
        }
        Loss::State { reason } => LossJson::State { reason: reason.clone() },
        Loss::WalRecords { lsn_first, lsn_last } => {
            LossJson::WalRecords { lsn_first: *lsn_first, lsn_last: *lsn_last }
        }
        Loss::WalSegment { path, reason } => {
            LossJson::WalSegment { path: path.display().to_string(), reason: reason.clone() }
        }
        other => LossJson::Other { detail: other.to_string() },
    }
}

pub fn run(args: &SalvageArgs) -> Result<ExitCode, CliError> {
    let config = args.store.config()?;
    let report = factwal::salvage(&config, &args.to)?;
    let mut out = Out::new();
    if args.json {
        out.json(&json(&report))?;
    } else {
        print_plain(&mut out, &report)?;
    }
    out.flush()?;
    Ok(ExitCode::from(if report.is_complete() { 0 } else { EXIT_CORRUPTED }))
}

fn json(report: &SalvageReport) -> ReportJson {
    ReportJson {
        to: report.to.display().to_string(),
        store_id: report.store_id.to_string(),
        facts_copied: report.facts_copied,
        applied_lsn: report.applied_lsn,
        wal_records_replayed: report.wal_records_replayed,
        wal_lsn_first: report.wal_lsn_range.map(|(first, _)| first),
        wal_lsn_last: report.wal_lsn_range.map(|(_, last)| last),
        wal_torn_tail: report.wal_torn_tail.clone(),
        sessions: report.sessions,
        facts: report.facts,
        lsn_last: report.lsn_last,
        lost: report.lost.iter().map(loss_json).collect(),
        restored: report.restored.iter().map(loss_json).collect(),
    }
}

fn print_plain(out: &mut Out, report: &SalvageReport) -> Result<(), CliError> {
    let applied = report.applied_lsn.map_or_else(|| "unknown".to_string(), |lsn| lsn.to_string());
    out.line(format_args!(
        "state.redb: {} facts copied (applied LSN {applied})",
        grouped(report.facts_copied)
    ))?;
    match report.wal_lsn_range {
        Some((first, last)) => out.line(format_args!(
            "wal: {} records replayed (LSN {first}..={last})",
            grouped(report.wal_records_replayed)
        ))?,
        None => out.line("wal: no record to replay")?,
    }
    if let Some(tail) = &report.wal_torn_tail {
        out.line(format_args!("wal: unreadable last record left out ({tail})"))?;
    }
    for loss in &report.restored {
        out.line(format_args!("restored by the WAL: {loss}"))?;
    }
    for loss in &report.lost {
        out.line(format_args!("LOST: {loss}"))?;
    }
    out.line(format_args!(
        "new store: {} (store {}): {} sessions, {} facts, last LSN {}",
        report.to.display(),
        report.store_id,
        grouped(report.sessions),
        grouped(report.facts),
        report.lsn_last
    ))?;
    let verdict = if report.is_complete() {
        "nothing was lost".to_string()
    } else {
        format!("{} loss(es) listed above", report.lost.len())
    };
    out.line(format_args!("salvage: {verdict}"))
}
