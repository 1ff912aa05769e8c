#![no_main]
//! `str::parse::<Path>`; what parses prints back to the same `Path`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::path(data);
});
