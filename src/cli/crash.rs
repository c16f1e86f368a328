//! The demo's crash test: run `factwal load` as a child process, read its
//! `ack` lines, kill it with SIGKILL mid-stream, reopen its store and check
//! that every acknowledged write survived.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use factwal::{Config, ReadOnlyStore, Store};

use super::output::{grouped, Progress};
use super::problem;
use super::workload::{fact_name, session_name, Ack, FactKey, OpKind, PlannedWrite, Schedule};
use super::CliError;

/// How long the writer may take to acknowledge its first write.
const FIRST_ACK_WAIT_MAX: Duration = Duration::from_secs(30);

/// The writer's workload and how long it runs before the kill.
#[derive(Debug, Clone, Copy)]
pub struct CrashPlan {
    pub schedule: Schedule,
    pub threads: u64,
    pub checkpoint_interval_ms: u64,
    /// Time from the first acknowledged write to the kill.
    pub run_for: Duration,
    /// The store's `persistence.segment_bytes`.
    pub segment_bytes: u64,
}

/// What the crash test found.
#[derive(Debug)]
pub struct CrashOutcome {
    pub acknowledged: u64,
    /// Facts whose last acknowledged write is missing after the reopen.
    pub lost: u64,
    pub facts_checked: u64,
    /// Writes on disk after the reopen that were never acknowledged (in
    /// flight at the kill): allowed, whole or not at all.
    pub unacknowledged_on_disk: u64,
    /// Records in the WAL, not yet folded into redb, when the writer died.
    pub unfolded_at_kill: usize,
    /// What recovery had to drop, if anything.
    pub torn_tail: Option<String>,
    pub reopen: Duration,
}

/// Runs the writer on the store `<demo_dir>/crash` (configured by
/// `<demo_dir>/crash.toml`, its stderr in `<demo_dir>/writer.log`), kills
/// it, and checks what the store holds.
pub fn run(demo_dir: &Path, plan: &CrashPlan) -> Result<CrashOutcome, CliError> {
    let dir = demo_dir.join("crash");
    let config_path = demo_dir.join("crash.toml");
    // A segment must hold the largest record: a quarter of it is plenty here.
    let (segment_bytes, record_bytes_max) = (plan.segment_bytes, plan.segment_bytes / 4);
    let toml = format!(
        "[persistence]\nsegment_bytes = {segment_bytes}\nmax_record_bytes = {record_bytes_max}\n"
    );
    std::fs::write(&config_path, toml)
        .map_err(|e| CliError::io(format!("write {}", config_path.display()), e))?;
    let mut config = Config::from_file(&config_path)?;
    config.persistence.data_dir = dir.clone();
    let mut writer = Writer::spawn(&dir, &config_path, &demo_dir.join("writer.log"), plan)?;
    let acks = writer.run_then_kill(plan.run_for)?;
    let inspected = ReadOnlyStore::open(&config)?;
    let unfolded_at_kill = inspected.unfolded_records();
    let torn_tail = inspected.problem().map(problem::describe);
    drop(inspected);
    let begun = Instant::now();
    let store = Store::open(config)?;
    let reopen = begun.elapsed();
    let check = check_acks(&store, &plan.schedule, &acks, plan.threads);
    let lsn_last = store.stats().map(|stats| stats.lsn_last);
    let report = store.close();
    let check = check?;
    report.truncate.and(report.redb_close)?;
    Ok(CrashOutcome {
        acknowledged: acks.len() as u64,
        lost: check.lost,
        facts_checked: check.facts_checked,
        unacknowledged_on_disk: lsn_last?.saturating_sub(acks.len() as u64),
        unfolded_at_kill,
        torn_tail,
        reopen,
    })
}

/// The child process, killed and reaped however the demo ends.
struct Writer {
    child: Child,
    log_path: PathBuf,
    acks: Arc<AtomicU64>,
    reader: Option<JoinHandle<Result<Vec<Ack>, CliError>>>,
}

impl Writer {
    fn spawn(
        dir: &Path,
        config_path: &Path,
        log_path: &Path,
        plan: &CrashPlan,
    ) -> Result<Writer, CliError> {
        let exe =
            std::env::current_exe().map_err(|e| CliError::io("find the factwal executable", e))?;
        let log = File::create(log_path)
            .map_err(|e| CliError::io(format!("create {}", log_path.display()), e))?;
        let schedule = &plan.schedule;
        let mut command = Command::new(exe);
        command
            .arg("load")
            .arg("--dir")
            .arg(dir)
            .arg("--config")
            .arg(config_path)
            .args(["--writes", &u64::MAX.to_string()]);
        for (flag, value) in [
            ("--sessions", schedule.sessions),
            ("--facts-per-session", schedule.facts_per_session),
            ("--value-bytes", schedule.value_bytes as u64),
            ("--retract-every", schedule.retract_every),
            ("--threads", plan.threads),
            ("--checkpoint-interval-ms", plan.checkpoint_interval_ms),
        ] {
            command.arg(flag).arg(value.to_string());
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = command
            .spawn()
            .map_err(|e| CliError::io("start the writer process (factwal load)", e))?;
        let acks = Arc::new(AtomicU64::new(0));
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::failed("the writer process has no stdout"))?;
        let counter = acks.clone();
        let reader = std::thread::spawn(move || read_acks(stdout, &counter));
        Ok(Writer { child, log_path: log_path.to_path_buf(), acks, reader: Some(reader) })
    }

    /// Waits for the first ack, lets the writer run for `run_for`, kills it
    /// with SIGKILL, and returns every ack it printed.
    fn run_then_kill(&mut self, run_for: Duration) -> Result<Vec<Ack>, CliError> {
        let begun = Instant::now();
        while self.acks.load(Ordering::Relaxed) == 0 {
            self.check_alive()?;
            if begun.elapsed() > FIRST_ACK_WAIT_MAX {
                return Err(CliError::failed(
                    "the writer process acknowledged nothing within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let progress = Progress::start("crash test: writer running", run_for.as_millis() as u64);
        let running = Instant::now();
        while running.elapsed() < run_for {
            self.check_alive()?;
            let acks = self.acks.load(Ordering::Relaxed);
            progress.set(running.elapsed().as_millis() as u64, || {
                format!("{} writes acknowledged", grouped(acks))
            });
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(progress);
        // Child::kill sends SIGKILL on Unix: no handler, no flush, no close.
        self.child.kill().map_err(|e| CliError::io("kill the writer process", e))?;
        self.child.wait().map_err(|e| CliError::io("reap the writer process", e))?;
        let reader =
            self.reader.take().ok_or_else(|| CliError::failed("acks already collected"))?;
        reader.join().map_err(|_| super::thread_panicked("the ack reader thread"))?
    }

    /// An error quoting the writer's last stderr line if it ended on its own.
    fn check_alive(&mut self) -> Result<(), CliError> {
        let status =
            self.child.try_wait().map_err(|e| CliError::io("wait for the writer process", e))?;
        let Some(status) = status else { return Ok(()) };
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let last_line = log.lines().last().unwrap_or("(no output)");
        Err(CliError::failed(format!("the writer process ended early ({status}): {last_line}")))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads ack lines until the writer's stdout closes. A last line cut short
/// by the kill (no newline) was never fully reported, so it is not an ack.
fn read_acks(stdout: ChildStdout, counter: &AtomicU64) -> Result<Vec<Ack>, CliError> {
    let mut reader = BufReader::new(stdout);
    let mut acks = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| CliError::io("read the writer's ack lines", e))?;
        let Some(complete) = line.strip_suffix('\n') else { return Ok(acks) };
        let ack = Ack::parse(complete).ok_or_else(|| {
            CliError::failed(format!("the writer printed a line that is not an ack: {complete:?}"))
        })?;
        acks.push(ack);
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Check {
    facts_checked: u64,
    lost: u64,
}

/// Every fact an ack names must hold the value of its last acknowledged
/// write (by LSN), or of a later write that was in flight at the kill.
fn check_acks(
    store: &Store,
    schedule: &Schedule,
    acks: &[Ack],
    threads: u64,
) -> Result<Check, CliError> {
    let mut last: HashMap<FactKey, &Ack> = HashMap::new();
    for ack in acks {
        let entry = last.entry(ack.write.key).or_insert(ack);
        if ack.lsn > entry.lsn {
            *entry = ack;
        }
    }
    let in_flight = in_flight_writes(schedule, acks, threads);
    let mut lost = 0;
    for (key, ack) in &last {
        let value = store.fact(&session_name(key.0), &fact_name(key.1))?;
        let candidates = in_flight.get(key).map_or(&[][..], Vec::as_slice);
        if !explains(schedule, ack, candidates, value.as_deref()) {
            lost += 1;
        }
    }
    Ok(Check { facts_checked: last.len() as u64, lost })
}

/// Writes handed out but never acknowledged, by fact. Each writer thread
/// holds at most one write in flight, and seqs are handed out in order, so
/// these are the unacknowledged seqs up to the highest acked one plus the
/// number of threads.
fn in_flight_writes(
    schedule: &Schedule,
    acks: &[Ack],
    threads: u64,
) -> HashMap<FactKey, Vec<PlannedWrite>> {
    let acked: HashSet<u64> = acks.iter().map(|ack| ack.write.seq).collect();
    let seq_max = acks.iter().map(|ack| ack.write.seq).max().unwrap_or(0) + threads;
    let mut in_flight: HashMap<FactKey, Vec<PlannedWrite>> = HashMap::new();
    for seq in (1..=seq_max).filter(|seq| !acked.contains(seq)) {
        let write = schedule.write(seq);
        in_flight.entry(write.key).or_default().push(write);
    }
    in_flight
}

/// True when `value` is what the last acknowledged write left, or what one
/// of the in-flight writes to the same fact would have left.
fn explains(
    schedule: &Schedule,
    last: &Ack,
    in_flight: &[PlannedWrite],
    value: Option<&[u8]>,
) -> bool {
    let left_by = |write: &PlannedWrite| match (write.kind, value) {
        (OpKind::Retract, None) => true,
        (OpKind::Assert, Some(value)) => schedule.value(write) == value,
        _ => false,
    };
    left_by(&last.write) || in_flight.iter().any(left_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_explained_by_the_last_ack_or_a_write_in_flight() {
        // Session s1 fact f0 is written by seqs 1, 3, 5, ... (N = 2, K = 1);
        // every 3rd write is a retract.
        let schedule =
            Schedule { sessions: 2, facts_per_session: 1, retract_every: 3, value_bytes: 8 };
        let ack = |lsn, seq| Ack { lsn, write: schedule.write(seq) };
        let acks = [ack(1, 1), ack(2, 2), ack(4, 5)];
        let in_flight = in_flight_writes(&schedule, &acks, 2);
        let flying = &in_flight[&(1, 0)];
        assert_eq!(
            flying.iter().map(|w| w.seq).collect::<Vec<_>>(),
            [3, 7],
            "seqs up to 5 + 2 threads"
        );
        let value = |seq| schedule.value(&schedule.write(seq));
        assert!(explains(&schedule, &acks[2], flying, Some(&value(5))), "the last ack");
        assert!(explains(&schedule, &acks[2], flying, Some(&value(7))), "a later write in flight");
        assert!(explains(&schedule, &acks[2], flying, None), "seq 3 in flight is a retract");
        assert!(!explains(&schedule, &acks[2], &[], None), "nothing explains the fact missing");
        assert!(
            !explains(&schedule, &acks[2], flying, Some(&value(1))),
            "an older acknowledged value"
        );
    }
}
