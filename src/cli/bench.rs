//! `factwal bench`: what durability costs, against the disk's own floor,
//! with 1, 8 and 64 concurrent writers, in one run on one disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use factwal::Config;
use serde::Serialize;

use super::measure::{self, Floor, Measurement, Target, VALUE_BYTES};
use super::output::{millis, Out, Progress};
use super::scratch::{fresh_dir, remove_dir};
use super::CliError;

/// Writer counts measured.
const WRITER_COUNTS: [usize; 3] = [1, 8, 64];
/// The floor file: each writer cycles over its own share of it.
const FLOOR_FILE_BYTES: u64 = 64 << 20;
/// Turns in which floor, WAL mode and direct mode share each measurement.
const ROUNDS: u32 = 3;
/// Marks a directory as made by `bench`, so that a later run may wipe it.
const MARKER: &str = ".factwal-bench";

/// Measure per-write latency and throughput: disk floor, WAL and direct mode
///
/// Per-write latency (p50/p95/p99) and throughput with 1, 8 and 64 writer
/// threads, for:
///
///   floor   each writer does synchronous 4 KiB O_DSYNC writes into its own
///           region of one preallocated, zero-filled file: the cheapest
///           durable write this disk allows, with that many writers
///   wal     factwal in WAL mode (200-byte asserts, group commit, the
///           checkpoint loop on at its default 1 s)
///   direct  factwal in direct mode (one redb commit per write)
///
/// Ratios are to the floor with the same number of writers. Nine
/// measurements of S seconds each, the three of a writer count taken in
/// turns (S/3 seconds at a time) so that a disk whose speed drifts weighs
/// on all three alike: about 9*S seconds plus set-up. The files go to DIR
/// (created, wiped if an earlier bench left it, removed at the end): put it
/// on the disk you care about.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// Seconds per measurement.
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Where to put the files.
    #[arg(long, value_name = "DIR", default_value = "factwal-bench")]
    dir: PathBuf,
    /// One JSON object (keys documented in README.md).
    #[arg(long)]
    json: bool,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.05..=600.0).contains(&seconds) => Ok(seconds),
        _ => Err("must be a number of seconds between 0.05 and 600".to_string()),
    }
}

#[derive(Serialize)]
struct BenchJson {
    seconds_per_measurement: f64,
    value_bytes: usize,
    results: Vec<ResultJson>,
}

#[derive(Serialize)]
struct ResultJson {
    mode: &'static str,
    writers: usize,
    writes: u64,
    writes_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    p50_vs_floor: f64,
    writes_per_s_vs_floor: f64,
}

pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    fresh_dir(&args.dir, MARKER)?;
    let outcome = measure_all(&args.dir, Duration::from_secs_f64(args.seconds));
    let removed = remove_dir(&args.dir);
    let results = outcome?;
    removed?;
    let json =
        BenchJson { seconds_per_measurement: args.seconds, value_bytes: VALUE_BYTES, results };
    let mut out = Out::new();
    if args.json {
        out.json(&json)?;
    } else {
        print_table(&mut out, &json)?;
    }
    out.flush()
}

/// Every measurement: for each writer count, floor, WAL and direct in turns.
fn measure_all(dir: &Path, duration: Duration) -> Result<Vec<ResultJson>, CliError> {
    // The checkpoint loop runs at the default interval, as in a broker.
    let interval = Config::default().checkpoint_interval().unwrap_or_default();
    let floor = Floor::create(dir, FLOOR_FILE_BYTES)?;
    let wal = measure::open_store(&dir.join("wal"), true, interval)?;
    let direct = measure::open_store(&dir.join("direct"), false, interval)?;
    let targets = [Target::Floor(&floor), Target::Store(&wal), Target::Store(&direct)];
    let measure_every_count = || -> Result<Vec<ResultJson>, CliError> {
        let mut results = Vec::new();
        for writers in WRITER_COUNTS {
            let label = format!("bench: {writers} writer(s), in turns");
            let progress =
                Progress::start(&label, duration.as_millis() as u64 * targets.len() as u64);
            let measured =
                measure::measure_in_turns(&targets, writers, duration, ROUNDS, &progress)?;
            for (mode, one) in ["floor", "wal", "direct"].into_iter().zip(&measured) {
                results.push(result_json(mode, one, &measured[0]));
            }
        }
        Ok(results)
    };
    let results = measure_every_count();
    // The stores are closed however the measurements ended.
    let reports = [wal.close(), direct.close()];
    let results = results?;
    floor.remove()?;
    for report in reports {
        report.truncate.and(report.redb_close)?;
    }
    Ok(results)
}

fn result_json(mode: &'static str, measured: &Measurement, floor: &Measurement) -> ResultJson {
    let p50 = measured.latency.percentile(50.0);
    let floor_p50 = floor.latency.percentile(50.0);
    ResultJson {
        mode,
        writers: measured.writers,
        writes: measured.latency.count(),
        writes_per_s: measured.writes_per_s().round(),
        p50_ms: millis(p50),
        p95_ms: millis(measured.latency.percentile(95.0)),
        p99_ms: millis(measured.latency.percentile(99.0)),
        p50_vs_floor: ratio(p50.as_secs_f64(), floor_p50.as_secs_f64()),
        writes_per_s_vs_floor: ratio(measured.writes_per_s(), floor.writes_per_s()),
    }
}

/// Two decimals; 0 when the floor measured nothing.
fn ratio(value: f64, floor: f64) -> f64 {
    if floor > 0.0 {
        (value / floor * 100.0).round() / 100.0
    } else {
        0.0
    }
}

fn print_table(out: &mut Out, bench: &BenchJson) -> Result<(), CliError> {
    out.line(format_args!(
        "factwal bench: {} s per measurement, {}-byte values; floor = 4 KiB O_DSYNC writes, one file region per writer",
        bench.seconds_per_measurement, bench.value_bytes
    ))?;
    out.line("")?;
    out.line(format_args!(
        "{:>7}  {:<6}  {:>9}  {:>9}  {:>9}  {:>10}  {:>13}  {:>18}",
        "writers",
        "mode",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "writes/s",
        "p50 vs floor",
        "writes/s vs floor"
    ))?;
    for row in &bench.results {
        out.line(format_args!(
            "{:>7}  {:<6}  {:>9.3}  {:>9.3}  {:>9.3}  {:>10}  {:>12.2}x  {:>17.2}x",
            row.writers,
            row.mode,
            row.p50_ms,
            row.p95_ms,
            row.p99_ms,
            row.writes_per_s,
            row.p50_vs_floor,
            row.writes_per_s_vs_floor
        ))?;
    }
    Ok(())
}
