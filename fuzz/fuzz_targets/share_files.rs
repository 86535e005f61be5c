//! Arbitrary bytes as a share group's snapshot and journal, opened twice, then used.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| harness::scratch_dir("share_files"));
    harness::share_files(scratch, data);
});
