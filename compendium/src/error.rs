//! The one error type of the crate.

use std::fmt;

/// Where in an input a problem is: the source (a file name, or `tests` /
/// `panels` when none was given), a 1-based line and column, and the CSV
/// column or JSON field name when known.
///
/// For CSV the column counts CSV fields (column 10 is the tenth field of the
/// row); for JSON it counts characters, as `serde_json` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file or table the problem is in.
    pub source: Option<String>,
    /// 1-based line (for a CSV record spread over several lines, its first line).
    pub line: u64,
    /// 1-based column: the CSV field number, or the JSON character column.
    pub column: u64,
    /// The column or field name (`price`, `aoe` …).
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.source {
            write!(f, "{s}: ")?;
        }
        write!(f, "line {}, column {}", self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, " ({field})")?;
        }
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A header lacks a required column.
    #[error("missing column {0:?}")]
    MissingColumn(String),
    /// A header has a column this format does not know.
    #[error("unknown column {0:?}")]
    UnknownColumn(String),
    /// A header names a column twice.
    #[error("duplicate column {0:?}")]
    DuplicateColumn(String),
    /// A row has more or fewer fields than the header.
    #[error("{found} fields, expected {expected}")]
    FieldCount {
        /// Fields in the row.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A required value is empty.
    #[error("value required")]
    Required,
    /// Bytes that are not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A test, panel, question or answer code with characters a code cannot have.
    #[error("invalid code {0:?}")]
    InvalidCode(String),
    /// A price that is not a non-negative decimal with at most 4 decimals.
    #[error("invalid price {0:?}")]
    InvalidPrice(String),
    /// A date that is not `YYYY-MM-DD` (or `YYYYMMDD`).
    #[error("invalid date {0:?}")]
    InvalidDate(String),
    /// A status other than `active` or `discontinued`.
    #[error("invalid status {0:?} (active or discontinued)")]
    InvalidStatus(String),
    /// `replaced_by` on a test that is active.
    #[error("replaced_by on an active test")]
    ReplacementOnActive,
    /// A test replaced by itself, or by a code that is not a test.
    #[error("unknown replacement test {0:?}")]
    UnknownReplacement(String),
    /// An AOE item that does not read `code:question:type:required`.
    #[error("invalid AOE item {item:?}: {reason}")]
    InvalidAoe {
        /// The item as written.
        item: String,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// One AOE question code with two definitions (question, type or answers).
    #[error("AOE question {0:?} defined differently in another test")]
    ConflictingAoe(String),
    /// A code used twice (two tests, two panels, or a panel and a test).
    #[error("duplicate code {code:?} (first on line {first_line})")]
    DuplicateCode {
        /// The code.
        code: String,
        /// Where it was first seen (0 when not read from a file).
        first_line: u64,
    },
    /// A panel component that is not a test of the catalog.
    #[error("unknown component test {0:?}")]
    UnknownComponent(String),
    /// A panel without components, or naming one twice.
    #[error("invalid components: {0}")]
    InvalidComponents(&'static str),
    /// The input is not valid CSV.
    #[error("invalid CSV: {0}")]
    Csv(String),
    /// The input is not valid JSON of the expected shape.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A JSON test or panel of the wrong shape (an unknown field, a number
    /// for a text …); unlike [`ErrorKind::Json`], about one record only.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// An import with bad rows, rejected as a whole (nothing was imported).
    #[error("import rejected: {} bad row(s), nothing imported", .0.len())]
    Rejected(Vec<Error>),
    /// No version with this number.
    #[error("no version {0}")]
    UnknownVersion(u32),
    /// A compendium file whose versions are not numbered 1, 2, 3 …
    #[error("version {found} where version {expected} was expected")]
    VersionOrder {
        /// The number found.
        found: u32,
        /// The number expected.
        expected: u32,
    },
    /// An EMR code map that maps a code twice.
    #[error("{0:?} is mapped twice")]
    DuplicateMapping(String),
    /// A message that is not the expected HL7 message (an MFK, an MFN).
    #[error("invalid {expected} message: {reason}")]
    InvalidMessage {
        /// What was expected (`MFK`).
        expected: &'static str,
        /// Why it is not.
        reason: String,
    },
}

/// An error, with its [`Location`] when it comes from an input.
///
/// Messages are short and fixed: `tests.csv: line 4, column 10 (price):
/// invalid price "4x"`.
///
/// # Examples
///
/// ```
/// use compendium::{Error, ErrorKind, Location};
///
/// let e = Error::new(ErrorKind::InvalidPrice("4x".into())).at(Location {
///     source: Some("tests.csv".into()),
///     line: 4,
///     column: 10,
///     field: Some("price".into()),
/// });
/// assert_eq!(e.to_string(), r#"tests.csv: line 4, column 10 (price): invalid price "4x""#);
/// assert_eq!(e.location().unwrap().line, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    location: Option<Box<Location>>,
}

impl Error {
    /// An error without location.
    pub fn new(kind: ErrorKind) -> Error {
        Error { kind, location: None }
    }

    /// The same error at `location`.
    pub fn at(mut self, location: Location) -> Error {
        self.location = Some(Box::new(location));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where, when the error comes from an input.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_deref()
    }

    /// The errors of each bad row, for [`ErrorKind::Rejected`]; empty otherwise.
    pub fn rows(&self) -> &[Error] {
        match &self.kind {
            ErrorKind::Rejected(rows) => rows,
            _ => &[],
        }
    }

    /// Whether the error is about one row (a bad value, a duplicate code …),
    /// which an import may skip, rather than about the whole input (a bad
    /// header, invalid JSON, an I/O error), which it never skips.
    pub fn is_row_error(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::MissingColumn(_)
                | ErrorKind::UnknownColumn(_)
                | ErrorKind::DuplicateColumn(_)
                | ErrorKind::Csv(_)
                | ErrorKind::Json(_)
                | ErrorKind::Io(_)
                | ErrorKind::Rejected(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for Error {}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::new(ErrorKind::Io(e.to_string()))
    }
}
