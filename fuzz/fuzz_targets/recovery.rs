//! Crafted segment files opened read-only, read-write, and again.
#![no_main]

use factwal_fuzz::input::CraftedInput;

libfuzzer_sys::fuzz_target!(|input: CraftedInput| factwal_fuzz::recovery::run(&input.0));
