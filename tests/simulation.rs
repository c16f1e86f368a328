//! Crash-at-every-I/O simulation of WAL + redb.
//!
//! For each seed, a random workload (writes, reads, checkpoints, closes and
//! reopens) runs once to count its mutating I/O operations, N. Then, for
//! every n in 1..=N, the same workload runs on a fresh simulated disk
//! (`factwal::testing::SimDisk`, real files underneath) that crashes at
//! operation n: every later operation fails. The disk then loses power (torn
//! last write, or all unsynced data dropped) or only the process dies, the
//! store is reopened on healthy I/O and checked against an in-memory model:
//! acknowledged <= recovered <= issued, batches atomic, LSNs dense, redb's
//! integrity check passes, and the next write continues the LSNs. Every third
//! point also runs with a single EIO or ENOSPC injected at operation n
//! instead of a crash, with the workload carrying on after errors. Every
//! fourth seed writes in direct mode, and one in four writes through
//! `write_async` (the commit thread leads, the ticket is waited for).
//!
//! `FACTWAL_SIM_SEEDS` (default 72) sets how many seeds run; a failure
//! prints the seed and crash point, and `FACTWAL_SIM_SEED` +
//! `FACTWAL_SIM_POINT` rerun exactly that case.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use factwal::testing::{apply_ops, read_all, FactMap, SimDisk, Tear};
use factwal::{Batch, CheckpointMode, Config, Op, Store};

/// splitmix64: small, seedable, good enough to pick workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
enum Step {
    Write(Batch),
    Checkpoint(CheckpointMode),
    Reopen,
    Read,
}

fn workload(seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let steps = 10 + rng.below(10);
    (0..steps)
        .map(|index| match rng.below(100) {
            0..=64 => {
                let mut batch = Batch::new();
                for _ in 0..1 + rng.below(3) {
                    let session = format!("s{}", rng.below(3));
                    let fact = format!("f{}", rng.below(4));
                    batch.push(match rng.below(10) {
                        0..=6 => {
                            // 40..400-byte values: segments (4 KiB) roll every
                            // few records, so folds remove sealed segments.
                            let mut value = format!("{seed}:{index}:").into_bytes();
                            value.resize(40 + rng.below(360) as usize, b'.');
                            Op::Assert { session, fact, value }
                        }
                        7..=8 => Op::Retract { session, fact },
                        _ => Op::DropSession { session },
                    });
                }
                Step::Write(batch)
            }
            65..=76 => Step::Checkpoint(CheckpointMode::Passive),
            77..=80 => Step::Checkpoint(CheckpointMode::Truncate),
            81..=85 => Step::Reopen,
            _ => Step::Read,
        })
        .collect()
}

/// Seeds in a normal `cargo test`: enough for more than 10,000 points.
const SEEDS_DEFAULT: u64 = 72;

fn apply(model: &mut FactMap, batch: &Batch) {
    apply_ops(model, batch.ops());
}

/// Every fourth seed runs in direct mode (one redb commit per write).
fn config(dir: &Path, seed: u64) -> Config {
    Config::new(dir.join("data"))
        .segment_bytes(4096)
        .max_record_bytes(2048)
        .wal_bytes_max(64 * 1024)
        .wal_enabled(seed % 4 != 3)
}

fn open(disk: &Arc<SimDisk>, dir: &Path, seed: u64) -> factwal::Result<Store> {
    Store::open_with(config(dir, seed), disk.wal_io(), disk.state_io())
}

/// What a run did: the batches the log holds, in LSN order from 1 (every
/// acknowledged one, plus any failed write that turned out to have reached
/// the disk), and the failed writes, each with the log length before it.
#[derive(Default)]
struct Run {
    log: Vec<Batch>,
    failed: Vec<(usize, Batch)>,
    acked: u64,
}

impl Run {
    /// A failed write that reached the disk shows up later, when the store
    /// reports one more LSN than the log: only the first failed write after
    /// the log's end can (later ones were refused before touching the disk).
    fn follow(&mut self, model: &mut FactMap, lsn_last: u64, seed: u64) {
        if lsn_last == self.log.len() as u64 + 1 {
            let (_, batch) =
                self.failed.iter().find(|(before, _)| *before == self.log.len()).unwrap_or_else(
                    || {
                        panic!(
                        "seed {seed}: LSN {lsn_last} appeared with no failed write to explain it"
                    )
                    },
                );
            apply(model, batch);
            self.log.push(batch.clone());
        }
        assert_eq!(lsn_last, self.log.len() as u64, "seed {seed}: LSNs are dense");
    }
}

/// Writes `batch`: for one seed in four through `write_async` (the commit
/// thread leads its group; the ticket is waited for), else with `write`.
fn write(store: &Store, batch: &Batch, seed: u64) -> factwal::Result<u64> {
    match seed % 4 {
        1 => store.write_async(batch.clone()).wait(),
        _ => store.write(batch.clone()),
    }
}

/// Runs the workload until its end, or (with `stop_on_error`) the first
/// error. Returns the run and the store, if one is open.
fn run(
    seed: u64,
    steps: &[Step],
    disk: &Arc<SimDisk>,
    dir: &Path,
    stop_on_error: bool,
    context: &str,
) -> (Run, Option<Store>) {
    let mut outcome = Run::default();
    let mut model = FactMap::new();
    let Ok(mut store) = open(disk, dir, seed) else { return (outcome, None) };
    for step in steps {
        let ok = match step {
            Step::Write(batch) => match write(&store, batch, seed) {
                Ok(lsn) => {
                    outcome.follow(&mut model, lsn - 1, seed);
                    apply(&mut model, batch);
                    outcome.log.push(batch.clone());
                    outcome.acked += 1;
                    true
                }
                Err(_) => {
                    outcome.failed.push((outcome.log.len(), batch.clone()));
                    false
                }
            },
            Step::Checkpoint(mode) => store.checkpoint(*mode).is_ok(),
            Step::Read => {
                outcome.follow(&mut model, store.stats().unwrap().lsn_last, seed);
                // Every acknowledged write is visible.
                assert_eq!(read_all(&store), model, "{context}: read after acknowledged writes");
                true
            }
            Step::Reopen => {
                let report = store.close();
                match open(disk, dir, seed) {
                    Ok(reopened) => {
                        store = reopened;
                        report.truncate.is_ok()
                    }
                    Err(_) => return (outcome, None),
                }
            }
        };
        if !ok && stop_on_error {
            break;
        }
    }
    (outcome, Some(store))
}

/// The states recovery may show: the log (every acknowledged batch, and any
/// failed one that already showed up), plus possibly the first failed batch
/// after the log's end (it may have reached the disk before its sync
/// failed). Any other failed batch must be absent.
fn allowed_states(run: &Run) -> Vec<(FactMap, u64)> {
    let mut model = FactMap::new();
    run.log.iter().for_each(|batch| apply(&mut model, batch));
    let mut allowed = vec![(model.clone(), run.log.len() as u64)];
    if let Some((_, batch)) = run.failed.iter().find(|(before, _)| *before == run.log.len()) {
        apply(&mut model, batch);
        allowed.push((model, run.log.len() as u64 + 1));
    }
    allowed
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    PowerLossTorn(usize),
    PowerLossDropUnsynced,
    ProcessCrash,
    Errno(i32),
}

struct Counters {
    points: AtomicU64,
    injected: AtomicU64,
    acked: AtomicU64,
}

fn check_point(seed: u64, steps: &[Step], point: u64, fault: Fault, counters: &Counters) {
    let context =
        format!("seed {seed} point {point} fault {fault:?} (rerun: FACTWAL_SIM_SEED={seed} FACTWAL_SIM_POINT={point})");
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let (run, store) = match fault {
        Fault::Errno(errno) => {
            // One operation, the n-th mutation, fails; the workload carries on.
            disk.fail(factwal::testing::Fault::nth_mutation(point, errno));
            run(seed, steps, &disk, dir.path(), false, &context)
        }
        _ => {
            disk.crash_at(point);
            run(seed, steps, &disk, dir.path(), true, &context)
        }
    };
    if let Some(store) = store {
        if disk.crashed() {
            store.simulate_crash();
        } else {
            // A run that met a fault may close uncleanly (the WAL stays for
            // the next open); what the reopen finds is what is checked.
            let _unchecked = store.close();
        }
    }
    counters.injected.fetch_add(disk.injected(), Ordering::Relaxed);
    match fault {
        Fault::PowerLossTorn(keep) => disk.power_loss(Tear::KeepPrefix(keep)).unwrap(),
        Fault::PowerLossDropUnsynced => disk.power_loss(Tear::DropUnsynced).unwrap(),
        Fault::ProcessCrash | Fault::Errno(_) => disk.process_restart(),
    }
    let store =
        open(&disk, dir.path(), seed).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let recovered = read_all(&store);
    let lsn_last = store.stats().unwrap().lsn_last;
    let allowed = allowed_states(&run);
    assert!(
        allowed.iter().any(|(facts, lsn)| *facts == recovered && *lsn == lsn_last),
        "{context}: recovered state (last LSN {lsn_last}) is not one of the allowed ones; acked {} failed {} in the log {}",
        run.acked,
        run.failed.len(),
        run.log.len()
    );
    let next = store.write(Batch::new().assert("after", "crash", b"x".to_vec()));
    assert_eq!(
        next.unwrap_or_else(|e| panic!("{context}: write after recovery: {e}")),
        lsn_last + 1,
        "{context}"
    );
    let report = store.close();
    assert!(report.is_clean(), "{context}: {report:?}");
    let mut db = redb::Database::open(config(dir.path(), seed).state_path()).unwrap();
    assert!(db.check_integrity().unwrap(), "{context}: redb integrity");
    counters.points.fetch_add(1, Ordering::Relaxed);
    counters.acked.fetch_add(run.acked, Ordering::Relaxed);
}

fn mutations_of(seed: u64, steps: &[Step]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let (run, store) =
        run(seed, steps, &disk, dir.path(), true, &format!("seed {seed} without a fault"));
    assert!(run.failed.is_empty(), "seed {seed}: a fault-free run failed a write");
    assert!(store.expect("fault-free run keeps its store").close().is_clean());
    disk.mutations()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn fault_for(seed: u64, point: u64) -> Fault {
    match (seed + point) % 3 {
        0 => Fault::PowerLossTorn(Rng(seed ^ point).below(600) as usize),
        1 => Fault::PowerLossDropUnsynced,
        _ => Fault::ProcessCrash,
    }
}

#[test]
fn crash_at_every_io_operation_loses_nothing_acknowledged() {
    let counters = Counters {
        points: AtomicU64::new(0),
        injected: AtomicU64::new(0),
        acked: AtomicU64::new(0),
    };
    if let (Some(seed), Some(point)) = (env_u64("FACTWAL_SIM_SEED"), env_u64("FACTWAL_SIM_POINT")) {
        let steps = workload(seed);
        check_point(seed, &steps, point, fault_for(seed, point), &counters);
        check_point(seed, &steps, point, Fault::Errno(5), &counters);
        check_point(seed, &steps, point, Fault::Errno(28), &counters);
        return;
    }
    let seeds = env_u64("FACTWAL_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let next_seed = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds {
                    break;
                }
                let steps = workload(seed);
                let total = mutations_of(seed, &steps);
                for point in 1..=total {
                    check_point(seed, &steps, point, fault_for(seed, point), &counters);
                    if point % 3 == 0 {
                        let errno = if point % 2 == 0 { 28 } else { 5 };
                        check_point(seed, &steps, point, Fault::Errno(errno), &counters);
                    }
                }
            });
        }
    });
    let points = counters.points.load(Ordering::Relaxed);
    println!(
        "simulation: {seeds} seeds, {points} crash/fault points, {} faults injected, {} acknowledged writes checked, 0 lost",
        counters.injected.load(Ordering::Relaxed),
        counters.acked.load(Ordering::Relaxed)
    );
    assert!(points >= 10_000 || seeds < SEEDS_DEFAULT, "only {points} points simulated");
}
