//! Reads: the overlay over a redb snapshot. Shared by the store and the
//! read-only inspection view so both merge the same way.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::state::overlay::{FactLookup, Overlay};
use crate::state::tables::Tables;

/// The overlay over redb. The overlay is always read before the redb
/// snapshot is opened; see the overlay module for why that order gives a
/// consistent view.
#[derive(Debug)]
pub struct View<'a> {
    /// Unfolded records.
    pub overlay: &'a Overlay,
    /// Folded state.
    pub tables: &'a Tables,
}

impl View<'_> {
    /// One fact's value.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        match self.overlay.fact(session, fact) {
            FactLookup::Value(value) => Ok(Some(value)),
            FactLookup::Absent => Ok(None),
            FactLookup::Base => {
                self.tables.read("reading a fact", |snapshot| snapshot.fact(session, fact))
            }
        }
    }

    /// Every fact of a session, by fact id.
    pub fn facts(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let view = self.overlay.session(session);
        let mut facts = if view.base_hidden {
            BTreeMap::new()
        } else {
            self.tables.read("reading a session", |snapshot| snapshot.session(session))?
        };
        for (fact, value) in view.facts {
            match value {
                Some(value) => facts.insert(fact, value),
                None => facts.remove(&fact),
            };
        }
        Ok(facts)
    }

    /// Every session holding at least one fact, sorted.
    pub fn sessions(&self) -> Result<Vec<String>> {
        let touched = self.overlay.touched_sessions();
        let views: Vec<_> =
            touched.iter().map(|session| (session, self.overlay.session(session))).collect();
        self.tables.read("listing sessions", |snapshot| {
            let mut sessions = snapshot.sessions()?;
            for (session, view) in views {
                let asserted = view.facts.values().any(Option::is_some);
                let base_count = if view.base_hidden {
                    0
                } else {
                    sessions.get(session.as_str()).copied().unwrap_or(0)
                };
                let mut retracted_from_base = 0;
                if !asserted && base_count > 0 {
                    for (fact, _) in view.facts.iter().filter(|(_, value)| value.is_none()) {
                        retracted_from_base += u64::from(snapshot.fact(session, fact)?.is_some());
                    }
                }
                if asserted || base_count > retracted_from_base {
                    sessions.insert(session.clone(), 1);
                } else {
                    sessions.remove(session.as_str());
                }
            }
            Ok(sessions.into_keys().collect())
        })
    }
}
