//! Per-write latency and throughput: the disk floor, WAL mode and direct mode,
//! side by side in one run on the same disk (200-byte values).
//!
//! - `floor/4k_odsync`: a synchronous 4 KiB write into a preallocated,
//!   zero-filled file opened with O_DSYNC: what the disk physically allows.
//! - `single_writer/{wal,direct}`: one thread, one assert per write.
//! - `throughput/{wal,direct}/{1,8,64}`: that many writer threads, each doing
//!   one write per iteration; Criterion reports writes/s.
//!
//! Run: `cargo bench --bench write_latency`. Set `FACTWAL_BENCH_DIR` to put
//! the files on another disk (default: the system temp dir).

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use factwal::{Batch, Config, Store};

const VALUE_BYTES: usize = 200;
const FLOOR_FILE_BYTES: u64 = 64 << 20;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("FACTWAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn open_store(dir: &std::path::Path, wal_enabled: bool) -> Store {
    // Back-pressure folds the WAL every 64 MiB, as a checkpoint loop would.
    let config = Config::new(dir).wal_enabled(wal_enabled).wal_bytes_max(64 << 20);
    Store::open(config).unwrap()
}

fn batch(writer: usize, seq: u64) -> Batch {
    let mut value = format!("w{writer}/{seq}/").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    Batch::new().assert(
        format!("session-{}", seq % 1024),
        format!("fact-{writer}-{}", seq % 16),
        value,
    )
}

fn floor(c: &mut Criterion) {
    let dir = bench_dir();
    let path = dir.path().join("floor");
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..FLOOR_FILE_BYTES / (1 << 20) {
        file.write_all_at(&zeros, chunk << 20).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let file = OpenOptions::new().write(true).custom_flags(libc::O_DSYNC).open(&path).unwrap();
    let block = vec![0xA5u8; 4096];
    let mut offset = 0u64;
    c.bench_function("floor/4k_odsync", |b| {
        b.iter(|| {
            file.write_all_at(&block, offset).unwrap();
            offset = (offset + 4096) % FLOOR_FILE_BYTES;
        })
    });
}

fn single_writer(c: &mut Criterion) {
    let mut group = c.benchmark_group("single_writer");
    for (name, wal_enabled) in [("wal", true), ("direct", false)] {
        let dir = bench_dir();
        let store = open_store(dir.path(), wal_enabled);
        let mut seq = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                let lsn = store.write(batch(0, seq)).unwrap();
                assert!(lsn > 0);
            })
        });
        assert!(store.close().is_clean());
    }
    group.finish();
}

/// Writer threads that each perform the number of writes they are sent and
/// report back when done, so thread start-up stays out of the measurement.
struct Writers {
    orders: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(store: Arc<Store>, threads: usize) -> Writers {
        let (done_tx, done) = mpsc::channel();
        let mut orders = Vec::new();
        let mut handles = Vec::new();
        for writer in 0..threads {
            let (order_tx, order_rx) = mpsc::channel::<u64>();
            let store = store.clone();
            let done_tx = done_tx.clone();
            orders.push(order_tx);
            handles.push(std::thread::spawn(move || {
                let mut seq = 0u64;
                for writes in order_rx {
                    for _ in 0..writes {
                        seq += 1;
                        assert!(store.write(batch(writer, seq)).unwrap() > 0);
                    }
                    done_tx.send(()).unwrap();
                }
            }));
        }
        Writers { orders, done, handles }
    }

    fn run(&self, writes_per_thread: u64) -> Duration {
        let started = Instant::now();
        for order in &self.orders {
            order.send(writes_per_thread).unwrap();
        }
        for _ in &self.orders {
            self.done.recv().unwrap();
        }
        started.elapsed()
    }

    fn stop(self) {
        drop(self.orders);
        for handle in self.handles {
            handle.join().unwrap();
        }
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group.measurement_time(Duration::from_secs(8));
    for (name, wal_enabled) in [("wal", true), ("direct", false)] {
        for threads in [1usize, 8, 64] {
            let dir = bench_dir();
            let store = Arc::new(open_store(dir.path(), wal_enabled));
            let writers = Writers::start(store.clone(), threads);
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, _| {
                b.iter_custom(|iterations| writers.run(iterations))
            });
            writers.stop();
            assert!(Arc::try_unwrap(store).unwrap().close().is_clean());
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = floor, single_writer, throughput
}
criterion_main!(benches);
