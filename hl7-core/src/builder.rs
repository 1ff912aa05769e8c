//! Building messages: values are text, the builder escapes them.
//!
//! [`FieldValue`] holds unescaped text in its HL7 shape (repetitions of
//! components of subcomponents); [`SegmentBuilder`] places values at 1-based
//! field positions; [`MessageBuilder`] writes ER7 with the chosen
//! [`Delimiters`], escaping every leaf, so a value can never break the
//! structure. A message parsed with [`Message`] converts back with
//! [`MessageBuilder::from_message`], and `build → parse → build` is the
//! identity (a property test proves it on generated messages).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, FixedOffset, Local};

use crate::error::{Error, ErrorKind};
use crate::escape;
use crate::message::{Field, Message, Segment};
use crate::path::is_segment_name;
use crate::Delimiters;

/// The value of one field: repetitions of components of subcomponents, all
/// plain text that the builder escapes; or raw ER7 text written as is.
///
/// # Examples
///
/// ```
/// use hl7_core::builder::FieldValue;
/// use hl7_core::Delimiters;
///
/// let d = Delimiters::default();
/// assert_eq!(FieldValue::text("A|B").encode(&d), r"A\F\B");
/// assert_eq!(FieldValue::components(["DOE", "JANE", "Q"]).encode(&d), "DOE^JANE^Q");
/// let reps = FieldValue::repetitions([FieldValue::components(["1", "A"]), FieldValue::text("2")]);
/// assert_eq!(reps.encode(&d), "1^A~2");
/// assert_eq!(FieldValue::null().encode(&d), "\"\"");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldValue {
    reps: Vec<Vec<Vec<String>>>,
    raw: Option<String>,
}

impl FieldValue {
    /// One text value (component 1 of repetition 1).
    pub fn text(s: impl Into<String>) -> FieldValue {
        FieldValue { reps: vec![vec![vec![s.into()]]], raw: None }
    }

    /// Components of one repetition, each plain text.
    pub fn components<S: Into<String>>(parts: impl IntoIterator<Item = S>) -> FieldValue {
        FieldValue { reps: vec![parts.into_iter().map(|p| vec![p.into()]).collect()], raw: None }
    }

    /// Components made of subcomponents: `[["PAT", ""], ["LAB", "1.2.3", "ISO"]]`.
    pub fn subcomponents<C, S>(parts: impl IntoIterator<Item = C>) -> FieldValue
    where
        C: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let rep = parts.into_iter().map(|c| c.into_iter().map(Into::into).collect()).collect();
        FieldValue { reps: vec![rep], raw: None }
    }

    /// Repetitions of a field, each given as a single-repetition value.
    pub fn repetitions(values: impl IntoIterator<Item = FieldValue>) -> FieldValue {
        let mut reps = Vec::new();
        for v in values {
            reps.extend(v.reps);
        }
        FieldValue { reps, raw: None }
    }

    /// The HL7 null `""`: "delete the stored value".
    pub fn null() -> FieldValue {
        FieldValue { reps: vec![], raw: Some("\"\"".to_owned()) }
    }

    /// Already-encoded ER7 text, written as is.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidValue`] when the text holds a CR or LF, which
    /// would end the segment.
    pub fn raw(er7: impl Into<String>) -> Result<FieldValue, Error> {
        let s = er7.into();
        if s.contains(['\r', '\n']) {
            return Err(Error::new(ErrorKind::InvalidValue("raw field value contains a line break".into()), 0));
        }
        Ok(FieldValue { reps: vec![], raw: Some(s) })
    }

    /// The value as ER7 text with these delimiters.
    pub fn encode(&self, d: &Delimiters) -> String {
        let mut out = String::new();
        self.write(d, &mut out);
        out
    }

    fn write(&self, d: &Delimiters, out: &mut String) {
        if let Some(raw) = &self.raw {
            out.push_str(raw);
            return;
        }
        for (ri, rep) in self.reps.iter().enumerate() {
            if ri > 0 {
                out.push(d.repetition as char);
            }
            for (ci, comp) in rep.iter().enumerate() {
                if ci > 0 {
                    out.push(d.component as char);
                }
                for (si, sub) in comp.iter().enumerate() {
                    if si > 0 {
                        out.push(d.subcomponent as char);
                    }
                    out.push_str(&escape::encode(sub, d));
                }
            }
        }
    }

    /// The decoded value of a parsed field, keeping its shape.
    pub fn from_field(f: &Field<'_>) -> FieldValue {
        if f.is_null() {
            return FieldValue::null();
        }
        let reps = f
            .repetitions()
            .map(|r| r.components().map(|c| c.subcomponents().map(|s| s.decoded().into_owned()).collect()).collect())
            .collect();
        FieldValue { reps, raw: None }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::text(s)
    }
}

impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::text(s)
    }
}

/// One segment: a name and values at 1-based field positions.
///
/// # Examples
///
/// ```
/// use hl7_core::builder::{FieldValue, SegmentBuilder};
///
/// let pid = SegmentBuilder::new("PID")?
///     .with_field(1, "1")
///     .with_field(3, FieldValue::components(["PAT001", "", "", "LAB", "MR"]))
///     .with_field(5, FieldValue::components(["O'NEIL", "MARY"]));
/// assert_eq!(pid.encode(&Default::default()), "PID|1||PAT001^^^LAB^MR||O'NEIL^MARY");
/// # Ok::<(), hl7_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentBuilder {
    name: String,
    fields: Vec<FieldValue>,
}

impl SegmentBuilder {
    /// An empty segment.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidSegmentName`] unless `name` is `[A-Z][A-Z0-9]{2}`;
    /// MSH is written by [`MessageBuilder`] itself.
    pub fn new(name: &str) -> Result<SegmentBuilder, Error> {
        if !is_segment_name(name.as_bytes()) || name == "MSH" {
            return Err(Error::new(ErrorKind::InvalidSegmentName, 0));
        }
        Ok(SegmentBuilder { name: name.to_owned(), fields: Vec::new() })
    }

    /// A segment whose name is a constant known to be valid.
    pub(crate) fn known(name: &'static str) -> SegmentBuilder {
        debug_assert!(is_segment_name(name.as_bytes()));
        SegmentBuilder { name: name.to_owned(), fields: Vec::new() }
    }

    /// Sets field `n` (1-based). Setting field 0 does nothing.
    pub fn with_field(mut self, n: usize, value: impl Into<FieldValue>) -> SegmentBuilder {
        self.set(n, value.into());
        self
    }

    fn set(&mut self, n: usize, value: FieldValue) {
        if n == 0 {
            return;
        }
        if self.fields.len() < n {
            self.fields.resize(n, FieldValue::default());
        }
        self.fields[n - 1] = value;
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Field `n` (1-based), if set.
    pub fn field(&self, n: usize) -> Option<&FieldValue> {
        n.checked_sub(1).and_then(|i| self.fields.get(i))
    }

    /// The segment as ER7 text (no terminator).
    pub fn encode(&self, d: &Delimiters) -> String {
        let mut out = self.name.clone();
        for f in &self.fields {
            out.push(d.field as char);
            f.write(d, &mut out);
        }
        out
    }

    /// The decoded values of a parsed segment.
    pub fn from_segment(seg: &Segment<'_>) -> SegmentBuilder {
        SegmentBuilder {
            name: seg.name().to_owned(),
            fields: seg.fields().map(|f| FieldValue::from_field(&f)).collect(),
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new message control ID (MSH-10): 20 characters, the limit in v2.5,
/// from the current time to the millisecond and a per-process counter, so
/// two IDs made by one process never repeat.
///
/// # Examples
///
/// ```
/// let a = hl7_core::builder::new_control_id();
/// let b = hl7_core::builder::new_control_id();
/// assert_eq!(a.len(), 20);
/// assert_ne!(a, b);
/// ```
pub fn new_control_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 1000;
    format!("{}{:03}", Local::now().format("%Y%m%d%H%M%S%3f"), n)
}

/// An HL7 DTM timestamp with seconds and offset, e.g. `20240115083000-0500`.
///
/// # Examples
///
/// ```
/// use chrono::{FixedOffset, TimeZone};
/// let t = FixedOffset::west_opt(5 * 3600).unwrap().with_ymd_and_hms(2024, 1, 15, 8, 30, 0).unwrap();
/// assert_eq!(hl7_core::builder::format_timestamp(&t), "20240115083000-0500");
/// ```
pub fn format_timestamp(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y%m%d%H%M%S%z").to_string()
}

/// A whole message: MSH and the segments after it.
///
/// [`MessageBuilder::new`] fills MSH-7 with the current time, MSH-10 with a
/// [new control ID](new_control_id), MSH-9 and MSH-12 from its arguments and
/// MSH-11 with `P`.
///
/// # Examples
///
/// ```
/// use hl7_core::builder::{FieldValue, MessageBuilder, SegmentBuilder};
/// use hl7_core::Message;
///
/// let text = MessageBuilder::new("ORU^R01^ORU_R01", "2.5.1")
///     .with_msh_field(3, "LIS")
///     .with_msh_field(10, "MSG0001")
///     .with_segment(SegmentBuilder::new("PID")?.with_field(5, FieldValue::components(["DOE", "JANE"])))
///     .with_segment(SegmentBuilder::new("NTE")?.with_field(3, "Salt & pepper | 2 lines\nsecond"))
///     .build();
/// let msg = Message::parse(text.as_bytes())?;
/// assert_eq!(msg.control_id().unwrap(), "MSG0001");
/// assert_eq!(msg.get(&"NTE-3".parse()?).unwrap().decoded(), "Salt & pepper | 2 lines\nsecond");
/// assert_eq!(MessageBuilder::from_message(&msg).build(), text);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuilder {
    delims: Delimiters,
    /// MSH fields from MSH-3 on (index 0 is MSH-3).
    msh: Vec<FieldValue>,
    segments: Vec<SegmentBuilder>,
}

impl MessageBuilder {
    /// A message of type `message_type` (MSH-9 as ER7, e.g. `ORU^R01^ORU_R01`)
    /// and version `version` (MSH-12), with the default delimiters.
    pub fn new(message_type: &str, version: &str) -> MessageBuilder {
        let mut b = MessageBuilder { delims: Delimiters::default(), msh: Vec::new(), segments: Vec::new() };
        let now = Local::now().fixed_offset();
        b.set_msh(7, FieldValue::text(format_timestamp(&now)));
        b.set_msh(9, FieldValue::components(message_type.split('^')));
        b.set_msh(10, FieldValue::text(new_control_id()));
        b.set_msh(11, FieldValue::text("P"));
        b.set_msh(12, FieldValue::text(version));
        b
    }

    /// The decoded content of a parsed message, ready to be written again.
    pub fn from_message(msg: &Message<'_>) -> MessageBuilder {
        let msh = msg.msh().fields().skip(2).map(|f| FieldValue::from_field(&f)).collect();
        let segments = msg.segments().skip(1).map(|s| SegmentBuilder::from_segment(&s)).collect();
        MessageBuilder { delims: msg.delimiters(), msh, segments }
    }

    /// Uses other delimiters (every value is escaped for them).
    pub fn with_delimiters(mut self, d: Delimiters) -> MessageBuilder {
        self.delims = d;
        self
    }

    /// Sets MSH-`n` (1-based; MSH-1 and MSH-2 come from the delimiters and
    /// cannot be set).
    pub fn with_msh_field(mut self, n: usize, value: impl Into<FieldValue>) -> MessageBuilder {
        self.set_msh(n, value.into());
        self
    }

    fn set_msh(&mut self, n: usize, value: FieldValue) {
        if n < 3 {
            return;
        }
        if self.msh.len() < n - 2 {
            self.msh.resize(n - 2, FieldValue::default());
        }
        self.msh[n - 3] = value;
    }

    /// MSH-`n`, if set.
    pub fn msh_field(&self, n: usize) -> Option<&FieldValue> {
        n.checked_sub(3).and_then(|i| self.msh.get(i))
    }

    /// Appends a segment.
    pub fn with_segment(mut self, seg: SegmentBuilder) -> MessageBuilder {
        self.segments.push(seg);
        self
    }

    /// The segments after MSH.
    pub fn segments(&self) -> &[SegmentBuilder] {
        &self.segments
    }

    /// The message as ER7 text, each segment ended by CR.
    pub fn build(&self) -> String {
        let d = &self.delims;
        let mut out = format!("MSH{d}");
        for f in &self.msh {
            out.push(d.field as char);
            f.write(d, &mut out);
        }
        out.push('\r');
        for s in &self.segments {
            out.push_str(&s.encode(d));
            out.push('\r');
        }
        out
    }
}

impl fmt::Display for MessageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.build())
    }
}
