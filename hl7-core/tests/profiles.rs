//! EMR dialect profiles (testdata/profiles): each sample maps without
//! problems, round-trips, and lands where the dialect puts it.

use hl7_core::contract::{LabOrder, LabResult, ResultStatus};
use hl7_core::profile::{Kind, ProblemKind, Profile};
use hl7_core::{Message, Messages};
use serde_json::Value;

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/profiles")
}

fn profile(name: &str) -> Profile {
    Profile::load(dir().join(format!("{name}.toml")).to_str().unwrap()).unwrap()
}

fn samples(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.hl7"))).unwrap()
}

/// (profile, JSON pointer into each message's contract value, expected value per message)
const EXPECT: &[(&str, &str, &[&str])] = &[
    ("northwind-ehr", "/client_account", &["ACCT1002", "ACCT1002"]),
    ("northwind-ehr", "/tests/0/code", &["100090", "100114"]),
    ("northwind-ehr", "/tests/0/system", &["L", "L"]),
    ("northwind-ehr", "/tests/0/aoe/0/answer", &["Y", ""]),
    ("northwind-ehr", "/tests/0/priority", &["R", ""]),
    ("northwind-ehr", "/tests/0/specimen/type", &["WB", ""]),
    ("northwind-ehr", "/tests/1/code", &["100028", ""]),
    ("northwind-ehr", "/diagnoses/0/code", &["D64.9", ""]),
    ("northwind-ehr", "/billing/insurances/0/member_id", &["MEM5551", ""]),
    ("northwind-ehr", "/patient/birth_date", &["1985-02-14", "1970-05-30"]),
    ("elm-street-ehr", "/patient/family_name", &["DOE", "ROE"]),
    ("elm-street-ehr", "/patient/given_name", &["JANE", "RICHARD"]),
    ("elm-street-ehr", "/patient/birth_date", &["1972-07-04", "1958-11-30"]),
    ("elm-street-ehr", "/patient/sex", &["F", "M"]),
    ("elm-street-ehr", "/client_account", &["C3007", "C3007"]),
    ("elm-street-ehr", "/tests/0/code", &["80061", "81001"]),
    ("elm-street-ehr", "/tests/0/aoe/0/question_code", &["FASTING", "URINE_VOL"]),
    ("elm-street-ehr", "/tests/0/aoe/0/answer", &["Y", "1250"]),
    ("elm-street-ehr", "/tests/1/code", &["", "80053"]),
    ("riverside-ehr", "/client_account", &["C2042"]),
    ("riverside-ehr", "/tests/0/aoe/0/question_code", &["FAST"]),
    ("riverside-ehr", "/tests/0/aoe/1/answer", &["20240202T2000"]),
    ("riverside-ehr", "/tests/0/notes/0", &["Patient on metformin."]),
    ("riverside-ehr", "/ordering_provider/family_name", &["QUINN"]),
    ("lakeside-results", "/reports/0/status", &["final", "corrected"]),
    ("lakeside-results", "/reports/0/observations/0/value/text", &["101", "99"]),
    ("lakeside-results", "/reports/0/observations/0/abnormal_flags/0", &["H", "N"]),
    ("lakeside-results", "/reports/0/observations/1/value/code", &["", "YEL"]),
    ("lakeside-results", "/filler_order_number", &["LKF100", "LKF100"]),
];

#[test]
fn every_dialect_maps_its_samples_where_the_dialect_puts_the_data() {
    for name in ["northwind-ehr", "elm-street-ehr", "riverside-ehr", "lakeside-results"] {
        let p = profile(name);
        let data = samples(name);
        let values: Vec<Value> = Messages::new(&data)
            .map(|m| {
                let m = m.unwrap();
                let mapped = p.map_message(&m);
                assert!(mapped.problems.is_empty(), "{name}: {:?}", mapped.problems);
                serde_json::to_value(&mapped.value).unwrap()
            })
            .collect();
        for (prof, pointer, want) in EXPECT.iter().filter(|e| e.0 == name) {
            assert_eq!(values.len(), want.len(), "{prof}: message count");
            for (i, (v, w)) in values.iter().zip(want.iter()).enumerate() {
                let got = v.pointer(pointer).map(|x| x.as_str().unwrap_or_default().to_owned()).unwrap_or_default();
                assert_eq!(got, *w, "{prof} message {} {pointer}", i + 1);
            }
        }
    }
}

#[test]
fn every_dialect_sample_round_trips_through_its_own_dialect() {
    for name in ["northwind-ehr", "elm-street-ehr", "riverside-ehr", "lakeside-results"] {
        let p = profile(name);
        let data = samples(name);
        for m in Messages::new(&data) {
            let m = m.unwrap();
            let report = p.check(&m, 1);
            assert!(report.passed(), "{name} {:?}: {report:?}", m.control_id());
            match p.kind() {
                Kind::Order => {
                    let order = p.to_order(&m).unwrap();
                    let hl7 = p.order_to_hl7(&order).unwrap();
                    assert_eq!(p.to_order(&Message::parse(hl7.as_bytes()).unwrap()).unwrap(), order);
                }
                Kind::Result => {
                    let result = p.to_result(&m).unwrap();
                    let hl7 = p.result_to_hl7(&result).unwrap();
                    assert_eq!(p.to_result(&Message::parse(hl7.as_bytes()).unwrap()).unwrap(), result);
                }
            }
        }
    }
}

#[test]
fn unmapped_data_is_kept_not_dropped() {
    // Elm Street's height OBX is not an AOE question: it stays, as a raw segment.
    let p = profile("elm-street-ehr");
    let data = samples("elm-street-ehr");
    let m = Messages::new(&data).next().unwrap().unwrap();
    let order = p.to_order(&m).unwrap();
    let raw: Vec<&str> = order.tests[0].unmapped.iter().map(|r| r.text.as_str()).collect();
    assert!(raw.iter().any(|t| t.starts_with("OBX|2|NM|8302-2^Body height^LN")), "{raw:?}");
    let back = p.order_to_hl7(&order).unwrap();
    assert!(back.contains("8302-2^Body height^LN||170|cm"), "{back}");
    let report = p.check(&m, 1);
    assert!(report.unmapped.contains(&"OBX(2)-5".to_owned()), "{:?}", report.unmapped);
}

#[test]
fn results_only_emr_rejects_preliminary_results_naming_field_path_and_offset() {
    let p = profile("lakeside-results");
    let data = samples("lakeside-results-preliminary");
    let m = Messages::new(&data).next().unwrap().unwrap();
    let err = p.to_result(&m).unwrap_err();
    assert_eq!(err.problems.len(), 2, "every problem of the message is collected: {:?}", err.problems);
    let first = &err.problems[0];
    assert_eq!(first.kind, ProblemKind::InvalidValue);
    assert_eq!(first.field, "reports[0].status");
    assert_eq!(first.path.as_deref(), Some("OBR-25"));
    assert!(first.offset.is_some());
    assert_eq!(
        first.to_string(),
        format!(
            "reports[0].status (OBR-25, byte {}): status \"P\" is not accepted by this profile",
            first.offset.unwrap()
        )
    );
}

#[test]
fn all_problems_of_a_message_are_collected() {
    let p = Profile::load("loi-oml-o21").unwrap();
    let m = Message::parse(
        b"MSH|^~\\&|A|B|C|D|20240101||OML^O21^OML_O21||P|2.5.1\rPID|1||||||2024-13-01|X\rORC|NW\rOBR|1\r",
    )
    .unwrap();
    let err = p.to_order(&m).unwrap_err();
    let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "message_control_id",
        "placer_order_number",
        "patient.id",
        "patient.family_name",
        "patient.birth_date",
        "patient.sex",
        "ordering_provider.id",
        "tests[0].code",
    ] {
        assert!(fields.contains(&want), "{want} missing from {fields:?}");
    }
    let bad_date = err.problems.iter().find(|p| p.field == "patient.birth_date").unwrap();
    assert_eq!(bad_date.kind, ProblemKind::InvalidDate);
    let sex = err.problems.iter().find(|p| p.field == "patient.sex").unwrap();
    assert_eq!(sex.kind, ProblemKind::UnmappedCode);
    assert_eq!(sex.message, "code \"X\" has no entry in map sex");
}

#[test]
fn wrong_message_type_is_one_clear_problem() {
    let p = Profile::load("lri-oru-r01").unwrap();
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ORM^O01|1|P|2.3\r").unwrap();
    let err = p.to_result(&m).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].kind, ProblemKind::WrongMessageType);
    assert_eq!(err.problems[0].path.as_deref(), Some("MSH-9"));
}

#[test]
fn outbound_result_uses_the_emr_dialect_and_statuses() {
    let p = profile("lakeside-results");
    let mut result = LabResult::default();
    result.patient.id = Some("P1".into());
    result.patient.family_name = Some("DOE".into());
    result.patient.sex = Some("F".into());
    result.filler_order_number = Some("F1".into());
    let mut report = hl7_core::contract::Report::default();
    report.test.code = Some("2345-7".into());
    report.status = Some(ResultStatus::Final);
    report.observations.push(hl7_core::contract::Observation {
        code: Some("2345-7".into()),
        value_type: Some("NM".into()),
        value: Some(hl7_core::contract::Value::Number { text: "7.20".into() }),
        status: Some(ResultStatus::Final),
        ..Default::default()
    });
    result.reports.push(report);
    let hl7 = p.result_to_hl7(&result).unwrap();
    let m = Message::parse(hl7.as_bytes()).unwrap();
    assert_eq!(m.message_type(), ("ORU", "R01", ""));
    assert_eq!(m.version(), Some("2.3"));
    let get = |path: &str| m.get(&path.parse().unwrap()).and_then(|e| e.value()).map(|v| v.into_owned());
    assert_eq!(get("OBR-3").as_deref(), Some("F1"));
    assert_eq!(get("OBR-25").as_deref(), Some("F"));
    assert_eq!(get("OBX-5").as_deref(), Some("7.20"), "a number keeps its text");
    // a sex code the EMR has no word for is a problem, not a silent default
    result.patient.sex = Some("X".into());
    let err = p.result_to_hl7(&result).unwrap_err();
    assert_eq!(err.problems[0].field, "patient.sex");
}

#[test]
fn profile_errors_name_the_file_and_what_is_wrong() {
    let bad = [
        ("kind = \"order\"\nmessage_type = \"ORM^O01\"\n[fields]\n\"patient.shoe_size\" = \"PID-99\"\n", "unknown contract field \"patient.shoe_size\""),
        ("kind = \"order\"\nmessage_type = \"ORM^O01\"\n[fields]\n\"patient.id\" = \"PID-0\"\n", "invalid path"),
        ("kind = \"order\"\nmessage_type = \"ORM^O01\"\n[fields]\n\"patient.sex\" = { path = \"PID-8\", map = \"nope\" }\n", "unknown map \"nope\""),
        ("kind = \"order\"\n[fields]\n", "no `message_type`"),
        ("kind = \"order\"\nmessage_type = \"ORM^O01\"\nbogus = 1\n", "unknown field `bogus`"),
    ];
    for (text, want) in bad {
        let e = Profile::from_toml(text, None).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
    let e = Profile::load("no/such/profile.toml").unwrap_err().to_string();
    assert!(e.starts_with("cannot read profile no/such/profile.toml"), "{e}");
}

#[test]
fn base_profiles_load_by_name() {
    for name in hl7_core::profile::builtin_names() {
        let p = Profile::load(name).unwrap();
        assert_eq!(p.name(), name);
    }
    let _: Option<LabOrder> = None;
}

#[test]
fn templates_defaults_and_transforms() {
    let p = Profile::from_toml(
        r#"
extends = "v23-orm-o01"
[fields]
"patient.given_name" = { template = "{PID-5-2} {PID-5-3}" }
"patient.family_name" = { path = "PID-5-1", transform = ["trim", "upper"], required = true }
"patient.sex" = { path = "PID-8", map = "sex", default = "U" }
client_account = { path = "ZCL-1", default = "C9999" }
"#,
        None,
    )
    .unwrap();
    let m = Message::parse(
        b"MSH|^~\\&|A|B|C|D|20240101||ORM^O01|M1|P|2.3\rPID|1||P1||  doe ^MARY^ANN||19700101\rORC|NW|X1\rOBR|1|X1||85025||||||||||||1234567893\r",
    )
    .unwrap();
    let order = p.to_order(&m).unwrap();
    assert_eq!(order.patient.given_name.as_deref(), Some("MARY ANN"), "concatenated");
    assert_eq!(order.patient.family_name.as_deref(), Some("DOE"), "trimmed and upper-cased");
    assert_eq!(order.patient.sex.as_deref(), Some("U"), "default when absent");
    assert_eq!(order.client_account.as_deref(), Some("C9999"));
    // the way out splits the template back on its literal
    let hl7 = p.order_to_hl7(&order).unwrap();
    let back = Message::parse(hl7.as_bytes()).unwrap();
    assert_eq!(back.get(&"PID-5-2".parse().unwrap()).unwrap().raw(), "MARY");
    assert_eq!(back.get(&"PID-5-3".parse().unwrap()).unwrap().raw(), "ANN");
}

#[test]
fn inheritance_overrides_only_what_differs_and_detects_cycles() {
    let dir = std::env::temp_dir().join(format!("lb-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.toml"), "extends = \"b.toml\"\n").unwrap();
    std::fs::write(dir.join("b.toml"), "extends = \"a.toml\"\n").unwrap();
    let e = Profile::load(dir.join("a.toml").to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("extends itself"), "{e}");
    std::fs::write(
        dir.join("child.toml"),
        "name = \"child\"\nextends = \"v23-orm-o01\"\n[test]\ncode = { path = \"OBR-4-2\" }\n",
    )
    .unwrap();
    let p = Profile::load(dir.join("child.toml").to_str().unwrap()).unwrap();
    assert_eq!((p.name(), p.version(), p.message_type()), ("child", "2.3", "ORM^O01"));
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ORM^O01|M1|P|2.3\rPID|1||P1||DOE||19700101\rORC|NW|X1\rOBR|1|X1||85025^CBC||||||||||||1234567893\r").unwrap();
    let o = p.to_order(&m).unwrap();
    assert_eq!(o.tests[0].code.as_deref(), Some("CBC"), "overridden rule");
    assert_eq!(o.patient.family_name.as_deref(), Some("DOE"), "inherited rule");
    std::fs::remove_dir_all(&dir).ok();
}
