//! Store identity: a random number made once, when a store is created, and
//! kept in `state.redb` and in the header of every WAL segment the store
//! writes. A WAL belongs to exactly one store: a segment carrying another
//! store's identity is refused, never merged.

use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::time::{SystemTime, UNIX_EPOCH};

/// The identity of one store. Displayed as 16 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(u64);

impl StoreId {
    /// A new identity, different for every store ever created (random, never 0).
    pub fn new_random() -> StoreId {
        StoreId(random_u64("factwal store identity").max(1))
    }

    /// The identity stored as `value`; `None` for 0, which no store has.
    pub const fn from_u64(value: u64) -> Option<StoreId> {
        if value == 0 {
            None
        } else {
            Some(StoreId(value))
        }
    }

    /// The number behind the identity (never 0).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreId({self})")
    }
}

/// A random number, different at every call: the process's random hasher
/// keys mixed with `tag`, the time and the process id.
pub(crate) fn random_u64(tag: impl Hash) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((tag, nanos, std::process::id()))
}

/// How an identity is shown in messages, including the format-1 stores and
/// segments that had none.
pub(crate) fn describe(id: Option<StoreId>) -> String {
    match id {
        Some(id) => id.to_string(),
        None => "none (written by factwal format 1)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_are_never_zero_and_print_as_hex() {
        let (a, b) = (StoreId::new_random(), StoreId::new_random());
        assert_ne!(a, b);
        assert_ne!(a.get(), 0);
        assert_eq!(StoreId::from_u64(0), None);
        assert_eq!(StoreId::from_u64(0xab).unwrap().to_string(), "00000000000000ab");
        assert_eq!(describe(None), "none (written by factwal format 1)");
    }
}
