//! One error shape for the crate: what went wrong, at which byte, and where
//! in the message ([`Path`]) when that is known.
//!
//! Messages are short and fixed so callers and tests can rely on them:
//! `invalid segment name at byte 57`, `byte sequence not valid in ISO-8859-1
//! at byte 212 (OBX(3)-5)`. Line and column are not stored; they are computed
//! on demand from the input with [`Error::line_col`], so the common path
//! never pays for them.

use std::fmt;
use std::sync::Arc;

use crate::Path;

/// What went wrong. New kinds may be added in minor releases.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input holds no segment at all.
    #[error("empty message")]
    Empty,
    /// The first segment of a message is not MSH.
    #[error("message does not start with MSH")]
    NotMsh,
    /// `MSH` is not followed by a field separator.
    #[error("MSH has no field separator")]
    MissingFieldSeparator,
    /// MSH-1 is not printable, non-alphanumeric ASCII.
    #[error("invalid field separator")]
    InvalidFieldSeparator,
    /// MSH-2 is not 4 or 5 distinct printable, non-alphanumeric ASCII characters
    /// different from the field separator.
    #[error("invalid encoding characters (MSH-2 must be 4 or 5 distinct delimiters)")]
    InvalidEncodingCharacters,
    /// A segment name is not three characters `[A-Z][A-Z0-9]{2}` followed by
    /// the field separator or the end of the segment. A line of free text
    /// (a stray line break inside a field) fails here too.
    #[error("invalid segment name")]
    InvalidSegmentName,
    /// A segment that cannot appear inside a message (a second MSH, or a batch
    /// envelope segment); use [`Reader`](crate::Reader) for files of many messages.
    #[error("unexpected {0} segment inside a message")]
    UnexpectedSegment(String),
    /// Bytes that are not valid in the message's character set.
    #[error("byte sequence not valid in {0}")]
    InvalidCharacter(&'static str),
    /// A character set the library cannot decode (e.g. UTF-16 in ER7).
    #[error("unsupported character set {0:?}")]
    UnsupportedCharset(String),
    /// The message is larger than [`Limits::max_message_bytes`](crate::Limits).
    #[error("message larger than the limit of {0} bytes")]
    MessageTooLarge(usize),
    /// More segments than [`Limits::max_segments`](crate::Limits).
    #[error("more than {0} segments")]
    TooManySegments(usize),
    /// A segment with more fields than [`Limits::max_fields`](crate::Limits).
    #[error("more than {0} fields")]
    TooManyFields(usize),
    /// A field with more repetitions than [`Limits::max_repetitions`](crate::Limits).
    #[error("more than {0} repetitions")]
    TooManyRepetitions(usize),
    /// MSH-9 names another message type than the view or mapping expects.
    #[error("message type {found}, expected {expected}")]
    UnexpectedMessageType {
        /// MSH-9 components 1 and 2 as found.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// A value handed to a builder that HL7 cannot carry.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// Reading the input failed.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
}

/// An error with its location: byte offset in the input and, where known,
/// the [`Path`] of the element.
///
/// # Examples
///
/// ```
/// use hl7_core::{ErrorKind, Message};
///
/// let input = b"MSH|^~\\&|LAB\rPID|1\rOB|1\r";
/// let err = Message::parse(input).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::InvalidSegmentName));
/// assert_eq!(err.offset(), 19);
/// assert_eq!(err.line_col(input), (3, 1));
/// assert_eq!(err.to_string(), "invalid segment name at byte 19");
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    offset: u64,
    path: Option<Path>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, offset: usize) -> Error {
        Error { kind, offset: offset as u64, path: None }
    }

    pub(crate) fn with_path(mut self, path: Path) -> Error {
        self.path = Some(path);
        self
    }

    pub(crate) fn with_path_opt(mut self, path: Option<Path>) -> Error {
        if path.is_some() {
            self.path = path;
        }
        self
    }

    pub(crate) fn shifted(mut self, by: u64) -> Error {
        self.offset += by;
        self
    }

    pub(crate) fn io(e: std::io::Error, offset: u64) -> Error {
        Error { kind: ErrorKind::Io(Arc::new(e)), offset, path: None }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Byte offset of the problem in the input (for a [`Reader`](crate::Reader),
    /// in the whole stream).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The element where the problem is, when known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref()
    }

    /// 1-based line and column of [`offset`](Error::offset) in `input`, the
    /// bytes that were parsed. CR, LF and CRLF each end a line; the column
    /// counts bytes.
    pub fn line_col(&self, input: &[u8]) -> (usize, usize) {
        line_col(input, self.offset as usize)
    }

    /// The HL7 table 0357 error code an ACK reports for this error:
    /// 100 segment sequence, 102 data type error, 207 application internal error.
    pub fn hl7_error_code(&self) -> u16 {
        match self.kind {
            ErrorKind::NotMsh | ErrorKind::UnexpectedSegment(_) | ErrorKind::Empty => 100,
            ErrorKind::InvalidSegmentName
            | ErrorKind::MissingFieldSeparator
            | ErrorKind::InvalidFieldSeparator
            | ErrorKind::InvalidEncodingCharacters
            | ErrorKind::InvalidCharacter(_)
            | ErrorKind::InvalidValue(_) => 102,
            ErrorKind::UnsupportedCharset(_) => 203,
            ErrorKind::UnexpectedMessageType { .. } => 200,
            _ => 207,
        }
    }
}

pub(crate) fn line_col(input: &[u8], offset: usize) -> (usize, usize) {
    let upto = &input[..offset.min(input.len())];
    let mut line = 1;
    let mut start = 0;
    let mut i = 0;
    while let Some(p) = memchr::memchr2(b'\r', b'\n', &upto[i..]) {
        let at = i + p;
        if upto[at] == b'\r' && upto.get(at + 1) == Some(&b'\n') {
            i = at + 2;
        } else {
            i = at + 1;
        }
        line += 1;
        start = i;
        if i >= upto.len() {
            break;
        }
    }
    (line, upto.len() - start.min(upto.len()) + 1)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.offset)?;
        if let Some(p) = &self.path {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Something worth telling the caller that did not stop the parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarningKind {
    /// A batch or file trailer's count disagrees with what was read.
    /// `segment` is `BTS` (messages in the batch) or `FTS` (batches in the file).
    #[error("{segment}-1 says {declared} but {actual} were read")]
    CountMismatch {
        /// `BTS` or `FTS`.
        segment: &'static str,
        /// The count the trailer declares.
        declared: u64,
        /// The count actually read.
        actual: u64,
    },
    /// A line that cannot start a segment was joined to the field before it
    /// (only with [`ParseOptions::join_continuation_lines`](crate::ParseOptions)).
    #[error("line joined to the previous segment")]
    JoinedLine,
    /// MSH-18 names a character set the library does not know; the message
    /// was decoded as UTF-8.
    #[error("unknown character set {0:?}, decoded as UTF-8")]
    UnknownCharset(String),
    /// Undecodable bytes were replaced by U+FFFD (only with lenient decoding).
    #[error("invalid bytes replaced")]
    Replaced,
}

/// A warning with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    kind: WarningKind,
    offset: u64,
    path: Option<Path>,
}

impl Warning {
    pub(crate) fn new(kind: WarningKind, offset: u64) -> Warning {
        Warning { kind, offset, path: None }
    }

    pub(crate) fn shift(&mut self, by: u64) {
        self.offset += by;
    }

    pub(crate) fn with_path(mut self, path: Path) -> Warning {
        self.path = Some(path);
        self
    }

    /// What was noticed.
    pub fn kind(&self) -> &WarningKind {
        &self.kind
    }

    /// Byte offset in the input.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The element concerned, when known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref()
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.offset)?;
        if let Some(p) = &self.path {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_every_separator_style() {
        let s = b"ab\rcd\nef\r\ngh";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, 4), (2, 2));
        assert_eq!(line_col(s, 6), (3, 1));
        assert_eq!(line_col(s, 10), (4, 1));
        assert_eq!(line_col(s, 100), (4, 3));
    }

    #[test]
    fn golden_messages() {
        let e = Error::new(ErrorKind::InvalidCharacter("ISO-8859-1"), 212).with_path("OBX(3)-5".parse().unwrap());
        assert_eq!(e.to_string(), "byte sequence not valid in ISO-8859-1 at byte 212 (OBX(3)-5)");
        let e = Error::new(ErrorKind::TooManyFields(10), 7).with_path("PID".parse().unwrap());
        assert_eq!(e.to_string(), "more than 10 fields at byte 7 (PID)");
        let w = Warning::new(WarningKind::CountMismatch { segment: "BTS", declared: 3, actual: 2 }, 99);
        assert_eq!(w.to_string(), "BTS-1 says 3 but 2 were read at byte 99");
    }
}
