//! `factwal inspect`: what a store holds, where, and what a read-write open
//! would do with it, without changing a byte on disk.

use factwal::ReadOnlyStore;
use serde::Serialize;

use super::output::Out;
use super::problem::{self, open_read_only, ProblemJson};
use super::{CliError, StoreArgs};

/// Summarise a store: segments, LSNs, sessions, facts, WAL problems.
///
/// Prints the WAL segments (name, bytes, first and last LSN, records), the
/// LSN redb holds, the records a read-write open would replay, sessions,
/// facts, the redb file's size, and any WAL problem (torn tail or
/// corruption). Read-only, and exits 0 whatever the WAL holds; `verify` is the command
/// whose exit code says whether the store is sound.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON object (keys documented in README.md).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct InspectJson {
    data_dir: String,
    wal_dir: String,
    wal_enabled: bool,
    applied_lsn: u64,
    unfolded_records: usize,
    sessions: usize,
    facts: usize,
    redb_bytes: u64,
    segments: Vec<SegmentJson>,
    problem: Option<ProblemJson>,
}

#[derive(Serialize)]
struct SegmentJson {
    name: String,
    bytes: u64,
    lsn_first: Option<u64>,
    lsn_last: Option<u64>,
    records: u64,
}

pub fn run(args: &InspectArgs) -> Result<(), CliError> {
    let store = open_read_only(&args.store)?;
    let summary = summarise(&store)?;
    let mut out = Out::new();
    if args.json {
        out.json(&summary)?;
    } else {
        print_plain(&mut out, &summary, store.problem().map(problem::describe))?;
    }
    out.flush()
}

fn summarise(store: &ReadOnlyStore) -> Result<InspectJson, CliError> {
    let sessions = store.sessions()?;
    let mut facts = 0;
    for session in &sessions {
        facts += store.facts(session)?.len();
    }
    let config = store.config();
    let segments = store
        .segments()
        .iter()
        .map(|segment| SegmentJson {
            name: problem::file_name(&segment.path),
            bytes: segment.file_bytes,
            lsn_first: segment.lsn_last.map(|last| last + 1 - segment.records),
            lsn_last: segment.lsn_last,
            records: segment.records,
        })
        .collect();
    Ok(InspectJson {
        data_dir: config.persistence.data_dir.display().to_string(),
        wal_dir: config.wal_dir().display().to_string(),
        wal_enabled: config.persistence.wal_enabled,
        applied_lsn: store.applied_lsn(),
        unfolded_records: store.unfolded_records(),
        sessions: sessions.len(),
        facts,
        redb_bytes: store.redb_bytes()?,
        segments,
        problem: store.problem().map(problem::json),
    })
}

fn print_plain(out: &mut Out, summary: &InspectJson, problem: Option<String>) -> Result<(), CliError> {
    let mode = if summary.wal_enabled { "WAL mode" } else { "direct mode" };
    out.line(format_args!("store             {} ({mode})", summary.data_dir))?;
    out.line(format_args!("wal directory     {}", summary.wal_dir))?;
    out.line(format_args!("applied LSN       {} (redb holds every record up to it)", summary.applied_lsn))?;
    out.line(format_args!("unfolded records  {} (a read-write open replays them)", summary.unfolded_records))?;
    out.line(format_args!("sessions          {}", summary.sessions))?;
    out.line(format_args!("facts             {}", summary.facts))?;
    out.line(format_args!("redb file         {} bytes", summary.redb_bytes))?;
    out.line(format_args!("segments          {}", summary.segments.len()))?;
    for segment in &summary.segments {
        let lsns = match (segment.lsn_first, segment.lsn_last) {
            (Some(first), Some(last)) => format!("LSN {first}..={last}"),
            _ => "no records".to_string(),
        };
        let (name, bytes, records) = (&segment.name, segment.bytes, segment.records);
        out.line(format_args!("  {name}  {bytes} bytes  {records} records  {lsns}"))?;
    }
    out.line(format_args!("WAL problem       {}", problem.as_deref().unwrap_or("none")))
}
