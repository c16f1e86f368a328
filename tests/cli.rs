//! The `factwal` binary, run as a user would: every subcommand, its output
//! formats, its exit codes, and its error lines. Stores are built with the
//! library (small segments, crashed with `simulate_crash`) or by `factwal
//! load`, then damaged byte by byte where a test needs it. The read-only
//! subcommands are checked to leave every file byte-identical.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use factwal::testing::snapshot_files;
use factwal::{Batch, ReadOnlyStore, Store};
use serde_json::Value;

mod common;
use common::{no_spawn_meanwhile, small_config};

const SUBCOMMANDS: [&str; 9] =
    ["demo", "load", "facts", "inspect", "dump", "verify", "checkpoint", "salvage", "bench"];
/// The same small segments as `common::small_config`, as a config file.
const SMALL_CONFIG_TOML: &str =
    "[persistence]\nsegment_bytes = 16384\nmax_record_bytes = 4096\nwal_bytes_max = 1048576\n";

/// Spawns `factwal` (the guard of `common::spawn` held until its exec).
fn spawn_factwal(args: &[&str], stdout: Stdio) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_factwal"));
    command.args(args).stdin(Stdio::null()).stdout(stdout).stderr(Stdio::piped());
    common::spawn(&mut command)
}

fn factwal(args: &[&str]) -> Output {
    spawn_factwal(args, Stdio::piped()).wait_with_output().unwrap()
}

/// Opens the store in `dir` (small segments) in this process.
fn open_store(dir: &Path) -> Store {
    let _spawning = no_spawn_meanwhile();
    Store::open(small_config(dir)).unwrap()
}

/// Opens the store in `dir` read-only in this process.
fn inspect_store(dir: &Path) -> ReadOnlyStore {
    let _spawning = no_spawn_meanwhile();
    ReadOnlyStore::open(&small_config(dir)).unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts the exit code, and on failure shows what the binary said.
fn expect_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A failure reported the way the issue asks: one stderr line, no panic.
fn expect_one_error_line(output: &Output, code: i32, needles: &[&str]) -> String {
    expect_code(output, code);
    let text = stderr(output);
    assert_eq!(text.lines().count(), 1, "one line expected:\n{text}");
    assert!(text.starts_with("factwal: ") && !text.contains("panicked"), "{text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    text
}

/// A temp dir holding `store/` and `small.toml`.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("small.toml"), SMALL_CONFIG_TOML).unwrap();
        Fixture { root }
    }

    fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    fn config(&self) -> String {
        self.root.path().join("small.toml").display().to_string()
    }

    /// `SUB --dir store --config small.toml <extra>`.
    fn run(&self, subcommand: &str, extra: &[&str]) -> Output {
        let (store, config) = (self.store().display().to_string(), self.config());
        let mut args = vec![subcommand, "--dir", &store, "--config", &config];
        args.extend_from_slice(extra);
        factwal(&args)
    }

    /// `writes` asserts through the library (4 sessions, one fact per write,
    /// every 7th a retract of an earlier fact), then a crash: every record
    /// stays in the WAL, unfolded.
    fn crashed_store(self, writes: usize) -> Fixture {
        let store = open_store(&self.store());
        for i in 0..writes {
            let session = format!("s{}", i % 4);
            let batch = if i % 7 == 6 {
                Batch::new().retract(session, format!("f{}", i - 4))
            } else {
                Batch::new().assert(session, format!("f{i}"), format!("value-{i}").into_bytes())
            };
            store.write(batch).unwrap();
        }
        store.simulate_crash();
        self
    }

    /// The last segment and where its valid records end.
    fn last_segment_end(&self) -> (PathBuf, u64) {
        let inspector = inspect_store(&self.store());
        let segment = inspector.segments().last().unwrap();
        (segment.path.clone(), segment.end_offset)
    }
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut content = std::fs::read(path).unwrap();
    content[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, content).unwrap();
}

/// Garbage after the last valid record: what a write cut short leaves.
fn tear_tail(fixture: &Fixture) -> (PathBuf, u64) {
    let (segment, end) = fixture.last_segment_end();
    overwrite(&segment, end + 10, &[0xFF; 7]);
    (segment, end)
}

/// A flipped byte inside the second record, with valid records after it.
fn corrupt_second_record(fixture: &Fixture) -> PathBuf {
    let inspector = inspect_store(&fixture.store());
    let second = &inspector.records()[1];
    let segment =
        inspector.segments().iter().find(|s| s.header.number == second.segment_number).unwrap();
    let path = segment.path.clone();
    let offset = second.offset + 40;
    drop(inspector);
    let byte = std::fs::read(&path).unwrap()[offset as usize];
    overwrite(&path, offset, &[byte ^ 0x01]);
    path
}

#[test]
fn help_describes_every_subcommand() {
    // `--help` lists every subcommand; each one's help exits 0 and shows its
    // options, and `load`'s states the ack line contract.
    let output = factwal(&["--help"]);
    expect_code(&output, 0);
    for subcommand in SUBCOMMANDS {
        assert!(stdout(&output).contains(subcommand), "{subcommand} missing from --help");
        let help = factwal(&[subcommand, "--help"]);
        expect_code(&help, 0);
        assert!(stdout(&help).contains("--dir"), "{subcommand} --help:\n{}", stdout(&help));
    }
    let load = stdout(&factwal(&["load", "--help"]));
    assert!(load.contains("ack <lsn> <session> <fact> <seq> <op>"), "{load}");
    assert!(stdout(&factwal(&["verify", "--help"])).contains("Exit codes"));
    let usage = factwal(&["facts", "--no-such-flag"]);
    expect_code(&usage, 64);
}

#[test]
fn load_prints_one_exact_ack_per_write_and_facts_show_the_last() {
    // 60 writes over 4 threads: every seq and every LSN appears once, each
    // line follows the documented schedule, and `facts --json` then holds,
    // for every fact, the value of its write with the highest LSN.
    let fixture = Fixture::new();
    let load_args =
        ["--sessions", "3", "--writes", "60", "--facts-per-session", "2", "--value-bytes", "20"];
    let output = fixture
        .run("load", &[&load_args[..], &["--threads", "4", "--retract-every", "5"]].concat());
    expect_code(&output, 0);
    let mut last_by_fact: BTreeMap<(String, String), (u64, u64, String)> = BTreeMap::new();
    let (mut seqs, mut lsns) = (BTreeSet::new(), BTreeSet::new());
    for line in stdout(&output).lines() {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 6, "{line}");
        assert_eq!(words[0], "ack", "{line}");
        let (lsn, seq): (u64, u64) = (words[1].parse().unwrap(), words[4].parse().unwrap());
        assert_eq!(words[2], format!("s{}", seq % 3), "{line}");
        assert_eq!(words[3], format!("f{}", (seq / 3) % 2), "{line}");
        assert_eq!(words[5], if seq % 5 == 0 { "retract" } else { "assert" }, "{line}");
        assert!(seqs.insert(seq) && lsns.insert(lsn), "duplicate in {line}");
        let key = (words[2].to_string(), words[3].to_string());
        if last_by_fact.get(&key).is_none_or(|(last_lsn, _, _)| lsn > *last_lsn) {
            last_by_fact.insert(key, (lsn, seq, words[5].to_string()));
        }
    }
    assert_eq!(seqs, (1..=60).collect());
    assert_eq!(lsns, (1..=60).collect());
    let mut expected = BTreeSet::new();
    for ((session, fact), (_, seq, op)) in &last_by_fact {
        if op == "assert" {
            let value = format!("{:.<20}", format!("{session}/{fact}/{seq}"));
            assert_eq!(value.len(), 20);
            expected
                .insert(format!(r#"{{"session":"{session}","fact":"{fact}","value":"{value}"}}"#));
        }
    }
    let facts = fixture.run("facts", &["--json"]);
    expect_code(&facts, 0);
    assert_eq!(stdout(&facts).lines().map(str::to_string).collect::<BTreeSet<_>>(), expected);
}

#[test]
fn read_only_commands_change_no_byte_whatever_the_wal_holds() {
    // facts, inspect, dump and verify (plain and JSON) on a crashed store, on
    // a torn tail and on a corruption: every file stays byte-identical.
    let fixture = Fixture::new().crashed_store(30);
    let runs: [(&str, &[&str]); 7] = [
        ("facts", &[]),
        ("facts", &["--json", "--session", "s1"]),
        ("inspect", &[]),
        ("inspect", &["--json"]),
        ("dump", &[]),
        ("dump", &["--json", "--from-lsn", "3"]),
        ("verify", &[]),
    ];
    for damage in ["none", "torn tail", "corruption"] {
        match damage {
            "torn tail" => drop(tear_tail(&fixture)),
            "corruption" => drop(corrupt_second_record(&fixture)),
            _ => {}
        }
        let before = snapshot_files(&fixture.store());
        for (subcommand, extra) in runs {
            let output = fixture.run(subcommand, extra);
            assert!(
                !stderr(&output).contains("panicked"),
                "{subcommand} {extra:?}: {}",
                stderr(&output)
            );
            assert_eq!(
                snapshot_files(&fixture.store()),
                before,
                "{subcommand} {extra:?} changed files ({damage})"
            );
        }
    }
}

#[test]
fn facts_show_the_crashed_store_and_encode_binary_values() {
    // Plain `session fact value` lines as a reopen would give them; JSON with
    // base64 and "encoding" for a value that is not UTF-8.
    let fixture = Fixture::new();
    let store = open_store(&fixture.store());
    store.assert("s1", "text", b"hello world").unwrap();
    store.assert("s1", "bin", &[0xFF, 0x00, 0x41]).unwrap();
    store.assert("s2", "other", b"x").unwrap();
    store.simulate_crash();
    let plain = fixture.run("facts", &[]);
    expect_code(&plain, 0);
    assert_eq!(stdout(&plain), "s1 bin base64:/wBB\ns1 text hello world\ns2 other x\n");
    let json = fixture.run("facts", &["--json", "--session", "s1"]);
    expect_code(&json, 0);
    assert_eq!(
        stdout(&json),
        "{\"session\":\"s1\",\"fact\":\"bin\",\"value\":\"/wBB\",\"encoding\":\"base64\"}\n\
         {\"session\":\"s1\",\"fact\":\"text\",\"value\":\"hello world\"}\n"
    );
}

#[test]
fn inspect_and_dump_describe_the_wal() {
    // inspect's JSON keys and figures; dump's --from-lsn and --limit, plain
    // and JSON.
    let fixture = Fixture::new().crashed_store(12);
    let output = fixture.run("inspect", &["--json"]);
    expect_code(&output, 0);
    let inspect: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(inspect["applied_lsn"], 0);
    assert_eq!(inspect["unfolded_records"], 12);
    assert_eq!(inspect["sessions"], 4);
    assert_eq!(inspect["facts"], 10, "11 asserts, one of them retracted: {inspect}");
    assert!(inspect["redb_bytes"].as_u64().unwrap() > 0);
    assert!(inspect["problem"].is_null());
    let segment = &inspect["segments"][0];
    assert_eq!(
        (segment["lsn_first"].as_u64(), segment["records"].as_u64()),
        (Some(1), Some(12)),
        "{segment}"
    );
    assert_eq!(segment["bytes"], 16384);
    assert!(stdout(&fixture.run("inspect", &[])).contains("unfolded records  12"));

    let dump = fixture.run("dump", &["--from-lsn", "4", "--limit", "3"]);
    expect_code(&dump, 0);
    let lines: Vec<String> = stdout(&dump).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("lsn=4 segment=00000000000000000001.wal offset="), "{}", lines[0]);
    assert!(lines[0].ends_with("unfolded: assert s3/f3 (7 bytes)"), "{}", lines[0]);
    let json = fixture.run("dump", &["--json", "--from-lsn", "7", "--limit", "1"]);
    let record: Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(record["lsn"], 7);
    assert_eq!(record["folded"], false);
    assert_eq!(
        record["ops"][0],
        serde_json::json!({"op": "retract", "session": "s2", "fact": "f2"})
    );
    for key in ["segment", "offset", "bytes"] {
        assert!(!record[key].is_null(), "{key} missing: {record}");
    }
}

#[test]
fn verify_exit_codes_clean_torn_tail_corruption() {
    // 0 on a clean crashed store; 1 on a torn tail, naming file, offset and
    // bytes; 2 on corruption, naming file, offset and LSN, which `facts` and
    // `dump` report with exit 2 too.
    let fixture = Fixture::new().crashed_store(20);
    expect_code(&fixture.run("verify", &[]), 0);

    let (segment, end) = tear_tail(&fixture);
    let torn = fixture.run("verify", &[]);
    let file = segment.display().to_string();
    let line = expect_one_error_line(
        &torn,
        1,
        &["unreadable last record", &file, &format!("offset {end}"), "17 bytes"],
    );
    assert!(
        stdout(&torn).contains(line.trim_start_matches("factwal: ").trim()),
        "{}",
        stdout(&torn)
    );
    expect_code(&fixture.run("facts", &[]), 0);
    expect_code(&fixture.run("dump", &[]), 0);

    let fixture = Fixture::new().crashed_store(20);
    let segment = corrupt_second_record(&fixture);
    let file = segment.display().to_string();
    let needles = ["corrupted", &file, "offset", "(LSN 2)"];
    expect_one_error_line(&fixture.run("verify", &[]), 2, &needles);
    let facts = fixture.run("facts", &[]);
    expect_one_error_line(&facts, 2, &needles);
    assert!(facts.stdout.is_empty());
    let dump = fixture.run("dump", &[]);
    expect_one_error_line(&dump, 2, &needles);
    assert_eq!(stdout(&dump).lines().count(), 1, "the record before the corruption is listed");
    expect_one_error_line(&fixture.run("checkpoint", &[]), 2, &needles);
}

#[test]
fn checkpoint_reports_its_pass_and_empties_the_wal() {
    // The open replays the crashed WAL; the pass's fields are printed; the
    // close's TRUNCATE pass leaves no record in the WAL.
    let fixture = Fixture::new().crashed_store(15);
    let output = fixture.run("checkpoint", &["--json"]);
    expect_code(&output, 0);
    let pass: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(pass["mode"], "passive");
    assert_eq!(pass["replayed_at_open"], 15);
    assert_eq!(pass["applied_lsn"], 15);
    for key in ["busy", "log_frames", "checkpointed_frames", "elapsed_ms", "segments_removed"] {
        assert!(!pass[key].is_null(), "{key} missing: {pass}");
    }
    let inspect: Value =
        serde_json::from_str(&stdout(&fixture.run("inspect", &["--json"]))).unwrap();
    assert_eq!(
        (inspect["unfolded_records"].as_u64(), inspect["applied_lsn"].as_u64()),
        (Some(0), Some(15))
    );
    let truncate = fixture.run("checkpoint", &["--truncate"]);
    expect_code(&truncate, 0);
    let line = stdout(&truncate);
    assert!(line.starts_with(
        "checkpoint pass mode=truncate busy=false log_frames=0 checkpointed_frames=0 elapsed_ms="
    ));
    assert!(
        line.contains(" applied_lsn=15 segments_removed=")
            && line.trim_end().ends_with("replayed_at_open=0")
    );
}

#[test]
fn errors_are_one_line_naming_what_and_where() {
    // A bad config key names the key and the file; a missing directory
    // names the directory; flags that contradict nothing still validate.
    let fixture = Fixture::new();
    let bad = fixture.root.path().join("bad.toml");
    std::fs::write(&bad, "[persistence]\nsegment_byte = 5\n").unwrap();
    let bad = bad.display().to_string();
    for subcommand in ["facts", "inspect", "dump", "checkpoint", "load"] {
        let mut args = vec![subcommand, "--config", &bad[..]];
        if subcommand == "load" {
            args.extend(["--sessions", "1", "--writes", "1"]);
        }
        expect_one_error_line(&factwal(&args), 1, &["persistence.segment_byte", &bad]);
    }
    expect_one_error_line(
        &factwal(&["verify", "--config", &bad]),
        3,
        &["persistence.segment_byte", &bad],
    );
    let missing = fixture.root.path().join("missing").display().to_string();
    for subcommand in ["facts", "inspect", "dump", "checkpoint"] {
        expect_one_error_line(&factwal(&[subcommand, "--dir", &missing]), 1, &[&missing]);
    }
    expect_one_error_line(&factwal(&["verify", "--dir", &missing]), 3, &[&missing]);
    expect_one_error_line(&factwal(&["facts"]), 1, &["--dir"]);
}

/// Kills and reaps the child however the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_store_held_by_another_process_is_reported_locked() {
    // A `factwal load` child holds the store: every subcommand reports the
    // lock file. Then a Store held by this process (a flock of its own
    // open file description) is refused the same way. After the child is
    // killed, the store is readable and sound.
    let fixture = Fixture::new();
    let store_dir = fixture.store().display().to_string();
    let spawning = no_spawn_meanwhile();
    let child = Command::new(env!("CARGO_BIN_EXE_factwal"))
        .args([
            "load",
            "--dir",
            &store_dir,
            "--config",
            &fixture.config(),
            "--sessions",
            "4",
            "--writes",
        ])
        .arg(u64::MAX.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(spawning);
    let mut child = ChildGuard(child);
    let mut first_ack = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap()).read_line(&mut first_ack).unwrap();
    assert!(first_ack.starts_with("ack 1 s1 f0 1 assert"), "{first_ack}");
    let lock = fixture.store().join("LOCK").display().to_string();
    for subcommand in ["facts", "inspect", "dump", "checkpoint"] {
        expect_one_error_line(&fixture.run(subcommand, &[]), 1, &["locked", &lock]);
    }
    expect_one_error_line(&fixture.run("verify", &[]), 3, &["locked", &lock]);
    let load = fixture.run("load", &["--sessions", "1", "--writes", "1"]);
    expect_one_error_line(&load, 1, &["locked", &lock]);
    drop(child);

    // SIGKILL may cut a write that spans two pages: a torn tail (exit 1).
    let verify = fixture.run("verify", &[]);
    assert!(matches!(verify.status.code(), Some(0 | 1)), "{}", stderr(&verify));
    let store = open_store(&fixture.store());
    expect_one_error_line(&fixture.run("facts", &[]), 1, &["locked", &lock]);
    assert!(store.close().is_clean());
    expect_code(&fixture.run("facts", &[]), 0);
}

#[test]
fn demo_quick_run_loses_no_acknowledged_write() {
    // The demo's short run: a writer killed with SIGKILL, nothing lost, every
    // section printed, and a second run may reuse (wipe) the directory while
    // a directory it did not make is refused.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo").display().to_string();
    let output = factwal(&["demo", "--quick", "--dir", &dir]);
    expect_code(&output, 0);
    let text = stdout(&output);
    for needle in [
        "writes acknowledged",
        "writes recovered",
        "disk floor",
        "WAL mode",
        "direct mode",
        "checkpoint passes",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    let lost = text.lines().find(|line| line.trim_start().starts_with("writes lost")).unwrap();
    assert_eq!(lost.split_whitespace().nth(2), Some("0"), "{lost}");
    assert!(text.lines().any(|line| line.starts_with("PASS: all ")), "{text}");
    expect_code(&factwal(&["verify", "--dir", &format!("{dir}/crash")]), 0);

    let mine = root.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("keep.txt"), b"precious").unwrap();
    let refused = factwal(&["demo", "--quick", "--dir", &mine.display().to_string()]);
    expect_one_error_line(&refused, 1, &["refusing to wipe"]);
    assert_eq!(std::fs::read(mine.join("keep.txt")).unwrap(), b"precious");
}

#[test]
fn bench_json_has_every_cell_with_stable_keys() {
    // The shortest bench: 3 modes x 3 writer counts, the documented keys,
    // floor ratios of 1, and its directory removed at the end.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bench");
    let output =
        factwal(&["bench", "--json", "--seconds", "0.05", "--dir", &dir.display().to_string()]);
    expect_code(&output, 0);
    let bench: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(bench["seconds_per_measurement"], 0.05);
    assert_eq!(bench["value_bytes"], 200);
    let results = bench["results"].as_array().unwrap();
    let cells: Vec<(String, u64)> = results
        .iter()
        .map(|r| (r["mode"].as_str().unwrap().to_string(), r["writers"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(String, u64)> = [1, 8, 64]
        .into_iter()
        .flat_map(|writers| ["floor", "wal", "direct"].map(|mode| (mode.to_string(), writers)))
        .collect();
    assert_eq!(cells, expected);
    let keys = [
        "writes",
        "writes_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "p50_vs_floor",
        "writes_per_s_vs_floor",
    ];
    for result in results {
        for key in keys {
            assert!(result[key].is_number(), "{key} in {result}");
        }
        if result["mode"] == "floor" {
            assert_eq!(result["p50_vs_floor"], 1.0);
        }
    }
    assert!(!dir.exists(), "bench removes its directory");
}

#[test]
fn a_fifo_or_a_directory_named_like_a_segment_is_refused_at_once() {
    // A FIFO named like a segment used to make facts and verify wait for a
    // writer forever; a directory named like one gave "No such device".
    // Both are refused at once, naming the file and what it is.
    let fixture = Fixture::new().crashed_store(10);
    let wal = fixture.store().join("wal");
    let next = factwal::testing::segment_numbers(&wal).unwrap().last().unwrap() + 1;
    let fifo = wal.join(format!("{next:020}.wal"));
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    for subcommand in ["facts", "verify", "inspect", "checkpoint"] {
        let output = fixture.run(subcommand, &[]);
        let code = if subcommand == "verify" { 3 } else { 1 };
        expect_one_error_line(
            &output,
            code,
            &[&fifo.display().to_string(), "is a FIFO, not a regular file"],
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "a tool waited on the FIFO");
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    let output = fixture.run("facts", &[]);
    expect_one_error_line(
        &output,
        1,
        &[&fifo.display().to_string(), "is a directory, not a regular file"],
    );
}

#[test]
fn wrong_kinds_of_paths_are_named_for_what_they_are() {
    // --dir naming a file, and a state.redb that is a directory: each error
    // says what the path is, not "no such directory" or "not a store".
    let fixture = Fixture::new();
    let file = fixture.root.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let file_arg = file.display().to_string();
    for subcommand in ["facts", "checkpoint"] {
        let output = factwal(&[subcommand, "--dir", &file_arg]);
        expect_one_error_line(&output, 1, &[&file_arg, "is a regular file, not a directory"]);
    }
    let store = fixture.store();
    std::fs::create_dir_all(store.join("state.redb")).unwrap();
    let state = store.join("state.redb").display().to_string();
    for subcommand in ["facts", "checkpoint"] {
        let output = fixture.run(subcommand, &[]);
        expect_one_error_line(&output, 1, &[&state, "is a directory, not a regular file"]);
    }
}

#[test]
fn load_takes_its_checkpoint_interval_from_its_config_unless_the_flag_is_given() {
    // `checkpoint.interval_s` of --config decides load's loop (0: none); the
    // flag overrides it; with neither, 100 ms. Before the fix load always
    // ran its loop every 100 ms, config or not.
    let fixture = Fixture::new();
    let config = fixture.root.path().join("no-loop.toml");
    std::fs::write(&config, format!("{SMALL_CONFIG_TOML}[checkpoint]\ninterval_s = 0\n")).unwrap();
    let (dir, config) = (fixture.store().display().to_string(), config.display().to_string());
    let base = ["load", "--dir", &dir, "--sessions", "2", "--writes", "3", "--log", "info"];
    let run = |extra: &[&str]| {
        let output = factwal(&[&base[..], extra].concat());
        expect_code(&output, 0);
        stderr(&output)
    };
    let from_config = run(&["--config", &config]);
    assert!(from_config.contains("checkpoint loop disabled"), "{from_config}");
    let flag = run(&["--config", &config, "--checkpoint-interval-ms", "250"]);
    assert!(flag.contains("checkpoint loop started interval_s=0.25"), "{flag}");
    let neither = run(&[]);
    assert!(neither.contains("checkpoint loop started interval_s=0.1"), "{neither}");
}

#[test]
fn plain_facts_and_dump_quote_ids_that_could_forge_a_line() {
    // An id holding a newline (or a space, a quote, a slash in dump) would
    // let one fact print as two lines or shift columns. Plain output quotes
    // such ids (and such values) as JSON strings; ordinary ones stay bare.
    let fixture = Fixture::new();
    let store = open_store(&fixture.store());
    store.assert("s1\ns2 f0 forged", "f", b"v").unwrap();
    store.assert("plain", "two words", b"line one\nline two").unwrap();
    store.assert("plain", "x/y", b"ok").unwrap();
    store.simulate_crash();
    let plain = fixture.run("facts", &[]);
    expect_code(&plain, 0);
    assert_eq!(
        stdout(&plain),
        "plain \"two words\" \"line one\\nline two\"\nplain x/y ok\n\"s1\\ns2 f0 forged\" f v\n"
    );
    let dump = fixture.run("dump", &[]);
    expect_code(&dump, 0);
    let lines: Vec<String> =
        stdout(&dump).lines().map(|line| line.split(": ").nth(1).unwrap().to_string()).collect();
    assert_eq!(
        lines,
        vec![
            "assert \"s1\\ns2 f0 forged\"/f (1 bytes)",
            "assert plain/\"two words\" (17 bytes)",
            "assert plain/\"x/y\" (2 bytes)"
        ]
    );
}
