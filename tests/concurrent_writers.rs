//! Many threads writing at once: group commit must acknowledge each write
//! exactly once, with unique, dense LSNs, and every write must survive a
//! reopen.

use std::collections::BTreeSet;
use std::sync::Arc;

use factwal::{Batch, Store};

mod common;

const THREADS: usize = 8;
const WRITES_PER_THREAD: usize = 500;

fn write_from_threads(store: &Arc<Store>) -> Vec<u64> {
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..WRITES_PER_THREAD)
                    .map(|i| {
                        let batch = Batch::new()
                            .assert(
                                format!("s{thread}"),
                                format!("f{i}"),
                                format!("{thread}/{i}").into_bytes(),
                            )
                            .assert("all", format!("{thread}-{i}"), vec![1]);
                        store.write(batch).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

fn check_all_present(store: &Store) {
    for thread in 0..THREADS {
        let facts = store.facts(&format!("s{thread}")).unwrap();
        assert_eq!(facts.len(), WRITES_PER_THREAD);
        for i in 0..WRITES_PER_THREAD {
            assert_eq!(facts[&format!("f{i}")], format!("{thread}/{i}").into_bytes());
        }
    }
    assert_eq!(store.facts("all").unwrap().len(), THREADS * WRITES_PER_THREAD);
}

#[test]
fn eight_threads_times_500_writes_all_present_with_dense_lsns() {
    // 8 threads x 500 batches through group commit (small segments so the
    // groups also cross segment rolls), then a crash-like drop and a reopen.
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Arc::new(Store::open(config.clone()).unwrap());
    let lsns = write_from_threads(&store);
    let unique: BTreeSet<u64> = lsns.iter().copied().collect();
    assert_eq!(unique.len(), THREADS * WRITES_PER_THREAD, "every LSN acknowledged once");
    assert_eq!(unique.first(), Some(&1));
    assert_eq!(unique.last(), Some(&((THREADS * WRITES_PER_THREAD) as u64)), "LSNs are dense");
    check_all_present(&store);
    Arc::try_unwrap(store).unwrap().simulate_crash();

    let store = Store::open(config).unwrap();
    check_all_present(&store);
    assert_eq!(store.stats().unwrap().lsn_last, (THREADS * WRITES_PER_THREAD) as u64);
    assert_eq!(
        store.write(Batch::new().assert("after", "f", b"x".to_vec())).unwrap(),
        4001,
        "LSNs continue"
    );
}

#[test]
fn sixty_four_threads_read_their_own_writes_while_checkpoints_truncate_the_log() {
    // 64 writers make groups deep enough for the wake-up relay to span
    // several levels; each reads its write back the moment it is
    // acknowledged, while another thread keeps folding and truncating the
    // log (which must wait for every durable group to reach the overlay).
    // Then a crash without a final fold: everything acknowledged reopens.
    const WRITERS: usize = 64;
    const WRITES: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Arc::new(Store::open(config.clone()).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let truncator = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut passes = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                store.checkpoint(factwal::CheckpointMode::Truncate).unwrap();
                passes += 1;
            }
            passes
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut lsns = Vec::with_capacity(WRITES);
                for i in 0..WRITES {
                    let (session, fact, value) =
                        (format!("w{writer}"), format!("f{}", i % 7), format!("{i}"));
                    lsns.push(store.assert(&session, &fact, value.as_bytes()).unwrap());
                    assert_eq!(
                        store.fact(&session, &fact).unwrap(),
                        Some(value.into_bytes()),
                        "read after ack"
                    );
                }
                lsns
            })
        })
        .collect();
    let lsns: BTreeSet<u64> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    done.store(true, std::sync::atomic::Ordering::Release);
    assert!(truncator.join().unwrap() > 0);
    assert_eq!(lsns.len(), WRITERS * WRITES, "every LSN acknowledged once");
    assert_eq!(lsns.last(), Some(&((WRITERS * WRITES) as u64)), "LSNs are dense");
    Arc::try_unwrap(store).unwrap().simulate_crash();

    let store = Store::open(config).unwrap();
    for writer in 0..WRITERS {
        let facts = store.facts(&format!("w{writer}")).unwrap();
        assert_eq!(facts.len(), 7);
        for i in WRITES - 7..WRITES {
            assert_eq!(
                facts[&format!("f{}", i % 7)],
                format!("{i}").into_bytes(),
                "writer {writer}, write {i}"
            );
        }
    }
}

#[test]
fn close_shared_while_threads_write_keeps_every_acknowledged_write_and_refuses_the_rest() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let store = Arc::new(Store::open(config.clone()).unwrap());
    store.start_checkpoint_loop(std::time::Duration::from_millis(2)).unwrap();
    // Threads that have had at least one write acknowledged.
    let writing = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (store, writing) = (Arc::clone(&store), Arc::clone(&writing));
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let value = format!("{thread}/{i}");
                    match store.assert(&format!("s{thread}"), &format!("f{i}"), value.as_bytes()) {
                        Ok(_) => {
                            acknowledged.push(i);
                            if acknowledged.len() == 1 {
                                writing.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(factwal::Error::Closed) => return acknowledged,
                        Err(other) => panic!("thread {thread}, write {i}: {other}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while writing.load(Ordering::SeqCst) < THREADS {
        assert!(std::time::Instant::now() < deadline, "every thread writes within 60 s");
        std::thread::yield_now();
    }
    let report = store.close_shared();
    assert!(report.is_clean(), "the first close: {report:?}");
    // Every handle now refuses, reads of folded and unfolded facts alike;
    // no loop starts; a second close says it already ran.
    assert!(matches!(store.fact("s0", "f0"), Err(factwal::Error::Closed)));
    assert!(matches!(store.facts("s0"), Err(factwal::Error::Closed)));
    assert!(matches!(
        store.start_checkpoint_loop(std::time::Duration::from_millis(2)),
        Err(factwal::Error::Closed)
    ));
    assert!(matches!(
        store.checkpoint(factwal::CheckpointMode::Passive),
        Err(factwal::Error::Closed)
    ));
    let again = store.close_shared();
    assert!(matches!(again.truncate, Err(factwal::Error::Closed)) && !again.is_clean());
    let acknowledged: Vec<Vec<usize>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // The lock is free although a handle is still alive.
    let reopened = Store::open(config).unwrap();
    for (thread, writes) in acknowledged.iter().enumerate() {
        let facts = reopened.facts(&format!("s{thread}")).unwrap();
        for i in writes {
            let expected = format!("{thread}/{i}").into_bytes();
            assert_eq!(facts.get(&format!("f{i}")), Some(&expected), "s{thread} f{i}");
        }
        // Nothing but acknowledged writes: a write refused with Closed was
        // never queued.
        assert_eq!(facts.len(), writes.len(), "s{thread}");
    }
    drop(store);
    assert!(reopened.close().is_clean());
}
