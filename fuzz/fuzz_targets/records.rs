//! Arbitrary bytes as one stored record batch: header checks and record decoding.
#![no_main]

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::records(data));
