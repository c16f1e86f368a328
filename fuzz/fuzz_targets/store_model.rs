//! Operations, crashes and I/O failures checked against a `BTreeMap` model.
#![no_main]

use factwal_fuzz::input::ScenarioInput;

libfuzzer_sys::fuzz_target!(|input: ScenarioInput| factwal_fuzz::store_model::run(&input.0));
