//! The lab data contract: one typed shape for orders ([`LabOrder`]) and
//! results ([`LabResult`]), whatever dialect of HL7 an EMR speaks.
//!
//! Profiles ([`crate::profile`]) map each EMR's messages to and from these
//! types. Everything here is plain data with `serde` support; JSON keys are
//! snake_case. Data that no rule maps is never dropped: it stays on the value
//! as [`RawSegment`]s in `unmapped`, so a round trip keeps it.
//!
//! ```
//! use hl7_core::contract::{LabOrder, ResultStatus};
//!
//! let json = r#"{"message_control_id":"M1","placer_order_number":"P1",
//!                "patient":{"family_name":"DOE","birth_date":"1970-01-01"},
//!                "tests":[{"code":"85025","name":"CBC"}]}"#;
//! let order: LabOrder = serde_json::from_str(json)?;
//! assert_eq!(order.patient.birth_date.unwrap().to_hl7(), "19700101");
//! assert_eq!(ResultStatus::from_hl7("C"), Some(ResultStatus::Corrected));
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::datetime::Timestamp;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An application and facility (MSH-3/4 or MSH-5/6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// The application (HD, first component).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// The facility (HD, first component).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
}

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    /// Street line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    /// Second line (apartment, suite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or province.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// ZIP or postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    /// Country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// The patient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Patient {
    /// The identifier the EMR knows the patient by (MRN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who assigned `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_authority: Option<String>,
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Middle name or initial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Date of birth, at the precision sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
    /// Administrative sex, in the lab's codes (HL7 table 0001: F, M, O, U …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// Home address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Home phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// A provider (ordering provider, result copies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provider {
    /// The identifier, usually the NPI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
}

/// Who pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillTo {
    /// The ordering client (the practice's account).
    Client,
    /// The patient.
    Patient,
    /// The patient's insurance.
    Insurance,
}

/// An insured person other than the patient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Subscriber {
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Relationship to the patient (HL7 table 0063: SEL, SPO, CHD …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    /// Date of birth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
}

/// One insurance (IN1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Insurance {
    /// Payer identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer_id: Option<String>,
    /// Payer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer_name: Option<String>,
    /// Member (policy) number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// Group number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_number: Option<String>,
    /// The insured, when not the patient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<Subscriber>,
}

/// The guarantor (GT1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guarantor {
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Relationship to the patient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    /// Address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// Billing information.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Billing {
    /// Who is billed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bill_to: Option<BillTo>,
    /// Insurances in order of priority.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub insurances: Vec<Insurance>,
    /// The guarantor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guarantor: Option<Guarantor>,
}

/// A coded value: code, display name, coding system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Coded {
    /// The code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Its display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The coding system (LN, SCT, I10, the lab's local system …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// A diagnosis (DG1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Diagnosis {
    /// The code (ICD-10-CM …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The coding system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A specimen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Specimen {
    /// Specimen type (SPM-4 or OBR-15).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Source site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// An ask-at-order-entry answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AoeAnswer {
    /// The question's code (OBX-3-1, often LOINC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question_code: Option<String>,
    /// The question's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// The answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// One ordered test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderedTest {
    /// The test code, in the lab's codes after mapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The test name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The coding system of `code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Priority (S stat, R routine, A ASAP …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Collection date/time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<Timestamp>,
    /// The specimen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specimen: Option<Specimen>,
    /// Ask-at-order-entry answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aoe: Vec<AoeAnswer>,
    /// Notes about this test.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Segments of this order group that no rule mapped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<RawSegment>,
}

/// A segment kept as it was, for data no rule maps: its ER7 text (with the
/// delimiters of [`LabOrder::delimiters`]) and where it came from.
///
/// Inside an order group, a segment that belonged to a sub-group says which
/// (`within`), so the way out puts it back in that sub-group and nowhere
/// else: `"observations[2]"` (the third observation of a report),
/// `"aoe[0]"` (after the first ask-at-order-entry answer of a test; an
/// observation that is not an AOE answer follows the answer before it),
/// `"aoe"` (before the first answer), `"SPM(1)"` (under the first
/// specimen) or `"diagnoses[0]"` (a DG1, kept at the message level with the
/// contract's list of diagnoses wherever it was). `path` counts occurrences
/// within that sub-group.
///
/// ```
/// use hl7_core::contract::RawSegment;
///
/// let raw: RawSegment = serde_json::from_str(r#"{"path":"OBX","text":"OBX|1|ST|X","within":"SPM(1)"}"#)?;
/// assert_eq!(raw.within.as_deref(), Some("SPM(1)"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RawSegment {
    /// The segment's path in its scope, e.g. `ZCL`, `OBX(2)`.
    pub path: String,
    /// The segment text, without terminator.
    pub text: String,
    /// The sub-group of the order group it was in; `None` at the group's
    /// (or the message's) own level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

/// An inbound order, in the lab's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabOrder {
    /// MSH-10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_control_id: Option<String>,
    /// MSH-7.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// MSH-3/4.
    #[serde(skip_serializing_if = "is_default")]
    pub sending: Endpoint,
    /// MSH-5/6.
    #[serde(skip_serializing_if = "is_default")]
    pub receiving: Endpoint,
    /// ORC-1 (NW new, CA cancel, XO change …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_control: Option<String>,
    /// The EMR's order number (ORC-2/OBR-2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placer_order_number: Option<String>,
    /// The lab's order number (ORC-3/OBR-3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filler_order_number: Option<String>,
    /// The lab's account for the ordering client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_account: Option<String>,
    /// The patient.
    #[serde(skip_serializing_if = "is_default")]
    pub patient: Patient,
    /// The ordering provider.
    #[serde(skip_serializing_if = "is_default")]
    pub ordering_provider: Provider,
    /// Billing.
    #[serde(skip_serializing_if = "is_default")]
    pub billing: Billing,
    /// Diagnoses (reasons for the order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<Diagnosis>,
    /// The tests ordered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<OrderedTest>,
    /// Notes about the whole order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// MSH-1 and MSH-2 of the source message (for `unmapped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiters: Option<String>,
    /// Segments outside any test that no rule mapped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<RawSegment>,
}

/// The lifecycle of a result (OBR-25, HL7 table 0123; OBX-11, table 0085).
///
/// Serialized as its name (`"final"`); [`ResultStatus::to_hl7`] gives the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// O: order received, specimen not yet received.
    OrderReceived,
    /// I: specimen in lab, no results yet.
    InLab,
    /// S: procedure scheduled.
    Scheduled,
    /// A: some, not all, results available.
    Partial,
    /// P: preliminary.
    Preliminary,
    /// R: results stored, not yet verified.
    Unverified,
    /// F: final.
    Final,
    /// C: correction of a previously final result.
    Corrected,
    /// X: cancelled; no result will come.
    Cancelled,
    /// D: deleted (OBX-11 only).
    Deleted,
    /// W: posted to the wrong patient (OBX-11 only).
    WrongPatient,
    /// N: not asked (OBX-11 only).
    NotAsked,
}

impl ResultStatus {
    /// The status for an HL7 code of table 0123 or 0085.
    pub fn from_hl7(code: &str) -> Option<ResultStatus> {
        use ResultStatus::*;
        Some(match code {
            "O" => OrderReceived,
            "I" => InLab,
            "S" => Scheduled,
            "A" => Partial,
            "P" => Preliminary,
            "R" => Unverified,
            "F" => Final,
            "C" => Corrected,
            "X" => Cancelled,
            "D" => Deleted,
            "W" => WrongPatient,
            "N" => NotAsked,
            _ => return None,
        })
    }

    /// The HL7 code.
    pub fn to_hl7(self) -> &'static str {
        use ResultStatus::*;
        match self {
            OrderReceived => "O",
            InLab => "I",
            Scheduled => "S",
            Partial => "A",
            Preliminary => "P",
            Unverified => "R",
            Final => "F",
            Corrected => "C",
            Cancelled => "X",
            Deleted => "D",
            WrongPatient => "W",
            NotAsked => "N",
        }
    }

    /// Whether a result may move from `self` to `next`: a result only moves
    /// forward (received → in lab → preliminary → final → corrected), may be
    /// corrected again, and may be cancelled or deleted until it is final.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::contract::ResultStatus::*;
    /// assert!(Preliminary.can_become(Final));
    /// assert!(Final.can_become(Corrected));
    /// assert!(!Final.can_become(Preliminary));
    /// assert!(!Corrected.can_become(Cancelled));
    /// ```
    pub fn can_become(self, next: ResultStatus) -> bool {
        use ResultStatus::*;
        let rank = |s: ResultStatus| match s {
            OrderReceived | Scheduled => 0,
            InLab => 1,
            Partial | Preliminary | Unverified => 2,
            Final => 3,
            Corrected => 4,
            Cancelled | Deleted | WrongPatient | NotAsked => 5,
        };
        match next {
            Corrected => matches!(self, Final | Corrected),
            Cancelled | Deleted | NotAsked => rank(self) < 3,
            WrongPatient => true,
            _ => rank(next) >= rank(self) && rank(self) < 4 && !(self == Final && next != Final),
        }
    }
}

/// An observation's value, typed by OBX-2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    /// NM: a number, keeping its original text (`"7.20"` stays `"7.20"`).
    Number {
        /// The text as sent.
        text: String,
    },
    /// ST, TX, FT and other text.
    Text {
        /// The text, escapes decoded.
        text: String,
    },
    /// CE, CWE, CNE: a coded value.
    Coded {
        /// The coded value.
        #[serde(flatten)]
        coded: Coded,
    },
    /// SN: `<comparator><num1><separator><num2>`, e.g. `<^0.5` or `^1^:^128`.
    StructuredNumeric {
        /// `>`, `<`, `>=`, `<=`, `=`, `<>` or empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comparator: Option<String>,
        /// The first number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        num1: Option<String>,
        /// `-`, `+`, `/`, `.`, `:` or empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        separator: Option<String>,
        /// The second number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        num2: Option<String>,
    },
    /// Any other type, kept as its ER7 text.
    Raw {
        /// The OBX-5 text as sent (escapes not decoded).
        text: String,
    },
}

impl Value {
    /// The number, for NM values and SN values without a second number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number { text } => text.trim().parse().ok(),
            Value::StructuredNumeric { num1, num2: None, .. } => num1.as_deref()?.trim().parse().ok(),
            _ => None,
        }
    }
}

/// One observation (OBX).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observation {
    /// OBX-3-1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// OBX-3-2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OBX-3-3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// OBX-2, the HL7 data type of the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// OBX-5, typed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// OBX-6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// OBX-7.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<String>,
    /// OBX-8 (repeating).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub abnormal_flags: Vec<String>,
    /// OBX-11.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ResultStatus>,
    /// OBX-14.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    /// OBX-23, the performing organization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performing_lab: Option<String>,
    /// NTE segments after the OBX.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One report: an ordered test with its observations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// OBR-4.
    #[serde(skip_serializing_if = "is_default")]
    pub test: Coded,
    /// OBR-25.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ResultStatus>,
    /// OBR-7.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    /// OBR-22.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Timestamp>,
    /// SPM-4 or OBR-15.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specimen: Option<Specimen>,
    /// The observations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
    /// NTE segments about the report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Segments of this order group that no rule mapped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<RawSegment>,
}

/// An outbound result, in the lab's terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabResult {
    /// MSH-10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_control_id: Option<String>,
    /// MSH-7.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// MSH-3/4.
    #[serde(skip_serializing_if = "is_default")]
    pub sending: Endpoint,
    /// MSH-5/6.
    #[serde(skip_serializing_if = "is_default")]
    pub receiving: Endpoint,
    /// The patient.
    #[serde(skip_serializing_if = "is_default")]
    pub patient: Patient,
    /// The ordering provider.
    #[serde(skip_serializing_if = "is_default")]
    pub ordering_provider: Provider,
    /// The EMR's order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placer_order_number: Option<String>,
    /// The lab's order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filler_order_number: Option<String>,
    /// The lab's account for the ordering client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_account: Option<String>,
    /// One report per ordered test.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<Report>,
    /// MSH-1 and MSH-2 of the source message (for `unmapped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiters: Option<String>,
    /// Segments outside any report that no rule mapped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<RawSegment>,
}

/// A mapped message: an order or a result, by the profile's kind. It
/// serializes as the bare [`LabOrder`] or [`LabResult`].
///
/// # Examples
///
/// ```
/// use hl7_core::contract::{Contract, LabOrder};
///
/// let c = Contract::Order(LabOrder { placer_order_number: Some("P1".into()), ..LabOrder::default() });
/// assert_eq!(c.as_order().and_then(|o| o.placer_order_number.as_deref()), Some("P1"));
/// assert!(c.as_result().is_none());
/// assert_eq!(serde_json::to_string(&c)?, r#"{"placer_order_number":"P1"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
// Both variants are large and a value is built once per message and moved
// rarely; boxing would add an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Contract {
    /// An order.
    Order(LabOrder),
    /// A result.
    Result(LabResult),
}

impl Contract {
    /// The order, if this is one.
    pub fn as_order(&self) -> Option<&LabOrder> {
        match self {
            Contract::Order(o) => Some(o),
            Contract::Result(_) => None,
        }
    }

    /// The result, if this is one.
    pub fn as_result(&self) -> Option<&LabResult> {
        match self {
            Contract::Result(r) => Some(r),
            Contract::Order(_) => None,
        }
    }

    /// The message control ID (MSH-10) the value carries.
    pub fn message_control_id(&self) -> Option<&str> {
        match self {
            Contract::Order(o) => o.message_control_id.as_deref(),
            Contract::Result(r) => r.message_control_id.as_deref(),
        }
    }
}
