//! What factwal's own tests, benches and fuzz targets share (feature
//! `testing`; never compiled into a production build, and no stable API):
//! [`SimDisk`], the one fault-injecting layer, a simulated disk under both
//! I/O seams that fails chosen calls ([`Fault`]), crashes and loses power as
//! `docs/DESIGN.md`'s media model allows, and runs hooks before calls (a
//! slow sync, a panicking write, a [`Gate`] holding syncs until the test
//! lets them through).

mod fault;
mod gate;

pub use fault::{Call, Calls, Fault, OpKind, Side, SimDisk, Tear};
pub use gate::Gate;
