//! Arbitrary bytes as a `ProduceRequest`, decoded and prepared as the server does.
#![no_main]

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = harness::scratch_dir("produce");
    harness::produce(&scratch, data)
});
