//! The WAL writer: appends framed records to the active segment and syncs
//! them, sharing each sync among all writers that arrive while the previous
//! one is in flight (group commit).
//!
//! Protocol: a writer queues its payload, with a waiter of its own, under the
//! state lock. If no leader is active it becomes the leader: it takes the
//! whole queue and writes it with one `write_at` and one `sync_data` (two of
//! each when the group crosses into a new segment). It then hands leadership
//! to the first writer that queued during the sync, so the next group's
//! write starts at once, and applies its own group to the sink (the store's
//! overlay, which makes the records visible) while the next group is on the
//! disk. The sink still sees groups in LSN order: a leader takes the sink's
//! turn before it passes leadership on. Last, the leader posts each member's
//! outcome into the member's own waiter and wakes them as a binary tree (see
//! `Relay`). A member wakes once, for its own result, and never touches the
//! shared state to collect it: no herd of woken writers contends for a lock.
//!
//! Under steady load this makes two groups alternate: while one is on the
//! disk, the members of the other are being woken and queue their next
//! writes, so the disk is never idle for a wake-up.
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

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Lsn, Result};
use crate::wal::format::{self, SEGMENT_HEADER_BYTES};
use crate::wal::io::WalIo;
use crate::wal::segment::{create_segment, Segment};

/// Receives durable records, in LSN order, before their writers are told.
pub type Sink<T> = Box<dyn Fn(Lsn, Vec<T>) + Send + Sync>;

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
    payload: Vec<u8>,
    item: T,
    waiter: Arc<Waiter>,
}

#[derive(Debug, Clone)]
enum GroupError {
    /// The WAL is poisoned by this failure.
    Poisoned(Arc<Error>),
    /// The group failed without harm to the log (disk full): retry later.
    Failed(Arc<Error>),
}

/// What a queued writer is told.
#[derive(Debug)]
enum Wake {
    /// Nothing yet: keep sleeping.
    Waiting,
    /// Lead the next group (the writer is still queued, first in line).
    Lead,
    /// The writer's record is done; before returning, it wakes the members
    /// the relay names.
    Done(Result<Lsn>, Relay),
}

/// Wakes a finished group's members as a binary tree, so waking them takes
/// a few wake-up latencies instead of one per member on the leader's thread,
/// and the work is spread over every core. Every member's outcome is posted
/// before the first is woken; member `i` wakes members `2i+2` and `2i+3`.
#[derive(Debug)]
struct Relay {
    members: Arc<[Arc<Waiter>]>,
    index: usize,
}

impl Relay {
    fn wake_children(&self) {
        for child in [2 * self.index + 2, 2 * self.index + 3] {
            if let Some(waiter) = self.members.get(child) {
                waiter.thread.unpark();
            }
        }
    }
}

/// One queued writer's mailbox: written by whoever wakes it, read only by it.
#[derive(Debug)]
struct Waiter {
    wake: Mutex<Wake>,
    thread: Thread,
}

impl Waiter {
    fn new() -> Arc<Waiter> {
        Arc::new(Waiter { wake: Mutex::new(Wake::Waiting), thread: std::thread::current() })
    }

    fn tell(&self, wake: Wake) {
        self.post(wake);
        self.thread.unpark();
    }

    /// Leaves a message without waking the writer.
    fn post(&self, wake: Wake) {
        *lock(&self.wake) = wake;
    }

    /// Sleeps until told something other than `Waiting`.
    fn wait(&self) -> Wake {
        loop {
            // A statement of its own, so the lock is released before parking.
            let told = std::mem::replace(&mut *lock(&self.wake), Wake::Waiting);
            match told {
                Wake::Waiting => std::thread::park(),
                told => return told,
            }
        }
    }
}

struct GroupState<T> {
    queue: Vec<Queued<T>>,
    /// A leader is writing a group, or has been chosen and is waking up to
    /// (or `truncate_with` holds the log). While it is false the queue is
    /// empty: a writer that finds no leader leads itself.
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
    /// Held by a leader from before it passes leadership on until its
    /// records are in the sink: the next leader takes it after, so the sink
    /// sees groups in order, and `stop` and `truncate_with` take it to wait
    /// for the last group to be applied.
    sink_turn: Mutex<()>,
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
            leader_active: false,
            group_last_count: 0,
            sync_last: Duration::ZERO,
            counters: WalCounters::default(),
            lsn_next,
            poisoned: None,
            closed: false,
        };
        let (idle, gathered) = (Condvar::new(), Condvar::new());
        Ok(Wal {
            io,
            options,
            state: Mutex::new(state),
            idle,
            gathered,
            sink_turn: Mutex::new(()),
            log: Mutex::new(log),
            sink,
        })
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
        let waiter = Waiter::new();
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Error::Closed);
        }
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        state.queue.push(Queued { payload, item, waiter: waiter.clone() });
        if !state.leader_active {
            state.leader_active = true;
            return self.lead(state, &waiter, true);
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
            Wake::Lead => self.lead(lock(&self.state), &waiter, false),
            Wake::Waiting => unreachable!("Waiter::wait returns only when told"),
        }
    }

    /// Writes the whole queue as one group (`leader_active` is already set
    /// for this caller, whose own record is in the queue), passes leadership
    /// on, wakes the members and returns the leader's own outcome.
    fn lead(&self, state: MutexGuard<'_, GroupState<T>>, own: &Arc<Waiter>, gather: bool) -> Result<Lsn> {
        let mut state = if gather { self.gather(state) } else { state };
        let mut group = std::mem::take(&mut state.queue);
        let lsn_first = state.lsn_next;
        let poisoned = state.poisoned.clone();
        drop(state);

        let started = Instant::now();
        let (durable, error) = match poisoned {
            Some(cause) => (0, Some(GroupError::Poisoned(cause))),
            None => self.write_group(&group, lsn_first),
        };
        let sync_elapsed = started.elapsed();
        let count = group.len();
        let mut waiters = Vec::with_capacity(count);
        let mut items = Vec::with_capacity(durable);
        for (index, queued) in group.drain(..).enumerate() {
            if index < durable {
                items.push(queued.item);
            }
            waiters.push(queued.waiter);
        }

        // Take the sink's turn while still leader, so groups reach the sink
        // in LSN order, then let the next group start writing while this
        // one is applied.
        let sink_turn = lock(&self.sink_turn);
        let next_leader = {
            let mut state = lock(&self.state);
            if let Some(GroupError::Poisoned(cause)) = &error {
                state.poisoned.get_or_insert_with(|| cause.clone());
            }
            state.lsn_next += durable as u64;
            state.group_last_count = count;
            state.counters.groups += 1;
            state.counters.records += durable as u64;
            state.sync_last = sync_elapsed;
            self.pass_leadership(&mut state)
        };
        if let Some(next) = next_leader {
            next.tell(Wake::Lead);
        }
        if durable > 0 {
            (self.sink)(lsn_first, items);
        }
        drop(sink_turn);

        // Post every outcome, then wake the first two members; they wake
        // the rest (see `Relay`).
        let mut own_outcome = None;
        let mut members = Vec::with_capacity(count.saturating_sub(1));
        let mut outcomes = Vec::with_capacity(count.saturating_sub(1));
        for (index, waiter) in waiters.into_iter().enumerate() {
            let outcome = if index < durable {
                Ok(lsn_first + index as u64)
            } else {
                Err(match error.as_ref().expect("a record that is not durable has an error") {
                    GroupError::Poisoned(cause) => Error::Poisoned { cause: cause.clone() },
                    GroupError::Failed(error) => error.duplicate(),
                })
            };
            if Arc::ptr_eq(&waiter, own) {
                own_outcome = Some(outcome);
            } else {
                members.push(waiter);
                outcomes.push(outcome);
            }
        }
        let members: Arc<[Arc<Waiter>]> = members.into();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            members[index].post(Wake::Done(outcome, Relay { members: members.clone(), index }));
        }
        for waiter in members.iter().take(2) {
            waiter.thread.unpark();
        }
        own_outcome.expect("a leader's own record is in the group it leads")
    }

    /// Called with the state lock held by whoever ends its hold on the log
    /// (a leader, or `truncate_with`): picks the first queued writer to lead
    /// next, or marks the log idle. The caller tells the one returned, after
    /// releasing the lock.
    fn pass_leadership(&self, state: &mut GroupState<T>) -> Option<Arc<Waiter>> {
        match state.queue.first() {
            Some(first) => Some(first.waiter.clone()),
            None => {
                state.leader_active = false;
                self.idle.notify_all();
                None
            }
        }
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
        // Writers already queued are led in turn; the last leader finds the
        // queue empty and marks the log idle.
        while state.leader_active {
            state = self.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        // The last leader may still be applying its group.
        drop(lock(&self.sink_turn));
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
        // Every durable record must be in the sink before `fold` runs.
        drop(lock(&self.sink_turn));

        let outcome = fold().and_then(|()| {
            let removed = self.remove_all_segments()?;
            if !stopped {
                self.roll(&mut lock(&self.log), lsn_next)?;
            }
            Ok(removed)
        });

        let next_leader = self.pass_leadership(&mut lock(&self.state));
        if let Some(next) = next_leader {
            next.tell(Wake::Lead);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::wal::io::StdIo;

    /// A WAL whose sink is slow and remembers the last LSN it applied.
    fn slow_sink_wal(dir: &Path) -> (Arc<Wal<()>>, Arc<AtomicU64>) {
        let applied = Arc::new(AtomicU64::new(0));
        let seen = applied.clone();
        let sink: Sink<()> = Box::new(move |lsn_first, items| {
            std::thread::sleep(Duration::from_millis(5));
            let last = lsn_first + items.len() as u64 - 1;
            assert_eq!(seen.swap(last, Ordering::SeqCst), lsn_first - 1, "groups reach the sink in LSN order");
        });
        let options = WalOptions { dir: dir.join("wal"), segment_bytes: 1 << 20, payload_bytes_max: 1024 };
        (Arc::new(Wal::start(Arc::new(StdIo), options, 1, 1, sink).unwrap()), applied)
    }

    type Appends = Vec<std::thread::JoinHandle<Vec<Result<Lsn>>>>;

    fn append_from_threads(wal: &Arc<Wal<()>>, threads: usize, appends: usize) -> Appends {
        (0..threads)
            .map(|_| {
                let wal = wal.clone();
                std::thread::spawn(move || (0..appends).map(|_| wal.append(vec![7; 40], ())).collect())
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
        let (wal, applied) = slow_sink_wal(dir.path());
        let writers = append_from_threads(&wal, 8, 40);
        for _ in 0..20 {
            wal.truncate_with(|| {
                assert_eq!(applied.load(Ordering::SeqCst), wal.lsn_next() - 1, "fold sees every durable record");
                Ok(())
            })
            .unwrap();
        }
        for writer in writers {
            assert!(writer.join().unwrap().iter().all(Result::is_ok));
        }
        let writers = append_from_threads(&wal, 8, 5);
        std::thread::sleep(Duration::from_millis(2));
        wal.stop();
        assert_eq!(applied.load(Ordering::SeqCst), wal.lsn_next() - 1, "stop waits for the last group");
        for writer in writers {
            // Appends that came after `stop` are refused; the rest finished.
            for outcome in writer.join().unwrap() {
                assert!(matches!(outcome, Ok(_) | Err(Error::Closed)), "{outcome:?}");
            }
        }
    }
}
