#![no_main]
//! `MessageBuilder::from_message`: build -> parse -> build is the identity.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hl7_core_fuzz::builder_roundtrip(data);
});
