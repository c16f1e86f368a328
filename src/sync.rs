//! Locks that outlive a panic. A panic is a bug to report, not a reason to
//! stop every other thread with a second panic: a guard poisoned by one is
//! taken as it is. The updates made under these locks are single
//! assignments or complete before anything that can panic runs; where a
//! half-done step could matter, the code that panicked poisons the WAL or
//! latches redb instead (`Wal::write_group_contained` and the WAL leader's
//! drop guard, `Leadership`; `Tables::contain`).

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, ignoring poisoning.
pub(crate) fn lock<G>(mutex: &Mutex<G>) -> MutexGuard<'_, G> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, ignoring poisoning.
pub(crate) fn read<G>(lock: &RwLock<G>) -> RwLockReadGuard<'_, G> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, ignoring poisoning.
pub(crate) fn write<G>(lock: &RwLock<G>) -> RwLockWriteGuard<'_, G> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
