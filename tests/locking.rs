//! The directory lock: one open store per data directory, whether the second
//! opener is in the same process or another one, and the lock goes away with
//! the store (close, drop, crash) or with the process holding it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use factwal::testing::snapshot_files;
use factwal::{Error, Store, LOCK_FILE_NAME};

mod common;

/// Tells the child test which directory to lock; without it the child test
/// does nothing.
const CHILD_DIR_ENV: &str = "FACTWAL_LOCKING_CHILD_DIR";
/// What the child prints once it holds the lock.
const LOCKED_LINE: &str = "locked";
/// How long the child keeps the lock at most, should the parent vanish.
const CHILD_HOLD_MAX: Duration = Duration::from_secs(10);
/// How long the parent waits for the child to report the lock.
const CHILD_START_MAX: Duration = Duration::from_secs(30);

fn expect_locked(dir: &Path) {
    match Store::open(common::small_config(dir)) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.join(LOCK_FILE_NAME)),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
}

#[test]
fn second_open_in_the_same_process_is_locked() {
    // Opens a store, then tries a second open of the same directory: it must
    // fail with Locked naming <dir>/LOCK, change no file, and leave the first
    // store fully working.
    let _spawning = common::no_spawn_meanwhile();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    store.assert("s", "f", b"1").unwrap();
    let files_before = snapshot_files(dir.path());
    expect_locked(dir.path());
    expect_locked(dir.path());
    assert_eq!(snapshot_files(dir.path()), files_before, "a refused open changes nothing");
    assert_eq!(store.assert("s", "g", b"2").unwrap(), 2, "the first store still works");
    assert_eq!(store.facts("s").unwrap().len(), 2);
    assert!(store.close().is_clean());
}

#[test]
fn lock_is_released_by_close_drop_and_crash() {
    // Releases the lock in each of the three ways a store can end and checks
    // that the next open succeeds and sees the data, and that the reopened
    // store holds the lock again.
    let _spawning = common::no_spawn_meanwhile();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(common::small_config(dir.path())).unwrap();
    store.assert("s", "closed", b"1").unwrap();
    assert!(store.close().is_clean());

    let store = Store::open(common::small_config(dir.path())).unwrap();
    expect_locked(dir.path());
    store.assert("s", "dropped", b"1").unwrap();
    drop(store);

    let store = Store::open(common::small_config(dir.path())).unwrap();
    expect_locked(dir.path());
    store.assert("s", "crashed", b"1").unwrap();
    store.simulate_crash();

    let store = Store::open(common::small_config(dir.path())).unwrap();
    expect_locked(dir.path());
    let facts: Vec<String> = store.facts("s").unwrap().into_keys().collect();
    assert_eq!(facts, ["closed", "crashed", "dropped"]);
}

/// Kills and reaps the child however the test ends, so no process outlives it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path) -> (ChildGuard, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().unwrap();
    let spawning = common::no_spawn_meanwhile();
    let mut child = Command::new(exe)
        .args(["child_holds_lock", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    drop(spawning);
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (ChildGuard(child), lines_rx)
}

/// Waits for the child's "locked" line; the test harness may print its own
/// text on the same line first.
fn wait_for_locked(lines: &mpsc::Receiver<String>) {
    let deadline = Instant::now() + CHILD_START_MAX;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.trim_end().ends_with(LOCKED_LINE) => return,
            Ok(_) => {}
            Err(error) => panic!("the child never reported holding the lock: {error}"),
        }
    }
}

#[test]
fn second_process_holding_the_store_locks_it_until_it_dies() {
    // Re-runs this test binary as a child that opens the store, writes a
    // fact and prints "locked"; meanwhile this process's open must get
    // Locked. The child is then killed (SIGKILL, no close), after which the
    // open must succeed and recover the child's acknowledged write.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = spawn_child(dir.path());
    wait_for_locked(&lines);
    expect_locked(dir.path());
    expect_locked(dir.path());

    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the child was killed while holding the lock: {status}");
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.fact("child", "pid").unwrap(), Some(child.0.id().to_string().into_bytes()));
    assert!(store.close().is_clean());
}

#[test]
fn second_process_that_closes_releases_the_lock() {
    // Same child, but this time it is asked to finish (its stdin closes) and
    // closes its store normally: it must exit with success, and the open here
    // must then succeed with the child's write folded and no WAL left behind.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = spawn_child(dir.path());
    wait_for_locked(&lines);
    expect_locked(dir.path());

    drop(child.0.stdin.take());
    let deadline = Instant::now() + CHILD_HOLD_MAX + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the child did not exit after its stdin closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the child's test failed: {status}");
    assert_eq!(common::segment_paths(&dir.path().join("wal")), Vec::<std::path::PathBuf>::new());
    let store = Store::open(common::small_config(dir.path())).unwrap();
    assert_eq!(store.fact("child", "pid").unwrap(), Some(child.0.id().to_string().into_bytes()));
}

/// The child side of the two-process tests; does nothing unless run by them.
#[test]
#[ignore = "run by the two-process locking tests, with a directory to lock"]
fn child_holds_lock() {
    // Opens the store in the directory it is given, writes its pid as a fact,
    // prints "locked", then holds the store until its stdin closes (or at
    // most CHILD_HOLD_MAX) and closes it.
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let store = Store::open(common::small_config(Path::new(&dir))).unwrap();
    store.assert("child", "pid", std::process::id().to_string().as_bytes()).unwrap();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{LOCKED_LINE}").unwrap();
    stdout.flush().unwrap();

    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed_tx.send(());
    });
    let _ = closed_rx.recv_timeout(CHILD_HOLD_MAX);
    assert!(store.close().is_clean());
}
