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
