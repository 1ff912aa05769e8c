//! Order validation: one named test per problem kind, panels expanding to
//! their components, and the sample orders of testdata/compendium.

use compendium::{validate, AnswerType, AoeQuestion, Catalog, CustomPanel, Import, Problem, ProblemKind, Status, Test};
use hl7_core::contract::LabOrder;

fn q(code: &str, t: AnswerType, allowed: &[&str], required: bool) -> AoeQuestion {
    AoeQuestion {
        code: code.into(),
        question: format!("{code}?"),
        answer_type: t,
        allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
        required,
    }
}

fn catalog() -> Catalog {
    let d = "2024-01-01".parse().unwrap();
    let p = |s: &str| s.parse().unwrap();
    Catalog::new(
        [
            Test::new("1001", "Glucose", p("12.00"), d).with_specimen("SER").with_aoe(q(
                "FAST",
                AnswerType::YesNo,
                &[],
                true,
            )),
            Test::new("1002", "Urinalysis", p("9.00"), d).with_specimen("UR"),
            Test::new("1003", "Culture", p("30.00"), d)
                .with_aoe(q("SRC", AnswerType::List, &["THROAT", "WOUND"], true))
                .with_aoe(q("VOL", AnswerType::Number, &[], false))
                .with_aoe(q("LMP", AnswerType::Date, &[], false)),
            Test::new("1000", "Old glucose", p("12.00"), d)
                .with_status(Status::Discontinued { replaced_by: Some("1001".into()) }),
            Test::new("0999", "Bleeding time", p("12.00"), d).with_status(Status::Discontinued { replaced_by: None }),
        ],
        [
            CustomPanel::new("CP1", "Sugar and urine", "ACCT1", ["1001", "1002"], p("20.00")),
            CustomPanel::new("CP2", "With an old test", "ACCT1", ["1000", "1002"], p("20.00")),
        ],
    )
    .unwrap()
}

fn order(json: &str) -> LabOrder {
    serde_json::from_str(json).unwrap()
}

fn problems(json: &str, client: Option<&str>) -> Vec<Problem> {
    validate(&order(json), &catalog(), client)
}

#[test]
fn a_good_order_has_no_problem() {
    let p = problems(
        r#"{"tests": [{"code": "1001", "specimen": {"type": "SER"}, "aoe": [{"question_code": "FAST", "answer": "Y"}]},
                      {"code": "1003", "aoe": [{"question_code": "SRC", "answer": "wound"}, {"question_code": "VOL", "answer": "12.5"}]},
                      {"code": "CP1", "specimen": {"type": "Urine"}, "aoe": [{"question_code": "FAST", "answer": "N"}]}]}"#,
        Some("ACCT1"),
    );
    assert_eq!(p, []);
}

#[test]
fn unknown_code() {
    let p = problems(
        r#"{"tests": [{"code": "1001", "aoe": [{"question_code": "FAST", "answer": "Y"}]}, {"code": "7777"}]}"#,
        None,
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::UnknownCode);
    assert_eq!((p[0].test.as_str(), p[0].path.as_str()), ("7777", "tests[1].code"));
    assert_eq!(p[0].to_string(), "tests[1].code: test 7777: unknown test code");
}

#[test]
fn missing_code() {
    let p = problems(r#"{"tests": [{"name": "Glucose"}]}"#, None);
    assert_eq!(p[0].kind, ProblemKind::MissingCode);
    assert_eq!(p[0].to_string(), "tests[0].code: test (none): no test code");
}

#[test]
fn discontinued_test_names_its_replacement() {
    let p = problems(r#"{"tests": [{"code": "1000"}]}"#, None);
    assert_eq!(p[0].kind, ProblemKind::Discontinued { replaced_by: Some("1001".into()) });
    assert_eq!(p[0].to_string(), "tests[0].code: test 1000: discontinued, order 1001 instead");
    let p = problems(r#"{"tests": [{"code": "0999"}]}"#, None);
    assert_eq!(p[0].to_string(), "tests[0].code: test 0999: discontinued");
}

#[test]
fn discontinued_component_of_a_panel() {
    let p = problems(r#"{"tests": [{"code": "CP2"}]}"#, Some("ACCT1"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].panel.as_deref(), Some("CP2"));
    assert_eq!(p[0].to_string(), "tests[0].code: test 1000 (in panel CP2): discontinued, order 1001 instead");
}

#[test]
fn panel_ordered_by_a_client_that_does_not_own_it() {
    let json =
        r#"{"client_account": "ACCT2", "tests": [{"code": "CP1", "aoe": [{"question_code": "FAST", "answer": "Y"}]}]}"#;
    let p = problems(json, None);
    assert_eq!(p[0].kind, ProblemKind::PanelNotOwned { owner: "ACCT1".into(), client: Some("ACCT2".into()) });
    assert_eq!(p[0].path, "tests[0].code");
    // the client argument wins over the order's account
    assert_eq!(problems(json, Some("ACCT1")), []);
}

#[test]
fn panel_ordered_without_a_client_account() {
    let p = problems(r#"{"tests": [{"code": "CP1", "aoe": [{"question_code": "FAST", "answer": "Y"}]}]}"#, None);
    assert_eq!(p[0].to_string(), "tests[0].code: test CP1: panel of client ACCT1, ordered without a client account");
}

#[test]
fn missing_required_aoe_answer() {
    let p = problems(r#"{"tests": [{"code": "1003", "aoe": [{"question_code": "FAST", "answer": "Y"}]}]}"#, None);
    assert_eq!(p.len(), 1, "optional VOL and LMP may stay unanswered: {p:?}");
    assert_eq!(p[0].kind, ProblemKind::MissingAoe { question_code: "SRC".into(), question: "SRC?".into() });
    assert_eq!(p[0].path, "tests[0].aoe");
    // an empty answer is no answer
    let p = problems(r#"{"tests": [{"code": "1001", "aoe": [{"question_code": "FAST", "answer": " "}]}]}"#, None);
    assert!(matches!(p[0].kind, ProblemKind::MissingAoe { .. }));
}

#[test]
fn answer_not_allowed() {
    let p = problems(
        r#"{"tests": [{"code": "1003", "aoe": [{"question_code": "SRC", "answer": "EAR"},
                                               {"question_code": "VOL", "answer": "12 mL"},
                                               {"question_code": "LMP", "answer": "last week"}]},
                      {"code": "1001", "aoe": [{"question_code": "FAST", "answer": "maybe"}]}]}"#,
        None,
    );
    let got: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            r#"tests[0].aoe[0].answer: test 1003: answer "EAR" to SRC not allowed (allowed: THROAT, WOUND)"#,
            r#"tests[0].aoe[1].answer: test 1003: answer "12 mL" to VOL not allowed (allowed: a number)"#,
            r#"tests[0].aoe[2].answer: test 1003: answer "last week" to LMP not allowed (allowed: a date)"#,
            r#"tests[1].aoe[0].answer: test 1001: answer "maybe" to FAST not allowed (allowed: Y, N)"#,
        ]
    );
}

#[test]
fn specimen_that_does_not_match() {
    let p = problems(
        r#"{"tests": [{"code": "1002", "specimen": {"type": "SER^Serum^HL70487"}},
                      {"code": "1002", "specimen": {"type": "urine"}}]}"#,
        None,
    );
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].kind,
        ProblemKind::SpecimenMismatch { expected: vec!["UR".into()], got: "SER^Serum^HL70487".into() }
    );
    assert_eq!(p[0].path, "tests[0].specimen.type");
}

#[test]
fn a_panel_expands_to_its_components() {
    // the panel's AOE questions are its components'; its specimen must be one of theirs
    let p = problems(r#"{"tests": [{"code": "CP1", "specimen": {"type": "CSF"}}]}"#, Some("ACCT1"));
    let got: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "tests[0].aoe: test 1001 (in panel CP1): missing required answer to FAST (FAST?)",
            r#"tests[0].specimen.type: test CP1: specimen "CSF", expected SER or UR"#,
        ]
    );
}

#[test]
fn problems_serialize_as_json_with_their_kind() {
    let p = problems(r#"{"tests": [{"code": "1000"}]}"#, None);
    assert_eq!(
        serde_json::to_string(&p[0]).unwrap(),
        r#"{"kind":"discontinued","replaced_by":"1001","test":"1000","path":"tests[0].code"}"#
    );
}

/// The sample orders list the kinds of problem each must have.
#[test]
fn the_sample_orders_have_the_problems_they_list() {
    let dir = format!("{}/../testdata/compendium", env!("CARGO_MANIFEST_DIR"));
    let read = |n: &str| std::fs::read(format!("{dir}/{n}")).unwrap();
    let c = Import::from_csv(&read("tests_v2.csv")[..], Some(&read("panels_v2.csv")[..])).into_catalog(false).unwrap();
    let text = String::from_utf8(read("orders.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let order: LabOrder = serde_json::from_value(v["order"].clone()).unwrap();
        let mut want: Vec<String> =
            v["expect"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
        let mut got: Vec<String> = validate(&order, &c, None)
            .iter()
            .map(|p| serde_json::to_value(p).unwrap()["kind"].as_str().unwrap().to_owned())
            .collect();
        want.sort();
        got.sort();
        got.dedup();
        assert_eq!(got, want, "{:?}", order.message_control_id);
    }
}
