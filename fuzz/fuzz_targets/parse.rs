#![no_main]
//! `Message::parse` / `parse_with`: never panics, lossless, accessors agree.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::parse(data);
});
