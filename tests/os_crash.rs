//! Kernel crash rounds: zero loss under a real Linux kernel, on ext4
//! (data=ordered and data=writeback), xfs and btrfs.
//!
//! kill -9 (tests/crash_kill9.rs) crashes the process, but the kernel's page
//! cache survives it, so a missing fsync or directory sync never shows there;
//! the crash simulation (tests/simulation.rs) drops unsynced data under a
//! file-system model of our own. Here the kernel itself crashes. User-Mode
//! Linux runs a real Linux kernel as an ordinary process, with the host's
//! root as its root file system (hostfs) and a file-system image as its block
//! device (ubd). Each round boots it with an init script that mounts the image
//! and runs `factwal load` on a store in it, its `ack` lines on the console;
//! the host reads them and SIGKILLs the kernel's process group at a chosen
//! moment. Everything the guest kernel had not yet written to its block
//! device (its page cache, its journal's running transaction) is gone, as
//! in a kernel crash or a power cut, while every write the device completed
//! stays (the image is a host file: the model is a disk without a volatile
//! write cache). The next boot mounts the image (the file system replays its
//! journal or log), runs `factwal verify`, `inspect --json` and
//! `facts --json`, and the host checks the store against the acks as the
//! kill -9 rounds do (tests/common/acks.rs). The next round's writer then
//! opens the store read-write, recovering it inside the guest, where the
//! next kill may land.
//!
//! Kills land in three ways, from a seeded generator (the seed is printed):
//! - at a random moment after the writer's first ack (during appends, group
//!   syncs, segment rolls, folds, segment removal);
//! - at a random moment after the mount, which often lands while the writer
//!   is still opening the store: recovery itself is killed;
//! - at a chosen point: tests/os_crash/crashpoint.c, preloaded into the
//!   writer, stops the process at the n-th call of a kind (a segment written
//!   but not synced, a segment renamed into place but its directory not
//!   synced, state.redb written by a fold but not synced, ...) and says so on
//!   the console; the host kills the kernel on reading it.
//!
//! Each file system gets its own image with two stores, one in WAL mode
//! (16 KiB segments, a checkpoint pass every 3 ms) and one in direct mode,
//! written in turn by one or four writer threads.
//!
//! Needs `linux.uml` (Debian's `user-mode-linux`), mkfs.ext4, mkfs.xfs and
//! mkfs.btrfs (`e2fsprogs`, `xfsprogs`, `btrfs-progs`) and a C compiler
//! (`cc`); `.ci/run` installs them. Without them each test prints a loud
//! SKIPPED banner on stderr and passes, unless `FACTWAL_OS_CRASH_REQUIRED=1`
//! (set by `.ci/run`), which makes it fail.
//!
//! `FACTWAL_OS_CRASH_ROUNDS` (default 6) sets the rounds per file system,
//! `FACTWAL_OS_CRASH_SEED` replays a run, `FACTWAL_OS_CRASH_BIN` runs
//! another factwal build in the guest (to show the harness can fail, e.g.
//! with a sync removed), and `FACTWAL_UML` names the kernel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::acks::{self, Ack, Facts};

/// The guest's memory: the writer, redb's cache and the page cache.
const GUEST_MEMORY: &str = "mem=384M";
/// The image: sparse, so only what the file system writes takes space.
/// xfs needs at least 300 MiB.
const IMAGE_BYTES: u64 = 512 << 20;
/// What the init script prints before its own lines, to tell them from the
/// writer's.
const MARK: &str = "factwal-os-crash:";
/// Longest wait for a boot to mount the image, or for a writer's first ack.
const BOOT_WAIT_MAX: Duration = Duration::from_secs(120);
/// Longest wait for a chosen point; past it the kernel is killed anyway.
const POINT_WAIT_MAX: Duration = Duration::from_secs(20);

struct FileSystem {
    name: &'static str,
    mkfs: &'static [&'static str],
    fstype: &'static str,
    options: &'static str,
}

const EXT4_ORDERED: FileSystem = FileSystem {
    name: "ext4-ordered",
    mkfs: &["mkfs.ext4", "-q", "-F"],
    fstype: "ext4",
    options: "data=ordered",
};
const EXT4_WRITEBACK: FileSystem = FileSystem {
    name: "ext4-writeback",
    mkfs: &["mkfs.ext4", "-q", "-F"],
    fstype: "ext4",
    options: "data=writeback",
};
const XFS: FileSystem =
    FileSystem { name: "xfs", mkfs: &["mkfs.xfs", "-q", "-f"], fstype: "xfs", options: "defaults" };
const BTRFS: FileSystem = FileSystem {
    name: "btrfs",
    mkfs: &["mkfs.btrfs", "-q", "-f"],
    fstype: "btrfs",
    options: "defaults",
};

#[test]
fn kernel_crashes_on_ext4_data_ordered_lose_no_acknowledged_write() {
    campaign(&EXT4_ORDERED);
}

#[test]
fn kernel_crashes_on_ext4_data_writeback_lose_no_acknowledged_write() {
    campaign(&EXT4_WRITEBACK);
}

#[test]
fn kernel_crashes_on_xfs_lose_no_acknowledged_write() {
    campaign(&XFS);
}

#[test]
fn kernel_crashes_on_btrfs_lose_no_acknowledged_write() {
    campaign(&BTRFS);
}

/// The crash points of tests/os_crash/crashpoint.c, with the largest n
/// drawn for each: about what a writer reaches in a few seconds in the guest.
const WAL_POINTS: &[(&str, u64)] = &[
    ("wal-sync-before", 400),
    ("segment-sync-before", 12),
    ("segment-rename", 12),
    ("segment-unlink", 12),
    ("dir-sync-before", 24),
    ("state-sync-before", 40),
    ("state-sync-after", 40),
];
/// Where an open that recovers a crashed WAL store syncs and removes.
const RECOVERY_POINTS: &[(&str, u64)] = &[
    ("state-sync-before", 3),
    ("state-sync-after", 3),
    ("segment-unlink", 3),
    ("dir-sync-before", 3),
];
const DIRECT_POINTS: &[(&str, u64)] = &[("state-sync-before", 400), ("state-sync-after", 400)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Wal,
    Direct,
}

impl Mode {
    fn store(self) -> &'static str {
        match self {
            Mode::Wal => "store-wal",
            Mode::Direct => "store-direct",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Mode::Wal => "[persistence]\nsegment_bytes = 16384\nmax_record_bytes = 4096\n",
            Mode::Direct => "[persistence]\nwal_enabled = false\n",
        }
    }
}

/// When a round's kill lands.
#[derive(Debug, Clone)]
enum Kill {
    /// This long after the writer's first ack.
    AfterFirstAck(Duration),
    /// This long after the image is mounted: often while the writer opens
    /// (and recovers) the store.
    AfterMount(Duration),
    /// At the n-th call of a crash point.
    At(&'static str, u64),
}

/// What is needed to run, or why it cannot.
struct Tools {
    kernel: PathBuf,
    mkfs: PathBuf,
    cc: PathBuf,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn tools(fs: &FileSystem) -> Result<Tools, String> {
    let missing =
        |what: &str, package: &str| format!("{what} not found (Debian package {package})");
    let kernel = match std::env::var_os("FACTWAL_UML") {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()).ok_or_else(|| {
            format!(
                "FACTWAL_UML={} names no file",
                std::env::var("FACTWAL_UML").unwrap_or_default()
            )
        })?,
        None => find_program("linux.uml")
            .ok_or_else(|| missing("the User-Mode Linux kernel linux.uml", "user-mode-linux"))?,
    };
    Ok(Tools {
        kernel,
        mkfs: find_program(fs.mkfs[0]).ok_or_else(|| {
            missing(fs.mkfs[0], if fs.fstype == "ext4" { "e2fsprogs" } else { &fs.mkfs[0][5..] })
        })?,
        cc: find_program("cc")
            .or_else(|| find_program("gcc"))
            .ok_or_else(|| missing("a C compiler", "gcc"))?,
    })
}

/// Skips loudly: the banner goes straight to stderr, past the test
/// harness's capture, so a run without User-Mode Linux never reads as a pass
/// of this test. With FACTWAL_OS_CRASH_REQUIRED=1 it fails instead.
fn skip(fs: &FileSystem, why: &str) {
    let required = std::env::var("FACTWAL_OS_CRASH_REQUIRED").is_ok_and(|v| v == "1");
    assert!(!required, "os_crash {}: cannot run: {why}", fs.name);
    let banner = format!(
        "\n######## SKIPPED: os_crash {}: {why}. No kernel crash round ran. Install user-mode-linux, \
         e2fsprogs, xfsprogs, btrfs-progs and gcc (as .ci/run does) to run them. ########\n\n",
        fs.name
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// One line of the guest's console, as it arrived.
enum Console {
    Line(String),
    Closed,
}

/// A booted guest: the kernel's process group and its console.
struct Boot {
    child: Child,
    console: Receiver<Console>,
    transcript: Vec<String>,
}

impl Boot {
    /// The next console line, or None at `deadline` or when the console
    /// closes (the kernel halted or died).
    fn line_before(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.console.recv_timeout(wait) {
            Ok(Console::Line(line)) => {
                self.transcript.push(line.clone());
                Some(line)
            }
            Ok(Console::Closed)
            | Err(RecvTimeoutError::Disconnected)
            | Err(RecvTimeoutError::Timeout) => None,
        }
    }

    /// Kills every process of the kernel, and returns once they are all gone
    /// (no I/O of theirs can land on the image after this).
    fn kill(mut self) -> Vec<String> {
        let group = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group the
        // kernel was started in (process_group(0)); no memory is involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        let started = Instant::now();
        while live_members(group) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the guest's processes outlived SIGKILL by 30 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // Every line the guest's console wrote before the kill, to the end of
        // the pipe: an ack printed after the host decided to kill, and before
        // the kill landed, is an ack all the same.
        loop {
            match self.console.recv_timeout(Duration::from_secs(30)) {
                Ok(Console::Line(line)) => self.transcript.push(line),
                Ok(Console::Closed) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the guest's console stayed open 30 s after its kernel died")
                }
            }
        }
        self.transcript
    }
}

/// Processes of a process group that still run: a zombie does no more I/O,
/// and whoever inherited it may reap it at leisure.
fn live_members(group: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let stats =
        entries.filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok());
    stats
        .filter(|stat| {
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split
            // after its closing parenthesis.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            fields.len() > 2 && fields[2] == group.to_string() && !matches!(fields[0], "Z" | "X")
        })
        .count()
}

/// One file system's image, stores and tools.
struct Machine {
    fs: &'static FileSystem,
    tools: Tools,
    dir: PathBuf,
    image: PathBuf,
    mnt: PathBuf,
    shim: PathBuf,
    bin: PathBuf,
}

impl Machine {
    fn new(fs: &'static FileSystem, tools: Tools, dir: &Path) -> Machine {
        let image = dir.join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(IMAGE_BYTES).unwrap();
        let made = Command::new(&tools.mkfs).args(&fs.mkfs[1..]).arg(&image).output().unwrap();
        assert!(
            made.status.success(),
            "{} {}: {}",
            fs.mkfs[0],
            image.display(),
            String::from_utf8_lossy(&made.stderr)
        );
        let shim = dir.join("crashpoint.so");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/os_crash/crashpoint.c");
        let built = Command::new(&tools.cc)
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&shim)
            .arg(&source)
            .arg("-ldl")
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "cc {}: {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        for mode in [Mode::Wal, Mode::Direct] {
            std::fs::write(dir.join(format!("{}.toml", mode.store())), mode.config()).unwrap();
        }
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let bin = std::env::var_os("FACTWAL_OS_CRASH_BIN")
            .map_or(PathBuf::from(env!("CARGO_BIN_EXE_factwal")), PathBuf::from);
        Machine { fs, tools, dir: dir.to_path_buf(), image, mnt, shim, bin }
    }

    /// Boots the kernel with an init script that mounts the image at `mnt`,
    /// runs `body`, unmounts and powers off.
    fn boot(&self, body: &str) -> Boot {
        let script = self.dir.join("init.sh");
        let text = format!(
            "#!/bin/sh\n\
             export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             say() {{ echo \"{MARK} $*\"; }}\n\
             halt() {{ sync; echo o > /proc/sysrq-trigger; sleep 60; }}\n\
             mount -t proc proc /proc\n\
             if ! mount -t {fstype} -o {options} /dev/ubda {mnt}; then say 'mount failed'; halt; fi\n\
             say mounted\n\
             cd {dir}\n\
             {body}\n\
             umount {mnt} || say 'umount failed'\n\
             say halting\n\
             halt\n",
            fstype = self.fs.fstype,
            options = self.fs.options,
            mnt = self.mnt.display(),
            dir = self.dir.display(),
        );
        std::fs::write(&script, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kernel_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kernel.log"))
            .unwrap();
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&self.tools.kernel)
            .arg(GUEST_MEMORY)
            .arg(format!("ubd0={}", self.image.display()))
            .args([
                "root=/dev/root",
                "rootfstype=hostfs",
                "rootflags=/",
                "rw",
                "quiet",
                "loglevel=1",
            ])
            .args(["con=null", "con0=null,fd:1"])
            .arg(format!("uml_dir={}", self.dir.display()))
            .arg(format!("init={}", script.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(kernel_log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.tools.kernel.display()));
        let stdout = child.stdout.take().unwrap();
        let (sender, console) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(Console::Line(line.trim_end_matches('\r').to_string())).is_err() {
                    return;
                }
            }
            let _ = sender.send(Console::Closed);
        });
        Boot { child, console, transcript: Vec::new() }
    }

    fn store_args(&self, mode: Mode) -> String {
        format!(
            "--config {dir}/{store}.toml --dir {mnt}/{store}",
            dir = self.dir.display(),
            mnt = self.mnt.display(),
            store = mode.store()
        )
    }
}

/// What one round of writing saw before the kill.
struct Written {
    acks: Vec<Ack>,
    /// The crash point the writer stopped at, if it reached it.
    point: Option<String>,
}

/// Boots a writer on `mode`'s store and kills the kernel as `kill` says.
fn write_and_kill(
    machine: &Machine,
    mode: Mode,
    threads: u64,
    kill: &Kill,
    context: &str,
) -> Written {
    let preload = match kill {
        Kill::At(point, n) => {
            format!("LD_PRELOAD={} FACTWAL_CRASH_AT={point}:{n} ", machine.shim.display())
        }
        _ => String::new(),
    };
    let body = format!(
        "env {preload}{bin} load --log off --threads {threads} --checkpoint-interval-ms 3 {store} {workload} 2>&1\n\
         say \"load exited $?\"",
        bin = machine.bin.display(),
        store = machine.store_args(mode),
        workload = acks::load_args().join(" "),
    );
    let mut boot = machine.boot(&body);
    let mut acks = Vec::new();
    let mut point = None;
    let mut deadline = Instant::now() + BOOT_WAIT_MAX;
    let mut mounted = false;
    let fail = |boot: Boot, why: String| -> ! {
        let transcript = boot.kill();
        let tail = transcript[transcript.len().saturating_sub(30)..].join("\n");
        panic!("{context}: {why}\nconsole (last lines):\n{tail}")
    };
    loop {
        let Some(line) = boot.line_before(deadline) else {
            if !mounted || (acks.is_empty() && !matches!(kill, Kill::AfterMount(_) | Kill::At(..)))
            {
                let why = if mounted {
                    "the writer acknowledged nothing"
                } else {
                    "the guest did not mount the image"
                };
                fail(boot, format!("{why} within {BOOT_WAIT_MAX:?} (or the kernel stopped)"));
            }
            break;
        };
        if line == format!("{MARK} mounted") {
            mounted = true;
            deadline = match kill {
                Kill::AfterMount(after) => Instant::now() + *after,
                Kill::At(..) => Instant::now() + POINT_WAIT_MAX,
                Kill::AfterFirstAck(_) => Instant::now() + BOOT_WAIT_MAX,
            };
        } else if line.starts_with("ack ") {
            let ack = acks::parse_ack(&line).unwrap_or_else(|e| fail_now(context, &e));
            if acks.is_empty() {
                if let Kill::AfterFirstAck(after) = kill {
                    deadline = Instant::now() + *after;
                }
            }
            acks.push(ack);
        } else if let Some(reached) = line.strip_prefix("crashpoint ") {
            point = Some(reached.to_string());
            break;
        } else if line.starts_with(MARK)
            || line.starts_with("factwal:")
            || line.starts_with("crashpoint:")
        {
            fail(boot, format!("the writer stopped by itself: {line}"));
        }
    }
    // The acks are read again from the whole transcript, up to the end of
    // the console: the kill came after the last line read above.
    let transcript = boot.kill();
    let acks = transcript
        .iter()
        .filter(|line| line.starts_with("ack "))
        .map(|line| acks::parse_ack(line).unwrap_or_else(|e| fail_now(context, &e)))
        .collect();
    Written { acks, point }
}

fn fail_now(context: &str, why: &str) -> ! {
    panic!("{context}: {why}")
}

/// What the checking boot read from a store.
struct Checked {
    facts: Facts,
    lsn_last: u64,
    /// `factwal verify`'s exit code: 0 clean, 1 an unreadable last record.
    verify: i32,
}

/// Boots the kernel to mount the image (the file system recovers) and read
/// `mode`'s store with the read-only tools; powers off cleanly.
fn read_back(machine: &Machine, mode: Mode, context: &str) -> Option<Checked> {
    let out = machine.dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir(&out).unwrap();
    let bin = machine.bin.display();
    let store = machine.store_args(mode);
    // A store exists once its state.redb does: the first open creates it
    // under a temporary name and renames it into place, so a kill during
    // that open leaves a directory without one (and `verify` rightly says
    // "not a factwal store"); the next read-write open creates it afresh.
    let body = format!(
        "if [ -f {mnt}/{name}/state.redb ]; then\n\
         {bin} verify {store} > out/verify.txt 2>&1; echo $? > out/verify.rc\n\
         {bin} inspect --json {store} > out/inspect.json 2> out/inspect.err\n\
         {bin} facts --json {store} > out/facts.json 2> out/facts.err\n\
         fi\n\
         say checked",
        mnt = machine.mnt.display(),
        name = mode.store(),
    );
    let mut boot = machine.boot(&body);
    let deadline = Instant::now() + BOOT_WAIT_MAX;
    let mut checked = false;
    while let Some(line) = boot.line_before(deadline) {
        checked |= line == format!("{MARK} checked");
        if line == format!("{MARK} halting") || line.contains("mount failed") {
            break;
        }
    }
    let transcript = boot.kill();
    if !checked {
        let tail = transcript[transcript.len().saturating_sub(30)..].join("\n");
        panic!("{context}: the checking boot did not finish\nconsole (last lines):\n{tail}");
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    if !out.join("verify.rc").exists() {
        return None;
    }
    let verify: i32 = read("verify.rc").trim().parse().unwrap();
    assert!(
        verify == 0 || verify == 1,
        "{context}: factwal verify exited {verify} after the crash:\n{}",
        read("verify.txt")
    );
    let inspect: serde_json::Value = serde_json::from_str(&read("inspect.json"))
        .unwrap_or_else(|e| panic!("{context}: inspect --json: {e}: {}", read("inspect.err")));
    let lsn_last =
        inspect["applied_lsn"].as_u64().unwrap() + inspect["unfolded_records"].as_u64().unwrap();
    let mut facts = Facts::new();
    for line in read("facts.json").lines() {
        let fact: serde_json::Value = serde_json::from_str(line).unwrap();
        let (session, name) = (fact["session"].as_str().unwrap(), fact["fact"].as_str().unwrap());
        assert!(
            fact.get("encoding").is_none(),
            "{context}: a value of this workload is text: {line}"
        );
        facts.insert(
            (session.to_string(), name.to_string()),
            fact["value"].as_str().unwrap().as_bytes().to_vec(),
        );
    }
    assert!(read("facts.err").is_empty(), "{context}: facts --json: {}", read("facts.err"));
    Some(Checked { facts, lsn_last, verify })
}

/// What a campaign saw, for its summary line.
#[derive(Default)]
struct Tally {
    rounds: u64,
    acked: u64,
    points: BTreeSet<(Mode, String)>,
    points_missed: u64,
    kills: BTreeMap<&'static str, u64>,
    /// Kills that landed before the writer's first ack: while it opened
    /// (and recovered) the store.
    before_first_ack: u64,
    torn_tails: u64,
}

fn campaign(fs: &'static FileSystem) {
    let tools = match tools(fs) {
        Ok(tools) => tools,
        Err(why) => return skip(fs, &why),
    };
    let rounds = env_u64("FACTWAL_OS_CRASH_ROUNDS").unwrap_or(6);
    let seed = env_u64("FACTWAL_OS_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
    });
    println!(
        "os_crash {}: {rounds} rounds, seed {seed} (FACTWAL_OS_CRASH_SEED={seed} replays it)",
        fs.name
    );
    let temp = tempfile::tempdir().unwrap();
    let machine = Machine::new(fs, tools, temp.path());
    let mut rng = Rng(seed | 1);
    let mut before: BTreeMap<Mode, Facts> = BTreeMap::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    for index in 0..rounds {
        let mode = if index % 2 == 0 { Mode::Wal } else { Mode::Direct };
        let threads = if rng.below(2) == 0 { 1 } else { 4 };
        let kill = match rng.below(8) {
            0..=1 => Kill::AfterFirstAck(Duration::from_millis(rng.below(3000))),
            // The writer starts within ~100 ms of the mount and opens a
            // small store in tens of ms: most of these land in the open.
            2 => Kill::AfterMount(Duration::from_millis(rng.below(400))),
            // The first syncs and removals of an open: those of recovery
            // when the last round left records to fold.
            3 => {
                let points = if mode == Mode::Wal { RECOVERY_POINTS } else { DIRECT_POINTS };
                Kill::At(points[rng.below(points.len() as u64) as usize].0, 1 + rng.below(3))
            }
            _ => {
                let points = if mode == Mode::Wal { WAL_POINTS } else { DIRECT_POINTS };
                let (point, most) = points[rng.below(points.len() as u64) as usize];
                Kill::At(point, 1 + rng.below(most))
            }
        };
        let context = format!(
            "os_crash {} round {index} (seed {seed}): {mode:?} mode, {threads} thread(s), kill {kill:?}",
            fs.name
        );
        let round_started = Instant::now();
        let written = write_and_kill(&machine, mode, threads, &kill, &context);
        let written_in = round_started.elapsed();
        let checked = read_back(&machine, mode, &context);
        if std::env::var_os("FACTWAL_OS_CRASH_VERBOSE").is_some() {
            println!(
                "{context}: {} acks, point {:?}, write boot {:.1} s, check boot {:.1} s",
                written.acks.len(),
                written.point,
                written_in.as_secs_f64(),
                (round_started.elapsed() - written_in).as_secs_f64()
            );
        }
        let empty = Facts::new();
        let previous = before.get(&mode).unwrap_or(&empty);
        match &checked {
            Some(checked) => {
                if let Err(problem) =
                    acks::check(&checked.facts, checked.lsn_last, previous, &written.acks, threads)
                {
                    panic!("{context}: {problem}");
                }
                tally.torn_tails += u64::from(checked.verify == 1);
            }
            None => assert!(
                written.acks.is_empty() && previous.is_empty(),
                "{context}: the store is gone after {} acknowledged writes",
                written.acks.len()
            ),
        }
        before.insert(mode, checked.map(|c| c.facts).unwrap_or_default());
        tally.rounds += 1;
        tally.acked += written.acks.len() as u64;
        tally.before_first_ack += u64::from(written.acks.is_empty());
        *tally
            .kills
            .entry(match kill {
                Kill::AfterFirstAck(_) => "after the first ack",
                Kill::AfterMount(_) => "after the mount",
                Kill::At(..) => "at a chosen point",
            })
            .or_default() += 1;
        match (&kill, written.point) {
            (Kill::At(..), Some(point)) => {
                tally.points.insert((mode, point));
            }
            (Kill::At(..), None) => tally.points_missed += 1,
            _ => {}
        }
    }
    println!(
        "os_crash {}: {} rounds, {} acknowledged writes checked, 0 lost; kills {:?}, {} of them before the first ack (opening or recovering the store); {} distinct crash points \
         reached ({} not reached in {POINT_WAIT_MAX:?}); {} recoveries dropped an unreadable last record; {:.1} s",
        fs.name,
        tally.rounds,
        tally.acked,
        tally.kills,
        tally.before_first_ack,
        tally.points.len(),
        tally.points_missed,
        tally.torn_tails,
        started.elapsed().as_secs_f64()
    );
}
