//! A fuzzed partition directory opened, read whole, searched by time and appended to.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| harness::scratch_dir("recovery"));
    harness::recovery(scratch, data);
});
