//! The in-memory overlay: the effect of every durable record not yet folded
//! into redb, which reads consult before redb.
//!
//! It is a stack of generations. Records are applied to the active
//! generation; a checkpoint pass freezes it (an O(1) swap, so writers wait
//! only for that hand-off), folds the frozen generations into redb in one
//! transaction, and only then drops them. A reader copies what it needs from
//! the overlay first and opens its redb snapshot after: if a generation it saw
//! is later dropped, the snapshot it opens already holds that generation's
//! commit, and if it did not see one, that commit happened before.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::batch::{Batch, Op};
use crate::error::Lsn;
use crate::sync::{read, write};

/// A session's changes within one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionDelta {
    /// The session was dropped: older generations and redb no longer count.
    pub dropped: bool,
    /// Facts asserted (`Some`) or retracted (`None`) since then.
    pub facts: BTreeMap<String, Option<Vec<u8>>>,
}

/// The merged effect of a run of consecutive records.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// Changes by session, sorted (which also helps redb's inserts).
    pub sessions: BTreeMap<String, SessionDelta>,
    /// LSN of the last record applied.
    pub lsn_last: Lsn,
    /// Records applied.
    pub records: u64,
    /// Payload bytes of the records applied.
    pub bytes: u64,
}

impl Generation {
    /// Applies one record's operations, in order.
    pub fn apply(&mut self, lsn: Lsn, batch: Batch, payload_bytes: u64) {
        debug_assert!(
            self.records == 0 || lsn == self.lsn_last + 1,
            "records are applied in LSN order"
        );
        self.apply_ops(lsn, batch, payload_bytes);
    }

    /// Applies one record where the records before it may be missing (a
    /// salvage skipping damaged WAL records): LSNs still increase.
    pub(crate) fn apply_after_gap(&mut self, lsn: Lsn, batch: Batch, payload_bytes: u64) {
        debug_assert!(self.records == 0 || lsn > self.lsn_last, "records are applied in LSN order");
        self.apply_ops(lsn, batch, payload_bytes);
    }

    fn apply_ops(&mut self, lsn: Lsn, batch: Batch, payload_bytes: u64) {
        for op in Vec::from(batch) {
            match op {
                Op::Assert { session, fact, value } => {
                    self.sessions.entry(session).or_default().facts.insert(fact, Some(value));
                }
                Op::Retract { session, fact } => {
                    self.sessions.entry(session).or_default().facts.insert(fact, None);
                }
                Op::DropSession { session } => {
                    let delta = self.sessions.entry(session).or_default();
                    delta.dropped = true;
                    delta.facts.clear();
                }
            }
        }
        self.lsn_last = lsn;
        self.records += 1;
        self.bytes += payload_bytes;
    }

    fn is_empty(&self) -> bool {
        self.records == 0
    }
}

/// What the overlay knows about one fact.
#[derive(Debug, Clone, PartialEq)]
pub enum FactLookup {
    /// The overlay holds this value.
    Value(Vec<u8>),
    /// The overlay says the fact is gone (retracted or session dropped).
    Absent,
    /// The overlay knows nothing: ask redb.
    Base,
}

/// What the overlay knows about one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionView {
    /// Facts the overlay sets (`Some`) or removes (`None`).
    pub facts: BTreeMap<String, Option<Vec<u8>>>,
    /// The session was dropped after redb's state: ignore redb's facts.
    pub base_hidden: bool,
}

#[derive(Debug, Default)]
struct Inner {
    active: Generation,
    /// Oldest first.
    frozen: Vec<Arc<Generation>>,
}

/// Counters describing the unfolded records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverlayStats {
    /// Records not yet folded.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// The overlay.
#[derive(Debug, Default)]
pub struct Overlay {
    inner: RwLock<Inner>,
    /// Payload bytes of unfolded records, readable without the lock (the
    /// write path checks it on every write).
    bytes: AtomicU64,
}

impl Overlay {
    /// Applies durable records, the first having LSN `lsn_first`.
    pub fn apply(&self, lsn_first: Lsn, records: Vec<(Batch, u64)>) {
        let mut inner = write(&self.inner);
        let bytes_before = inner.active.bytes;
        for (index, (batch, payload_bytes)) in records.into_iter().enumerate() {
            inner.active.apply(lsn_first + index as u64, batch, payload_bytes);
        }
        self.bytes.fetch_add(inner.active.bytes - bytes_before, Ordering::AcqRel);
    }

    /// Adds an already built generation (recovery) on top.
    pub fn push_generation(&self, generation: Generation) {
        if generation.is_empty() {
            return;
        }
        let mut inner = write(&self.inner);
        self.bytes.fetch_add(generation.bytes, Ordering::AcqRel);
        let previous = std::mem::replace(&mut inner.active, generation);
        if !previous.is_empty() {
            inner.frozen.push(Arc::new(previous));
        }
    }

    /// Freezes the active generation and returns every frozen one, oldest
    /// first: what a checkpoint pass folds.
    pub fn freeze(&self) -> Vec<Arc<Generation>> {
        let mut inner = write(&self.inner);
        if !inner.active.is_empty() {
            let active = std::mem::take(&mut inner.active);
            inner.frozen.push(Arc::new(active));
        }
        inner.frozen.clone()
    }

    /// Drops frozen generations whose records are all at or below `lsn`, once
    /// a durable redb commit holds them.
    pub fn release_through(&self, lsn: Lsn) {
        let mut inner = write(&self.inner);
        let released: u64 =
            inner.frozen.iter().filter(|g| g.lsn_last <= lsn).map(|g| g.bytes).sum();
        inner.frozen.retain(|generation| generation.lsn_last > lsn);
        self.bytes.fetch_sub(released, Ordering::AcqRel);
    }

    /// Payload bytes of unfolded records, without taking the lock.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Records and bytes not yet folded.
    pub fn stats(&self) -> OverlayStats {
        let inner = read(&self.inner);
        let mut stats = OverlayStats { records: inner.active.records, bytes: inner.active.bytes };
        for generation in &inner.frozen {
            stats.records += generation.records;
            stats.bytes += generation.bytes;
        }
        stats
    }

    /// What the overlay says about one fact, newest generation first.
    pub fn fact(&self, session: &str, fact: &str) -> FactLookup {
        let inner = read(&self.inner);
        for generation in newest_first(&inner) {
            if let Some(delta) = generation.sessions.get(session) {
                match delta.facts.get(fact) {
                    Some(Some(value)) => return FactLookup::Value(value.clone()),
                    Some(None) => return FactLookup::Absent,
                    None if delta.dropped => return FactLookup::Absent,
                    None => {}
                }
            }
        }
        FactLookup::Base
    }

    /// What the overlay says about one session, merged newest first.
    pub fn session(&self, session: &str) -> SessionView {
        let inner = read(&self.inner);
        let mut view = SessionView::default();
        for generation in newest_first(&inner) {
            if let Some(delta) = generation.sessions.get(session) {
                for (fact, value) in &delta.facts {
                    view.facts.entry(fact.clone()).or_insert_with(|| value.clone());
                }
                if delta.dropped {
                    view.base_hidden = true;
                    break;
                }
            }
        }
        view
    }

    /// Every session the overlay touches.
    pub fn touched_sessions(&self) -> BTreeSet<String> {
        let inner = read(&self.inner);
        newest_first(&inner).flat_map(|generation| generation.sessions.keys().cloned()).collect()
    }
}

fn newest_first(inner: &Inner) -> impl Iterator<Item = &Generation> {
    std::iter::once(&inner.active).chain(inner.frozen.iter().rev().map(|generation| &**generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_generations_win_and_drops_hide_older_state() {
        // Builds two generations and checks lookups across them, including a
        // drop that hides everything older and a retract that masks a value.
        let overlay = Overlay::default();
        overlay.apply(
            1,
            vec![(
                Batch::new().assert("s", "a", b"1".to_vec()).assert("s", "b", b"2".to_vec()),
                10,
            )],
        );
        let frozen = overlay.freeze();
        assert_eq!(frozen.len(), 1);
        overlay.apply(
            2,
            vec![(Batch::new().retract("s", "a"), 5), (Batch::new().drop_session("t"), 5)],
        );
        assert_eq!(overlay.fact("s", "a"), FactLookup::Absent);
        assert_eq!(overlay.fact("s", "b"), FactLookup::Value(b"2".to_vec()));
        assert_eq!(overlay.fact("s", "c"), FactLookup::Base);
        assert_eq!(overlay.fact("t", "x"), FactLookup::Absent);
        let view = overlay.session("s");
        assert!(!view.base_hidden);
        assert_eq!(view.facts.get("a"), Some(&None));
        assert!(overlay.session("t").base_hidden);
        assert_eq!(overlay.stats(), OverlayStats { records: 3, bytes: 20 });
        assert_eq!(overlay.bytes(), 20);
        overlay.release_through(1);
        assert_eq!(overlay.stats(), OverlayStats { records: 2, bytes: 10 });
        assert_eq!(overlay.bytes(), 10);
        assert_eq!(overlay.fact("s", "b"), FactLookup::Base);
    }
}
