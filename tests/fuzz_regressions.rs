//! Crashes found by the fuzz targets (`fuzz/`, see docs/FUZZING.md), each
//! replayed as a plain test. The targets' checks are included from `fuzz/src`
//! as they are, so a test here runs exactly what the fuzzer ran: the input,
//! minimized and written out from `cargo fuzz fmt`, then the same assertions.
//! A test is added before its bug is fixed, and stays once it is.

use factwal::{Op, RecoveryMode};

#[allow(dead_code)]
#[path = "../fuzz/src/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../fuzz/src/recovery.rs"]
mod recovery;

#[allow(dead_code)]
#[path = "../fuzz/src/config.rs"]
mod config;

#[allow(dead_code)]
#[path = "../fuzz/src/store_model.rs"]
mod store_model;

use recovery::{Crafted, HeaderSpec, Piece, SegmentEnd, SegmentSpec};

/// An empty, valid segment whose `lsn_first` is `lsn_first_delta` past the LSN after redb's `applied_lsn`.
fn empty_segment(lsn_first_delta: i8) -> SegmentSpec {
    SegmentSpec {
        number_step: 1,
        header: HeaderSpec::Valid,
        lsn_first_delta,
        pieces: vec![],
        end: SegmentEnd::Preallocated,
    }
}

#[test]
fn open_refused_for_an_lsn_gap_before_the_first_segment_changes_no_file() {
    // Found by `recovery`: redb holds one folded batch (applied_lsn 1) and the
    // only segment starts at LSN 7, so LSNs 2..=6 are missing. Whether the
    // first segment leaves a gap depends on applied_lsn, which the open reads
    // from redb after opening it read-write; the refusal then comes with
    // state.redb already rewritten. The target's check: `Store::open` fails
    // with `Error::Corrupted` (LsnGap) and every file is byte-identical.
    recovery::run(&Crafted {
        recovery_mode: RecoveryMode::TolerateCorruptedTail,
        folded_batches: 1,
        temporary_file: false,
        clean_close: false,
        first_number: 1,
        segments: vec![empty_segment(5)],
    });
}

#[test]
fn point_in_time_drop_of_a_first_segment_after_an_lsn_gap_does_not_come_back() {
    // Found by `recovery`: redb holds one folded batch (applied_lsn 1) and the
    // only segment starts at LSN 3, holding one valid record. Point-in-time
    // recovery keeps the valid prefix, which is empty: the open must show only
    // the folded batch, and must not let the dropped record come back later.
    // The target's check: after the open, a write and a clean close, a second
    // open shows the same facts plus that write, and the same last LSN.
    let ghost = Op::Assert { session: "s1".into(), fact: "f1".into(), value: b"ghost".to_vec() };
    recovery::run(&Crafted {
        recovery_mode: RecoveryMode::PointInTime,
        folded_batches: 1,
        temporary_file: false,
        clean_close: false,
        first_number: 2,
        segments: vec![SegmentSpec {
            pieces: vec![Piece::Record(vec![ghost])],
            ..empty_segment(1)
        }],
    });
}

#[test]
fn read_only_open_shows_what_a_read_write_open_gives_past_a_bad_folded_payload() {
    // Found by `recovery` (in every recovery mode): redb holds one folded
    // batch (applied_lsn 1); the segment starts at LSN 1 with a record whose
    // checksum is valid but whose payload does not decode (already folded),
    // then a valid record, LSN 2. The read-write open never decodes folded
    // payloads and replays LSN 2; the read-only open decodes them all and
    // stops at LSN 1. The target's check: when both open, `ReadOnlyStore`
    // (documented as showing what a read-write open would) and `Store::open`
    // show the same facts.
    let after = Op::Assert { session: "s0".into(), fact: "f0".into(), value: b"after".to_vec() };
    recovery::run(&Crafted {
        recovery_mode: RecoveryMode::TolerateCorruptedTail,
        folded_batches: 1,
        temporary_file: false,
        clean_close: false,
        first_number: 1,
        segments: vec![SegmentSpec {
            pieces: vec![Piece::RawPayload(vec![0, 0]), Piece::Record(vec![after])],
            ..empty_segment(-1)
        }],
    });
}

#[test]
fn a_crafted_record_with_an_empty_payload_reads_back_as_invalid() {
    // Found by `recovery` (CI's smoke run): a crafted raw record with an
    // empty payload between two valid ones. The engine never writes an
    // empty payload (a batch holds an operation), and the debug assertion
    // pairing `encode_record` with the decoder assumed none was ever
    // encoded, so the harness's crafting panicked. An empty payload must
    // decode as invalid; recovery then goes on as for any invalid record.
    use recovery::Piece;
    let record = |value: &[u8]| {
        Piece::Record(vec![Op::Assert {
            session: "s0".into(),
            fact: "f0".into(),
            value: value.to_vec(),
        }])
    };
    recovery::run(&Crafted {
        recovery_mode: RecoveryMode::PointInTime,
        folded_batches: 0,
        temporary_file: true,
        clean_close: true,
        first_number: 1,
        segments: vec![SegmentSpec {
            number_step: 1,
            header: HeaderSpec::Valid,
            lsn_first_delta: 0,
            pieces: vec![record(b"00001.wa"), Piece::RawPayload(vec![]), record(b"")],
            end: SegmentEnd::Preallocated,
        }],
    });
}

#[test]
fn config_error_for_a_multi_line_enum_value_prints_on_one_line() {
    // Found by `config` (CI smoke run): `recovery_mode` given as a multi-line
    // string that swallowed the rest of the example file. The parser's reason
    // quotes the unknown variant back, newlines included, so the error took
    // many lines. The target's check: a refusal displays on one line.
    config::check(b"[persistence]\nrecovery_mode = \"\"\"lerate-corrupted-tail\"\n\n# When the WAL\n[persistence]\nwal_path = 1\"\"\"\n");
}

#[test]
fn a_close_that_cannot_remove_a_failed_write_still_reopens() {
    // Found by `store_model` (CI's smoke run): every WAL call from the second
    // on fails with EIO. The write is written but its sync fails (the WAL
    // poisons, nothing acknowledged); close folds nothing new and marks the
    // WAL clean, then cannot remove the segment, which still holds that
    // unacknowledged record (LSN 1, newer than state.redb's 0). The next open
    // refused it as "a record state.redb lacks after a clean close": a
    // segment of another copy of the store. It is this opening's own
    // leftover (its epoch is the one recorded with the clean mark), which a
    // failed write may leave: the target's check, that the reopen works with
    // no injected failure, must pass.
    use factwal::testing::{Calls, Fault};
    use store_model::{Scenario, Step};
    let every_call_from_the_second =
        Fault { calls: Calls::Any, side: None, nth: 2, sticky: true, errno: 5, torn_write: false };
    store_model::run(&Scenario {
        recovery_mode: RecoveryMode::PointInTime,
        steps: vec![
            Step::Fault(every_call_from_the_second),
            Step::Write(vec![Op::DropSession { session: "s2".into() }]),
            Step::Close,
        ],
    });
}

#[test]
fn store_model_writes_in_flight_across_crashes_drops_faults_and_back_pressure() {
    // Not a find: the `async-writes` seed's scenario, run on every `cargo
    // test` so the target's async path is checked without a fuzzer. Tickets
    // stay in flight across steps (groups led by the commit thread); 14
    // writes of 900 bytes pass wal_bytes_max (three 4 KiB segments), so the
    // line and its admitter run; a crash and a drop come with writes in
    // flight; a sync fails under three tickets.
    use factwal::testing::{Fault, OpKind};
    use store_model::{Scenario, Step};
    let put = |session: u8, fact: u8, value: &[u8]| Op::Assert {
        session: format!("s{session}"),
        fact: format!("f{fact}"),
        value: value.to_vec(),
    };
    let big = vec![b'x'; 900];
    let mut steps = vec![
        Step::WriteAsync(vec![put(0, 0, b"a")]),
        Step::WriteAsync(vec![
            put(1, 1, b"b"),
            Op::Retract { session: "s0".into(), fact: "f0".into() },
        ]),
        Step::Write(vec![put(2, 2, b"c")]),
    ];
    steps.extend((0..7).map(|_| Step::WriteAsync(vec![put(0, 1, &big)])));
    steps.push(Step::ReadAll);
    steps.extend((0..7).map(|_| Step::WriteAsync(vec![put(0, 1, &big)])));
    steps.extend([
        Step::Crash { tear: Some(35) },
        Step::Open,
        Step::Fault(Fault::nth(OpKind::Sync, 2, 5)),
        Step::WriteAsync(vec![put(1, 2, b"d")]),
        Step::WriteAsync(vec![Op::DropSession { session: "s2".into() }]),
        Step::WriteAsync(vec![put(1, 3, b"e")]),
        Step::ReadAll,
        Step::Heal,
        Step::Crash { tear: None },
        Step::WriteAsync(vec![put(2, 0, b"f")]),
        Step::Drop,
        Step::ReadAll,
    ]);
    store_model::run(&Scenario { recovery_mode: RecoveryMode::TolerateCorruptedTail, steps });
}
