//! Session state: redb tables and the in-memory overlay of unfolded records.
//! Nothing here knows about WAL files.

pub mod io;
pub mod overlay;
pub mod tables;
pub mod view;

pub use io::{ScratchBackend, StateIo, StdStateIo};
pub use overlay::{FactLookup, Generation, Overlay, OverlayStats, SessionView};
pub use tables::{FoldStats, Snapshot, StoreRecord, Tables, WalMark, STATE_FORMAT_VERSION};
pub use view::View;
