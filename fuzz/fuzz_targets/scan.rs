#![no_main]
//! The SIMD structural index, through the public API: every element of
//! `MSH|^~\&|` + data agrees with a byte-by-byte split.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::scan(data);
});
