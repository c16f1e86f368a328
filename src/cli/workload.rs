//! The `load` workload: which session, fact and operation each write is,
//! from its sequence number alone, and the `ack` lines that report them.
//! `load` writes this schedule; `demo` uses the same functions to check what
//! a crashed writer left behind.

/// The deterministic schedule of a `load` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub sessions: u64,
    pub facts_per_session: u64,
    /// Every R-th write is a retract; 0 means none is.
    pub retract_every: u64,
    /// Asserted values are padded with `.` to this many bytes.
    pub value_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Assert,
    Retract,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Assert => "assert",
            OpKind::Retract => "retract",
        }
    }
}

/// Session and fact indices: session `s<session>`, fact `f<fact>`.
pub type FactKey = (u64, u64);

/// One write of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedWrite {
    pub seq: u64,
    pub key: FactKey,
    pub kind: OpKind,
}

impl Schedule {
    /// Write `seq` (counting from 1): session `seq % N`, fact `(seq / N) % K`,
    /// a retract when R > 0 and `seq % R == 0`.
    pub fn write(&self, seq: u64) -> PlannedWrite {
        let session = seq % self.sessions;
        let fact = (seq / self.sessions) % self.facts_per_session;
        let kind = if self.retract_every > 0 && seq.is_multiple_of(self.retract_every) {
            OpKind::Retract
        } else {
            OpKind::Assert
        };
        PlannedWrite { seq, key: (session, fact), kind }
    }

    /// The value write `seq` asserts: `s<i>/f<j>/<seq>` padded with `.` to
    /// `value_bytes` (a longer text is kept whole, never cut).
    pub fn value(&self, write: &PlannedWrite) -> Vec<u8> {
        let mut value =
            format!("{}/{}/{}", session_name(write.key.0), fact_name(write.key.1), write.seq)
                .into_bytes();
        if value.len() < self.value_bytes {
            value.resize(self.value_bytes, b'.');
        }
        value
    }
}

pub fn session_name(index: u64) -> String {
    format!("s{index}")
}

pub fn fact_name(index: u64) -> String {
    format!("f{index}")
}

/// One `ack <lsn> <session> <fact> <seq> <op>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub lsn: u64,
    pub write: PlannedWrite,
}

impl Ack {
    pub fn line(lsn: u64, write: &PlannedWrite) -> String {
        let (session, fact) = (session_name(write.key.0), fact_name(write.key.1));
        format!("ack {lsn} {session} {fact} {} {}", write.seq, write.kind.as_str())
    }

    /// Parses a line `line` printed; `None` for anything else.
    pub fn parse(line: &str) -> Option<Ack> {
        let mut words = line.split(' ');
        if words.next()? != "ack" {
            return None;
        }
        let lsn = words.next()?.parse().ok()?;
        let session = words.next()?.strip_prefix('s')?.parse().ok()?;
        let fact = words.next()?.strip_prefix('f')?.parse().ok()?;
        let seq = words.next()?.parse().ok()?;
        let kind = match words.next()? {
            "assert" => OpKind::Assert,
            "retract" => OpKind::Retract,
            _ => return None,
        };
        words
            .next()
            .is_none()
            .then_some(Ack { lsn, write: PlannedWrite { seq, key: (session, fact), kind } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule =
        Schedule { sessions: 10, facts_per_session: 4, retract_every: 3, value_bytes: 16 };

    #[test]
    fn schedule_and_ack_lines_round_trip() {
        let write = SCHEDULE.write(23);
        assert_eq!(write, PlannedWrite { seq: 23, key: (3, 2), kind: OpKind::Assert });
        assert_eq!(SCHEDULE.write(24).kind, OpKind::Retract);
        assert_eq!(SCHEDULE.value(&write), b"s3/f2/23........");
        let line = Ack::line(7, &write);
        assert_eq!(line, "ack 7 s3 f2 23 assert");
        assert_eq!(Ack::parse(&line), Some(Ack { lsn: 7, write }));
        assert_eq!(Ack::parse("ack 7 s3 f2 23"), None);
        assert_eq!(Ack::parse("ack 7 s3 f2 23 assert extra"), None);
    }

    #[test]
    fn long_texts_are_not_cut() {
        let schedule = Schedule { value_bytes: 2, ..SCHEDULE };
        assert_eq!(schedule.value(&schedule.write(123)), b"s3/f0/123");
    }
}
