//! Kept segments go back into the sub-group they came from: an observation
//! that is not an AOE answer stays between the answers around it, a
//! specimen's OBX stays under its SPM, and nothing becomes the base of a
//! segment from another sub-group.

use hl7_core::contract::{LabOrder, RawSegment};
use hl7_core::profile::Profile;
use hl7_core::Message;

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/profiles")
}

fn elm_street() -> Profile {
    Profile::load(dir().join("elm-street-ehr.toml").to_str().unwrap()).unwrap()
}

/// Each segment of `text` as `NAME field(n)` (the field that tells them apart).
fn shape(text: &str, field: usize) -> Vec<String> {
    let msg = Message::parse(text.as_bytes()).unwrap();
    msg.segments()
        .map(|s| format!("{} {}", s.name(), s.field(field).map(|f| f.raw().to_owned()).unwrap_or_default()))
        .collect()
}

fn within(raws: &[RawSegment]) -> Vec<(String, Option<String>)> {
    raws.iter().map(|r| (r.path.clone(), r.within.clone())).collect()
}

fn round_trip(p: &Profile, hl7: &[u8]) -> (LabOrder, String, LabOrder) {
    let order = p.to_order(&Message::parse(hl7).unwrap()).unwrap();
    let back = p.order_to_hl7(&order).unwrap();
    let again = p.to_order(&Message::parse(back.as_bytes()).unwrap()).unwrap();
    (order, back, again)
}

#[test]
fn an_observation_that_is_not_an_aoe_answer_stays_between_the_answers_around_it() {
    let p = elm_street();
    let hl7 = b"MSH|^~\\&|ELMEHR|ELMST|LIS|DEMOLAB|20240202080000||ORM^O01|ES9001|P|2.3\r\
PID|1||ES3001^^^ELMEHR^MR||DOE, JANE||07/04/1972|female\r\
ZCL|C3007\r\
ORC|NW|ES5001\r\
OBR|1|ES5001||LIPID^Lipid panel^L|||20240202075000|||||||||1234567893^WELBY^MARCUS\r\
OBX|1|NM|8302-2^Body height^LN||170|cm|||||O\r\
OBX|2|ST|FASTING^Fasting^L|Y|||||||O\r\
OBX|3|NM|29463-7^Body weight^LN||72|kg|||||O\r\
OBX|4|NM|URINE_VOL^24h urine volume^L|1250|mL||||||O\r";
    let (order, back, again) = round_trip(&p, hl7);
    let test = &order.tests[0];
    assert_eq!(test.aoe.len(), 2);
    assert_eq!(test.aoe[0].answer.as_deref(), Some("Y"));
    assert_eq!(test.aoe[1].answer.as_deref(), Some("1250"));
    // the vitals are kept, each after the answer it followed (or before the
    // first); what no rule reads of the answers stays with each answer
    let kept: Vec<_> = within(&test.unmapped).into_iter().filter(|(p, _)| p.starts_with("OBX")).collect();
    let at = |p: &str, w: &str| (p.to_owned(), Some(w.to_owned()));
    assert_eq!(kept, [at("OBX", "aoe"), at("OBX", "aoe[0]"), at("OBX(2)", "aoe[0]"), at("OBX", "aoe[1]")]);
    // and written back where they were, not as the base of an answer
    let obx: Vec<String> = shape(&back, 3).into_iter().filter(|s| s.starts_with("OBX")).collect();
    assert_eq!(
        obx,
        [
            "OBX 8302-2^Body height^LN",
            "OBX FASTING^Fasting^L",
            "OBX 29463-7^Body weight^LN",
            "OBX URINE_VOL^24h urine volume^L"
        ]
    );
    assert!(back.contains("OBX|2|ST|FASTING^Fasting^L|Y"), "{back}");
    assert!(back.contains("OBX|3|NM|29463-7^Body weight^LN||72|kg"), "{back}");
    assert_eq!(again, order);
    assert!(p.check(&Message::parse(hl7).unwrap(), 1).round_trips);
}

#[test]
fn each_specimen_keeps_its_own_observations() {
    let p = Profile::load("loi-oml-o21").unwrap();
    let hl7 = b"MSH|^~\\&|EHR|CLINIC|LAB|DEMOLAB|20240117091500||OML^O21^OML_O21|LOI9|P|2.5.1\r\
PID|1||PAT7001^^^CLINIC^MR||TESTPATIENT^GAMMA||19920704|F\r\
ORC|NW|ORD9001||||||||||1234567893^PROVIDER^OLIVIA\r\
OBR|1|ORD9001||1558-6^Glucose fasting^LN|||20240117090000|||||||||1234567893^PROVIDER^OLIVIA\r\
OBX|1|CWE|49541-6^Fasting status^LN||Y||||||O|||||||||||||||||SCI\r\
SPM|1|SPC1||119364003^Serum specimen^SCT\r\
OBX|1|NM|SPECVOL^Specimen volume^L||5|mL|||||F\r\
SPM|2|SPC2||122555007^Venous blood specimen^SCT\r\
OBX|1|NM|SPECVOL^Specimen volume^L||3|mL|||||F\r";
    let (order, back, again) = round_trip(&p, hl7);
    let kept = within(&order.tests[0].unmapped);
    assert!(kept.contains(&("OBX".to_owned(), Some("SPM(1)".to_owned()))), "{kept:?}");
    assert!(kept.contains(&("OBX".to_owned(), Some("SPM(2)".to_owned()))), "{kept:?}");
    let tail: Vec<String> = shape(&back, 2).into_iter().skip_while(|s| !s.starts_with("SPM")).collect();
    assert_eq!(tail, ["SPM SPC1", "OBX NM", "SPM SPC2", "OBX NM"], "{back}");
    assert!(back.contains("SPM|1|SPC1||119364003^Serum specimen^SCT\rOBX|1|NM|SPECVOL^Specimen volume^L||5|mL"));
    assert!(back.contains("SPM|2|SPC2||122555007^Venous blood specimen^SCT\rOBX|1|NM|SPECVOL^Specimen volume^L||3|mL"));
    assert_eq!(again, order);
}

#[test]
fn a_report_keeps_unread_fields_of_each_observation_on_that_observation() {
    let p = Profile::load("lri-oru-r01").unwrap();
    let hl7 = b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||PAT1^^^LAB^MR||DOE^JANE\r\
ORC|RE||FIL1\r\
OBR|1||FIL1|24331-1^Lipid panel^LN|||||||||||||||||||||F\r\
OBX|1|NM|2093-3^Cholesterol^LN||190|mg/dL|<200|N|||F|||||||METHOD-A\r\
OBX|2|NM|2571-8^Triglyceride^LN||120|mg/dL|<150|N|||F\r\
OBX|3|NM|2085-9^HDL^LN||55|mg/dL|>40|N|||F|||||||METHOD-C\r\
SPM|1|SPC1||119364003^Serum specimen^SCT\r\
OBX|1|ST|SPECCOND^Specimen condition^L||Hemolyzed||||||F\r";
    let msg = Message::parse(hl7).unwrap();
    let result = p.to_result(&msg).unwrap();
    let kept = within(&result.reports[0].unmapped);
    assert_eq!(
        kept,
        [
            ("SPM".to_owned(), None),
            ("OBX".to_owned(), Some("observations[0]".to_owned())),
            ("OBX".to_owned(), Some("observations[2]".to_owned())),
            ("OBX".to_owned(), Some("SPM(1)".to_owned())),
        ]
    );
    let back = p.result_to_hl7(&result).unwrap();
    let obx: Vec<String> = shape(&back, 18).into_iter().filter(|s| s.starts_with("OBX")).collect();
    assert_eq!(obx, ["OBX METHOD-A", "OBX ", "OBX METHOD-C", "OBX "], "{back}");
    assert!(
        back.contains(
            "SPM|1|SPC1||119364003^Serum specimen^SCT\rOBX|1|ST|SPECCOND^Specimen condition^L||Hemolyzed||||||F"
        ),
        "{back}"
    );
    assert_eq!(p.to_result(&Message::parse(back.as_bytes()).unwrap()).unwrap(), result);
    assert!(p.check(&msg, 1).round_trips);
}
