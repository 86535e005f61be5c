//! Arbitrary bytes as a topic's `topic.json`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| harness::scratch_dir("topic_json"));
    harness::topic_json(scratch, data);
});
