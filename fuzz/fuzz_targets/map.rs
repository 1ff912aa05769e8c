#![no_main]
//! Profile-driven mapping: every base profile maps any message without panicking, and what it writes back parses.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::map(data);
});
