//! `factwal demo`: the README's first command. In under a minute it shows
//! what factwal is for: a writer killed with SIGKILL loses no acknowledged
//! write, and a durable write costs about what the disk's own floor does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use factwal::CheckpointStats;

use super::crash::{self, CrashOutcome, CrashPlan};
use super::measure::{self, Floor, Measurement, Target, VALUE_BYTES};
use super::output::{grouped, human_duration, Out, Progress};
use super::scratch::{fresh_dir, remove_dir};
use super::workload::Schedule;
use super::CliError;

/// Marks a directory as made by `demo`, so that a later run may wipe it.
const MARKER: &str = ".factwal-demo";

/// Run the demo: a crash test, then the cost of durability (about 15 s)
///
/// 1. A writer process (`factwal load`) asserts and retracts facts with 8
///    threads and the checkpoint loop on, printing a line per acknowledged
///    write. It is killed with SIGKILL mid-stream; the demo reopens its store
///    and checks that every acknowledged write survived.
/// 2. Per-write latency of one writer for the disk floor (4 KiB O_DSYNC
///    writes into a preallocated file), WAL mode and direct mode, measured
///    in turns in the same run on the same disk.
/// 3. A broker-like run: 8 writers in WAL mode with the checkpoint loop on;
///    throughput, writes per sync, and the checkpoint passes.
///
/// Exits 0 when no acknowledged write was lost, 1 otherwise.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// The demo's directory: wiped at the start if an earlier demo made it
    /// (any other non-empty directory is refused), kept at the end so that
    /// you can look inside.
    #[arg(long, value_name = "DIR", default_value = "factwal-demo")]
    dir: PathBuf,
    /// A run of a few seconds, for the test suite.
    #[arg(long, hide = true)]
    quick: bool,
}

/// How big and how long each phase is.
struct Plan {
    crash: CrashPlan,
    /// Each latency measurement, in all.
    measure_for: Duration,
    /// The broker-like run.
    broker_for: Duration,
    floor_file_bytes: u64,
    checkpoint_interval: Duration,
}

/// Turns in which floor, WAL mode and direct mode are measured.
const LATENCY_ROUNDS: u32 = 4;
/// Writer threads of the broker-like run.
const BROKER_WRITERS: usize = 8;

const FULL: Plan = Plan {
    crash: CrashPlan {
        // 7 is coprime to 200 x 8, so every fact sees asserts and retracts.
        schedule: Schedule {
            sessions: 200,
            facts_per_session: 8,
            retract_every: 7,
            value_bytes: 100,
        },
        threads: 8,
        checkpoint_interval_ms: 100,
        run_for: Duration::from_secs(3),
        segment_bytes: 64 << 20,
    },
    measure_for: Duration::from_secs(2),
    broker_for: Duration::from_secs(3),
    floor_file_bytes: 64 << 20,
    checkpoint_interval: Duration::from_millis(100),
};

const QUICK: Plan = Plan {
    crash: CrashPlan {
        schedule: Schedule {
            sessions: 20,
            facts_per_session: 4,
            retract_every: 7,
            value_bytes: 100,
        },
        threads: 4,
        checkpoint_interval_ms: 50,
        run_for: Duration::from_millis(500),
        // Small segments keep recovery's scan short in a debug build.
        segment_bytes: 1 << 20,
    },
    measure_for: Duration::from_millis(200),
    broker_for: Duration::from_millis(300),
    floor_file_bytes: 4 << 20,
    checkpoint_interval: Duration::from_millis(50),
};

/// Per-write latency of one writer.
struct Latency {
    floor: Measurement,
    wal: Measurement,
    direct: Measurement,
}

/// The broker-like run.
struct Broker {
    measured: Measurement,
    writes_per_sync: f64,
    checkpoints: CheckpointStats,
}

pub fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    let plan = if args.quick { QUICK } else { FULL };
    let dir = &args.dir;
    fresh_dir(dir, MARKER)?;
    let mut out = Out::new();
    out.line(format_args!(
        "factwal demo: a crash that loses nothing, and what durability costs (files in {})",
        dir.display()
    ))?;
    print_crash_intro(&mut out, &plan.crash)?;
    out.flush()?;
    let crashed = crash::run(dir, &plan.crash)?;
    print_crash(&mut out, &crashed)?;
    out.flush()?;
    let latency = measure_latency(dir, &plan)?;
    print_latency(&mut out, &latency)?;
    out.flush()?;
    let broker = run_broker(dir, &plan)?;
    print_broker(&mut out, &broker, &plan)?;
    let passed = crashed.lost == 0 && crashed.acknowledged > 0;
    print_verdict(&mut out, &crashed, &latency, dir)?;
    out.flush()?;
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_crash_intro(out: &mut Out, plan: &CrashPlan) -> Result<(), CliError> {
    let s = &plan.schedule;
    out.line("")?;
    out.line("1. Crash test: kill -9 a writer, reopen its store, check every acknowledged write")?;
    out.line(format_args!(
        "   A writer process (`factwal load`) runs {} threads over {} sessions x {} facts: {}-byte asserts,",
        plan.threads, s.sessions, s.facts_per_session, s.value_bytes
    ))?;
    out.line(format_args!(
        "   every {}th write a retract, a checkpoint every {} ms. It prints a line for each write once it is",
        s.retract_every, plan.checkpoint_interval_ms
    ))?;
    out.line(format_args!(
        "   durable (\"acknowledged\"). After {:.1} s it is killed with SIGKILL.",
        plan.run_for.as_secs_f64()
    ))
}

fn print_crash(out: &mut Out, crashed: &CrashOutcome) -> Result<(), CliError> {
    let figure = |label: &str, value: String, note: &str| {
        let line = format!("   {label:<31} {value:>10}   {note}");
        line.trim_end().to_string()
    };
    let recovered = crashed.acknowledged - crashed.lost;
    out.line("")?;
    out.line(figure("writes acknowledged", grouped(crashed.acknowledged), ""))?;
    out.line(figure(
        "writes recovered",
        grouped(recovered),
        "present after reopen, or overwritten by a later write",
    ))?;
    out.line(figure("writes lost", grouped(crashed.lost), "must be 0"))?;
    out.line(figure(
        "facts checked",
        grouped(crashed.facts_checked),
        "each holds its last acknowledged value",
    ))?;
    out.line(figure(
        "unacknowledged writes on disk",
        grouped(crashed.unacknowledged_on_disk),
        "in flight at the kill: allowed either way",
    ))?;
    out.line(figure(
        "WAL records not yet in redb",
        grouped(crashed.unfolded_at_kill as u64),
        "at the kill; replayed by the reopen",
    ))?;
    out.line(figure("reopen (recovery) took", human_duration(crashed.reopen), ""))?;
    out.line(format_args!("   torn tail: {}", crashed.torn_tail.as_deref().unwrap_or("none")))
}

/// Floor, WAL mode and direct mode with one writer, measured in turns so
/// that each comparison is made under the same disk conditions.
fn measure_latency(dir: &Path, plan: &Plan) -> Result<Latency, CliError> {
    let progress =
        Progress::start("floor, WAL, direct in turns", plan.measure_for.as_millis() as u64 * 3);
    let floor = Floor::create(dir, plan.floor_file_bytes)?;
    let wal = measure::open_store(&dir.join("wal"), true, plan.checkpoint_interval)?;
    let direct = measure::open_store(&dir.join("direct"), false, plan.checkpoint_interval)?;
    let targets = [Target::Floor(&floor), Target::Store(&wal), Target::Store(&direct)];
    let measured =
        measure::measure_in_turns(&targets, 1, plan.measure_for, LATENCY_ROUNDS, &progress);
    let (wal_report, direct_report) = (wal.close(), direct.close());
    let [floor_measured, wal_measured, direct_measured] =
        <[Measurement; 3]>::try_from(measured?)
            .map_err(|_| CliError::failed("expected three latency measurements"))?;
    floor.remove()?;
    for report in [wal_report, direct_report] {
        report.truncate.and(report.redb_close)?;
    }
    remove_dir(&dir.join("wal"))?;
    remove_dir(&dir.join("direct"))?;
    Ok(Latency { floor: floor_measured, wal: wal_measured, direct: direct_measured })
}

/// Eight writers in WAL mode with the checkpoint loop on, as a broker's
/// request threads would write.
fn run_broker(dir: &Path, plan: &Plan) -> Result<Broker, CliError> {
    let dir = dir.join("broker");
    let progress = Progress::start("8 writers, WAL mode", plan.broker_for.as_millis() as u64);
    let store = measure::open_store(&dir, true, plan.checkpoint_interval)?;
    let measured = measure::measure_store(&store, BROKER_WRITERS, plan.broker_for, &progress);
    let stats = store.stats();
    let report = store.close();
    let (measured, wal) = (measured?, stats?.wal);
    report.truncate.and(report.redb_close)?;
    remove_dir(&dir)?;
    let writes_per_sync = wal.records as f64 / wal.groups.max(1) as f64;
    Ok(Broker { measured, writes_per_sync, checkpoints: report.summary })
}

fn print_latency(out: &mut Out, latency: &Latency) -> Result<(), CliError> {
    out.line("")?;
    out.line(format_args!(
        "2. Per-write latency, one writer, {VALUE_BYTES}-byte values, same disk, same run"
    ))?;
    out.line("   Each write returns only once it is on disk. The three are measured in turns.")?;
    out.line("")?;
    out.line(format_args!("   {:<36} {:>10} {:>10} {:>12}", "", "p50", "p99", "p50 / floor"))?;
    let floor_p50 = latency.floor.latency.percentile(50.0);
    let rows = [
        ("disk floor (4 KiB O_DSYNC write)", &latency.floor),
        ("factwal, WAL mode", &latency.wal),
        ("factwal, direct mode (redb commit)", &latency.direct),
    ];
    for (label, measured) in rows {
        let p50 = measured.latency.percentile(50.0);
        out.line(format_args!(
            "   {label:<36} {:>10} {:>10} {:>11.2}x",
            human_duration(p50),
            human_duration(measured.latency.percentile(99.0)),
            ratio(p50, floor_p50)
        ))?;
    }
    out.line("   (p50: half the writes took at most this; p99: 99 in 100 did)")
}

fn print_broker(out: &mut Out, broker: &Broker, plan: &Plan) -> Result<(), CliError> {
    let (measured, stats) = (&broker.measured, &broker.checkpoints);
    let show =
        |duration: Option<Duration>| duration.map_or_else(|| "-".to_string(), human_duration);
    out.line("")?;
    out.line(format_args!(
        "3. A broker-like run: {BROKER_WRITERS} writer threads, WAL mode, a checkpoint every {} ms, {:.1} s",
        plan.checkpoint_interval.as_millis(),
        plan.broker_for.as_secs_f64()
    ))?;
    out.line(format_args!(
        "   {} writes/s; latency p50 {}, p99 {}; {:.1} writes shared each sync (group commit)",
        grouped(measured.writes_per_s() as u64),
        human_duration(measured.latency.percentile(50.0)),
        human_duration(measured.latency.percentile(99.0)),
        broker.writes_per_sync
    ))?;
    out.line(format_args!(
        "   checkpoint passes {}: duration p50 {}, p95 {}, max {} (writers never wait for them)",
        stats.n,
        show(stats.p50),
        show(stats.p95),
        show(stats.max)
    ))
}

/// `value / floor`, 0 when the floor measured nothing.
fn ratio(value: Duration, floor: Duration) -> f64 {
    if floor.is_zero() {
        0.0
    } else {
        value.as_secs_f64() / floor.as_secs_f64()
    }
}

fn print_verdict(
    out: &mut Out,
    crashed: &CrashOutcome,
    latency: &Latency,
    dir: &Path,
) -> Result<(), CliError> {
    let wal_vs_floor =
        ratio(latency.wal.latency.percentile(50.0), latency.floor.latency.percentile(50.0));
    out.line("")?;
    if crashed.lost == 0 && crashed.acknowledged > 0 {
        out.line(format_args!(
            "PASS: all {} acknowledged writes survived kill -9 (0 lost); a WAL-mode write took {wal_vs_floor:.2}x \
             the disk floor.",
            grouped(crashed.acknowledged)
        ))?;
    } else {
        out.line(format_args!(
            "FAIL: {} of {} acknowledged writes lost.",
            grouped(crashed.lost),
            grouped(crashed.acknowledged)
        ))?;
    }
    // Name the binary as it was invoked (`target/release/factwal` under
    // `cargo run`) so that the hint can be pasted as it is.
    let exe = std::env::args().next().unwrap_or_else(|| "factwal".to_string());
    let crash_dir = dir.join("crash");
    out.line(format_args!(
        "Look inside the crashed store: {exe} inspect --dir {0}; {exe} facts --dir {0} --session s1",
        crash_dir.display()
    ))
}
