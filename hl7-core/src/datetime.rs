//! HL7 dates and times (DT, DTM/TS) that keep their precision and offset.
//!
//! HL7 sends `2024`, `202401`, `20240116`, `202401161405`,
//! `20240116140500.1234-0500`: each says exactly how much is known. A
//! [`Timestamp`] keeps that precision and the offset (or its absence), prints
//! back the same HL7 text, and serializes in JSON as ISO 8601 truncated to the
//! same precision (`"2024-01"`, `"2024-01-16T14:05:00.1234-05:00"`). A value
//! that is not a valid date or time is an error, never a silent default.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// How much of a timestamp is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYYMM`
    Month,
    /// `YYYYMMDD`
    Day,
    /// `YYYYMMDDHH`
    Hour,
    /// `YYYYMMDDHHMM`
    Minute,
    /// `YYYYMMDDHHMMSS`
    Second,
    /// `YYYYMMDDHHMMSS.S` to `.SSSS`: the number of fraction digits.
    Fraction(u8),
}

/// A date or date-time as HL7 sent it.
///
/// # Examples
///
/// ```
/// use hl7_core::datetime::{Precision, Timestamp};
///
/// let t: Timestamp = "20240116140500-0500".parse()?;
/// assert_eq!(t.precision(), Precision::Second);
/// assert_eq!(t.to_hl7(), "20240116140500-0500");
/// assert_eq!(t.to_iso(), "2024-01-16T14:05:00-05:00");
/// assert_eq!("2024-01-16T14:05:00-05:00".parse::<Timestamp>()?, t);
///
/// let dob: Timestamp = "19700101".parse()?;
/// assert_eq!(dob.to_iso(), "1970-01-01");
/// assert!("20240230".parse::<Timestamp>().is_err()); // no February 30th
/// # Ok::<(), hl7_core::datetime::TimestampError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    datetime: NaiveDateTime,
    precision: Precision,
    offset: Option<FixedOffset>,
}

/// Text that is not an HL7 (or ISO 8601) date/time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date/time {0:?}")]
pub struct TimestampError(String);

impl Timestamp {
    /// A timestamp from parts. What lies below the precision is dropped
    /// (a day-precision timestamp has no time), so equal HL7 text means
    /// equal values.
    pub fn new(datetime: NaiveDateTime, precision: Precision, offset: Option<FixedOffset>) -> Timestamp {
        let d = datetime.date();
        let date = match precision {
            Precision::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d),
            Precision::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d),
            _ => d,
        };
        let t = datetime.time();
        let time = match precision {
            Precision::Year | Precision::Month | Precision::Day => NaiveTime::MIN,
            Precision::Hour => NaiveTime::from_hms_opt(t.hour(), 0, 0).unwrap_or(t),
            Precision::Minute => NaiveTime::from_hms_opt(t.hour(), t.minute(), 0).unwrap_or(t),
            Precision::Second => NaiveTime::from_hms_opt(t.hour(), t.minute(), t.second()).unwrap_or(t),
            Precision::Fraction(n) => {
                let unit = 10u32.pow(9 - u32::from(n.min(9)));
                NaiveTime::from_hms_nano_opt(t.hour(), t.minute(), t.second(), t.nanosecond() / unit * unit)
                    .unwrap_or(t)
            }
        };
        let offset = if precision >= Precision::Hour { offset } else { None };
        Timestamp { datetime: date.and_time(time), precision, offset }
    }

    /// A day (birth dates, DT values).
    pub fn date(date: NaiveDate) -> Timestamp {
        Timestamp { datetime: date.and_time(NaiveTime::MIN), precision: Precision::Day, offset: None }
    }

    /// The date and time, with unknown parts at their minimum.
    pub fn naive(&self) -> NaiveDateTime {
        self.datetime
    }

    /// How much is known.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The UTC offset, if one was sent.
    pub fn offset(&self) -> Option<FixedOffset> {
        self.offset
    }

    /// Parses HL7 `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
    ///
    /// # Errors
    ///
    /// When the text does not have that shape or names an impossible date
    /// or time.
    pub fn parse_hl7(s: &str) -> Result<Timestamp, TimestampError> {
        let err = || TimestampError(s.to_owned());
        let (body, offset) = match s.find(['+', '-']) {
            Some(i) => (&s[..i], Some(parse_offset(&s[i..]).ok_or_else(err)?)),
            None => (s, None),
        };
        let (digits, frac) = match body.split_once('.') {
            Some((d, f)) => (d, Some(f)),
            None => (body, None),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let precision = match (digits.len(), frac) {
            (4, None) => Precision::Year,
            (6, None) => Precision::Month,
            (8, None) => Precision::Day,
            (10, None) => Precision::Hour,
            (12, None) => Precision::Minute,
            (14, None) => Precision::Second,
            (14, Some(f)) if (1..=4).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
                Precision::Fraction(f.len() as u8)
            }
            _ => return Err(err()),
        };
        let num =
            |a: usize, b: usize, default: u32| -> u32 { digits.get(a..b).map_or(default, |x| x.parse().unwrap_or(0)) };
        let date = NaiveDate::from_ymd_opt(num(0, 4, 0) as i32, num(4, 6, 1), num(6, 8, 1)).ok_or_else(err)?;
        let nanos = frac.map_or(0, |f| {
            let padded = format!("{f:0<9}");
            padded.parse::<u32>().unwrap_or(0)
        });
        let time =
            NaiveTime::from_hms_nano_opt(num(8, 10, 0), num(10, 12, 0), num(12, 14, 0), nanos).ok_or_else(err)?;
        Ok(Timestamp { datetime: date.and_time(time), precision, offset })
    }

    /// Parses ISO 8601 as [`to_iso`](Timestamp::to_iso) writes it.
    ///
    /// # Errors
    ///
    /// When the text is not such a value.
    pub fn parse_iso(s: &str) -> Result<Timestamp, TimestampError> {
        let err = || TimestampError(s.to_owned());
        // Split an offset off the time part only (dates contain '-').
        let (main, offset) = match s.find('T') {
            Some(t) => {
                let time = &s[t..];
                if let Some(stripped) = time.strip_suffix('Z') {
                    (&s[..t + stripped.len()], Some(FixedOffset::east_opt(0).ok_or_else(err)?))
                } else if let Some(i) = time.find(['+', '-']) {
                    (&s[..t + i], Some(parse_offset(&time[i..].replace(':', "")).ok_or_else(err)?))
                } else {
                    (s, None)
                }
            }
            None => (s, None),
        };
        let hl7: String = main.chars().filter(|c| c.is_ascii_digit() || *c == '.').collect();
        let shape_ok = main.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'T' | b':' | b'.'));
        if !shape_ok {
            return Err(err());
        }
        let mut t = Timestamp::parse_hl7(&hl7).map_err(|_| err())?;
        t.offset = offset;
        let canonical = match s.strip_suffix('Z') {
            Some(head) => format!("{head}+00:00"),
            None => s.to_owned(),
        };
        if t.to_iso() != canonical {
            return Err(err());
        }
        Ok(t)
    }

    /// The HL7 text, as sent.
    pub fn to_hl7(&self) -> String {
        let d = &self.datetime;
        let mut s = format!("{:04}", d.year());
        let p = self.precision;
        if p >= Precision::Month {
            s.push_str(&format!("{:02}", d.month()));
        }
        if p >= Precision::Day {
            s.push_str(&format!("{:02}", d.day()));
        }
        if p >= Precision::Hour {
            s.push_str(&format!("{:02}", d.hour()));
        }
        if p >= Precision::Minute {
            s.push_str(&format!("{:02}", d.minute()));
        }
        if p >= Precision::Second {
            s.push_str(&format!("{:02}", d.second()));
        }
        if let Precision::Fraction(n) = p {
            let nanos = format!("{:09}", d.nanosecond());
            s.push('.');
            s.push_str(&nanos[..n as usize]);
        }
        if let Some(o) = self.offset {
            s.push_str(&offset_text(o, false));
        }
        s
    }

    /// ISO 8601, truncated to the same precision (`2024-01-16T14:05-05:00`).
    pub fn to_iso(&self) -> String {
        let d = &self.datetime;
        let p = self.precision;
        let mut s = format!("{:04}", d.year());
        if p >= Precision::Month {
            s.push_str(&format!("-{:02}", d.month()));
        }
        if p >= Precision::Day {
            s.push_str(&format!("-{:02}", d.day()));
        }
        if p >= Precision::Hour {
            s.push_str(&format!("T{:02}", d.hour()));
        }
        if p >= Precision::Minute {
            s.push_str(&format!(":{:02}", d.minute()));
        }
        if p >= Precision::Second {
            s.push_str(&format!(":{:02}", d.second()));
        }
        if let Precision::Fraction(n) = p {
            let nanos = format!("{:09}", d.nanosecond());
            s.push('.');
            s.push_str(&nanos[..n as usize]);
        }
        if let Some(o) = self.offset {
            if p >= Precision::Hour {
                s.push_str(&offset_text(o, true));
            }
        }
        s
    }
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = &s[1..];
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

fn offset_text(o: FixedOffset, colon: bool) -> String {
    let secs = o.local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    if colon {
        format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    } else {
        format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    /// Accepts HL7 (`20240116`) or ISO 8601 (`2024-01-16`).
    fn from_str(s: &str) -> Result<Timestamp, TimestampError> {
        if s.len() >= 5 && s.as_bytes()[4] == b'-' {
            Timestamp::parse_iso(s)
        } else {
            Timestamp::parse_hl7(s)
        }
    }
}

impl fmt::Display for Timestamp {
    /// ISO 8601 at the timestamp's precision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_iso())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_round_trips_in_both_forms() {
        for (hl7, iso) in [
            ("2024", "2024"),
            ("202401", "2024-01"),
            ("20240116", "2024-01-16"),
            ("2024011614", "2024-01-16T14"),
            ("202401161405", "2024-01-16T14:05"),
            ("20240116140500", "2024-01-16T14:05:00"),
            ("20240116140500.1", "2024-01-16T14:05:00.1"),
            ("20240116140500.1234+0130", "2024-01-16T14:05:00.1234+01:30"),
            ("202401161405-0500", "2024-01-16T14:05-05:00"),
            ("20240116140500+0000", "2024-01-16T14:05:00+00:00"),
        ] {
            let t = Timestamp::parse_hl7(hl7).unwrap();
            assert_eq!(t.to_hl7(), hl7);
            assert_eq!(t.to_iso(), iso);
            assert_eq!(iso.parse::<Timestamp>().unwrap(), t, "{iso}");
        }
        assert_eq!("2024-01-16T14:05:00Z".parse::<Timestamp>().unwrap().to_hl7(), "20240116140500+0000");
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "",
            "24",
            "2024013",
            "20241301",
            "20240230",
            "20240116250000",
            "2024011614050",
            "20240116-05",
            "2024O1",
            "20240116140500.12345",
            "2024-1-16",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?}");
        }
    }
}
