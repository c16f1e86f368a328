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
/// facts, the redb file's size, and any WAL problem (unreadable last record or
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
    store_id: Option<String>,
    format_version: u32,
    wal_in_use: bool,
    wal_dir_recorded: Option<String>,
    applied_lsn: u64,
    unfolded_records: usize,
    sessions: usize,
    facts: usize,
    redb_bytes: u64,
    segments: Vec<SegmentJson>,
    problem: Option<ProblemJson>,
    point_in_time_drops: Option<DropsJson>,
}

#[derive(Serialize)]
struct DropsJson {
    readable_records: u64,
    lsn_first: Option<u64>,
    lsn_last: Option<u64>,
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
    let record = store.store_record();
    Ok(InspectJson {
        data_dir: config.persistence.data_dir.display().to_string(),
        wal_dir: config.wal_dir().display().to_string(),
        wal_enabled: config.persistence.wal_enabled,
        store_id: record.store_id.map(|id| id.to_string()),
        format_version: record.format_version,
        wal_in_use: record.wal_in_use,
        wal_dir_recorded: record.wal_dir.as_ref().map(|dir| dir.display().to_string()),
        applied_lsn: store.applied_lsn(),
        unfolded_records: store.unfolded_records(),
        sessions: sessions.len(),
        facts,
        redb_bytes: store.redb_bytes()?,
        segments,
        problem: store.problem().map(problem::json),
        point_in_time_drops: store.point_in_time_drops().map(|dropped| DropsJson {
            readable_records: dropped.records,
            lsn_first: dropped.lsn_range.map(|(first, _)| first),
            lsn_last: dropped.lsn_range.map(|(_, last)| last),
        }),
    })
}

fn print_plain(
    out: &mut Out,
    summary: &InspectJson,
    problem: Option<String>,
) -> Result<(), CliError> {
    let mode = if summary.wal_enabled { "WAL mode" } else { "direct mode" };
    out.line(format_args!("store             {} ({mode})", summary.data_dir))?;
    out.line(format_args!("wal directory     {}", summary.wal_dir))?;
    let identity =
        summary.store_id.as_deref().unwrap_or("none (format 1: given at the next read-write open)");
    out.line(format_args!("store id          {identity}"))?;
    out.line(format_args!("format            {}", summary.format_version))?;
    let last_close = match (summary.format_version, summary.wal_in_use, &summary.wal_dir_recorded) {
        (1, _, _) => "not recorded (format 1)".to_string(),
        (_, true, Some(dir)) => {
            format!("not clean: acknowledged writes may wait in the WAL at {dir}")
        }
        (_, true, None) => "not clean".to_string(),
        (_, false, _) => "clean: state.redb holds everything the WAL held".to_string(),
    };
    out.line(format_args!("last close        {last_close}"))?;
    out.line(format_args!(
        "applied LSN       {} (redb holds every record up to it)",
        summary.applied_lsn
    ))?;
    out.line(format_args!(
        "unfolded records  {} (a read-write open replays them)",
        summary.unfolded_records
    ))?;
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
    out.line(format_args!("WAL problem       {}", problem.as_deref().unwrap_or("none")))?;
    if let Some(drops) = &summary.point_in_time_drops {
        let lsns = match (drops.lsn_first, drops.lsn_last) {
            (Some(first), Some(last)) => format!(" (LSN {first}..={last})"),
            _ => String::new(),
        };
        out.line(format_args!(
            "point-in-time     would drop {} readable records{lsns} after the damage, and what the damage held",
            drops.readable_records
        ))?;
    }
    Ok(())
}
