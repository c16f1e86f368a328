//! How a queued writer is told what became of its write: a mailbox per
//! writer, and a relay that wakes a finished group's writers as a tree.
//!
//! The wake protocol, between the thread that settles a write (a leader, or
//! a leader's drop guard after a panic) and the writer that waits for it:
//!
//! 1. The writer makes its [`Waiter`] (an empty mailbox and a handle on its
//!    own thread) before it queues, and parks in [`Waiter::wait`] until the
//!    mailbox holds something other than [`Wake::Waiting`].
//! 2. Whoever settles the write posts one message into the mailbox and
//!    unparks the thread. `wait` reads the mailbox before every park, and an
//!    unpark that comes before the park makes that park return at once, so
//!    a message is never missed; a spurious return from `park` finds the
//!    mailbox still empty and parks again.
//! 3. A writer is told exactly one thing: [`Wake::Lead`] (it leads the next
//!    group, its own record still queued) or [`Wake::Done`] (its outcome).
//! 4. The outcomes of a whole group are posted by [`tell_group`] before the
//!    poster wakes anyone, and it unparks only the first two members. Every
//!    member, once awake, unparks two more ([`Relay`]) before it returns,
//!    so the group wakes as a binary tree: a few wake-up latencies instead
//!    of one per member on one thread, spread over every core, and the
//!    poster is free again after two unparks.
//! 5. Children are posted before their parent. A member may read its
//!    outcome the moment it is posted, before any wake-up meant for it
//!    (a spurious one, or a relay's unpark that reached the thread after
//!    its previous write returned and was kept as a token), and relays at
//!    once; its children must already have theirs, or they would park
//!    again and never be woken. Posting in the other order lost wake-ups:
//!    2 of about 50 runs of `examples/group_commit` (8 writers, tmpfs) left
//!    a writer parked for ever, and 64 threads appending to one WAL on
//!    tmpfs hung after 7.0 and 4.2 million appends; posting children first,
//!    24.6 million appends ran without a hang.
//!
//! A write submitted without a thread to park (`Wal::submit`, behind
//! `Store::write_async`) has a *task* mailbox instead: it holds the waker of
//! whoever polls for the outcome (a future, or `Ticket::wait`'s thread), set
//! under the same lock as the message, so a message posted between a poll
//! that found nothing and the waker's registration is never missed. Task
//! mailboxes are never led and never relay: `tell_group` wakes each one
//! itself, after posting, and builds the relay tree from thread mailboxes
//! alone.
//!
//! Lock rule: a mailbox's lock is a leaf. It is held only to move one
//! message (or a waker) in or out, never while another lock is taken, never
//! across a park, an unpark, a wake, I/O or the sink.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use crate::error::{Lsn, Result};
use crate::sync::lock;

/// What a queued writer is told.
#[derive(Debug)]
pub(super) enum Wake {
    /// Nothing yet: keep sleeping.
    Waiting,
    /// Lead the next group (the writer is still queued, first in line).
    Lead,
    /// The writer's record is done; before returning, it wakes the members
    /// the relay names.
    Done(Result<Lsn>, Relay),
}

/// One queued writer's mailbox: written by whoever settles its write, read
/// only by the writer.
#[derive(Debug)]
pub(super) struct Waiter {
    /// The message, and a task's waker: a leaf lock (see the module's lock
    /// rule).
    wake: Mutex<Mailbox>,
    /// The writer's thread, parked in `wait`; `None` for a task mailbox.
    thread: Option<Thread>,
}

struct Mailbox {
    message: Wake,
    /// A task mailbox's waker, from the last poll that found nothing.
    waker: Option<Waker>,
    /// Dropped once the outcome is posted (a task's permit, which its
    /// owner counts writes in flight with); dropped outside the lock.
    release: Option<Release>,
}

/// What a task mailbox drops once its outcome is posted.
pub type Release = Box<dyn Send>;

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("message", &self.message)
            .field("waker", &self.waker)
            .field("release", &self.release.is_some())
            .finish()
    }
}

impl Waiter {
    /// A mailbox for the calling thread, which will wait on it.
    pub(super) fn new() -> Arc<Waiter> {
        Waiter::with_thread(Some(std::thread::current()))
    }

    /// A mailbox for a task, polled through [`Waiter::poll_done`], which
    /// drops `release` once its outcome is posted.
    pub(super) fn for_task(release: Option<Release>) -> Arc<Waiter> {
        let mailbox = Mailbox { message: Wake::Waiting, waker: None, release };
        Arc::new(Waiter { wake: Mutex::new(mailbox), thread: None })
    }

    fn with_thread(thread: Option<Thread>) -> Arc<Waiter> {
        let mailbox = Mailbox { message: Wake::Waiting, waker: None, release: None };
        Arc::new(Waiter { wake: Mutex::new(mailbox), thread })
    }

    /// True for a mailbox with a thread behind it, which can lead and relay.
    pub(super) fn is_thread(&self) -> bool {
        self.thread.is_some()
    }

    /// Posts `wake` and wakes the writer.
    pub(super) fn tell(&self, wake: Wake) {
        let waker = self.post(wake);
        self.notify(waker);
    }

    /// Leaves a message without waking the writer; returns a task's waker,
    /// for the caller to wake once no lock is held.
    fn post(&self, wake: Wake) -> Option<Waker> {
        let settled = matches!(wake, Wake::Done(..));
        let (waker, release) = {
            let mut mailbox = lock(&self.wake);
            mailbox.message = wake;
            let release = if settled { mailbox.release.take() } else { None };
            (mailbox.waker.take(), release)
        };
        // Released before the task is woken: a task that writes again at
        // once finds its permit back.
        drop(release);
        waker
    }

    /// Wakes the writer: unparks its thread, or wakes its task.
    fn notify(&self, waker: Option<Waker>) {
        match (&self.thread, waker) {
            (Some(thread), _) => thread.unpark(),
            (None, Some(waker)) => waker.wake(),
            (None, None) => {}
        }
    }

    /// A task's outcome, once posted; until then the waker is kept (under
    /// the mailbox's lock) for the poster to wake.
    pub(super) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let mut mailbox = lock(&self.wake);
        match std::mem::replace(&mut mailbox.message, Wake::Waiting) {
            Wake::Done(outcome, _) => Poll::Ready(outcome),
            Wake::Waiting => {
                match &mailbox.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => mailbox.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Wake::Lead => unreachable!("a task mailbox is never told to lead"),
        }
    }

    /// Sleeps until told something other than `Waiting`.
    pub(super) fn wait(&self) -> Wake {
        loop {
            // A statement of its own, so the lock is released before parking.
            let told = std::mem::replace(&mut lock(&self.wake).message, Wake::Waiting);
            match told {
                Wake::Waiting => std::thread::park(),
                told => return told,
            }
        }
    }
}

/// Wakes a finished group's members as a binary tree. Every member's
/// outcome is posted, children before parents, before the poster wakes
/// anyone; member `i` wakes members `2i+2` and `2i+3` once it has read its
/// own, and `tell_group` wakes members 0 and 1, so every member is woken
/// after its outcome is there.
#[derive(Debug)]
pub(super) struct Relay {
    members: Arc<[Arc<Waiter>]>,
    index: usize,
}

impl Relay {
    /// Wakes this member's two children in the tree. A member calls it once
    /// it has read its own outcome, before it returns.
    pub(super) fn wake_children(&self) {
        for child in [2 * self.index + 2, 2 * self.index + 3] {
            if let Some(waiter) = self.members.get(child) {
                waiter.notify(None);
            }
        }
    }
}

/// Posts each member's outcome, then wakes the first two; the rest are
/// woken by the relay. The caller holds no lock.
pub(super) fn tell_group(members: Vec<(Arc<Waiter>, Result<Lsn>)>) {
    if members.iter().all(|(waiter, _)| waiter.is_thread()) {
        return tell_group_observed(members, |_, _| {});
    }
    // Tasks neither relay nor are relayed to: each is woken here.
    let (threads, tasks): (Vec<_>, Vec<_>) =
        members.into_iter().partition(|(waiter, _)| waiter.is_thread());
    tell_group_observed(threads, |_, _| {});
    for (waiter, outcome) in tasks {
        waiter.settle(outcome);
    }
}

/// `tell_group`, calling `posted` after each member's outcome is posted
/// (tests check the order; the library passes a closure that does nothing).
///
/// Children are posted before their parent: member `i`'s children are
/// `2i+2` and `2i+3`, so posting from the last member to the first does
/// it. A member can read its outcome before anyone wakes it, as soon as
/// it is posted: `park` may return spuriously, and a relay's unpark that
/// reaches a thread after its write returned is left as a token that ends
/// the thread's next park at once. Such a member relays at once too; had
/// its children not been posted yet, they would read nothing, park again,
/// and never be woken (the poster wakes only the first two).
fn tell_group_observed(
    members: Vec<(Arc<Waiter>, Result<Lsn>)>,
    mut posted: impl FnMut(&[Arc<Waiter>], usize),
) {
    let (waiters, outcomes): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let waiters: Arc<[Arc<Waiter>]> = waiters.into();
    for (index, outcome) in outcomes.into_iter().enumerate().rev() {
        let _no_waker =
            waiters[index].post(Wake::Done(outcome, Relay { members: waiters.clone(), index }));
        posted(&waiters, index);
    }
    for waiter in waiters.iter().take(2) {
        waiter.notify(None);
    }
}

/// A task's write before it is queued: a task mailbox whose [`Receipt`]
/// is already handed out. Its holder queues the record with `Wal::submit`,
/// which settles it when the WAL refuses, or settles it itself
/// ([`Pending::settle`]), for a write that never reaches the WAL. One
/// dropped unsettled (an unwinding holder) settles as `Closed`: its write
/// was never queued, and its receipt is never left waiting.
#[derive(Debug)]
pub struct Pending {
    waiter: Option<Arc<Waiter>>,
}

impl Pending {
    /// A task mailbox and its receipt; the mailbox drops `release` once its
    /// outcome is posted.
    pub fn new(release: Option<Release>) -> (Pending, Receipt) {
        let waiter = Waiter::for_task(release);
        (Pending { waiter: Some(waiter.clone()) }, Receipt { waiter })
    }

    /// Posts the write's outcome and wakes whoever polls its receipt.
    pub fn settle(mut self, outcome: Result<Lsn>) {
        if let Some(waiter) = self.waiter.take() {
            waiter.settle(outcome);
        }
    }

    /// The mailbox, for the queue that will settle it.
    pub(super) fn into_waiter(mut self) -> Arc<Waiter> {
        self.waiter.take().expect("a pending write's mailbox is taken once")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            waiter.settle(Err(crate::error::Error::Closed));
        }
    }
}

impl Waiter {
    /// Posts a task's outcome and wakes it (a task is never relayed to).
    pub(super) fn settle(&self, outcome: Result<Lsn>) {
        debug_assert!(!self.is_thread(), "only a task's mailbox is settled alone");
        let nobody: Arc<[Arc<Waiter>]> = Arc::new([]);
        let waker = self.post(Wake::Done(outcome, Relay { members: nobody, index: 0 }));
        self.notify(waker);
    }
}

/// A record queued by `Wal::submit`: its outcome, once settled, polled
/// (as a future does) or waited for (as a blocking caller does).
#[derive(Debug)]
pub struct Receipt {
    waiter: Arc<Waiter>,
}

impl Receipt {
    /// The outcome once settled; until then `cx`'s waker is woken when it
    /// is. Once `Ready` has been returned, the outcome is gone: a later
    /// poll returns `Pending` for ever.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        self.waiter.poll_done(cx)
    }

    /// Blocks the calling thread until the outcome is settled.
    pub fn wait(self) -> Result<Lsn> {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match self.waiter.poll_done(&mut cx) {
                Poll::Ready(outcome) => return outcome,
                // A wake before the park ends it at once: nothing is missed.
                Poll::Pending => std::thread::park(),
            }
        }
    }
}

/// Wakes a thread parked in `Receipt::wait`.
struct ThreadWaker(Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Long enough for any thread of a healthy test to be scheduled; only
    /// a wake-up that never comes reaches it.
    const HUNG: Duration = Duration::from_secs(30);

    /// What a member thread sends back: its index and what it was told.
    type Told = mpsc::Receiver<(usize, Result<Lsn>)>;

    /// `count` threads that each make a waiter, hand it over, wait on it
    /// and relay as a member does; each sends back what it was told.
    fn members(count: usize) -> (Vec<Arc<Waiter>>, Told) {
        let (waiters_tx, waiters_rx) = mpsc::channel();
        let (outcomes_tx, outcomes_rx) = mpsc::channel();
        for member in 0..count {
            let (waiters_tx, outcomes_tx) = (waiters_tx.clone(), outcomes_tx.clone());
            std::thread::spawn(move || {
                let waiter = Waiter::new();
                waiters_tx.send((member, waiter.clone())).unwrap();
                match waiter.wait() {
                    Wake::Done(outcome, relay) => {
                        relay.wake_children();
                        outcomes_tx.send((member, outcome)).unwrap();
                    }
                    other => panic!("member {member} told {other:?}"),
                }
            });
        }
        let mut waiters: Vec<(usize, Arc<Waiter>)> =
            (0..count).map(|_| waiters_rx.recv_timeout(HUNG).unwrap()).collect();
        waiters.sort_by_key(|(member, _)| *member);
        (waiters.into_iter().map(|(_, waiter)| waiter).collect(), outcomes_rx)
    }

    #[test]
    fn a_group_wakes_every_member_once_with_its_own_outcome() {
        // For every group size up to 40 (a tree of six levels), threads
        // park on their waiters; the group's outcomes are told at once. The
        // relay must reach every member: one it misses stays parked and its
        // outcome never arrives. Each must get its own outcome, and the odd
        // member an error, as posted.
        for count in 1..=40 {
            let (waiters, outcomes) = members(count);
            let told = waiters
                .into_iter()
                .enumerate()
                .map(|(member, waiter)| {
                    let outcome =
                        if member % 7 == 3 { Err(Error::Closed) } else { Ok(member as Lsn) };
                    (waiter, outcome)
                })
                .collect();
            tell_group(told);
            let mut heard = vec![false; count];
            for _ in 0..count {
                let (member, outcome) = outcomes
                    .recv_timeout(HUNG)
                    .unwrap_or_else(|_| panic!("a member of {count} was never woken"));
                match outcome {
                    Ok(lsn) => assert_eq!(lsn, member as Lsn),
                    Err(error) => {
                        assert_eq!(member % 7, 3);
                        assert!(matches!(error, Error::Closed), "{error:?}");
                    }
                }
                assert!(!heard[member], "member {member} of {count} told twice");
                heard[member] = true;
            }
        }
    }

    #[test]
    fn a_member_that_reads_its_outcome_early_finds_its_children_posted() {
        // A member can read its outcome as soon as it is posted, before any
        // wake-up meant for it (a spurious or stale one ends its park), and
        // then relays to its children at once. So whenever a member's
        // outcome is posted, its children's must be there already, or they
        // read nothing, park again and are never woken: the lost wake-up
        // this order prevents. Checked after every post, for every group
        // size up to 40, by looking into the mailboxes (the waiters are the
        // test thread's own, so every unpark is harmless).
        for count in 1..=40usize {
            let members = (0..count).map(|lsn| (Waiter::new(), Ok(lsn as Lsn))).collect();
            tell_group_observed(members, |waiters, index| {
                for child in [2 * index + 2, 2 * index + 3].into_iter().filter(|&c| c < count) {
                    let told = lock(&waiters[child].wake);
                    assert!(
                        matches!(told.message, Wake::Done(..)),
                        "member {index} of {count} posted before its child {child}"
                    );
                }
            });
        }
    }

    #[test]
    fn a_message_told_before_the_wait_is_not_lost() {
        // The unpark comes before the park here: `wait` must find the
        // message in the mailbox instead of sleeping for ever.
        let waiter = Waiter::new();
        waiter.tell(Wake::Lead);
        assert!(matches!(waiter.wait(), Wake::Lead));
        waiter.tell(Wake::Done(Ok(9), Relay { members: Arc::new([]), index: 0 }));
        assert!(matches!(waiter.wait(), Wake::Done(Ok(9), _)));
    }

    /// Counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_task_mailbox_wakes_its_last_waker_once_and_then_hands_out_its_outcome() {
        // Polled before anything is posted: Pending, its waker kept. Polled
        // again with another waker: that one replaces it. Told: the latest
        // waker is woken once, the first never; the next poll has the
        // outcome, and one after it finds nothing again.
        let waiter = Waiter::for_task(None);
        assert!(!waiter.is_thread());
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        assert!(waiter.poll_done(&mut Context::from_waker(&first_waker)).is_pending());
        assert!(waiter.poll_done(&mut Context::from_waker(&second_waker)).is_pending());
        waiter.tell(Wake::Done(Ok(7), Relay { members: Arc::new([]), index: 0 }));
        assert_eq!((wakes(&first), wakes(&second)), (0, 1));
        let mut cx = Context::from_waker(&second_waker);
        assert!(matches!(waiter.poll_done(&mut cx), Poll::Ready(Ok(7))));
        assert!(waiter.poll_done(&mut cx).is_pending());
    }

    #[test]
    fn an_outcome_posted_before_the_first_poll_is_ready_without_a_wake() {
        let waiter = Waiter::for_task(None);
        waiter.tell(Wake::Done(Err(Error::Closed), Relay { members: Arc::new([]), index: 0 }));
        let (count, waker) = counting_waker();
        let polled = waiter.poll_done(&mut Context::from_waker(&waker));
        assert!(matches!(polled, Poll::Ready(Err(Error::Closed))));
        assert_eq!(wakes(&count), 0);
    }

    #[test]
    fn a_group_of_threads_and_tasks_wakes_every_one_with_its_own_outcome() {
        // Threads relay among themselves; each task is woken by the poster.
        // Tasks are interleaved with threads at every position.
        for count in 1..=20 {
            let (threads, told) = members(count);
            let tasks: Vec<(Arc<Waiter>, Arc<Count>, Waker)> = (0..count)
                .map(|_| {
                    let (wakes, waker) = counting_waker();
                    let task = Waiter::for_task(None);
                    assert!(task.poll_done(&mut Context::from_waker(&waker)).is_pending());
                    (task, wakes, waker)
                })
                .collect();
            let mut group = Vec::new();
            for (member, thread) in threads.into_iter().enumerate() {
                group.push((tasks[member].0.clone(), Ok(1000 + member as Lsn)));
                group.push((thread, Ok(member as Lsn)));
            }
            tell_group(group);
            let mut heard: Vec<(usize, Result<Lsn>)> =
                (0..count).map(|_| told.recv_timeout(HUNG).expect("a member hung")).collect();
            heard.sort_by_key(|(member, _)| *member);
            for (member, outcome) in heard {
                assert!(matches!(outcome, Ok(lsn) if lsn == member as Lsn));
            }
            for (member, (task, wakes, waker)) in tasks.into_iter().enumerate() {
                assert_eq!(self::wakes(&wakes), 1, "task {member} of {count}");
                let polled = task.poll_done(&mut Context::from_waker(&waker));
                assert!(matches!(polled, Poll::Ready(Ok(lsn)) if lsn == 1000 + member as Lsn));
            }
        }
    }
}
