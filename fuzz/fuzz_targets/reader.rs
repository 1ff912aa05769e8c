#![no_main]
//! `Reader` (streaming, whole and a few bytes per read) and `Messages`
//! (borrowed) yield the same messages and errors.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::reader(data);
});
