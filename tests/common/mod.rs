//! Shared test helpers: small-segment configs, segment files, a tracing
//! capture, and batches checked whole. What the fuzz targets need as well
//! (file snapshots, the fact model, the simulated disk) is in
//! `factwal::testing`.
#![allow(dead_code)]

pub mod acks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use factwal::wal::segment::segment_file_name;
use factwal::{Batch, Config, Store};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Held while a child process is spawned, and while a test reopens a store
/// in this process. A child forked from a test binary holds a copy of every
/// descriptor open at that moment, other tests' lock files included, until
/// it has exec'd (they are close-on-exec): a store closed then reopened
/// meanwhile would find its own lock still held, by that child, and get
/// `Locked` (docs/DESIGN.md, "Locking"). `Command::spawn` returns only after
/// the exec, so holding this across it, and across every reopen, closes the
/// window. A first open of a new directory needs no guard: no copy of a lock
/// that never existed can be held.
static SPAWNING: Mutex<()> = Mutex::new(());

/// The guard above.
pub fn no_spawn_meanwhile() -> MutexGuard<'static, ()> {
    SPAWNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns `command` with the guard held until its exec.
pub fn spawn(command: &mut Command) -> Child {
    let _spawning = no_spawn_meanwhile();
    command.spawn().unwrap()
}

/// Runs `command` (stdin closed, stdout and stderr captured) to its end,
/// spawned with the guard held until its exec.
pub fn output(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn(command).wait_with_output().unwrap()
}

/// A config with small segments so tests cross many segment boundaries.
pub fn small_config(dir: &Path) -> Config {
    Config::new(dir).segment_bytes(16 * 1024).max_record_bytes(4 * 1024).wal_bytes_max(1 << 20)
}

/// Creates the store `config` describes and leaves it as a crash would,
/// with an empty WAL directory (its first, empty segment removed): the
/// identity and epoch that segments crafted for it must carry, so that the
/// next open reads them as this store's WAL in use.
pub fn crashed_empty_store(config: &Config) -> (factwal::StoreId, u32) {
    let store = Store::open(config.clone()).unwrap();
    let store_id = store.store_id();
    store.simulate_crash();
    let segments = segment_paths(&config.wal_dir());
    assert_eq!(segments.len(), 1, "a new store has one segment");
    let bytes = std::fs::read(&segments[0]).unwrap();
    let header = factwal::wal::format::SegmentHeader::decode(&bytes).unwrap();
    std::fs::remove_file(&segments[0]).unwrap();
    (store_id, header.epoch)
}

/// Paths of the segment files of a WAL directory, in order.
pub fn segment_paths(wal_dir: &Path) -> Vec<PathBuf> {
    factwal::testing::segment_numbers(wal_dir)
        .unwrap_or_default()
        .into_iter()
        .map(|n| wal_dir.join(segment_file_name(n)))
        .collect()
}

/// Copies a directory tree (a store, to damage or open a copy of it).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One captured tracing event.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    pub target: String,
    pub level: tracing::Level,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_string(), text);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().to_string(), value.to_string());
        }
    }
}

struct CaptureLayer {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
}

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        self.events.lock().unwrap().push(CapturedEvent {
            target: metadata.target().to_string(),
            level: *metadata.level(),
            message: visitor.message,
            fields: visitor.fields,
        });
    }
}

/// The WARN and ERROR events among `events`.
pub fn warnings_and_errors(events: &[CapturedEvent]) -> Vec<&CapturedEvent> {
    events
        .iter()
        .filter(|e| e.level == tracing::Level::WARN || e.level == tracing::Level::ERROR)
        .collect()
}

/// Runs `body` with a subscriber capturing every event of this thread (and
/// of threads the store starts, which inherit the caller's dispatcher).
pub fn capture<R>(body: impl FnOnce() -> R) -> (R, Vec<CapturedEvent>) {
    // tracing caches a callsite's interest globally: one first hit on a
    // thread with no subscriber would mark it "never" for every thread. A
    // global subscriber that takes everything (and keeps nothing) prevents
    // that; the scoped one below still receives this thread's events.
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(CaptureLayer { events: events.clone() });
    let result = tracing::subscriber::with_default(subscriber, body);
    let events = events.lock().unwrap().clone();
    (result, events)
}

/// Bytes of a segment header and of a record header, as docs/FORMAT.md lays
/// them out; written out here so the tests do not lean on the engine's own
/// decoder to find records.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
pub const RECORD_HEADER_BYTES: u64 = 32;

/// Where a record sits in its segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    pub offset: u64,
    pub bytes: u64,
    pub lsn: u64,
}

/// Walks the record headers of a segment: [crc u32][len u32][lsn u64]...
pub fn records_in(path: &Path) -> Vec<RecordAt> {
    let bytes = std::fs::read(path).unwrap();
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    while let Some(head) = bytes.get(offset..offset + RECORD_HEADER_BYTES as usize) {
        if head.iter().all(|&b| b == 0) {
            break;
        }
        let payload_bytes = u32::from_le_bytes(head[4..8].try_into().unwrap()) as u64;
        let lsn = u64::from_le_bytes(head[8..16].try_into().unwrap());
        let record =
            RecordAt { offset: offset as u64, bytes: RECORD_HEADER_BYTES + payload_bytes, lsn };
        records.push(record);
        offset += record.bytes as usize;
    }
    records
}

/// One fact of a test batch: (session, fact, value).
pub type Fact = (String, String, Vec<u8>);

/// A batch asserting each fact.
pub fn batch_of(facts: &[Fact]) -> Batch {
    facts
        .iter()
        .fold(Batch::new(), |batch, (s, f, v)| batch.assert(s.as_str(), f.as_str(), v.clone()))
}

/// Checks that a batch is wholly present (`present`) or wholly absent.
pub fn assert_batch(store: &Store, facts: &[Fact], present: bool, context: &str) {
    let actual: Vec<Option<Vec<u8>>> =
        facts.iter().map(|(s, f, _)| store.fact(s, f).unwrap()).collect();
    let expected: Vec<Option<Vec<u8>>> =
        facts.iter().map(|(_, _, v)| present.then(|| v.clone())).collect();
    assert_eq!(actual, expected, "{context}: batch with {} expected present={present}", facts[0].1);
}
