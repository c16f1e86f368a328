//! The write-ahead log: files, records, LSNs and syncs. It knows nothing of
//! sessions or redb.

pub mod format;
pub mod io;
pub mod recovery;
pub mod segment;
mod waiter;
pub mod writer;

pub use waiter::{Pending, Receipt, Release};
#[cfg(feature = "testing")]
pub use writer::Sink;
pub use writer::{Refused, Wal, WalCounters, WalOptions};
