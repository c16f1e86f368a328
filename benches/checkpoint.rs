//! Checkpoint cost.
//!
//! - `fold/records`: one fold of a generation of N records (200-byte values,
//!   1,024 sessions x 16 facts) into redb, in one durable transaction;
//!   Criterion reports records/s.
//! - steady load (printed before the Criterion runs): writer threads paced at
//!   20,000 durable writes/s for `FACTWAL_STEADY_SECONDS` (default 12) with
//!   the loop on a 1 s interval; reports the achieved rate and the passes'
//!   p50/p95/max from `Store::checkpoint_stats`.
//!
//! Run: `cargo bench --bench checkpoint`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use factwal::state::{Generation, StateIo, StdStateIo, Tables};
use factwal::{Batch, Config, Store, StoreId};

const VALUE_BYTES: usize = 200;

fn generation(records: u64, lsn_first: u64) -> Generation {
    let mut generation = Generation::default();
    for i in 0..records {
        let lsn = lsn_first + i;
        let batch = Batch::new().assert(
            format!("session-{}", lsn % 1024),
            format!("fact-{}", (lsn / 1024) % 16),
            vec![b'v'; VALUE_BYTES],
        );
        generation.apply(lsn, batch, 260);
    }
    generation
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold");
    group.sample_size(10);
    for records in [20_000u64, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (backend, _) = StdStateIo.open_backend(&path).unwrap();
        let cache_bytes = Config::new(dir.path()).persistence.redb_cache_bytes as usize;
        let tables = Tables::create(&path, backend, cache_bytes, StoreId::new_random()).unwrap();
        let mut lsn_next = 1u64;
        group.throughput(Throughput::Elements(records));
        group.bench_with_input(BenchmarkId::new("records", records), &records, |b, &records| {
            b.iter_batched(
                || {
                    let generation = Arc::new(generation(records, lsn_next));
                    lsn_next += records;
                    generation
                },
                |generation| {
                    let lsn = generation.lsn_last;
                    let stats = tables.fold(&[generation], lsn, None).unwrap();
                    assert!(stats.facts_written > 0);
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Paced writers at `rate` writes/s for `seconds`, loop every second.
fn steady_load(rate: u64, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(Config::new(dir.path())).unwrap());
    store.start_checkpoint_loop(Duration::from_secs(1)).unwrap();
    let threads = 32u64;
    let per_thread_interval = Duration::from_nanos(1_000_000_000 * threads / rate);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|writer| {
            let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut next = Instant::now();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let batch = Batch::new().assert(
                        format!("session-{}", seq % 1024),
                        format!("fact-{writer}"),
                        vec![b'v'; VALUE_BYTES],
                    );
                    store.write(batch).unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                    next += per_thread_interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.checkpoint_stats();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "steady_load: target {rate} writes/s, achieved {:.0} writes/s over {elapsed:.1} s; passes n={} p50={:.1} ms p95={:.1} ms max={:.1} ms",
        written.load(Ordering::Relaxed) as f64 / elapsed,
        stats.n,
        ms(stats.p50),
        ms(stats.p95),
        ms(stats.max)
    );
    assert!(Arc::try_unwrap(store).unwrap().close().is_clean());
}

fn main() {
    let seconds =
        std::env::var("FACTWAL_STEADY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let filter_allows_steady = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .all(|a| "steady_load".contains(&a));
    if filter_allows_steady && !std::env::args().any(|a| a == "--list") {
        steady_load(20_000, seconds);
    }
    let mut criterion = Criterion::default().configure_from_args();
    fold(&mut criterion);
    criterion.final_summary();
}
