//! The go-live gate for one sample: problems, unmapped data, round trip.

use crate::contract::{Contract, RawSegment};
use crate::message::Message;

use super::{Problem, Profile, SET_ID};

/// What [`Profile::check`] found in one sample message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SampleReport {
    /// Which message of the file (1-based).
    pub message: usize,
    /// MSH-10, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    /// The message could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Required-field, code-map and value problems.
    pub problems: Vec<Problem>,
    /// Locations with data no rule reads.
    pub unmapped: Vec<String>,
    /// HL7 → contract → HL7 → contract gives the same contract value.
    pub round_trips: bool,
    /// Where it does not: the contract fields that differ the second time
    /// (`tests[0].unmapped[1].text`, at most ten), or what stopped the
    /// second mapping. Paths only, never values (they may be PHI).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub round_trip_differs: Vec<String>,
}

impl SampleReport {
    /// The report for a sample that does not parse.
    pub fn unparsable(message: usize, error: String) -> SampleReport {
        SampleReport {
            message,
            control_id: None,
            parse_error: Some(error),
            problems: Vec::new(),
            unmapped: Vec::new(),
            round_trips: false,
            round_trip_differs: Vec::new(),
        }
    }

    /// True when the sample passes the go-live gate: it parses, maps without
    /// problems and round-trips.
    pub fn passed(&self) -> bool {
        self.parse_error.is_none() && self.problems.is_empty() && self.round_trips
    }
}

impl Profile {
    /// Runs the profile over one sample message: problems, unmapped data and
    /// whether the message round-trips.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::{Message, profile::Profile};
    ///
    /// let profile = Profile::load("v23-orm-o01")?;
    /// let msg = Message::parse(b"MSH|^~\\&|EHR||LIS||20240101||ORM^O01|M1|P|2.3\rPID|1||P1||DOE||19700101|F||||||||||ACCT9\rORC|NW|PL1\rOBR|1|PL1||85025||||||||||||1234567893\r")?;
    /// let report = profile.check(&msg, 1);
    /// assert!(report.problems.is_empty());
    /// assert_eq!(report.unmapped, ["PID-18"]); // the account number no rule reads
    /// assert!(report.round_trips);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self, msg: &Message<'_>, n: usize) -> SampleReport {
        let mapped = self.map_message(msg);
        let control_id = msg.control_id().map(|c| c.into_owned());
        let differs = if mapped.problems.is_empty() { self.round_trip_differs(&mapped.value) } else { Vec::new() };
        SampleReport {
            message: n,
            control_id,
            parse_error: None,
            round_trips: mapped.problems.is_empty() && differs.is_empty(),
            problems: mapped.problems,
            unmapped: mapped.unread,
            round_trip_differs: differs,
        }
    }

    /// Where contract → HL7 → contract does not give `value` back (empty
    /// when it does). A control ID or send time the value did not have is
    /// generated on the way out and does not count; nor do set IDs, which
    /// are numbering the writer redoes (an EMR that sends OBX|1 for every
    /// OBX gets them counted).
    fn round_trip_differs(&self, value: &Contract) -> Vec<String> {
        let Ok(json) = serde_json::to_value(value) else { return vec!["(the contract does not serialize)".into()] };
        let text = match self.write(&json, self.kind) {
            Ok(t) => t,
            Err(e) => {
                return vec![format!(
                    "(cannot be written back: {} problem(s), first at {})",
                    e.problems.len(),
                    e.problems.first().map_or("?", |p| p.field.as_str())
                )]
            }
        };
        let Ok(msg) = Message::parse(text.as_bytes()) else {
            return vec!["(what is written back does not parse)".into()];
        };
        let m = self.map_value(&msg);
        if !m.problems.is_empty() {
            let fields: Vec<&str> = m.problems.iter().map(|p| p.field.as_str()).collect();
            return vec![format!("(what is written back has problems at {})", fields.join(", "))];
        }
        let mut again = m.value;
        // (control ID, send time) of a contract value
        fn generated(c: &mut Contract) -> (&mut Option<String>, &mut Option<crate::datetime::Timestamp>) {
            match c {
                Contract::Order(o) => (&mut o.message_control_id, &mut o.sent_at),
                Contract::Result(r) => (&mut r.message_control_id, &mut r.sent_at),
            }
        }
        let mut original = value.clone();
        let (id, sent) = generated(&mut original);
        let (had_id, had_sent) = (id.is_some(), sent.is_some());
        let (id, sent) = generated(&mut again);
        if !had_id {
            *id = None;
        }
        if !had_sent {
            *sent = None;
        }
        for c in [&mut original, &mut again] {
            for raw in kept_mut(c) {
                raw.text = without_set_id(&raw.text);
            }
        }
        if again == original {
            return Vec::new();
        }
        let (Ok(a), Ok(b)) = (serde_json::to_value(&original), serde_json::to_value(&again)) else {
            return vec!["(the contract does not serialize)".into()];
        };
        let mut out = Vec::new();
        differences(&a, &b, &mut String::new(), &mut out);
        out
    }
}

/// The paths where two JSON values differ, `a.b[2].c` style, at most ten.
fn differences(a: &serde_json::Value, b: &serde_json::Value, at: &mut String, out: &mut Vec<String>) {
    use serde_json::Value as J;
    const MAX: usize = 10;
    if out.len() >= MAX || a == b {
        return;
    }
    let len = at.len();
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(k);
                differences(x.get(k).unwrap_or(&J::Null), y.get(k).unwrap_or(&J::Null), at, out);
                at.truncate(len);
            }
        }
        (J::Array(x), J::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                at.push_str(&format!("[{i}]"));
                differences(x.get(i).unwrap_or(&J::Null), y.get(i).unwrap_or(&J::Null), at, out);
                at.truncate(len);
            }
        }
        _ => out.push(if at.is_empty() { "(the whole value)".into() } else { at.clone() }),
    }
}

/// Every kept segment of a contract value.
fn kept_mut(c: &mut Contract) -> Vec<&mut RawSegment> {
    match c {
        Contract::Order(o) => o.unmapped.iter_mut().chain(o.tests.iter_mut().flat_map(|t| &mut t.unmapped)).collect(),
        Contract::Result(r) => {
            r.unmapped.iter_mut().chain(r.reports.iter_mut().flat_map(|t| &mut t.unmapped)).collect()
        }
    }
}

/// The segment text with field 1 emptied when it is a set ID.
fn without_set_id(text: &str) -> String {
    let Some(name) = text.get(..3).filter(|n| SET_ID.contains(n)) else { return text.to_owned() };
    let Some(sep) = text[3..].chars().next() else { return text.to_owned() };
    let rest = &text[3 + sep.len_utf8()..];
    match rest.find(sep) {
        Some(at) => format!("{name}{sep}{}", &rest[at..]),
        None => format!("{name}{sep}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{differences, without_set_id};

    #[test]
    fn differences_name_the_paths_that_differ() {
        let a = serde_json::json!({"tests": [{"code": "1", "aoe": [{"answer": "Y"}]}], "notes": ["x"]});
        let b = serde_json::json!({"tests": [{"code": "1", "aoe": [{"answer": "N"}, {}]}], "notes": ["x"], "new": 1});
        let mut out = Vec::new();
        differences(&a, &b, &mut String::new(), &mut out);
        assert_eq!(out, ["new", "tests[0].aoe[0].answer", "tests[0].aoe[1]"]);
    }

    #[test]
    fn set_ids_are_blanked_and_nothing_else() {
        assert_eq!(without_set_id("OBX|7|NM|X"), "OBX||NM|X");
        assert_eq!(without_set_id("OBX|7"), "OBX|");
        assert_eq!(without_set_id("ZCL|7|A"), "ZCL|7|A");
        assert_eq!(without_set_id("NT"), "NT");
    }
}
