//! Writes that don't hold a thread: `Store::write_async` and its
//! `WriteTicket`, and the pipelined `write_many`. The tickets are driven by
//! a small executor written here (no runtime is a dependency): `wait` from
//! a thread, or polled together under one waker, as a runtime polls many
//! futures on one thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use factwal::testing::{Fault, OpKind, SimDisk};
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
