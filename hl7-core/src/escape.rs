//! HL7 escape sequences (v2.5 §2.7, v2.7 truncation).
//!
//! Decoding happens on a leaf value, after it has been split into
//! repetitions, components and subcomponents, so an escaped delimiter never
//! splits anything. A sequence is the escape character, a body and the next
//! escape character (no nesting):
//!
//! | body | decodes to |
//! | --- | --- |
//! | `F` `S` `T` `R` `E` | the field, component, subcomponent, repetition, escape character |
//! | `P` (only when MSH-2 has 5 characters) | the truncation character |
//! | `Xhh…` (hex pairs) | those bytes, decoded in the message's character set; adjacent hex escapes are joined first, so a UTF-8 character split over two escapes still decodes |
//! | anything else: `H` `N` `.br` `.sp` `.in` `Z…` `C…` `M…` … | kept verbatim, escape characters included |
//! | an escape character with no closing one | kept verbatim |
//!
//! Why the formatting escapes stay: HL7 defines them as instructions to the
//! application that *displays* a formatted-text value, not as characters. A
//! parser that turns `\.br\` into CR or drops `\Zlocal\` loses information the
//! receiver needs. Nothing is ever silently dropped.

use std::borrow::Cow;

use crate::{Charset, Delimiters};

/// Decodes the escape sequences of a leaf value. Borrows when there is
/// nothing to decode.
///
/// # Examples
///
/// ```
/// use std::borrow::Cow;
/// use hl7_core::{escape, Charset, Delimiters};
///
/// let d = Delimiters::default();
/// assert_eq!(escape::decode(r"O\S\NEIL", &d, Charset::UTF_8), "O^NEIL");
/// assert_eq!(escape::decode(r"JOS\XC3A9\", &d, Charset::UTF_8), "JOSé");
/// // unknown escapes and stray escape characters are kept, never dropped
/// assert_eq!(escape::decode(r"x\Zfoo\y bad\escape", &d, Charset::UTF_8), r"x\Zfoo\y bad\escape");
/// assert!(matches!(escape::decode("plain", &d, Charset::UTF_8), Cow::Borrowed(_)));
/// ```
pub fn decode<'t>(raw: &'t str, d: &Delimiters, charset: Charset) -> Cow<'t, str> {
    let esc = d.escape;
    let bytes = raw.as_bytes();
    let Some(first) = memchr::memchr(esc, bytes) else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut i = first;
    // Bytes of consecutive \X..\ escapes, decoded together.
    let mut hex: Vec<u8> = Vec::new();
    while i < bytes.len() {
        if bytes[i] != esc {
            flush_hex(&mut hex, &mut out, charset);
            let next = memchr::memchr(esc, &bytes[i..]).map_or(bytes.len(), |p| i + p);
            out.push_str(&raw[i..next]);
            i = next;
            continue;
        }
        let Some(close) = memchr::memchr(esc, &bytes[i + 1..]).map(|p| i + 1 + p) else {
            flush_hex(&mut hex, &mut out, charset);
            out.push_str(&raw[i..]);
            break;
        };
        let body = &raw[i + 1..close];
        let single = match body.as_bytes() {
            [b'F'] => Some(d.field),
            [b'S'] => Some(d.component),
            [b'T'] => Some(d.subcomponent),
            [b'R'] => Some(d.repetition),
            [b'E'] => Some(esc),
            [b'P'] => d.truncation,
            _ => None,
        };
        if let Some(c) = single {
            flush_hex(&mut hex, &mut out, charset);
            out.push(c as char);
        } else if let Some(h) = hex_body(body) {
            hex.extend(h);
        } else {
            flush_hex(&mut hex, &mut out, charset);
            out.push_str(&raw[i..=close]);
        }
        i = close + 1;
    }
    flush_hex(&mut hex, &mut out, charset);
    Cow::Owned(out)
}

fn hex_body(body: &str) -> Option<impl Iterator<Item = u8> + '_> {
    let digits = body.strip_prefix('X')?.as_bytes();
    if digits.is_empty() || digits.len() % 2 != 0 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(digits.chunks_exact(2).map(|p| (nibble(p[0]) << 4) | nibble(p[1])))
}

fn nibble(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

fn flush_hex(hex: &mut Vec<u8>, out: &mut String, charset: Charset) {
    if !hex.is_empty() {
        out.push_str(&charset.decode_lossy(hex).0);
        hex.clear();
    }
}

/// Escapes text so it can be written as one leaf value: every delimiter
/// becomes its escape (`|` → `\F\`, `^` → `\S\`, `&` → `\T\`, `~` → `\R\`,
/// `\` → `\E\`, the truncation character → `\P\`), and CR and LF become
/// `\X0D\` and `\X0A\` so the value never breaks a segment. Borrows when there
/// is nothing to escape.
///
/// # Examples
///
/// ```
/// use hl7_core::{escape, Charset, Delimiters};
///
/// let d = Delimiters::default();
/// let e = escape::encode("Salt & Pepper | 2\r\n", &d);
/// assert_eq!(e, r"Salt \T\ Pepper \F\ 2\X0D\\X0A\");
/// assert_eq!(escape::decode(&e, &d, Charset::UTF_8), "Salt & Pepper | 2\r\n");
/// ```
pub fn encode<'t>(text: &'t str, d: &Delimiters) -> Cow<'t, str> {
    let special = |b: u8| {
        b == d.field
            || b == d.component
            || b == d.repetition
            || b == d.escape
            || b == d.subcomponent
            || Some(b) == d.truncation
            || b == b'\r'
            || b == b'\n'
    };
    let Some(first) = text.bytes().position(special) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    let e = d.escape as char;
    let mut skip_until = first;
    for (i, c) in text[first..].char_indices().map(|(i, c)| (i + first, c)) {
        if i < skip_until {
            continue;
        }
        if c == e {
            // A formatting or local escape (\.br\, \H\, \Zxx\ …) decodes to itself,
            // so it is written as it is: decode(encode(x)) stays x, and
            // formatted text keeps its formatting.
            if let Some(len) = kept_escape(&text[i..], d.escape) {
                out.push_str(&text[i..i + len]);
                skip_until = i + len;
                continue;
            }
        }
        let code = if c.is_ascii() { Some(c as u8) } else { None };
        match code {
            Some(b) if b == d.field => out.extend([e, 'F', e]),
            Some(b) if b == d.component => out.extend([e, 'S', e]),
            Some(b) if b == d.subcomponent => out.extend([e, 'T', e]),
            Some(b) if b == d.repetition => out.extend([e, 'R', e]),
            Some(b) if b == d.escape => out.extend([e, 'E', e]),
            Some(b) if Some(b) == d.truncation => out.extend([e, 'P', e]),
            Some(b'\r') => out.extend([e, 'X', '0', 'D', e]),
            Some(b'\n') => out.extend([e, 'X', '0', 'A', e]),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The length of a kept-verbatim escape sequence at the start of `s`:
/// `\H\`, `\N\`, the formatting commands (`\.br\`, `\.sp3\` …) and the local
/// and character-set escapes (`\Z…\`, `\C…\`, `\M…\`).
fn kept_escape(s: &str, esc: u8) -> Option<usize> {
    let b = s.as_bytes();
    let close = memchr::memchr(esc, &b[1..])? + 1;
    let body = &s[1..close];
    let kept = match body.as_bytes() {
        [b'H'] | [b'N'] => true,
        [b'.', rest @ ..] => {
            let (cmd, arg) = rest.split_at(rest.len().min(2));
            matches!(cmd, b"br" | b"fi" | b"nf" | b"ce") && arg.is_empty()
                || matches!(cmd, b"sp" | b"in" | b"ti" | b"sk")
                    && arg.iter().enumerate().all(|(k, c)| c.is_ascii_digit() || (k == 0 && (*c == b'+' || *c == b'-')))
        }
        [b'Z' | b'C' | b'M', rest @ ..] => !rest.is_empty() && rest.iter().all(|c| c.is_ascii_alphanumeric()),
        _ => false,
    };
    kept.then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(decode(r"Pipe\F\Caret\S\Amp\T\Tilde\R\end", &d(), Charset::UTF_8), "Pipe|Caret^Amp&Tilde~end");
        assert_eq!(decode(r"C:\E\LAB", &d(), Charset::UTF_8), r"C:\LAB");
        assert_eq!(decode(r"\E\F\E\", &d(), Charset::UTF_8), r"\F\");
    }

    #[test]
    fn truncation_escape_only_with_five_encoding_characters() {
        let mut d5 = d();
        d5.truncation = Some(b'#');
        assert_eq!(decode(r"APT \P\4", &d5, Charset::UTF_8), "APT #4");
        assert_eq!(decode(r"APT \P\4", &d(), Charset::UTF_8), r"APT \P\4");
        assert_eq!(encode("APT #4", &d5), r"APT \P\4");
    }

    #[test]
    fn hex_is_bytes_in_the_message_charset() {
        // regression: peers decode each byte as Latin-1 and print "Ã©"
        assert_eq!(decode(r"\XC3A9\", &d(), Charset::UTF_8), "é");
        assert_eq!(decode(r"\XC3\\XA9\", &d(), Charset::UTF_8), "é");
        let latin1 = Charset::from_hl7("8859/1").unwrap();
        assert_eq!(decode(r"REN\XC9\", &d(), latin1), "RENÉ");
        assert_eq!(decode(r"\X0d0A\", &d(), Charset::UTF_8), "\r\n");
        assert_eq!(decode(r"\XFF\", &d(), Charset::UTF_8), "\u{fffd}");
        // not hex: verbatim
        assert_eq!(decode(r"\XZZ\ \X1\ \X\", &d(), Charset::UTF_8), r"\XZZ\ \X1\ \X\");
    }

    #[test]
    fn unknown_escapes_and_stray_escape_characters_are_kept_verbatim() {
        // regression: hl7-parser and rust-hl7 lose the text after a stray backslash
        assert_eq!(decode(r"x\Zfoo\y bad\escape", &d(), Charset::UTF_8), r"x\Zfoo\y bad\escape");
        assert_eq!(decode(r"trailing backslash \", &d(), Charset::UTF_8), r"trailing backslash \");
        assert_eq!(decode(r"First line\.br\Second", &d(), Charset::UTF_8), r"First line\.br\Second");
        assert_eq!(decode(r"\H\HIGH\N\", &d(), Charset::UTF_8), r"\H\HIGH\N\");
        assert_eq!(decode(r"\\", &d(), Charset::UTF_8), r"\\");
    }

    #[test]
    fn formatting_escapes_survive_decode_then_encode() {
        for raw in [r"First\.br\Second", r"\H\HIGH\N\", r"\.sp2\x\.in+4\y", r"code \Zlocal1\ here"] {
            let text = decode(raw, &d(), Charset::UTF_8);
            assert_eq!(encode(&text, &d()), raw);
        }
        // a lone backslash is still escaped
        assert_eq!(encode(r"C:\LAB", &d()), r"C:\E\LAB");
    }

    #[test]
    fn encode_then_decode_is_identity() {
        for s in ["", "plain", "a|b^c~d\\e&f", "é ü 🧪", "\r\n\r", r"\F\ literal", "#", r"\.br\", r"\Zx", r"\H\\N"]
        {
            assert_eq!(decode(&encode(s, &d()), &d(), Charset::UTF_8), s);
        }
    }
}
