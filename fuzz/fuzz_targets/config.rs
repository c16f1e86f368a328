//! Arbitrary text into `Config::from_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| factwal_fuzz::config::check(data));
