//! What factwal's own tests, benches and fuzz targets share (feature
//! `testing`; never compiled into a production build, and no stable API):
//!
//! - [`SimDisk`], the one fault-injecting layer: a simulated disk under both
//!   I/O seams that fails chosen calls ([`Fault`]), crashes and loses power
//!   as `docs/DESIGN.md`'s media model allows, and runs hooks before calls
//!   (a slow sync, a panicking write, a [`Gate`] holding syncs);
//! - a reference model of a store's facts ([`FactMap`], [`apply_ops`],
//!   [`read_all`]);
//! - file snapshots ([`snapshot_files`], [`changed_files`]) and the segments
//!   of a WAL directory ([`segment_numbers`]).

mod fault;
mod files;
mod gate;
mod model;

pub use fault::{Call, Calls, Fault, OpKind, Side, SimDisk, Tear};
pub use files::{changed_files, segment_numbers, snapshot_files};
pub use gate::Gate;
pub use model::{apply_ops, read_all, FactMap, ReadFacts};
