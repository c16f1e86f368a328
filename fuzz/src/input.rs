//! Hand-written `Arbitrary` impls for the structured targets. Each reads the
//! input as a simple byte grammar: every choice, count and small number is
//! one byte (`byte % n`), raw bytes are taken as they come, and running out
//! of input reads zeros (which is a short, valid scenario). Limits are part
//! of the grammar: few sessions and facts, short values, at most
//! `STEPS_MAX` steps, four segments of at most eight pieces. The grammar is
//! stable across `arbitrary` versions, so seed files written by
//! `examples/seed_corpus.rs` keep their meaning.

use arbitrary::{Arbitrary, Result, Unstructured};
use factwal::testing::{Calls, Fault, OpKind};
use factwal::{CheckpointMode, Op, RecoveryMode};

use crate::recovery::{Crafted, HeaderSpec, Piece, SegmentEnd, SegmentSpec};
use crate::store_model::{Scenario, Step, FACTS, SESSIONS, STEPS_MAX};

fn byte(u: &mut Unstructured<'_>) -> Result<u8> {
    u8::arbitrary(u)
}

fn below(u: &mut Unstructured<'_>, n: u8) -> Result<u8> {
    Ok(byte(u)? % n)
}

fn word(u: &mut Unstructured<'_>) -> Result<u16> {
    Ok(u16::from_le_bytes([byte(u)?, byte(u)?]))
}

/// A length byte (`least + byte % spread`), then that many raw bytes (fewer
/// when the input runs out).
fn take(u: &mut Unstructured<'_>, least: usize, spread: u8) -> Result<Vec<u8>> {
    let count = least + usize::from(below(u, spread)?);
    Ok(u.bytes(count.min(u.len()))?.to_vec())
}

/// A value: usually short; a high first byte makes it up to ~1.1 KiB, so that
/// segments roll and some batches pass `max_record_bytes`.
fn value(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let code = byte(u)?;
    let length = if code < 224 { usize::from(code % 24) } else { usize::from(code - 223) * 36 };
    let fill = byte(u)?;
    Ok((0..length).map(|i| fill.wrapping_add(i as u8)).collect())
}

fn op(u: &mut Unstructured<'_>, sessions: u8, facts: u8, long_values: bool) -> Result<Op> {
    let kind = below(u, 4)?;
    let session = format!("s{}", below(u, sessions)?);
    Ok(match kind {
        0 | 1 => {
            let fact = format!("f{}", below(u, facts)?);
            let value = if long_values { value(u)? } else { take(u, 0, 40)? };
            Op::Assert { session, fact, value }
        }
        2 => Op::Retract { session, fact: format!("f{}", below(u, facts)?) },
        _ => Op::DropSession { session },
    })
}

fn ops(u: &mut Unstructured<'_>, long_values: bool) -> Result<Vec<Op>> {
    let count = 1 + below(u, 4)?;
    (0..count).map(|_| op(u, SESSIONS, FACTS, long_values)).collect()
}

/// Input of the `store_model` target.
#[derive(Debug)]
pub struct ScenarioInput(pub Scenario);

impl<'a> Arbitrary<'a> for ScenarioInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let recovery_mode = if below(u, 2)? == 0 {
            RecoveryMode::TolerateCorruptedTail
        } else {
            RecoveryMode::PointInTime
        };
        let mut steps = Vec::new();
        while steps.len() < STEPS_MAX && !u.is_empty() {
            steps.push(step(u)?);
        }
        Ok(ScenarioInput(Scenario { recovery_mode, steps }))
    }
}

fn step(u: &mut Unstructured<'_>) -> Result<Step> {
    Ok(match below(u, 20)? {
        0..=5 => Step::Write(ops(u, true)?),
        6 => Step::WriteAsync(ops(u, true)?),
        7 | 8 => Step::Read {
            session: format!("s{}", below(u, SESSIONS)?),
            fact: format!("f{}", below(u, FACTS)?),
        },
        9 => Step::ReadAll,
        10 => Step::Checkpoint(CheckpointMode::Passive),
        11 => Step::Checkpoint(CheckpointMode::Truncate),
        12 | 13 => Step::Crash {
            tear: match byte(u)? {
                0 => None,
                at => Some(u16::from(at) * 5),
            },
        },
        14 => Step::Drop,
        15 => Step::Close,
        16 => Step::Open,
        17 => Step::Fault(fault(u)?),
        18 => Step::Heal,
        _ => Step::Inspect,
    })
}

/// A fault on the WAL's calls: 0 counts every call, 1 + i the calls of
/// `OpKind::ALL[i]` (so the order of `ALL` is part of the grammar).
fn fault(u: &mut Unstructured<'_>) -> Result<Fault> {
    let calls = match below(u, OpKind::ALL.len() as u8 + 1)? {
        0 => Calls::Any,
        index => Calls::Of(OpKind::ALL[usize::from(index) - 1]),
    };
    let nth = 1 + u64::from(below(u, 16)?);
    let flags = byte(u)?;
    let errno = if flags & 2 == 0 { libc_eio() } else { libc_enospc() };
    Ok(Fault { calls, side: None, nth, sticky: flags & 1 != 0, errno, torn_write: flags & 4 != 0 })
}

/// EIO on Linux.
const fn libc_eio() -> i32 {
    5
}

/// ENOSPC on Linux.
const fn libc_enospc() -> i32 {
    28
}

/// Input of the `recovery` target.
#[derive(Debug)]
pub struct CraftedInput(pub Crafted);

impl<'a> Arbitrary<'a> for CraftedInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let recovery_mode = match below(u, 3)? {
            0 => RecoveryMode::TolerateCorruptedTail,
            1 => RecoveryMode::AbsoluteConsistency,
            _ => RecoveryMode::PointInTime,
        };
        let folded_batches = below(u, 4)?;
        let temporary_file = below(u, 8)? == 0;
        let clean_close = below(u, 8)? == 0;
        let first_number = 1 + u64::from(below(u, 3)?);
        let count = 1 + below(u, 4)?;
        let segments = (0..count).map(|_| segment(u)).collect::<Result<_>>()?;
        let crafted = Crafted {
            recovery_mode,
            folded_batches,
            temporary_file,
            clean_close,
            first_number,
            segments,
        };
        Ok(CraftedInput(crafted))
    }
}

fn segment(u: &mut Unstructured<'_>) -> Result<SegmentSpec> {
    let number_step = match below(u, 8)? {
        6 => 2,
        7 => 0,
        _ => 1,
    };
    let header = match below(u, 19)? {
        0..=11 => HeaderSpec::Valid,
        12 | 13 => HeaderSpec::BitFlip(word(u)?),
        14 => HeaderSpec::WrongNumber,
        15 => HeaderSpec::Garbage(take(u, 0, 80)?),
        16 => HeaderSpec::OtherStore,
        17 => HeaderSpec::Format1,
        _ => HeaderSpec::OtherEpoch,
    };
    let lsn_first_delta = match byte(u)? {
        0..=199 => 0,
        b => (b - 200) as i8 - 28,
    };
    let count = below(u, 9)?;
    let pieces = (0..count).map(|_| piece(u)).collect::<Result<_>>()?;
    let end = match below(u, 8)? {
        0..=4 => SegmentEnd::Preallocated,
        5 => SegmentEnd::Exact,
        6 => SegmentEnd::Cut(u16::from(byte(u)?) * 16),
        _ => SegmentEnd::GarbageAtEnd(take(u, 1, 32)?),
    };
    Ok(SegmentSpec { number_step, header, lsn_first_delta, pieces, end })
}

fn piece(u: &mut Unstructured<'_>) -> Result<Piece> {
    Ok(match below(u, 16)? {
        0..=7 => Piece::Record(ops(u, false)?),
        8 => Piece::RecordLsn { delta: (below(u, 7)? as i8) - 3, ops: ops(u, false)? },
        9 => Piece::BitFlipped { bit: word(u)?, ops: ops(u, false)? },
        10 => Piece::Truncated { keep: word(u)?, ops: ops(u, false)? },
        11 => Piece::Foreign(ops(u, false)?),
        12 => Piece::RawPayload(take(u, 1, 64)?),
        13 => Piece::Garbage(take(u, 1, 64)?),
        14 => Piece::Zeros(1 + u16::from(below(u, 64)?)),
        _ => {
            // One large record: within max_record_bytes, so still valid.
            let mut value = value(u)?;
            value.truncate(900);
            Piece::Record(vec![Op::Assert {
                session: "big".into(),
                fact: format!("f{}", below(u, FACTS)?),
                value,
            }])
        }
    })
}

/// The inverse of the grammar above, for writing seed files: the bytes that
/// `arbitrary` reads back as the given value. Values must be ones the grammar
/// can produce (ids `s0`.., `f0`..; long values as `value` makes them).
pub mod seed {
    use factwal::testing::{Calls, OpKind};
    use factwal::{CheckpointMode, Op, RecoveryMode};

    use crate::recovery::{Crafted, HeaderSpec, Piece, SegmentEnd, SegmentSpec};
    use crate::store_model::{Scenario, Step};

    fn index(id: &str) -> u8 {
        id[1..].parse().expect("an id the grammar makes: s0.., f0..")
    }

    fn short_value(out: &mut Vec<u8>, value: &[u8]) {
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }

    /// A value as `value` makes it: `length` bytes counting up from `fill`.
    pub fn long_value(length: usize, fill: u8) -> Vec<u8> {
        (0..length).map(|i| fill.wrapping_add(i as u8)).collect()
    }

    fn encode_long_value(out: &mut Vec<u8>, value: &[u8]) {
        let code =
            if value.len() < 24 { value.len() as u8 } else { 223 + (value.len() / 36) as u8 };
        out.extend([code, value.first().copied().unwrap_or(0)]);
    }

    fn ops(out: &mut Vec<u8>, ops: &[Op], long_values: bool) {
        out.push(ops.len() as u8 - 1);
        for op in ops {
            match op {
                Op::Assert { session, fact, value } => {
                    out.extend([0, index(session), index(fact)]);
                    if long_values {
                        encode_long_value(out, value);
                    } else {
                        short_value(out, value);
                    }
                }
                Op::Retract { session, fact } => out.extend([2, index(session), index(fact)]),
                Op::DropSession { session } => out.extend([3, index(session)]),
            }
        }
    }

    /// The bytes of a `store_model` scenario.
    pub fn scenario(scenario: &Scenario) -> Vec<u8> {
        let mut out = vec![u8::from(scenario.recovery_mode == RecoveryMode::PointInTime)];
        for step in &scenario.steps {
            match step {
                Step::Write(batch) => {
                    out.push(0);
                    ops(&mut out, batch, true);
                }
                Step::WriteAsync(batch) => {
                    out.push(6);
                    ops(&mut out, batch, true);
                }
                Step::Read { session, fact } => out.extend([7, index(session), index(fact)]),
                Step::ReadAll => out.push(9),
                Step::Checkpoint(CheckpointMode::Passive) => out.push(10),
                Step::Checkpoint(CheckpointMode::Truncate) => out.push(11),
                Step::Checkpoint(other) => panic!("no input byte for checkpoint mode {other:?}"),
                Step::Crash { tear } => out.extend([12, tear.map_or(0, |at| (at / 5) as u8)]),
                Step::Drop => out.push(14),
                Step::Close => out.push(15),
                Step::Open => out.push(16),
                Step::Fault(fault) => {
                    let call = match fault.calls {
                        Calls::Any => 0,
                        Calls::Of(kind) => 1 + OpKind::ALL.iter().position(|k| *k == kind).unwrap(),
                        Calls::Mutating => panic!("the grammar makes no fault on mutating calls"),
                    };
                    let flags = u8::from(fault.sticky)
                        | u8::from(fault.errno == 28) << 1
                        | u8::from(fault.torn_write) << 2;
                    out.extend([17, call as u8, fault.nth as u8 - 1, flags]);
                }
                Step::Heal => out.push(18),
                Step::Inspect => out.push(19),
            }
        }
        out
    }

    /// The bytes of a `recovery` input.
    pub fn crafted(crafted: &Crafted) -> Vec<u8> {
        let mode = match crafted.recovery_mode {
            RecoveryMode::TolerateCorruptedTail => 0,
            RecoveryMode::AbsoluteConsistency => 1,
            RecoveryMode::PointInTime => 2,
            other => panic!("no input byte for recovery mode {other:?}"),
        };
        let mut out = vec![
            mode,
            crafted.folded_batches,
            u8::from(!crafted.temporary_file),
            u8::from(!crafted.clean_close),
            crafted.first_number as u8 - 1,
            crafted.segments.len() as u8 - 1,
        ];
        for spec in &crafted.segments {
            segment(&mut out, spec);
        }
        out
    }

    fn segment(out: &mut Vec<u8>, spec: &SegmentSpec) {
        out.push(match spec.number_step {
            2 => 6,
            0 => 7,
            _ => 0,
        });
        match &spec.header {
            HeaderSpec::Valid => out.push(0),
            HeaderSpec::BitFlip(bit) => {
                out.extend([12, bit.to_le_bytes()[0], bit.to_le_bytes()[1]])
            }
            HeaderSpec::WrongNumber => out.push(14),
            HeaderSpec::Garbage(bytes) => {
                out.push(15);
                short_value(out, bytes);
            }
            HeaderSpec::OtherStore => out.push(16),
            HeaderSpec::Format1 => out.push(17),
            HeaderSpec::OtherEpoch => out.push(18),
        }
        out.push(if spec.lsn_first_delta == 0 {
            0
        } else {
            (i16::from(spec.lsn_first_delta) + 228) as u8
        });
        out.push(spec.pieces.len() as u8);
        for piece in &spec.pieces {
            self::piece(out, piece);
        }
        match &spec.end {
            SegmentEnd::Preallocated => out.push(0),
            SegmentEnd::Exact => out.push(5),
            SegmentEnd::Cut(length) => out.extend([6, (length / 16) as u8]),
            SegmentEnd::GarbageAtEnd(bytes) => {
                out.extend([7, bytes.len() as u8 - 1]);
                out.extend_from_slice(bytes);
            }
        }
    }

    fn piece(out: &mut Vec<u8>, piece: &Piece) {
        match piece {
            Piece::Record(batch) => {
                out.push(0);
                ops(out, batch, false);
            }
            Piece::RecordLsn { delta, ops: batch } => {
                out.extend([8, (delta + 3) as u8]);
                ops(out, batch, false);
            }
            Piece::BitFlipped { bit, ops: batch } => {
                out.extend([9, bit.to_le_bytes()[0], bit.to_le_bytes()[1]]);
                ops(out, batch, false);
            }
            Piece::Truncated { keep, ops: batch } => {
                out.extend([10, keep.to_le_bytes()[0], keep.to_le_bytes()[1]]);
                ops(out, batch, false);
            }
            Piece::Foreign(batch) => {
                out.push(11);
                ops(out, batch, false);
            }
            Piece::RawPayload(bytes) => {
                out.extend([12, bytes.len() as u8 - 1]);
                out.extend_from_slice(bytes);
            }
            Piece::Garbage(bytes) => {
                out.extend([13, bytes.len() as u8 - 1]);
                out.extend_from_slice(bytes);
            }
            Piece::Zeros(count) => out.extend([14, *count as u8 - 1]),
        }
    }
}
