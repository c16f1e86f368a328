//! Session state: redb tables and the in-memory overlay of unfolded records.
//! Nothing here knows about WAL files.

pub mod io;
pub mod overlay;
pub mod tables;
pub mod view;

pub use io::{StateIo, StdStateIo};
pub use overlay::{FactLookup, Generation, Overlay, OverlayStats};
pub use tables::{StoreRecord, Tables, WalMark, STATE_FORMAT_VERSION};
pub use view::View;
#[cfg(feature = "testing")]
pub use {
    io::ScratchBackend,
    overlay::SessionView,
    tables::{FoldStats, Snapshot},
};
