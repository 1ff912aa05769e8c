//! What other HL7 parsers get wrong, each as a named test. See the table in
//! DOMAIN.md ("How today's parsers fail on edge cases").

use hl7_core::{ErrorKind, Limits, Message, Messages, ParseOptions, Reader, WarningKind};

fn get(msg: &Message<'_>, path: &str) -> Option<String> {
    msg.get(&path.parse().unwrap()).and_then(|e| e.value()).map(|v| v.into_owned())
}

#[test]
fn lf_only_separators_are_segments_not_one_long_msh() {
    let msg = Message::parse(b"MSH|^~\\&|A|B|C|D|||ORU^R01|1|P|2.5.1\nPID|1||PAT1||DOE^JANE\nOBX|1|NM|X||95").unwrap();
    assert_eq!(msg.segment_count(), 3);
    assert_eq!(get(&msg, "MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("DOE"));
    assert_eq!(get(&msg, "OBX-5").as_deref(), Some("95"));
}

const CONTINUATION: &[u8] =
    b"MSH|^~\\&|A|||||||M1|P|2.5.1\rPID|1\rNTE|1||first line\nsecond line of the note\rOBX|1|NM|X||5\r\
MSH|^~\\&|A|||||||M2|P|2.5.1\rPID|2\r";

#[test]
fn lf_inside_field_text_fails_only_its_message_by_default() {
    let results: Vec<_> = Messages::new(CONTINUATION).collect();
    assert_eq!(results.len(), 2);
    let err = results[0].as_ref().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidSegmentName));
    assert_eq!(err.offset(), 52, "the error names the stray line");
    assert_eq!(err.line_col(CONTINUATION), (4, 1));
    assert_eq!(results[1].as_ref().unwrap().control_id().unwrap(), "M2");
}

#[test]
fn lf_inside_field_text_is_joined_with_a_warning_when_asked() {
    let mut opts = ParseOptions::new();
    opts.join_continuation_lines(true);
    let msgs: Vec<_> = Messages::with_options(CONTINUATION, opts).collect::<Result<_, _>>().unwrap();
    let m = &msgs[0];
    assert_eq!(get(m, "NTE-3").as_deref(), Some("first line\nsecond line of the note"));
    assert_eq!(get(m, "OBX-5").as_deref(), Some("5"));
    assert_eq!(m.warnings().len(), 1);
    assert_eq!(m.warnings()[0].kind(), &WarningKind::JoinedLine);
    assert_eq!(m.warnings()[0].to_string(), "line joined to the previous segment at byte 52 (NTE)");
}

#[test]
fn msh2_with_truncation_character_and_v251_is_not_shifted() {
    // As NIST's LOI/LRI test messages send it.
    let msg = Message::parse(b"MSH|^~\\&#|NIST Test Lab APP|NIST Lab Facility||NIST EHR Facility|20110531140551-0500||ORU^R01^ORU_R01|NIST-LRI-GU-001.00|T|2.5.1\r").unwrap();
    assert_eq!(get(&msg, "MSH-2").as_deref(), Some("^~\\&#"));
    assert_eq!(get(&msg, "MSH-3").as_deref(), Some("NIST Test Lab APP"));
    assert_eq!(get(&msg, "MSH-9-3").as_deref(), Some("ORU_R01"));
    assert_eq!(get(&msg, "MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(msg.delimiters().truncation, Some(b'#'));
}

#[test]
fn hex_escape_is_utf8_bytes_in_a_utf8_message_not_latin1() {
    let msg = Message::parse(b"MSH|^~\\&|A\rPID|1||||JOS\\XC3A9\\").unwrap();
    assert_eq!(get(&msg, "PID-5").as_deref(), Some("JOSé"));
}

#[test]
fn unknown_escape_and_stray_backslash_keep_the_text_after_them() {
    let msg = Message::parse(b"MSH|^~\\&|A\rNTE|1||x\\Zfoo\\y bad\\escape").unwrap();
    assert_eq!(get(&msg, "NTE-3").as_deref(), Some("x\\Zfoo\\y bad\\escape"));
}

#[test]
fn query_for_an_absent_segment_is_none_not_a_panic() {
    let msg = Message::parse(b"MSH|^~\\&|A\rPID|1").unwrap();
    for p in ["NTE-3", "NTE(2)-3-1-1", "PID(2)-1", "PID-99", "PID-1(9)", "PID-1-9", "PID-1-1-9", "ZZZ"] {
        assert_eq!(get(&msg, p), None, "{p}");
    }
    assert!(msg.segment("OBX").is_none());
    assert!(msg.msh().field(0).is_none());
}

#[test]
fn batch_count_mismatch_is_a_warning_with_both_numbers() {
    let file = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A|||||||M1\rMSH|^~\\&|A|||||||M2\rBTS|3\rFTS|1\r";
    let mut messages = Messages::new(file);
    let ids: Vec<String> = messages.by_ref().map(|m| m.unwrap().control_id().unwrap().into_owned()).collect();
    assert_eq!(ids, ["M1", "M2"]);
    let w = &messages.warnings()[0];
    assert_eq!(w.kind(), &WarningKind::CountMismatch { segment: "BTS", declared: 3, actual: 2 });
    assert_eq!(w.to_string(), "BTS-1 says 3 but 2 were read at byte 58");
    assert_eq!(messages.warnings().len(), 1, "FTS-1 = 1 agrees");
}

fn big_pdf_message(payload: usize) -> Vec<u8> {
    let mut m = b"MSH|^~\\&|LAB|||||||PDF1|P|2.5.1\rPID|1\rOBX|1|ED|PDF^Report||^application^pdf^Base64^".to_vec();
    m.extend(std::iter::repeat_n(b'A', payload));
    m.extend_from_slice(b"|||||F\rNTE|1||after\r");
    m
}

#[test]
fn ten_megabyte_base64_pdf_in_obx5_parses_and_streams() {
    // Linear time is measured by the benches; here the value must come out
    // whole through the slice parser and through a reader fed 4 KiB at a time.
    let data = big_pdf_message(10 << 20);
    let msg = Message::parse(&data).unwrap();
    assert_eq!(msg.get(&"OBX-5-5".parse().unwrap()).unwrap().raw().len(), 10 << 20);
    assert_eq!(get(&msg, "NTE-3").as_deref(), Some("after"));
    struct Chunks<'a>(&'a [u8]);
    impl std::io::Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = 4096.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let msgs: Vec<_> = Reader::new(Chunks(&data)).collect::<Result<_, _>>().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get(&"OBX-5-5".parse().unwrap()).unwrap().raw().len(), 10 << 20);
}

#[test]
fn oversized_message_is_skipped_in_bounded_memory_and_the_next_one_still_comes_out() {
    // A message of 8 MiB of '|' after its MSH, then a good one; limit 1 MiB.
    struct Flood {
        head: Vec<u8>,
        flood: usize,
        tail: Vec<u8>,
    }
    impl std::io::Read for Flood {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if !self.head.is_empty() {
                let n = buf.len().min(self.head.len());
                buf[..n].copy_from_slice(&self.head[..n]);
                self.head.drain(..n);
                return Ok(n);
            }
            if self.flood > 0 {
                let n = buf.len().min(self.flood);
                buf[..n].fill(b'|');
                self.flood -= n;
                return Ok(n);
            }
            let n = buf.len().min(self.tail.len());
            buf[..n].copy_from_slice(&self.tail[..n]);
            self.tail.drain(..n);
            Ok(n)
        }
    }
    let mut opts = ParseOptions::new();
    opts.limits(Limits { max_message_bytes: 1 << 20, ..Limits::default() });
    let src = Flood {
        head: b"MSH|^~\\&|A|||||||BIG\rZZZ".to_vec(),
        flood: 8 << 20,
        tail: b"\rMSH|^~\\&|A|||||||OK\r".to_vec(),
    };
    let results: Vec<_> = Reader::with_options(src, opts).collect();
    assert_eq!(results.len(), 2);
    let err = results[0].as_ref().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::MessageTooLarge(1048576)));
    assert_eq!(err.to_string(), "message larger than the limit of 1048576 bytes at byte 1048576");
    assert_eq!(results[1].as_ref().unwrap().control_id().unwrap(), "OK");
}

#[test]
fn millions_of_delimiters_are_limited_not_a_hang() {
    let mut data = b"MSH|^~\\&|A\rZZZ|".to_vec();
    data.extend(std::iter::repeat_n(b'|', 2_000_000));
    let err = Message::parse(&data).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::TooManyFields(10_000)));
    assert_eq!(err.path().unwrap().to_string(), "ZZZ");

    let mut data = b"MSH|^~\\&|A\rZZZ|".to_vec();
    data.extend(std::iter::repeat_n(b'~', 50_000));
    let err = Message::parse(&data).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::TooManyRepetitions(10_000)));
    assert_eq!(err.path().unwrap().to_string(), "ZZZ-1");

    // deep nesting of components and subcomponents is just data
    let mut data = b"MSH|^~\\&|A\rZZZ|".to_vec();
    data.extend(b"^&".repeat(1_000_000));
    let msg = Message::parse(&data).unwrap();
    assert_eq!(msg.segment("ZZZ").unwrap().field(1).unwrap().repetition(1).unwrap().components().count(), 1_000_001);

    let mut opts = ParseOptions::new();
    opts.limits(Limits { max_segments: 3, ..Limits::default() });
    let err = Message::parse_with(b"MSH|^~\\&\rA01\rA02\rA03\r", &opts).unwrap_err();
    assert_eq!(err.to_string(), "more than 3 segments at byte 17");
}

#[test]
fn latin1_message_comes_out_as_utf8_and_writes_back_as_latin1() {
    let input = b"MSH|^~\\&|A|||||||C1|P|2.5.1||||||8859/1\rPID|1||||M\xdcLLER^J\xd6RG\rNTE|1||\\XE9\\t\xe9\r";
    let msg = Message::parse(input).unwrap();
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("MÜLLER"));
    assert_eq!(get(&msg, "NTE-3").as_deref(), Some("été"));
    assert_eq!(msg.to_bytes().as_ref(), input);
}

#[test]
fn undecodable_bytes_are_an_error_naming_offset_and_path_unless_lenient() {
    let input = b"MSH|^~\\&|A\rPID|1||||DO\xffE\r";
    let err = Message::parse(input).unwrap_err();
    assert_eq!(err.to_string(), "byte sequence not valid in UTF-8 at byte 22 (PID-5)");
    let mut opts = ParseOptions::new();
    opts.lenient_decoding(true);
    let msg = Message::parse_with(input, &opts).unwrap();
    assert_eq!(get(&msg, "PID-5").as_deref(), Some("DO\u{fffd}E"));
    assert_eq!(msg.warnings()[0].kind(), &WarningKind::Replaced);
}

#[test]
fn empty_absent_and_null_are_three_different_things() {
    let msg = Message::parse(b"MSH|^~\\&|A\rPID|1||\"\"|").unwrap();
    let pid = msg.segment("PID").unwrap();
    assert!(pid.field(2).unwrap().is_empty());
    assert!(pid.field(3).unwrap().is_null());
    assert!(pid.field(4).unwrap().is_empty());
    assert!(pid.field(5).is_none());
}

#[test]
fn messages_and_reader_give_the_same_events_for_a_batch_with_a_wrong_count() {
    let file: &[u8] = b"BHS|^~\\&\rMSH|^~\\&|A|||||||M1\rBTS|2\r";
    let names = |events: Vec<hl7_core::Event<'_>>| -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                hl7_core::Event::Message(_) => "message".to_owned(),
                hl7_core::Event::Envelope(env) => env.name().to_owned(),
                hl7_core::Event::Warning(w) => w.to_string(),
                _ => "other".to_owned(),
            })
            .collect()
    };
    let mut m = Messages::new(file);
    let borrowed = names(std::iter::from_fn(|| m.next_event()).collect());
    let mut r = Reader::new(file);
    let streamed = names(std::iter::from_fn(|| r.next_event()).collect());
    assert_eq!(borrowed, ["BHS", "message", "BTS", "BTS-1 says 2 but 1 were read at byte 29"]);
    assert_eq!(borrowed, streamed);
}
