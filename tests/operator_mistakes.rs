//! Operator mistakes that used to lose acknowledged writes, run end to end
//! through the command line on real directories, as an operator would make
//! them: a writer (`factwal load`) is killed with SIGKILL after it
//! acknowledged some writes, then the store is opened the wrong way. Each
//! test checks the exact refusal (exit code and the one line naming what and
//! where), that the refusal changed no byte, and that the right way then
//! gives back every acknowledged write.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use factwal::testing::snapshot_files;

/// The binary under test; `FACTWAL_TEST_BIN` runs these scenarios against
/// another build (an older release, to see them fail there).
fn binary() -> PathBuf {
    std::env::var_os("FACTWAL_TEST_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_factwal")), PathBuf::from)
}

fn factwal(args: &[&str]) -> Output {
    common::output(Command::new(binary()).args(args))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and that stderr holds each needle (on one line,
/// with no panic), showing everything on failure.
fn expect(output: &Output, code: i32, needles: &[&str]) {
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(code), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} missing from stderr:\n{err}");
    }
}

/// One acknowledged write of `factwal load`: `ack <lsn> <session> <fact> <seq> <op>`.
#[derive(Debug, Clone)]
struct Ack {
    lsn: u64,
    session: String,
    fact: String,
    seq: u64,
}

/// Runs `factwal load <args>` (one writer thread, asserts only) and kills it
/// with SIGKILL once it has acknowledged `acks_wanted` writes.
fn load_and_kill(args: &[&str], acks_wanted: usize) -> Vec<Ack> {
    let mut all = vec!["load", "--sessions", "5", "--writes", "100000000", "--threads", "1"];
    all.extend_from_slice(args);
    let mut child = common::spawn(
        Command::new(binary())
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut acks = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acks.len() < acks_wanted {
        let line = lines.next().expect("load ended before enough acks").unwrap();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0], "ack", "{line}");
        let lsn = fields[1].parse().unwrap();
        acks.push(Ack {
            lsn,
            session: fields[2].into(),
            fact: fields[3].into(),
            seq: fields[4].parse().unwrap(),
        });
    }
    child.kill().unwrap();
    child.wait().unwrap();
    acks
}

/// Every fact of a store, from `factwal facts --json` with these arguments.
fn facts(args: &[&str]) -> BTreeMap<(String, String), String> {
    let mut all = vec!["facts", "--json"];
    all.extend_from_slice(args);
    let output = factwal(&all);
    expect(&output, 0, &[]);
    text(&output.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |key: &str| value[key].as_str().unwrap().to_string();
            ((field("session"), field("fact")), field("value"))
        })
        .collect()
}

/// Every acknowledged write is there: each fact holds the value of its last
/// acknowledged write, or of a later one that was in flight at the kill
/// (`load`'s values start with `s<i>/f<j>/<seq>`).
fn assert_acks_present(facts: &BTreeMap<(String, String), String>, acks: &[Ack], context: &str) {
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ack in acks {
        last.insert((ack.session.clone(), ack.fact.clone()), ack.seq);
    }
    for ((session, fact), seq) in &last {
        let value = facts.get(&(session.clone(), fact.clone()));
        let found = value
            .and_then(|v| v.split('/').nth(2))
            .and_then(|s| s.trim_end_matches('.').parse::<u64>().ok());
        assert!(
            found.is_some_and(|found| found >= *seq),
            "{context}: {session}/{fact} holds {value:?}, acked seq {seq}"
        );
    }
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn lowering_max_record_bytes_after_a_crash_loses_no_big_record() {
    // 3,000-byte values are written with max_record_bytes = 8192 and the
    // writer is killed. The operator then lowers max_record_bytes to 1024
    // (it only limits new writes) and every tool must still read every big
    // record: facts shows them, verify says clean, and a read-write open
    // keeps them. Before the fix, the big records read as torn or corrupt.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let big = write_config(
        root.path(),
        "big.toml",
        "[persistence]\nsegment_bytes = 65536\nmax_record_bytes = 8192\nwal_bytes_max = 1048576\n",
    );
    let small = write_config(
        root.path(),
        "small.toml",
        "[persistence]\nsegment_bytes = 65536\nmax_record_bytes = 1024\nwal_bytes_max = 1048576\n",
    );
    let (store_arg, big_arg, small_arg) = (path_arg(&store), path_arg(&big), path_arg(&small));
    let acks = load_and_kill(
        &[
            "--dir",
            &store_arg,
            "--config",
            &big_arg,
            "--value-bytes",
            "3000",
            "--checkpoint-interval-ms",
            "0",
        ],
        60,
    );
    let lowered = ["--dir", store_arg.as_str(), "--config", small_arg.as_str()];
    assert_acks_present(&facts(&lowered), &acks, "facts with the lowered limit");
    let verify = factwal(&[&["verify"], &lowered[..]].concat());
    expect(&verify, 0, &[]);
    let checkpoint = factwal(&[&["checkpoint"], &lowered[..]].concat());
    expect(&checkpoint, 0, &[]);
    assert_acks_present(&facts(&lowered), &acks, "after a read-write open with the lowered limit");
}

#[test]
fn a_second_store_on_the_same_wal_directory_is_refused() {
    // Store A runs with its WAL in `wal/`; store B is pointed at the same
    // WAL directory. While A is open, B (read-write or read-only) gets
    // Locked naming the WAL's lock file, and A's segments are untouched.
    // Before the fix, B replayed A's records and deleted A's segments.
    let root = tempfile::tempdir().unwrap();
    let wal = root.path().join("wal");
    let config_a = factwal::Config::new(root.path().join("a"))
        .wal_path(&wal)
        .segment_bytes(16384)
        .max_record_bytes(4096);
    let store_a = factwal::Store::open(config_a).unwrap();
    for i in 0..20 {
        store_a.assert("s", &format!("f{i}"), b"from A").unwrap();
    }
    // B is a store of its own, with its own WAL, closed cleanly.
    let b_store = factwal::Store::open(factwal::Config::new(root.path().join("b"))).unwrap();
    b_store.assert("s", "f", b"from B").unwrap();
    assert!(b_store.close().is_clean());
    let before = snapshot_files(&wal);
    let (b, wal_arg) = (path_arg(&root.path().join("b")), path_arg(&wal));
    let lock = path_arg(&wal.join(factwal::LOCK_FILE_NAME));
    for subcommand in ["checkpoint", "facts", "verify"] {
        let output = factwal(&[subcommand, "--dir", &b, "--wal-path", &wal_arg]);
        let code = if subcommand == "verify" { 3 } else { 1 };
        expect(&output, code, &["locked", &lock]);
    }
    let load =
        factwal(&["load", "--dir", &b, "--wal-path", &wal_arg, "--sessions", "1", "--writes", "5"]);
    expect(&load, 1, &["locked", &lock]);
    assert_eq!(snapshot_files(&wal), before, "A's WAL was changed");
    assert!(store_a.close().is_clean());
}

#[test]
fn a_segment_of_another_store_is_refused_naming_both() {
    // Two crashed stores; a segment of store A is copied into store B's WAL
    // as its next segment. Every tool refuses it, naming the segment, its
    // store, B's state.redb and B's identity, and changes nothing. Before
    // the fix, B merged it silently and verify said clean.
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let (a_arg, b_arg) = (path_arg(&a), path_arg(&b));
    let config = write_config(
        root.path(),
        "small.toml",
        "[persistence]\nsegment_bytes = 4096\nmax_record_bytes = 1024\nwal_bytes_max = 1048576\n",
    );
    let config_arg = path_arg(&config);
    load_and_kill(
        &["--dir", &a_arg, "--config", &config_arg, "--checkpoint-interval-ms", "0"],
        300,
    );
    load_and_kill(
        &["--dir", &b_arg, "--config", &config_arg, "--checkpoint-interval-ms", "0"],
        100,
    );
    // A's segment with the number of B's last one takes its place: the
    // names, numbers and LSN chain fit; only the identity tells them apart.
    let b_segments = common::segment_paths(&b.join("wal"));
    let copied = b_segments.last().unwrap().clone();
    let a_segment = a.join("wal").join(copied.file_name().unwrap());
    let saved = std::fs::read(&copied).unwrap();
    std::fs::copy(&a_segment, &copied).unwrap();
    let before = snapshot_files(&b);
    let b_state = path_arg(&b.join("state.redb"));
    let copied_arg = path_arg(&copied);
    let needles = [copied_arg.as_str(), "belongs to another store", b_state.as_str()];
    expect(&factwal(&["facts", "--dir", &b_arg, "--config", &config_arg]), 1, &needles);
    expect(&factwal(&["verify", "--dir", &b_arg, "--config", &config_arg]), 3, &needles);
    expect(&factwal(&["checkpoint", "--dir", &b_arg, "--config", &config_arg]), 1, &needles);
    assert_eq!(snapshot_files(&b), before, "a refused open changed files");
    // With its own segment back, B opens.
    std::fs::write(&copied, saved).unwrap();
    expect(&factwal(&["checkpoint", "--dir", &b_arg, "--config", &config_arg]), 0, &[]);
}

#[test]
fn opening_once_without_the_wal_path_after_a_crash_is_refused() {
    // The store's WAL lives in `fast-wal/`; the writer is killed. The
    // operator then runs without --wal-path: the default `<dir>/wal` holds
    // nothing while state.redb says acknowledged writes may wait in the
    // WAL. Every tool refuses, naming both directories, and creates
    // nothing; with the right path every acknowledged write is there.
    // Before the fix, a fresh WAL started at LSNs that overlapped the real
    // one's, whose records were later skipped as folded.
    let root = tempfile::tempdir().unwrap();
    let (store, wal) = (root.path().join("store"), root.path().join("fast-wal"));
    let (store_arg, wal_arg) = (path_arg(&store), path_arg(&wal));
    let acks = load_and_kill(
        &["--dir", &store_arg, "--wal-path", &wal_arg, "--checkpoint-interval-ms", "0"],
        40,
    );
    let before = snapshot_files(root.path());
    let default_wal = path_arg(&store.join("wal"));
    let needles = ["last close was not clean", default_wal.as_str(), wal_arg.as_str()];
    expect(
        &factwal(&["load", "--dir", &store_arg, "--sessions", "1", "--writes", "3"]),
        1,
        &needles,
    );
    expect(&factwal(&["facts", "--dir", &store_arg]), 1, &needles);
    expect(&factwal(&["checkpoint", "--dir", &store_arg]), 1, &needles);
    assert_eq!(snapshot_files(root.path()), before, "a refused open changed or created files");
    assert!(!store.join("wal").exists(), "no WAL directory was created");
    assert_acks_present(
        &facts(&["--dir", &store_arg, "--wal-path", &wal_arg]),
        &acks,
        "with the right path",
    );
    expect(&factwal(&["checkpoint", "--dir", &store_arg, "--wal-path", &wal_arg]), 0, &[]);

    // After that clean close, running without --wal-path moves the WAL
    // (nothing waits in the old one). A crash there, then the old path:
    // refused again, the acknowledged writes waiting at the default path.
    let acks = load_and_kill(&["--dir", &store_arg, "--checkpoint-interval-ms", "0"], 40);
    expect(
        &factwal(&["facts", "--dir", &store_arg, "--wal-path", &wal_arg]),
        1,
        &["last close was not clean"],
    );
    assert_acks_present(&facts(&["--dir", &store_arg]), &acks, "at the default path");
}

#[test]
fn a_segment_file_cut_short_is_damage_not_a_clean_end() {
    // The writer is killed, then the last segment file is truncated right
    // after a whole record: the log would read as a clean end with the
    // records after the cut silently gone. Every tool must call it damage
    // (exit 2, naming the file and both sizes); point-in-time recovery
    // keeps the prefix and its ERROR says the file was cut short.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let store_arg = path_arg(&store);
    let config = write_config(
        root.path(),
        "seg.toml",
        "[persistence]\nsegment_bytes = 65536\nwal_bytes_max = 1048576\nmax_record_bytes = 4096\n",
    );
    let config_arg = path_arg(&config);
    load_and_kill(
        &["--dir", &store_arg, "--config", &config_arg, "--checkpoint-interval-ms", "0"],
        200,
    );
    let last = common::segment_paths(&store.join("wal")).pop().unwrap();
    let records = common::records_in(&last);
    assert!(records.len() > 20, "{} records", records.len());
    let cut = records[10].offset;
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();
    let before = snapshot_files(&store);
    let args = ["--dir", store_arg.as_str(), "--config", config_arg.as_str()];
    let cut_text = format!("segment file is {cut} bytes but its header says 65536 (cut short)");
    let last_arg = path_arg(&last);
    let needles = [cut_text.as_str(), last_arg.as_str()];
    expect(&factwal(&[&["verify"], &args[..]].concat()), 2, &needles);
    expect(&factwal(&[&["facts"], &args[..]].concat()), 2, &needles);
    expect(&factwal(&[&["checkpoint"], &args[..]].concat()), 2, &needles);
    assert_eq!(snapshot_files(&store), before, "a refused open changed files");
    let inspect = factwal(&[&["inspect", "--json"], &args[..]].concat());
    expect(&inspect, 0, &[]);
    let summary: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(summary["problem"]["kind"], "corrupted");
    assert!(summary["problem"]["detail"].as_str().unwrap().contains("cut short"), "{summary}");

    let pit = write_config(
        root.path(),
        "pit.toml",
        "[persistence]\nsegment_bytes = 65536\nwal_bytes_max = 1048576\nmax_record_bytes = 4096\nrecovery_mode = \"point-in-time\"\n",
    );
    let pit_arg = path_arg(&pit);
    let checkpoint =
        factwal(&["checkpoint", "--dir", &store_arg, "--config", &pit_arg, "--log", "error"]);
    expect(&checkpoint, 0, &["point-in-time recovery", "cut short"]);
    expect(&factwal(&[&["verify"], &args[..]].concat()), 0, &[]);
}

#[test]
fn a_segment_of_a_newer_format_is_not_called_corruption_and_point_in_time_keeps_it() {
    // A segment written by a later factwal (version 3, a checksummed header
    // of its own size) follows the store's segments. Every tool says so with
    // its own exit code (4), not as corruption (2), and point-in-time
    // recovery, which drops what follows corruption, must not delete it.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let store_arg = path_arg(&store);
    load_and_kill(&["--dir", &store_arg, "--checkpoint-interval-ms", "0"], 20);
    let number = factwal::testing::segment_numbers(&store.join("wal")).unwrap().last().unwrap() + 1;
    let newer = store.join("wal").join(format!("{number:020}.wal"));
    let mut header = vec![0u8; 128];
    header[0..8].copy_from_slice(b"FACTWAL\0");
    header[8..12].copy_from_slice(&3u32.to_le_bytes());
    header[12..16].copy_from_slice(&128u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..124]);
    header[124..].copy_from_slice(&crc.to_le_bytes());
    header.resize(4096, 0);
    std::fs::write(&newer, &header).unwrap();
    let before = snapshot_files(&store);
    let newer_arg = path_arg(&newer);
    let needles = [newer_arg.as_str(), "format version 3", "newer than this factwal reads"];
    expect(&factwal(&["verify", "--dir", &store_arg]), 4, &needles);
    expect(&factwal(&["facts", "--dir", &store_arg]), 4, &needles);
    expect(&factwal(&["checkpoint", "--dir", &store_arg]), 4, &needles);
    let pit =
        write_config(root.path(), "pit.toml", "[persistence]\nrecovery_mode = \"point-in-time\"\n");
    expect(
        &factwal(&["checkpoint", "--dir", &store_arg, "--config", &path_arg(&pit)]),
        4,
        &needles,
    );
    assert_eq!(snapshot_files(&store), before, "nothing was changed, nothing deleted");
}

#[test]
fn a_wal_without_its_state_redb_is_refused() {
    // The data directory is given wrong (or state.redb was lost) while the
    // WAL directory holds a store's segments: a read-write open must not
    // make a new state.redb and replay someone's WAL into it.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let store_arg = path_arg(&store);
    load_and_kill(&["--dir", &store_arg, "--checkpoint-interval-ms", "0"], 20);
    let other = path_arg(&root.path().join("elsewhere"));
    let wal_arg = path_arg(&store.join("wal"));
    let before = snapshot_files(root.path());
    let output = factwal(&["checkpoint", "--dir", &other, "--wal-path", &wal_arg]);
    expect(&output, 1, &["open data directory", "no such directory"]);
    let output = factwal(&[
        "load",
        "--dir",
        &other,
        "--wal-path",
        &wal_arg,
        "--sessions",
        "1",
        "--writes",
        "1",
    ]);
    expect(&output, 1, &["there is no state.redb", wal_arg.as_str()]);
    let mut after = snapshot_files(root.path());
    after.retain(|path, _| !path.starts_with(root.path().join("elsewhere")));
    assert_eq!(after, before, "the WAL was changed");
}

#[test]
fn salvage_keeps_every_readable_wal_record_after_a_damaged_one() {
    // One record in the middle of the WAL is damaged (a flipped bit in its
    // payload). Point-in-time recovery would keep only the records before
    // it; salvage keeps every readable batch and loses only the damaged one,
    // naming its LSN: each fact then holds its last acknowledged write other
    // than that one, exactly.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let store_arg = path_arg(&store);
    let config = write_config(
        root.path(),
        "small.toml",
        "[persistence]\nsegment_bytes = 16384\nmax_record_bytes = 4096\nwal_bytes_max = 1048576\n",
    );
    let config_arg = path_arg(&config);
    let acks = load_and_kill(
        &["--dir", &store_arg, "--config", &config_arg, "--checkpoint-interval-ms", "0"],
        600,
    );
    let segments = common::segment_paths(&store.join("wal"));
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let damaged = common::records_in(&segments[1])[3];
    let mut bytes = std::fs::read(&segments[1]).unwrap();
    bytes[(damaged.offset + 40) as usize] ^= 0x01;
    std::fs::write(&segments[1], bytes).unwrap();
    let args = ["--dir", store_arg.as_str(), "--config", config_arg.as_str()];
    expect(&factwal(&[&["verify"], &args[..]].concat()), 2, &[]);

    let salvaged = root.path().join("salvaged");
    let output =
        factwal(&[&["salvage"], &args[..], &["--to", &path_arg(&salvaged), "--json"]].concat());
    expect(&output, 2, &[]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["lost"],
        serde_json::json!([{"kind": "wal_records", "lsn_first": damaged.lsn, "lsn_last": damaged.lsn}])
    );
    let kept: Vec<Ack> = acks.iter().filter(|ack| ack.lsn != damaged.lsn).cloned().collect();
    let facts = facts(&["--dir", &path_arg(&salvaged)]);
    assert_acks_present(&facts, &kept, "after salvage");
    // The damaged batch's fact holds its previous acknowledged value, unless
    // a later acknowledged write (or one in flight) replaced it.
    let lost = acks.iter().find(|ack| ack.lsn == damaged.lsn).unwrap();
    let value = facts.get(&(lost.session.clone(), lost.fact.clone()));
    let seq = value
        .and_then(|v| v.split('/').nth(2))
        .and_then(|s| s.trim_end_matches('.').parse::<u64>().ok());
    assert_ne!(seq, Some(lost.seq), "the damaged batch's write came back");
}

#[test]
fn a_lost_wal_is_refused_and_point_in_time_opens_from_state_redb_alone() {
    // The writer is killed and its WAL directory deleted. Every tool refuses
    // (the last close was not clean, so acknowledged writes were in that
    // WAL); point-in-time recovery is the documented way on, and opens with
    // state.redb alone, saying so with an ERROR, keeping what was folded.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let store_arg = path_arg(&store);
    let acks = load_and_kill(&["--dir", &store_arg, "--checkpoint-interval-ms", "5"], 300);
    let inspect = factwal(&["inspect", "--json", "--dir", &store_arg]);
    expect(&inspect, 0, &[]);
    let summary: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let applied = summary["applied_lsn"].as_u64().unwrap();
    std::fs::remove_dir_all(store.join("wal")).unwrap();
    expect(
        &factwal(&["facts", "--dir", &store_arg]),
        1,
        &["last close was not clean", "holds no segment"],
    );
    expect(&factwal(&["checkpoint", "--dir", &store_arg]), 1, &["last close was not clean"]);
    let pit =
        write_config(root.path(), "pit.toml", "[persistence]\nrecovery_mode = \"point-in-time\"\n");
    let pit_arg = path_arg(&pit);
    let output =
        factwal(&["checkpoint", "--dir", &store_arg, "--config", &pit_arg, "--log", "error"]);
    expect(
        &output,
        0,
        &["the WAL is missing", "writes acknowledged after its applied LSN are lost"],
    );
    // The state is state.redb's: each fact holds its last write up to the
    // applied LSN (one writer thread: LSNs follow seqs), none after it.
    let after = facts(&["--dir", &store_arg]);
    let folded: Vec<&Ack> = acks.iter().filter(|ack| ack.lsn <= applied).collect();
    let folded_owned: Vec<Ack> = folded.iter().map(|ack| (*ack).clone()).collect();
    assert!(
        !folded.is_empty(),
        "the loop folded something before the kill (applied LSN {applied})"
    );
    assert_acks_present(&after, &folded_owned, "state.redb alone");
    for (key, value) in &after {
        let seq: u64 = value.split('/').nth(2).unwrap().trim_end_matches('.').parse().unwrap();
        let later = acks.iter().find(|ack| ack.seq == seq).is_some_and(|ack| ack.lsn > applied);
        assert!(!later, "{key:?} holds a write from after the applied LSN {applied}");
    }
    expect(&factwal(&["verify", "--dir", &store_arg]), 0, &[]);
}
