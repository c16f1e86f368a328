//! Writes that don't hold a thread: `Store::write_async` and its
//! `WriteTicket`, and the pipelined `write_many`. The tickets are driven by
//! a small executor written here (no runtime is a dependency): `wait` from
//! a thread, or polled together under one waker, as a runtime polls many
//! futures on one thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use factwal::testing::{Fault, Gate, OpKind, Side, SimDisk};
use factwal::{Batch, Config, Error, Lsn, Store, WriteTicket};

mod common;

/// Wakes the thread that polls.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls every ticket on this thread under one waker, parking while none
/// is ready, as a single-threaded runtime would; returns the outcomes in
/// the tickets' order.
fn poll_all(tickets: Vec<WriteTicket>) -> Vec<Result<Lsn, Error>> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut pending: Vec<Option<WriteTicket>> = tickets.into_iter().map(Some).collect();
    let mut outcomes: Vec<Option<Result<Lsn, Error>>> = pending.iter().map(|_| None).collect();
    let mut polls = 0u64;
    while outcomes.iter().any(Option::is_none) {
        for (slot, outcome) in pending.iter_mut().zip(&mut outcomes) {
            if let Some(ticket) = slot {
                polls += 1;
                if let Poll::Ready(done) = Pin::new(ticket).poll(&mut cx) {
                    *outcome = Some(done);
                    *slot = None;
                }
            }
        }
        if outcomes.iter().any(Option::is_none) {
            std::thread::park();
        }
    }
    assert!(polls < 1_000_000, "woken far more often than there are writes: {polls} polls");
    outcomes.into_iter().map(Option::unwrap).collect()
}

fn assert_of(i: usize) -> Batch {
    Batch::new().assert("s", format!("f{i:04}"), format!("v{i}").into_bytes())
}

#[test]
fn tickets_resolve_in_order_to_dense_lsns_once_visible() {
    // 500 writes in flight from one thread, polled together: each resolves
    // to its own LSN, in submission order, dense from 1; every one is
    // visible once resolved, and they shared syncs.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    let tickets: Vec<WriteTicket> = (0..500).map(|i| store.write_async(assert_of(i))).collect();
    let lsns: Vec<Lsn> = poll_all(tickets).into_iter().map(Result::unwrap).collect();
    assert_eq!(lsns, (1..=500).collect::<Vec<Lsn>>());
    assert_eq!(store.facts("s").unwrap().len(), 500);
    let stats = store.stats().unwrap();
    assert_eq!(stats.wal.records, 500);
    assert!(
        stats.wal.groups < 500,
        "one thread's writes shared syncs: {} groups",
        stats.wal.groups
    );
    assert!(store.close().is_clean());
}

#[test]
fn write_many_pipelines_one_thread_and_wait_blocks_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    let outcomes = store.write_many((0..300).map(assert_of));
    let lsns: Vec<Lsn> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(lsns, (1..=300).collect::<Vec<Lsn>>());
    assert!(store.stats().unwrap().wal.groups < 300);
    // A lone ticket, waited for from the thread.
    assert_eq!(store.write_async(assert_of(300)).wait().unwrap(), 301);
    assert!(store.close().is_clean());
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.facts("s").unwrap().len(), 301);
}

#[test]
fn async_and_blocking_writers_share_one_group_commit() {
    // Eight threads writing with `write` and eight submitting tickets at the
    // same time: every write gets a distinct LSN, together dense, and all
    // are there after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(common::small_config(dir.path())).unwrap());
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let batches = (0..100).map(move |i| assert_of(t * 100 + i));
                if t % 2 == 0 {
                    batches.map(|batch| store.write(batch).unwrap()).collect::<Vec<_>>()
                } else {
                    let tickets = batches.map(|batch| store.write_async(batch)).collect();
                    poll_all(tickets).into_iter().map(Result::unwrap).collect()
                }
            })
        })
        .collect();
    let mut lsns: Vec<Lsn> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=1600).collect::<Vec<Lsn>>());
    assert!(store.close_shared().is_clean());
    drop(store);
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.facts("s").unwrap().len(), 1600);
}

#[test]
fn a_dropped_ticket_neither_loses_nor_repeats_its_write() {
    // Every other ticket is dropped at once. The writes happen anyway,
    // exactly once: after close and reopen every fact is there and the LSNs
    // end at the number of writes.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    let kept: Vec<WriteTicket> = (0..200)
        .filter_map(|i| {
            let ticket = store.write_async(assert_of(i));
            (i % 2 == 0).then_some(ticket)
        })
        .collect();
    for outcome in poll_all(kept) {
        outcome.unwrap();
    }
    assert!(store.close().is_clean());
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.facts("s").unwrap().len(), 200);
    assert_eq!(store.stats().unwrap().lsn_last, 200);
    assert_eq!(store.write_async(assert_of(200)).wait().unwrap(), 201);
}

#[test]
fn a_failed_sync_fails_the_tickets_of_its_group_and_every_later_one() {
    // The WAL's syncs fail with EIO from some point on: the tickets not yet
    // durable resolve to Poisoned (nothing of them acknowledged), later
    // tickets are refused at once, and after a reopen every acknowledged
    // write is there.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let config = common::small_config(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    let acked: Vec<Lsn> =
        store.write_many((0..10).map(assert_of)).into_iter().map(Result::unwrap).collect();
    disk.fail(Fault::nth(OpKind::Sync, 1, 5).from_then_on());
    let outcomes = poll_all((10..20).map(|i| store.write_async(assert_of(i))).collect());
    assert!(
        outcomes.iter().all(|outcome| matches!(outcome, Err(Error::Poisoned { .. }))),
        "{outcomes:?}"
    );
    assert!(matches!(store.write_async(assert_of(20)).wait(), Err(Error::Poisoned { .. })));
    store.simulate_crash();
    disk.heal();
    let store = Store::open(config).unwrap();
    let facts = store.facts("s").unwrap();
    for i in 0..acked.len() {
        assert!(facts.contains_key(&format!("f{i:04}")), "acknowledged write {i} lost");
    }
}

#[test]
fn refusals_come_through_the_ticket() {
    // An empty batch, and any write after close, resolve to the error
    // `write` gives; nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert!(matches!(store.write_async(Batch::new()).wait(), Err(Error::InvalidArgument(_))));
    assert!(store.close_shared().is_clean());
    let outcome = poll_all(vec![store.write_async(assert_of(0))]).pop().unwrap();
    assert!(matches!(outcome, Err(Error::Closed)), "{outcome:?}");
}

#[test]
fn direct_mode_tickets_are_ready_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path()).wal_enabled(false);
    let store = Store::open(config).unwrap();
    let outcomes = store.write_many((0..5).map(assert_of));
    let lsns: Vec<Lsn> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(lsns, [1, 2, 3, 4, 5]);
    assert_eq!(store.stats().unwrap().applied_lsn, 5);
}

/// Long enough for any thread of a healthy test to get there; only a hang
/// reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A store in WAL mode over a simulated disk, filled with blocking writes
/// up to `persistence.wal_bytes_max` (no checkpoint loop runs, so nothing
/// is folded): the next write meets back-pressure. Returns the store, the
/// disk and how many writes were made.
fn store_at_wal_bytes_max(dir: &std::path::Path) -> (Arc<Store>, Arc<SimDisk>, u64) {
    let disk = SimDisk::new(dir);
    let config = common::small_config(dir).wal_bytes_max(16 * 1024);
    let store = Store::open_with(config, disk.wal_io(), disk.state_io()).unwrap();
    let mut written = 0;
    while store.stats().unwrap().unfolded.bytes < 16 * 1024 {
        store.write(Batch::new().assert("filler", format!("f{written}"), vec![7; 500])).unwrap();
        written += 1;
    }
    assert_eq!(store.stats().unwrap().applied_lsn, 0, "nothing folded yet");
    (Arc::new(store), disk, written)
}

/// Runs `submit` on another thread and returns what it returns; a `submit`
/// that blocks (on the held state sync) fails the test instead of hanging.
fn without_blocking<R: Send + 'static>(submit: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || done.send(submit()).unwrap());
    outcome.recv_timeout(PATIENCE).expect("write_async blocked its caller's thread")
}

/// A full WAL whose checkpoint pass cannot finish (state.redb's syncs held
/// at a gate), and `writes` async writes submitted from another thread,
/// which must not block: they wait in the line.
struct HeldLine {
    store: Arc<Store>,
    gate: Gate,
    /// Writes made before, all acknowledged.
    filled: Lsn,
    tickets: Vec<WriteTicket>,
}

fn hold_in_line(dir: &std::path::Path, writes: usize) -> HeldLine {
    let (store, disk, filled) = store_at_wal_bytes_max(dir);
    let gate = disk.gate(OpKind::Sync, Some(Side::State));
    let submitter = store.clone();
    let tickets = without_blocking(move || {
        (0..writes).map(|i| submitter.write_async(assert_of(i))).collect::<Vec<_>>()
    });
    assert!(gate.wait_held(1, PATIENCE), "the admitter's pass reached state.redb's sync");
    HeldLine { store, gate, filled, tickets }
}

#[test]
fn at_wal_bytes_max_async_writes_wait_in_line_without_holding_a_thread() {
    // The WAL is full, and the checkpoint pass that makes room cannot finish
    // (state.redb's syncs are held at a gate). A blocking write would run
    // that pass on its own thread and wait; write_async returns at once and
    // its batch waits in the line. A blocking write made meanwhile queues
    // behind the line. Once the pass finishes, the held writes are queued in
    // call order and the blocking one after them.
    let dir = tempfile::tempdir().unwrap();
    let HeldLine { store, gate, filled, tickets } = hold_in_line(dir.path(), 100);
    let stats = store.stats().unwrap();
    assert_eq!((stats.writes_held, stats.writes_in_flight), (100, 100));
    assert_eq!(stats.lsn_last, filled, "nothing held was queued into the WAL");
    let blocking = {
        let store = store.clone();
        std::thread::spawn(move || store.write(assert_of(100)))
    };
    gate.open();
    let lsns: Vec<Lsn> = poll_all(tickets).into_iter().map(Result::unwrap).collect();
    assert_eq!(lsns, (filled + 1..=filled + 100).collect::<Vec<Lsn>>());
    assert_eq!(blocking.join().unwrap().unwrap(), filled + 101);
    let stats = store.stats().unwrap();
    assert_eq!((stats.writes_held, stats.writes_in_flight), (0, 0));
    assert!(stats.applied_lsn >= filled, "the admitter's pass folded the full WAL");
    assert_eq!(store.facts("s").unwrap().len(), 101);
    assert!(store.close_shared().is_clean());
}

#[test]
fn writes_held_at_close_are_answered_closed_and_never_written() {
    // Writes held back when the store closes were never queued: each
    // ticket resolves to Closed, and after a reopen none of them is there.
    let dir = tempfile::tempdir().unwrap();
    let HeldLine { store, gate, filled, tickets } = hold_in_line(dir.path(), 20);
    let closer = {
        let store = store.clone();
        std::thread::spawn(move || store.close_shared())
    };
    // Once a read is refused, the close has begun: the held writes cannot
    // be queued any more.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !matches!(store.fact("s", "f0000"), Err(Error::Closed)) {
        assert!(std::time::Instant::now() < deadline, "the close never began");
        std::thread::yield_now();
    }
    gate.open();
    for outcome in poll_all(tickets) {
        assert!(matches!(outcome, Err(Error::Closed)), "{outcome:?}");
    }
    assert!(closer.join().unwrap().is_clean());
    drop(store);
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.stats().unwrap().lsn_last, filled);
    assert!(store.facts("s").unwrap().is_empty());
}

#[test]
fn writes_in_flight_are_bounded_and_the_bound_frees_as_they_settle() {
    // max_writes_in_flight = 4, the WAL's syncs held: four tickets are in
    // flight, the fifth is refused at once with LimitExceeded (nothing
    // written); once they settle, writes go on, and write_many keeps to the
    // bound by itself.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    let config = common::small_config(dir.path()).max_writes_in_flight(4);
    let store = Store::open_with_io(config, disk.wal_io()).unwrap();
    let gate = disk.gate(OpKind::Sync, Some(Side::Wal));
    let tickets: Vec<WriteTicket> = (0..4).map(|i| store.write_async(assert_of(i))).collect();
    assert!(gate.wait_held(1, PATIENCE));
    assert_eq!(store.stats().unwrap().writes_in_flight, 4);
    match store.write_async(assert_of(4)).wait() {
        Err(Error::LimitExceeded { what, actual: 5, limit: 4 }) => {
            assert!(what.contains("persistence.max_writes_in_flight"), "{what}");
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    gate.open();
    let lsns: Vec<Lsn> = poll_all(tickets).into_iter().map(Result::unwrap).collect();
    assert_eq!(lsns, [1, 2, 3, 4]);
    assert_eq!(store.stats().unwrap().writes_in_flight, 0);
    let outcomes = store.write_many((4..40).map(assert_of));
    let lsns: Vec<Lsn> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(lsns, (5..=40).collect::<Vec<Lsn>>());
    assert_eq!(store.facts("s").unwrap().len(), 40);
}

/// A waker that posts its ticket's index to an event loop's queue, as an
/// asyncio bridge does with `loop.call_soon_threadsafe` (the Python
/// package's asyncio API).
struct PostToLoop {
    index: usize,
    queue: mpsc::Sender<usize>,
}

impl Wake for PostToLoop {
    fn wake(self: Arc<Self>) {
        // The loop may be gone (a test that failed): nothing to tell.
        let _ = self.queue.send(self.index);
    }
}

#[test]
fn an_event_loop_polls_each_ticket_once_more_when_the_leader_posts_it() {
    // The shape of an asyncio bridge: one loop thread owns every ticket and
    // polls each once; the thread that finishes a group wakes each ticket
    // through its own waker, which only posts the ticket's index to the
    // loop's queue (thread-safe); the loop then polls exactly that ticket,
    // which is ready. No thread waits per write, and no ticket is polled
    // in vain.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    let (queue, posted) = mpsc::channel();
    let mut tickets: Vec<Option<WriteTicket>> =
        (0..300).map(|i| Some(store.write_async(assert_of(i)))).collect();
    let mut lsns = vec![0; tickets.len()];
    let mut polls = 0;
    let mut poll = |index: usize, tickets: &mut Vec<Option<WriteTicket>>| {
        let waker = Waker::from(Arc::new(PostToLoop { index, queue: queue.clone() }));
        let ticket = tickets[index].as_mut().expect("a settled ticket is not polled again");
        polls += 1;
        match Pin::new(ticket).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(outcome) => {
                tickets[index] = None;
                Some(outcome.unwrap())
            }
            Poll::Pending => None,
        }
    };
    let mut settled = 0;
    for (index, lsn) in lsns.iter_mut().enumerate() {
        if let Some(ready) = poll(index, &mut tickets) {
            *lsn = ready;
            settled += 1;
        }
    }
    while settled < lsns.len() {
        let index = posted.recv_timeout(PATIENCE).expect("a ticket was never woken");
        let lsn = poll(index, &mut tickets).expect("a woken ticket is ready");
        lsns[index] = lsn;
        settled += 1;
    }
    assert_eq!(lsns, (1..=300).collect::<Vec<Lsn>>());
    assert!(polls <= 600, "each ticket polled at most twice: {polls} polls");
}
