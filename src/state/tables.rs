//! Session state in redb: the `facts` table keyed by (session, fact id), a
//! `sessions` table with each session's fact count, and a `meta` table whose
//! `applied_lsn` says which WAL records redb already holds. `applied_lsn` is
//! only ever written in the same transaction as the facts it covers
//! (invariant 4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition,
};

use crate::error::{Error, Lsn, Result};
use crate::state::io::{BoxedBackend, StateIo, StdStateIo};
use crate::state::overlay::Generation;

const FACTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("facts");
const SESSIONS: TableDefinition<&str, u64> = TableDefinition::new("sessions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const APPLIED_LSN: &str = "applied_lsn";

enum Handle {
    ReadWrite(Database),
    ReadOnly(ReadOnlyDatabase),
}

/// The redb side of the store.
pub struct Tables {
    handle: Handle,
    path: PathBuf,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What one fold wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Facts inserted or replaced.
    pub facts_written: u64,
    /// Facts removed (retracts and dropped sessions).
    pub facts_removed: u64,
}

impl Tables {
    /// Opens (creating when missing, mode 0600) the redb file for writing.
    pub fn open(path: &Path) -> Result<Tables> {
        let (backend, _created) = StdStateIo.open_backend(path).map_err(|e| Error::io(path, "open state file", e))?;
        Tables::open_backend(path, backend)
    }

    /// Opens redb over a given storage backend (`path` names it in errors).
    pub fn open_backend(path: &Path, backend: Box<dyn StorageBackend>) -> Result<Tables> {
        let db = redb::Builder::new().create_with_backend(BoxedBackend(backend)).map_err(|e| Error::redb(path, e))?;
        let tables = Tables { handle: Handle::ReadWrite(db), path: path.to_path_buf() };
        tables.create_tables()?;
        Ok(tables)
    }

    /// Opens an existing redb file without writing anything.
    pub fn open_read_only(path: &Path) -> Result<Tables> {
        let db = redb::Builder::new().open_read_only(path).map_err(|e| Error::redb(path, e))?;
        Ok(Tables { handle: Handle::ReadOnly(db), path: path.to_path_buf() })
    }

    /// The redb file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<()> {
        let db = self.writable()?;
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        txn.open_table(FACTS).map_err(|e| self.error(e))?;
        txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
        txn.open_table(META).map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))
    }

    fn error(&self, source: impl Into<redb::Error>) -> Error {
        Error::redb(&self.path, source)
    }

    fn writable(&self) -> Result<&Database> {
        match &self.handle {
            Handle::ReadWrite(db) => Ok(db),
            Handle::ReadOnly(_) => Err(Error::InvalidArgument(format!("{} is open read-only", self.path.display()))),
        }
    }

    fn begin_read(&self) -> Result<ReadTransaction> {
        let txn = match &self.handle {
            Handle::ReadWrite(db) => db.begin_read(),
            Handle::ReadOnly(db) => db.begin_read(),
        };
        txn.map_err(|e| self.error(e))
    }

    /// The LSN of the last record redb holds (0 for a new store).
    pub fn applied_lsn(&self) -> Result<Lsn> {
        let txn = self.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(self.error(e)),
        };
        let applied = meta.get(APPLIED_LSN).map_err(|e| self.error(e))?;
        Ok(applied.map_or(0, |guard| guard.value()))
    }

    /// Folds generations (oldest first) into redb in ONE durable transaction
    /// that also sets `applied_lsn` to `lsn`. Applying a generation whose
    /// effects redb already holds changes nothing (invariant 5).
    pub fn fold(&self, generations: &[Arc<Generation>], lsn: Lsn) -> Result<FoldStats> {
        let db = self.writable()?;
        let mut txn = db.begin_write().map_err(|e| self.error(e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| self.error(e))?;
        let mut stats = FoldStats::default();
        {
            let mut facts = txn.open_table(FACTS).map_err(|e| self.error(e))?;
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            let applied = meta.get(APPLIED_LSN).map_err(|e| self.error(e))?.map_or(0, |guard| guard.value());
            assert!(lsn >= applied, "applied_lsn never goes back: {applied} -> {lsn}");
            for generation in generations {
                for (session, delta) in &generation.sessions {
                    let mut count = sessions.get(session.as_str()).map_err(|e| self.error(e))?.map_or(0, |g| g.value());
                    if delta.dropped && count > 0 {
                        let end = format!("{session}\0");
                        facts
                            .retain_in((session.as_str(), "")..(end.as_str(), ""), |_, _| false)
                            .map_err(|e| self.error(e))?;
                        stats.facts_removed += count;
                        count = 0;
                    }
                    for (fact, value) in &delta.facts {
                        let key = (session.as_str(), fact.as_str());
                        match value {
                            Some(value) => {
                                let old = facts.insert(key, value.as_slice()).map_err(|e| self.error(e))?;
                                count += u64::from(old.is_none());
                                stats.facts_written += 1;
                            }
                            None => {
                                let old = facts.remove(key).map_err(|e| self.error(e))?;
                                count -= u64::from(old.is_some());
                                stats.facts_removed += u64::from(old.is_some());
                            }
                        }
                    }
                    if count == 0 {
                        sessions.remove(session.as_str()).map_err(|e| self.error(e))?;
                    } else {
                        sessions.insert(session.as_str(), count).map_err(|e| self.error(e))?;
                    }
                }
            }
            meta.insert(APPLIED_LSN, lsn).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(stats)
    }

    /// A read snapshot.
    pub fn snapshot(&self) -> Result<Snapshot<'_>> {
        Ok(Snapshot { txn: self.begin_read()?, tables: self })
    }

    /// Runs redb's integrity check; only possible on a store opened for
    /// writing with no transaction in flight.
    pub fn check_integrity(&mut self) -> Result<bool> {
        let path = self.path.clone();
        match &mut self.handle {
            Handle::ReadWrite(db) => db.check_integrity().map_err(|e| Error::redb(path, e)),
            Handle::ReadOnly(_) => Err(Error::InvalidArgument(format!("{} is open read-only", path.display()))),
        }
    }

    /// Closes redb, reporting any error it meets while doing so.
    pub fn close(self) -> Result<()> {
        let path = self.path;
        match self.handle {
            Handle::ReadWrite(db) => db.close().map_err(|e| Error::redb(path, e)),
            Handle::ReadOnly(db) => db.close().map_err(|e| Error::redb(path, e)),
        }
    }
}

/// A consistent read view of redb.
pub struct Snapshot<'a> {
    txn: ReadTransaction,
    tables: &'a Tables,
}

impl Snapshot<'_> {
    /// One fact's value.
    pub fn fact(&self, session: &str, fact: &str) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(FACTS).map_err(|e| self.tables.error(e))?;
        let value = table.get((session, fact)).map_err(|e| self.tables.error(e))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// Every fact of one session.
    pub fn session(&self, session: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let table = self.txn.open_table(FACTS).map_err(|e| self.tables.error(e))?;
        let end = format!("{session}\0");
        let mut facts = BTreeMap::new();
        for entry in table.range((session, "")..(end.as_str(), "")).map_err(|e| self.tables.error(e))? {
            let (key, value) = entry.map_err(|e| self.tables.error(e))?;
            facts.insert(key.value().1.to_string(), value.value().to_vec());
        }
        Ok(facts)
    }

    /// Every session with at least one fact, and its fact count.
    pub fn sessions(&self) -> Result<BTreeMap<String, u64>> {
        let table = self.txn.open_table(SESSIONS).map_err(|e| self.tables.error(e))?;
        let mut sessions = BTreeMap::new();
        for entry in table.iter().map_err(|e| self.tables.error(e))? {
            let (key, value) = entry.map_err(|e| self.tables.error(e))?;
            sessions.insert(key.value().to_string(), value.value());
        }
        Ok(sessions)
    }
}
