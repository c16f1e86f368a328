//! The `store_model` target: a sequence of writes, reads, checkpoints,
//! crashes (optionally with a torn WAL tail), drops, closes, reopens and
//! injected I/O failures, run against a real store whose WAL is on the
//! simulated disk (`factwal::testing::SimDisk`), and checked against a
//! `BTreeMap` model.
//!
//! The model: the facts observed at the last successful open (`base`), and
//! every write since, acknowledged or not. While the store is open, reads
//! must show `base` plus the acknowledged writes, in order. A write that
//! returned an error may or may not be found after the next open, but
//! wholly: the facts observed then must equal `base` plus every acknowledged
//! write plus some subset of the failed ones, each applied at its place.
//! Acknowledged LSNs are dense and increasing. An open with no injected
//! failure during it must succeed; so must a checkpoint or a close.
//!
//! Writes through `Store::write_async` stay in flight across consecutive
//! `WriteAsync` steps (so they share groups, led by the commit thread) and
//! are settled in submission order before the next other step; a crash or
//! a drop happens with them still in flight, and they are settled after it.
//! Their outcomes follow `write`'s rules: an `Ok` is acknowledged with the
//! next LSN, and a `Closed` (the store went away before the write was
//! queued) is undecided.

use std::path::Path;
use std::sync::Arc;

use factwal::testing::{
    apply_ops, read_all, segment_numbers, snapshot_files, FactMap, Fault, SimDisk,
};
use factwal::wal::format::{decode_record, encode_record, Decoded, SegmentHeader};
use factwal::wal::segment::segment_file_name;
use factwal::{
    Batch, CheckpointMode, Config, Error, Lsn, Op, ReadOnlyStore, RecoveryMode, Store, WriteTicket,
};

use crate::support::{assert_unchanged, scratch_dir};

/// Segment size: small, so that a few writes roll segments.
pub const SEGMENT_BYTES: u64 = 4096;
/// Largest record payload; a batch above it is refused with `LimitExceeded`.
pub const MAX_RECORD_BYTES: u64 = 1024;
/// Most steps a scenario runs.
pub const STEPS_MAX: usize = 30;
/// Most failed writes kept undecided between two opens (2^N subsets are
/// tried); later writes of that session are skipped.
pub const UNDECIDED_MAX: usize = 8;
/// Session ids are `s0`..`s{SESSIONS - 1}`.
pub const SESSIONS: u8 = 3;
/// Fact ids are `f0`..`f{FACTS - 1}`.
pub const FACTS: u8 = 4;

/// One scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The recovery mode of every open.
    pub recovery_mode: RecoveryMode,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step. Writes, reads and checkpoints open the store first if it is not open.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `Store::write` of this batch.
    Write(Vec<Op>),
    /// `Store::write_async` of this batch, its ticket kept in flight.
    WriteAsync(Vec<Op>),
    /// `Store::fact`.
    Read {
        /// The session id.
        session: String,
        /// The fact id.
        fact: String,
    },
    /// `sessions()` and `facts()` of each.
    ReadAll,
    /// `Store::checkpoint`.
    Checkpoint(CheckpointMode),
    /// `Store::simulate_crash`, then, with `Some(at)`, a torn tail: the last
    /// record of the last segment cut at byte `at` (modulo its length) when
    /// it was never acknowledged, else a never-acknowledged record appended
    /// after it and cut there.
    Crash {
        /// Where to cut.
        tear: Option<u16>,
    },
    /// Drop without close (the best-effort close of `Drop`).
    Drop,
    /// `Store::close`.
    Close,
    /// `Store::open` (nothing when open).
    Open,
    /// Arm a failure of the simulated disk, replacing any other.
    Fault(Fault),
    /// Disarm it.
    Heal,
    /// `ReadOnlyStore::open` while the store is closed (refused with `Locked` while it is open).
    Inspect,
}

/// The config of every open.
pub fn config(data_dir: &Path, recovery_mode: RecoveryMode) -> Config {
    Config::new(data_dir)
        .segment_bytes(SEGMENT_BYTES)
        .max_record_bytes(MAX_RECORD_BYTES)
        .wal_bytes_max(3 * SEGMENT_BYTES)
        .recovery_mode(recovery_mode)
}

/// A write since the last successful open.
#[derive(Debug)]
struct Written {
    ops: Vec<Op>,
    acknowledged: bool,
}

struct Run {
    _scratch: tempfile::TempDir,
    /// `FACTWAL_FUZZ_TRACE` is set: print each step and what came of it.
    trace: bool,
    config: Config,
    /// Under the WAL only: redb stays on the real file system.
    disk: Arc<SimDisk>,
    store: Option<Store>,
    /// Facts observed at the last successful open.
    base: FactMap,
    /// Writes since then.
    written: Vec<Written>,
    /// `base` plus the acknowledged writes.
    visible: FactMap,
    /// The last LSN known to be in the log.
    lsn_last: Lsn,
    /// `write_async` tickets not yet settled, in submission order.
    in_flight: Vec<InFlight>,
}

/// A write submitted with `write_async`, not yet settled.
struct InFlight {
    ticket: WriteTicket,
    ops: Vec<Op>,
    /// Injected failures before it was submitted.
    fired: u64,
}

/// Runs a scenario, then heals the disk, closes, reopens and checks once more.
pub fn run(scenario: &Scenario) {
    let scratch = scratch_dir();
    let config = config(&scratch.path().join("data"), scenario.recovery_mode);
    let disk = SimDisk::new(scratch.path());
    let mut run = Run {
        _scratch: scratch,
        trace: std::env::var_os("FACTWAL_FUZZ_TRACE").is_some(),
        config,
        disk,
        store: None,
        base: FactMap::new(),
        written: Vec::new(),
        visible: FactMap::new(),
        lsn_last: 0,
        in_flight: Vec::new(),
    };
    run.open();
    for step in scenario.steps.iter().take(STEPS_MAX) {
        run.step(step);
    }
    run.settle_in_flight(false);
    run.disk.heal();
    run.close();
    run.open();
    assert!(run.store.is_some(), "the final open failed with no injected failure");
    run.close();
}

impl Run {
    fn step(&mut self, step: &Step) {
        if self.trace {
            eprintln!("step: {step:?}");
        }
        match step {
            Step::WriteAsync(ops) => return self.write_async(ops),
            // Gone with the store still in flight; settled after.
            Step::Crash { .. } | Step::Drop => {}
            _ => self.settle_in_flight(false),
        }
        match step {
            Step::Write(ops) => self.write(ops),
            Step::WriteAsync(_) => unreachable!("returned above"),
            Step::Read { session, fact } => {
                let store = self.opened();
                let actual = store.fact(session, fact).expect("fact() on an open store");
                let key = (session.clone(), fact.clone());
                assert_eq!(actual.as_ref(), self.visible.get(&key), "fact({session:?}, {fact:?})");
            }
            Step::ReadAll => {
                let actual = read_all(self.opened());
                assert_eq!(actual, self.visible, "reads disagree with the acknowledged writes");
            }
            Step::Checkpoint(mode) => self.checkpoint(*mode),
            Step::Crash { tear } => {
                if let Some(store) = self.store.take() {
                    store.simulate_crash();
                    self.settle_in_flight(true);
                    if let Some(at) = tear {
                        self.tear(*at);
                    }
                }
            }
            Step::Drop => {
                drop(self.store.take());
                self.settle_in_flight(true);
            }
            Step::Close => self.close(),
            Step::Open => self.open(),
            Step::Fault(fault) => {
                self.disk.heal();
                self.disk.fail(*fault);
            }
            Step::Heal => self.disk.heal(),
            Step::Inspect => self.inspect(),
        }
    }

    /// The open store, opening it first if needed (and possible).
    fn opened(&mut self) -> &Store {
        while self.store.is_none() {
            self.open();
            // An injected failure refused the open: retry without it.
            self.disk.heal();
        }
        self.store.as_ref().expect("opened")
    }

    fn open(&mut self) {
        if self.store.is_some() {
            return;
        }
        let fired = self.disk.injected();
        let opened = Store::open_with_io(self.config.clone(), self.disk.wal_io());
        if self.trace {
            eprintln!("  open: {:?}", opened.as_ref().map(|_| "ok"));
        }
        let store = match opened {
            Ok(store) => store,
            Err(error) => {
                assert!(
                    self.disk.injected() > fired,
                    "open failed with no injected failure: {error}"
                );
                return;
            }
        };
        let observed = read_all(&store);
        let lsn_last = store.stats().expect("stats of an open store").lsn_last;
        self.check_recovered(&observed, Some(lsn_last));
        self.base = observed.clone();
        self.visible = observed;
        self.written.clear();
        self.lsn_last = lsn_last;
        self.store = Some(store);
    }

    /// The facts after an open are `base`, every acknowledged write, and
    /// some of the failed ones, each wholly, in order; the log's last LSN
    /// (when known) moved on by at least the failed writes found.
    fn check_recovered(&self, observed: &FactMap, lsn_last: Option<Lsn>) {
        let undecided: Vec<usize> =
            (0..self.written.len()).filter(|&i| !self.written[i].acknowledged).collect();
        let found = (0u32..1 << undecided.len()).find_map(|subset| {
            let mut facts = self.base.clone();
            for (index, write) in self.written.iter().enumerate() {
                let position = undecided.iter().position(|&u| u == index);
                if write.acknowledged || position.is_some_and(|bit| subset & (1 << bit) != 0) {
                    apply_ops(&mut facts, &write.ops);
                }
            }
            (facts == *observed).then_some(subset.count_ones())
        });
        let Some(failed_kept) = found else {
            panic!(
                "recovered facts match no outcome of the writes since the last open\n\
                 observed: {observed:?}\nbase: {:?}\nwrites: {:?}",
                self.base, self.written
            );
        };
        let Some(lsn_last) = lsn_last else { return };
        assert!(
            lsn_last >= self.lsn_last,
            "LSN went back from {} to {lsn_last} across an open",
            self.lsn_last
        );
        if undecided.is_empty() {
            assert_eq!(
                lsn_last, self.lsn_last,
                "LSNs changed across an open with every write acknowledged"
            );
        } else {
            assert!(
                lsn_last - self.lsn_last >= u64::from(failed_kept),
                "failed writes came back without LSNs"
            );
        }
    }

    /// Writes that may still end up undecided: failed ones and those in
    /// flight.
    fn undecided_possible(&self) -> usize {
        self.written.iter().filter(|write| !write.acknowledged).count() + self.in_flight.len()
    }

    fn write_async(&mut self, ops: &[Op]) {
        if self.undecided_possible() >= UNDECIDED_MAX {
            return;
        }
        let fired = self.disk.injected();
        let ticket = self.opened().write_async(Batch::from(ops.to_vec()));
        self.in_flight.push(InFlight { ticket, ops: ops.to_vec(), fired });
    }

    /// Waits for every ticket in flight, in submission order, and records
    /// each outcome as `write` does. `store_gone`: the store was crashed or
    /// dropped meanwhile, which explains `Closed`.
    fn settle_in_flight(&mut self, store_gone: bool) {
        for InFlight { ticket, ops, fired } in std::mem::take(&mut self.in_flight) {
            let result = ticket.wait();
            if self.trace {
                eprintln!("  write_async: {result:?}");
            }
            match result {
                Err(Error::Closed) => {
                    assert!(store_gone, "a write_async was refused as Closed on an open store");
                    self.written.push(Written { ops, acknowledged: false });
                }
                result => self.record_outcome(&ops, result, fired),
            }
        }
    }

    fn write(&mut self, ops: &[Op]) {
        if self.undecided_possible() >= UNDECIDED_MAX {
            return;
        }
        let fired = self.disk.injected();
        let result = self.opened().write(Batch::from(ops.to_vec()));
        if self.trace {
            eprintln!("  write: {result:?}");
        }
        self.record_outcome(ops, result, fired);
    }

    /// What a write's outcome tells the model; `fired`: injected failures
    /// before the write was made.
    fn record_outcome(&mut self, ops: &[Op], result: Result<Lsn, Error>, fired: u64) {
        match result {
            Ok(lsn) => {
                assert_eq!(lsn, self.lsn_last + 1, "acknowledged LSNs are dense");
                self.lsn_last = lsn;
                apply_ops(&mut self.visible, ops);
                self.written.push(Written { ops: ops.to_vec(), acknowledged: true });
            }
            // Refused before anything was written.
            Err(Error::LimitExceeded { .. } | Error::InvalidArgument(_)) => {}
            Err(error) => {
                let explained = self.disk.injected() > fired
                    || (self.disk.injected() > 0 && matches!(error, Error::Poisoned { .. }));
                assert!(explained, "a write failed with no injected failure: {error}");
                self.written.push(Written { ops: ops.to_vec(), acknowledged: false });
            }
        }
    }

    fn checkpoint(&mut self, mode: CheckpointMode) {
        let fired = self.disk.injected();
        let result = self.opened().checkpoint(mode);
        if self.trace {
            eprintln!("  checkpoint: {:?}", result.as_ref().map(|report| report.segments_removed));
        }
        if let Err(error) = result {
            assert!(
                self.disk.injected() > fired,
                "a {mode:?} checkpoint failed with no injected failure: {error}"
            );
        }
        let actual = read_all(self.opened());
        assert_eq!(actual, self.visible, "a {mode:?} checkpoint changed what reads show");
    }

    fn close(&mut self) {
        let Some(store) = self.store.take() else { return };
        let fired = self.disk.injected();
        let report = store.close();
        if self.disk.injected() == fired {
            assert!(
                report.truncate.is_ok() && report.redb_close.is_ok(),
                "close with no injected failure: {report:?}"
            );
        }
    }

    /// A read-only open shows one possible outcome and changes no file.
    fn inspect(&mut self) {
        if self.store.is_some() {
            let refused = ReadOnlyStore::open(&self.config);
            assert!(
                matches!(refused, Err(Error::Locked { .. })),
                "read-only open beside a writer: {refused:?}"
            );
            return;
        }
        let data_dir = &self.config.persistence.data_dir;
        let before = snapshot_files(data_dir);
        let store = ReadOnlyStore::open(&self.config).expect("a read-only open of a closed store");
        let observed = read_all(&store);
        drop(store);
        assert_unchanged(&before, &snapshot_files(data_dir), "ReadOnlyStore::open");
        self.check_recovered(&observed, None);
    }

    /// Tears the tail of the last segment, where only a never-acknowledged
    /// record may be.
    fn tear(&self, at: u16) {
        let wal_dir = self.config.wal_dir();
        let Some(&number) = segment_numbers(&wal_dir).unwrap_or_default().last() else {
            return;
        };
        let path = wal_dir.join(segment_file_name(number));
        let mut bytes = std::fs::read(&path).expect("read the last segment");
        let Ok(header) = SegmentHeader::decode(&bytes) else { return };
        let (mut end, mut last) = (64usize, None);
        let mut lsn_next = header.lsn_first;
        while let Decoded::Valid { lsn, encoded_bytes, .. } =
            decode_record(&bytes[end..], &header, MAX_RECORD_BYTES)
        {
            if lsn != lsn_next {
                break;
            }
            last = Some((end, encoded_bytes as usize, lsn));
            end += encoded_bytes as usize;
            lsn_next = lsn + 1;
        }
        let (offset, record) = match last {
            Some((offset, length, lsn)) if lsn > self.lsn_last => {
                (offset, bytes[offset..offset + length].to_vec())
            }
            _ => {
                let mut phantom = Vec::new();
                encode_record(&mut phantom, &header, lsn_next, &[0xa5; 40]);
                (end, phantom)
            }
        };
        let keep = 1 + usize::from(at) % (record.len() - 1);
        let stop = (offset + record.len()).min(bytes.len());
        for (index, byte) in bytes[offset..stop].iter_mut().enumerate() {
            *byte = if index < keep { record[index] } else { 0 };
        }
        std::fs::write(&path, bytes).expect("write the torn segment");
    }
}
