//! The data model: operations on session facts, grouped in atomic batches, and
//! their encoding as a WAL record payload.
//!
//! A payload is a LEB128 varint operation count followed by each operation
//! encoded with postcard. The count comes first so the decoder can refuse an
//! implausible count before it allocates anything (invariant 8).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most operations one batch may hold.
pub const BATCH_OPS_MAX: usize = 65_536;
/// Most bytes a session id or a fact id may have.
pub const ID_BYTES_MAX: usize = 4_096;
/// The smallest encoded operation is two bytes (variant tag and an empty id),
/// so a payload of `n` bytes holds at most `n / 2` operations.
const OP_BYTES_MIN: usize = 2;

/// One operation on a session's facts.
///
/// Deliberately not `#[non_exhaustive]`: a broker that replays operations
/// into its rule engine must apply every kind, and a new kind (which would
/// also be a new format version) should stop its build, not fall silently
/// into a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace one fact.
    Assert {
        /// The session id.
        session: String,
        /// The fact id within the session.
        fact: String,
        /// The fact's value.
        value: Vec<u8>,
    },
    /// Delete one fact; retracting a fact that does not exist is not an error.
    Retract {
        /// The session id.
        session: String,
        /// The fact id within the session.
        fact: String,
    },
    /// Delete every fact of a session.
    DropSession {
        /// The session id.
        session: String,
    },
}

impl Op {
    /// The session this operation touches.
    pub fn session(&self) -> &str {
        match self {
            Op::Assert { session, .. }
            | Op::Retract { session, .. }
            | Op::DropSession { session } => session,
        }
    }
}

/// An ordered list of operations applied atomically: after any crash either
/// all of them are present or none.
///
/// ```
/// let batch = factwal::Batch::new()
///     .assert("session-1", "greeting", b"hello".to_vec())
///     .retract("session-1", "stale")
///     .drop_session("session-2");
/// assert_eq!(batch.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds an assert (insert or replace).
    pub fn assert(
        mut self,
        session: impl Into<String>,
        fact: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        self.ops.push(Op::Assert {
            session: session.into(),
            fact: fact.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a retract (delete one fact).
    pub fn retract(mut self, session: impl Into<String>, fact: impl Into<String>) -> Self {
        self.ops.push(Op::Retract { session: session.into(), fact: fact.into() });
        self
    }

    /// Adds a drop of a whole session.
    pub fn drop_session(mut self, session: impl Into<String>) -> Self {
        self.ops.push(Op::DropSession { session: session.into() });
        self
    }

    /// Adds any operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks the caller's input against the limits that do not depend on
    /// configuration: at least one and at most [`BATCH_OPS_MAX`] operations,
    /// non-empty ids of at most [`ID_BYTES_MAX`] bytes.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.ops.is_empty() {
            return Err(Error::InvalidArgument("a batch must hold at least one operation".into()));
        }
        if self.ops.len() > BATCH_OPS_MAX {
            return Err(Error::LimitExceeded {
                what: "batch operations",
                actual: self.ops.len() as u64,
                limit: BATCH_OPS_MAX as u64,
            });
        }
        for op in &self.ops {
            let (session, fact) = match op {
                Op::Assert { session, fact, .. } | Op::Retract { session, fact } => {
                    (session, Some(fact))
                }
                Op::DropSession { session } => (session, None),
            };
            check_id("session id", session)?;
            if let Some(fact) = fact {
                check_id("fact id", fact)?;
            }
        }
        Ok(())
    }

    /// Encodes the batch as a record payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.encoded_len_hint());
        push_varint(&mut payload, self.ops.len() as u64);
        for op in &self.ops {
            // Serializing into a Vec cannot fail: postcard only fails on a full
            // fixed buffer or on types serde cannot express, and Op is neither.
            payload = postcard::to_extend(op, payload).expect("postcard encodes an Op into a Vec");
        }
        // Paired with the read side: what is written decodes to what was meant.
        debug_assert_eq!(Batch::decode(&payload).as_ref(), Some(self), "a payload decodes back");
        payload
    }

    pub_for_testing! {
        /// Decodes a record payload. Never panics; allocates at most a small
        /// multiple of `payload.len()`.
        fn decode(payload: &[u8]) -> Option<Batch> {
            let (count, mut rest) = take_varint(payload)?;
            let count = usize::try_from(count).ok()?;
            if count == 0 || count > BATCH_OPS_MAX || count > rest.len() / OP_BYTES_MIN {
                return None;
            }
            let mut ops = Vec::with_capacity(count);
            for _ in 0..count {
                let (op, tail) = postcard::take_from_bytes::<Op>(rest).ok()?;
                ops.push(op);
                rest = tail;
            }
            if !rest.is_empty() {
                return None;
            }
            let batch = Batch { ops };
            batch.validate().ok()?;
            Some(batch)
        }
    }

    fn encoded_len_hint(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Assert { session, fact, value } => {
                    12 + session.len() + fact.len() + value.len()
                }
                Op::Retract { session, fact } => 8 + session.len() + fact.len(),
                Op::DropSession { session } => 4 + session.len(),
            })
            .sum::<usize>()
            + 10
    }
}

impl From<Vec<Op>> for Batch {
    fn from(ops: Vec<Op>) -> Self {
        Batch { ops }
    }
}

impl From<Batch> for Vec<Op> {
    fn from(batch: Batch) -> Self {
        batch.ops
    }
}

fn check_id(what: &'static str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if id.len() > ID_BYTES_MAX {
        return Err(Error::LimitExceeded {
            what,
            actual: id.len() as u64,
            limit: ID_BYTES_MAX as u64,
        });
    }
    Ok(())
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[index + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        // Encodes a batch with every kind of operation, decodes it back, then
        // checks that truncated, padded and implausible payloads are refused.
        let batch =
            Batch::new().assert("s", "f", vec![1, 2, 3]).retract("s", "g").drop_session("t");
        let payload = batch.encode();
        assert_eq!(Batch::decode(&payload), Some(batch));
        for cut in 0..payload.len() {
            assert_eq!(Batch::decode(&payload[..cut]), None, "cut at {cut}");
        }
        let mut padded = payload.clone();
        padded.push(0);
        assert_eq!(Batch::decode(&padded), None);
        // A count far above what the bytes could hold is refused before allocation.
        let mut huge = Vec::new();
        push_varint(&mut huge, u64::MAX);
        huge.extend_from_slice(&[0; 32]);
        assert_eq!(Batch::decode(&huge), None);
    }

    #[test]
    fn limits_are_enforced() {
        // One past each limit is refused with the limit named.
        assert!(matches!(Batch::new().validate(), Err(Error::InvalidArgument(_))));
        let long = "x".repeat(ID_BYTES_MAX + 1);
        assert!(matches!(
            Batch::new().retract(long, "f").validate(),
            Err(Error::LimitExceeded { what: "session id", .. })
        ));
        let ops = (0..=BATCH_OPS_MAX)
            .map(|_| Op::DropSession { session: "s".into() })
            .collect::<Vec<_>>();
        assert!(matches!(
            Batch::from(ops).validate(),
            Err(Error::LimitExceeded { what: "batch operations", .. })
        ));
        assert!(matches!(
            Batch::new().assert("", "f", vec![]).validate(),
            Err(Error::InvalidArgument(_))
        ));
    }
}
