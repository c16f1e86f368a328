//! kill -9 rounds against the real binary.
//!
//! Each round runs `factwal load` as a child process on the same data
//! directory (small segments, the checkpoint loop every few milliseconds, four
//! writer threads), reads its `ack` lines, and SIGKILLs it after a random
//! delay, so kills land during appends, group syncs, segment rolls, folds and
//! segment removal. The parent then reopens the store and checks it against
//! the acks: every acknowledged write is present with its exact value unless a
//! later write of the same fact (acknowledged or possibly in flight) replaced
//! it; no fact holds a value that was never written; and the next round goes
//! on in the same directory. `load` writes one operation per batch;
//! multi-operation atomicity is checked by tests/simulation.rs.
//!
//! 50 rounds by default; `FACTWAL_KILL9_ROUNDS` sets more, and
//! `FACTWAL_KILL9_SEED` replays the kill timings of a failed run (the seed is
//! printed).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use factwal::{Config, Store};

const SESSIONS: u64 = 16;
const FACTS_PER_SESSION: u64 = 8;
const RETRACT_EVERY: u64 = 5;
const VALUE_BYTES: usize = 48;
const THREADS: u64 = 4;

/// Key and operation of write `seq`, as `factwal load --help` defines them.
fn write_of(seq: u64) -> ((String, String), bool) {
    let key = (format!("s{}", seq % SESSIONS), format!("f{}", (seq / SESSIONS) % FACTS_PER_SESSION));
    (key, !seq.is_multiple_of(RETRACT_EVERY))
}

fn value_of(seq: u64) -> Vec<u8> {
    let (key, _) = write_of(seq);
    let mut value = format!("{}/{}/{seq}", key.0, key.1).into_bytes();
    if value.len() < VALUE_BYTES {
        value.resize(VALUE_BYTES, b'.');
    }
    value
}

struct Ack {
    lsn: u64,
    seq: u64,
}

fn parse_ack(line: &str) -> Ack {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 6, "ack line: {line:?}");
    assert_eq!(fields[0], "ack", "{line:?}");
    let (lsn, seq) = (fields[1].parse().unwrap(), fields[4].parse().unwrap());
    let ((session, fact), assert) = write_of(seq);
    assert_eq!((fields[2], fields[3]), (session.as_str(), fact.as_str()), "{line:?}");
    assert_eq!(fields[5], if assert { "assert" } else { "retract" }, "{line:?}");
    Ack { lsn, seq }
}

fn spawn_load(dir: &Path, config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_factwal"))
        .args(["load", "--log", "off", "--sessions", &SESSIONS.to_string(), "--writes", "10000000"])
        .args(["--facts-per-session", &FACTS_PER_SESSION.to_string(), "--value-bytes", &VALUE_BYTES.to_string()])
        .args(["--threads", &THREADS.to_string(), "--retract-every", &RETRACT_EVERY.to_string()])
        .args(["--checkpoint-interval-ms", "3", "--config"])
        .arg(config)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn factwal load")
}

/// Runs one child, kills it `kill_after` after its first ack, and returns
/// every ack it printed.
fn round(dir: &Path, config: &Path, kill_after: Duration) -> Vec<Ack> {
    let mut child = spawn_load(dir, config);
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if acks.is_empty() {
                let _ = sender.send(());
            }
            acks.push(parse_ack(&line));
        }
        acks
    });
    let first = receiver.recv_timeout(Duration::from_secs(30));
    if first.is_ok() {
        std::thread::sleep(kill_after);
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    let acks = reader.join().unwrap();
    assert!(first.is_ok(), "the child acknowledged nothing within 30 s");
    acks
}

/// Checks the reopened store against the previous state and this round's acks.
fn check(store: &Store, before: &BTreeMap<(String, String), Vec<u8>>, acks: &[Ack], context: &str) {
    let max_seq = acks.iter().map(|a| a.seq).max().unwrap_or(0);
    let acked: HashMap<u64, u64> = acks.iter().map(|a| (a.seq, a.lsn)).collect();
    // The acknowledged write with the highest LSN, per fact.
    let mut last_acked: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for ack in acks {
        let (key, _) = write_of(ack.seq);
        let entry = last_acked.entry(key).or_insert((ack.lsn, ack.seq));
        if ack.lsn > entry.0 {
            *entry = (ack.lsn, ack.seq);
        }
    }
    // Writes handed out but not acknowledged: at most one in flight per
    // thread, all with seq below max_seq + THREADS.
    let in_flight = |key: &(String, String)| -> Vec<u64> {
        (1..=max_seq + THREADS).filter(|seq| !acked.contains_key(seq) && &write_of(*seq).0 == key).collect()
    };
    for session in 0..SESSIONS {
        for fact in 0..FACTS_PER_SESSION {
            let key = (format!("s{session}"), format!("f{fact}"));
            let recovered = store.fact(&key.0, &key.1).unwrap();
            let pending = in_flight(&key);
            let explained = match (&recovered, last_acked.get(&key)) {
                (Some(value), Some(&(_, seq))) => {
                    value == &value_of(seq) || pending.iter().any(|&p| write_of(p).1 && value == &value_of(p))
                }
                (Some(value), None) => {
                    before.get(&key) == Some(value) || pending.iter().any(|&p| write_of(p).1 && value == &value_of(p))
                }
                (None, Some(&(_, seq))) => !write_of(seq).1 || pending.iter().any(|&p| !write_of(p).1),
                (None, None) => !before.contains_key(&key) || pending.iter().any(|&p| !write_of(p).1),
            };
            assert!(
                explained,
                "{context}: {key:?} recovered as {:?}; last acknowledged write {:?}; in flight {pending:?}",
                recovered.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                last_acked.get(&key)
            );
        }
    }
    let lsn_last = store.stats().unwrap().lsn_last;
    let acked_max = acks.iter().map(|a| a.lsn).max().unwrap_or(0);
    assert!(lsn_last >= acked_max, "{context}: last LSN {lsn_last} below an acknowledged {acked_max}");
}

fn state_of(store: &Store) -> BTreeMap<(String, String), Vec<u8>> {
    let mut state = BTreeMap::new();
    for session in store.sessions().unwrap() {
        for (fact, value) in store.facts(&session).unwrap() {
            state.insert((session.clone(), fact), value);
        }
    }
    state
}

#[test]
fn kill9_rounds_lose_no_acknowledged_write() {
    let rounds: u64 = std::env::var("FACTWAL_KILL9_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let seed: u64 = std::env::var("FACTWAL_KILL9_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("kill9: {rounds} rounds, seed {seed} (FACTWAL_KILL9_SEED={seed} replays the kill timings)");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let config_path = temp.path().join("factwal.toml");
    std::fs::write(&config_path, "[persistence]\nsegment_bytes = 16384\nmax_record_bytes = 4096\n").unwrap();
    let config = Config::from_file(&config_path).unwrap();
    let config =
        Config { persistence: factwal::PersistenceConfig { data_dir: dir.clone(), ..config.persistence }, ..config };
    let mut state = BTreeMap::new();
    let mut acked_total = 0;
    let started = Instant::now();
    let mut rng = seed | 1;
    for index in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(rng % 120);
        let acks = round(&dir, &config_path, kill_after);
        acked_total += acks.len();
        let context = format!("round {index} (seed {seed}, killed {kill_after:?} after the first ack)");
        let store = Store::open(config.clone()).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        check(&store, &state, &acks, &context);
        state = state_of(&store);
        // Half the rounds leave the WAL for the next child to recover.
        if index % 2 == 0 {
            store.simulate_crash();
        } else {
            assert!(store.close().is_clean(), "{context}: close");
        }
    }
    println!(
        "kill9: {rounds} rounds, {acked_total} acknowledged writes checked, 0 lost, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
