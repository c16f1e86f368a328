//! Session state: redb tables and the in-memory overlay of unfolded records.
//! Nothing here knows about WAL files.

pub mod io;
pub mod overlay;
pub mod tables;
pub mod view;

pub use io::{StateIo, StdStateIo};
pub use overlay::{FactLookup, Generation, Overlay, OverlayStats, SessionView};
pub use tables::{FoldStats, Snapshot, Tables};
pub use view::View;
