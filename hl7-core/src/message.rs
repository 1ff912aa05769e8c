//! The upper layer: [`Message`] and its borrowed views.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use crate::charset::{lookup, Lookup};
use crate::delimiters::Delimiters;
use crate::error::{Error, ErrorKind, Warning, WarningKind};
use crate::path::{is_segment_name, Path};
use crate::scan::{self, Classes, Index};
use crate::Charset;

/// Limits on what one message may contain. Exceeding one is an error of its
/// own kind, never silent truncation. The structural index costs four bytes
/// per delimiter, so memory is bounded by a small multiple of
/// `max_message_bytes` whatever the input.
///
/// # Examples
///
/// ```
/// use hl7_core::{ErrorKind, Limits, Message, ParseOptions};
///
/// let mut opts = ParseOptions::default();
/// opts.limits(Limits { max_fields: 3, ..Limits::default() });
/// let err = Message::parse_with(b"MSH|^~\\&|A\rZZZ|1|2|3|4", &opts).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::TooManyFields(3)));
/// assert_eq!(err.to_string(), "more than 3 fields at byte 11 (ZZZ)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, in bytes (default 64 MiB: room for a base64 PDF).
    pub max_message_bytes: usize,
    /// Most segments in one message (default 100,000).
    pub max_segments: usize,
    /// Most fields in one segment (default 10,000).
    pub max_fields: usize,
    /// Most repetitions of one field (default 10,000).
    pub max_repetitions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_bytes: 64 << 20, max_segments: 100_000, max_fields: 10_000, max_repetitions: 10_000 }
    }
}

/// How to parse: limits, character set policy and leniency.
///
/// Setters take `&mut self` and return `&mut Self` so they chain.
///
/// # Examples
///
/// ```
/// use hl7_core::{Charset, Message, ParseOptions};
///
/// // a sender that labels Windows-1252 text as nothing at all
/// let mut opts = ParseOptions::default();
/// opts.default_charset(Charset::from_hl7("8859/1").unwrap());
/// let msg = Message::parse_with(b"MSH|^~\\&|A\rPID|1||||M\xdcLLER", &opts)?;
/// assert_eq!(msg.get(&"PID-5".parse()?).unwrap().decoded(), "MÜLLER");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    limits: Limits,
    default_charset: Option<Charset>,
    force_charset: Option<Charset>,
    lenient_decoding: bool,
    join_continuation_lines: bool,
}

impl ParseOptions {
    /// Default options: default limits, UTF-8 unless MSH-18 says otherwise,
    /// strict decoding, every CR, LF or CRLF ends a segment.
    pub fn new() -> ParseOptions {
        ParseOptions::default()
    }

    /// Sets the limits.
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// The character set used when a message has no MSH-18 (default UTF-8).
    pub fn default_charset(&mut self, charset: Charset) -> &mut Self {
        self.default_charset = Some(charset);
        self
    }

    /// A character set that overrides MSH-18, for a sender known to mislabel
    /// its messages. A UTF-8 byte order mark still wins.
    pub fn force_charset(&mut self, charset: Charset) -> &mut Self {
        self.force_charset = Some(charset);
        self
    }

    /// Replace undecodable bytes with U+FFFD (and add a warning) instead of
    /// failing the message.
    pub fn lenient_decoding(&mut self, yes: bool) -> &mut Self {
        self.lenient_decoding = yes;
        self
    }

    /// Join a line that cannot start a segment (a line break inside field
    /// text) to the segment before it, keeping the line break as data, and
    /// report a [`WarningKind::JoinedLine`]. Off by default: such a line
    /// fails its message with an error naming it.
    pub fn join_continuation_lines(&mut self, yes: bool) -> &mut Self {
        self.join_continuation_lines = yes;
        self
    }

    /// The configured limits.
    pub fn get_limits(&self) -> &Limits {
        &self.limits
    }
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    start: u32,
    end: u32,
    lo: u32,
    hi: u32,
}

/// One parsed HL7 v2 message.
///
/// The parse is flat and lossless: it keeps every byte of the input (writing
/// the message back gives the input byte for byte) and records where every
/// delimiter is, so reading any element is a slice of the input. For UTF-8
/// input nothing is copied; a message in another character set is decoded
/// once into UTF-8 text.
///
/// # Examples
///
/// ```
/// use hl7_core::Message;
///
/// let msg = Message::parse(b"MSH|^~\\&|LAB|FAC|EHR|CLINIC|20240102||ORU^R01|MSG1|P|2.5.1\r\
///                           PID|1||PAT001^^^LAB^MR||DOE^JANE\r\
///                           OBX|1|NM|2345-7^Glucose^LN||95|mg/dL\r\
///                           OBX|2|ST|NOTE||O\\S\\NEIL")?;
/// assert_eq!(msg.get(&"PID-5-2".parse()?).unwrap().raw(), "JANE");
/// let obx2 = msg.segments_named("OBX").nth(1).unwrap();
/// assert_eq!(obx2.field(5).unwrap().raw(), "O\\S\\NEIL");
/// assert_eq!(obx2.field(5).unwrap().decoded(), "O^NEIL");
/// assert!(msg.get(&"NTE-3".parse()?).is_none()); // absent, not a panic
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Message<'a> {
    text: Cow<'a, str>,
    /// Bytes before `text` in the input (a UTF-8 BOM).
    bom: bool,
    delims: Delimiters,
    charset: Charset,
    segs: Vec<Seg>,
    pos: Vec<u32>,
    warnings: Vec<Warning>,
    /// Offset of the message in the stream it was read from.
    base: u64,
    /// The input bytes, when `text` is not them (decoded from another
    /// character set, or repaired by lenient decoding): what is written back,
    /// and what offsets are counted in.
    source: Option<Cow<'a, [u8]>>,
    /// Where text and input positions correspond, built on first use.
    anchors: std::sync::OnceLock<Anchors>,
}

impl fmt::Debug for Message<'_> {
    /// Shows the shape of the message, never its content (which is PHI).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("bytes", &self.text.len())
            .field("segments", &self.segs.len())
            .field("delimiters", &self.delims.to_string())
            .field("charset", &self.charset.name())
            .finish()
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

/// Offset of the first line that is not blank, skipping blank lines.
fn first_content(body: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < body.len() {
        let end = memchr::memchr2(b'\r', b'\n', &body[i..]).map_or(body.len(), |p| i + p);
        if !is_blank(&body[i..end]) {
            return Some(i);
        }
        i = end + 1;
    }
    None
}

/// MSH-n of the MSH line at the start of `msh` (n >= 3), as bytes.
fn msh_field_bytes<'b>(msh: &'b [u8], d: &Delimiters, n: usize) -> Option<(usize, &'b [u8])> {
    let line_end = memchr::memchr2(b'\r', b'\n', msh).unwrap_or(msh.len());
    let line = &msh[..line_end];
    let mut start = 0;
    for (k, part) in line.split(|&b| b == d.field).enumerate() {
        if k + 1 == n {
            return Some((start, part));
        }
        start += part.len() + 1;
    }
    None
}

/// Names the element at byte `offset` of `body` by scanning the lines before
/// it (used only on error paths).
fn locate(body: &[u8], from: usize, d: &Delimiters, offset: usize) -> Option<Path> {
    let mut counts: Vec<([u8; 3], u32)> = Vec::new();
    let mut i = from;
    while i <= offset && i < body.len() {
        let end = memchr::memchr2(b'\r', b'\n', &body[i..]).map_or(body.len(), |p| i + p);
        let line = &body[i..end];
        if line.len() >= 3 && is_segment_name(&line[..3]) {
            let name = [line[0], line[1], line[2]];
            let occ = match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    counts.push((name, 1));
                    1
                }
            };
            if offset <= end {
                let upto = &line[..offset - i];
                let mut field = upto.iter().filter(|&&b| b == d.field).count() as u32;
                if &name == b"MSH" && field > 0 {
                    field += 1;
                }
                let f = if field == 0 { None } else { Some(field) };
                return Some(Path::new_unchecked(name, occ, f, None, None, None));
            }
        }
        i = end + 1;
    }
    None
}

impl<'a> Message<'a> {
    /// Parses one message with the default [`ParseOptions`].
    ///
    /// # Errors
    ///
    /// See [`Message::parse_with`].
    pub fn parse(input: &'a [u8]) -> Result<Message<'a>, Error> {
        Message::parse_with(input, &ParseOptions::default())
    }

    /// Parses one message: an MSH segment and the segments after it. Leading
    /// blank lines and a UTF-8 byte order mark are allowed; segments may end
    /// with CR, LF or CRLF, in any mix.
    ///
    /// # Errors
    ///
    /// An [`Error`] with the byte offset (in `input`) and, where known, the
    /// [`Path`]: the first segment is not MSH; MSH-1/MSH-2 are invalid; a
    /// segment name is not `[A-Z][A-Z0-9]{2}`; a second MSH or a batch
    /// envelope segment appears (use [`Reader`](crate::Reader) for files);
    /// bytes are invalid in the character set; a [`Limits`] value is exceeded.
    pub fn parse_with(input: &'a [u8], opts: &ParseOptions) -> Result<Message<'a>, Error> {
        let limits = &opts.limits;
        if input.len() > limits.max_message_bytes {
            return Err(Error::new(ErrorKind::MessageTooLarge(limits.max_message_bytes), limits.max_message_bytes));
        }
        let bom = input.starts_with(b"\xEF\xBB\xBF");
        let base = if bom { 3 } else { 0 };
        let body = &input[base..];
        let s = first_content(body).ok_or_else(|| Error::new(ErrorKind::Empty, base))?;
        if !body[s..].starts_with(b"MSH") {
            return Err(Error::new(ErrorKind::NotMsh, base + s));
        }
        let (delims, enc_len) = Delimiters::from_msh(&body[s..]).map_err(|e| e.shifted((base + s) as u64))?;
        let mut warnings = Vec::new();

        let charset = if bom {
            Charset::UTF_8
        } else if let Some(c) = opts.force_charset {
            c
        } else {
            let fallback = opts.default_charset.unwrap_or_default();
            match msh_field_bytes(&body[s..], &delims, 18) {
                None => fallback,
                Some((at, raw)) => {
                    let first = raw.split(|&b| b == delims.repetition).next().unwrap_or(&[]);
                    let label_bytes = first.split(|&b| b == delims.component).next().unwrap_or(&[]);
                    let label = String::from_utf8_lossy(label_bytes);
                    if label.trim().is_empty() {
                        fallback
                    } else {
                        match lookup(&label) {
                            Lookup::Known(c) => c,
                            Lookup::Unsupported => {
                                return Err(Error::new(
                                    ErrorKind::UnsupportedCharset(label.into_owned()),
                                    base + s + at,
                                )
                                .with_path(Path::new_unchecked(
                                    *b"MSH",
                                    1,
                                    Some(18),
                                    None,
                                    None,
                                    None,
                                )))
                            }
                            Lookup::Unknown => {
                                warnings.push(
                                    Warning::new(
                                        WarningKind::UnknownCharset(label.into_owned()),
                                        (base + s + at) as u64,
                                    )
                                    .with_path(Path::new_unchecked(
                                        *b"MSH",
                                        1,
                                        Some(18),
                                        None,
                                        None,
                                        None,
                                    )),
                                );
                                Charset::UTF_8
                            }
                        }
                    }
                }
            }
        };

        let text = match charset.decode(body) {
            Ok(t) => t,
            Err(bad) if opts.lenient_decoding => {
                warnings.push(Warning::new(WarningKind::Replaced, (base + bad) as u64));
                charset.decode_lossy(body).0
            }
            Err(bad) => return Err(bad_bytes(body, s, &delims, bad, charset).shifted(base as u64)),
        };

        let source = match &text {
            Cow::Borrowed(_) => None,
            Cow::Owned(_) => Some(Cow::Borrowed(body)),
        };
        let mut msg = Message {
            text,
            bom,
            delims,
            charset,
            segs: Vec::new(),
            pos: Vec::new(),
            warnings,
            base: 0,
            source,
            anchors: std::sync::OnceLock::new(),
        };
        msg.index(s, enc_len, opts)?;
        Ok(msg)
    }

    fn index(&mut self, s: usize, enc_len: usize, opts: &ParseOptions) -> Result<(), Error> {
        let t = self.text.as_bytes();
        let d = self.delims;
        let limits = &opts.limits;
        let mut index =
            Index { pos: Vec::with_capacity(t.len() / 6 + 8), breaks: Vec::with_capacity(t.len() / 40 + 4) };
        // MSH-1 is a separator; MSH-2 holds delimiter characters that are data.
        index.pos.push((s + 3) as u32);
        let scan_from = (s + 4 + enc_len).min(t.len());
        scan::build(t, scan_from, Classes::new(&d), &mut index);

        let total = index.pos.len() as u32;
        let mut segs: Vec<Seg> = Vec::with_capacity(index.breaks.len() + 1);
        let mut line_start = s;
        let mut lo = 0u32;
        let ends = index.breaks.iter().copied().chain(std::iter::once((t.len() as u32, total)));
        for (at, idx) in ends {
            let at = at as usize;
            if at > line_start {
                let line = &t[line_start..at];
                let seg = Seg { start: line_start as u32, end: at as u32, lo, hi: idx };
                if lo == idx && is_blank(line) {
                    // blank line: ignored wherever it occurs
                } else if line.len() >= 3 && is_segment_name(&line[..3]) && (line.len() == 3 || line[3] == d.field) {
                    let name = &line[..3];
                    if !segs.is_empty() && matches!(name, b"MSH" | b"FHS" | b"BHS" | b"BTS" | b"FTS") {
                        let n = String::from_utf8_lossy(name).into_owned();
                        return Err(Error::new(ErrorKind::UnexpectedSegment(n), self.input_offset(line_start)));
                    }
                    if segs.len() >= limits.max_segments {
                        return Err(Error::new(
                            ErrorKind::TooManySegments(limits.max_segments),
                            self.input_offset(line_start),
                        ));
                    }
                    segs.push(seg);
                } else if opts.join_continuation_lines && !segs.is_empty() {
                    let last = segs.len() - 1;
                    segs[last].end = seg.end;
                    segs[last].hi = seg.hi;
                    let w = Warning::new(WarningKind::JoinedLine, self.input_offset(line_start) as u64);
                    let w = match self.seg_path(&segs, last) {
                        Some(p) => w.with_path(p),
                        None => w,
                    };
                    self.warnings.push(w);
                } else {
                    return Err(Error::new(ErrorKind::InvalidSegmentName, self.input_offset(line_start)));
                }
            }
            line_start = at + 1;
            lo = idx;
        }

        // Field and repetition limits: only counted when a segment has enough
        // delimiters to possibly exceed them.
        let pos = &index.pos;
        for (k, seg) in segs.iter().enumerate() {
            let n = (seg.hi - seg.lo) as usize;
            if n <= limits.max_fields && n <= limits.max_repetitions {
                continue;
            }
            let mut fields = 0usize;
            let mut reps = 0usize;
            for &p in &pos[seg.lo as usize..seg.hi as usize] {
                let b = t[p as usize];
                if b == d.field {
                    fields += 1;
                    reps = 0;
                    if fields > limits.max_fields {
                        return Err(Error::new(
                            ErrorKind::TooManyFields(limits.max_fields),
                            self.input_offset(seg.start as usize),
                        )
                        .with_path_opt(self.seg_path(&segs, k)));
                    }
                } else if b == d.repetition {
                    reps += 1;
                    if reps >= limits.max_repetitions {
                        let f = if k == 0 { fields + 1 } else { fields };
                        let path = self.seg_path(&segs, k).map(|p| p.at_field(f.max(1) as u32));
                        return Err(Error::new(
                            ErrorKind::TooManyRepetitions(limits.max_repetitions),
                            self.input_offset(p as usize),
                        )
                        .with_path_opt(path));
                    }
                }
            }
        }
        if segs.is_empty() {
            return Err(Error::new(ErrorKind::Empty, self.input_offset(s)));
        }
        self.segs = segs;
        self.pos = index.pos;
        Ok(())
    }

    fn seg_path(&self, segs: &[Seg], k: usize) -> Option<Path> {
        let t = self.text.as_bytes();
        let name_of = |s: &Seg| &t[s.start as usize..s.start as usize + 3];
        let name = name_of(&segs[k]);
        let occ = segs[..=k].iter().filter(|s| name_of(s) == name).count() as u32;
        Some(Path::new_unchecked([name[0], name[1], name[2]], occ, None, None, None, None))
    }

    /// Maps a position in the decoded text to a byte offset in the input.
    /// Only errors and offsets of transcoded messages pay for this.
    fn input_offset(&self, text_pos: usize) -> usize {
        let base = if self.bom { 3 } else { 0 };
        match &self.source {
            None => base + text_pos,
            Some(src) => {
                let anchors = self.anchors.get_or_init(|| anchors(src, self.charset));
                base + source_offset(anchors, &self.text, self.charset, text_pos)
            }
        }
    }

    /// Byte offset in the original input of an element starting at `text_pos`.
    pub(crate) fn offset_of(&self, text_pos: u32) -> u64 {
        self.base + self.input_offset(text_pos as usize) as u64
    }

    /// Moves the message (and its warnings) `by` bytes into a stream.
    pub(crate) fn rebase(&mut self, by: u64) {
        self.base += by;
        for w in &mut self.warnings {
            w.shift(by);
        }
    }

    /// Byte offset of the message in the stream a [`Reader`](crate::Reader)
    /// or [`Messages`](crate::Messages) read it from; 0 for [`Message::parse`].
    /// Offsets of elements, warnings and errors count from the same origin.
    pub fn offset(&self) -> u64 {
        self.base
    }

    /// Copies borrowed input so the message no longer borrows it.
    pub fn into_owned(self) -> Message<'static> {
        Message {
            text: Cow::Owned(self.text.into_owned()),
            bom: self.bom,
            delims: self.delims,
            charset: self.charset,
            segs: self.segs,
            pos: self.pos,
            warnings: self.warnings,
            base: self.base,
            source: self.source.map(|s| Cow::Owned(s.into_owned())),
            anchors: self.anchors,
        }
    }

    /// The message text (UTF-8; for a message in another character set, the
    /// decoded text). Escape sequences are not decoded.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The delimiters from MSH-1 and MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.delims
    }

    /// The character set the message was decoded from.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// What the parse noticed without failing (joined lines, an unknown
    /// MSH-18, replaced bytes).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The message as bytes in its own character set, exactly as it was
    /// parsed (byte order mark, line endings and all).
    ///
    /// # Examples
    ///
    /// ```
    /// let input = b"\xEF\xBB\xBFMSH|^~\\&|A\r\nPID|1||X\n\nOBX|1\r";
    /// let msg = hl7_core::Message::parse(input)?;
    /// assert_eq!(msg.to_bytes().as_ref(), input);
    /// # Ok::<(), hl7_core::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Cow<'_, [u8]> {
        if let Some(src) = &self.source {
            if self.bom {
                let mut v = b"\xEF\xBB\xBF".to_vec();
                v.extend_from_slice(src);
                return Cow::Owned(v);
            }
            return Cow::Borrowed(src.as_ref());
        }
        let body = self.charset.encode(&self.text);
        if self.bom {
            let mut v = b"\xEF\xBB\xBF".to_vec();
            v.extend_from_slice(&body);
            Cow::Owned(v)
        } else {
            body
        }
    }

    /// Writes [`to_bytes`](Message::to_bytes) to `w`.
    ///
    /// # Errors
    ///
    /// Any error of the writer.
    pub fn write_to<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        w.write_all(&self.to_bytes())
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// Every segment, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments { msg: self.cov(), range: 0..self.segs.len() }
    }

    /// The segments with this name, in order (flat: `OBX(3)` is the third of
    /// these, wherever it is).
    pub fn segments_named(&self, name: &str) -> impl Iterator<Item = Segment<'_>> + '_ {
        let key: Option<[u8; 3]> = name.as_bytes().try_into().ok();
        self.segments().filter(move |s| key.is_some_and(|k| s.name().as_bytes() == k))
    }

    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<Segment<'_>> {
        self.segments_named(name).next()
    }

    /// The MSH segment.
    pub fn msh(&self) -> Segment<'_> {
        Segment { msg: self.cov(), idx: 0 }
    }

    /// MSH-10, the message control ID.
    pub fn control_id(&self) -> Option<Cow<'_, str>> {
        self.msh().field(10).filter(|f| !f.is_empty()).map(|f| f.decoded())
    }

    /// MSH-12, the version ID (component 1).
    pub fn version(&self) -> Option<&str> {
        self.msh().field(12).and_then(|f| f.component(1)).map(|c| c.raw()).filter(|s| !s.is_empty())
    }

    /// MSH-9 components 1–3: message code, trigger event, message structure
    /// (each `""` when absent).
    pub fn message_type(&self) -> (&str, &str, &str) {
        let f = self.msh().field(9);
        let c = |n| f.and_then(|f| f.component(n)).map_or("", |c| c.raw());
        (c(1), c(2), c(3))
    }

    /// The element at `path`: a segment, or a field's repetition (repetition
    /// 1 unless the path says otherwise), component or subcomponent. `None`
    /// when the message has no such element.
    pub fn get(&self, path: &Path) -> Option<Element<'_>> {
        let seg = self.segments_named(path.segment()).nth(path.occurrence() as usize - 1)?;
        let Some(f) = path.field() else {
            return Some(Element(seg.span()));
        };
        let field = seg.field(f as usize)?;
        let rep = field.repetition(path.repetition() as usize)?;
        let Some(c) = path.component() else {
            return Some(Element(rep.0));
        };
        let comp = rep.component(c as usize)?;
        let Some(s) = path.subcomponent() else {
            return Some(Element(comp.0));
        };
        comp.subcomponent(s as usize).map(|s| Element(s.0))
    }

    /// Covariance: a `&'m Message<'a>` is a `&'m Message<'m>`.
    fn cov<'m>(&'m self) -> &'m Message<'m> {
        self
    }
}

/// Points where a position in the decoded text and a position in the input
/// are known to correspond: `(text, input, exact)`. After an exact anchor the
/// two advance together (valid UTF-8); after an inexact one (a replaced
/// sequence, or a line of another character set) the text in between is
/// encoded again to count its input bytes.
type Anchors = Vec<(usize, usize, bool)>;

/// Builds the anchors of `text`, decoded from `src` in `charset`: one per
/// valid/replaced run for UTF-8, one per line otherwise (lines are decoded
/// with one streaming decoder, as the text was).
fn anchors(src: &[u8], charset: Charset) -> Anchors {
    let mut out = Vec::new();
    let (mut t, mut i) = (0usize, 0usize);
    if charset.is_utf8() {
        for chunk in src.utf8_chunks() {
            out.push((t, i, true));
            t += chunk.valid().len();
            i += chunk.valid().len();
            let bad = chunk.invalid().len();
            if bad > 0 {
                out.push((t, i, false));
                t += '\u{fffd}'.len_utf8();
                i += bad;
            }
        }
        out.push((t, i, false));
        return out;
    }
    let mut decoder = charset.encoding().new_decoder_without_bom_handling();
    let mut decoded = String::new();
    for line in src.split_inclusive(|&b| b == b'\r' || b == b'\n') {
        out.push((decoded.len(), i, false));
        decoded.reserve(decoder.max_utf8_buffer_length(line.len()).unwrap_or(line.len() * 4));
        let last = i + line.len() == src.len();
        let _ = decoder.decode_to_string(line, &mut decoded, last);
        i += line.len();
    }
    out.push((decoded.len(), i, false));
    out
}

/// The input offset of `text_pos` in `text`, decoded from `src`: exact at
/// every anchor, exact within valid UTF-8, and within a line of another
/// character set exact for every character the set writes back the way it
/// read it.
fn source_offset(anchors: &Anchors, text: &str, charset: Charset, text_pos: usize) -> usize {
    let text_pos = text_pos.min(text.len());
    let k = anchors.partition_point(|a| a.0 <= text_pos).saturating_sub(1);
    let Some(&(t, i, exact)) = anchors.get(k) else { return 0 };
    let next_input = anchors.get(k + 1).map_or(usize::MAX, |a| a.1);
    let within = if exact {
        text_pos - t
    } else if charset.is_utf8() {
        0 // inside a replacement character: the bytes it replaced
    } else {
        charset.encode(text.get(t..text_pos).unwrap_or("")).len()
    };
    (i + within).min(next_input)
}

fn bad_bytes(body: &[u8], s: usize, d: &Delimiters, bad: usize, charset: Charset) -> Error {
    // A line of binary garbage is better reported as what it is.
    let line_start = body[..bad].iter().rposition(|&b| b == b'\r' || b == b'\n').map_or(0, |p| p + 1);
    let line = &body[line_start..];
    if line_start > s && !(line.len() >= 3 && is_segment_name(&line[..3]) && (line.len() == 3 || line[3] == d.field)) {
        return Error::new(ErrorKind::InvalidSegmentName, line_start);
    }
    Error::new(ErrorKind::InvalidCharacter(charset.name()), bad).with_path_opt(locate(body, s, d, bad))
}

/// Iterator over the segments of a message.
#[derive(Debug, Clone)]
pub struct Segments<'m> {
    msg: &'m Message<'m>,
    range: std::ops::Range<usize>,
}

impl<'m> Iterator for Segments<'m> {
    type Item = Segment<'m>;
    fn next(&mut self) -> Option<Segment<'m>> {
        self.range.next().map(|idx| Segment { msg: self.msg, idx })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Segments<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.range.next_back().map(|idx| Segment { msg: self.msg, idx })
    }
}

impl ExactSizeIterator for Segments<'_> {}

/// A stretch of the message with the delimiters inside it.
#[derive(Clone, Copy)]
struct Span<'m> {
    msg: &'m Message<'m>,
    start: u32,
    end: u32,
    lo: u32,
    hi: u32,
    /// MSH-1 and MSH-2 are returned as they are, never escape-decoded.
    literal: bool,
}

impl<'m> Span<'m> {
    #[inline]
    fn raw(&self) -> &'m str {
        &self.msg.text[self.start as usize..self.end as usize]
    }

    #[inline]
    fn inner(&self) -> &'m [u32] {
        &self.msg.pos[self.lo as usize..self.hi as usize]
    }

    fn decoded(&self) -> Cow<'m, str> {
        if self.literal {
            Cow::Borrowed(self.raw())
        } else {
            crate::escape::decode(self.raw(), &self.msg.delims, self.msg.charset)
        }
    }

    /// The `n`-th (0-based) child split at `sep`.
    fn child(&self, sep: u8, n: usize) -> Option<Span<'m>> {
        let t = self.msg.text.as_bytes();
        let mut k = 0;
        let mut cstart = self.start;
        let mut clo = self.lo;
        for (i, &p) in self.inner().iter().enumerate() {
            if t[p as usize] == sep {
                if k == n {
                    return Some(Span { start: cstart, end: p, lo: clo, hi: self.lo + i as u32, ..*self });
                }
                k += 1;
                cstart = p + 1;
                clo = self.lo + i as u32 + 1;
            }
        }
        (k == n).then_some(Span { start: cstart, lo: clo, ..*self })
    }

    fn children(&self, sep: u8) -> Children<'m> {
        Children { span: *self, sep, cur_start: self.start, cur_lo: self.lo, i: self.lo, done: false }
    }
}

/// Iterator over the children of an element split at one delimiter.
#[derive(Clone)]
struct Children<'m> {
    span: Span<'m>,
    sep: u8,
    cur_start: u32,
    cur_lo: u32,
    i: u32,
    done: bool,
}

impl<'m> Iterator for Children<'m> {
    type Item = Span<'m>;
    #[inline]
    fn next(&mut self) -> Option<Span<'m>> {
        if self.done {
            return None;
        }
        let t = self.span.msg.text.as_bytes();
        let pos = &self.span.msg.pos;
        while self.i < self.span.hi {
            let p = pos[self.i as usize];
            self.i += 1;
            if t[p as usize] == self.sep {
                let s = Span { start: self.cur_start, end: p, lo: self.cur_lo, hi: self.i - 1, ..self.span };
                self.cur_start = p + 1;
                self.cur_lo = self.i;
                return Some(s);
            }
        }
        self.done = true;
        Some(Span { start: self.cur_start, lo: self.cur_lo, ..self.span })
    }
}

macro_rules! element_common {
    ($ty:ident) => {
        impl<'m> $ty<'m> {
            /// The text as it is in the message, escape sequences not decoded.
            #[inline]
            pub fn raw(&self) -> &'m str {
                self.0.raw()
            }

            /// The text with escape sequences decoded (see [`escape`](crate::escape)).
            /// Borrows when there is nothing to decode. On an element that still
            /// has inner delimiters, the delimiters are kept as they are.
            pub fn decoded(&self) -> Cow<'m, str> {
                self.0.decoded()
            }

            /// True when the element is present but empty (`||`).
            #[inline]
            pub fn is_empty(&self) -> bool {
                self.0.start == self.0.end
            }

            /// True for the HL7 null, the two characters `""`: "delete the
            /// stored value", unlike an empty element, which says nothing.
            pub fn is_null(&self) -> bool {
                self.raw() == "\"\""
            }

            /// True when the element contains lower-level delimiters.
            #[inline]
            pub fn has_children(&self) -> bool {
                self.0.lo < self.0.hi
            }

            /// Byte offset of the element in the parsed input.
            pub fn offset(&self) -> u64 {
                self.0.msg.offset_of(self.0.start)
            }
        }

        impl fmt::Debug for $ty<'_> {
            /// Shows the position and size, never the content (which may be PHI).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("offset", &self.0.start)
                    .field("len", &(self.0.end - self.0.start))
                    .finish()
            }
        }
    };
}

/// One segment of a message.
#[derive(Clone, Copy)]
pub struct Segment<'m> {
    msg: &'m Message<'m>,
    idx: usize,
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment").field("name", &self.name()).field("index", &self.idx).finish()
    }
}

impl<'m> Segment<'m> {
    fn span(&self) -> Span<'m> {
        let s = self.msg.segs[self.idx];
        Span { msg: self.msg, start: s.start, end: s.end, lo: s.lo, hi: s.hi, literal: false }
    }

    fn is_msh(&self) -> bool {
        self.idx == 0
    }

    /// The three-letter segment name.
    pub fn name(&self) -> &'m str {
        let s = self.msg.segs[self.idx].start as usize;
        &self.msg.text[s..s + 3]
    }

    /// The whole segment as it is in the message, without its terminator.
    pub fn raw(&self) -> &'m str {
        self.span().raw()
    }

    /// 0-based position of the segment in the message.
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Byte offset of the segment in the parsed input.
    pub fn offset(&self) -> u64 {
        self.msg.offset_of(self.msg.segs[self.idx].start)
    }

    /// The segment's [`Path`], with its flat occurrence number.
    pub fn path(&self) -> Path {
        let name = self.name();
        let occ = self.msg.segments().take(self.idx + 1).filter(|s| s.name() == name).count() as u32;
        let b = name.as_bytes();
        Path::new_unchecked([b[0], b[1], b[2]], occ, None, None, None, None)
    }

    /// Field `n`, 1-based as HL7 counts (`MSH-1` is the field separator,
    /// `MSH-2` the encoding characters). `None` past the last field; `Some`
    /// of an empty field for `||`.
    #[inline]
    pub fn field(&self, n: usize) -> Option<Field<'m>> {
        if n == 0 {
            return None;
        }
        let span = self.span();
        if self.is_msh() {
            if n == 1 {
                let at = span.start + 3;
                return Some(Field(Span { start: at, end: at + 1, lo: span.lo, hi: span.lo, literal: true, ..span }));
            }
            let mut f = span.child(self.msg.delims.field, n - 1)?;
            f.literal = n == 2;
            return Some(Field(f));
        }
        span.child(self.msg.delims.field, n).map(Field)
    }

    /// Number of fields (for MSH, counting MSH-1).
    pub fn field_count(&self) -> usize {
        self.fields().count()
    }

    /// The fields in order, starting at field 1.
    pub fn fields(&self) -> Fields<'m> {
        let span = self.span();
        let mut inner = span.children(self.msg.delims.field);
        inner.next(); // the segment name
        let msh = if self.is_msh() { self.field(1) } else { None };
        Fields { msh1: msh, inner, first: self.is_msh() }
    }
}

/// Iterator over the fields of a segment.
#[derive(Clone)]
pub struct Fields<'m> {
    msh1: Option<Field<'m>>,
    inner: Children<'m>,
    first: bool,
}

impl fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fields").finish_non_exhaustive()
    }
}

impl<'m> Iterator for Fields<'m> {
    type Item = Field<'m>;
    #[inline]
    fn next(&mut self) -> Option<Field<'m>> {
        if let Some(f) = self.msh1.take() {
            return Some(f);
        }
        let mut s = self.inner.next()?;
        if self.first {
            self.first = false;
            s.literal = true; // MSH-2
        }
        Some(Field(s))
    }
}

/// A field: one or more repetitions.
#[derive(Clone, Copy)]
pub struct Field<'m>(Span<'m>);
element_common!(Field);

impl<'m> Field<'m> {
    /// Repetition `n`, 1-based. A field without repetition separators is
    /// its own repetition 1.
    #[inline]
    pub fn repetition(&self, n: usize) -> Option<Repetition<'m>> {
        if n == 0 {
            return None;
        }
        if !self.has_children() {
            return (n == 1).then_some(Repetition(self.0));
        }
        self.0.child(self.0.msg.delims.repetition, n - 1).map(Repetition)
    }

    /// The repetitions in order.
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'m>> + 'm {
        self.0.children(self.0.msg.delims.repetition).map(Repetition)
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Option<Component<'m>> {
        self.repetition(1)?.component(n)
    }
}

/// One repetition of a field: components.
#[derive(Clone, Copy)]
pub struct Repetition<'m>(Span<'m>);
element_common!(Repetition);

impl<'m> Repetition<'m> {
    /// Component `n`, 1-based. A value without component separators is its
    /// own component 1.
    #[inline]
    pub fn component(&self, n: usize) -> Option<Component<'m>> {
        if n == 0 {
            return None;
        }
        if !self.has_children() {
            return (n == 1).then_some(Component(self.0));
        }
        self.0.child(self.0.msg.delims.component, n - 1).map(Component)
    }

    /// The components in order.
    pub fn components(&self) -> impl Iterator<Item = Component<'m>> + 'm {
        self.0.children(self.0.msg.delims.component).map(Component)
    }
}

/// One component: subcomponents.
#[derive(Clone, Copy)]
pub struct Component<'m>(Span<'m>);
element_common!(Component);

impl<'m> Component<'m> {
    /// Subcomponent `n`, 1-based. A component without subcomponent separators
    /// is its own subcomponent 1.
    #[inline]
    pub fn subcomponent(&self, n: usize) -> Option<Subcomponent<'m>> {
        if n == 0 {
            return None;
        }
        // Inside a component, every inner delimiter is a subcomponent separator.
        let inner = self.0.inner();
        if n > inner.len() + 1 {
            return None;
        }
        let start = if n == 1 { self.0.start } else { inner[n - 2] + 1 };
        let end = if n <= inner.len() { inner[n - 1] } else { self.0.end };
        let at = self.0.lo + n as u32 - 1;
        Some(Subcomponent(Span { start, end, lo: at, hi: at, ..self.0 }))
    }

    /// The subcomponents in order.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'m>> + 'm {
        self.0.children(self.0.msg.delims.subcomponent).map(Subcomponent)
    }
}

/// One subcomponent: a leaf.
#[derive(Clone, Copy)]
pub struct Subcomponent<'m>(Span<'m>);
element_common!(Subcomponent);

/// What [`Message::get`] returns: the element a [`Path`] names, at whatever
/// level the path stops.
#[derive(Clone, Copy)]
pub struct Element<'m>(Span<'m>);
element_common!(Element);

impl<'m> Element<'m> {
    pub(crate) fn from_repetition(r: Repetition<'m>) -> Element<'m> {
        Element(r.0)
    }

    pub(crate) fn from_component(c: Component<'m>) -> Element<'m> {
        Element(c.0)
    }

    pub(crate) fn from_subcomponent(s: Subcomponent<'m>) -> Element<'m> {
        Element(s.0)
    }

    /// The value as the `labbridge hl7 get` contract prints it: `None` when
    /// empty; the raw text when the element still has inner delimiters; the
    /// decoded text otherwise (the HL7 null stays the two characters `""`).
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = hl7_core::Message::parse(b"MSH|^~\\&\rPID|1||||DOE\\S\\X^^Q|\"\"")?;
    /// let get = |p: &str| msg.get(&p.parse().unwrap()).and_then(|e| e.value().map(|v| v.into_owned()));
    /// assert_eq!(get("PID-5-1").as_deref(), Some("DOE^X"));
    /// assert_eq!(get("PID-5-2"), None); // empty
    /// assert_eq!(get("PID-6").as_deref(), Some("\"\""));
    /// assert_eq!(get("PID-9"), None); // absent
    /// # Ok::<(), hl7_core::Error>(())
    /// ```
    pub fn value(&self) -> Option<Cow<'m, str>> {
        if self.is_empty() {
            None
        } else if self.has_children() {
            Some(Cow::Borrowed(self.raw()))
        } else {
            Some(self.decoded())
        }
    }
}
