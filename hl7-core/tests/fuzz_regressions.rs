//! Inputs the fuzz targets in `fuzz/` found (or that writing them turned up),
//! each as a named test asserting the right behaviour. Reproduce a target's
//! crash with `cd fuzz && cargo +nightly fuzz run -a TARGET FILE`.

use std::io::Read;

use hl7_core::{Charset, ErrorKind, Event, Limits, Message, Messages, ParseOptions, Reader};

/// A message whose MSH-18 is `label` and whose NTE-3 is `nte3`, raw.
fn with_charset(label: &str, nte3: &[u8]) -> Vec<u8> {
    let mut v = format!("MSH|^~\\&|LAB||EHR||20240102||ORU^R01|M1|P|2.5.1||||||{label}\rNTE|1||").into_bytes();
    v.extend_from_slice(nte3);
    v.push(b'\r');
    v
}

fn lenient() -> ParseOptions {
    let mut opts = ParseOptions::new();
    opts.lenient_decoding(true);
    opts
}

/// fuzz `parse`: with lenient decoding, two invalid bytes became two U+FFFD
/// (six bytes) and every offset after them was counted in the decoded text,
/// past the end of the 15-byte input.
#[test]
fn lenient_decoding_keeps_offsets_in_the_input() {
    let input: &[u8] = b"MSH|^~\\&|\xbc\xb3\rMSH";
    let err = Message::parse_with(input, &lenient()).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::UnexpectedSegment(name) if name == "MSH"), "{err}");
    assert_eq!(err.offset(), 12, "the second MSH starts at byte 12");

    let input: &[u8] = b"MSH|^~\\&|A\xff\rPID|1";
    let msg = Message::parse_with(input, &lenient()).unwrap();
    assert_eq!(msg.warnings()[0].offset(), 10);
    let pid = msg.segment("PID").unwrap();
    assert_eq!(pid.offset(), 12);
    assert_eq!(pid.field(1).unwrap().offset(), 16);
}

/// fuzz `parse` (after the fix above): with a UTF-8 byte order mark and a
/// replaced byte, `to_bytes()` wrote the input back without its BOM.
#[test]
fn lenient_decoding_keeps_the_byte_order_mark() {
    let input: &[u8] = b"\xef\xbb\xbfMSH|^~\\&|\xff";
    let msg = Message::parse_with(input, &lenient()).unwrap();
    assert_eq!(msg.to_bytes().as_ref(), input);
    assert_eq!(msg.warnings()[0].offset(), 12);
}

/// fuzz `parse`: Big5, Shift_JIS and EUC-JP decoders accept byte pairs
/// (HKSCS, NEC/IBM extensions, JIS X 0212) that their encoders write
/// differently or not at all, so `to_bytes()` was not the input ("the parse
/// is lossless") and offsets after such a character were wrong: the second
/// input reported "invalid segment name at byte 40" in 35 bytes.
#[test]
fn multibyte_charsets_write_back_byte_for_byte() {
    let found: &[u8] = b"MSH|^~\\&||||||||||||||||BIG5|\x9aF";
    let msg = Message::parse(found).unwrap();
    assert_eq!(msg.to_bytes().as_ref(), found);

    let found: &[u8] = b"MSH|^~\\&||||||||||||P||||BIG5^0\x9aF\r~";
    let err = Message::parse(found).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidSegmentName), "{err}");
    assert_eq!(err.offset(), 34, "the line `~` starts at byte 34");

    for (label, bytes) in [("BIG-5", &b"\x8e\x69"[..]), ("Shift_JIS", b"\xed\x40"), ("EUC-JP", b"\x8f\xa2\xb7")] {
        let input = with_charset(label, bytes);
        match Message::parse(&input) {
            Ok(msg) => assert_eq!(msg.to_bytes().as_ref(), &input[..], "{label}"),
            // refusing what cannot be written back is fine too, naming the bytes
            Err(e) => {
                let at = (input.len() - 1 - bytes.len()) as u64;
                assert!(matches!(e.kind(), ErrorKind::InvalidCharacter(_)) && e.offset() == at, "{label}: {e}");
            }
        }
    }
}

/// Found while writing the `parse` target: ISO-2022-JP text is 7-bit, and
/// `Charset::decode` returns any all-ASCII input as it is, so the escape
/// sequences stayed in the text (`\x1b$B0!\x1b(B` instead of 亜: silent
/// mojibake) and `to_bytes()` wrote `&#65533;` for each ESC.
#[test]
fn iso_2022_jp_text_is_decoded_or_refused() {
    let input = with_charset("ISO-2022-JP", b"\x1b$B0!\x1b(B");
    match Message::parse(&input) {
        Ok(msg) => {
            assert_eq!(msg.get(&"NTE-3".parse().unwrap()).unwrap().decoded(), "\u{4e9c}");
            assert_eq!(msg.to_bytes().as_ref(), &input[..]);
        }
        Err(e) => assert!(matches!(e.kind(), ErrorKind::UnsupportedCharset(_)), "{e}"),
    }
    let jis = Charset::from_hl7("ISO-2022-JP");
    assert!(jis.is_none_or(|c| c.decode(b"\x1b$B0!\x1b(B").is_ok_and(|t| t == "\u{4e9c}")));
}

fn limited(max: usize) -> ParseOptions {
    let mut opts = ParseOptions::new();
    opts.limits(Limits { max_message_bytes: max, ..Limits::default() });
    opts
}

/// Hands out its bytes one per read, as a slow socket does.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((&b, rest)) = self.0.split_first() else { return Ok(0) };
        match buf.first_mut() {
            Some(slot) => *slot = b,
            None => return Ok(0),
        }
        self.0 = rest;
        Ok(1)
    }
}

/// A summary of every event: `M`essage, `E`rror, en`V`elope, `W`arning.
fn kinds<'a>(events: impl Iterator<Item = Event<'a>>) -> Vec<String> {
    events
        .map(|ev| match ev {
            Event::Message(m) => format!("M {}", m.control_id().unwrap_or_default()),
            Event::Invalid(e) => format!("E {e}"),
            Event::Envelope(env) => format!("V {}", env.name()),
            Event::Warning(w) => format!("W {w}"),
            _ => "?".to_owned(),
        })
        .collect()
}

/// fuzz `reader`: an unterminated FHS line longer than `max_message_bytes`
/// came out of `Reader` as "message larger than the limit" (counted as a
/// message) while `Messages` gave the envelope segment.
#[test]
fn reader_applies_the_size_limit_to_messages_only() {
    let input: &[u8] = b"FHS||^~S|\x0b\x00\x00\x00\x00\x00\x00\x00";
    let mut borrowed = Messages::with_options(input, limited(16));
    let expected = kinds(std::iter::from_fn(|| borrowed.next_event()));
    assert_eq!(expected, ["V FHS"]);
    let mut reader = Reader::with_options(input, limited(16));
    assert_eq!(kinds(std::iter::from_fn(|| reader.next_event())), expected);
}

/// fuzz `reader`: a message that fits the limit failed as too large when a
/// read ended inside the next segment's name (`\rMS`), because the bytes
/// read ahead to find the boundary were counted as part of the message.
#[test]
fn reader_applies_the_size_limit_to_messages_only_not_to_the_next_line() {
    let input: &[u8] = b"MSH|^~\\&|A|||||||M1\rMSH|^~\\&|B|||||||M2\r";
    let max = 20; // each message is exactly 20 bytes
    let expected = kinds(Messages::with_options(input, limited(max)).map(|r| match r {
        Ok(m) => Event::Message(m),
        Err(e) => Event::Invalid(e),
    }));
    assert_eq!(expected, ["M M1", "M M2"]);
    let mut reader = Reader::with_options(OneByte(input), limited(max));
    assert_eq!(kinds(std::iter::from_fn(|| reader.next_event())), expected);
}
