//! Acknowledgements: the ACK of any message, original or enhanced mode.
//!
//! The ACK swaps sender and receiver (MSH-3/4 ↔ MSH-5/6), answers with
//! `ACK^<trigger>^ACK`, echoes MSH-10 in MSA-2, and for a message that
//! failed carries one ERR segment per problem: ERR-2 (error location) is
//! rendered straight from the problem's [`Path`], ERR-3 is the HL7 table
//! 0357 code. Before v2.5 the location and code go in ERR-1 instead.
//!
//! [`AckBuilder::required`] honours MSH-15/16: in enhanced mode an accept
//! ACK (CA/CE/CR) is sent only when MSH-15 asks for it, an application ACK
//! (AA/AE/AR) only when MSH-16 does.

use std::fmt;
use std::str::FromStr;

use crate::builder::{format_timestamp, new_control_id, FieldValue, MessageBuilder, SegmentBuilder};
use crate::error::Error;
use crate::message::Message;
use crate::{Delimiters, Path};

/// MSA-1, the acknowledgement code (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept (enhanced mode).
    CA,
    /// Commit error (enhanced mode).
    CE,
    /// Commit reject (enhanced mode).
    CR,
}

impl AckCode {
    /// True for the accept (commit) codes CA, CE, CR.
    pub fn is_commit(self) -> bool {
        matches!(self, AckCode::CA | AckCode::CE | AckCode::CR)
    }

    /// True for AA and CA.
    pub fn is_success(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an acknowledgement code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown acknowledgement code {0:?} (expected AA, AE, AR, CA, CE or CR)")]
pub struct AckCodeError(String);

impl FromStr for AckCode {
    type Err = AckCodeError;
    fn from_str(s: &str) -> Result<AckCode, AckCodeError> {
        Ok(match s {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return Err(AckCodeError(s.to_owned())),
        })
    }
}

/// ERR-4, the severity (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `E`: the message was not processed as sent.
    Error,
    /// `W`: processed, with a warning.
    Warning,
    /// `I`: information.
    Information,
}

impl Severity {
    fn code(self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Information => "I",
        }
    }
}

/// The description HL7 table 0357 gives a code.
pub fn error_code_text(code: u16) -> &'static str {
    match code {
        0 => "Message accepted",
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        204 => "Unknown key identifier",
        205 => "Duplicate key identifier",
        206 => "Application record locked",
        _ => "Application internal error",
    }
}

/// One problem reported in an ERR segment.
///
/// # Examples
///
/// ```
/// use hl7_core::ack::AckError;
/// let e = AckError::new(103, "Unknown test code").with_path("OBR-4".parse()?);
/// assert_eq!(e.code(), 103);
/// # Ok::<(), hl7_core::PathError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    path: Option<Path>,
    code: u16,
    severity: Severity,
    text: String,
}

impl AckError {
    /// A problem with an HL7 table 0357 code and a description (ERR-7).
    /// Never put message content (PHI) in the description.
    pub fn new(code: u16, text: impl Into<String>) -> AckError {
        AckError { path: None, code, severity: Severity::Error, text: text.into() }
    }

    /// The problem from a parse error: its path, its table 0357 code, its
    /// fixed description.
    pub fn from_error(e: &Error) -> AckError {
        AckError { path: e.path().cloned(), code: e.hl7_error_code(), severity: Severity::Error, text: e.to_string() }
    }

    /// Where the problem is.
    pub fn with_path(mut self, path: Path) -> AckError {
        self.path = Some(path);
        self
    }

    /// The severity (default [`Severity::Error`]).
    pub fn with_severity(mut self, s: Severity) -> AckError {
        self.severity = s;
        self
    }

    /// The table 0357 code.
    pub fn code(&self) -> u16 {
        self.code
    }
}

/// Builds the ACK of a message.
///
/// # Examples
///
/// ```
/// use hl7_core::ack::{AckBuilder, AckCode};
/// use hl7_core::Message;
///
/// let msg = Message::parse(b"MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||OML^O21^OML_O21|LOI001|P|2.5.1|||AL|AL\r")?;
/// let ack = AckBuilder::for_message(&msg, AckCode::AA).with_control_id("ACK001").build();
/// let ack = Message::parse(ack.as_bytes())?;
/// let get = |p: &str| ack.get(&p.parse().unwrap()).map(|e| e.raw().to_owned());
/// assert_eq!(get("MSH-3").as_deref(), Some("LIS"));
/// assert_eq!(get("MSH-5").as_deref(), Some("EHR"));
/// assert_eq!(get("MSH-9").as_deref(), Some("ACK^O21^ACK"));
/// assert_eq!(get("MSA-1").as_deref(), Some("AA"));
/// assert_eq!(get("MSA-2").as_deref(), Some("LOI001"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AckBuilder {
    delims: Delimiters,
    sending: [FieldValue; 2],
    receiving: [FieldValue; 2],
    trigger: String,
    original_id: String,
    processing: FieldValue,
    version: String,
    accept_type: String,
    app_type: String,
    code: AckCode,
    text: Option<String>,
    errors: Vec<AckError>,
    control_id: Option<String>,
    timestamp: Option<String>,
}

fn raw_field(msg: &Message<'_>, n: usize) -> FieldValue {
    msg.msh().field(n).and_then(|f| FieldValue::raw(f.raw()).ok()).unwrap_or_default()
}

fn version_at_least(version: &str, want: &[u32]) -> bool {
    let have: Vec<u32> = version.split('.').map(|p| p.trim().parse().unwrap_or(0)).collect();
    if have.iter().all(|&v| v == 0) {
        return true; // unknown version: assume current
    }
    have.as_slice() >= want
}

impl AckBuilder {
    /// The ACK of a parsed message.
    pub fn for_message(msg: &Message<'_>, code: AckCode) -> AckBuilder {
        let text = |n: usize| msg.msh().field(n).map(|f| f.raw().to_owned()).unwrap_or_default();
        AckBuilder {
            delims: msg.delimiters(),
            sending: [raw_field(msg, 5), raw_field(msg, 6)],
            receiving: [raw_field(msg, 3), raw_field(msg, 4)],
            trigger: msg.message_type().1.to_owned(),
            original_id: msg.control_id().map(|c| c.into_owned()).unwrap_or_default(),
            processing: raw_field(msg, 11),
            version: msg.version().unwrap_or("").to_owned(),
            accept_type: text(15),
            app_type: text(16),
            code,
            text: None,
            errors: Vec::new(),
            control_id: None,
            timestamp: None,
        }
    }

    /// The ACK of a message that failed to parse: the header is salvaged from
    /// its MSH line when possible, and the error becomes an ERR segment.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::ack::{AckBuilder, AckCode};
    /// use hl7_core::Message;
    ///
    /// let bad = b"MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|ORD7|P|2.5.1\rPID|1\rOB|x\r";
    /// let err = Message::parse(bad).unwrap_err();
    /// let ack = AckBuilder::for_rejected(bad, &err, AckCode::AR).build();
    /// let ack = Message::parse(ack.as_bytes())?;
    /// assert_eq!(ack.get(&"MSA-2".parse()?).unwrap().raw(), "ORD7");
    /// assert_eq!(ack.get(&"ERR-3-1".parse()?).unwrap().raw(), "102");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_rejected(input: &[u8], error: &Error, code: AckCode) -> AckBuilder {
        let body = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        let start = body.windows(3).position(|w| w == b"MSH");
        let header = start.and_then(|s| {
            let line_end = memchr::memchr2(b'\r', b'\n', &body[s..]).map_or(body.len(), |p| s + p);
            let mut opts = crate::ParseOptions::default();
            opts.lenient_decoding(true);
            Message::parse_with(&body[s..line_end], &opts).ok()
        });
        let mut b = match header {
            Some(m) => AckBuilder::for_message(&m, code),
            None => AckBuilder {
                delims: Delimiters::default(),
                sending: Default::default(),
                receiving: Default::default(),
                trigger: String::new(),
                original_id: String::new(),
                processing: FieldValue::text("P"),
                version: String::new(),
                accept_type: String::new(),
                app_type: String::new(),
                code,
                text: None,
                errors: Vec::new(),
                control_id: None,
                timestamp: None,
            },
        };
        b.errors.push(AckError::from_error(error));
        b
    }

    /// MSA-3, a text message.
    pub fn with_text(mut self, text: impl Into<String>) -> AckBuilder {
        self.text = Some(text.into());
        self
    }

    /// Adds an ERR segment.
    pub fn with_error(mut self, e: AckError) -> AckBuilder {
        self.errors.push(e);
        self
    }

    /// The ACK's own control ID (default: a [new one](new_control_id)).
    pub fn with_control_id(mut self, id: impl Into<String>) -> AckBuilder {
        self.control_id = Some(id.into());
        self
    }

    /// The ACK's MSH-7 (default: now).
    pub fn with_timestamp(mut self, ts: impl Into<String>) -> AckBuilder {
        self.timestamp = Some(ts.into());
        self
    }

    /// Original mode when MSH-15 and MSH-16 are both empty, else enhanced.
    pub fn is_enhanced_mode(&self) -> bool {
        !(self.accept_type.is_empty() && self.app_type.is_empty())
    }

    /// Whether the sender asked for this ACK: always in original mode; in
    /// enhanced mode per MSH-15 (commit codes) or MSH-16 (application codes):
    /// `AL` always, `NE` never, `ER` only on error or reject, `SU` only on
    /// success.
    pub fn required(&self) -> bool {
        if !self.is_enhanced_mode() {
            return true;
        }
        let rule = if self.code.is_commit() { &self.accept_type } else { &self.app_type };
        match rule.as_str() {
            "NE" => false,
            "ER" => !self.code.is_success(),
            "SU" => self.code.is_success(),
            _ => true,
        }
    }

    /// Writes the ACK as ER7 (segments ended by CR) with the original
    /// message's delimiters.
    pub fn build(&self) -> String {
        let d = self.delims;
        let ts = self.timestamp.clone().unwrap_or_else(|| format_timestamp(&chrono::Local::now().fixed_offset()));
        let new_id = self.control_id.clone().unwrap_or_else(new_control_id);
        let mut msh9 = vec!["ACK".to_owned(), self.trigger.clone()];
        if version_at_least(&self.version, &[2, 3, 1]) {
            msh9.push("ACK".to_owned());
        }
        let mut b = MessageBuilder::new("ACK", &self.version)
            .with_delimiters(d)
            .with_msh_field(3, self.sending[0].clone())
            .with_msh_field(4, self.sending[1].clone())
            .with_msh_field(5, self.receiving[0].clone())
            .with_msh_field(6, self.receiving[1].clone())
            .with_msh_field(7, ts)
            .with_msh_field(9, FieldValue::components(msh9))
            .with_msh_field(10, new_id)
            .with_msh_field(11, self.processing.clone());
        let mut msa = segment("MSA").with_field(1, self.code.as_str()).with_field(2, self.original_id.as_str());
        if let Some(t) = &self.text {
            msa = msa.with_field(3, t.as_str());
        }
        b = b.with_segment(msa);
        let v25 = version_at_least(&self.version, &[2, 5]);
        for e in &self.errors {
            let code = e.code.to_string();
            let desc = error_code_text(e.code);
            let err = if v25 {
                let mut s = segment("ERR");
                if let Some(p) = &e.path {
                    let erl = p.to_erl(d.component, d.subcomponent);
                    s = s.with_field(2, FieldValue::components(erl.split(d.component as char)));
                }
                s.with_field(3, FieldValue::components([code.as_str(), desc, "HL70357"]))
                    .with_field(4, e.severity.code())
                    .with_field(7, e.text.as_str())
            } else {
                let (seg, seq, field) = match &e.path {
                    Some(p) => (p.segment().to_owned(), p.occurrence().to_string(), p.field().map(|f| f.to_string())),
                    None => (String::new(), String::new(), None),
                };
                segment("ERR").with_field(
                    1,
                    FieldValue::subcomponents([
                        vec![seg],
                        vec![seq],
                        vec![field.unwrap_or_default()],
                        vec![code, desc.to_owned(), "HL70357".to_owned()],
                    ]),
                )
            };
            b = b.with_segment(err);
        }
        b.build()
    }
}

fn segment(name: &'static str) -> SegmentBuilder {
    SegmentBuilder::known(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message<'_> {
        Message::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn enhanced_mode_honours_msh15_and_msh16() {
        let m = msg("MSH|^~\\&|A|B|C|D|||ORU^R01|1|P|2.5.1|||ER|NE\r");
        assert!(!AckBuilder::for_message(&m, AckCode::CA).required());
        assert!(AckBuilder::for_message(&m, AckCode::CE).required());
        assert!(!AckBuilder::for_message(&m, AckCode::AA).required());
        let m = msg("MSH|^~\\&|A|B|C|D|||ORU^R01|1|P|2.3\r");
        assert!(AckBuilder::for_message(&m, AckCode::AA).required());
    }

    #[test]
    fn err_segment_renders_the_path_and_table_0357_code() {
        let m = msg("MSH|^~\\&|A|B|C|D|||OML^O21|LOI1|P|2.5.1\r");
        let ack = AckBuilder::for_message(&m, AckCode::AE)
            .with_control_id("X")
            .with_timestamp("20240101")
            .with_error(AckError::new(103, "Unknown test code").with_path("OBR-4".parse().unwrap()))
            .build();
        assert_eq!(
            ack,
            "MSH|^~\\&|C|D|A|B|20240101||ACK^O21^ACK|X|P|2.5.1\rMSA|AE|LOI1\rERR||OBR^1^4^1|103^Table value not found^HL70357|E|||Unknown test code\r"
        );
    }

    #[test]
    fn pre_v25_err_uses_err1_and_two_component_msh9() {
        let m = msg("MSH|^~\\&|A|B|C|D|||ORM^O01|O1|P|2.3\r");
        let ack = AckBuilder::for_message(&m, AckCode::AR)
            .with_control_id("X")
            .with_timestamp("20240101")
            .with_error(AckError::new(101, "missing").with_path("PID-3".parse().unwrap()))
            .build();
        assert_eq!(
            ack,
            "MSH|^~\\&|C|D|A|B|20240101||ACK^O01|X|P|2.3\rMSA|AR|O1\rERR|PID^1^3^101&Required field missing&HL70357\r"
        );
    }
}
