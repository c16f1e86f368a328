//! `factwal checkpoint`: open the store read-write, run one checkpoint pass,
//! print what it did, close.

use factwal::{CheckpointMode, Store};
use serde::Serialize;

use super::output::Out;
use super::{CliError, StoreArgs};

/// Open the store read-write, run one checkpoint pass, print its fields,
/// close.
///
/// Opening already replays the WAL into redb (recovery folds at open), so
/// the pass itself usually finds nothing left (log_frames=0);
/// `replayed_at_open` says how many records the open folded. With
/// --truncate, the pass also removes every WAL segment. Needs the store to
/// exist and no other process to hold it.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// TRUNCATE instead of PASSIVE: fold everything, then remove every segment.
    #[arg(long)]
    truncate: bool,
    /// One JSON object (keys documented in README.md).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PassJson {
    mode: &'static str,
    busy: bool,
    log_frames: u64,
    checkpointed_frames: u64,
    elapsed_ms: f64,
    applied_lsn: u64,
    segments_removed: usize,
    replayed_at_open: u64,
}

pub fn run(args: &CheckpointArgs) -> Result<(), CliError> {
    let config = args.store.config()?;
    // Store::open would create a missing store; an operator command must not.
    // Anything else in the way (a file for a directory, a directory for a
    // file) Store::open names itself.
    let state_path = config.state_path();
    let missing = std::fs::symlink_metadata(&state_path)
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    if missing && config.persistence.data_dir.is_dir() {
        return Err(CliError::failed(format!(
            "no factwal store here: {} does not exist",
            state_path.display()
        )));
    }
    if missing {
        let data_dir = &config.persistence.data_dir;
        let what = match std::fs::metadata(data_dir) {
            Ok(metadata) if metadata.is_file() => "is a regular file, not a directory",
            Ok(_) => "is not a directory",
            Err(_) => "no such directory",
        };
        return Err(CliError::failed(format!(
            "I/O error: open data directory {}: {what}",
            data_dir.display()
        )));
    }
    let store = Store::open(config)?;
    let replayed_at_open = store.recovery().records_replayed;
    let mode = if args.truncate { CheckpointMode::Truncate } else { CheckpointMode::Passive };
    let pass = store.checkpoint(mode);
    let report = store.close();
    let pass = pass?;
    report.truncate.and(report.redb_close)?;
    let json = PassJson {
        mode: pass.mode.as_str(),
        busy: pass.busy,
        log_frames: pass.log_frames,
        checkpointed_frames: pass.checkpointed_frames,
        elapsed_ms: pass.elapsed_ms(),
        applied_lsn: pass.applied_lsn,
        segments_removed: pass.segments_removed,
        replayed_at_open,
    };
    let mut out = Out::new();
    if args.json {
        out.json(&json)?;
    } else {
        out.line(format_args!(
            "checkpoint pass mode={} busy={} log_frames={} checkpointed_frames={} elapsed_ms={} applied_lsn={} \
             segments_removed={} replayed_at_open={}",
            json.mode,
            json.busy,
            json.log_frames,
            json.checkpointed_frames,
            json.elapsed_ms,
            json.applied_lsn,
            json.segments_removed,
            json.replayed_at_open
        ))?;
    }
    out.flush()
}
