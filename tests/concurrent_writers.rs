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
                            .assert(format!("s{thread}"), format!("f{i}"), format!("{thread}/{i}").into_bytes())
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
    assert_eq!(store.write(Batch::new().assert("after", "f", b"x".to_vec())).unwrap(), 4001, "LSNs continue");
}
