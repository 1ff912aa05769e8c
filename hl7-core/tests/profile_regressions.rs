//! Round trips that fuzzing (the `map` target with a round-trip check) found
//! broken, each with its own test: HL7 → contract → HL7 → contract must give
//! the same contract, and no source data may be lost on the way.

use hl7_core::profile::Profile;
use hl7_core::Message;

fn round_trips(profile: &str, hl7: &[u8]) -> String {
    let p = Profile::load(profile).unwrap();
    let msg = Message::parse(hl7).unwrap();
    let report = p.check(&msg, 1);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let order = p.to_order(&msg).unwrap();
    let back = p.order_to_hl7(&order).unwrap();
    assert!(report.round_trips, "does not round-trip: {back}");
    back
}

#[test]
fn a_copy_that_differs_from_its_value_is_kept_not_overwritten() {
    // ORC-12 is where v2.3 also carries the provider of OBR-16; here the two
    // disagree on the given name, so ORC-12-3 is data of its own.
    let back = round_trips(
        "v23-orm-o01",
        b"MSH|^~\\&|EHR||LIS||20240101||ORM^O01|M1|P|2.3\r\
PID|1||P1||DOE||19700101|F\r\
ORC|NW|PL1|||||||||1234567893^DOCTOR^NANC\\XY\r\
OBR|1|PL1||85025||||||||||||1234567893^DOCTOR^NANCY\r",
    );
    assert!(back.contains("ORC|NW|PL1|||||||||1234567893^DOCTOR^NANC\\XY\r"), "{back}");
    assert!(back.contains("|1234567893^DOCTOR^NANCY\r"), "{back}");
}

#[test]
fn repeated_set_ids_are_numbering_not_data() {
    // Many EMRs number every OBX 1; the writer counts them, and the go-live
    // gate must not fail the sample for it.
    let p = Profile::load("lri-oru-r01").unwrap();
    let hl7 = b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||PAT1^^^LAB^MR||DOE^JANE\r\
ORC|RE||FIL1\r\
OBR|1||FIL1|24331-1^Lipid panel^LN|||||||||||||||||||||F\r\
OBX|1|NM|2093-3^Cholesterol^LN||190|mg/dL|<200|N|||F|||||||METHOD-A\r\
OBX|1|NM|2571-8^Triglyceride^LN||120|mg/dL|<150|N|||F|||||||METHOD-B\r";
    let msg = Message::parse(hl7).unwrap();
    let report = p.check(&msg, 1);
    assert!(report.problems.is_empty() && report.round_trips, "{report:?}");
    let back = p.result_to_hl7(&p.to_result(&msg).unwrap()).unwrap();
    assert!(back.contains("OBX|2|NM|2571-8^Triglyceride^LN||120|mg/dL|<150|N|||F|||||||METHOD-B"), "{back}");
}

fn elm_street() -> Profile {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/profiles");
    Profile::load(dir.join("elm-street-ehr.toml").to_str().unwrap()).unwrap()
}

const ELM_WITH_SSN: &[u8] = b"MSH|^~\\&|ELMEHR|ELMST|LIS|DEMOLAB|20240202080000||ORM^O01|ES0001|P|2.3\r\
PID|1||ES3001^^^ELMEHR^MR||DOE,JANE||07/04/1972|female|||||||||||123-45-6789\r\
ZCL|C3007\r\
ORC|NW|ES5001\r\
OBR|1|ES5001||LIPID^Lipid panel^L|||20240202075000|||||||||1234567893^WELBY^MARCUS\r";

#[test]
fn a_kept_segment_keeps_the_emrs_own_spelling_of_an_unchanged_value() {
    // PID-19 is read by no rule, so the PID is kept; its sex ("female", read
    // through an upper-casing map as F) and its name ("DOE,JANE", split on
    // the comma) go back as the EMR wrote them, not as "FEMALE" and
    // "DOE, JANE".
    let p = elm_street();
    let msg = Message::parse(ELM_WITH_SSN).unwrap();
    let report = p.check(&msg, 1);
    assert!(report.round_trips, "{:?}", report.round_trip_differs);
    let order = p.to_order(&msg).unwrap();
    assert_eq!((order.patient.sex.as_deref(), order.patient.given_name.as_deref()), (Some("F"), Some("JANE")));
    let back = p.order_to_hl7(&order).unwrap();
    assert!(back.contains("PID|1||ES3001^^^ELMEHR^MR||DOE,JANE||07/04/1972|female|||||||||||123-45-6789\r"), "{back}");
}

#[test]
fn a_changed_value_is_written_over_the_kept_segment() {
    let p = elm_street();
    let mut order = p.to_order(&Message::parse(ELM_WITH_SSN).unwrap()).unwrap();
    order.patient.sex = Some("M".into());
    order.patient.given_name = Some("JOHN".into());
    let back = p.order_to_hl7(&order).unwrap();
    assert!(back.contains("PID|1||ES3001^^^ELMEHR^MR||DOE, JOHN||07/04/1972|MALE|||||||||||123-45-6789\r"), "{back}");
}

#[test]
fn check_names_where_a_sample_does_not_round_trip() {
    // A note with a component separator in NTE-3 is read as raw ER7
    // ("Fasting^12h") and written back as text: a known gap (see the fuzz
    // target's notes). The report says where — paths only, never values.
    let p = Profile::load("lri-oru-r01").unwrap();
    let msg = Message::parse(
        b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||PAT1^^^LAB^MR||DOE^JANE\r\
ORC|RE||FIL1\r\
OBR|1||FIL1|2345-7^Glucose^LN|||||||||||||||||||||F\r\
NTE|1|L|Fasting^12h\r\
OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\r",
    )
    .unwrap();
    let report = p.check(&msg, 1);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(!report.round_trips);
    assert_eq!(report.round_trip_differs, ["reports[0].notes[0]", "reports[0].unmapped[0].text"]);
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("Fasting"), "{json}");
}

#[test]
fn a_template_value_that_reads_the_same_keeps_the_kept_segment_as_sent() {
    // "MARY ANN" + "Q" is one given name through the template; split back at
    // the first space it would be "MARY" + "ANN Q". The kept PID (PID-19 is
    // read by no rule) already reads as the value, so it goes back as sent.
    let p = Profile::from_toml(
        "extends = \"lri-oru-r01\"\nname = \"templated\"\n[fields]\n\"patient.given_name\" = { template = \"{PID-5-2} {PID-5-3}\" }\n\"patient.middle_name\" = \"\"\n",
        None,
    )
    .unwrap();
    let msg = Message::parse(
        b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||PAT1^^^LAB^MR||DOE^MARY ANN^Q|||||||||||||123-45-6789\r\
ORC|RE||FIL1\r\
OBR|1||FIL1|2345-7^Glucose^LN|||||||||||||||||||||F\r\
OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\r",
    )
    .unwrap();
    let report = p.check(&msg, 1);
    assert!(report.round_trips, "{:?}", report.round_trip_differs);
    let result = p.to_result(&msg).unwrap();
    assert_eq!(result.patient.given_name.as_deref(), Some("MARY ANN Q"));
    let back = p.result_to_hl7(&result).unwrap();
    assert!(back.contains("PID|1||PAT1^^^LAB^MR||DOE^MARY ANN^Q|||||||||||||123-45-6789\r"), "{back}");
}

#[test]
fn a_default_is_not_written_into_a_kept_segment_that_left_the_place_empty() {
    let p = Profile::from_toml(
        "extends = \"lri-oru-r01\"\nname = \"defaulted\"\n[report]\n\"test.system\" = { path = \"OBR-4-3\", default = \"LN\" }\n",
        None,
    )
    .unwrap();
    let hl7 = b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||PAT1^^^LAB^MR||DOE^JANE\r\
ORC|RE||FIL1\r\
OBR|1||FIL1|2345-7^Glucose||||||COLLECTOR1|||||||||||||||F\r\
OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\r";
    let msg = Message::parse(hl7).unwrap();
    let result = p.to_result(&msg).unwrap();
    assert_eq!(result.reports[0].test.system.as_deref(), Some("LN"));
    let report = p.check(&msg, 1);
    assert!(report.round_trips, "{:?}", report.round_trip_differs);
    let back = p.result_to_hl7(&result).unwrap();
    assert!(back.contains("OBR|1||FIL1|2345-7^Glucose||||||COLLECTOR1|"), "{back}");
}

#[test]
fn a_field_no_rule_touches_goes_back_byte_for_byte() {
    // ORC-7 and ORC-13 are read by no rule; their empty components and
    // repetitions ("^~", trailing "^") are the EMR's bytes, kept as sent.
    let back = round_trips(
        "v23-orm-o01",
        b"MSH|^~\\&|EHR||LIS||20240101||ORM^O01|M1|P|2.3\r\
PID|1||P1||DOE||19700101|F\r\
ORC|NW|PL1|||||^^^20240101^^R^|||||1234567893|^~X^^\r\
OBR|1|PL1||85025||||||||||||1234567893\r",
    );
    assert!(back.contains("ORC|NW|PL1|||||^^^20240101^^R^|||||1234567893|^~X^^\r"), "{back}");
}

#[test]
fn a_diagnosis_kept_in_a_later_order_group_is_written_once() {
    // Diagnoses are one list on the contract; the writer puts them in the
    // first group. What was kept of the second group's DG1 goes with that
    // diagnosis, not a second time at the end of its old group.
    let back = round_trips(
        "v23-orm-o01",
        b"MSH|^~\\&|EHR||LIS||20240101||ORM^O01|M1|P|2.3\r\
PID|1||P1||DOE||19700101|F\r\
ORC|NW|PL1\r\
OBR|1|PL1||85025||||||||||||1234567893\r\
DG1|1|I10|D64.9^Anemia^I10|||W\r\
ORC|NW|PL1\r\
OBR|2|PL1||80061||||||||||||1234567893\r\
DG1|1|I10|E78.5^Hyperlipidemia^I10|||A\r",
    );
    assert_eq!(back.matches("\rDG1|").count(), 2, "{back}");
    assert!(back.contains("|E78.5^Hyperlipidemia^I10|||A"), "{back}");
}
