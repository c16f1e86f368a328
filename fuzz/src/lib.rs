//! Fuzz targets for factwal: see `docs/FUZZING.md`.
//!
//! Each target's checks live in a module of its own (`record_decode`,
//! `recovery`, `store_model`, `config`), written against factwal's public
//! API with `std` and `tempfile` only, so that `tests/fuzz_regressions.rs`
//! can include the very same code to replay a crash. Only `input` (the
//! `Arbitrary` impls) needs the fuzzing crates.

pub mod config;
pub mod input;
pub mod record_decode;
pub mod recovery;
pub mod store_model;
pub mod support;
