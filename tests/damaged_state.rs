//! Damage to `state.redb` from outside redb (zeroed pages, flipped bits):
//! no path into redb panics, a wrong value is never returned, every tool
//! names `state.redb` with exit 2, a failing checkpoint leaves the WAL
//! intact, and `salvage` copies every readable fact into a new store and
//! names exactly what it lost.
//!
//! The sweeps damage every page of a real store one at a time (zeroed, or
//! one bit flipped in each of two places) and check each outcome in
//! process; a few pages are then also run through the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use factwal::testing::snapshot_files;
use factwal::{Batch, Config, Error, Loss, ReadOnlyStore, Store};

mod common;

const PAGE: usize = 4096;

type Facts = BTreeMap<(String, String), Vec<u8>>;

/// A closed store of 40 sessions x 12 facts (150-byte values): its
/// directory, its facts, and `state.redb`'s bytes.
struct Pristine {
    dir: tempfile::TempDir,
    facts: Facts,
    state: Vec<u8>,
}

fn config(dir: &Path) -> Config {
    Config::new(dir).segment_bytes(1 << 20).max_record_bytes(64 << 10).wal_bytes_max(4 << 20)
}

fn pristine() -> Pristine {
    let _guard = common::no_spawn_meanwhile();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut facts = Facts::new();
    for session in 0..40 {
        let mut batch = Batch::new();
        for fact in 0..12 {
            let value = format!("s{session}/f{fact}/{}", "v".repeat(140)).into_bytes();
            facts.insert((format!("s{session}"), format!("f{fact}")), value.clone());
            batch = batch.assert(format!("s{session}"), format!("f{fact}"), value);
        }
        store.write(batch).unwrap();
    }
    assert!(store.close().is_clean());
    let state = std::fs::read(dir.path().join("state.redb")).unwrap();
    Pristine { dir, facts, state }
}

/// A copy of the pristine store whose `state.redb` is `state`.
fn damaged_copy(pristine: &Pristine, state: &[u8]) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(pristine.dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), work.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(work.path().join("state.redb"), state).unwrap();
    work
}

/// Every fact a read-only open gives, or its error.
fn read_all(config: &Config) -> Result<Facts, Error> {
    let store = ReadOnlyStore::open(config)?;
    let mut facts = Facts::new();
    for session in store.sessions()? {
        for (fact, value) in store.facts(&session)? {
            facts.insert((session.clone(), fact), value);
        }
    }
    Ok(facts)
}

fn is_state_damage(error: &Error, state: &Path) -> bool {
    matches!(error, Error::StateCorrupted { path, .. } if path == state)
}

/// The damaged copies of the sweep: every page zeroed, and every page with
/// one bit flipped at two different places.
fn damages(pristine: &Pristine) -> Vec<(String, Vec<u8>)> {
    let pages = pristine.state.len() / PAGE;
    let mut damages = Vec::new();
    for page in 0..pages {
        let mut zeroed = pristine.state.clone();
        zeroed[page * PAGE..(page + 1) * PAGE].fill(0);
        damages.push((format!("page {page} zeroed"), zeroed));
        for at in [100, 2000] {
            let mut flipped = pristine.state.clone();
            flipped[page * PAGE + at] ^= 0x10;
            damages.push((format!("page {page} bit flipped at {at}"), flipped));
        }
    }
    damages
}

#[test]
fn damaged_pages_never_panic_and_never_give_a_wrong_value() {
    // For every damage of the sweep: the read-only open and its reads either
    // give exactly the pristine facts or fail with StateCorrupted naming
    // state.redb (never a panic, never a wrong value, never another error);
    // and a read-write open, a write, a checkpoint and a close never panic,
    // and a failing one keeps the WAL: the acknowledged write is then still
    // in a segment. Some damage is in pages no read touches; the sweep
    // asserts that most damage is seen.
    let pristine = pristine();
    let mut seen = 0;
    let damages = damages(&pristine);
    for (what, state) in &damages {
        let _guard = common::no_spawn_meanwhile();
        let work = damaged_copy(&pristine, state);
        let config = config(work.path());
        let state_path = config.state_path();
        match read_all(&config) {
            Ok(facts) => {
                let wrong: Vec<_> = facts
                    .keys()
                    .filter(|key| facts.get(*key) != pristine.facts.get(*key))
                    .collect();
                assert!(
                    wrong.is_empty() && facts.len() == pristine.facts.len(),
                    "{what}: wrong values for {wrong:?}"
                );
            }
            Err(error) => {
                assert!(is_state_damage(&error, &state_path), "{what}: {error:?}");
                seen += 1;
            }
        }
        let Ok(store) = Store::open(config.clone()) else { continue };
        let acknowledged =
            store.write(Batch::new().assert("new", "fact", b"written after the damage".to_vec()));
        let _ = store.checkpoint(factwal::CheckpointMode::Passive);
        let report = store.close();
        if acknowledged.is_ok() && report.truncate.is_err() {
            let segments = common::segment_paths(&config.wal_dir());
            assert!(!segments.is_empty(), "{what}: a failed checkpoint removed the WAL");
        }
    }
    // Most of the file is free pages no read touches; the pages in use must
    // still make the sweep meaningful.
    assert!(seen >= 30, "only {seen} of {} damages were noticed", damages.len());
}

#[test]
fn salvage_copies_every_readable_fact_and_names_every_loss() {
    // For every damage of the sweep, salvage into a new store: every fact
    // the new store holds has its pristine value; every pristine fact it
    // lacks is named by a loss (the fact itself, its session short of
    // facts, an unreadable key range, or all of state.redb); when nothing is
    // reported lost, nothing is missing. The damaged store is not changed.
    let pristine = pristine();
    let mut partial = 0;
    for (what, state) in damages(&pristine) {
        let _guard = common::no_spawn_meanwhile();
        let work = damaged_copy(&pristine, &state);
        let config = config(work.path());
        let before = snapshot_files(work.path());
        let target = tempfile::tempdir().unwrap();
        let to = target.path().join("salvaged");
        let report = factwal::salvage(&config, &to)
            .unwrap_or_else(|e| panic!("{what}: salvage failed: {e}"));
        assert_eq!(
            snapshot_files(work.path()),
            before,
            "{what}: salvage changed the damaged store"
        );
        let salvaged =
            read_all(&Config::new(&to)).unwrap_or_else(|e| panic!("{what}: the new store: {e}"));
        for (key, value) in &salvaged {
            assert_eq!(
                Some(value),
                pristine.facts.get(key),
                "{what}: {key:?} salvaged with a wrong value"
            );
        }
        let explained = |(session, fact): &(String, String)| {
            report.lost.iter().any(|loss| match loss {
                Loss::Fact { session: s, fact: f } => s == session && f == fact,
                Loss::Session { session: s, .. } => s == session,
                Loss::Range { .. } | Loss::State { .. } => true,
                _ => false,
            })
        };
        for key in pristine.facts.keys().filter(|key| !salvaged.contains_key(*key)) {
            assert!(
                explained(key),
                "{what}: {key:?} is missing and no loss names it: {:?}",
                report.lost
            );
        }
        if report.is_complete() {
            assert!(salvaged == pristine.facts, "{what}: a complete salvage lacks facts");
        } else {
            partial += 1;
        }
        assert_eq!(report.facts, salvaged.len() as u64, "{what}");
    }
    assert!(partial > 0, "the sweep never lost anything: it tests nothing");
}

#[test]
fn salvage_replays_the_wal_and_restores_what_it_rewrote() {
    // A crashed store whose WAL holds writes after the last fold, and whose
    // state.redb has one value damaged. Salvage copies the rest, replays
    // the WAL (so the later writes are there), and a damaged fact that the
    // WAL wrote again is reported as restored, not lost.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for i in 0..20 {
        store
            .assert("s", &format!("f{i}"), format!("folded-{i}-{}", "x".repeat(60)).as_bytes())
            .unwrap();
    }
    store.checkpoint(factwal::CheckpointMode::Truncate).unwrap();
    store.assert("s", "f3", b"rewritten after the fold").unwrap();
    store.assert("t", "g", b"only in the WAL").unwrap();
    store.simulate_crash();
    // Damage f3's stored value (found by its text) and f5's.
    let path = dir.path().join("state.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    for needle in [&b"folded-3-"[..], &b"folded-5-"[..]] {
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the value is in the file");
        bytes[at + needle.len() + 4] ^= 0x01;
    }
    std::fs::write(&path, bytes).unwrap();

    let target = tempfile::tempdir().unwrap();
    let to = target.path().join("salvaged");
    let report = factwal::salvage(&config(dir.path()), &to).unwrap();
    assert_eq!(report.lost, vec![Loss::Fact { session: "s".into(), fact: "f5".into() }]);
    assert_eq!(report.restored, vec![Loss::Fact { session: "s".into(), fact: "f3".into() }]);
    assert_eq!(report.wal_records_replayed, 2);
    assert_eq!(report.facts_copied, 18);
    let salvaged = Store::open(Config::new(&to)).unwrap();
    assert_eq!(salvaged.fact("s", "f3").unwrap(), Some(b"rewritten after the fold".to_vec()));
    assert_eq!(salvaged.fact("t", "g").unwrap(), Some(b"only in the WAL".to_vec()));
    assert_eq!(salvaged.fact("s", "f5").unwrap(), None);
    assert_eq!(salvaged.facts("s").unwrap().len(), 19);
    assert_eq!(salvaged.stats().unwrap().lsn_last, 22, "LSNs go on from the damaged store's");
    let damaged_id = ReadOnlyStore::open(&config(dir.path())).unwrap().store_record().store_id;
    assert_ne!(Some(salvaged.store_id()), damaged_id, "the new store has an identity of its own");
    assert!(salvaged.close().is_clean());
}

fn factwal(args: &[&str]) -> Output {
    common::output(Command::new(env!("CARGO_BIN_EXE_factwal")).args(args))
}

/// `factwal <args>` with TMPDIR pointing at `tmpdir`.
fn factwal_with_tmpdir(args: &[&str], tmpdir: &Path) -> Output {
    common::output(Command::new(env!("CARGO_BIN_EXE_factwal")).args(args).env("TMPDIR", tmpdir))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_command_line_names_state_redb_exits_2_and_leaves_no_file_behind() {
    // A flipped bit in a stored value: facts, inspect and verify exit 2 with
    // one line naming state.redb (never a temporary copy, never a panic).
    // (checkpoint never reads that fact: it opens, folds nothing new and
    // exits 0; verify is the tool that reads everything.) No tool leaves a
    // file in the temporary directory: the inspection tools make no copy.
    let pristine = pristine();
    let needle = b"s7/f4/";
    let at = pristine.state.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut flipped = pristine.state.clone();
    flipped[at + 20] ^= 0x04;
    let temp = tempfile::tempdir().unwrap();
    {
        let (what, state) = ("a value's bit flipped", flipped);
        let work = damaged_copy(&pristine, &state);
        let dir = work.path().display().to_string();
        let state_path = work.path().join("state.redb").display().to_string();
        for subcommand in ["facts", "inspect", "verify"] {
            let output = factwal_with_tmpdir(&[subcommand, "--dir", &dir], temp.path());
            let err = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{what}: {subcommand}: {err}");
            // verify leads with redb's own integrity finding, which its page
            // checksums also make; the others meet the fact's checksum.
            let named =
                if subcommand == "verify" { "is damaged" } else { "fact checksum mismatch" };
            assert!(
                err.contains(&state_path) && err.contains(named),
                "{what}: {subcommand}: {err}"
            );
            assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                !text(&output.stdout).contains("s7 f4 s7/f4/v"),
                "{what}: {subcommand} printed the damaged fact"
            );
        }
    }
    // A crashed store (redb must repair it to read it): the tools work on it
    // and still leave nothing in the temporary directory.
    let crashed = tempfile::tempdir().unwrap();
    {
        let _guard = common::no_spawn_meanwhile();
        let store = Store::open(config(crashed.path())).unwrap();
        store.assert("s", "f", b"v").unwrap();
        store.checkpoint(factwal::CheckpointMode::Passive).unwrap();
        store.simulate_crash();
    }
    let dir = crashed.path().display().to_string();
    for subcommand in ["facts", "inspect", "verify", "dump"] {
        let output = factwal_with_tmpdir(&[subcommand, "--dir", &dir], temp.path());
        assert_eq!(output.status.code(), Some(0), "{subcommand}: {}", text(&output.stderr));
    }
    let left: Vec<PathBuf> =
        std::fs::read_dir(temp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, Vec::<PathBuf>::new(), "files left in the temporary directory");
}

#[test]
fn salvage_from_the_command_line_and_the_runbook_recipe() {
    // The runbook's recipe for a damaged state.redb: verify (exit 2), salvage
    // into a new directory (exit 2: something was lost, listed), move the
    // damaged store aside and the new one into place, and open it with a
    // fresh WAL directory: it holds every readable fact.
    let pristine = pristine();
    let mut state = pristine.state.clone();
    let needle = b"s9/f2/";
    let at = state.windows(needle.len()).position(|w| w == needle).unwrap();
    state[at + 30] ^= 0x01;
    let root = tempfile::tempdir().unwrap();
    let work = damaged_copy(&pristine, &state);
    let store = root.path().join("store");
    std::fs::rename(work.path(), &store).unwrap();
    let store_arg = store.display().to_string();
    assert_eq!(factwal(&["verify", "--dir", &store_arg]).status.code(), Some(2));
    let new = root.path().join("store.salvaged");
    let output = factwal(&["salvage", "--dir", &store_arg, "--to", &new.display().to_string()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert!(out.contains("LOST: session \"s9\", fact \"f2\": value damaged"), "{out}");
    assert!(out.contains("479 facts copied"), "{out}");
    std::fs::rename(&store, root.path().join("store.damaged")).unwrap();
    std::fs::rename(&new, &store).unwrap();
    let output = factwal(&["verify", "--dir", &store_arg]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    {
        let _guard = common::no_spawn_meanwhile();
        let reopened = Store::open(config(&store)).unwrap();
        assert_eq!(reopened.facts("s9").unwrap().len(), 11);
        assert_eq!(
            reopened.fact("s8", "f2").unwrap(),
            pristine.facts.get(&("s8".into(), "f2".into())).cloned()
        );
        assert!(reopened.close().is_clean());
    }
    // The destination must be new.
    let output = factwal(&["salvage", "--dir", &store_arg, "--to", &store_arg]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("is not empty"), "{}", text(&output.stderr));
}
