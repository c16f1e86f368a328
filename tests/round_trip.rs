//! Round trips through both write paths, WAL mode and direct mode: every
//! acknowledged write is visible at once and after any kind of reopen, reads
//! merge the unfolded overlay with redb correctly, LSNs stay dense, and the
//! WAL files come and go as checkpoints and close say they do.

use std::collections::BTreeMap;
use std::path::Path;

use factwal::{Batch, CheckpointMode, Config, Op, Store};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod common;

/// WAL mode (true) and direct mode (false).
const MODES: [bool; 2] = [true, false];

type State = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn config(dir: &Path, wal_enabled: bool) -> Config {
    common::small_config(dir).wal_enabled(wal_enabled)
}

fn open(dir: &Path, wal_enabled: bool) -> Store {
    Store::open(config(dir, wal_enabled)).unwrap()
}

/// Every session with its facts, as the reads report them. Also checks that
/// `sessions`, `facts` and `fact` agree with each other.
fn dump(store: &Store) -> State {
    let mut state = State::new();
    for session in store.sessions().unwrap() {
        let facts = store.facts(&session).unwrap();
        assert!(!facts.is_empty(), "sessions() lists {session:?}, which has no facts");
        for (fact, value) in &facts {
            assert_eq!(
                store.fact(&session, fact).unwrap().as_ref(),
                Some(value),
                "{session}/{fact}"
            );
        }
        state.insert(session, facts);
    }
    state
}

/// A session's facts from `(fact, value)` pairs.
fn facts(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs.iter().map(|(fact, value)| (fact.to_string(), value.as_bytes().to_vec())).collect()
}

fn state(sessions: &[(&str, &[(&str, &str)])]) -> State {
    sessions.iter().map(|(session, pairs)| (session.to_string(), facts(pairs))).collect()
}

fn names(sessions: &[&str]) -> Vec<String> {
    sessions.iter().map(|s| s.to_string()).collect()
}

fn value(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
}

fn segment_count(dir: &Path) -> usize {
    common::segment_paths(&dir.join("wal")).len()
}

#[test]
fn assert_replace_retract_and_drop_session_in_both_modes() {
    // Drives one store per mode through each operation and reads back after
    // every acknowledged write: a replace leaves one value, an empty value is
    // not an absent fact, retracting a missing fact or dropping an unknown
    // session is a no-op that still takes an LSN, and a dropped session that
    // is asserted into again holds only the new fact.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), wal_enabled);
        assert_eq!(store.assert("s1", "a", b"1").unwrap(), 1);
        assert_eq!(store.fact("s1", "a").unwrap(), value("1"));
        assert_eq!(store.assert("s1", "a", b"2").unwrap(), 2);
        assert_eq!(store.fact("s1", "a").unwrap(), value("2"));
        assert_eq!(store.facts("s1").unwrap(), facts(&[("a", "2")]));
        assert_eq!(store.assert("s1", "b", b"").unwrap(), 3);
        assert_eq!(store.fact("s1", "b").unwrap(), Some(Vec::new()), "an empty value is a value");
        store.assert("s2", "x", b"x").unwrap();
        store.assert("s2", "y", b"y").unwrap();
        assert_eq!(store.sessions().unwrap(), names(&["s1", "s2"]));

        assert_eq!(store.retract("s1", "a").unwrap(), 6);
        assert_eq!(store.fact("s1", "a").unwrap(), None);
        assert_eq!(store.facts("s1").unwrap(), facts(&[("b", "")]));
        assert_eq!(
            store.retract("s1", "never-asserted").unwrap(),
            7,
            "a no-op retract still takes an LSN"
        );
        assert_eq!(store.facts("s1").unwrap(), facts(&[("b", "")]));

        assert_eq!(store.drop_session("s2").unwrap(), 8);
        assert_eq!(store.facts("s2").unwrap(), BTreeMap::new());
        assert_eq!(store.fact("s2", "x").unwrap(), None);
        assert_eq!(store.facts("s1").unwrap(), facts(&[("b", "")]), "other sessions are untouched");
        assert_eq!(store.sessions().unwrap(), names(&["s1"]));
        assert_eq!(store.drop_session("nobody").unwrap(), 9);

        store.assert("s2", "x", b"again").unwrap();
        assert_eq!(store.facts("s2").unwrap(), facts(&[("x", "again")]), "y stays dropped");
        assert_eq!(store.sessions().unwrap(), names(&["s1", "s2"]));
        store.retract("s1", "b").unwrap();
        assert_eq!(store.sessions().unwrap(), names(&["s2"]), "mode wal={wal_enabled}");
        assert_eq!(store.fact("nobody", "x").unwrap(), None);
        assert!(store.close().is_clean());
    }
}

/// Writes that leave state both in redb and (in WAL mode) in the overlay.
fn write_workload(store: &Store) {
    for i in 0..6 {
        store.assert(&format!("s{i}"), "a", format!("a{i}").as_bytes()).unwrap();
        store.assert(&format!("s{i}"), "b", format!("b{i}").as_bytes()).unwrap();
    }
    store.checkpoint(CheckpointMode::Passive).unwrap();
    store.retract("s0", "a").unwrap();
    store.drop_session("s1").unwrap();
    store.assert("s2", "a", b"replaced").unwrap();
    store.write(Batch::new().retract("s3", "a").retract("s3", "b")).unwrap();
    store.assert("s6", "new", b"overlay only").unwrap();
}

#[test]
fn reopen_after_close_drop_and_crash_gives_the_same_state() {
    // Builds a state spanning redb and the overlay, then reopens it after a
    // clean close, after a plain drop and after a simulated crash, writing one
    // more batch between reopens; every reopen must read back exactly the
    // state (and the last LSN) seen before it.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), wal_enabled);
        write_workload(&store);
        let expected = state(&[
            ("s0", &[("b", "b0")]),
            ("s2", &[("a", "replaced"), ("b", "b2")]),
            ("s4", &[("a", "a4"), ("b", "b4")]),
            ("s5", &[("a", "a5"), ("b", "b5")]),
            ("s6", &[("new", "overlay only")]),
        ]);
        assert_eq!(dump(&store), expected);
        assert_eq!(store.stats().unwrap().lsn_last, 17);
        assert!(store.close().is_clean());

        let store = open(dir.path(), wal_enabled);
        assert_eq!(dump(&store), expected, "after close, wal={wal_enabled}");
        assert_eq!(store.stats().unwrap().lsn_last, 17);
        assert_eq!(store.assert("s7", "x", b"1").unwrap(), 18);
        let expected = dump(&store);
        drop(store);

        let store = open(dir.path(), wal_enabled);
        assert_eq!(dump(&store), expected, "after drop, wal={wal_enabled}");
        assert_eq!(
            store.write(Batch::new().drop_session("s7").assert("s8", "y", b"2")).unwrap(),
            19
        );
        let expected = dump(&store);
        if wal_enabled {
            assert_eq!(
                store.stats().unwrap().unfolded.records,
                1,
                "the crash leaves a record only the WAL holds"
            );
        }
        store.simulate_crash();
        if wal_enabled {
            assert!(segment_count(dir.path()) >= 1, "a crash leaves the WAL behind");
        }

        let store = open(dir.path(), wal_enabled);
        assert_eq!(dump(&store), expected, "after crash, wal={wal_enabled}");
        assert_eq!(expected["s8"], facts(&[("y", "2")]));
        assert!(!expected.contains_key("s7"));
        assert_eq!(store.stats().unwrap().lsn_last, 19);
        assert!(store.close().is_clean());
    }
}

#[test]
fn overlay_and_redb_merge_before_and_after_checkpoint_and_reopen() {
    // Folds a first state into redb, then writes on top of it (retracts and
    // replaces of folded facts, a drop of a folded session followed by a new
    // assert into it, drops of a session whose id prefixes others) and checks
    // the merged reads while those writes are unfolded, after a second
    // checkpoint folds them, and after a reopen.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), wal_enabled);
        store
            .write(
                Batch::new()
                    .assert("s1", "a", b"1".to_vec())
                    .assert("s1", "b", b"1".to_vec())
                    .assert("s1", "c", b"1".to_vec())
                    .assert("s2", "x", b"1".to_vec())
                    .assert("s2", "y", b"1".to_vec())
                    .assert("s3", "k", b"1".to_vec()),
            )
            .unwrap();
        store
            .write(Batch::new().assert("p", "f", b"p".to_vec()).assert("p2", "f", b"p2".to_vec()))
            .unwrap();
        store
            .write(Batch::new().assert("p\0q", "f", b"nul".to_vec()).assert(
                "p",
                "g",
                b"p".to_vec(),
            ))
            .unwrap();
        let report = store.checkpoint(CheckpointMode::Passive).unwrap();
        assert_eq!(report.applied_lsn, 3);
        let stats = store.stats().unwrap();
        assert_eq!((stats.applied_lsn, stats.unfolded.records), (3, 0), "everything is in redb");

        store.retract("s1", "a").unwrap();
        store.assert("s1", "b", b"2").unwrap();
        store.assert("s1", "d", b"2").unwrap();
        store.drop_session("s2").unwrap();
        store.assert("s2", "z", b"2").unwrap();
        store.retract("s3", "k").unwrap();
        store.drop_session("p").unwrap();
        let expected = state(&[
            ("p2", &[("f", "p2")]),
            ("p\0q", &[("f", "nul")]),
            ("s1", &[("b", "2"), ("c", "1"), ("d", "2")]),
            ("s2", &[("z", "2")]),
        ]);
        let unfolded = if wal_enabled { 7 } else { 0 };
        assert_eq!(
            store.stats().unwrap().unfolded.records,
            unfolded,
            "the new writes sit in the overlay"
        );
        check_merged(&store, &expected);

        let report = store.checkpoint(CheckpointMode::Passive).unwrap();
        assert_eq!((report.applied_lsn, report.checkpointed_frames), (10, unfolded));
        assert_eq!(store.stats().unwrap().unfolded.records, 0);
        check_merged(&store, &expected);
        assert!(store.close().is_clean());

        let store = open(dir.path(), wal_enabled);
        check_merged(&store, &expected);
    }
}

fn check_merged(store: &Store, expected: &State) {
    assert_eq!(&dump(store), expected);
    assert_eq!(store.fact("s1", "a").unwrap(), None, "a retracted folded fact is hidden");
    assert_eq!(store.fact("s2", "x").unwrap(), None, "a dropped folded session's facts are hidden");
    assert_eq!(store.fact("s3", "k").unwrap(), None);
    assert_eq!(store.facts("s3").unwrap(), BTreeMap::new());
    assert_eq!(store.fact("p", "g").unwrap(), None);
    assert_eq!(store.facts("p").unwrap(), BTreeMap::new());
}

#[test]
fn sessions_excludes_sessions_whose_facts_are_all_retracted() {
    // Folds facts into redb, then retracts, drops and re-asserts in the
    // overlay in every combination that decides whether a session still has
    // a fact; sessions() must list exactly the ones that do, while the
    // retracts are unfolded, after they are folded, and after a reopen.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), wal_enabled);
        let mut batch = Batch::new();
        for session in ["gone", "half", "readded", "mixed", "dropped", "retract-missing"] {
            batch = batch.assert(session, "a", b"1".to_vec());
        }
        store
            .write(batch.assert("gone", "b", b"1".to_vec()).assert("half", "b", b"1".to_vec()))
            .unwrap();
        store.checkpoint(CheckpointMode::Passive).unwrap();

        store.retract("gone", "a").unwrap();
        store.retract("gone", "b").unwrap();
        store.retract("half", "a").unwrap();
        store.retract("readded", "a").unwrap();
        store.assert("readded", "a", b"2").unwrap();
        store.assert("mixed", "b", b"1").unwrap();
        store.write(Batch::new().retract("mixed", "a").retract("mixed", "b")).unwrap();
        store.drop_session("dropped").unwrap();
        store.retract("retract-missing", "zzz").unwrap();
        store
            .write(
                Batch::new()
                    .assert("overlay-only", "x", b"1".to_vec())
                    .retract("overlay-only", "x"),
            )
            .unwrap();
        let expected = names(&["half", "readded", "retract-missing"]);
        if wal_enabled {
            assert!(store.stats().unwrap().unfolded.records > 0);
        }
        assert_eq!(store.sessions().unwrap(), expected, "unfolded, wal={wal_enabled}");
        assert_eq!(store.facts("gone").unwrap(), BTreeMap::new());
        assert_eq!(store.facts("mixed").unwrap(), BTreeMap::new());

        store.checkpoint(CheckpointMode::Passive).unwrap();
        assert_eq!(store.sessions().unwrap(), expected, "folded, wal={wal_enabled}");
        assert!(store.close().is_clean());
        let store = open(dir.path(), wal_enabled);
        assert_eq!(store.sessions().unwrap(), expected, "reopened, wal={wal_enabled}");
    }
}

#[test]
fn operations_of_one_batch_apply_in_order() {
    // One batch mixing sessions, with pairs of operations on the same fact in
    // both orders, must read back as if applied one after the other, both
    // before and after a crash and reopen and a checkpoint; it takes one LSN.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), wal_enabled);
        store
            .write(Batch::new().assert("t", "old", b"0".to_vec()).assert("s", "b", b"0".to_vec()))
            .unwrap();
        store.checkpoint(CheckpointMode::Passive).unwrap();
        let batch = Batch::new()
            .assert("s", "a", b"1".to_vec())
            .retract("s", "a")
            .retract("s", "b")
            .assert("s", "b", b"2".to_vec())
            .assert("s", "c", b"1".to_vec())
            .assert("s", "c", b"2".to_vec())
            .drop_session("t")
            .assert("t", "x", b"1".to_vec())
            .assert("u", "y", b"1".to_vec())
            .drop_session("u");
        assert_eq!(store.write(batch).unwrap(), 2, "a batch takes one LSN");
        let expected = state(&[("s", &[("b", "2"), ("c", "2")]), ("t", &[("x", "1")])]);
        assert_eq!(dump(&store), expected, "wal={wal_enabled}");
        assert_eq!(store.fact("s", "a").unwrap(), None, "assert then retract: absent");
        assert_eq!(store.fact("t", "old").unwrap(), None);
        store.simulate_crash();

        let store = open(dir.path(), wal_enabled);
        assert_eq!(dump(&store), expected, "after crash, wal={wal_enabled}");
        store.checkpoint(CheckpointMode::Passive).unwrap();
        assert_eq!(dump(&store), expected, "after checkpoint, wal={wal_enabled}");
        assert_eq!(store.stats().unwrap().lsn_last, 2);
    }
}

#[test]
fn lsns_are_dense_across_reopens() {
    // Checks every LSN handed out, in both modes, across a clean close, a
    // plain drop, a simulated crash and a truncating checkpoint: each write
    // gets the previous LSN plus one, starting at 1, and stats agree.
    for wal_enabled in MODES {
        let dir = tempfile::tempdir().unwrap();
        let mut lsn_expected = 0;
        let mut write = |store: &Store| {
            lsn_expected += 1;
            let lsn = store.assert("s", &format!("f{lsn_expected}"), b"v").unwrap();
            assert_eq!(lsn, lsn_expected, "wal={wal_enabled}");
            assert_eq!(store.stats().unwrap().lsn_last, lsn);
        };
        let store = open(dir.path(), wal_enabled);
        assert_eq!(store.stats().unwrap().lsn_last, 0);
        (0..5).for_each(|_| write(&store));
        assert!(store.close().is_clean());
        let store = open(dir.path(), wal_enabled);
        assert_eq!(store.stats().unwrap().lsn_last, 5);
        write(&store);
        drop(store);
        let store = open(dir.path(), wal_enabled);
        write(&store);
        write(&store);
        store.simulate_crash();
        let store = open(dir.path(), wal_enabled);
        assert_eq!(store.stats().unwrap().lsn_last, 8);
        write(&store);
        let report = store.checkpoint(CheckpointMode::Truncate).unwrap();
        assert_eq!(report.applied_lsn, 9);
        write(&store);
        store.simulate_crash();
        let store = open(dir.path(), wal_enabled);
        write(&store);
        assert_eq!(store.facts("s").unwrap().len(), 11);
    }
}

#[test]
fn passive_checkpoint_removes_folded_segments() {
    // Writes enough ~1 KiB records to fill several 16 KiB segments, then
    // counts the segment files before and after a passive checkpoint: every
    // sealed segment goes, only the active one stays, and the data is intact
    // in the store and after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    for i in 0..60 {
        store.assert("s", &format!("f{i:02}"), &[i as u8; 1000]).unwrap();
    }
    let before = common::segment_paths(&dir.path().join("wal"));
    assert!(before.len() >= 3, "60 KiB of records fill several 16 KiB segments: {before:?}");
    let report = store.checkpoint(CheckpointMode::Passive).unwrap();
    let after = common::segment_paths(&dir.path().join("wal"));
    assert_eq!(after, before[before.len() - 1..].to_vec(), "only the active segment stays");
    assert_eq!(report.segments_removed, before.len() - 1);
    assert_eq!((report.log_frames, report.checkpointed_frames, report.applied_lsn), (60, 60, 60));
    assert!(!report.busy);
    let again = store.checkpoint(CheckpointMode::Passive).unwrap();
    assert_eq!((again.segments_removed, again.checkpointed_frames), (0, 0));
    assert_eq!(store.facts("s").unwrap().len(), 60);
    assert_eq!(store.fact("s", "f59").unwrap(), Some(vec![59; 1000]));
    assert!(store.close().is_clean());
    let store = open(dir.path(), true);
    assert_eq!(store.facts("s").unwrap().len(), 60);
    assert_eq!(store.fact("s", "f00").unwrap(), Some(vec![0; 1000]));
}

#[test]
fn close_and_drop_leave_no_segment_files() {
    // Fills several segments, then closes (and, on a second run, drops) the
    // store: the WAL directory must then hold no file but its lock file.
    for clean_close in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        for i in 0..40 {
            store.assert("s", &format!("f{i}"), &[1; 1000]).unwrap();
        }
        assert!(segment_count(dir.path()) >= 2);
        if clean_close {
            let report = store.close();
            assert!(report.is_clean());
            assert!(report.truncate.unwrap().segments_removed >= 2);
        } else {
            drop(store);
        }
        let wal = dir.path().join("wal");
        let left: Vec<_> = std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(left, vec![wal.join(factwal::LOCK_FILE_NAME)], "clean_close={clean_close}");
    }
}

#[test]
fn direct_mode_creates_no_wal_directory() {
    // Runs writes, a checkpoint, a close and a reopen in direct mode and looks
    // for <dir>/wal after each: it must never exist, and every write must
    // already be in redb (applied_lsn follows the last LSN).
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let store = open(dir.path(), false);
    store.assert("s", "a", b"1").unwrap();
    assert_eq!(store.stats().unwrap().applied_lsn, 1, "direct mode commits each write to redb");
    assert!(!wal_dir.exists());
    assert_eq!(store.checkpoint(CheckpointMode::Truncate).unwrap().segments_removed, 0);
    assert!(store.close().is_clean());
    assert!(!wal_dir.exists());
    let store = open(dir.path(), false);
    assert_eq!(store.fact("s", "a").unwrap(), value("1"));
    store.simulate_crash();
    assert!(!wal_dir.exists());
}

#[test]
fn state_and_lsns_carry_over_when_switching_modes() {
    // Reopens one directory alternately in WAL mode and direct mode, after a
    // crash each time: a direct-mode open must replay the WAL a crashed
    // WAL-mode store left, and each mode must continue the other's LSNs.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    assert_eq!(store.assert("s", "a", b"wal").unwrap(), 1);
    store.simulate_crash();
    assert!(segment_count(dir.path()) >= 1);

    let store = open(dir.path(), false);
    assert_eq!(segment_count(dir.path()), 0, "the direct-mode open replayed and removed the WAL");
    assert_eq!(store.fact("s", "a").unwrap(), value("wal"));
    assert_eq!(store.assert("s", "b", b"direct").unwrap(), 2);
    store.simulate_crash();

    let store = open(dir.path(), true);
    assert_eq!(store.assert("s", "c", b"wal").unwrap(), 3);
    store.simulate_crash();
    let store = open(dir.path(), false);
    assert_eq!(store.facts("s").unwrap(), facts(&[("a", "wal"), ("b", "direct"), ("c", "wal")]));
    assert_eq!(store.stats().unwrap().lsn_last, 3);
}

// ---------------------------------------------------------------------------
// Model-based test: random operations against the store and a BTreeMap.

use factwal::testing::{apply_ops, FactMap};

/// Ids that prefix each other, one with a NUL, since stored keys are ranges
/// over (session, fact) pairs.
const SESSIONS: [&str; 3] = ["s", "s\0", "s0"];
const FACTS: [&str; 3] = ["f", "f\0", "f0"];

/// Each reopen picks the mode it reopens in.
#[derive(Debug, Clone)]
enum Step {
    Write(Vec<Op>),
    Checkpoint(CheckpointMode),
    Crash { wal_enabled: bool },
    CloseReopen { wal_enabled: bool },
    DropReopen { wal_enabled: bool },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let session = proptest::sample::select(SESSIONS.to_vec()).prop_map(String::from);
    let fact = proptest::sample::select(FACTS.to_vec()).prop_map(String::from);
    prop_oneof![
        4 => (session.clone(), fact.clone(), proptest::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(session, fact, value)| Op::Assert { session, fact, value }),
        3 => (session.clone(), fact).prop_map(|(session, fact)| Op::Retract { session, fact }),
        1 => session.prop_map(|session| Op::DropSession { session }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => proptest::collection::vec(op_strategy(), 1..4).prop_map(Step::Write),
        2 => Just(Step::Checkpoint(CheckpointMode::Passive)),
        1 => Just(Step::Checkpoint(CheckpointMode::Truncate)),
        1 => any::<bool>().prop_map(|wal_enabled| Step::Crash { wal_enabled }),
        1 => any::<bool>().prop_map(|wal_enabled| Step::CloseReopen { wal_enabled }),
        1 => any::<bool>().prop_map(|wal_enabled| Step::DropReopen { wal_enabled }),
    ]
}

fn compare(store: &Store, model: &FactMap) -> Result<(), TestCaseError> {
    let sessions: std::collections::BTreeSet<String> =
        model.keys().map(|(session, _)| session.clone()).collect();
    prop_assert_eq!(store.sessions().unwrap(), sessions.into_iter().collect::<Vec<_>>());
    for session in SESSIONS {
        let expected: BTreeMap<String, Vec<u8>> = model
            .iter()
            .filter(|((s, _), _)| s == session)
            .map(|((_, f), v)| (f.clone(), v.clone()))
            .collect();
        prop_assert_eq!(store.facts(session).unwrap(), expected);
        for fact in FACTS {
            let expected = model.get(&(session.to_string(), fact.to_string())).cloned();
            prop_assert_eq!(store.fact(session, fact).unwrap(), expected);
        }
    }
    Ok(())
}

fn run_model(wal_enabled: bool, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), wal_enabled);
    let mut model = FactMap::new();
    let mut lsn_last = 0;
    for step in steps {
        match step {
            Step::Write(ops) => {
                apply_ops(&mut model, &ops);
                lsn_last += 1;
                prop_assert_eq!(store.write(Batch::from(ops)).unwrap(), lsn_last);
            }
            Step::Checkpoint(mode) => {
                let report = store.checkpoint(mode).unwrap();
                prop_assert_eq!(report.applied_lsn, lsn_last);
                prop_assert_eq!(store.stats().unwrap().unfolded.records, 0);
            }
            Step::Crash { wal_enabled } => {
                store.simulate_crash();
                store = open(dir.path(), wal_enabled);
            }
            Step::CloseReopen { wal_enabled } => {
                prop_assert!(store.close().is_clean());
                store = open(dir.path(), wal_enabled);
            }
            Step::DropReopen { wal_enabled } => {
                drop(store);
                store = open(dir.path(), wal_enabled);
            }
        }
        prop_assert_eq!(store.stats().unwrap().lsn_last, lsn_last);
        compare(&store, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_a_btreemap_model(wal_enabled in any::<bool>(), steps in proptest::collection::vec(step_strategy(), 1..30)) {
        // Applies a random sequence of batches, checkpoints of both modes,
        // crashes, closes and drops (each reopening in a random mode) to a
        // store and to a BTreeMap, and after every step compares every read
        // (sessions, facts, fact) and the last LSN with the model.
        run_model(wal_enabled, steps)?;
    }
}
