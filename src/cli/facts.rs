//! `factwal facts`: every fact of the store, or of one session, as a
//! read-write open would give them, without changing a byte on disk.

use serde::Serialize;

use super::output::{json_value, plain_text, plain_value, Out};
use super::problem::{open_read_only, refusal};
use super::{CliError, StoreArgs};

/// Print every fact (read-only; works on a crashed store).
///
/// Prints `session fact value` lines, or JSON lines. Reads what a
/// read-write open would give (the WAL replayed in memory over
/// redb) and changes nothing: it works on a crashed store, but not while
/// another process holds it. A value that is not UTF-8 prints as
/// `base64:<base64>` (plain) or with `"encoding":"base64"` (JSON). When the
/// WAL is corrupted (and recovery_mode is not point-in-time), it prints
/// nothing and exits 2 with one line naming file, offset and LSN.
#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this session's facts.
    #[arg(long, value_name = "S")]
    session: Option<String>,
    /// One JSON object per line: {"session","fact","value"}, plus
    /// "encoding":"base64" when the value is not UTF-8.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct FactJson<'a> {
    session: &'a str,
    fact: &'a str,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
}

pub fn run(args: &FactsArgs) -> Result<(), CliError> {
    let store = open_read_only(&args.store)?;
    if let Some(error) = refusal(store.problem(), store.config()) {
        return Err(error);
    }
    let sessions = match &args.session {
        Some(session) => vec![session.clone()],
        None => store.sessions()?,
    };
    let mut out = Out::new();
    for session in &sessions {
        for (fact, bytes) in store.facts(session)? {
            let (value, encoding) = json_value(&bytes);
            if args.json {
                out.json(&FactJson { session, fact: &fact, value, encoding })?;
            } else {
                let (session, fact) = (plain_text(session, &[]), plain_text(&fact, &[]));
                match encoding {
                    Some(_) => out.line(format_args!("{session} {fact} base64:{value}"))?,
                    None => out.line(format_args!("{session} {fact} {}", plain_value(&value)))?,
                }
            }
        }
    }
    out.flush()
}
