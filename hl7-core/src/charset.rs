//! Character sets: HL7 table 0211 (MSH-18) mapped onto `encoding_rs`.
//!
//! Input is bytes. What decides how a message's bytes become text, in order:
//! a leading UTF-8 byte order mark; otherwise a character set the caller
//! forces ([`ParseOptions::force_charset`](crate::ParseOptions)); otherwise
//! MSH-18; otherwise the caller's default (UTF-8, of which ASCII is a subset).
//!
//! Labels are mapped the way senders mean them, not only the way the table
//! spells them: `8859/1` is decoded as Windows-1252 (the WHATWG reading of
//! Latin-1, which agrees with ISO-8859-1 on every printable character and
//! also decodes the 0x80–0x9F bytes Windows senders put there), `8859/9` as
//! Windows-1254, `ISO IR100` as Latin-1, `ISO IR192` as UTF-8, and any WHATWG
//! label (`windows-1252`, `latin1`, `utf-8`) is accepted too.
//!
//! Undecodable bytes are an error naming their offset; they are replaced by
//! U+FFFD only when the caller asks for lenient decoding. There is no silent
//! mojibake.

use std::borrow::Cow;

use encoding_rs::{DecoderResult, Encoding};

/// A character set a message can be decoded from and encoded to.
///
/// # Examples
///
/// ```
/// use hl7_core::Charset;
///
/// let latin1 = Charset::from_hl7("8859/1").unwrap();
/// assert_eq!(latin1.decode(b"J\xd6RG").unwrap(), "JÖRG");
/// assert_eq!(latin1.encode("JÖRG").as_ref(), b"J\xd6RG");
/// assert_eq!(Charset::from_hl7("UNICODE UTF-8"), Some(Charset::UTF_8));
/// // an invalid byte is an error with its offset, never silent mojibake
/// assert_eq!(Charset::UTF_8.decode(b"ab\xff").unwrap_err(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset {
    encoding: &'static Encoding,
}

impl Default for Charset {
    fn default() -> Self {
        Charset::UTF_8
    }
}

fn normalize(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for w in label.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w.to_ascii_uppercase());
    }
    out
}

/// The outcome of looking up an MSH-18 label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Known(Charset),
    Unsupported,
    Unknown,
}

impl Charset {
    /// UTF-8 (also used for ASCII and an empty MSH-18).
    pub const UTF_8: Charset = Charset { encoding: encoding_rs::UTF_8 };

    /// Looks up an HL7 table 0211 value (or a common alias, or a WHATWG
    /// encoding label). `None` for an unknown label or one that cannot be
    /// carried in ER7 (UTF-16, UTF-32).
    pub fn from_hl7(label: &str) -> Option<Charset> {
        match lookup(label) {
            Lookup::Known(c) => Some(c),
            _ => None,
        }
    }

    /// The `encoding_rs` name of the encoding, e.g. `"windows-1252"`.
    pub fn name(&self) -> &'static str {
        self.encoding.name()
    }

    pub(crate) fn encoding(&self) -> &'static Encoding {
        self.encoding
    }

    /// True for UTF-8 (and therefore ASCII).
    pub fn is_utf8(&self) -> bool {
        self.encoding == encoding_rs::UTF_8
    }

    /// Decodes bytes into text, borrowing when the bytes are already valid
    /// UTF-8 text in this character set.
    ///
    /// # Errors
    ///
    /// The byte offset of the first sequence that is not valid in this
    /// character set.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, usize> {
        if self.is_utf8() {
            return std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| e.valid_up_to());
        }
        let ascii = Encoding::ascii_valid_up_to(bytes);
        if ascii == bytes.len() && self.encoding.is_ascii_compatible() {
            // Every supported encoding agrees with ASCII on ASCII bytes.
            return Ok(Cow::Borrowed(std::str::from_utf8(bytes).map_err(|e| e.valid_up_to())?));
        }
        let mut decoder = self.encoding.new_decoder_without_bom_handling();
        let cap = decoder.max_utf8_buffer_length_without_replacement(bytes.len()).unwrap_or(bytes.len() * 3);
        let mut out = String::with_capacity(cap);
        let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
        match result {
            DecoderResult::InputEmpty => Ok(Cow::Owned(out)),
            DecoderResult::Malformed(bad, after) => Err(read - bad as usize - after as usize),
            DecoderResult::OutputFull => Err(read),
        }
    }

    /// Decodes bytes into text, replacing invalid sequences with U+FFFD.
    /// Returns the text and whether anything was replaced.
    pub fn decode_lossy<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, str>, bool) {
        let (text, had_errors) = self.encoding.decode_without_bom_handling(bytes);
        (text, had_errors)
    }

    /// Encodes text into this character set's bytes (borrowing for UTF-8).
    /// Characters the set cannot represent become HTML-style numeric
    /// references, as `encoding_rs` does; text that came from decoding in the
    /// same set always round-trips.
    pub fn encode<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        let (bytes, _, _) = self.encoding.encode(text);
        bytes
    }
}

pub(crate) fn lookup(label: &str) -> Lookup {
    use encoding_rs as e;
    let n = normalize(label);
    let enc = match n.as_str() {
        "" | "ASCII" | "ISO IR6" | "UNICODE UTF-8" | "UTF-8" | "UTF8" | "ISO IR192" | "UNICODE" => e::UTF_8,
        "8859/1" | "ISO IR100" | "ISO-8859-1" | "ISO8859-1" | "LATIN1" | "LATIN-1" | "CP1252" => e::WINDOWS_1252,
        "8859/2" | "ISO IR101" => e::ISO_8859_2,
        "8859/3" | "ISO IR109" => e::ISO_8859_3,
        "8859/4" | "ISO IR110" => e::ISO_8859_4,
        "8859/5" | "ISO IR144" => e::ISO_8859_5,
        "8859/6" | "ISO IR127" => e::ISO_8859_6,
        "8859/7" | "ISO IR126" => e::ISO_8859_7,
        "8859/8" | "ISO IR138" => e::ISO_8859_8,
        "8859/9" | "ISO IR148" => e::WINDOWS_1254,
        "8859/15" | "ISO IR203" => e::ISO_8859_15,
        "GB 18030-2000" | "GB18030" => e::GB18030,
        "BIG-5" | "BIG5" => e::BIG5,
        "KS X 1001" => e::EUC_KR,
        "UNICODE UTF-16" | "UNICODE UTF-32" | "UTF-16" | "UTF-32" => return Lookup::Unsupported,
        other => match Encoding::for_label(other.as_bytes()) {
            Some(enc) if enc == e::UTF_16BE || enc == e::UTF_16LE || enc == e::REPLACEMENT => {
                return Lookup::Unsupported
            }
            Some(enc) => enc,
            None => return Lookup::Unknown,
        },
    };
    Lookup::Known(Charset { encoding: enc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_0211_values() {
        for (label, name) in [
            ("ASCII", "UTF-8"),
            ("8859/1", "windows-1252"),
            ("8859/2", "ISO-8859-2"),
            ("8859/5", "ISO-8859-5"),
            ("8859/7", "ISO-8859-7"),
            ("8859/15", "ISO-8859-15"),
            ("ISO IR100", "windows-1252"),
            ("unicode utf-8", "UTF-8"),
            ("UNICODE  UTF-8", "UTF-8"),
            ("windows-1252", "windows-1252"),
        ] {
            assert_eq!(Charset::from_hl7(label).map(|c| c.name()), Some(name), "{label}");
        }
        assert_eq!(lookup("UNICODE UTF-16"), Lookup::Unsupported);
        assert_eq!(lookup("KLINGON"), Lookup::Unknown);
    }

    #[test]
    fn windows_1252_bytes_labelled_latin1_decode_as_meant() {
        let c = Charset::from_hl7("8859/1").unwrap();
        assert_eq!(c.decode(b"\x80 5").unwrap(), "€ 5");
    }

    #[test]
    fn invalid_bytes_name_their_offset() {
        let c = Charset::from_hl7("8859/3").unwrap(); // 0xA5 is unassigned in ISO-8859-3
        assert_eq!(c.decode(b"abc\xa5").unwrap_err(), 3);
        assert_eq!(Charset::UTF_8.decode(b"ok \xc3").unwrap_err(), 3);
        let (t, replaced) = Charset::UTF_8.decode_lossy(b"ok \xff!");
        assert_eq!(t, "ok \u{fffd}!");
        assert!(replaced);
    }

    #[test]
    fn ascii_borrows() {
        let c = Charset::from_hl7("8859/1").unwrap();
        assert!(matches!(c.decode(b"plain"), Ok(Cow::Borrowed(_))));
    }
}
