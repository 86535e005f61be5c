//! A fuzzed sealed segment in front of a valid active one, after a clean shutdown: read
//! through the read-only open path, which must never write.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

use harness::SealedTemplate;

/// The template log is built once per process; each run copies it.
static SETUP: OnceLock<(PathBuf, SealedTemplate)> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (scratch, template) = SETUP.get_or_init(|| {
        let scratch = harness::scratch_dir("sealed_segment");
        let template = SealedTemplate::create(&scratch);
        (scratch, template)
    });
    template.run(scratch, data);
});
