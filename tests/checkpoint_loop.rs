//! The checkpoint loop and its observability contract: per-pass INFO events
//! with their five fields, the slow-pass WARN, the close summary, the ordered
//! shutdown with its TRUNCATE pass, passes that never overlap, and writers
//! held back at `wal_bytes_max`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use factwal::testing::{Fault, OpKind, SimDisk};
use factwal::{Batch, CheckpointMode, Config, LoopStart, Store};

mod common;
use common::{capture, segment_paths, small_config, CapturedEvent};

const TARGET: &str = "factwal::checkpoint";

fn passes<'a>(events: &'a [CapturedEvent], mode: &str) -> Vec<&'a CapturedEvent> {
    events
        .iter()
        .filter(|e| {
            e.target == TARGET
                && e.message == "checkpoint pass"
                && e.fields.get("mode").map(String::as_str) == Some(mode)
        })
        .collect()
}

fn field_f64(event: &CapturedEvent, name: &str) -> f64 {
    event
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("field {name} missing in {event:?}"))
        .parse()
        .unwrap()
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

#[test]
fn periodic_checkpoint_logs_elapsed_and_counters() {
    // A 10 ms loop over a store taking writes: at least two PASSIVE events
    // carrying all five fields, then one summary at close with n >= 2.
    let dir = tempfile::tempdir().unwrap();
    let (report, events) = capture(|| {
        let store = Store::open(small_config(dir.path())).unwrap();
        assert_eq!(
            store.start_checkpoint_loop(Duration::from_millis(10)).unwrap(),
            LoopStart::Started
        );
        for i in 0..20 {
            store.assert("s", &format!("f{i}"), b"v").unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        assert!(wait_until(Duration::from_secs(10), || store.checkpoint_stats().n >= 3));
        store.close()
    });
    assert!(report.is_clean(), "{report:?}");
    let passive = passes(&events, "passive");
    assert!(passive.len() >= 2, "passive passes: {}", passive.len());
    for event in &passive {
        assert_eq!(event.level, tracing::Level::INFO);
        for field in ["mode", "busy", "log_frames", "checkpointed_frames", "elapsed_ms"] {
            assert!(event.fields.contains_key(field), "{field} missing in {event:?}");
        }
        assert_eq!(event.fields["busy"], "false");
        assert_eq!(event.fields["log_frames"], event.fields["checkpointed_frames"]);
        assert!(field_f64(event, "elapsed_ms") >= 0.0);
    }
    let folded: f64 = passive.iter().map(|e| field_f64(e, "checkpointed_frames")).sum();
    assert!(folded >= 1.0, "the loop folded the writes");
    let summaries: Vec<_> =
        events.iter().filter(|e| e.target == TARGET && e.message == "checkpoint summary").collect();
    assert_eq!(summaries.len(), 1, "exactly one summary");
    let summary = summaries[0];
    assert!(field_f64(summary, "n") >= 2.0);
    assert!(field_f64(summary, "p95_ms") >= field_f64(summary, "p50_ms"));
    assert!(field_f64(summary, "max_ms") >= field_f64(summary, "p95_ms"));
    assert_eq!(report.summary.n as f64, field_f64(summary, "n"));
    // The summary comes after the loop stopped and before the TRUNCATE pass.
    let summary_at = events.iter().position(|e| e.message == "checkpoint summary").unwrap();
    let truncate_at = events
        .iter()
        .position(|e| e.fields.get("mode").map(String::as_str) == Some("truncate"))
        .unwrap();
    assert!(summary_at < truncate_at);
    assert!(!events[summary_at..]
        .iter()
        .any(|e| e.fields.get("mode").map(String::as_str) == Some("passive")));
}

#[test]
fn concurrent_writes_and_checkpoint_preserve_integrity() {
    // 4 threads x 50 writes while the loop folds every 2 ms; then redb's own
    // integrity check passes, the fact count is exact, and a reopen has all.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Arc::new(Store::open(config.clone()).unwrap());
    store.start_checkpoint_loop(Duration::from_millis(2)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    store
                        .assert(
                            &format!("s{}", i % 7),
                            &format!("t{thread}-f{i}"),
                            format!("{thread}:{i}").as_bytes(),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let total: usize = (0..7).map(|s| store.facts(&format!("s{s}")).unwrap().len()).sum();
    assert_eq!(total, 200);
    assert!(store.checkpoint_stats().n >= 1, "the loop ran while writers wrote");
    Arc::try_unwrap(store).unwrap().simulate_crash();

    let mut db = redb::Database::open(config.state_path()).unwrap();
    assert!(db.check_integrity().unwrap());
    drop(db);
    let store = Store::open(config).unwrap();
    for thread in 0..4 {
        for i in 0..50 {
            let value = store.fact(&format!("s{}", i % 7), &format!("t{thread}-f{i}")).unwrap();
            assert_eq!(value, Some(format!("{thread}:{i}").into_bytes()));
        }
    }
    assert_eq!(store.stats().unwrap().lsn_last, 200);
}

#[test]
fn shutdown_truncate_leaves_empty_wal() {
    // After close, no segment file is left; a reopen finds the WAL empty and
    // reads every fact from redb alone.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Store::open(config.clone()).unwrap();
    store.start_checkpoint_loop(Duration::from_millis(50)).unwrap();
    for i in 0..300 {
        store.write(Batch::new().assert("s", format!("f{i}"), vec![7; 100])).unwrap();
    }
    assert!(store.stats().unwrap().wal.segments_created > 1, "writes spanned several segments");
    assert!(!segment_paths(&config.wal_dir()).is_empty());
    let (report, events) = capture(|| store.close());
    let truncate = report.truncate.as_ref().unwrap();
    assert_eq!(truncate.mode, CheckpointMode::Truncate);
    assert!(truncate.segments_removed >= 1);
    assert!(segment_paths(&config.wal_dir()).is_empty(), "no segment left after close");
    assert_eq!(passes(&events, "truncate").len(), 1);

    let store = Store::open(config.clone()).unwrap();
    assert_eq!(store.stats().unwrap().unfolded.records, 0, "nothing to replay");
    assert_eq!(store.stats().unwrap().applied_lsn, 300);
    assert_eq!(store.facts("s").unwrap().len(), 300);
}

#[test]
fn slow_checkpoint_emits_warning() {
    // A pass made slow (250 ms) by the test hook gives both the INFO and the
    // WARN "checkpoint slow" for the same pass, with elapsed_ms > 200.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.assert("s", "f", b"v").unwrap();
    store.set_checkpoint_delay_for_test(Duration::from_millis(250));
    let (report, events) = capture(|| store.checkpoint(CheckpointMode::Passive).unwrap());
    assert!(report.elapsed >= Duration::from_millis(250));
    let info = passes(&events, "passive");
    assert_eq!(info.len(), 1);
    let warns: Vec<_> =
        events.iter().filter(|e| e.target == TARGET && e.message == "checkpoint slow").collect();
    assert_eq!(warns.len(), 1);
    let warn = warns[0];
    assert_eq!(warn.level, tracing::Level::WARN);
    assert!(field_f64(warn, "elapsed_ms") > 200.0);
    assert_eq!(warn.fields["elapsed_ms"], info[0].fields["elapsed_ms"], "same pass");
    for field in ["busy", "log_frames", "checkpointed_frames"] {
        assert_eq!(warn.fields[field], info[0].fields[field]);
    }
    assert_eq!(warn.fields["checkpointed_frames"], "1");
    // A fast pass gives no WARN.
    store.set_checkpoint_delay_for_test(Duration::ZERO);
    let (_, events) = capture(|| store.checkpoint(CheckpointMode::Passive).unwrap());
    assert!(!events.iter().any(|e| e.message == "checkpoint slow"));
}

#[test]
fn zero_interval_starts_no_thread_and_no_pass() {
    // Duration::ZERO: one INFO saying the loop is disabled, and no pass ever.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let (start, events) = capture(|| {
        let start = store.start_checkpoint_loop(Duration::ZERO).unwrap();
        store.assert("s", "f", b"v").unwrap();
        // Nothing to wait for: a pass that should never come is given time
        // to show up.
        std::thread::sleep(Duration::from_millis(100));
        start
    });
    assert_eq!(start, LoopStart::Disabled);
    let disabled: Vec<_> =
        events.iter().filter(|e| e.target == TARGET && e.message.contains("disabled")).collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].level, tracing::Level::INFO);
    assert_eq!(store.checkpoint_stats().n, 0, "no pass ran");
    assert!(passes(&events, "passive").is_empty());
    // A negative interval in a config file becomes 0: the loop stays off.
    let (config, events) = capture(|| {
        Config::from_toml("[checkpoint]\ninterval_s = -2.5\n", "f.toml".as_ref()).unwrap()
    });
    assert_eq!(config.checkpoint_interval(), None);
    assert!(events.iter().any(|e| e.level == tracing::Level::WARN
        && e.fields.get("key").map(String::as_str) == Some("checkpoint.interval_s")));
}

#[test]
fn failed_truncate_is_reported_and_reopen_replays_everything() {
    // Removing segments fails during close's TRUNCATE: an ERROR with the
    // error chain, close still returns and releases the lock, and a reopen
    // replays every write from the WAL that stayed.
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let disk = SimDisk::new(dir.path());
    let store = Store::open_with_io(config.clone(), disk.wal_io()).unwrap();
    for i in 0..50 {
        store.assert("s", &format!("f{i}"), b"v").unwrap();
    }
    disk.fail(Fault::nth(OpKind::Remove, 1, 5 /* EIO */).from_then_on());
    let (report, events) = capture(|| store.close());
    let error = report.truncate.as_ref().unwrap_err();
    assert!(
        matches!(
            error,
            factwal::Error::Io { operation: factwal::IoOp::Remove, what: "folded segment", .. }
        ),
        "{error}"
    );
    assert!(report.lock_released && report.redb_close.is_ok());
    let errors: Vec<_> =
        events.iter().filter(|e| e.level == tracing::Level::ERROR && e.target == TARGET).collect();
    assert!(!errors.is_empty());
    assert!(errors.iter().any(|e| e.fields.get("error").is_some_and(|chain| chain
        .contains("remove folded segment")
        && chain.contains("Input/output error"))));
    assert!(!segment_paths(&config.wal_dir()).is_empty(), "the WAL stays");

    let store = Store::open(config).unwrap();
    assert_eq!(store.facts("s").unwrap().len(), 50);
    assert_eq!(store.stats().unwrap().lsn_last, 50);
}

#[test]
fn manual_checkpoints_never_overlap_the_loop() {
    // Two threads call checkpoint() in a tight loop while the loop runs every
    // millisecond and a writer writes: the in-pass counter never sees two.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(small_config(dir.path())).unwrap());
    store.start_checkpoint_loop(Duration::from_millis(1)).unwrap();
    let stop = Instant::now() + Duration::from_millis(500);
    let mut handles: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut passes = 0;
                while Instant::now() < stop {
                    store.checkpoint(CheckpointMode::Passive).unwrap();
                    passes += 1;
                }
                passes
            })
        })
        .collect();
    let writer = store.clone();
    handles.push(std::thread::spawn(move || {
        let mut writes = 0;
        while Instant::now() < stop {
            writer.assert("s", &format!("f{}", writes % 50), b"v").unwrap();
            writes += 1;
        }
        writes
    }));
    let counts: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(counts[0] > 0 && counts[1] > 0);
    assert_eq!(store.max_concurrent_passes_for_test(), 1);
    // Manual passes are sampled too (the window keeps the last 512).
    assert!(store.checkpoint_stats().n >= 512.min(counts[0] + counts[1]));
}

#[test]
fn writers_held_at_wal_bytes_max_resume_after_a_pass() {
    // wal_bytes_max of 32 KiB and a loop that never ticks on its own: writers
    // must wait for (and run) passes, the unfolded bytes never pass the
    // bound by more than one record, and nothing is lost.
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path())
        .segment_bytes(16 * 1024)
        .max_record_bytes(2048)
        .wal_bytes_max(32 * 1024);
    let store = Arc::new(Store::open(config.clone()).unwrap());
    store.start_checkpoint_loop(Duration::from_secs(3600)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    store
                        .write(Batch::new().assert(
                            format!("s{thread}"),
                            format!("f{i}"),
                            vec![thread as u8; 400],
                        ))
                        .unwrap();
                    let unfolded = store.stats().unwrap().unfolded.bytes;
                    assert!(unfolded <= 32 * 1024 + 4 * 2048, "unfolded {unfolded} bytes");
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(
        store.checkpoint_stats().n >= 5,
        "back-pressure ran passes: {:?}",
        store.checkpoint_stats()
    );
    Arc::try_unwrap(store).unwrap().simulate_crash();
    let store = Store::open(config).unwrap();
    for thread in 0..4u8 {
        let facts = store.facts(&format!("s{thread}")).unwrap();
        assert_eq!(facts.len(), 150);
        assert!(facts.values().all(|v| v == &vec![thread; 400]));
    }
}

#[test]
fn close_does_not_hang_on_a_loop_that_will_not_stop() {
    // A pass that sleeps 1.5 s inside the loop and a join timeout of 0.2 s:
    // close returns without waiting, reports the loop and the skipped
    // TRUNCATE, keeps the directory lock while the thread may still touch
    // the store, and once the thread ends everything acknowledged reopens.
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.checkpoint.join_timeout_s = 0.2;
    let store = Store::open(config.clone()).unwrap();
    for i in 0..20 {
        store.assert("s", &format!("f{i}"), b"v").unwrap();
    }
    store.set_checkpoint_delay_for_test(Duration::from_millis(1500));
    store.start_checkpoint_loop(Duration::from_millis(1)).unwrap();
    // Until the loop's pass is inside its 1.5 s delay.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.max_concurrent_passes_for_test() == 0 {
        assert!(Instant::now() < deadline, "the loop never began a pass");
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let (report, events) = capture(|| store.close());
    assert!(started.elapsed() < Duration::from_millis(1200), "close waited for the stuck pass");
    assert!(!report.loop_joined && !report.lock_released);
    assert!(
        matches!(report.truncate, Err(factwal::Error::Timeout { .. })),
        "{:?}",
        report.truncate
    );
    assert!(events
        .iter()
        .any(|e| e.level == tracing::Level::ERROR && e.message.contains("did not stop")));
    assert!(matches!(Store::open(config.clone()), Err(factwal::Error::Locked { .. })));
    assert!(wait_until(Duration::from_secs(10), || Store::open(config.clone()).is_ok_and(|s| {
        let all = s.facts("s").unwrap().len() == 20;
        assert!(s.close().is_clean());
        all
    })));
}

#[test]
fn an_interval_beyond_a_day_is_refused_and_starts_no_thread() {
    // Duration::MAX (or anything above the config's own limit of a day) is
    // refused with InvalidArgument, before any thread starts; the store is
    // then closed cleanly. Before the fix the call said Started and the
    // thread panicked on an overflowing deadline, while close said clean.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    for interval in [Duration::MAX, Duration::from_secs(86_401)] {
        match store.start_checkpoint_loop(interval) {
            Err(factwal::Error::InvalidArgument(text)) => {
                assert!(text.contains("above the limit"), "{text}")
            }
            other => panic!("{interval:?}: {other:?}"),
        }
    }
    assert_eq!(
        store.start_checkpoint_loop(Duration::from_secs(86_400)).unwrap(),
        LoopStart::Started
    );
    assert!(store.close().is_clean());
}

#[test]
fn a_loop_thread_that_dies_is_an_error_event_and_makes_close_unclean() {
    // A pass of the loop panics (a bug): the loop thread dies with an ERROR
    // naming the panic, writes go on, and close reports the death
    // (loop_failure, is_clean false) instead of calling the close clean.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let (report, events) = capture(|| {
        store.panic_next_checkpoint_pass_for_test();
        store.start_checkpoint_loop(Duration::from_millis(5)).unwrap();
        store.write(Batch::new().assert("s", "f", b"v".to_vec())).unwrap();
        // The pass that panics has begun once one was seen running.
        assert!(wait_until(Duration::from_secs(10), || store.max_concurrent_passes_for_test() == 1));
        store.write(Batch::new().assert("s", "g", b"after".to_vec())).unwrap();
        // Close joins the loop thread: its last words are in by then.
        store.close()
    });
    let died: Vec<_> =
        events.iter().filter(|e| e.message.starts_with("checkpoint thread died")).collect();
    assert_eq!(died.len(), 1, "{events:?}");
    assert_eq!(died[0].level, tracing::Level::ERROR);
    assert!(died[0].fields["panic"].contains("test hook"), "{:?}", died[0].fields);
    assert!(!report.is_clean(), "{report:?}");
    assert!(
        report.loop_failure.as_deref().is_some_and(|text| text.contains("test hook")),
        "{report:?}"
    );
    assert!(report.truncate.is_ok(), "the final pass still ran: {report:?}");
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.fact("s", "g").unwrap(), Some(b"after".to_vec()));
    assert!(store.close().is_clean());
}
