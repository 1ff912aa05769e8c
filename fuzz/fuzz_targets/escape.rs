#![no_main]
//! `escape::decode` on any text; `decode(encode(s)) == s`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::escape(data);
});
