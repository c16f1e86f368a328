//! The workload of `factwal load`, as its `--help` defines it, and the check
//! of a recovered store against the `ack` lines a crashed writer printed.
//! Shared by the kill -9 rounds (tests/crash_kill9.rs) and the kernel crash
//! rounds (tests/os_crash.rs).

use std::collections::{BTreeMap, HashMap};

/// A fact's key: (session, fact).
pub type Key = (String, String);

/// The store's facts, by key.
pub type Facts = BTreeMap<Key, Vec<u8>>;

pub const SESSIONS: u64 = 16;
pub const FACTS_PER_SESSION: u64 = 8;
pub const RETRACT_EVERY: u64 = 5;
pub const VALUE_BYTES: usize = 48;

/// The `factwal load` arguments that make this workload (threads and the
/// checkpoint interval are the caller's).
pub fn load_args() -> Vec<String> {
    let args = [
        "--sessions",
        &SESSIONS.to_string(),
        "--writes",
        "10000000",
        "--facts-per-session",
        &FACTS_PER_SESSION.to_string(),
        "--value-bytes",
        &VALUE_BYTES.to_string(),
        "--retract-every",
        &RETRACT_EVERY.to_string(),
    ]
    .map(String::from);
    args.to_vec()
}

/// Key and operation (true: assert) of write `seq`.
pub fn write_of(seq: u64) -> (Key, bool) {
    let key =
        (format!("s{}", seq % SESSIONS), format!("f{}", (seq / SESSIONS) % FACTS_PER_SESSION));
    (key, !seq.is_multiple_of(RETRACT_EVERY))
}

/// The value write `seq` asserts.
pub fn value_of(seq: u64) -> Vec<u8> {
    let (key, _) = write_of(seq);
    let mut value = format!("{}/{}/{seq}", key.0, key.1).into_bytes();
    if value.len() < VALUE_BYTES {
        value.resize(VALUE_BYTES, b'.');
    }
    value
}

/// One `ack <lsn> <session> <fact> <seq> <op>` line.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub lsn: u64,
    pub seq: u64,
}

/// Parses an ack line, checking that it names the write its seq stands for.
pub fn parse_ack(line: &str) -> Result<Ack, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let bad = || format!("not an ack line of this workload: {line:?}");
    if fields.len() != 6 || fields[0] != "ack" {
        return Err(bad());
    }
    let (lsn, seq) = (fields[1].parse().map_err(|_| bad())?, fields[4].parse().map_err(|_| bad())?);
    let ((session, fact), assert) = write_of(seq);
    let op = if assert { "assert" } else { "retract" };
    if (fields[2], fields[3], fields[5]) != (session.as_str(), fact.as_str(), op) {
        return Err(bad());
    }
    Ok(Ack { lsn, seq })
}

/// Checks what a store holds after a crash against what it held before the
/// writer started (`before`) and the writer's acks. `threads` writers each
/// had at most one write in flight. Every acknowledged write is there with
/// its exact value unless a later write of the same fact (acknowledged, or
/// possibly in flight) replaced it; no fact holds a value never written; the
/// last LSN is at least the highest acknowledged one. Returns the first
/// fact that breaks this, as a message.
pub fn check(
    recovered: &Facts,
    lsn_last: u64,
    before: &Facts,
    acks: &[Ack],
    threads: u64,
) -> Result<(), String> {
    let max_seq = acks.iter().map(|a| a.seq).max().unwrap_or(0);
    let acked: HashMap<u64, u64> = acks.iter().map(|a| (a.seq, a.lsn)).collect();
    // The acknowledged write with the highest LSN, per fact.
    let mut last_acked: HashMap<Key, (u64, u64)> = HashMap::new();
    for ack in acks {
        let (key, _) = write_of(ack.seq);
        let entry = last_acked.entry(key).or_insert((ack.lsn, ack.seq));
        if ack.lsn > entry.0 {
            *entry = (ack.lsn, ack.seq);
        }
    }
    // Writes handed out but not acknowledged: at most one in flight per
    // thread, all with seq below max_seq + threads.
    let in_flight = |key: &Key| -> Vec<u64> {
        (1..=max_seq + threads)
            .filter(|seq| !acked.contains_key(seq) && &write_of(*seq).0 == key)
            .collect()
    };
    let workload_keys: Vec<Key> = (0..SESSIONS)
        .flat_map(|session| {
            (0..FACTS_PER_SESSION).map(move |fact| (format!("s{session}"), format!("f{fact}")))
        })
        .collect();
    if let Some(key) = recovered.keys().find(|key| !workload_keys.contains(key)) {
        return Err(format!("{key:?} is in the store but no write of this workload names it"));
    }
    for key in workload_keys {
        let recovered = recovered.get(&key);
        let pending = in_flight(&key);
        let explained = match (recovered, last_acked.get(&key)) {
            (Some(value), Some(&(_, seq))) => {
                value == &value_of(seq)
                    || pending.iter().any(|&p| write_of(p).1 && value == &value_of(p))
            }
            (Some(value), None) => {
                before.get(&key) == Some(value)
                    || pending.iter().any(|&p| write_of(p).1 && value == &value_of(p))
            }
            (None, Some(&(_, seq))) => !write_of(seq).1 || pending.iter().any(|&p| !write_of(p).1),
            (None, None) => !before.contains_key(&key) || pending.iter().any(|&p| !write_of(p).1),
        };
        if !explained {
            return Err(format!(
                "{key:?} recovered as {:?}; last acknowledged write (lsn, seq) {:?}; before {:?}; in flight {pending:?}",
                recovered.map(|v| String::from_utf8_lossy(v).into_owned()),
                last_acked.get(&key),
                before.get(&key).map(|v| String::from_utf8_lossy(v).into_owned()),
            ));
        }
    }
    let acked_max = acks.iter().map(|a| a.lsn).max().unwrap_or(0);
    if lsn_last < acked_max {
        return Err(format!("last LSN {lsn_last} below an acknowledged {acked_max}"));
    }
    Ok(())
}
