//! The WAL writer: appends framed records to the active segment and syncs
//! them, sharing each sync among all writers that arrive while the previous
//! one is in flight (group commit). The code below follows one write from
//! top to bottom: `start`, `append`, `lead`, `gather`, `write_group`,
//! `roll`, the leader's bookkeeping, `finish`, `pass_on`; then what the
//! checkpoint does (`prepare_next_segment`, `release_through`), and `stop`
//! and `truncate_with`.
//!
//! Protocol: a writer queues its payload, with a waiter of its own, under the
//! state lock. If no leader is active it becomes the leader: it takes the
//! whole queue and writes it with one `write_at` and one `sync_data` (two of
//! each when the group crosses into a new segment). When the sync returns,
//! the leader is the one thread sure to be running, so it stays leader: it
//! applies the finished group to the sink (the store's overlay, which makes
//! the records visible), posts each member's outcome into the member's own
//! waiter, wakes the first two, and writes the group that queued during the
//! sync, all without waiting for any thread to be scheduled. The members
//! wake each other as a binary tree (`waiter.rs` has the wake protocol)
//! while the next group is on the disk. A member wakes once, for its own
//! result, and never touches the shared state to collect it: no herd of
//! woken writers contends for a lock.
//!
//! The leader's own write returns only when it stops leading, so after
//! `LEAD_GROUPS_MAX` groups, or when the queue is empty, it hands leadership
//! to the first queued writer and finishes its last group while that
//! writer's group is on the disk. Groups are therefore finished on two
//! threads at times; each waits for the groups before it (`applied`), so the
//! sink sees them in LSN order.
//!
//! Under steady load this makes two groups alternate: while one is on the
//! disk, the members of the other are being woken and queue their next
//! writes.
//!
//! Gathering: when the log is idle (everyone was in the last group), the
//! first writer back would lead a group of one while the others queue behind
//! its sync. So a writer that finds the log idle waits until as many writers
//! have queued as were in the previous group, but never longer than half the
//! previous sync (and at most `GATHER_MAX`). A lone writer never waits: its
//! previous group had one member. A writer handed leadership does not wait:
//! its group formed during the previous sync.
//!
//! LSNs are assigned by the leader, in queue order, only to records that
//! become durable, so they stay dense even when a group fails.
//!
//! A failed sync, or a failed write other than "disk full", poisons the WAL:
//! no later write is acknowledged until the store is reopened (invariant 9).
//! A write refused for lack of space leaves unsynced bytes behind, so the
//! segment is abandoned and the next group starts a new one; recovery knows
//! to ignore an abandoned tail because the next segment's header says where
//! the log continues.
//!
//! A panic anywhere on the leader path poisons the WAL too. The leader's
//! drop guard (`Leadership`) knows what the leader still owes (writers not
//! yet told, the sink's turn, leadership itself) and settles it while the
//! leader's thread unwinds, so no writer, no `stop` and no `close` waits for
//! a thread that is gone. The locks, and the order they are taken in, are
//! listed on `Wal`.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{error_chain, panic_message, Error, IoOp, Lsn, Result};
use crate::identity::StoreId;
use crate::sync::lock;
use crate::wal::format::{self, SEGMENT_HEADER_BYTES};
use crate::wal::io::WalIo;
use crate::wal::segment::{
    create_segment, discard_prepared, install_segment, prepare_segment, PreparedSegment, Segment,
    SegmentShape,
};
use crate::wal::waiter::{tell_group, Pending, Waiter, Wake};

#[cfg(test)]
mod leader_panics;

/// Receives durable records, in LSN order, before their writers are told.
pub type Sink<T> = Box<dyn Fn(Lsn, Vec<T>) + Send + Sync>;

/// The longest a new leader waits for the writers of the previous group to
/// queue again.
const GATHER_MAX: Duration = Duration::from_micros(100);

/// Most groups one leader writes in a row before it passes leadership on.
/// Each group after the first saves a thread wake-up between two syncs, but
/// the leader's own write returns only when it stops leading: this bounds
/// how much later than its group's members that is. Measured with 64
/// writers (medians of 8 interleaved runs): 1 group 117k writes/s, 2 130k,
/// 4 132k, 8 138k, 32 139k.
const LEAD_GROUPS_MAX: usize = 8;

/// The message of the error a leader's drop guard reports: a `Drop` runs
/// while the panic unwinds but never sees its payload.
/// Why a writer's own outcome is always there for it.
const OWN_IN_FIRST_GROUP: &str = "a leader's own record is in the first group it leads";
const UNWOUND_MESSAGE: &str = "the leader's thread unwound; the panic hook has the panic's message";

/// Where and how segments are written.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The WAL directory.
    pub dir: PathBuf,
    /// Preallocated size of each segment.
    pub segment_bytes: u64,
    /// The store every segment belongs to (written in its header).
    pub store_id: StoreId,
    /// This opening of the store (written in every segment's header).
    pub epoch: u32,
    /// Largest payload accepted.
    pub max_record_bytes: u64,
}

/// Counts of what the writer has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalCounters {
    /// Groups written (each one write and one sync, or two of each when the
    /// group crossed into a new segment).
    pub groups: u64,
    /// Records made durable.
    pub records: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Of those, segments whose file the checkpoint loop had prepared ahead
    /// of need, so that the roll into them took a header write and a few
    /// syncs instead of a zero-fill.
    pub segments_prepared: u64,
}

/// A segment that is no longer written to but may still hold unfolded records.
#[derive(Debug, Clone)]
struct SealedSegment {
    path: PathBuf,
    lsn_last: Option<Lsn>,
}

#[derive(Debug)]
struct ActiveSegment {
    segment: Segment,
    write_offset: u64,
    lsn_last: Option<Lsn>,
}

/// The segment being written: held by the leader for the whole of each
/// group's write and sync, so nothing else waits on it but close and
/// `truncate_with`, which take it with no leader active.
#[derive(Debug)]
struct Log {
    active: Option<ActiveSegment>,
    buffer: Vec<u8>,
}

struct Queued<T> {
    payload: Vec<u8>,
    item: T,
    waiter: Arc<Waiter>,
}

#[derive(Debug, Clone)]
enum GroupError {
    /// The WAL is poisoned by this failure.
    Poisoned(Arc<Error>),
    /// The group failed without harm to the log (disk full): retry later.
    Failed(Error),
}

impl GroupError {
    /// What a writer whose record this stopped is told.
    fn writer_error(&self) -> Error {
        match self {
            GroupError::Poisoned(cause) => Error::Poisoned { cause: cause.clone() },
            GroupError::Failed(error) => error.clone(),
        }
    }
}

/// A record [`Wal::submit`] did not queue, and why; its mailbox is for the
/// caller to settle.
#[derive(Debug)]
pub struct Refused {
    /// Why it was not queued.
    pub error: Error,
    /// Its mailbox, unsettled.
    pub pending: Pending,
}

struct GroupState<T> {
    queue: Vec<Queued<T>>,
    /// Leadership, a lock of its own kind (see `Wal`): a leader is writing a
    /// group, or has been chosen and is waking up to (or `truncate_with`
    /// holds the log). While it is false the queue is empty: a writer that
    /// finds no leader leads itself.
    leader_active: bool,
    /// Members of the last group written, and how long its sync took: what
    /// the next leader gathers for.
    group_last_count: usize,
    sync_last: Duration,
    counters: WalCounters,
    lsn_next: Lsn,
    poisoned: Option<Arc<Error>>,
    closed: bool,
    /// Leadership was handed to the committer (`commit_for_tasks`), which
    /// has not taken it yet: the queue holds only task mailboxes, which
    /// have no thread to lead with.
    committer_wanted: bool,
    /// The most groups one leader has written in a row (tests check the
    /// bound).
    #[cfg(test)]
    groups_led_max: usize,
}

/// The segmented write-ahead log with group commit.
///
/// # Locks
///
/// Leadership (`GroupState::leader_active`) is a lock too: one thread at a
/// time holds it (a leader, or `truncate_with`), hands it on in `pass_on`,
/// and gives it back on every path, unwinding included (the drop guard
/// `Leadership`). Only its holder takes `log`, with one exception:
/// `remove_all_segments` when close calls it after `stop`, once no leader
/// can start. Held locks nest in this order only, outer first:
///
/// ```text
/// leadership -> log -> spare -> sealed
/// ```
///
/// `state`, `applied` and every waiter's mailbox are taken with none of the
/// other locks held (leadership aside), and no other lock is taken while one
/// of them is held. `applied` is held across the sink, which is how the sink
/// sees groups in LSN order; nothing of the WAL is called from the sink.
/// (The mailbox's own rule is on `Waiter`, in `waiter.rs`.)
///
/// Across a `write_at` or a sync: `log` is held by design (a group's write
/// and sync, a roll's segment creation), and `spare` (a zero-fill and its
/// syncs, a roll's install); `state`, `applied`, `sealed` and the mailboxes
/// never are: every writer needs `state` to queue, and a checkpoint needs
/// `sealed` to release segments. Each field says which of these it is.
pub struct Wal<T> {
    io: Arc<dyn WalIo>,
    options: WalOptions,
    /// The queue, leadership, LSNs, counters and the poison flag. Taken
    /// alone, for moments, by every writer; never held across I/O or the
    /// sink.
    state: Mutex<GroupState<T>>,
    /// Wakes `stop` and `truncate_with`, which wait for no leader to be active.
    idle: Condvar,
    /// Wakes a gathering leader once enough writers have queued.
    gathered: Condvar,
    /// Wakes the committer when leadership is handed to it, and at `stop`.
    committer_wake: Condvar,
    /// The LSN of the last record the sink has seen. Groups are completed on
    /// several threads at once; each waits here for the groups before it, so
    /// the sink sees them in LSN order, and `stop` and `truncate_with` wait
    /// here for the last one. Taken alone; held across the sink, never
    /// across I/O.
    applied: Mutex<Lsn>,
    applied_changed: Condvar,
    /// Taken only by the holder of leadership, and held across a group's
    /// write and sync. May take `spare`, then `sealed`.
    log: Mutex<Log>,
    /// Segments no longer written to, oldest first: held only briefly, so a
    /// checkpoint releasing segments never waits for a sync (the leader
    /// takes `log` again as soon as a group is finished, and would win it
    /// from a waiting thread over and over). Innermost: nothing is taken
    /// while it is held, and it is never held across I/O.
    sealed: Mutex<VecDeque<SealedSegment>>,
    /// True while `log` has an active segment. Changed under `log`, and
    /// read and cleared under `sealed` too, so that a release never removes
    /// the last segment while there is no active one.
    has_active: AtomicBool,
    segments_created: AtomicU64,
    segments_prepared: AtomicU64,
    /// Set when the sink may miss or half-hold durable records: it panicked
    /// (see `sink_failed`), or the leader panicked before giving them to it.
    sink_failed: AtomicBool,
    /// The next segment's file, made ahead of need by `prepare_next_segment`
    /// (a checkpoint pass) so that a roll does not zero-fill a segment while
    /// every writer waits. Held by a roll for all of it (inside `log`), and
    /// by a preparation for all of it (alone), so the two never work on the
    /// same file; held across the zero-fill's and the install's syncs.
    spare: Mutex<Option<PreparedSegment>>,
    /// The number the next segment will have; changed only by a roll, under
    /// `log` and `spare`.
    number_next: AtomicU64,
    sink: Sink<T>,
    /// Test-only: where a test stops the leader or makes it panic.
    #[cfg(test)]
    probe: std::sync::OnceLock<Probe>,
}

impl WalOptions {
    fn shape(&self) -> SegmentShape {
        SegmentShape {
            store_id: self.store_id,
            epoch: self.epoch,
            segment_bytes: self.segment_bytes,
        }
    }
}

impl<T> std::fmt::Debug for Wal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("options", &self.options).finish_non_exhaustive()
    }
}

// The write path, in call order.
impl<T> Wal<T> {
    /// Starts a WAL whose next record is `lsn_next`, creating segment
    /// `number_next` (which must not exist) to write it into.
    pub fn start(
        io: Arc<dyn WalIo>,
        options: WalOptions,
        number_next: u64,
        lsn_next: Lsn,
        sink: Sink<T>,
    ) -> Result<Self> {
        crate::wal::io::ensure_durable_dir(&*io, &options.dir)?;
        let segment = create_segment(&*io, &options.dir, number_next, lsn_next, options.shape())?;
        let log = Log {
            active: Some(ActiveSegment {
                segment,
                write_offset: SEGMENT_HEADER_BYTES,
                lsn_last: None,
            }),
            buffer: Vec::new(),
        };
        let state = GroupState {
            queue: Vec::new(),
            leader_active: false,
            group_last_count: 0,
            sync_last: Duration::ZERO,
            counters: WalCounters::default(),
            lsn_next,
            poisoned: None,
            closed: false,
            committer_wanted: false,
            #[cfg(test)]
            groups_led_max: 0,
        };
        Ok(Wal {
            io,
            options,
            state: Mutex::new(state),
            idle: Condvar::new(),
            gathered: Condvar::new(),
            committer_wake: Condvar::new(),
            applied: Mutex::new(lsn_next - 1),
            applied_changed: Condvar::new(),
            log: Mutex::new(log),
            sealed: Mutex::new(VecDeque::new()),
            has_active: AtomicBool::new(true),
            segments_created: AtomicU64::new(1),
            segments_prepared: AtomicU64::new(0),
            sink_failed: AtomicBool::new(false),
            spare: Mutex::new(None),
            number_next: AtomicU64::new(number_next + 1),
            sink,
            #[cfg(test)]
            probe: std::sync::OnceLock::new(),
        })
    }

    /// Appends one record and returns its LSN once it is durable and the
    /// sink has seen it.
    pub fn append(&self, payload: Vec<u8>, item: T) -> Result<Lsn> {
        self.check_record(&payload)?;
        let waiter = Waiter::new();
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Error::Closed);
        }
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        state.queue.push(Queued { payload, item, waiter: waiter.clone() });
        #[cfg(test)]
        self.probe(TestPoint::Queued);
        if !state.leader_active {
            state.leader_active = true;
            return self.lead(state, Some(&waiter), true).expect(OWN_IN_FIRST_GROUP);
        }
        if state.queue.len() == state.group_last_count {
            self.gathered.notify_one();
        }
        drop(state);
        match waiter.wait() {
            Wake::Done(outcome, relay) => {
                relay.wake_children();
                outcome
            }
            Wake::Lead => {
                self.lead(lock(&self.state), Some(&waiter), false).expect(OWN_IN_FIRST_GROUP)
            }
            Wake::Waiting => unreachable!("Waiter::wait returns only when told"),
        }
    }

    /// Queues one record without a thread to wait for it, and returns at
    /// once: `pending`'s [`Receipt`](crate::wal::Receipt) gives its LSN once
    /// it is durable and the sink has seen it, with `append`'s outcomes.
    /// When no leader is active, leadership goes to the committer, the
    /// thread that runs [`Wal::commit_for_tasks`] (the caller must run
    /// one).
    ///
    /// A refused record (closed, poisoned, too large) comes back with its
    /// mailbox, for the caller to settle once it holds no lock. Dropping
    /// the receipt does not withdraw a queued record.
    pub fn submit(&self, payload: Vec<u8>, item: T, pending: Pending) -> Result<(), Refused> {
        if let Err(error) = self.check_record(&payload) {
            return Err(Refused { error, pending });
        }
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Refused { error: Error::Closed, pending });
        }
        if let Some(cause) = &state.poisoned {
            return Err(Refused { error: Error::Poisoned { cause: cause.clone() }, pending });
        }
        state.queue.push(Queued { payload, item, waiter: pending.into_waiter() });
        if !state.leader_active {
            state.leader_active = true;
            state.committer_wanted = true;
            self.committer_wake.notify_one();
        } else if state.queue.len() == state.group_last_count {
            self.gathered.notify_one();
        }
        Ok(())
    }

    /// The committer: leads groups whenever leadership is handed to it
    /// (records queued by `submit` with no leader active, or a leader that
    /// found only such records to hand on to), until the WAL is stopped.
    /// Runs on a thread of its own, which the caller starts before the
    /// first `submit` and joins after `stop`.
    pub fn commit_for_tasks(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.committer_wanted {
                state.committer_wanted = false;
                // Gathered like a writer that found the log idle: the tasks
                // of the last group may be about to queue again.
                let _nobody_owns_a_record = self.lead(state, None, true);
                state = lock(&self.state);
            } else if state.closed {
                return;
            } else {
                state = self.committer_wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Refuses a record over the WAL's size limit.
    fn check_record(&self, payload: &[u8]) -> Result<()> {
        if payload.len() as u64 > self.options.max_record_bytes {
            return Err(Error::LimitExceeded {
                what: "record bytes",
                actual: payload.len() as u64,
                limit: self.options.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Writes groups (`leader_active` is already set for this caller, whose
    /// own record, if it has one, is in the queue) until the queue is empty
    /// or it has led `LEAD_GROUPS_MAX` of them, then passes leadership on
    /// and returns the leader's own outcome (`None` for the committer).
    ///
    /// Between two groups the leader makes the finished one visible and
    /// starts waking its members (see `finish`), then writes the group that
    /// queued meanwhile: the disk waits for a few microseconds of work on a
    /// running thread, never for a sleeping thread to be scheduled. Passing
    /// leadership costs that wake-up, so it happens only once per
    /// `LEAD_GROUPS_MAX` groups; the last group is finished after the next
    /// leader has been told, while its first group is on the disk.
    ///
    /// Whatever the leader owes at any moment (the group it writes, the
    /// written group's writers and sink turn, leadership) lives in
    /// `leadership`, whose drop settles it if a panic unwinds from here.
    fn lead(
        &self,
        state: MutexGuard<'_, GroupState<T>>,
        own: Option<&Arc<Waiter>>,
        gather: bool,
    ) -> Option<Result<Lsn>> {
        // The guard is declared before `state` (into which the argument
        // moves), so a panic releases the state lock before the guard takes
        // it.
        let mut leadership = Leadership::new(self, own, LeaderStep::Writing);
        let mut state = state;
        if gather {
            leadership.enter(LeaderStep::Gathering);
            state = self.gather(state);
        }
        let mut own_outcome = None;
        for groups_led in 1.. {
            let lsn_first = state.lsn_next;
            let poisoned = state.poisoned.clone();
            leadership.group = std::mem::take(&mut state.queue);
            drop(state);

            let written = leadership.write(lsn_first, poisoned);
            let own_here = leadership.take_own_outcome();
            let own_in_group = own_here.is_some();
            own_outcome = own_outcome.or(own_here);

            state = lock(&self.state);
            state.lsn_next += written.durable as u64;
            leadership.owe_turn();
            state.group_last_count = written.members;
            state.counters.groups += 1;
            state.counters.records += written.durable as u64;
            state.sync_last = written.sync_elapsed;
            #[cfg(test)]
            {
                state.groups_led_max = state.groups_led_max.max(groups_led);
            }
            let keep_leading =
                !written.failed && !state.queue.is_empty() && groups_led < LEAD_GROUPS_MAX;
            if keep_leading {
                drop(state);
            } else {
                leadership.pass_on(&mut state);
                drop(state);
                leadership.tell_heir();
            }
            if let Some(cause) = leadership.finish() {
                if own_in_group {
                    own_outcome = Some(Err(Error::Poisoned { cause }));
                }
            }
            if !keep_leading {
                break;
            }
            state = lock(&self.state);
        }
        own_outcome
    }

    /// Waits (bounded) for the writers of the previous group to queue again.
    fn gather<'a>(
        &'a self,
        mut state: MutexGuard<'a, GroupState<T>>,
    ) -> MutexGuard<'a, GroupState<T>> {
        let wait_max = (state.sync_last / 2).min(GATHER_MAX);
        let deadline = Instant::now() + wait_max;
        while state.queue.len() < state.group_last_count && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .gathered
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state
    }
}

// The leader: what it holds, and its first step.

/// The leader's drop guard: what a leader (or `truncate_with`) owes at the
/// moment, so that a panic anywhere on its path settles it, in the manner of
/// redb's failure latch, which is armed on the unwinding path as well as on
/// the error path.
///
/// On the ordinary path everything owed is settled as the leader goes and
/// the drop finds nothing to do. If it finds something, the thread is
/// unwinding: `abandon` poisons the WAL, lets the sink's turn pass, tells
/// every writer still owed an outcome (`Poisoned`, naming the step), and
/// releases leadership, failing the queue, so that no writer parks for
/// ever and `stop` (which waits for no leader to be active and for the last
/// turn) returns. The guard lives on the leader's stack and adds no lock or
/// allocation to the ordinary path.
struct Leadership<'a, T> {
    wal: &'a Wal<T>,
    /// The leader's own waiter: its thread unwinds and reads no outcome,
    /// so it is never told one (it would not relay the wake-ups).
    own: Option<&'a Arc<Waiter>>,
    step: LeaderStep,
    hold: Hold,
    /// The group taken from the queue and being written: its writers are
    /// told nothing yet.
    group: Vec<Queued<T>>,
    /// The written group, until every member is told.
    completion: Option<Completion<T>>,
}

/// Whether a `Leadership`'s thread still holds leadership.
enum Hold {
    /// `leader_active` is set for this thread.
    Holding,
    /// Handed to this queued writer, who is not yet told.
    Chosen(Arc<Waiter>),
    /// Let go: handed on and told, or the log marked idle.
    Released,
}

/// Where a leader is: named in the error its writers get if it panics
/// there, and (in tests) where a test stops it or makes it panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaderStep {
    /// Waiting for the previous group's writers to queue again (state lock
    /// held).
    Gathering,
    /// Writing and syncing a group taken from the queue.
    Writing,
    /// Poisoning after a failed group, handing out the LSNs of a written one.
    Recording,
    /// Waiting for the sink's turn and giving it the durable records.
    Applying,
    /// Posting the group's outcomes and waking its writers.
    Telling,
    /// Choosing the next leader or marking the log idle (state lock held).
    PassingLeadership,
    /// `truncate_with` holds the log.
    Truncating,
}

impl LeaderStep {
    /// What was being done, as `Error::Panicked` says it.
    fn doing(self) -> &'static str {
        match self {
            LeaderStep::Gathering => "gathering a WAL group",
            LeaderStep::Writing => "writing a group of WAL records",
            LeaderStep::Recording => "recording a written WAL group",
            LeaderStep::Applying => "making durable records visible",
            LeaderStep::Telling => "telling a WAL group's writers their outcome",
            LeaderStep::PassingLeadership => "passing WAL leadership on",
            LeaderStep::Truncating => "truncating the WAL",
        }
    }
}

impl<'a, T> Leadership<'a, T> {
    /// Guards the leadership the caller has just taken.
    fn new(wal: &'a Wal<T>, own: Option<&'a Arc<Waiter>>, step: LeaderStep) -> Self {
        Leadership { wal, own, step, hold: Hold::Holding, group: Vec::new(), completion: None }
    }

    /// Notes the step the leader starts (tests may stop or panic here).
    fn enter(&mut self, step: LeaderStep) {
        self.step = step;
        #[cfg(test)]
        self.wal.probe(TestPoint::Leader(step));
    }

    /// Writes the group taken from the queue (nothing, if the WAL is
    /// poisoned), turns it into `completion`, each writer with its outcome,
    /// and poisons the WAL if the group's failure calls for it.
    fn write(&mut self, lsn_first: Lsn, poisoned: Option<Arc<Error>>) -> Written {
        self.enter(LeaderStep::Writing);
        let started = Instant::now();
        let (durable, error) = match poisoned {
            Some(cause) => (0, Some(GroupError::Poisoned(cause))),
            None => self.wal.write_group_contained(&self.group, lsn_first),
        };
        let sync_elapsed = started.elapsed();
        let members = self.group.len();
        let group = std::mem::take(&mut self.group);
        self.completion = Some(Completion::of(group, lsn_first, durable, error.as_ref()));

        self.enter(LeaderStep::Recording);
        if let Some(GroupError::Poisoned(cause)) = &error {
            self.wal.poison(cause);
        }
        Written { members, durable, failed: error.is_some(), sync_elapsed }
    }
}

// What the leader's steps call, in the order they call it.
impl<T> Wal<T> {
    /// `write_group`, with a panic under it (a bug in the I/O layer, say)
    /// turned into a failure that poisons the WAL.
    ///
    /// The leader's drop guard would keep every writer from hanging without
    /// this catch. It stays because it does better for a panic that comes
    /// from below the writer: the error names the panic's message (a guard
    /// never sees it), and the leader carries on as after a failed sync:
    /// its own write returns that error instead of unwinding into the
    /// application thread that happened to lead, and leadership is handed
    /// on in the ordinary way.
    fn write_group_contained(
        &self,
        group: &[Queued<T>],
        lsn_first: Lsn,
    ) -> (usize, Option<GroupError>) {
        match panic::catch_unwind(AssertUnwindSafe(|| self.write_group(group, lsn_first))) {
            Ok(outcome) => outcome,
            Err(payload) => {
                let message = panic_message(&*payload);
                let error = Error::Panicked { what: "writing a group of WAL records", message };
                (0, Some(GroupError::Poisoned(Arc::new(error))))
            }
        }
    }

    /// Frames, writes and syncs the group; returns how many of its records
    /// (a prefix) are durable, and the error that stopped the rest.
    fn write_group(&self, group: &[Queued<T>], lsn_first: Lsn) -> (usize, Option<GroupError>) {
        let mut log = lock(&self.log);
        let mut done = 0;
        while done < group.len() {
            if log.active.is_none() {
                if let Err(error) = self.roll(&mut log, lsn_first + done as u64) {
                    return (done, Some(classify(error)));
                }
            }
            let start = done;
            let Log { active, buffer, .. } = &mut *log;
            let segment = active.as_mut().expect("a segment is active after roll");
            buffer.clear();
            while let Some(queued) = group.get(done) {
                let needed = format::encoded_bytes(queued.payload.len());
                if segment.write_offset + buffer.len() as u64 + needed > self.options.segment_bytes
                {
                    break;
                }
                format::encode_record(
                    buffer,
                    &segment.segment.header,
                    lsn_first + done as u64,
                    &queued.payload,
                );
                done += 1;
            }
            if done == start {
                if segment.write_offset == SEGMENT_HEADER_BYTES {
                    // Config validation makes every accepted record fit an
                    // empty segment; failing here beats looping forever.
                    let error = Error::LimitExceeded {
                        what: "record bytes (segment too small)",
                        actual: group[done].payload.len() as u64,
                        limit: self.options.segment_bytes - SEGMENT_HEADER_BYTES,
                    };
                    return (done, Some(GroupError::Failed(error)));
                }
                self.seal(&mut log);
                continue;
            }
            let path = &segment.segment.path;
            if let Err(source) = segment.segment.file.write_at(segment.write_offset, buffer) {
                let error = Error::io(path, IoOp::Write, "records", source);
                if error.is_out_of_space() {
                    // Unsynced bytes may sit past write_offset: never write
                    // after them; continue in a fresh segment.
                    self.seal(&mut log);
                    return (start, Some(GroupError::Failed(error)));
                }
                return (start, Some(GroupError::Poisoned(Arc::new(error))));
            }
            if let Err(source) = segment.segment.file.sync_data() {
                return (
                    start,
                    Some(GroupError::Poisoned(Arc::new(Error::io(
                        path,
                        IoOp::Sync,
                        "records",
                        source,
                    )))),
                );
            }
            segment.write_offset += buffer.len() as u64;
            segment.lsn_last = Some(lsn_first + done as u64 - 1);
        }
        (done, None)
    }

    /// Seals the active segment (if any) and creates the next one, from the
    /// prepared spare when there is one for it.
    fn roll(&self, log: &mut Log, lsn_first: Lsn) -> Result<()> {
        self.seal(log);
        let mut spare = lock(&self.spare);
        let number = self.number_next.load(Ordering::Acquire);
        let (dir, shape) = (&self.options.dir, self.options.shape());
        let prepared = self.take_spare_for(&mut spare, number);
        let was_prepared = prepared.is_some();
        let segment = match prepared {
            Some(prepared) => install_segment(&*self.io, dir, prepared, lsn_first, shape)?,
            None => create_segment(&*self.io, dir, number, lsn_first, shape)?,
        };
        tracing::debug!(target: "factwal::wal", path = %segment.path.display(), lsn_first, prepared = was_prepared,
            "segment created");
        self.number_next.store(number + 1, Ordering::Release);
        drop(spare);
        self.segments_created.fetch_add(1, Ordering::Relaxed);
        self.segments_prepared.fetch_add(u64::from(was_prepared), Ordering::Relaxed);
        log.active =
            Some(ActiveSegment { segment, write_offset: SEGMENT_HEADER_BYTES, lsn_last: None });
        self.has_active.store(true, Ordering::Release);
        Ok(())
    }

    /// Takes the spare if it is the file of segment `number`; a spare for
    /// any other number is stale (the log outran its preparation) and is
    /// discarded.
    fn take_spare_for(
        &self,
        spare: &mut Option<PreparedSegment>,
        number: u64,
    ) -> Option<PreparedSegment> {
        match spare.take() {
            Some(prepared) if prepared.number == number => Some(prepared),
            Some(stale) => {
                discard_prepared(&*self.io, stale);
                None
            }
            None => None,
        }
    }

    /// Moves the active segment (if any) to the sealed ones.
    fn seal(&self, log: &mut Log) {
        if let Some(active) = log.active.take() {
            let mut sealed = lock(&self.sealed);
            self.has_active.store(false, Ordering::Release);
            sealed
                .push_back(SealedSegment { path: active.segment.path, lsn_last: active.lsn_last });
        }
    }

    /// Poisons the WAL with `cause` unless it already is, and says so at
    /// once (ERROR): no later write is acknowledged until the store is
    /// reopened.
    fn poison(&self, cause: &Arc<Error>) {
        let first = {
            let mut state = lock(&self.state);
            let first = state.poisoned.is_none();
            state.poisoned.get_or_insert_with(|| cause.clone());
            first
        };
        if first {
            tracing::error!(target: "factwal::wal", wal_dir = %self.options.dir.display(), cause = %error_chain(&**cause),
                "WAL poisoned: no later write is acknowledged until the store is reopened");
        }
    }

    /// Waits until the sink has seen every group before the one starting at
    /// `lsn_first`, and returns the lock whose release hands on the turn.
    fn wait_for_turn(&self, lsn_first: Lsn) -> MutexGuard<'_, Lsn> {
        let mut applied = lock(&self.applied);
        while *applied + 1 != lsn_first {
            debug_assert!(*applied < lsn_first, "groups complete in LSN order");
            applied = self.applied_changed.wait(applied).unwrap_or_else(PoisonError::into_inner);
        }
        applied
    }
}

// The written group, and the leader's remaining steps, in the order `lead`
// takes them; then the unwinding path.

/// A written group whose writers are not yet all told.
struct Completion<T> {
    lsn_first: Lsn,
    /// How many of the group's records, from `lsn_first`, are durable.
    durable: usize,
    /// The durable records' items, in LSN order, until the sink gets them.
    items: Vec<T>,
    /// Every writer of the group with its outcome, except the leader.
    members: Vec<(Arc<Waiter>, Result<Lsn>)>,
    /// Set once `lsn_next` has moved past the durable records, until the
    /// sink's turn for them has passed. Later groups, `stop` and
    /// `truncate_with` wait for that turn, so it must pass even if the
    /// leader panics.
    turn_owed: bool,
}

impl<T> Completion<T> {
    /// The written group, of which the first `durable` records reached the
    /// disk and the rest failed with `error`.
    fn of(
        group: Vec<Queued<T>>,
        lsn_first: Lsn,
        durable: usize,
        error: Option<&GroupError>,
    ) -> Completion<T> {
        // Checked before anything moves: nothing below panics with the
        // group's writers half moved out of the leader's reach.
        debug_assert!(
            durable <= group.len() && (durable == group.len() || error.is_some()),
            "a record that is not durable has an error"
        );
        let mut items = Vec::with_capacity(durable);
        let mut members = Vec::with_capacity(group.len());
        for (index, queued) in group.into_iter().enumerate() {
            let outcome = match error {
                Some(error) if index >= durable => Err(error.writer_error()),
                _ => {
                    items.push(queued.item);
                    Ok(lsn_first + index as u64)
                }
            };
            members.push((queued.waiter, outcome));
        }
        Completion { lsn_first, durable, items, members, turn_owed: false }
    }

    fn lsn_last(&self) -> Lsn {
        self.lsn_first + self.durable as u64 - 1
    }

    /// Withdraws every acknowledgement not yet given: the members whose
    /// records are durable are told `Poisoned` by `cause` instead, since
    /// whether their records became visible is not known.
    fn withdraw_acknowledgements(&mut self, cause: &Arc<Error>) {
        for (_, outcome) in &mut self.members {
            if outcome.is_ok() {
                *outcome = Err(Error::Poisoned { cause: cause.clone() });
            }
        }
    }
}

/// What the leader records of a group it wrote.
struct Written {
    /// Writers in the group, the leader's own included.
    members: usize,
    /// How many of their records (a prefix) are durable.
    durable: usize,
    /// Some record of the group is not durable.
    failed: bool,
    /// How long the write and its syncs took.
    sync_elapsed: Duration,
}

impl<T> Leadership<'_, T> {
    /// Takes the leader's own outcome out of the written group, if its
    /// record is in it: the leader returns it rather than being told it.
    fn take_own_outcome(&mut self) -> Option<Result<Lsn>> {
        let own = self.own?;
        let members = &mut self.completion.as_mut()?.members;
        let index = members.iter().position(|(waiter, _)| Arc::ptr_eq(waiter, own))?;
        Some(members.swap_remove(index).1)
    }

    /// Called under the state lock, in the same moment `lsn_next` moves past
    /// the written group's durable records.
    fn owe_turn(&mut self) {
        if let Some(completion) = &mut self.completion {
            completion.turn_owed = completion.durable > 0;
        }
    }

    /// Called under the state lock by whoever ends its hold on the log (a
    /// leader, or `truncate_with`): picks the first queued writer to lead
    /// next, or marks the log idle. `tell_heir` tells the one picked, after
    /// the lock is released.
    fn pass_on(&mut self, state: &mut GroupState<T>) {
        self.enter(LeaderStep::PassingLeadership);
        // Nothing between the change to `state` and `hold` can panic: the
        // guard must never release a leadership already handed on.
        // The first queued writer with a thread leads next; a queue of tasks
        // alone goes to the committer.
        let heir = state.queue.iter().find(|queued| queued.waiter.is_thread());
        self.hold = match heir {
            Some(heir) => Hold::Chosen(heir.waiter.clone()),
            None if !state.queue.is_empty() => {
                state.committer_wanted = true;
                self.wal.committer_wake.notify_one();
                Hold::Released
            }
            None => {
                state.leader_active = false;
                self.wal.idle.notify_all();
                Hold::Released
            }
        };
    }

    /// Tells the writer `pass_on` picked that it leads now.
    fn tell_heir(&mut self) {
        if let Hold::Chosen(heir) = std::mem::replace(&mut self.hold, Hold::Released) {
            heir.tell(Wake::Lead);
        }
    }

    /// Gives the written group's durable records to the sink, after every
    /// earlier group's, then tells each member its outcome (see
    /// `tell_group`). A panic in the sink poisons the WAL and fails the
    /// group's writes (their records are durable, but whether they became
    /// visible is unknown); the cause is returned.
    ///
    /// The sink's panic is caught here, not left to the guard, for the same
    /// reasons as `write_group_contained`'s: its message reaches the error,
    /// and the leader carries on.
    fn finish(&mut self) -> Option<Arc<Error>> {
        let wal = self.wal;
        self.enter(LeaderStep::Applying);
        let completion = self.completion.as_mut().expect("a written group to finish");
        let mut failure = None;
        if completion.turn_owed {
            let mut applied = wal.wait_for_turn(completion.lsn_first);
            let items = std::mem::take(&mut completion.items);
            let lsn_first = completion.lsn_first;
            let sunk = panic::catch_unwind(AssertUnwindSafe(|| (wal.sink)(lsn_first, items)));
            // The turn passes on even after a panic: later groups, `stop`
            // and `truncate_with` wait for it.
            *applied = completion.lsn_last();
            completion.turn_owed = false;
            wal.applied_changed.notify_all();
            drop(applied);
            if let Err(payload) = sunk {
                let message = panic_message(&*payload);
                let cause =
                    Arc::new(Error::Panicked { what: "making durable records visible", message });
                wal.sink_failed.store(true, Ordering::Release);
                wal.poison(&cause);
                completion.withdraw_acknowledgements(&cause);
                failure = Some(cause);
            }
        }
        self.enter(LeaderStep::Telling);
        if let Some(completion) = self.completion.take() {
            tell_group(completion.members);
        }
        failure
    }

    /// Settles what a leader that panicked still owes (see the type's doc).
    fn abandon(&mut self) {
        let wal = self.wal;
        let cause = Arc::new(Error::Panicked {
            what: self.step.doing(),
            message: UNWOUND_MESSAGE.to_string(),
        });
        wal.poison(&cause);
        let refused =
            |queued: Queued<T>| (queued.waiter, Err(Error::Poisoned { cause: cause.clone() }));
        let mut owed: Vec<(Arc<Waiter>, Result<Lsn>)> =
            std::mem::take(&mut self.group).into_iter().map(refused).collect();
        if let Some(mut completion) = self.completion.take() {
            if completion.turn_owed {
                let mut applied = wal.wait_for_turn(completion.lsn_first);
                *applied = completion.lsn_last();
                wal.applied_changed.notify_all();
            }
            if !completion.items.is_empty() {
                // Durable records the sink never got: it must not be folded
                // as if it held the log; the next open replays them.
                wal.sink_failed.store(true, Ordering::Release);
            }
            completion.withdraw_acknowledgements(&cause);
            owed.append(&mut completion.members);
        }
        match std::mem::replace(&mut self.hold, Hold::Released) {
            Hold::Holding => {
                let queue = {
                    let mut state = lock(&wal.state);
                    state.leader_active = false;
                    wal.idle.notify_all();
                    std::mem::take(&mut state.queue)
                };
                owed.extend(queue.into_iter().map(refused));
            }
            // The heir leads, finds the WAL poisoned and fails its group.
            Hold::Chosen(heir) => heir.tell(Wake::Lead),
            Hold::Released => {}
        }
        if let Some(own) = self.own {
            owed.retain(|(waiter, _)| !Arc::ptr_eq(waiter, own));
        }
        tell_group(owed);
    }
}

impl<T> Drop for Leadership<'_, T> {
    fn drop(&mut self) {
        let owes = !matches!(self.hold, Hold::Released)
            || !self.group.is_empty()
            || self.completion.is_some();
        if owes {
            self.abandon();
            debug_assert!(
                std::thread::panicking(),
                "a leader returned while still owing leadership or outcomes"
            );
        }
    }
}

// The checkpoint's side, closing, and what the store reads.
impl<T> Wal<T> {
    /// Makes the file of the next segment ahead of need (see `spare`), unless
    /// it is ready or the WAL is stopped. Returns whether it made one. A
    /// failure leaves no spare and harms nothing: the next roll then makes
    /// its segment itself.
    pub fn prepare_next_segment(&self) -> Result<bool> {
        if lock(&self.state).closed {
            return Ok(false);
        }
        let mut spare = lock(&self.spare);
        let number = self.number_next.load(Ordering::Acquire);
        if let Some(ready) = self.take_spare_for(&mut spare, number) {
            *spare = Some(ready);
            return Ok(false);
        }
        *spare = Some(prepare_segment(
            &*self.io,
            &self.options.dir,
            number,
            self.options.segment_bytes,
        )?);
        Ok(true)
    }

    /// Removes the spare, if any.
    fn discard_spare(&self) {
        if let Some(prepared) = lock(&self.spare).take() {
            discard_prepared(&*self.io, prepared);
        }
    }

    /// Removes sealed segments whose every record is at or below `lsn`, oldest
    /// first, then syncs the directory. Call only once a durable redb commit
    /// covers `lsn` (invariant 6). Returns how many were removed.
    ///
    /// While no segment is active (a roll failed, the disk full), the newest
    /// sealed one stays: a WAL in use never holds no segment at all, which
    /// the next open would take for a lost WAL.
    pub fn release_through(&self, lsn: Lsn) -> Result<usize> {
        let releasable: Vec<SealedSegment> = {
            let mut sealed = lock(&self.sealed);
            let mut count =
                sealed.iter().take_while(|s| s.lsn_last.is_none_or(|last| last <= lsn)).count();
            if count == sealed.len() && !self.has_active.load(Ordering::Acquire) {
                count = count.saturating_sub(1);
            }
            sealed.drain(..count).collect()
        };
        self.remove_in_order(releasable)
    }

    /// Removes segments oldest first; on the first failure the rest are put
    /// back (so no gap in segment numbers can appear) and the error returned.
    fn remove_in_order(&self, segments: Vec<SealedSegment>) -> Result<usize> {
        if segments.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut failure = None;
        for segment in &segments {
            if let Err(source) = self.io.remove(&segment.path) {
                failure = Some(Error::io(&segment.path, IoOp::Remove, "folded segment", source));
                break;
            }
            removed += 1;
        }
        if failure.is_some() {
            let mut sealed = lock(&self.sealed);
            for segment in segments[removed..].iter().rev() {
                sealed.push_front(segment.clone());
            }
        }
        let synced = self.sync_dir();
        match failure {
            Some(error) => Err(error),
            None => synced.map(|()| removed),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        let dir = &self.options.dir;
        self.io.sync_dir(dir).map_err(|e| Error::io(dir, IoOp::SyncDir, "WAL directory", e))
    }

    /// Stops accepting writes (later ones get `Error::Closed`) and waits for
    /// the writes already queued to finish.
    pub fn stop(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        // A committer waiting for work returns once no more can come.
        self.committer_wake.notify_all();
        // Writers already queued are led in turn; the last leader finds the
        // queue empty and marks the log idle.
        while state.leader_active {
            state = self.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let lsn_last = state.lsn_next - 1;
        drop(state);
        // The last groups may still be being applied.
        self.wait_applied(lsn_last);
    }

    /// Waits until the sink has seen every record made durable so far. Call
    /// with no leader active.
    fn wait_applied(&self, lsn_last: Lsn) {
        let mut applied = lock(&self.applied);
        while *applied < lsn_last {
            applied = self.applied_changed.wait(applied).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Removes every segment, active one included, and syncs the directory.
    /// Only after `stop` and after a durable fold of everything written.
    pub fn remove_all_segments(&self) -> Result<usize> {
        let segments: Vec<SealedSegment> = {
            let mut log = lock(&self.log);
            self.seal(&mut log);
            drop(log);
            lock(&self.sealed).drain(..).collect()
        };
        self.remove_in_order(segments)
    }

    /// Runs `fold` while no group is being written (queued writers wait),
    /// then removes every segment and, unless the WAL is stopped, starts a
    /// fresh one. `fold` must make everything written durable in redb.
    /// Returns how many segments were removed.
    ///
    /// This holds leadership, as a leader does, under the same drop guard: a
    /// panic in `fold` or below poisons the WAL, fails the writers queued
    /// meanwhile and releases leadership, then unwinds to the caller.
    pub fn truncate_with(&self, fold: impl FnOnce() -> Result<()>) -> Result<usize> {
        let mut state = lock(&self.state);
        while state.leader_active {
            state = self.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.leader_active = true;
        let lsn_next = state.lsn_next;
        let stopped = state.closed;
        drop(state);
        let mut leadership = Leadership::new(self, None, LeaderStep::Truncating);
        // Every durable record must be in the sink before `fold` runs.
        self.wait_applied(lsn_next - 1);

        let outcome = fold().and_then(|()| {
            if stopped {
                // Closing: leave no file behind (the directory sync that
                // follows the removals covers this one too).
                self.discard_spare();
                return self.remove_all_segments();
            }
            // Still open: the fresh segment is made before the old ones go,
            // so a WAL in use never holds no segment at all (the next open
            // would take that for a lost WAL). If the roll fails, the old
            // segments stay, folded, for a later pass.
            self.roll(&mut lock(&self.log), lsn_next)?;
            let old: Vec<SealedSegment> = lock(&self.sealed).drain(..).collect();
            self.remove_in_order(old)
        });

        leadership.pass_on(&mut lock(&self.state));
        leadership.tell_heir();
        outcome
    }

    /// What the writer has done since the store opened.
    pub fn counters(&self) -> WalCounters {
        let mut counters = lock(&self.state).counters;
        counters.segments_created = self.segments_created.load(Ordering::Relaxed);
        counters.segments_prepared = self.segments_prepared.load(Ordering::Relaxed);
        counters
    }

    /// The next LSN to be assigned.
    pub fn lsn_next(&self) -> Lsn {
        lock(&self.state).lsn_next
    }

    /// The failure that poisoned the WAL, if any.
    pub fn poisoned(&self) -> Option<Arc<Error>> {
        lock(&self.state).poisoned.clone()
    }

    /// True when the sink may miss or half-hold durable records (it
    /// panicked, or the leader panicked before giving them to it): what it
    /// holds (the store's overlay) must not be folded; the records are in
    /// the WAL for the next open.
    pub fn sink_failed(&self) -> bool {
        self.sink_failed.load(Ordering::Acquire)
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// The epoch written in every segment this WAL makes.
    pub fn epoch(&self) -> u32 {
        self.options.epoch
    }

    /// Test-only: runs the test's probe, if one is set, at `point`.
    #[cfg(test)]
    fn probe(&self, point: TestPoint) {
        if let Some(probe) = self.probe.get() {
            probe(point);
        }
    }
}

/// Test-only: a test's view of the writer (see `Wal::probe`).
#[cfg(test)]
type Probe = Box<dyn Fn(TestPoint) + Send + Sync>;

/// Test-only: the moments a probe is run at.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestPoint {
    /// A writer has queued (state lock held).
    Queued,
    /// A leader enters this step.
    Leader(LeaderStep),
}

/// Sync failures poison; anything else that stopped a segment from being
/// created is retryable (nothing was written that recovery could misread).
fn classify(error: Error) -> GroupError {
    let is_sync = matches!(&error, Error::Io { operation, .. } if operation.is_sync());
    if is_sync {
        GroupError::Poisoned(Arc::new(error))
    } else {
        GroupError::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{OpKind, Side, SimDisk};
    use crate::wal::io::StdIo;

    /// A WAL over `io` whose sink is slow and remembers the last LSN it
    /// applied.
    fn slow_sink_wal(dir: &Path, io: Arc<dyn WalIo>) -> (Arc<Wal<()>>, Arc<AtomicU64>) {
        let applied = Arc::new(AtomicU64::new(0));
        let seen = applied.clone();
        let sink: Sink<()> = Box::new(move |lsn_first, items| {
            std::thread::sleep(Duration::from_millis(5));
            let last = lsn_first + items.len() as u64 - 1;
            assert_eq!(
                seen.swap(last, Ordering::SeqCst),
                lsn_first - 1,
                "groups reach the sink in LSN order"
            );
        });
        let options = WalOptions {
            dir: dir.join("wal"),
            segment_bytes: 1 << 20,
            store_id: StoreId::new_random(),
            epoch: 1,
            max_record_bytes: 1024,
        };
        (Arc::new(Wal::start(io, options, 1, 1, sink).unwrap()), applied)
    }

    type Appends = Vec<std::thread::JoinHandle<Vec<Result<Lsn>>>>;

    fn append_from_threads(wal: &Arc<Wal<()>>, threads: usize, appends: usize) -> Appends {
        (0..threads)
            .map(|_| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    (0..appends).map(|_| wal.append(vec![7; 40], ())).collect()
                })
            })
            .collect()
    }

    #[test]
    fn truncate_and_stop_wait_for_the_group_still_being_applied() {
        // The sink runs after leadership has moved on, so `truncate_with`
        // and `stop` can find no leader active while a group is still being
        // applied; they must wait for it, or a fold would miss records whose
        // segments it then removes.
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path());
        let (wal, applied) = slow_sink_wal(dir.path(), disk.wal_io());
        let writers = append_from_threads(&wal, 8, 40);
        for _ in 0..20 {
            wal.truncate_with(|| {
                assert_eq!(
                    applied.load(Ordering::SeqCst),
                    wal.lsn_next() - 1,
                    "fold sees every durable record"
                );
                Ok(())
            })
            .unwrap();
        }
        for writer in writers {
            assert!(writer.join().unwrap().iter().all(Result::is_ok));
        }
        // `stop` comes while a group is on the disk: its sync is held until
        // `stop` has begun.
        let gate = disk.gate(OpKind::Sync, Some(Side::Wal));
        let writers = append_from_threads(&wal, 8, 5);
        assert!(gate.wait_held(1, Duration::from_secs(30)), "a group reached its sync");
        let stopping = std::thread::spawn({
            let wal = wal.clone();
            move || wal.stop()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !lock(&wal.state).closed {
            assert!(std::time::Instant::now() < deadline, "stop began");
            std::thread::yield_now();
        }
        assert_eq!(gate.held(), 1, "the group is still on the disk");
        gate.open();
        stopping.join().unwrap();
        assert_eq!(
            applied.load(Ordering::SeqCst),
            wal.lsn_next() - 1,
            "stop waits for the last group"
        );
        for writer in writers {
            // Appends that came after `stop` are refused; the rest finished.
            for outcome in writer.join().unwrap() {
                assert!(matches!(outcome, Ok(_) | Err(Error::Closed)), "{outcome:?}");
            }
        }
    }

    /// The real file system under a simulated disk whose every `sync_data`
    /// takes at least 3 ms: long enough for every woken writer to queue
    /// again during a sync.
    fn slow_syncs(dir: &Path) -> Arc<dyn WalIo> {
        let disk = SimDisk::new(dir);
        disk.before(OpKind::Sync, None, |_| std::thread::sleep(Duration::from_millis(3)));
        disk.wal_io()
    }

    /// The real file system under a simulated disk whose record writes
    /// (past the header at offset 0) panic from the `nth` on.
    fn panicking_writes(dir: &Path, nth: u64) -> Arc<dyn WalIo> {
        let disk = SimDisk::new(dir);
        let writes = AtomicU64::new(0);
        disk.before(OpKind::Write, None, move |call| {
            if call.offset > Some(0) && writes.fetch_add(1, Ordering::SeqCst) + 1 >= nth {
                panic!("a bug in the I/O layer");
            }
        });
        disk.wal_io()
    }

    fn options_in(dir: &Path) -> WalOptions {
        WalOptions {
            dir: dir.join("wal"),
            segment_bytes: 1 << 20,
            store_id: StoreId::new_random(),
            epoch: 1,
            max_record_bytes: 1024,
        }
    }

    #[test]
    fn a_panic_under_the_leader_poisons_tells_every_writer_and_lets_stop_return() {
        // Eight writers append while the I/O layer panics on the fifth
        // record write. The panic must not leave a leader flag set: every
        // writer returns (a record acknowledged before, or Poisoned naming
        // the panic), later appends are refused, and `stop`, which waits for
        // no leader to be active, returns.
        let dir = tempfile::tempdir().unwrap();
        let io = panicking_writes(dir.path(), 5);
        let sink: Sink<()> = Box::new(|_, _| {});
        let wal = Arc::new(Wal::start(io, options_in(dir.path()), 1, 1, sink).unwrap());
        let outcomes: Vec<Result<Lsn>> =
            append_from_threads(&wal, 8, 20).into_iter().flat_map(|t| t.join().unwrap()).collect();
        let acknowledged = outcomes.iter().filter(|o| o.is_ok()).count();
        assert!(acknowledged >= 1, "the writes before the panic were acknowledged");
        for outcome in outcomes.iter().filter(|o| o.is_err()) {
            match outcome {
                Err(Error::Poisoned { cause }) => {
                    assert!(matches!(**cause, Error::Panicked { .. }), "{cause}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(wal.append(vec![1; 40], ()), Err(Error::Poisoned { .. })));
        assert_eq!(
            wal.lsn_next(),
            acknowledged as u64 + 1,
            "LSNs went only to acknowledged records"
        );
        assert!(!wal.sink_failed(), "the sink never failed");
        wal.stop();
    }

    #[test]
    fn a_panic_in_the_sink_fails_that_group_and_marks_the_sink_unreliable() {
        // The sink panics on its second group. That write is durable but its
        // visibility is unknown: it fails with Poisoned, the WAL refuses
        // what follows, `sink_failed` says the sink's state cannot be folded,
        // and `stop` returns (the turn counter moved past the group).
        let dir = tempfile::tempdir().unwrap();
        let calls = AtomicU64::new(0);
        let sink: Sink<()> = Box::new(move |_, _| {
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("a bug in the sink");
            }
        });
        let wal = Wal::start(Arc::new(StdIo), options_in(dir.path()), 1, 1, sink).unwrap();
        assert_eq!(wal.append(vec![1; 40], ()).unwrap(), 1);
        match wal.append(vec![2; 40], ()) {
            Err(Error::Poisoned { cause }) => {
                assert!(cause.to_string().contains("a bug in the sink"), "{cause}")
            }
            other => panic!("{other:?}"),
        }
        assert!(wal.sink_failed());
        assert!(matches!(wal.append(vec![3; 40], ()), Err(Error::Poisoned { .. })));
        wal.stop();
    }

    #[test]
    fn a_leader_under_steady_load_leads_a_bounded_number_of_groups() {
        // Eight writers, 100 appends each with a pause of 0 to 3 ms between
        // them, on a disk whose syncs take 3 ms: arrivals are spread out, so
        // a writer almost always queues during each sync and the queue is
        // rarely empty when a leader looks. A leader keeps leading while
        // writers are queued, and its own append returns only when it stops:
        // unbounded, a leader would write dozens of groups in a row. The
        // bound must hold, and the sink must still see every record, in LSN
        // order.
        let dir = tempfile::tempdir().unwrap();
        let applied = Arc::new(AtomicU64::new(0));
        let seen = applied.clone();
        let sink: Sink<()> = Box::new(move |lsn_first, items| {
            let last = lsn_first + items.len() as u64 - 1;
            assert_eq!(
                seen.swap(last, Ordering::SeqCst),
                lsn_first - 1,
                "groups reach the sink in LSN order"
            );
        });
        let options = WalOptions {
            dir: dir.path().join("wal"),
            segment_bytes: 1 << 20,
            store_id: StoreId::new_random(),
            epoch: 1,
            max_record_bytes: 1024,
        };
        let wal = Arc::new(Wal::start(slow_syncs(dir.path()), options, 1, 1, sink).unwrap());
        let writers: Vec<_> = (0..8u64)
            .map(|writer| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    for append in 0..100u64 {
                        wal.append(vec![1; 40], ()).unwrap();
                        // A pause that differs between writers and appends.
                        let pause_us = (writer * 7919 + append * 104_729) % 3000;
                        std::thread::sleep(Duration::from_micros(pause_us));
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        wal.stop();
        let counters = wal.counters();
        assert_eq!(counters.records, 800);
        assert_eq!(applied.load(Ordering::SeqCst), 800, "the sink saw every durable record");
        let groups_led_max = lock(&wal.state).groups_led_max;
        assert!(
            groups_led_max <= LEAD_GROUPS_MAX,
            "one leader wrote {groups_led_max} groups in a row"
        );
        assert!(
            groups_led_max > 1,
            "the load kept a leader leading: {groups_led_max} groups in a row at most"
        );
    }
}
