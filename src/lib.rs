//! # factwal
//!
//! An embedded, zero-loss store for session state, built for rule-engine
//! brokers that keep per-session facts in an engine (CLIPS and the like) and
//! must never lose what a session has been exposed to.
//!
//! ## The model
//!
//! A *session* (a string id) holds *facts* (fact id → value bytes). A write
//! is a [`Batch`] of operations (assert, retract, drop session), atomic
//! across crashes and identified by its [`Lsn`]. [`Store::write`] appends the
//! batch to a segmented, CRC-framed write-ahead log and returns only once it
//! is synced; concurrent writers share syncs (group commit). A broker calls
//! `write` *before* applying the operation to its engine, so after a crash
//! nothing the engine saw is missing.
//!
//! Acknowledged records live in an in-memory overlay that reads consult
//! first, until a checkpoint pass folds them into [redb], where session
//! state is kept, in one durable transaction. Reopening after any crash gives
//! back every acknowledged write and nothing half-applied.
//!
//! ```
//! use factwal::{Batch, Config, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(Config::new(dir.path()))?;
//! store.write(Batch::new().assert("s1", "temperature", b"high".to_vec()))?;
//! assert_eq!(store.fact("s1", "temperature")?, Some(b"high".to_vec()));
//! store.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `docs/DESIGN.md` explains the durability contract and why it is built
//! this way; `docs/FORMAT.md` gives the on-disk format byte by byte.

#![deny(missing_docs)]
// Every type a public item returns or holds can be named by the user.
#![deny(unnameable_types)]
#![deny(missing_debug_implementations)]
#![forbid(unsafe_op_in_unsafe_fn)]

/// Declares a function `pub` with the `testing` feature and `pub(crate)`
/// without: for methods of public types that only the crate itself (and its
/// white-box tests) may call.
macro_rules! pub_for_testing {
    ($(#[$meta:meta])* fn $($rest:tt)*) => {
        #[cfg(feature = "testing")]
        $(#[$meta])* pub fn $($rest)*
        #[cfg(not(feature = "testing"))]
        $(#[$meta])* pub(crate) fn $($rest)*
    };
}

mod batch;
mod checkpoint;
mod config;
mod core;
mod error;
mod files;
mod held;
mod identity;
mod inspect;
mod open;
mod report;
mod salvage;
mod store;
mod sync;
mod ticket;

// The engine's layers are private. The `testing` feature (enabled by the
// crate's own tests, benches and fuzz targets, never by a user) makes them
// public for white-box tests, and adds what the tests share: the simulated
// disk and the reference model. The crate's unit tests use those too: the
// dev-dependency on the crate itself turns `testing` on for every test build.
#[cfg(feature = "testing")]
pub mod state;
#[cfg(not(feature = "testing"))]
mod state;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub mod wal;
#[cfg(not(feature = "testing"))]
mod wal;

pub use batch::{Batch, Op, BATCH_OPS_MAX, ID_BYTES_MAX};
pub use checkpoint::{CheckpointMode, CheckpointStats, LoopStart, PassReport};
pub use config::{CheckpointConfig, Config, PersistenceConfig, RecoveryMode};
pub use error::{CorruptionKind, Error, IoOp, Lsn, Result, StateDamage};
pub use files::LOCK_FILE_NAME;
pub use identity::StoreId;
pub use inspect::{ReadOnlyStore, StateCheck, WalProblem};
pub use report::{CloseReport, RecoveryReport, StoreStats};
pub use salvage::{salvage, Loss, SalvageReport};
pub use state::{OverlayStats, StoreRecord};
pub use store::{Store, WRITE_MANY_IN_FLIGHT};
pub use ticket::WriteTicket;
pub use wal::format::{SegmentHeader, RECORD_BYTES_MAX};
pub use wal::recovery::{Dropped, RecoveredRecord, SegmentSummary};
pub use wal::WalCounters;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
