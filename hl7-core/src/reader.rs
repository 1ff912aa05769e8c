//! Files and streams of messages.
//!
//! A file may hold one message, messages simply one after another, or batch
//! files with FHS/BHS/BTS/FTS envelopes, with blank lines anywhere and any
//! mix of CR, LF and CRLF. Each message comes out in order as either a
//! [`Message`] or an [`Error`] naming the byte offset in the stream, so one
//! bad message never costs the good ones.
//!
//! Two layers, as in `csv-core`/`csv`:
//! - [`split`] looks at a byte buffer and says where the next chunk (a
//!   message, an envelope segment, blank lines) ends, or that it needs more
//!   bytes ([`Split::Incomplete`]) — bad bytes are not its concern.
//! - [`Reader`] pulls from any [`std::io::Read`] incrementally (a 1 GB batch
//!   file is never loaded whole: memory is bounded by the largest message)
//!   and [`Messages`] walks an in-memory buffer, borrowing from it.
//!
//! Why BTS/FTS counts are warnings: senders often get them wrong, and a
//! wrong count says nothing about the messages themselves. The warning
//! carries both numbers; the good messages still come out.

use std::collections::VecDeque;
use std::io::Read;

use crate::error::{Error, ErrorKind, Warning, WarningKind};
use crate::message::{Message, ParseOptions};

/// What the next chunk of a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// A message: from an MSH segment (or, for a headless run, from another
    /// segment) up to the next MSH or envelope segment.
    Message,
    /// One batch envelope segment: FHS, BHS, BTS or FTS.
    Envelope,
    /// Blank lines.
    Blank,
}

/// The answer of [`split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The first `len` bytes of the buffer are one chunk.
    Complete {
        /// What the chunk is.
        chunk: Chunk,
        /// Its length in bytes, line terminators included.
        len: usize,
    },
    /// The chunk may go on past the end of the buffer: read more (or call
    /// again with `eof = true`). `scanned` bytes are known not to hold a
    /// boundary; pass it back to avoid scanning them again.
    Incomplete {
        /// How far the search got.
        scanned: usize,
    },
}

fn is_name_end(b: Option<&u8>) -> bool {
    match b {
        None => true,
        Some(b) => !b.is_ascii_alphanumeric(),
    }
}

/// Classifies a line start: `Some(true)` an MSH segment, `Some(false)` an
/// envelope segment, `None` something else. `Err(())` when more bytes are
/// needed to tell.
fn boundary(line: &[u8], eof: bool) -> Result<Option<bool>, ()> {
    let need = line.len() < 4 && !eof && !line.contains(&b'\r') && !line.contains(&b'\n');
    let head = &line[..line.len().min(3)];
    let candidates: [&[u8]; 5] = [b"MSH", b"FHS", b"BHS", b"BTS", b"FTS"];
    if !candidates.iter().any(|c| c.starts_with(head)) {
        return Ok(None);
    }
    if need {
        return Err(());
    }
    if head.len() < 3 || !is_name_end(line.get(3)) {
        return Ok(None);
    }
    Ok(Some(head == b"MSH"))
}

/// The first line start after `from` that begins a message or envelope.
fn split_after(buf: &[u8], from: usize, eof: bool) -> Option<usize> {
    let mut i = from;
    while let Some(p) = memchr::memchr2(b'\r', b'\n', &buf[i..]) {
        let line_start = i + p + 1;
        match boundary(&buf[line_start..], eof) {
            Ok(Some(_)) => return Some(line_start),
            Ok(None) => i = line_start,
            Err(()) => return None,
        }
    }
    None
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

/// Finds the next chunk at the start of `buf`, which must begin at a line
/// start. `scanned` is the value a previous [`Split::Incomplete`] returned
/// for the same chunk (0 the first time).
///
/// # Examples
///
/// ```
/// use hl7_core::reader::{split, Chunk, Split};
///
/// let buf = b"MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\r";
/// assert_eq!(split(buf, false, 0), Split::Complete { chunk: Chunk::Message, len: 17 });
/// // the last message may go on: more bytes are needed, unless at end of input
/// assert!(matches!(split(&buf[17..], false, 0), Split::Incomplete { .. }));
/// assert_eq!(split(&buf[17..], true, 0), Split::Complete { chunk: Chunk::Message, len: 11 });
/// ```
pub fn split(buf: &[u8], eof: bool, scanned: usize) -> Split {
    if buf.is_empty() {
        return Split::Incomplete { scanned: 0 };
    }
    let first_end = memchr::memchr2(b'\r', b'\n', buf);
    let first_line = &buf[..first_end.unwrap_or(buf.len())];
    // Blank lines and envelope segments are one line each.
    let first_kind = match boundary(buf, eof) {
        Err(()) => return Split::Incomplete { scanned: 0 },
        Ok(k) => k,
    };
    if first_kind == Some(false) || (first_kind.is_none() && is_blank(first_line)) {
        return match first_end {
            Some(e) => Split::Complete {
                chunk: if first_kind == Some(false) { Chunk::Envelope } else { Chunk::Blank },
                len: e + 1,
            },
            None if eof => Split::Complete {
                chunk: if first_kind == Some(false) { Chunk::Envelope } else { Chunk::Blank },
                len: buf.len(),
            },
            None => Split::Incomplete { scanned: 0 },
        };
    }
    // A message (or headless run): up to the next line that is a boundary.
    // `i` is always a position from which to search for a line terminator.
    let mut i = scanned;
    while let Some(p) = memchr::memchr2(b'\r', b'\n', &buf[i..]) {
        let line_start = i + p + 1;
        match boundary(&buf[line_start..], eof) {
            Err(()) => return Split::Incomplete { scanned: i + p },
            Ok(Some(_)) => return Split::Complete { chunk: Chunk::Message, len: line_start },
            Ok(None) => i = line_start,
        }
    }
    if eof {
        Split::Complete { chunk: Chunk::Message, len: buf.len() }
    } else {
        Split::Incomplete { scanned: buf.len() }
    }
}

/// A batch envelope segment (FHS, BHS, BTS or FTS) as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    name: String,
    text: String,
    offset: u64,
}

impl Envelope {
    /// `FHS`, `BHS`, `BTS` or `FTS`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment text, line terminator removed (lossy UTF-8).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Byte offset in the stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Field `n` (1-based, raw), using the segment's own field separator.
    /// For FHS and BHS, field 1 is the separator and field 2 the encoding
    /// characters, as for MSH.
    pub fn field(&self, n: usize) -> Option<&str> {
        let sep = self.text.get(3..4)?;
        if n == 0 {
            return None;
        }
        if matches!(self.name.as_str(), "FHS" | "BHS") {
            if n == 1 {
                return Some(sep);
            }
            return self.text.split(sep).nth(n - 1);
        }
        self.text.split(sep).nth(n)
    }
}

/// One thing read from a file or stream, in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A message that parsed.
    Message(Message<'a>),
    /// A message that failed; the error's offset is in the whole stream.
    Invalid(Error),
    /// A batch envelope segment.
    Envelope(Envelope),
    /// A batch or file count that disagrees with what was read, or another
    /// problem that did not cost a message.
    Warning(Warning),
}

/// Batch bookkeeping shared by [`Reader`] and [`Messages`].
#[derive(Debug, Default, Clone)]
struct Batches {
    in_batch: bool,
    messages: u64,
    batches: u64,
    in_file: bool,
}

impl Batches {
    fn message(&mut self) {
        self.messages += 1;
    }

    fn envelope(&mut self, env: &Envelope) -> Option<Warning> {
        let count = |e: &Envelope| -> Option<u64> {
            let f = e.field(1)?.split(|c: char| !c.is_ascii_digit()).next()?;
            f.parse().ok()
        };
        match env.name() {
            "FHS" => {
                self.in_file = true;
                self.batches = 0;
                None
            }
            "BHS" => {
                self.in_batch = true;
                self.messages = 0;
                self.batches += 1;
                None
            }
            "BTS" => {
                self.in_batch = false;
                let declared = count(env)?;
                (declared != self.messages).then(|| {
                    Warning::new(
                        WarningKind::CountMismatch { segment: "BTS", declared, actual: self.messages },
                        env.offset(),
                    )
                })
            }
            "FTS" => {
                self.in_file = false;
                let declared = count(env)?;
                (declared != self.batches).then(|| {
                    Warning::new(
                        WarningKind::CountMismatch { segment: "FTS", declared, actual: self.batches },
                        env.offset(),
                    )
                })
            }
            _ => None,
        }
    }
}

fn envelope(bytes: &[u8], offset: u64) -> Envelope {
    let end = bytes.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    Envelope { name: text.get(..3).unwrap_or("").to_owned(), text, offset }
}

/// The messages of an in-memory buffer, borrowing from it.
///
/// # Examples
///
/// ```
/// use hl7_core::Messages;
///
/// let file = b"MSH|^~\\&|A|||||||M1\rPID|1\r\nOB|oops\r\nMSH|^~\\&|A|||||||M2\rPID|2\r";
/// let results: Vec<_> = Messages::new(file).collect();
/// assert_eq!(results.len(), 2);
/// assert_eq!(results[0].as_ref().unwrap_err().to_string(), "invalid segment name at byte 27");
/// assert_eq!(results[1].as_ref().unwrap().control_id().unwrap(), "M2");
/// ```
#[derive(Debug)]
pub struct Messages<'a> {
    buf: &'a [u8],
    at: usize,
    opts: ParseOptions,
    batches: Batches,
    warnings: Vec<Warning>,
    last: std::ops::Range<usize>,
    pending: Option<Event<'a>>,
}

impl<'a> Messages<'a> {
    /// Messages of `buf` with default options.
    pub fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages::with_options(buf, ParseOptions::default())
    }

    /// Messages of `buf` parsed with `opts`.
    pub fn with_options(buf: &'a [u8], opts: ParseOptions) -> Messages<'a> {
        let at = if buf.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
        Messages { buf, at, opts, batches: Batches::default(), warnings: Vec::new(), last: 0..0, pending: None }
    }

    /// The next message, error, envelope segment or warning.
    pub fn next_event(&mut self) -> Option<Event<'a>> {
        if let Some(ev) = self.pending.take() {
            return Some(ev);
        }
        loop {
            let rest = &self.buf[self.at..];
            if rest.is_empty() {
                return None;
            }
            let Split::Complete { chunk, len } = split(rest, true, 0) else {
                return None;
            };
            let offset = self.at as u64;
            let bytes = &rest[..len];
            self.last = self.at..self.at + len;
            self.at += len;
            match chunk {
                Chunk::Blank => continue,
                Chunk::Envelope => {
                    // The envelope comes out, then its warning, as from `Reader`.
                    let env = envelope(bytes, offset);
                    if let Some(w) = self.batches.envelope(&env) {
                        self.warnings.push(w.clone());
                        self.pending = Some(Event::Warning(w));
                    }
                    return Some(Event::Envelope(env));
                }
                Chunk::Message => {
                    self.batches.message();
                    return Some(match Message::parse_with(bytes, &self.opts) {
                        Ok(mut m) => {
                            m.rebase(offset);
                            Event::Message(m)
                        }
                        Err(e) => Event::Invalid(e.shifted(offset)),
                    });
                }
            }
        }
    }

    /// Warnings seen so far by the iterator (batch count mismatches).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The bytes of the chunk behind the last event: for an
    /// [`Event::Invalid`], the original bytes of the message that failed, to
    /// quarantine or acknowledge.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::{Event, Messages};
    ///
    /// let mut m = Messages::new(b"MSH|^~\\&|A\rPID|1\rOB|x\r");
    /// assert!(matches!(m.next_event(), Some(Event::Invalid(_))));
    /// assert_eq!(m.last_raw(), b"MSH|^~\\&|A\rPID|1\rOB|x\r");
    /// ```
    pub fn last_raw(&self) -> &'a [u8] {
        &self.buf[self.last.clone()]
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_event()? {
                Event::Message(m) => return Some(Ok(m)),
                Event::Invalid(e) => return Some(Err(e)),
                Event::Envelope(_) | Event::Warning(_) => continue,
            }
        }
    }
}

/// Reads messages incrementally from any [`Read`]: a file, a socket, stdin.
///
/// Memory stays bounded by the largest message (and
/// [`Limits::max_message_bytes`](crate::Limits)): a message over the limit is
/// reported as [`ErrorKind::MessageTooLarge`] and skipped without being
/// buffered, and reading goes on with the next one.
///
/// # Examples
///
/// ```
/// use hl7_core::{Reader, WarningKind};
///
/// let file: &[u8] = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A|||||||M1\rPID|1\rBTS|2\rFTS|1\r";
/// let mut reader = Reader::new(file);
/// let ids: Vec<String> = reader.by_ref().map(|m| m.unwrap().control_id().unwrap().into_owned()).collect();
/// assert_eq!(ids, ["M1"]);
/// // BTS-1 says 2 but one message was read: a warning, not a failure
/// assert!(matches!(reader.warnings()[0].kind(), WarningKind::CountMismatch { declared: 2, actual: 1, .. }));
/// ```
#[derive(Debug)]
pub struct Reader<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    scanned: usize,
    first: bool,
    opts: ParseOptions,
    batches: Batches,
    warnings: Vec<Warning>,
    queue: VecDeque<Event<'static>>,
    failed: bool,
}

const READ_SIZE: usize = 256 * 1024;

/// The longest envelope (FHS/BHS/BTS/FTS) or blank line the reader buffers
/// when it is longer than the message limit.
const ENVELOPE_LINE_MAX: usize = 1 << 20;

impl<R: Read> Reader<R> {
    /// A reader with default options.
    pub fn new(src: R) -> Reader<R> {
        Reader::with_options(src, ParseOptions::default())
    }

    /// A reader that parses each message with `opts`.
    pub fn with_options(src: R, opts: ParseOptions) -> Reader<R> {
        Reader {
            src,
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            scanned: 0,
            first: true,
            opts,
            batches: Batches::default(),
            warnings: Vec::new(),
            queue: VecDeque::new(),
            failed: false,
        }
    }

    /// Warnings seen so far (batch count mismatches).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    fn fill(&mut self) -> Result<(), Error> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + READ_SIZE {
            self.buf.resize(self.end + READ_SIZE, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(e, self.base + self.end as u64)),
            }
        }
    }

    /// Drops an oversized message without buffering it: discards bytes up to
    /// the next line that starts a message or an envelope segment.
    fn skip_oversized(&mut self) -> Result<(), Error> {
        let mut from = self.start + 1;
        loop {
            match split_after(&self.buf[..self.end], from, self.eof) {
                Some(at) => {
                    self.start = at;
                    return Ok(());
                }
                None if self.eof => {
                    self.start = self.end;
                    return Ok(());
                }
                None => {
                    // Keep a short tail that may hold a line start cut in two.
                    self.start = self.end - 8.min(self.end - from);
                    self.fill()?;
                    from = 0;
                }
            }
        }
    }

    /// The next message, error, envelope segment or warning.
    pub fn next_event(&mut self) -> Option<Event<'static>> {
        if let Some(ev) = self.queue.pop_front() {
            return Some(ev);
        }
        if self.failed {
            return None;
        }
        let max = self.opts.get_limits().max_message_bytes;
        loop {
            if self.first && (self.end - self.start >= 3 || self.eof) {
                self.first = false;
                if self.buf[self.start..self.end].starts_with(b"\xEF\xBB\xBF") {
                    self.start += 3;
                }
            }
            let avail = &self.buf[self.start..self.end];
            let res = if self.first { Split::Incomplete { scanned: 0 } } else { split(avail, self.eof, self.scanned) };
            match res {
                Split::Complete { chunk, len } => {
                    let offset = self.base + self.start as u64;
                    let bytes = &self.buf[self.start..self.start + len];
                    self.start += len;
                    self.scanned = 0;
                    match chunk {
                        Chunk::Blank => continue,
                        Chunk::Envelope => {
                            let env = envelope(bytes, offset);
                            if let Some(w) = self.batches.envelope(&env) {
                                self.warnings.push(w.clone());
                                self.queue.push_back(Event::Warning(w));
                            }
                            return Some(Event::Envelope(env));
                        }
                        Chunk::Message => {
                            self.batches.message();
                            return Some(match Message::parse_with(bytes, &self.opts) {
                                Ok(m) => {
                                    let mut m = m.into_owned();
                                    m.rebase(offset);
                                    Event::Message(m)
                                }
                                Err(e) => Event::Invalid(e.shifted(offset)),
                            });
                        }
                    }
                }
                Split::Incomplete { scanned } => {
                    if self.eof && self.start == self.end {
                        return None;
                    }
                    self.scanned = scanned;
                    // Bytes read ahead to classify the next line are not part
                    // of this message; an envelope line is not a message.
                    let avail = self.end - self.start;
                    let first = boundary(&self.buf[self.start..self.end], self.eof);
                    let single_line = matches!(first, Ok(Some(false)))
                        || (first == Ok(None) && {
                            let line = &self.buf[self.start..self.end];
                            let end = memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len());
                            is_blank(&line[..end])
                        });
                    let committed = if single_line || scanned >= avail { avail } else { scanned + 1 };
                    let cap = if single_line { max.max(ENVELOPE_LINE_MAX) } else { max };
                    if committed > cap {
                        let offset = self.base + self.start as u64;
                        self.batches.message();
                        self.scanned = 0;
                        if let Err(e) = self.skip_oversized() {
                            self.failed = true;
                            return Some(Event::Invalid(e));
                        }
                        return Some(Event::Invalid(
                            Error::new(ErrorKind::MessageTooLarge(max), 0).shifted(offset + max as u64),
                        ));
                    }
                    if let Err(e) = self.fill() {
                        self.failed = true;
                        return Some(Event::Invalid(e));
                    }
                }
            }
        }
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Message<'static>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_event()? {
                Event::Message(m) => return Some(Ok(m)),
                Event::Invalid(e) => return Some(Err(e)),
                Event::Envelope(_) | Event::Warning(_) => continue,
            }
        }
    }
}
