//! The encoding characters of a message (MSH-1 and MSH-2).

use std::fmt;

/// The delimiters of one message: MSH-1 (field separator) and MSH-2 (the
/// encoding characters, in the order component, repetition, escape,
/// subcomponent and, from v2.7, truncation).
///
/// Every message carries its own delimiters; a file may mix messages with
/// different ones.
///
/// # Examples
///
/// ```
/// use hl7_core::Delimiters;
///
/// let d = Delimiters::default();
/// assert_eq!(d.to_string(), "|^~\\&");
/// let d = Delimiters::new(b'#', *b"*+!@", None)?;
/// assert_eq!(d.repetition, b'+');
/// assert!(Delimiters::new(b'|', *b"^^\\&", None).is_err()); // repeated character
/// # Ok::<(), hl7_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// MSH-1, separates fields (usually `|`).
    pub field: u8,
    /// Separates components (usually `^`).
    pub component: u8,
    /// Separates repetitions of a field (usually `~`).
    pub repetition: u8,
    /// Starts and ends an escape sequence (usually `\`).
    pub escape: u8,
    /// Separates subcomponents (usually `&`).
    pub subcomponent: u8,
    /// The v2.7 truncation character (usually `#`), when MSH-2 has five characters.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

/// True for the bytes HL7 allows as a delimiter: printable ASCII that is
/// neither a letter nor a digit nor a space.
pub(crate) fn is_delimiter_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

impl Delimiters {
    /// Builds delimiters from MSH-1, the four classic encoding characters
    /// (component, repetition, escape, subcomponent) and an optional v2.7
    /// truncation character.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidFieldSeparator`](crate::ErrorKind::InvalidFieldSeparator)
    /// or [`ErrorKind::InvalidEncodingCharacters`](crate::ErrorKind::InvalidEncodingCharacters)
    /// when a character is not printable, non-alphanumeric ASCII, or when two
    /// characters are equal.
    pub fn new(field: u8, encoding: [u8; 4], truncation: Option<u8>) -> Result<Self, crate::Error> {
        if !is_delimiter_byte(field) {
            return Err(crate::Error::new(crate::ErrorKind::InvalidFieldSeparator, 0));
        }
        let mut all = vec![field];
        all.extend_from_slice(&encoding);
        all.extend(truncation);
        for (i, &c) in all.iter().enumerate() {
            if !is_delimiter_byte(c) || all[..i].contains(&c) {
                return Err(crate::Error::new(crate::ErrorKind::InvalidEncodingCharacters, 0));
            }
        }
        Ok(Delimiters {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding[2],
            subcomponent: encoding[3],
            truncation,
        })
    }

    /// Reads MSH-1 and MSH-2 from the start of an MSH segment (`MSH|^~\&|...`).
    ///
    /// Returns the delimiters and the length of MSH-2 (4 or 5). Offsets in
    /// errors are relative to `msh`.
    pub(crate) fn from_msh(msh: &[u8]) -> Result<(Self, usize), crate::Error> {
        use crate::{Error, ErrorKind};
        let field = match msh.get(3) {
            None | Some(b'\r') | Some(b'\n') => return Err(Error::new(ErrorKind::MissingFieldSeparator, 3)),
            Some(&b) => b,
        };
        if !is_delimiter_byte(field) {
            return Err(Error::new(ErrorKind::InvalidFieldSeparator, 3));
        }
        let rest = &msh[4..];
        let len = rest.iter().position(|&b| b == field || b == b'\r' || b == b'\n').unwrap_or(rest.len());
        let enc = &rest[..len];
        let bad = || {
            Error::new(ErrorKind::InvalidEncodingCharacters, 4).with_path(crate::Path::new_unchecked(
                *b"MSH",
                1,
                Some(2),
                None,
                None,
                None,
            ))
        };
        if len != 4 && len != 5 {
            return Err(bad());
        }
        let trunc = if len == 5 { Some(enc[4]) } else { None };
        let d = Delimiters::new(field, [enc[0], enc[1], enc[2], enc[3]], trunc).map_err(|_| bad())?;
        Ok((d, len))
    }

    /// The encoding characters as MSH-2 spells them (`^~\&` or `^~\&#`).
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        for b in [self.component, self.repetition, self.escape, self.subcomponent] {
            s.push(b as char);
        }
        if let Some(t) = self.truncation {
            s.push(t as char);
        }
        s
    }
}

impl fmt::Display for Delimiters {
    /// Prints MSH-1 followed by MSH-2, as they appear after `MSH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.field as char, self.encoding_characters())
    }
}
