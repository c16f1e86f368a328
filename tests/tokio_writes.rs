//! `Store::write_async` under a real runtime (tokio, a dev-dependency only:
//! the library depends on no runtime). The tickets are awaited by tasks on
//! two worker threads and on one, and dropped by a timeout and by
//! `select!`, as a server's handlers do.

use std::sync::Arc;
use std::time::Duration;

use factwal::{Batch, Lsn, Store};

mod common;

fn batch(i: usize) -> Batch {
    Batch::new().assert(format!("s{}", i % 16), format!("f{i:05}"), format!("v{i}").into_bytes())
}

/// `tasks` tasks, each awaiting `writes` writes one after the other on
/// `runtime`; returns every LSN acknowledged.
fn write_from_tasks(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<Store>,
    tasks: usize,
    writes: usize,
) -> Vec<Lsn> {
    runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for task in 0..tasks {
            let store = store.clone();
            set.spawn(async move {
                let mut lsns = Vec::with_capacity(writes);
                for i in 0..writes {
                    let lsn = store.write_async(batch(task * writes + i)).await.unwrap();
                    // The write is visible once its future resolves.
                    assert!(store
                        .fact(
                            &format!("s{}", (task * writes + i) % 16),
                            &format!("f{:05}", task * writes + i)
                        )
                        .unwrap()
                        .is_some());
                    lsns.push(lsn);
                }
                // One task's writes get increasing LSNs.
                assert!(lsns.windows(2).all(|pair| pair[0] < pair[1]), "{lsns:?}");
                lsns
            });
        }
        set.join_all().await.into_iter().flatten().collect()
    })
}

#[test]
fn tasks_on_two_worker_threads_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(common::small_config(dir.path())).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let mut lsns = write_from_tasks(&runtime, &store, 256, 8);
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=2048).collect::<Vec<Lsn>>());
    let stats = store.stats().unwrap();
    assert!(
        stats.wal.groups < 2048,
        "256 tasks in flight shared syncs: {} groups",
        stats.wal.groups
    );
    assert_eq!(stats.writes_in_flight, 0);
    assert!(store.close_shared().is_clean());
    drop(store);
    let store = Store::open(common::small_config(dir.path())).unwrap();
    let facts: usize =
        store.sessions().unwrap().iter().map(|s| store.facts(s).unwrap().len()).sum();
    assert_eq!(facts, 2048);
}

#[test]
fn tasks_on_a_current_thread_runtime_never_block_it() {
    // One thread runs every task and the runtime itself: a write that
    // blocked its caller until durable would stall all of them (and the
    // group could never grow past one). They share syncs instead.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(common::small_config(dir.path())).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let lsns = write_from_tasks(&runtime, &store, 64, 10);
    assert_eq!(lsns.len(), 640);
    assert!(store.stats().unwrap().wal.groups < 640);
}

#[test]
fn a_future_dropped_by_a_timeout_or_select_still_writes_exactly_once() {
    // A handler that gives up (a zero timeout, or select! choosing another
    // branch) drops its write's future. The write was queued at the call:
    // it lands exactly once, and the LSNs stay dense.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(common::small_config(dir.path())).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        for i in 0..50 {
            let given_up = tokio::time::timeout(Duration::ZERO, store.write_async(batch(i))).await;
            // Either it resolved at once or it was dropped unresolved.
            if let Ok(outcome) = given_up {
                outcome.unwrap();
            }
        }
        for i in 50..100 {
            tokio::select! {
                biased;
                () = std::future::ready(()) => {}
                outcome = store.write_async(batch(i)) => { outcome.unwrap(); }
            }
        }
        // A last write, awaited: it comes after all of them.
        assert_eq!(store.write_async(batch(100)).await.unwrap(), 101);
    });
    assert!(store.close_shared().is_clean());
    drop(store);
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.stats().unwrap().lsn_last, 101);
    let facts: usize =
        store.sessions().unwrap().iter().map(|s| store.facts(s).unwrap().len()).sum();
    assert_eq!(facts, 101);
}
