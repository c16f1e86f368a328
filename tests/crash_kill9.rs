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
//! The same rounds run with `load --async` too: two threads, each keeping
//! 16 writes in flight through `Store::write_async` and printing each ack
//! as its ticket resolves, with `wal_bytes_max` at one segment, so that
//! writes are held back in the line (and admitted by its thread after a
//! checkpoint pass) many times a second, and kills land there too.
//!
//! 50 rounds by default (20 with --async); `FACTWAL_KILL9_ROUNDS` sets more,
//! and `FACTWAL_KILL9_SEED` replays the kill timings of a failed run (the
//! seed is printed).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::acks::{self, Ack, Facts};
use factwal::{Config, Store};

/// How the writer writes: its `load` arguments, and how many of its writes
/// can be in flight at once (what an ack may be overtaken by).
struct Writers {
    args: &'static [&'static str],
    in_flight: u64,
    /// The store's configuration file.
    config: &'static str,
}

/// Four threads, each with one blocking write at a time.
const BLOCKING: Writers = Writers {
    args: &["--threads", "4"],
    in_flight: 4,
    config: "[persistence]\nsegment_bytes = 16384\nmax_record_bytes = 4096\n",
};
/// Two threads, each with 16 writes in flight through `write_async`, the
/// WAL full at one segment (back-pressure all the time).
const ASYNC: Writers = Writers {
    args: &["--threads", "2", "--async", "--in-flight", "16"],
    in_flight: 32,
    config: "[persistence]\nsegment_bytes = 16384\nmax_record_bytes = 4096\n\
             wal_bytes_max = 16384\n",
};

fn spawn_load(dir: &Path, config: &Path, writers: &Writers) -> Child {
    Command::new(env!("CARGO_BIN_EXE_factwal"))
        .args(["load", "--log", "off"])
        .args(writers.args)
        .args(acks::load_args())
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
fn round(dir: &Path, config: &Path, writers: &Writers, kill_after: Duration) -> Vec<Ack> {
    let mut child = spawn_load(dir, config, writers);
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if acks.is_empty() {
                let _ = sender.send(());
            }
            acks.push(acks::parse_ack(&line).unwrap());
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
fn check(store: &Store, before: &Facts, acks: &[Ack], in_flight: u64, context: &str) {
    let lsn_last = store.stats().unwrap().lsn_last;
    if let Err(problem) = acks::check(&state_of(store), lsn_last, before, acks, in_flight) {
        panic!("{context}: {problem}");
    }
}

fn state_of(store: &Store) -> Facts {
    let mut state = Facts::new();
    for session in store.sessions().unwrap() {
        for (fact, value) in store.facts(&session).unwrap() {
            state.insert((session.clone(), fact), value);
        }
    }
    state
}

#[test]
fn kill9_rounds_lose_no_acknowledged_write() {
    rounds("kill9", &BLOCKING, 50);
}

#[test]
fn kill9_rounds_of_async_writes_lose_no_acknowledged_write() {
    rounds("kill9 --async", &ASYNC, 20);
}

/// Runs the rounds with `writers`; `default_rounds` unless
/// `FACTWAL_KILL9_ROUNDS` says otherwise.
fn rounds(name: &str, writers: &Writers, default_rounds: u64) {
    let rounds: u64 = std::env::var("FACTWAL_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_rounds);
    let seed: u64 = std::env::var("FACTWAL_KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    println!(
        "{name}: {rounds} rounds, seed {seed} (FACTWAL_KILL9_SEED={seed} replays the kill timings)"
    );
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let config_path = temp.path().join("factwal.toml");
    std::fs::write(&config_path, writers.config).unwrap();
    let mut config = Config::from_file(&config_path).unwrap();
    config.persistence.data_dir = dir.clone();
    let mut state = Facts::new();
    let mut acked_total = 0;
    let started = Instant::now();
    let mut rng = seed | 1;
    for index in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(rng % 120);
        let acks = round(&dir, &config_path, writers, kill_after);
        acked_total += acks.len();
        let context =
            format!("round {index} (seed {seed}, killed {kill_after:?} after the first ack)");
        let store =
            Store::open(config.clone()).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        check(&store, &state, &acks, writers.in_flight, &context);
        state = state_of(&store);
        // Half the rounds leave the WAL for the next child to recover.
        if index % 2 == 0 {
            store.simulate_crash();
        } else {
            assert!(store.close().is_clean(), "{context}: close");
        }
    }
    println!(
        "{name}: {rounds} rounds, {acked_total} acknowledged writes checked, 0 lost, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
