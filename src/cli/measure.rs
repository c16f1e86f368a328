//! Measuring per-write latency and throughput, shared by `demo`, `bench`
//! and `load`: a latency histogram, the disk floor, and writer threads
//! hammering a store for a fixed time.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use factwal::{Batch, Config, Store};

use super::output::{grouped, Progress};
use super::CliError;

/// Values of the latency measurements: the size of a typical small fact.
pub const VALUE_BYTES: usize = 200;
/// One floor write: the disk's block.
const FLOOR_BLOCK_BYTES: u64 = 4096;
/// Sub-buckets per power of two: latencies are kept within 1/64 (1.6 %).
const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// Latencies in nanoseconds, log-linear buckets: constant memory however
/// many writes (a `load` run may do millions), precise to 1.6 %.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        let buckets = (64 - SUB_BUCKET_BITS as usize + 1) * SUB_BUCKETS as usize;
        Histogram { counts: vec![0; buckets], total: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// Nearest-rank percentile (the middle of its bucket); zero when empty.
    pub fn percentile(&self, percent: f64) -> Duration {
        let rank = ((percent / 100.0 * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(bucket);
                return Duration::from_nanos(low + width / 2);
            }
        }
        Duration::ZERO
    }
}

/// Values below 64 ns have a bucket each; above, the power of two and the
/// next 6 bits pick the bucket.
fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS {
        return nanos as usize;
    }
    let exponent = 63 - nanos.leading_zeros();
    let sub = (nanos >> (exponent - SUB_BUCKET_BITS)) - SUB_BUCKETS;
    ((exponent - SUB_BUCKET_BITS + 1) as u64 * SUB_BUCKETS + sub) as usize
}

/// The lowest value of a bucket and how many values it spans.
fn bucket_range(bucket: usize) -> (u64, u64) {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return (bucket, 1);
    }
    let shift = bucket / SUB_BUCKETS - 1;
    ((SUB_BUCKETS + bucket % SUB_BUCKETS) << shift, 1 << shift)
}

/// What N writers did in a fixed time.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub writers: usize,
    pub elapsed: Duration,
    pub latency: Histogram,
}

impl Measurement {
    pub fn writes_per_s(&self) -> f64 {
        self.latency.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another slice of the same measurement.
    fn merge(&mut self, other: &Measurement) {
        self.elapsed += other.elapsed;
        self.latency.merge(&other.latency);
    }
}

/// What a measurement writes to.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Floor(&'a Floor),
    Store(&'a Store),
}

/// Measures each target with `writers` threads for `duration` in all, in
/// `rounds` turns (floor, WAL, direct, floor, ...), so that a disk whose
/// speed drifts (other tenants, write-back) weighs on every target alike.
/// One result per target, in order.
pub fn measure_in_turns(
    targets: &[Target<'_>],
    writers: usize,
    duration: Duration,
    rounds: u32,
    progress: &Progress,
) -> Result<Vec<Measurement>, CliError> {
    let slice = duration / rounds.max(1);
    let mut totals: Vec<Option<Measurement>> = vec![None; targets.len()];
    for _ in 0..rounds.max(1) {
        for (target, total) in targets.iter().zip(&mut totals) {
            let measured = match target {
                Target::Floor(floor) => floor.measure(writers, slice, progress)?,
                Target::Store(store) => measure_store(store, writers, slice, progress)?,
            };
            match total {
                Some(total) => total.merge(&measured),
                None => *total = Some(measured),
            }
        }
    }
    Ok(totals.into_iter().flatten().collect())
}

/// Runs `writers` threads calling `write(writer, iteration)` for `duration`,
/// timing each call, while the calling thread moves the progress bar.
fn run_writers<W>(
    writers: usize,
    duration: Duration,
    progress: &Progress,
    write: W,
) -> Result<Measurement, CliError>
where
    W: Fn(usize, u64) -> Result<(), CliError> + Sync,
{
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    progress.begin_slice();
    let outcomes = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|writer| {
                let (stop, done, write) = (&stop, &done, &write);
                scope.spawn(move || -> Result<Histogram, CliError> {
                    let mut latency = Histogram::default();
                    let mut iteration = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let begun = Instant::now();
                        let outcome = write(writer, iteration);
                        latency.record(begun.elapsed());
                        // One failing writer ends the measurement for all.
                        outcome.inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
                        iteration += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(latency)
                })
            })
            .collect();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
            let writes = done.load(Ordering::Relaxed);
            progress.set(started.elapsed().as_millis() as u64, || {
                format!("{} writes", grouped(writes))
            });
            std::thread::sleep(Duration::from_millis(50).min(duration));
        }
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().map(|thread| thread.join()).collect::<Vec<_>>()
    });
    let elapsed = started.elapsed();
    let mut latency = Histogram::default();
    for outcome in outcomes {
        let histogram = outcome.map_err(|_| super::thread_panicked("a writer thread"))??;
        latency.merge(&histogram);
    }
    Ok(Measurement { writers, elapsed, latency })
}

/// The disk floor: synchronous 4 KiB O_DSYNC writes into a preallocated,
/// zero-filled file, the cheapest durable write the disk allows. With N
/// writers, each thread writes its own region of the file.
pub struct Floor {
    path: PathBuf,
    file: File,
    file_bytes: u64,
}

impl Floor {
    /// Creates `floor.bin` in `dir`: `file_bytes` of zeros, synced, then
    /// reopened with O_DSYNC so that every write returns once durable.
    pub fn create(dir: &Path, file_bytes: u64) -> Result<Floor, CliError> {
        let path = dir.join("floor.bin");
        let fail = |what: &str, e| CliError::io(format!("{what} {}", path.display()), e);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| fail("create", e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < file_bytes {
            let chunk = (file_bytes - offset).min(zeros.len() as u64);
            file.write_all_at(&zeros[..chunk as usize], offset).map_err(|e| fail("fill", e))?;
            offset += chunk;
        }
        file.sync_all().map_err(|e| fail("sync", e))?;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&path)
            .map_err(|e| fail("open", e))?;
        Ok(Floor { path, file, file_bytes })
    }

    pub fn measure(
        &self,
        writers: usize,
        duration: Duration,
        progress: &Progress,
    ) -> Result<Measurement, CliError> {
        let blocks_per_writer = (self.file_bytes / FLOOR_BLOCK_BYTES / writers as u64).max(1);
        let block = vec![0xA5u8; FLOOR_BLOCK_BYTES as usize];
        run_writers(writers, duration, progress, |writer, iteration| {
            let block_index = writer as u64 * blocks_per_writer + iteration % blocks_per_writer;
            self.file
                .write_all_at(&block, block_index * FLOOR_BLOCK_BYTES)
                .map_err(|e| CliError::io(format!("write {}", self.path.display()), e))
        })
    }

    pub fn remove(self) -> Result<(), CliError> {
        drop(self.file);
        std::fs::remove_file(&self.path)
            .map_err(|e| CliError::io(format!("remove {}", self.path.display()), e))
    }
}

/// A fresh store in `dir` with default settings, in WAL or direct mode,
/// with the checkpoint loop running at `interval`.
pub fn open_store(dir: &Path, wal_enabled: bool, interval: Duration) -> Result<Store, CliError> {
    let store = Store::open(Config::new(dir).wal_enabled(wal_enabled))?;
    store.start_checkpoint_loop(interval)?;
    Ok(store)
}

/// `writers` threads each asserting 200-byte facts into `store` for
/// `duration`, over 1,024 sessions as a broker's requests would.
pub fn measure_store(
    store: &Store,
    writers: usize,
    duration: Duration,
    progress: &Progress,
) -> Result<Measurement, CliError> {
    run_writers(writers, duration, progress, |writer, iteration| {
        let mut value = format!("w{writer}/{iteration}/").into_bytes();
        value.resize(VALUE_BYTES, b'.');
        let session = format!("session-{}", (iteration * 7 + writer as u64) % 1024);
        let batch =
            Batch::new().assert(session, format!("fact-{writer}-{}", iteration % 16), value);
        store.write(batch).map(drop).map_err(CliError::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        // Every bucket starts where the previous one ended, and a value's
        // bucket contains it, within 1/64 of its size.
        let mut next_low = 0;
        for bucket in 0..Histogram::default().counts.len() - 1 {
            let (low, width) = bucket_range(bucket);
            assert_eq!(low, next_low, "bucket {bucket}");
            next_low = low + width;
        }
        for nanos in [0, 1, 63, 64, 65, 127, 128, 1_000, 412_345, 10_000_000_000, u64::MAX] {
            let (low, width) = bucket_range(bucket_of(nanos));
            assert!(low <= nanos && nanos - low < width, "{nanos}");
            assert!(width == 1 || width <= low / 32, "{nanos}");
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.percentile(50.0), Duration::ZERO);
        for micros in 1..=100 {
            histogram.record(Duration::from_micros(micros));
        }
        let close = |actual: Duration, micros: f64| {
            (actual.as_secs_f64() * 1e6 - micros).abs() < micros / 50.0
        };
        assert!(close(histogram.percentile(50.0), 50.0), "{:?}", histogram.percentile(50.0));
        assert!(close(histogram.percentile(99.0), 99.0), "{:?}", histogram.percentile(99.0));
        assert_eq!(histogram.count(), 100);
    }
}
