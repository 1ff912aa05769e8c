//! Terser-style locations: `PID-5-1`, `OBX(2)-5`, `PID-3(2)-4`, `ORC-12-2-1`.
//!
//! One [`Path`] type names every location in a message: it is what
//! [`Message::get`](crate::Message::get) takes, what every
//! [`Error`](crate::Error) carries, and what an ACK's ERR-2 is rendered from.
//! All indexes are 1-based, as HL7 counts: `PID-5` is the fifth field of PID,
//! `OBX(2)` the second OBX segment of the message (counted flat, ignoring
//! message-structure groups).

use std::fmt;
use std::str::FromStr;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while_m_n};
use nom::character::complete::{char, digit1};
use nom::combinator::{all_consuming, map_res, opt};
use nom::sequence::{delimited, preceded};
use nom::IResult;

/// A location in a message, from a whole segment down to a subcomponent.
///
/// # Examples
///
/// ```
/// use hl7_core::Path;
///
/// let p: Path = "OBX(2)-5-1".parse()?;
/// assert_eq!(p.segment(), "OBX");
/// assert_eq!(p.occurrence(), 2);
/// assert_eq!(p.field(), Some(5));
/// assert_eq!(p.component(), Some(1));
/// assert_eq!(p.to_string(), "OBX(2)-5-1");
///
/// // repetition and occurrence 1 are the defaults and print shortest
/// assert_eq!("PID(1)-3(1)-4".parse::<Path>()?.to_string(), "PID-3-4");
/// assert!("PID-0".parse::<Path>().is_err());
/// # Ok::<(), hl7_core::PathError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    segment: [u8; 3],
    occurrence: u32,
    field: Option<u32>,
    repetition: u32,
    component: Option<u32>,
    subcomponent: Option<u32>,
}

/// A path that does not follow `SEG[(n)]-F[(r)][-C[-S]]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {input:?}: expected SEG[(n)][-FIELD[(rep)][-COMPONENT[-SUBCOMPONENT]]] with 1-based indexes, e.g. OBX(2)-5-1")]
pub struct PathError {
    input: String,
}

impl PathError {
    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

pub(crate) fn is_segment_name(name: &[u8]) -> bool {
    name.len() == 3
        && name[0].is_ascii_uppercase()
        && (name[1].is_ascii_uppercase() || name[1].is_ascii_digit())
        && (name[2].is_ascii_uppercase() || name[2].is_ascii_digit())
}

impl Path {
    /// A path naming a whole segment: its first occurrence.
    ///
    /// # Errors
    ///
    /// When `segment` is not three characters `[A-Z][A-Z0-9]{2}`.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = hl7_core::Path::new("OBX")?.with_occurrence(3)?.with_field(5)?;
    /// assert_eq!(p.to_string(), "OBX(3)-5");
    /// # Ok::<(), hl7_core::PathError>(())
    /// ```
    pub fn new(segment: &str) -> Result<Path, PathError> {
        let b = segment.as_bytes();
        if !is_segment_name(b) {
            return Err(PathError { input: segment.to_owned() });
        }
        Ok(Path::new_unchecked([b[0], b[1], b[2]], 1, None, None, None, None))
    }

    pub(crate) fn new_unchecked(
        segment: [u8; 3],
        occurrence: u32,
        field: Option<u32>,
        repetition: Option<u32>,
        component: Option<u32>,
        subcomponent: Option<u32>,
    ) -> Path {
        Path {
            segment,
            occurrence: occurrence.max(1),
            field,
            repetition: repetition.unwrap_or(1).max(1),
            component,
            subcomponent,
        }
    }

    pub(crate) fn at_field(mut self, field: u32) -> Path {
        self.field = Some(field.max(1));
        self
    }

    fn err(&self) -> PathError {
        PathError { input: self.to_string() }
    }

    /// Selects the `n`-th segment of that name (1-based).
    ///
    /// # Errors
    ///
    /// When `n` is 0.
    pub fn with_occurrence(mut self, n: u32) -> Result<Path, PathError> {
        if n == 0 {
            return Err(self.err());
        }
        self.occurrence = n;
        Ok(self)
    }

    /// Selects field `n` (1-based; `MSH-1` is the field separator).
    ///
    /// # Errors
    ///
    /// When `n` is 0.
    pub fn with_field(mut self, n: u32) -> Result<Path, PathError> {
        if n == 0 {
            return Err(self.err());
        }
        self.field = Some(n);
        Ok(self)
    }

    /// Selects repetition `n` of the field (1-based).
    ///
    /// # Errors
    ///
    /// When `n` is 0 or no field is selected.
    pub fn with_repetition(mut self, n: u32) -> Result<Path, PathError> {
        if n == 0 || self.field.is_none() {
            return Err(self.err());
        }
        self.repetition = n;
        Ok(self)
    }

    /// Selects component `n` (1-based).
    ///
    /// # Errors
    ///
    /// When `n` is 0 or no field is selected.
    pub fn with_component(mut self, n: u32) -> Result<Path, PathError> {
        if n == 0 || self.field.is_none() {
            return Err(self.err());
        }
        self.component = Some(n);
        Ok(self)
    }

    /// Selects subcomponent `n` (1-based).
    ///
    /// # Errors
    ///
    /// When `n` is 0 or no component is selected.
    pub fn with_subcomponent(mut self, n: u32) -> Result<Path, PathError> {
        if n == 0 || self.component.is_none() {
            return Err(self.err());
        }
        self.subcomponent = Some(n);
        Ok(self)
    }

    /// The segment name, e.g. `"OBX"`.
    pub fn segment(&self) -> &str {
        // Only ASCII letters and digits are ever stored.
        std::str::from_utf8(&self.segment).unwrap_or("???")
    }

    /// The segment occurrence, 1-based (default 1).
    pub fn occurrence(&self) -> u32 {
        self.occurrence
    }

    /// The field, 1-based, if the path goes below the segment.
    pub fn field(&self) -> Option<u32> {
        self.field
    }

    /// The repetition, 1-based (default 1).
    pub fn repetition(&self) -> u32 {
        self.repetition
    }

    /// The component, 1-based, if the path goes below the field.
    pub fn component(&self) -> Option<u32> {
        self.component
    }

    /// The subcomponent, 1-based, if the path goes below the component.
    pub fn subcomponent(&self) -> Option<u32> {
        self.subcomponent
    }

    /// The path as an HL7 ERL (error location, ERR-2) value:
    /// `segment^occurrence^field^repetition^component^subcomponent`, with the
    /// given component and subcomponent separators.
    ///
    /// # Examples
    ///
    /// ```
    /// let p: hl7_core::Path = "OBX(3)-5-2".parse()?;
    /// assert_eq!(p.to_erl(b'^', b'&'), "OBX^3^5^1^2");
    /// # Ok::<(), hl7_core::PathError>(())
    /// ```
    pub fn to_erl(&self, component: u8, _subcomponent: u8) -> String {
        let c = component as char;
        let mut s = format!("{}{c}{}", self.segment(), self.occurrence);
        if let Some(f) = self.field {
            s.push_str(&format!("{c}{f}{c}{}", self.repetition));
            if let Some(comp) = self.component {
                s.push_str(&format!("{c}{comp}"));
                if let Some(sub) = self.subcomponent {
                    s.push_str(&format!("{c}{sub}"));
                }
            }
        }
        s
    }
}

fn index(input: &str) -> IResult<&str, u32> {
    map_res(digit1, |d: &str| match d.parse::<u32>() {
        Ok(0) | Err(_) => Err(()),
        Ok(n) => Ok(n),
    })(input)
}

fn paren_index(input: &str) -> IResult<&str, u32> {
    delimited(char('('), index, char(')'))(input)
}

type Parsed<'a> = (&'a str, Option<u32>, Option<(u32, Option<u32>, Option<(u32, Option<u32>)>)>);

fn path(input: &str) -> IResult<&str, Parsed<'_>> {
    let (input, seg) = take_while_m_n(3, 3, |c: char| c.is_ascii_uppercase() || c.is_ascii_digit())(input)?;
    let (input, occ) = opt(paren_index)(input)?;
    let (input, rest) = opt(preceded(alt((tag("-"), tag("."))), |i| {
        let (i, f) = index(i)?;
        let (i, r) = opt(paren_index)(i)?;
        let (i, cs) = opt(preceded(alt((tag("-"), tag("."))), |i| {
            let (i, c) = index(i)?;
            let (i, s) = opt(preceded(alt((tag("-"), tag("."))), index))(i)?;
            Ok((i, (c, s)))
        }))(i)?;
        Ok((i, (f, r, cs)))
    }))(input)?;
    Ok((input, (seg, occ, rest)))
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        let err = || PathError { input: s.to_owned() };
        let (_, (seg, occ, rest)) = all_consuming(path)(s).map_err(|_| err())?;
        let b = seg.as_bytes();
        if !is_segment_name(b) {
            return Err(err());
        }
        let (field, rep, comp, sub) = match rest {
            None => (None, None, None, None),
            Some((f, r, None)) => (Some(f), r, None, None),
            Some((f, r, Some((c, s)))) => (Some(f), r, Some(c), s),
        };
        Ok(Path::new_unchecked([b[0], b[1], b[2]], occ.unwrap_or(1), field, rep, comp, sub))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())?;
        if self.occurrence != 1 {
            write!(f, "({})", self.occurrence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if self.repetition != 1 {
                write!(f, "({})", self.repetition)?;
            }
            if let Some(c) = self.component {
                write!(f, "-{c}")?;
                if let Some(s) = self.subcomponent {
                    write!(f, "-{s}")?;
                }
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_contract_examples() {
        for (text, canon) in [
            ("PID-5-1", "PID-5-1"),
            ("OBX(2)-5", "OBX(2)-5"),
            ("PID-3(2)-4", "PID-3(2)-4"),
            ("ORC-12-2-1", "ORC-12-2-1"),
            ("MSH-1", "MSH-1"),
            ("ZA1-1-2", "ZA1-1-2"),
            ("PID", "PID"),
            ("OBX(12)", "OBX(12)"),
            ("PID.5.1", "PID-5-1"),
            ("PID(1)-3(1)-1-1", "PID-3-1-1"),
        ] {
            let p: Path = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.to_string(), canon);
            assert_eq!(p, canon.parse().unwrap());
        }
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "",
            "PI",
            "PIDX-1",
            "pid-5",
            "PID-0",
            "PID-5-0",
            "PID(0)",
            "PID-",
            "PID-5-",
            "PID-5-1-1-1",
            "PID-a",
            "PID(2",
            "1ID-5",
            "PID-99999999999",
            " PID-5",
            "PID-5 ",
        ] {
            assert!(bad.parse::<Path>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn renders_erl() {
        let p: Path = "PID-3(2)-4-1".parse().unwrap();
        assert_eq!(p.to_erl(b'^', b'&'), "PID^1^3^2^4^1");
        let p: Path = "MSH".parse().unwrap();
        assert_eq!(p.to_erl(b'^', b'&'), "MSH^1");
    }
}
