//! `factwal load`: the workload generator, and the writer that `demo` (and
//! the kill -9 crash test) kill mid-stream. Its stdout is a contract: one
//! `ack` line per acknowledged write, flushed before the next write begins.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use factwal::{Batch, Store, WriteTicket};

use super::measure::Histogram;
use super::output::{self, grouped, human_duration};
use super::workload::{fact_name, session_name, Ack, OpKind, PlannedWrite, Schedule};
use super::{CliError, StoreArgs};

/// Most writer threads.
const THREADS_MAX: u64 = 1024;
/// Most writes one thread keeps in flight with --async.
const IN_FLIGHT_MAX: u64 = 65_536;
/// Largest value: beyond it a single write is no longer a "fact".
const VALUE_BYTES_MAX: u64 = 16 << 20;

/// Write M operations to a store, printing one `ack` line per acknowledged write
///
/// Write number `seq` (counting from 1, handed out to the threads in order)
/// is one operation on session `s<seq % N>`, fact `f<(seq / N) % K>`: a
/// retract when R > 0 and `seq % R == 0`, else an assert of the value
/// `s<i>/f<j>/<seq>` padded with `.` to B bytes (a longer text is written
/// whole). After each acknowledged write, one line is printed and flushed on
/// stdout:
///
///     ack <lsn> <session> <fact> <seq> <op>
///
/// e.g. `ack 17 s3 f0 17 assert` (op is `assert` or `retract`). A line is
/// printed only after the write is durable, and lines never interleave.
/// With T > 1 threads, lines arrive in neither LSN nor seq order. Exits 0
/// after M writes, once the store is closed; a summary goes to stderr.
///
/// With --async, each thread keeps up to W writes in flight through
/// `Store::write_async`, polling their tickets together and printing each
/// ack as its ticket resolves (so lines come in no order even with T = 1):
/// T*W writes can be in flight at once.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct LoadArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// N: sessions `s0` .. `s<N-1>`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    sessions: u64,
    /// M: writes in total.
    #[arg(long, value_name = "M")]
    writes: u64,
    /// K: facts per session, `f0` .. `f<K-1>`.
    #[arg(long, value_name = "K", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    facts_per_session: u64,
    /// B: bytes of each asserted value.
    #[arg(long, value_name = "B", default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=VALUE_BYTES_MAX))]
    value_bytes: u64,
    /// T: writer threads; their writes share syncs (group commit).
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=THREADS_MAX))]
    threads: u64,
    /// R: every R-th write is a retract (0: none). Pick R coprime to N*K so
    /// that every fact sees both asserts and retracts.
    #[arg(long, value_name = "R", default_value_t = 0)]
    retract_every: u64,
    /// Write through `Store::write_async`, W writes in flight per thread.
    #[arg(long = "async")]
    use_async: bool,
    /// W: writes each thread keeps in flight with --async.
    #[arg(long, value_name = "W", default_value_t = 64, requires = "use_async", value_parser = clap::value_parser!(u64).range(1..=IN_FLIGHT_MAX))]
    in_flight: u64,
    /// Milliseconds between checkpoint passes (0: no checkpoint loop).
    /// Default: `checkpoint.interval_s` of --config, else 100.
    #[arg(long, value_name = "MS")]
    checkpoint_interval_ms: Option<u64>,
}

pub fn run(args: &LoadArgs) -> Result<(), CliError> {
    let schedule = Schedule {
        sessions: args.sessions,
        facts_per_session: args.facts_per_session,
        retract_every: args.retract_every,
        value_bytes: args.value_bytes as usize,
    };
    let config = args.store.config()?;
    // The flag overrides the config file's key, as every flag does; with
    // neither, the loop runs every 100 ms.
    let interval = match (args.checkpoint_interval_ms, &args.store.config) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, Some(_)) => config.checkpoint_interval().unwrap_or_default(),
        (None, None) => Duration::from_millis(100),
    };
    let store = Store::open(config)?;
    store.start_checkpoint_loop(interval)?;
    let next_seq = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let started = Instant::now();
    let outcomes: Vec<Result<Histogram, CliError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| {
                    let writer = Writer {
                        store: &store,
                        schedule: &schedule,
                        next_seq: &next_seq,
                        writes: args.writes,
                        failed: &failed,
                    };
                    match args.use_async {
                        true => writer.run_async(args.in_flight as usize),
                        false => writer.run(),
                    }
                })
            })
            .collect();
        let joined = threads.into_iter().map(|thread| thread.join());
        joined
            .map(|outcome| {
                outcome.unwrap_or_else(|_| Err(super::thread_panicked("a writer thread")))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let report = store.close();
    let mut latency = Histogram::default();
    for outcome in outcomes {
        latency.merge(&outcome?);
    }
    if let Err(error) = report.truncate.and(report.redb_close) {
        return Err(CliError::from(error));
    }
    output::eprint_line(&format!(
        "load: {} writes in {} ({} writes/s); per-write latency p50 {}, p99 {}",
        grouped(latency.count()),
        human_duration(elapsed),
        grouped((latency.count() as f64 / elapsed.as_secs_f64().max(1e-9)) as u64),
        human_duration(latency.percentile(50.0)),
        human_duration(latency.percentile(99.0)),
    ));
    Ok(())
}

/// One writer thread's share of the workload.
struct Writer<'a> {
    store: &'a Store,
    schedule: &'a Schedule,
    next_seq: &'a AtomicU64,
    writes: u64,
    failed: &'a AtomicBool,
}

impl Writer<'_> {
    /// The next write to make, until M are handed out or another thread
    /// failed.
    fn next(&self) -> Option<PlannedWrite> {
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        (seq <= self.writes).then(|| self.schedule.write(seq))
    }

    /// Takes the next write, writes it, prints its ack line.
    fn run(&self) -> Result<Histogram, CliError> {
        let mut latency = Histogram::default();
        while let Some(write) = self.next() {
            let begun = Instant::now();
            let outcome = self.store.write(batch(self.schedule, &write));
            self.acknowledge(outcome, &write, begun, &mut latency)?;
        }
        Ok(latency)
    }

    /// Keeps up to `window` writes in flight through `write_async`, polling
    /// their tickets together on this thread (as a single-threaded runtime
    /// would) and printing each ack as its ticket resolves.
    fn run_async(&self, window: usize) -> Result<Histogram, CliError> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut latency = Histogram::default();
        let mut in_flight: Vec<(PlannedWrite, Instant, WriteTicket)> = Vec::new();
        let mut handed_out = false;
        loop {
            while !handed_out && in_flight.len() < window {
                match self.next() {
                    Some(write) => {
                        let ticket = self.store.write_async(batch(self.schedule, &write));
                        in_flight.push((write, Instant::now(), ticket));
                    }
                    None => handed_out = true,
                }
            }
            if in_flight.is_empty() {
                return Ok(latency);
            }
            let mut resolved = false;
            let mut index = 0;
            while index < in_flight.len() {
                match Pin::new(&mut in_flight[index].2).poll(&mut cx) {
                    Poll::Ready(outcome) => {
                        let (write, begun, _) = in_flight.swap_remove(index);
                        self.acknowledge(outcome, &write, begun, &mut latency)?;
                        resolved = true;
                    }
                    Poll::Pending => index += 1,
                }
            }
            if !resolved {
                // A wake before the park ends it at once: none is missed.
                std::thread::park();
            }
        }
    }

    /// Prints the ack of a write that succeeded; stops every thread on one
    /// that failed.
    fn acknowledge(
        &self,
        outcome: factwal::Result<u64>,
        write: &PlannedWrite,
        begun: Instant,
        latency: &mut Histogram,
    ) -> Result<(), CliError> {
        let printed = outcome.map_err(CliError::from).and_then(|lsn| {
            latency.record(begun.elapsed());
            print_ack(lsn, write)
        });
        if printed.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        printed
    }
}

/// Wakes the writer thread parked in `Writer::run_async`.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn batch(schedule: &Schedule, write: &PlannedWrite) -> Batch {
    let (session, fact) = (session_name(write.key.0), fact_name(write.key.1));
    match write.kind {
        OpKind::Assert => Batch::new().assert(session, fact, schedule.value(write)),
        OpKind::Retract => Batch::new().retract(session, fact),
    }
}

/// Prints and flushes one ack line under the stdout lock, so that lines of
/// different threads never interleave and a reader sees each one as soon as
/// the write is durable.
fn print_ack(lsn: u64, write: &PlannedWrite) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", Ack::line(lsn, write))
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::io("write ack line to stdout", e))
}
