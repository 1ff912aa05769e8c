//! Shared checks for the fuzz targets, so each target stays a few lines.
//!
//! Every check asserts a property the crate documents (the parse is lossless,
//! random access agrees with iteration, build -> parse -> build is identity,
//! ...), not merely "does not panic": a fuzzer only finds what is asserted.

use std::io::Read;

use hl7_core::builder::MessageBuilder;
use hl7_core::{Charset, Delimiters, Error, Event, Limits, Message, Messages, ParseOptions, Path, Reader};

/// At most 60 characters of `s`, for assertion messages.
fn short(s: &str) -> &str {
    s.char_indices().nth(60).map_or(s, |(i, _)| &s[..i])
}

/// Random access (`field(n)`, `component(n)`, ...) rescans from the start, so
/// it is only compared with iteration for the first children, to keep the
/// check linear on inputs with thousands of fields.
const RANDOM_ACCESS: usize = 64;

/// Touches every accessor of a parsed message and checks they agree.
/// Offsets are left to [`check_offsets`]: on a message decoded from another
/// character set each `offset()` re-encodes the text before the element.
pub fn touch(msg: &Message<'_>) {
    let _ = (msg.control_id(), msg.version(), msg.message_type(), msg.charset().name(), format!("{msg:?}"));
    let _ = msg.delimiters().to_string();
    for w in msg.warnings() {
        let _ = (w.to_string(), w.offset(), w.path());
    }
    assert!(msg.segment_count() > 0, "a parsed message has an MSH");
    assert_eq!(msg.msh().name(), "MSH");
    for seg in msg.segments() {
        let _ = format!("{seg:?}");
        // by path only for the first segments: seg.path() and get() count from the start
        let by_path = seg.index() < RANDOM_ACCESS;
        let path = if by_path { seg.path() } else { Path::new(seg.name()).expect("a parsed segment name") };
        if by_path {
            let back = msg.get(&path).expect("a segment's own path resolves");
            assert_eq!(back.raw(), seg.raw(), "get({path}) is the segment");
        }
        let mut count = 0;
        for (i, f) in seg.fields().enumerate() {
            count += 1;
            let n = i + 1;
            let _ = (f.decoded(), f.is_null(), f.is_empty(), format!("{f:?}"));
            if i < RANDOM_ACCESS {
                assert_eq!(seg.field(n).map(|g| g.raw()), Some(f.raw()), "{path}: field({n})");
            }
            if i < RANDOM_ACCESS && by_path {
                if let Ok(p) = path.clone().with_field(n as u32) {
                    let e = msg.get(&p).expect("a field's path resolves");
                    assert_eq!(Some(e.raw()), f.repetition(1).map(|r| r.raw()), "get({p})");
                    let _ = e.value();
                }
            }
            for (ri, r) in f.repetitions().enumerate() {
                if ri < RANDOM_ACCESS {
                    assert_eq!(f.repetition(ri + 1).map(|x| x.raw()), Some(r.raw()), "{path}-{n}: repetition");
                }
                for (ci, c) in r.components().enumerate() {
                    if ci < RANDOM_ACCESS {
                        assert_eq!(r.component(ci + 1).map(|x| x.raw()), Some(c.raw()), "{path}-{n}: component");
                    }
                    for (si, s) in c.subcomponents().enumerate() {
                        if si < RANDOM_ACCESS {
                            assert_eq!(c.subcomponent(si + 1).map(|x| x.raw()), Some(s.raw()), "{path}-{n}: sub");
                        }
                        let _ = s.decoded();
                    }
                }
            }
        }
        assert_eq!(seg.field_count(), count);
        assert!(seg.field(count + 1).is_none(), "{path}: field past the last");
        assert!(seg.field(0).is_none());
    }
    let owned = msg.clone().into_owned();
    assert_eq!(owned.to_bytes(), msg.to_bytes());
}

/// Touches an error: its message, location and line/column in `input`.
pub fn touch_error(err: &Error, input: &[u8]) {
    let _ = (err.to_string(), err.path(), err.hl7_error_code(), format!("{err:?}"), err.line_col(input));
    assert!(err.offset() <= input.len() as u64, "error offset {} past the input ({})", err.offset(), input.len());
}

/// Checks that every segment and field of a UTF-8 message names its own
/// bytes in `input` with its `offset()` (an element holding a replaced byte
/// names where it starts); for other character sets, that the first
/// segments start at a line of the input with their name.
pub fn check_offsets(msg: &Message<'_>, input: &[u8]) {
    if !msg.charset().is_utf8() {
        // offset() decodes the input up to the element: keep this bounded
        for seg in msg.segments().take(8) {
            let off = seg.offset() as usize;
            assert!(off <= input.len(), "segment offset {off} past the input");
            if msg.charset().name() != "ISO-2022-JP" {
                assert!(input[off..].starts_with(seg.name().as_bytes()), "segment {} at {off}", seg.name());
            }
        }
        return;
    }
    let at = |off: u64, raw: &str| {
        let off = off as usize;
        let exact = input.get(off..off + raw.len()) == Some(raw.as_bytes());
        let (head, _) = raw.split_once('\u{fffd}').unwrap_or((raw, ""));
        let repaired = raw.contains('\u{fffd}') && input.get(off..).is_some_and(|i| i.starts_with(head.as_bytes()));
        assert!(exact || repaired, "offset {off} of {:?}", short(raw));
    };
    for seg in msg.segments() {
        at(seg.offset(), seg.raw());
        for f in seg.fields().take(RANDOM_ACCESS) {
            at(f.offset(), f.raw());
        }
    }
}

/// The `parse` target: every option is lossless and names the right bytes;
/// the default parse splits like a naive split with the message's own
/// delimiters. Each option only changes the outcome of an input the
/// stricter one rejected, so an input is parsed again only when the previous
/// parse failed.
pub fn parse(data: &[u8]) {
    let mut opts = ParseOptions::new();
    for step in 0..3 {
        match step {
            1 => opts.join_continuation_lines(true),
            2 => opts.lenient_decoding(true),
            _ => &mut opts,
        };
        match Message::parse_with(data, &opts) {
            Ok(msg) => {
                assert_eq!(msg.to_bytes().as_ref(), data, "the parse is lossless");
                check_offsets(&msg, data);
                if step == 0 {
                    check_index(&msg); // joined lines hold line breaks, so only here
                }
                touch(&msg);
                return;
            }
            Err(e) => touch_error(&e, data),
        }
    }
}

/// A reader that hands out its bytes a few at a time, so [`Reader`] meets
/// every boundary (a segment name, a CRLF, a BOM) cut between two reads.
#[derive(Debug)]
pub struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl<'a> Trickle<'a> {
    /// Hands out `data` at most `step` bytes per read.
    pub fn new(data: &'a [u8], step: usize) -> Trickle<'a> {
        Trickle { data, step: step.max(1) }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What a stream of events says about its messages, for comparing readers:
/// each message's bytes or each error's text.
fn outcomes<'a>(events: impl Iterator<Item = Event<'a>>, input: &[u8]) -> Vec<Result<Vec<u8>, String>> {
    let mut out = Vec::new();
    for ev in events {
        match ev {
            Event::Message(m) => out.push(Ok(m.to_bytes().into_owned())),
            Event::Invalid(e) => {
                touch_error(&e, input);
                out.push(Err(e.to_string()));
            }
            Event::Envelope(env) => {
                let _ = (env.name(), env.text(), env.offset(), env.field(1), env.field(2));
            }
            Event::Warning(w) => {
                let _ = w.to_string();
            }
            _ => {}
        }
    }
    out
}

/// The `reader` target: the streaming [`Reader`] (whole, and a few bytes per
/// read) and the borrowing [`Messages`] yield the same messages and errors,
/// with default limits and with a small `max_message_bytes` taken from the
/// last input byte (so oversized messages are skipped mid-stream).
pub fn reader(data: &[u8]) {
    let step = 1 + data.first().map_or(0, |b| (b % 7) as usize);
    let small = Limits { max_message_bytes: 16 + data.last().map_or(0, |&b| b as usize), ..Limits::default() };
    let mut limited = ParseOptions::new();
    limited.limits(small);
    for opts in [ParseOptions::new(), limited] {
        let max = opts.get_limits().max_message_bytes;
        let mut borrowed = Messages::with_options(data, opts.clone());
        let expected = outcomes(std::iter::from_fn(|| borrowed.next_event()), data);
        let mut whole = Reader::with_options(data, opts.clone());
        let got = outcomes(std::iter::from_fn(|| whole.next_event()), data);
        assert_eq!(got, expected, "Reader vs Messages, max {max}");
        assert_eq!(whole.warnings().len(), borrowed.warnings().len(), "batch count warnings");
        let mut trickle = Reader::with_options(Trickle::new(data, step), opts);
        let got = outcomes(std::iter::from_fn(|| trickle.next_event()), data);
        assert_eq!(got, expected, "Reader({step} B/read) vs Messages, max {max}");
        assert_eq!(trickle.warnings().len(), borrowed.warnings().len(), "batch count warnings");
    }
}

/// The `escape` target: decoding never panics, and encode -> decode is the
/// identity for the default delimiters and for v2.7's five.
pub fn escape(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let d = Delimiters::default();
    let _ = hl7_core::escape::decode(s, &d, Charset::UTF_8);
    assert_eq!(hl7_core::escape::decode(&hl7_core::escape::encode(s, &d), &d, Charset::UTF_8), s);
    let d5 = Delimiters { truncation: Some(b'#'), ..d };
    let e = hl7_core::escape::encode(s, &d5);
    assert!(!e.contains(['|', '^', '~', '&', '#', '\r', '\n']), "an encoded value never splits anything");
    assert_eq!(hl7_core::escape::decode(&e, &d5, Charset::UTF_8), s);
    let _ = hl7_core::escape::decode(s, &d5, Charset::from_hl7("8859/1").expect("a known label"));
}

/// The `path` target: whatever parses prints back to itself.
pub fn path(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match s.parse::<Path>() {
        Ok(p) => {
            assert_eq!(p.to_string().parse::<Path>(), Ok(p.clone()), "{s:?} -> {p}");
            let _ = (p.to_erl(b'^', b'&'), p.segment(), p.occurrence(), p.field(), p.repetition());
        }
        Err(e) => assert_eq!(e.input(), s),
    }
}

/// The `builder_roundtrip` target: for any message that parses (leniently,
/// so joined lines put line breaks inside values), build -> parse -> build is
/// the identity. The built text is a Rust `String`, so it is parsed back as
/// UTF-8 whatever MSH-18 says.
pub fn builder_roundtrip(data: &[u8]) {
    let mut lenient = ParseOptions::new();
    lenient.join_continuation_lines(true).lenient_decoding(true);
    let Ok(msg) = Message::parse_with(data, &lenient) else { return };
    let text = MessageBuilder::from_message(&msg).build();
    let mut utf8 = ParseOptions::new();
    utf8.force_charset(Charset::UTF_8);
    let reparsed = match Message::parse_with(text.as_bytes(), &utf8) {
        Ok(m) => m,
        Err(e) => panic!("built text does not parse: {e}: {:?}", short(&text)),
    };
    assert_eq!(reparsed.segment_count(), msg.segment_count(), "{:?}", short(&text));
    assert_eq!(MessageBuilder::from_message(&reparsed).build(), text);
}

/// The `scan` target: checks the structural index (AVX2 or SWAR) against a
/// byte-by-byte split of the text. `data` goes after a fixed MSH-1/MSH-2 so
/// every input reaches the index; the split must find the same segments,
/// fields, repetitions, components and subcomponents.
pub fn scan(data: &[u8]) {
    let mut input = b"MSH|^~\\&|".to_vec();
    input.extend_from_slice(data);
    let Ok(msg) = Message::parse(&input) else { return };
    check_index(&msg);
}

/// Compares every element of `msg` with a naive split of its text.
pub fn check_index(msg: &Message<'_>) {
    let d = msg.delimiters();
    let text = msg.as_str();
    let lines: Vec<&str> = text.split(['\r', '\n']).filter(|l| !l.bytes().all(|b| b == b' ' || b == b'\t')).collect();
    let segs: Vec<&str> = msg.segments().map(|s| s.raw()).collect();
    assert_eq!(segs, lines, "segments");
    let [fs, rs, cs, ss] = [d.field, d.repetition, d.component, d.subcomponent].map(char::from);
    for seg in msg.segments() {
        let line = seg.raw();
        let mut want: Vec<&str> = line.split(fs).skip(1).collect();
        let deep = if seg.index() == 0 {
            // MSH-1 is the separator itself; MSH-2 holds the delimiters as data.
            want.insert(0, &line[3..4]);
            2
        } else {
            0
        };
        let got: Vec<&str> = seg.fields().map(|f| f.raw()).collect();
        assert_eq!(got, want, "fields of {:?}", short(line));
        for f in seg.fields().skip(deep) {
            let want: Vec<Vec<Vec<&str>>> =
                f.raw().split(rs).map(|r| r.split(cs).map(|c| c.split(ss).collect()).collect()).collect();
            let got: Vec<Vec<Vec<&str>>> = f
                .repetitions()
                .map(|r| r.components().map(|c| c.subcomponents().map(|s| s.raw()).collect()).collect())
                .collect();
            assert_eq!(got, want, "split of {:?}", short(f.raw()));
        }
    }
}

/// `map`: each base profile maps the message to the contract and back.
/// Mapping never panics; a mapped contract survives its own JSON (what
/// `labbridge map` prints reads back as the same value); what a profile
/// writes back is HL7 that parses and maps again. (That the second mapping
/// equals the first is checked by the property tests, the sub-group tests
/// and `profile check`. On malformed input the writer normalizes what the
/// dialect fixes — set IDs are renumbered, an order group without an ORC
/// gets one — so such a sample is reported as not round-tripping.)
pub fn map(data: &[u8]) {
    use hl7_core::contract::{Contract, LabOrder, LabResult};
    use hl7_core::profile::Profile;
    static PROFILES: std::sync::OnceLock<Vec<Profile>> = std::sync::OnceLock::new();
    let profiles = PROFILES
        .get_or_init(|| hl7_core::profile::builtin_names().map(|n| Profile::load(n).expect("base profile")).collect());
    let Ok(msg) = Message::parse(data) else { return };
    for p in profiles {
        let mapped = p.map_message(&msg);
        if !mapped.problems.is_empty() {
            continue;
        }
        // What the CLI prints is what a reader of that JSON gets back.
        let json = serde_json::to_string(&mapped.value).expect("a contract serializes");
        let written = match &mapped.value {
            Contract::Order(o) => {
                let back: LabOrder = serde_json::from_str(&json).expect("a mapped order deserializes");
                assert_eq!(&back, o, "an order survives JSON");
                p.order_to_hl7(o)
            }
            Contract::Result(r) => {
                let back: LabResult = serde_json::from_str(&json).expect("a mapped result deserializes");
                assert_eq!(&back, r, "a result survives JSON");
                p.result_to_hl7(r)
            }
        };
        if let Ok(text) = written {
            let back = Message::parse(text.as_bytes()).expect("what a profile writes parses");
            let _ = p.map_message(&back);
        }
    }
}
