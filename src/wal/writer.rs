//! The WAL writer: appends framed records to the active segment and syncs
//! them, sharing each sync among all writers that arrive while the previous
//! one is in flight (group commit).
//!
//! Protocol: a writer queues its payload under the state lock and joins the
//! open group's slot. If no leader is active it becomes the leader: it takes
//! the whole queue (and opens a fresh slot for later arrivals), writes it with
//! one `write_at` and one `sync_data` (two of each when the group crosses
//! into a new segment), hands the durable records to the sink (the store's
//! overlay, which makes them visible), then publishes each member's outcome.
//! It wakes exactly the members of its group, and one writer of the next
//! group to lead it: each write costs about one thread wake-up, however many
//! writers wait.
//!
//! Gathering: the members of a finished group come back with their next
//! writes a few microseconds apart, and the first of them would otherwise
//! lead a group of one while the rest queue behind its sync. So a new leader
//! waits until as many writers have queued as were in the previous group, but
//! never longer than half the previous sync (and at most `GATHER_MAX`). A
//! lone writer never waits: its previous group had one member. LSNs are assigned by the leader, in queue order, only to
//! records that become durable, so they stay dense even when a group fails.
//!
//! A failed sync, or a failed write other than "disk full", poisons the WAL:
//! no later write is acknowledged until the store is reopened (invariant 9).
//! A write refused for lack of space leaves unsynced bytes behind, so the
//! segment is abandoned and the next group starts a new one; recovery knows
//! to ignore an abandoned tail because the next segment's header says where
//! the log continues.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Lsn, Result};
use crate::wal::format::{self, SEGMENT_HEADER_BYTES};
use crate::wal::io::WalIo;
use crate::wal::segment::{create_segment, Segment};

/// Receives durable records, in LSN order, before their writers are told.
pub type Sink<T> = Box<dyn Fn(Lsn, Vec<T>) + Send + Sync>;

/// Most outcomes of finished groups kept for writers that have not yet woken.
/// A writer can only be this far behind if that many groups completed while
/// it slept; every queued writer is in some group, so this is bounded by the
/// number of threads, and the limit is an assertion, not a policy.
const OUTCOMES_MAX: usize = 1 << 20;

/// The longest a new leader waits for the writers of the previous group to
/// queue again.
const GATHER_MAX: Duration = Duration::from_micros(100);

/// Where and how segments are written.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The WAL directory.
    pub dir: PathBuf,
    /// Preallocated size of each segment.
    pub segment_bytes: u64,
    /// Largest payload accepted.
    pub payload_bytes_max: u64,
}

/// Counts of what the writer has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalCounters {
    /// Groups written (each one write and one sync, or two of each when the
    /// group crossed into a new segment).
    pub groups: u64,
    /// Records made durable.
    pub records: u64,
    /// Segments created.
    pub segments_created: u64,
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

/// The files: touched only by the leader, and by release and close.
#[derive(Debug)]
struct Log {
    active: Option<ActiveSegment>,
    sealed: VecDeque<SealedSegment>,
    number_next: u64,
    segments_created: u64,
    buffer: Vec<u8>,
}

struct Queued<T> {
    ticket: u64,
    payload: Vec<u8>,
    item: T,
}

#[derive(Debug, Clone)]
enum GroupError {
    /// The WAL is poisoned by this failure.
    Poisoned(Arc<Error>),
    /// The group failed without harm to the log (disk full): retry later.
    Failed(Arc<Error>),
}

#[derive(Debug)]
struct Outcome {
    ticket_first: u64,
    count: u64,
    durable: u64,
    lsn_first: Lsn,
    error: Option<GroupError>,
    uncollected: u64,
}

/// Where the members of one group sleep until their group is done.
#[derive(Debug, Default)]
struct Slot {
    wake: Condvar,
}

struct GroupState<T> {
    queue: Vec<Queued<T>>,
    /// The slot of the group now filling (the queue).
    slot_open: Arc<Slot>,
    ticket_next: u64,
    outcomes: VecDeque<Outcome>,
    leader_active: bool,
    /// Members of the last group written, and how long its sync took: what
    /// the next leader gathers for.
    group_last_count: usize,
    sync_last: Duration,
    counters: WalCounters,
    lsn_next: Lsn,
    poisoned: Option<Arc<Error>>,
    closed: bool,
}

/// The segmented write-ahead log with group commit.
pub struct Wal<T> {
    io: Arc<dyn WalIo>,
    options: WalOptions,
    state: Mutex<GroupState<T>>,
    /// Wakes `stop` and `truncate_with`, which wait for no leader to be active.
    idle: Condvar,
    /// Wakes a gathering leader once enough writers have queued.
    gathered: Condvar,
    log: Mutex<Log>,
    sink: Sink<T>,
}

impl<T> std::fmt::Debug for Wal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("options", &self.options).finish_non_exhaustive()
    }
}

fn lock<G>(mutex: &Mutex<G>) -> MutexGuard<'_, G> {
    // A panic while holding one of these locks is a bug; the state it guards
    // is still consistent (every update is a single assignment), so carry on.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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
        crate::store::ensure_durable_dir(&*io, &options.dir)?;
        let segment = create_segment(&*io, &options.dir, number_next, lsn_next, options.segment_bytes)?;
        let log = Log {
            active: Some(ActiveSegment { segment, write_offset: SEGMENT_HEADER_BYTES, lsn_last: None }),
            sealed: VecDeque::new(),
            number_next: number_next + 1,
            segments_created: 1,
            buffer: Vec::new(),
        };
        let state = GroupState {
            queue: Vec::new(),
            slot_open: Arc::default(),
            ticket_next: 0,
            outcomes: VecDeque::new(),
            leader_active: false,
            group_last_count: 0,
            sync_last: Duration::ZERO,
            counters: WalCounters::default(),
            lsn_next,
            poisoned: None,
            closed: false,
        };
        let (idle, gathered) = (Condvar::new(), Condvar::new());
        Ok(Wal { io, options, state: Mutex::new(state), idle, gathered, log: Mutex::new(log), sink })
    }

    /// Appends one record and returns its LSN once it is durable and the
    /// sink has seen it.
    pub fn append(&self, payload: Vec<u8>, item: T) -> Result<Lsn> {
        if payload.len() as u64 > self.options.payload_bytes_max {
            return Err(Error::LimitExceeded {
                what: "record bytes",
                actual: payload.len() as u64,
                limit: self.options.payload_bytes_max,
            });
        }
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Error::Closed);
        }
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let ticket = state.ticket_next;
        state.ticket_next += 1;
        state.queue.push(Queued { ticket, payload, item });
        if state.leader_active && state.queue.len() == state.group_last_count {
            self.gathered.notify_one();
        }
        let slot = state.slot_open.clone();
        loop {
            if let Some(outcome) = collect_outcome(&mut state, ticket) {
                return outcome;
            }
            if !state.leader_active {
                state = self.lead(state);
                continue;
            }
            state = slot.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Writes the whole queue as one group; returns with the state lock held
    /// again and the group's outcome published.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, GroupState<T>>) -> MutexGuard<'a, GroupState<T>> {
        state.leader_active = true;
        state = self.gather(state);
        let mut group = std::mem::take(&mut state.queue);
        let slot = std::mem::take(&mut state.slot_open);
        let lsn_first = state.lsn_next;
        let poisoned = state.poisoned.clone();
        drop(state);

        let started = Instant::now();
        let (durable, error) = match poisoned {
            Some(cause) => (0, Some(GroupError::Poisoned(cause))),
            None => self.write_group(&group, lsn_first),
        };
        let sync_elapsed = started.elapsed();
        let ticket_first = group.first().map_or(0, |queued| queued.ticket);
        let count = group.len() as u64;
        if durable > 0 {
            let items = group.drain(..durable).map(|queued| queued.item).collect();
            (self.sink)(lsn_first, items);
        }
        drop(group);

        let mut state = lock(&self.state);
        if let Some(GroupError::Poisoned(cause)) = &error {
            state.poisoned.get_or_insert_with(|| cause.clone());
        }
        state.lsn_next += durable as u64;
        state.group_last_count = group_count(count);
        state.counters.groups += 1;
        state.counters.records += durable as u64;
        state.sync_last = sync_elapsed;
        assert!(state.outcomes.len() < OUTCOMES_MAX, "group outcomes are collected by their writers");
        state.outcomes.push_back(Outcome {
            ticket_first,
            count,
            durable: durable as u64,
            lsn_first,
            error,
            uncollected: count,
        });
        state.leader_active = false;
        slot.wake.notify_all();
        if !state.queue.is_empty() {
            // Any one member of the next group can lead it.
            state.slot_open.wake.notify_one();
        }
        self.idle.notify_all();
        state
    }

    /// Waits (bounded) for the writers of the previous group to queue again.
    fn gather<'a>(&'a self, mut state: MutexGuard<'a, GroupState<T>>) -> MutexGuard<'a, GroupState<T>> {
        let wait_max = (state.sync_last / 2).min(GATHER_MAX);
        let deadline = Instant::now() + wait_max;
        while state.queue.len() < state.group_last_count && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self.gathered.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        state
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
                let needed = format::record_bytes(queued.payload.len());
                if segment.write_offset + buffer.len() as u64 + needed > self.options.segment_bytes {
                    break;
                }
                format::encode_record(buffer, &segment.segment.header, lsn_first + done as u64, &queued.payload);
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
                    return (done, Some(GroupError::Failed(Arc::new(error))));
                }
                seal(&mut log);
                continue;
            }
            let path = &segment.segment.path;
            if let Err(source) = segment.segment.file.write_at(segment.write_offset, buffer) {
                let error = Error::io(path, "write records", source);
                if error.is_out_of_space() {
                    // Unsynced bytes may sit past write_offset: never write
                    // after them; continue in a fresh segment.
                    seal(&mut log);
                    return (start, Some(GroupError::Failed(Arc::new(error))));
                }
                return (start, Some(GroupError::Poisoned(Arc::new(error))));
            }
            if let Err(source) = segment.segment.file.sync_data() {
                return (start, Some(GroupError::Poisoned(Arc::new(Error::io(path, "sync records", source)))));
            }
            segment.write_offset += buffer.len() as u64;
            segment.lsn_last = Some(lsn_first + done as u64 - 1);
        }
        (done, None)
    }

    /// Seals the active segment (if any) and creates the next one.
    fn roll(&self, log: &mut Log, lsn_first: Lsn) -> Result<()> {
        seal(log);
        let segment =
            create_segment(&*self.io, &self.options.dir, log.number_next, lsn_first, self.options.segment_bytes)?;
        tracing::debug!(target: "factwal::wal", path = %segment.path.display(), lsn_first, "segment created");
        log.number_next += 1;
        log.segments_created += 1;
        log.active = Some(ActiveSegment { segment, write_offset: SEGMENT_HEADER_BYTES, lsn_last: None });
        Ok(())
    }

    /// Removes sealed segments whose every record is at or below `lsn`, oldest
    /// first, then syncs the directory. Call only once a durable redb commit
    /// covers `lsn` (invariant 6). Returns how many were removed.
    pub fn release_through(&self, lsn: Lsn) -> Result<usize> {
        let releasable: Vec<SealedSegment> = {
            let mut log = lock(&self.log);
            let count = log.sealed.iter().take_while(|s| s.lsn_last.is_none_or(|last| last <= lsn)).count();
            log.sealed.drain(..count).collect()
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
                failure = Some(Error::io(&segment.path, "remove folded segment", source));
                break;
            }
            removed += 1;
        }
        if failure.is_some() {
            let mut log = lock(&self.log);
            for segment in segments[removed..].iter().rev() {
                log.sealed.push_front(segment.clone());
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
        self.io.sync_dir(dir).map_err(|e| Error::io(dir, "sync WAL directory", e))
    }

    /// Stops accepting writes (later ones get `Error::Closed`) and waits for
    /// the writes already queued to finish.
    pub fn stop(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        while state.leader_active || !state.queue.is_empty() {
            if !state.leader_active {
                // Queued writers lead themselves once woken.
                state.slot_open.wake.notify_one();
            }
            state = self.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Removes every segment, active one included, and syncs the directory.
    /// Only after `stop` and after a durable fold of everything written.
    pub fn remove_all_segments(&self) -> Result<usize> {
        let segments: Vec<SealedSegment> = {
            let mut log = lock(&self.log);
            seal(&mut log);
            log.sealed.drain(..).collect()
        };
        self.remove_in_order(segments)
    }

    /// Runs `fold` while no group is being written (queued writers wait),
    /// then removes every segment and, unless the WAL is stopped, starts a
    /// fresh one. `fold` must make everything written durable in redb.
    /// Returns how many segments were removed.
    pub fn truncate_with(&self, fold: impl FnOnce() -> Result<()>) -> Result<usize> {
        let mut state = lock(&self.state);
        while state.leader_active {
            state = self.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.leader_active = true;
        let lsn_next = state.lsn_next;
        let stopped = state.closed;
        drop(state);

        let outcome = fold().and_then(|()| {
            let removed = self.remove_all_segments()?;
            if !stopped {
                self.roll(&mut lock(&self.log), lsn_next)?;
            }
            Ok(removed)
        });

        let mut state = lock(&self.state);
        state.leader_active = false;
        if !state.queue.is_empty() {
            state.slot_open.wake.notify_one();
        }
        self.idle.notify_all();
        drop(state);
        outcome
    }

    /// What the writer has done since the store opened.
    pub fn counters(&self) -> WalCounters {
        let mut counters = lock(&self.state).counters;
        counters.segments_created = lock(&self.log).segments_created;
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

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }
}

fn group_count(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

fn seal(log: &mut Log) {
    if let Some(active) = log.active.take() {
        log.sealed.push_back(SealedSegment { path: active.segment.path, lsn_last: active.lsn_last });
    }
}

/// Sync failures poison; anything else that stopped a segment from being
/// created is retryable (nothing was written that recovery could misread).
fn classify(error: Error) -> GroupError {
    let is_sync = matches!(&error, Error::Io { operation, .. } if operation.starts_with("sync"));
    if is_sync {
        GroupError::Poisoned(Arc::new(error))
    } else {
        GroupError::Failed(Arc::new(error))
    }
}

/// Takes this ticket's result out of the published outcomes, if its group
/// has finished.
fn collect_outcome<T>(state: &mut GroupState<T>, ticket: u64) -> Option<Result<Lsn>> {
    let index = state.outcomes.iter().position(|o| (o.ticket_first..o.ticket_first + o.count).contains(&ticket))?;
    let outcome = &mut state.outcomes[index];
    let position = ticket - outcome.ticket_first;
    let result = if position < outcome.durable {
        Ok(outcome.lsn_first + position)
    } else {
        Err(match outcome.error.as_ref().expect("a record that is not durable has an error") {
            GroupError::Poisoned(cause) => Error::Poisoned { cause: cause.clone() },
            GroupError::Failed(error) => error.duplicate(),
        })
    };
    outcome.uncollected -= 1;
    if outcome.uncollected == 0 {
        state.outcomes.remove(index);
    }
    Some(result)
}
