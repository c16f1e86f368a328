//! Writes the seed corpus under `fuzz/corpus/<target>/`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`.
//!
//! Raw-byte targets get real bytes (segments, records, payloads, configs);
//! structured targets get their grammar's bytes (`input::seed`), each checked
//! to read back as the value it was written from.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use factwal::testing::{Calls, Fault, OpKind};
use factwal::wal::format::{encode_record, SegmentHeader};
use factwal::{CheckpointMode, Op, RecoveryMode};
use factwal_fuzz::input::{seed, CraftedInput, ScenarioInput};
use factwal_fuzz::record_decode::HEADER;
use factwal_fuzz::recovery::{Crafted, HeaderSpec, Piece, SegmentEnd, SegmentSpec};
use factwal_fuzz::store_model::{Scenario, Step};
use factwal_fuzz::support::encode_payload;

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(name), bytes).expect("write a seed");
}

fn assert(session: u8, fact: u8, value: &[u8]) -> Op {
    Op::Assert { session: format!("s{session}"), fact: format!("f{fact}"), value: value.to_vec() }
}

fn retract(session: u8, fact: u8) -> Op {
    Op::Retract { session: format!("s{session}"), fact: format!("f{fact}") }
}

fn drop_session(session: u8) -> Op {
    Op::DropSession { session: format!("s{session}") }
}

/// A store_model value: the grammar makes values counting up from a first byte.
fn value(text: &str) -> Vec<u8> {
    seed::long_value(text.len(), text.as_bytes()[0])
}

fn record_decode_seeds() {
    let batch = vec![assert(0, 1, b"value"), retract(1, 2), drop_session(2)];
    let payload = encode_payload(&batch);
    let mut record = Vec::new();
    encode_record(&mut record, &HEADER, 11, &payload);
    write("record_decode", "segment-header", &HEADER.encode());
    write("record_decode", "record", &record);
    let mut behind = vec![0xa5; 21];
    behind.extend(&record);
    write("record_decode", "record-behind-garbage", &behind);
    let mut two = record.clone();
    encode_record(&mut two, &HEADER, 12, &encode_payload(&[assert(2, 3, &[0; 30])]));
    write("record_decode", "two-records", &two);
    write("record_decode", "payload", &payload);
    let mut segment = SegmentHeader { number: 1, lsn_first: 1, ..HEADER }.encode().to_vec();
    segment.extend(&record);
    write("record_decode", "segment-with-record", &segment);
}

fn config_seeds() {
    let example = include_str!("../../factwal.example.toml");
    write("config", "example", example.as_bytes());
    write(
        "config",
        "small",
        b"[persistence]\ndata_dir = \"d\"\nsegment_bytes = 4096\nmax_record_bytes = 1024\n",
    );
    let all = "[persistence]\ndata_dir = \"/var/lib/x\"\nwal_enabled = false\nwal_path = \"/w\"\n\
               recovery_mode = \"point-in-time\"\nwal_bytes_max = 1048576\n\
               [checkpoint]\ninterval_s = 0.5\nwarn_ms = 10\nwal_bytes_trigger = 1\nsamples = 8\njoin_timeout_s = 1.5\n";
    write("config", "all-keys", all.as_bytes());
    write("config", "unknown-key", b"[persistence]\nsegment_byte = 5 # typo\n");
    write("config", "bad-value", b"[checkpoint]\ninterval_s = -3\nsamples = 0\n");
}

fn segment(pieces: Vec<Piece>) -> SegmentSpec {
    SegmentSpec {
        number_step: 1,
        header: HeaderSpec::Valid,
        lsn_first_delta: 0,
        pieces,
        end: SegmentEnd::Preallocated,
    }
}

fn recovery_seeds() {
    let record =
        |n: u8| Piece::Record(vec![assert(n % 3, n % 4, &[n; 5]), retract((n + 1) % 3, 0)]);
    let pristine = Crafted {
        recovery_mode: RecoveryMode::TolerateCorruptedTail,
        folded_batches: 2,
        temporary_file: false,
        clean_close: false,
        first_number: 1,
        segments: vec![
            segment(vec![record(1), record(2)]),
            segment(vec![record(3), Piece::Record(vec![drop_session(1)])]),
        ],
    };
    let torn = Crafted {
        segments: vec![segment(vec![
            record(1),
            Piece::Truncated { keep: 20, ops: vec![assert(0, 0, b"torn")] },
        ])],
        ..pristine.clone()
    };
    let corrupted = Crafted {
        recovery_mode: RecoveryMode::PointInTime,
        segments: vec![segment(vec![
            record(1),
            Piece::BitFlipped { bit: 300, ops: vec![assert(1, 1, b"x")] },
            record(2),
        ])],
        ..pristine.clone()
    };
    let abandoned = Crafted {
        temporary_file: true,
        segments: vec![
            segment(vec![record(1), record(2), Piece::Garbage(vec![0xee; 40])]),
            SegmentSpec { lsn_first_delta: -1, ..segment(vec![record(3)]) },
        ],
        ..pristine.clone()
    };
    let bad_payload = Crafted {
        recovery_mode: RecoveryMode::AbsoluteConsistency,
        segments: vec![segment(vec![
            record(1),
            Piece::RawPayload(vec![1, 0, 0]),
            Piece::Foreign(vec![drop_session(0)]),
        ])],
        ..pristine.clone()
    };
    let foreign = Crafted {
        segments: vec![
            segment(vec![record(1)]),
            SegmentSpec { header: HeaderSpec::OtherStore, ..segment(vec![record(2)]) },
        ],
        ..pristine.clone()
    };
    let other_epoch = Crafted {
        segments: vec![SegmentSpec { header: HeaderSpec::OtherEpoch, ..segment(vec![record(1)]) }],
        ..pristine.clone()
    };
    let clean_close = Crafted { clean_close: true, ..pristine.clone() };
    let cut_short = Crafted {
        recovery_mode: RecoveryMode::PointInTime,
        segments: vec![
            SegmentSpec {
                end: SegmentEnd::Cut(400),
                ..segment(vec![record(1), record(2), record(3)])
            },
            segment(vec![record(4)]),
        ],
        ..pristine.clone()
    };
    for (name, crafted) in [
        ("pristine", pristine),
        ("foreign-store", foreign),
        ("other-epoch", other_epoch),
        ("clean-close-with-records", clean_close),
        ("cut-short", cut_short),
        ("torn-tail", torn),
        ("bit-flip", corrupted),
        ("abandoned", abandoned),
        ("bad-payload", bad_payload),
    ] {
        let bytes = seed::crafted(&crafted);
        let read =
            CraftedInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("seed reads back");
        assert!(read.0 == crafted, "the recovery seed {name} reads back as written");
        write("recovery", name, &bytes);
    }
}

fn store_model_seeds() {
    let big = seed::long_value(900, 7);
    let writes = Scenario {
        recovery_mode: RecoveryMode::TolerateCorruptedTail,
        steps: vec![
            Step::Write(vec![assert(0, 0, &value("a")), assert(1, 1, &value("bb"))]),
            Step::Write(vec![assert(2, 3, &big)]),
            Step::Write(vec![assert(0, 1, &big)]),
            Step::Read { session: "s0".into(), fact: "f0".into() },
            Step::Checkpoint(CheckpointMode::Passive),
            Step::Write(vec![retract(0, 0), drop_session(1)]),
            Step::ReadAll,
            Step::Crash { tear: Some(35) },
            Step::Inspect,
            Step::Open,
            Step::ReadAll,
            Step::Checkpoint(CheckpointMode::Truncate),
            Step::Close,
        ],
    };
    let faults = Scenario {
        recovery_mode: RecoveryMode::PointInTime,
        steps: vec![
            Step::Write(vec![assert(0, 0, &value("a"))]),
            Step::Fault(Fault::nth(OpKind::Sync, 1, 5)),
            Step::Write(vec![assert(0, 1, &value("lost?"))]),
            Step::Write(vec![assert(0, 2, &value("poisoned"))]),
            Step::Crash { tear: None },
            Step::ReadAll,
            Step::Fault(Fault {
                torn_write: true,
                ..Fault::nth(OpKind::Write, 2, 28).from_then_on()
            }),
            Step::Write(vec![assert(1, 0, &big)]),
            Step::Write(vec![assert(1, 1, &big)]),
            Step::Write(vec![assert(1, 2, &big)]),
            Step::Heal,
            Step::Write(vec![assert(2, 0, &value("after"))]),
            Step::Drop,
            Step::ReadAll,
        ],
    };
    let checkpoint_faults = Scenario {
        recovery_mode: RecoveryMode::TolerateCorruptedTail,
        steps: vec![
            Step::Write(vec![assert(0, 0, &big)]),
            Step::Write(vec![assert(0, 1, &big)]),
            Step::Write(vec![assert(0, 2, &big)]),
            Step::Write(vec![assert(0, 3, &big)]),
            Step::Fault(Fault::nth(OpKind::Remove, 1, 5)),
            Step::Checkpoint(CheckpointMode::Passive),
            Step::Fault(Fault { calls: Calls::Any, ..Fault::nth(OpKind::Write, 3, 5) }),
            Step::Checkpoint(CheckpointMode::Truncate),
            Step::Crash { tear: Some(100) },
            Step::Inspect,
            Step::ReadAll,
        ],
    };
    // Writes in flight across steps: groups led by the commit thread, the
    // line at wal_bytes_max (three segments), a crash and a drop with
    // writes in flight, a failed sync under tickets.
    let async_big = || Step::WriteAsync(vec![assert(0, 1, &big)]);
    let mut async_steps = vec![
        Step::WriteAsync(vec![assert(0, 0, &value("a"))]),
        Step::WriteAsync(vec![assert(1, 1, &value("b")), retract(0, 0)]),
        Step::Write(vec![assert(2, 2, &value("c"))]),
    ];
    async_steps.extend((0..7).map(|_| async_big()));
    async_steps.push(Step::ReadAll);
    async_steps.extend((0..7).map(|_| async_big()));
    async_steps.extend([
        Step::Crash { tear: Some(35) },
        Step::Open,
        Step::Fault(Fault::nth(OpKind::Sync, 2, 5)),
        Step::WriteAsync(vec![assert(1, 2, &value("d"))]),
        Step::WriteAsync(vec![drop_session(2)]),
        Step::WriteAsync(vec![assert(1, 3, &value("e"))]),
        Step::ReadAll,
        Step::Heal,
        Step::Crash { tear: None },
        Step::WriteAsync(vec![assert(2, 0, &value("f"))]),
        Step::Drop,
        Step::ReadAll,
    ]);
    let async_writes =
        Scenario { recovery_mode: RecoveryMode::TolerateCorruptedTail, steps: async_steps };
    for (name, scenario) in [
        ("async-writes", async_writes),
        ("writes-crash-tear", writes),
        ("write-faults", faults),
        ("checkpoint-faults", checkpoint_faults),
    ] {
        let bytes = seed::scenario(&scenario);
        let read =
            ScenarioInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("seed reads back");
        assert!(read.0 == scenario, "the store_model seed {name} reads back as written");
        write("store_model", name, &bytes);
    }
}

fn main() {
    record_decode_seeds();
    config_seeds();
    recovery_seeds();
    store_model_seeds();
}
