//! One way of writing, run for a fixed time on a fresh directory; prints one
//! JSON line with writes/s, per-write latency (p50, p99, submit to ack) and
//! CPU seconds per 100,000 writes (getrusage of the whole process, user +
//! system, over the timed window: factwal's commit and checkpoint threads
//! and okaywal's checkpoint thread count too).
//!
//! Ways (N = writers or writes in flight, any number):
//!   floor                    one thread: pwrite 216 bytes + fdatasync, in a
//!                            loop, on a zero-filled preallocated file
//!   okaywal-N                N threads: begin_entry, write_chunk, commit
//!   factwal-N                N threads: Store::write
//!   factwal-async-Krt-N      a tokio runtime with K worker threads (K = 1:
//!                            a current_thread runtime), N tasks each looping
//!                            `store.write_async(batch).await`
//!   factwal-pipelined-N      one thread keeping N write_async tickets in
//!                            flight: wait on the oldest, submit a new one
//!
//! Usage: okaywal_compare WAY [--seconds 3] [--dir /tmp] [--value-bytes 200]
//!        [--sessions 64] [--floor-bytes 216] [--keep]

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use factwal::{Batch, Config, Store};

/// Bytes of a factwal record header (docs/FORMAT.md; `wal::format::
/// RECORD_HEADER_BYTES`, private without the `testing` feature).
const FACTWAL_RECORD_HEADER_BYTES: usize = 32;
/// Bytes okaywal adds around an entry of one chunk (its README's format):
/// new-entry marker 1 + entry id 8 + chunk marker 1 + length 4 + CRC 4 +
/// end-of-entry marker 1.
const OKAYWAL_ENTRY_OVERHEAD_BYTES: usize = 19;
/// Facts per session, as `factwal load` uses by default.
const FACTS_PER_SESSION: u64 = 16;
/// Checkpoint interval, as `factwal load` uses by default.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// Size of the floor's preallocated file (wrapped around if ever filled).
const FLOOR_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
enum Way {
    Floor,
    Okaywal { threads: usize },
    Factwal { threads: usize },
    FactwalAsync { workers: usize, tasks: usize },
    FactwalPipelined { in_flight: usize },
}

fn parse_way(name: &str) -> Option<Way> {
    let number = |text: &str| text.parse::<usize>().ok().filter(|&n| n > 0);
    if name == "floor" {
        return Some(Way::Floor);
    }
    if let Some(rest) = name.strip_prefix("okaywal-") {
        return number(rest).map(|threads| Way::Okaywal { threads });
    }
    if let Some(rest) = name.strip_prefix("factwal-pipelined-") {
        return number(rest).map(|in_flight| Way::FactwalPipelined { in_flight });
    }
    if let Some(rest) = name.strip_prefix("factwal-async-") {
        let (workers, tasks) = rest.split_once("rt-")?;
        return Some(Way::FactwalAsync { workers: number(workers)?, tasks: number(tasks)? });
    }
    if let Some(rest) = name.strip_prefix("factwal-") {
        return number(rest).map(|threads| Way::Factwal { threads });
    }
    None
}

#[derive(Debug, Clone)]
struct Options {
    way_name: String,
    way: Way,
    seconds: f64,
    dir: PathBuf,
    value_bytes: usize,
    sessions: u64,
    floor_bytes: usize,
    keep: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: okaywal_compare WAY [--seconds S] [--dir DIR] [--value-bytes B] [--sessions N] \
         [--floor-bytes B] [--keep]\n\
         WAY: floor | okaywal-N | factwal-N | factwal-async-Krt-N | factwal-pipelined-N"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let Some(way_name) = args.next() else { usage() };
    if way_name == "-h" || way_name == "--help" {
        usage();
    }
    let Some(way) = parse_way(&way_name) else {
        eprintln!("unknown way {way_name:?}");
        usage()
    };
    let mut options = Options {
        way_name,
        way,
        seconds: 3.0,
        dir: std::env::temp_dir(),
        value_bytes: 200,
        sessions: 64,
        floor_bytes: 216,
        keep: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--keep" {
            options.keep = true;
            continue;
        }
        let Some(value) = args.next() else { usage() };
        let bad = |what: &str| -> ! {
            eprintln!("bad {what}: {value:?}");
            usage()
        };
        match flag.as_str() {
            "--seconds" => {
                options.seconds = value
                    .parse()
                    .ok()
                    .filter(|&s: &f64| s > 0.0)
                    .unwrap_or_else(|| bad("--seconds"))
            }
            "--dir" => options.dir = PathBuf::from(&value),
            "--value-bytes" => {
                options.value_bytes = value.parse().unwrap_or_else(|_| bad("--value-bytes"))
            }
            "--sessions" => {
                options.sessions =
                    value.parse().ok().filter(|&n: &u64| n > 0).unwrap_or_else(|| bad("--sessions"))
            }
            "--floor-bytes" => {
                options.floor_bytes = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .unwrap_or_else(|| bad("--floor-bytes"))
            }
            _ => {
                eprintln!("unknown flag {flag:?}");
                usage()
            }
        }
    }
    options
}

/// What every way shares: the write counter (sessions round-robin), the
/// stop flag, and the payload.
struct Workload {
    seq: AtomicU64,
    stop: AtomicBool,
    sessions: u64,
    value_bytes: usize,
}

impl Workload {
    fn new(options: &Options) -> Workload {
        Workload {
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sessions: options.sessions,
            value_bytes: options.value_bytes,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The next write's batch: one assert on session `s<seq % N>`, fact
    /// `f<(seq / N) % 16>`, value `s<i>/f<j>/<seq>` padded with `.` to B
    /// bytes (`factwal load`'s workload).
    fn next_batch(&self) -> Batch {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        batch_for(seq, self.sessions, self.value_bytes)
    }
}

fn batch_for(seq: u64, sessions: u64, value_bytes: usize) -> Batch {
    let session = seq % sessions;
    let fact = (seq / sessions) % FACTS_PER_SESSION;
    let mut value = format!("s{session}/f{fact}/{seq}").into_bytes();
    if value.len() < value_bytes {
        value.resize(value_bytes, b'.');
    }
    Batch::new().assert(format!("s{session}"), format!("f{fact}"), value)
}

/// user + system CPU seconds of the whole process, and its voluntary and
/// involuntary context switches.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_s: f64,
    nvcsw: i64,
    nivcsw: i64,
}

fn usage_now() -> Usage {
    // SAFETY: getrusage writes a `rusage` into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        nvcsw: usage.ru_nvcsw as i64,
        nivcsw: usage.ru_nivcsw as i64,
    }
}

/// One run's raw outcome: per-write latencies in nanoseconds, the timed
/// window, and what the way adds (syncs, bytes per write).
struct Outcome {
    latencies_ns: Vec<u64>,
    elapsed: Duration,
    usage_before: Usage,
    usage_after: Usage,
    /// Syncs (factwal: groups) during the run, where known.
    syncs: Option<u64>,
    /// Bytes each write puts in the log (header and framing included).
    bytes_per_write: usize,
    extra: Vec<(&'static str, String)>,
}

/// Times a window: usage before, the clock, then `run` until it returns.
struct Window {
    started: Instant,
    usage_before: Usage,
}

impl Window {
    fn open() -> Window {
        let usage_before = usage_now();
        Window { started: Instant::now(), usage_before }
    }

    fn close(self) -> (Duration, Usage, Usage) {
        let elapsed = self.started.elapsed();
        (elapsed, self.usage_before, usage_now())
    }
}

/// Sleeps the run's length, then raises the stop flag.
fn stop_after(workload: &Workload, seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    workload.stop.store(true, Ordering::Relaxed);
}

fn elapsed_ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

fn main() {
    let options = parse_args();
    fs::create_dir_all(&options.dir).unwrap_or_else(|e| fail("create --dir", e));
    let run_dir = options.dir.join(format!("okc-{}-{}", options.way_name, std::process::id()));
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir).unwrap_or_else(|e| fail("clear the run directory", e));
    }
    fs::create_dir_all(&run_dir).unwrap_or_else(|e| fail("create the run directory", e));
    let outcome = match options.way.clone() {
        Way::Floor => floor(&options, &run_dir),
        Way::Okaywal { threads } => okaywal_threads(&options, &run_dir, threads),
        Way::Factwal { threads } => factwal_threads(&options, &run_dir, threads),
        Way::FactwalAsync { workers, tasks } => factwal_async(&options, &run_dir, workers, tasks),
        Way::FactwalPipelined { in_flight } => factwal_pipelined(&options, &run_dir, in_flight),
    };
    if !options.keep {
        let _ = fs::remove_dir_all(&run_dir);
    }
    println!("{}", report(&options, outcome));
}

fn fail(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("okaywal_compare: {what}: {error}");
    std::process::exit(1)
}

fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1e6
}

fn report(options: &Options, mut outcome: Outcome) -> String {
    outcome.latencies_ns.sort_unstable();
    let writes = outcome.latencies_ns.len() as u64;
    let seconds = outcome.elapsed.as_secs_f64();
    let cpu_s = outcome.usage_after.cpu_s - outcome.usage_before.cpu_s;
    let per_write = |x: f64| if writes == 0 { f64::NAN } else { x / writes as f64 };
    let mut fields: Vec<(&str, String)> = vec![
        ("way", format!("\"{}\"", options.way_name)),
        ("seconds", format!("{seconds:.3}")),
        ("writes", writes.to_string()),
        ("writes_per_s", format!("{:.1}", writes as f64 / seconds)),
        ("p50_ms", format!("{:.4}", percentile_ms(&outcome.latencies_ns, 50.0))),
        ("p99_ms", format!("{:.4}", percentile_ms(&outcome.latencies_ns, 99.0))),
        ("max_ms", format!("{:.4}", percentile_ms(&outcome.latencies_ns, 100.0))),
        ("cpu_s", format!("{cpu_s:.4}")),
        ("cpu_s_per_100k", format!("{:.4}", per_write(cpu_s) * 100_000.0)),
        (
            "vcsw_per_write",
            format!(
                "{:.3}",
                per_write((outcome.usage_after.nvcsw - outcome.usage_before.nvcsw) as f64)
            ),
        ),
        (
            "ivcsw_per_write",
            format!(
                "{:.3}",
                per_write((outcome.usage_after.nivcsw - outcome.usage_before.nivcsw) as f64)
            ),
        ),
        ("bytes_per_write", outcome.bytes_per_write.to_string()),
    ];
    if let Some(syncs) = outcome.syncs {
        fields.push(("syncs", syncs.to_string()));
        fields.push((
            "writes_per_sync",
            format!("{:.2}", per_write(1.0).recip() / syncs.max(1) as f64),
        ));
    }
    fields.extend(outcome.extra.iter().map(|(k, v)| (*k, v.clone())));
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(", "))
}

// ---------------------------------------------------------------- floor

fn floor(options: &Options, run_dir: &Path) -> Outcome {
    let path = run_dir.join("floor.log");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| fail("create the floor file", e));
    // Zeros written, not fallocated, as factwal and okaywal preallocate.
    let zeros = vec![0u8; 1 << 20];
    for offset in (0..FLOOR_FILE_BYTES).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset).unwrap_or_else(|e| fail("preallocate", e));
    }
    file.sync_all().unwrap_or_else(|e| fail("sync the preallocated file", e));
    File::open(run_dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| fail("sync the directory", e));

    let record = vec![b'r'; options.floor_bytes];
    let workload = Workload::new(options);
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut offset = 0u64;
    let window = Window::open();
    std::thread::scope(|scope| {
        scope.spawn(|| stop_after(&workload, options.seconds));
        while !workload.stopped() {
            let begun = Instant::now();
            if offset + record.len() as u64 > FLOOR_FILE_BYTES {
                offset = 0;
            }
            file.write_all_at(&record, offset).unwrap_or_else(|e| fail("write", e));
            file.sync_data().unwrap_or_else(|e| fail("fdatasync", e));
            offset += record.len() as u64;
            latencies.push(elapsed_ns(begun));
        }
    });
    let (elapsed, usage_before, usage_after) = window.close();
    let syncs = latencies.len() as u64;
    Outcome {
        latencies_ns: latencies,
        elapsed,
        usage_before,
        usage_after,
        syncs: Some(syncs),
        bytes_per_write: options.floor_bytes,
        extra: vec![],
    }
}

// ---------------------------------------------------------------- okaywal

/// Recovers nothing, and checkpoints by doing nothing: the WAL's segments
/// are recycled as soon as okaywal hands them over.
#[derive(Debug)]
struct NoopManager;

impl okaywal::LogManager for NoopManager {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: okaywal::EntryId,
        _checkpointed_entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// factwal's payload bytes for this workload's typical write, measured by
/// writing one such batch to a scratch store and reading its unfolded bytes.
fn factwal_payload_bytes(options: &Options, run_dir: &Path) -> usize {
    let dir = run_dir.join("calibrate");
    let store =
        Store::open(Config::new(&dir)).unwrap_or_else(|e| fail("open the scratch store", e));
    // A two-digit session, as most of them are with 64 sessions.
    let seq = options.sessions.min(10).max(options.sessions / 2);
    store
        .write(batch_for(seq, options.sessions, options.value_bytes))
        .unwrap_or_else(|e| fail("write to the scratch store", e));
    let bytes = store.stats().unwrap_or_else(|e| fail("stats", e)).unfolded.bytes;
    let _ = store.close();
    let _ = fs::remove_dir_all(&dir);
    bytes as usize
}

fn okaywal_threads(options: &Options, run_dir: &Path, threads: usize) -> Outcome {
    // An entry of one chunk, as many bytes in the log as factwal's record.
    let payload = factwal_payload_bytes(options, run_dir);
    let entry_bytes = payload + FACTWAL_RECORD_HEADER_BYTES;
    let chunk_bytes = entry_bytes.saturating_sub(OKAYWAL_ENTRY_OVERHEAD_BYTES).max(1);
    let log = okaywal::WriteAheadLog::recover(run_dir.join("okaywal"), NoopManager)
        .unwrap_or_else(|e| fail("open okaywal", e));
    let workload = Workload::new(options);
    let barrier = Barrier::new(threads + 1);
    let (latencies, window) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (log, workload, barrier) = (&log, &workload, &barrier);
                scope.spawn(move || {
                    let mut chunk = vec![b'.'; chunk_bytes];
                    let mut latencies = Vec::with_capacity(1 << 12);
                    barrier.wait();
                    while !workload.stopped() {
                        let seq = workload.seq.fetch_add(1, Ordering::Relaxed) + 1;
                        let tag = seq.to_le_bytes();
                        let n = tag.len().min(chunk.len());
                        chunk[..n].copy_from_slice(&tag[..n]);
                        let begun = Instant::now();
                        let mut entry =
                            log.begin_entry().unwrap_or_else(|e| fail("begin_entry", e));
                        entry.write_chunk(&chunk).unwrap_or_else(|e| fail("write_chunk", e));
                        entry.commit().unwrap_or_else(|e| fail("commit", e));
                        latencies.push(elapsed_ns(begun));
                    }
                    latencies
                })
            })
            .collect();
        barrier.wait();
        let window = Window::open();
        stop_after(&workload, options.seconds);
        let latencies: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("an okaywal writer panicked"))
            .collect();
        (latencies, window)
    });
    let (elapsed, usage_before, usage_after) = window.close();
    log.shutdown().unwrap_or_else(|e| fail("shut okaywal down", e));
    Outcome {
        latencies_ns: latencies,
        elapsed,
        usage_before,
        usage_after,
        syncs: None,
        bytes_per_write: chunk_bytes + OKAYWAL_ENTRY_OVERHEAD_BYTES,
        extra: vec![("chunk_bytes", chunk_bytes.to_string())],
    }
}

// ---------------------------------------------------------------- factwal

/// Opens a fresh store and starts its checkpoint loop, as `factwal load`
/// does by default (every 100 ms, and early past the trigger).
fn open_store(run_dir: &Path) -> Store {
    let store = Store::open(Config::new(run_dir.join("store")))
        .unwrap_or_else(|e| fail("open the store", e));
    store
        .start_checkpoint_loop(CHECKPOINT_INTERVAL)
        .unwrap_or_else(|e| fail("start the checkpoint loop", e));
    store
}

/// Closes the store after the window; the groups (syncs) it made in it.
fn finish_store(store: Store, groups_before: u64) -> u64 {
    let groups = store.stats().unwrap_or_else(|e| fail("stats", e)).wal.groups - groups_before;
    let report = store.close();
    if let Err(error) = report.truncate.and(report.redb_close) {
        fail("close the store", error);
    }
    groups
}

fn factwal_outcome(
    options: &Options,
    run_dir: &Path,
    store: Store,
    groups_before: u64,
    latencies: Vec<u64>,
    (elapsed, usage_before, usage_after): (Duration, Usage, Usage),
    extra: Vec<(&'static str, String)>,
) -> Outcome {
    let groups = finish_store(store, groups_before);
    let payload = factwal_payload_bytes(options, run_dir);
    Outcome {
        latencies_ns: latencies,
        elapsed,
        usage_before,
        usage_after,
        syncs: Some(groups),
        bytes_per_write: payload + FACTWAL_RECORD_HEADER_BYTES,
        extra,
    }
}

fn groups(store: &Store) -> u64 {
    store.stats().unwrap_or_else(|e| fail("stats", e)).wal.groups
}

fn factwal_threads(options: &Options, run_dir: &Path, threads: usize) -> Outcome {
    let store = open_store(run_dir);
    let workload = Workload::new(options);
    let barrier = Barrier::new(threads + 1);
    let before = groups(&store);
    let (latencies, window) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, workload, barrier) = (&store, &workload, &barrier);
                scope.spawn(move || {
                    let mut latencies = Vec::with_capacity(1 << 12);
                    barrier.wait();
                    while !workload.stopped() {
                        let batch = workload.next_batch();
                        let begun = Instant::now();
                        store.write(batch).unwrap_or_else(|e| fail("write", e));
                        latencies.push(elapsed_ns(begun));
                    }
                    latencies
                })
            })
            .collect();
        barrier.wait();
        let window = Window::open();
        stop_after(&workload, options.seconds);
        let latencies: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("a factwal writer panicked"))
            .collect();
        (latencies, window)
    });
    factwal_outcome(options, run_dir, store, before, latencies, window.close(), vec![])
}

fn factwal_async(options: &Options, run_dir: &Path, workers: usize, tasks: usize) -> Outcome {
    let runtime = match workers {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
        }
    }
    .unwrap_or_else(|e| fail("build the runtime", e));
    let store = Arc::new(open_store(run_dir));
    let workload = Arc::new(Workload::new(options));
    let before = groups(&store);
    let seconds = options.seconds;
    let (latencies, window) = runtime.block_on(async {
        let window = Window::open();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (store, workload) = (Arc::clone(&store), Arc::clone(&workload));
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(1 << 10);
                    while !workload.stopped() {
                        let batch = workload.next_batch();
                        let begun = Instant::now();
                        store.write_async(batch).await.unwrap_or_else(|e| fail("write_async", e));
                        latencies.push(elapsed_ns(begun));
                    }
                    latencies
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        workload.stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for handle in handles {
            latencies.extend(handle.await.expect("a factwal task panicked"));
        }
        (latencies, window)
    });
    // The window ends when the last task is done, before the runtime drops.
    let window = window.close();
    drop(runtime);
    let store = Arc::into_inner(store).expect("every task has finished");
    let extra = vec![("runtime_workers", workers.to_string()), ("tasks", tasks.to_string())];
    factwal_outcome(options, run_dir, store, before, latencies, window, extra)
}

fn factwal_pipelined(options: &Options, run_dir: &Path, in_flight: usize) -> Outcome {
    let store = open_store(run_dir);
    let workload = Workload::new(options);
    let before = groups(&store);
    let mut latencies = Vec::with_capacity(1 << 16);
    let window = Window::open();
    std::thread::scope(|scope| {
        scope.spawn(|| stop_after(&workload, options.seconds));
        let mut queue = VecDeque::with_capacity(in_flight);
        for _ in 0..in_flight {
            let batch = workload.next_batch();
            queue.push_back((Instant::now(), store.write_async(batch)));
        }
        while let Some((begun, ticket)) = queue.pop_front() {
            ticket.wait().unwrap_or_else(|e| fail("write_async", e));
            latencies.push(elapsed_ns(begun));
            if !workload.stopped() {
                let batch = workload.next_batch();
                queue.push_back((Instant::now(), store.write_async(batch)));
            }
        }
    });
    factwal_outcome(options, run_dir, store, before, latencies, window.close(), vec![])
}
