//! Group commit at a glance: N writer threads for a few seconds, then
//! writes/s and records per sync. `cargo run --release --example group_commit -- 64 3`
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use factwal::{Batch, Config, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(8, |a| a.parse().expect("threads"));
    let seconds: u64 = args.next().map_or(3, |a| a.parse().expect("seconds"));
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        Arc::new(Store::open(Config::new(dir.path()).wal_bytes_max(64 << 20)).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|writer| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let value = vec![b'.'; 200];
                    store
                        .write(Batch::new().assert(
                            format!("s{}", seq % 1024),
                            format!("f{writer}"),
                            value,
                        ))
                        .unwrap();
                }
                seq
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats().unwrap();
    println!(
        "threads={threads} writes/s={:.0} records/group={:.1} groups/s={:.0}",
        writes as f64 / elapsed,
        stats.wal.records as f64 / stats.wal.groups as f64,
        stats.wal.groups as f64 / elapsed
    );
}
