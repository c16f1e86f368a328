//! The reference model the tests and fuzz targets check a store against: its
//! facts in a `BTreeMap`, batches applied to it as the store applies them,
//! and every fact a store shows, read through its public API.

use std::collections::BTreeMap;

use crate::{Op, ReadOnlyStore, Result, Store};

/// Every fact of a store: (session, fact) to value.
pub type FactMap = BTreeMap<(String, String), Vec<u8>>;

/// Applies a batch's operations to the model, in order, as the store does.
pub fn apply_ops(facts: &mut FactMap, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Assert { session, fact, value } => {
                facts.insert((session.clone(), fact.clone()), value.clone());
            }
            Op::Retract { session, fact } => {
                facts.remove(&(session.clone(), fact.clone()));
            }
            Op::DropSession { session } => facts.retain(|(s, _), _| s != session),
        }
    }
}

/// The two ways of reading a store's facts: [`Store`] and [`ReadOnlyStore`].
pub trait ReadFacts {
    /// Every session holding a fact.
    fn sessions(&self) -> Result<Vec<String>>;
    /// Every fact of one session.
    fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>>;
}

impl ReadFacts for Store {
    fn sessions(&self) -> Result<Vec<String>> {
        Store::sessions(self)
    }
    fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        Store::facts(self, session)
    }
}

impl ReadFacts for ReadOnlyStore {
    fn sessions(&self) -> Result<Vec<String>> {
        ReadOnlyStore::sessions(self)
    }
    fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        ReadOnlyStore::facts(self, session)
    }
}

/// Every fact of `store`, read through `sessions()` and `facts()`. Panics
/// on a read error, and unless the two agree: the sessions come sorted and
/// unique, and each holds at least one fact.
pub fn read_all(store: &dyn ReadFacts) -> FactMap {
    let sessions = store.sessions().unwrap_or_else(|error| panic!("sessions(): {error}"));
    assert!(
        sessions.windows(2).all(|pair| pair[0] < pair[1]),
        "sessions() not sorted and unique: {sessions:?}"
    );
    let mut facts = FactMap::new();
    for session in sessions {
        let of_session =
            store.facts(&session).unwrap_or_else(|error| panic!("facts({session:?}): {error}"));
        assert!(!of_session.is_empty(), "sessions() lists {session:?}, which holds no fact");
        for (fact, value) in of_session {
            facts.insert((session.clone(), fact), value);
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Config};

    fn key(session: &str, fact: &str) -> (String, String) {
        (session.to_string(), fact.to_string())
    }

    #[test]
    fn the_model_and_the_store_agree_on_a_batch_of_every_kind() {
        // One batch of every operation, applied to the model and written to
        // a store: the model holds exactly the two facts left, and the
        // store, read both ways, shows the same.
        let batch = Batch::new()
            .assert("s1", "a", b"1".to_vec())
            .assert("s1", "b", b"2".to_vec())
            .assert("s2", "a", b"3".to_vec())
            .retract("s1", "a")
            .drop_session("s2")
            .assert("s3", "a", b"4".to_vec());
        let mut model = FactMap::new();
        apply_ops(&mut model, batch.ops());
        let expected: FactMap =
            [(key("s1", "b"), b"2".to_vec()), (key("s3", "a"), b"4".to_vec())].into();
        assert_eq!(model, expected);

        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path());
        let store = Store::open(config.clone()).unwrap();
        store.write(batch).unwrap();
        assert_eq!(read_all(&store), expected);
        assert!(store.close().is_clean());
        let read_only = ReadOnlyStore::open(&config).unwrap();
        assert_eq!(read_all(&read_only), expected);
    }
}
