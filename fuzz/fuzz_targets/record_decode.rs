//! Arbitrary bytes into the segment header, record and payload decoders.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| factwal_fuzz::record_decode::check(data));
