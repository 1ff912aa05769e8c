//! contract -> HL7 -> contract is the identity for generated contracts,
//! through every base profile.

use chrono::{FixedOffset, NaiveDate};
use hl7_core::contract::*;
use hl7_core::datetime::{Precision, Timestamp};
use hl7_core::profile::Profile;
use hl7_core::Message;
use proptest::option::of;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z][A-Za-z0-9 .,'/-]{0,12}",
        "[a-z]{1,4}[|^~&\\\\#][a-z]{1,4}",
        Just("\"\"".to_owned()),
        Just("Müller & Söhne".to_owned()),
        Just("line 1\nline 2".to_owned()),
        Just("see \\.br\\ here".to_owned()),
    ]
}

fn opt() -> impl Strategy<Value = Option<String>> {
    of(text())
}

fn ts() -> impl Strategy<Value = Timestamp> {
    (1900i32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60, 0usize..4, of(-12i32..14)).prop_map(
        |(y, mo, d, h, mi, s, p, off)| {
            let dt = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, s).unwrap();
            let precision = [Precision::Day, Precision::Minute, Precision::Second, Precision::Fraction(2)][p];
            let dt = if precision == Precision::Fraction(2) { dt.with_nanosecond_ms(370) } else { dt };
            let offset =
                if precision >= Precision::Hour { off.and_then(|h| FixedOffset::east_opt(h * 3600)) } else { None };
            Timestamp::new(dt, precision, offset)
        },
    )
}

trait Ms {
    fn with_nanosecond_ms(self, ms: u32) -> Self;
}
impl Ms for chrono::NaiveDateTime {
    fn with_nanosecond_ms(self, ms: u32) -> Self {
        chrono::Timelike::with_nanosecond(&self, ms * 1_000_000).unwrap()
    }
}

fn day() -> impl Strategy<Value = Timestamp> {
    (1900i32..2100, 1u32..13, 1u32..29).prop_map(|(y, m, d)| Timestamp::date(NaiveDate::from_ymd_opt(y, m, d).unwrap()))
}

fn address() -> impl Strategy<Value = Option<Address>> {
    of((text(), opt(), opt(), opt(), opt(), opt()).prop_map(|(street, other, city, state, zip, country)| Address {
        street: Some(street),
        other,
        city,
        state,
        zip,
        country,
    }))
}

fn patient() -> impl Strategy<Value = Patient> {
    (
        text(),
        opt(),
        text(),
        opt(),
        opt(),
        day(),
        of(prop_oneof![Just("F"), Just("M"), Just("U"), Just("O")]),
        address(),
        opt(),
    )
        .prop_map(|(id, id_authority, family, given, middle, dob, sex, address, phone)| Patient {
            id: Some(id),
            id_authority,
            family_name: Some(family),
            given_name: given,
            middle_name: middle,
            birth_date: Some(dob),
            sex: sex.map(str::to_owned),
            address,
            phone,
        })
}

fn provider() -> impl Strategy<Value = Provider> {
    (text(), opt(), opt()).prop_map(|(id, family_name, given_name)| Provider { id: Some(id), family_name, given_name })
}

fn specimen() -> impl Strategy<Value = Option<Specimen>> {
    of((text(), opt(), opt()).prop_map(|(k, source, container)| Specimen { kind: Some(k), source, container }))
}

fn insurance() -> impl Strategy<Value = Insurance> {
    (text(), opt(), opt(), opt(), of((text(), opt(), opt(), of(day())))).prop_map(
        |(payer_id, payer_name, member_id, group_number, sub)| Insurance {
            payer_id: Some(payer_id),
            payer_name,
            member_id,
            group_number,
            subscriber: sub.map(|(f, g, r, b)| Subscriber {
                family_name: Some(f),
                given_name: g,
                relationship: r,
                birth_date: b,
            }),
        },
    )
}

fn test_item() -> impl Strategy<Value = OrderedTest> {
    (
        text(),
        opt(),
        opt(),
        opt(),
        of(ts()),
        specimen(),
        proptest::collection::vec((text(), opt(), opt()), 0..3),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(|(code, name, system, priority, collected_at, specimen, aoe, notes)| OrderedTest {
            code: Some(code),
            name,
            system,
            priority,
            collected_at,
            specimen,
            aoe: aoe
                .into_iter()
                .map(|(q, question, answer)| AoeAnswer { question_code: Some(q), question, answer })
                .collect(),
            notes,
            unmapped: Vec::new(),
        })
}

fn order() -> impl Strategy<Value = LabOrder> {
    (
        (text(), ts(), opt(), opt(), opt(), opt(), text(), opt()),
        (patient(), provider()),
        (
            of(prop_oneof![Just(BillTo::Client), Just(BillTo::Patient), Just(BillTo::Insurance)]),
            proptest::collection::vec(insurance(), 0..3),
            of((text(), opt(), opt(), opt())),
        ),
        proptest::collection::vec((text(), opt(), opt()), 0..3),
        proptest::collection::vec(test_item(), 1..4),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(
                (id, sent, sa, sf, ra, rf, placer, filler),
                (patient, prov),
                (bill_to, insurances, guar),
                dx,
                tests,
                notes,
            )| {
                LabOrder {
                    message_control_id: Some(id),
                    sent_at: Some(sent),
                    sending: Endpoint { application: sa, facility: sf },
                    receiving: Endpoint { application: ra, facility: rf },
                    order_control: Some("NW".into()),
                    placer_order_number: Some(placer),
                    filler_order_number: filler,
                    client_account: None,
                    patient,
                    ordering_provider: prov,
                    billing: Billing {
                        bill_to,
                        insurances,
                        guarantor: guar.map(|(f, g, r, p)| Guarantor {
                            family_name: Some(f),
                            given_name: g,
                            relationship: r,
                            address: None,
                            phone: p,
                        }),
                    },
                    diagnoses: dx
                        .into_iter()
                        .map(|(code, system, description)| Diagnosis { code: Some(code), system, description })
                        .collect(),
                    tests,
                    notes,
                    delimiters: None,
                    unmapped: Vec::new(),
                }
            },
        )
}

fn value() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        text().prop_map(|t| ("NM".to_owned(), Value::Number { text: t })),
        text().prop_map(|t| ("ST".to_owned(), Value::Text { text: t })),
        (text(), opt(), opt()).prop_map(|(c, n, s)| (
            "CWE".to_owned(),
            Value::Coded { coded: Coded { code: Some(c), name: n, system: s } }
        )),
        (of(prop_oneof![Just("<"), Just(">="), Just("=")]), text(), of(prop_oneof![Just(":"), Just("-")]), opt())
            .prop_map(|(cmp, n1, sep, n2)| (
                "SN".to_owned(),
                Value::StructuredNumeric {
                    comparator: cmp.map(str::to_owned),
                    num1: Some(n1),
                    separator: sep.map(str::to_owned),
                    num2: n2
                }
            )),
    ]
}

fn status() -> impl Strategy<Value = ResultStatus> {
    prop_oneof![
        Just(ResultStatus::Preliminary),
        Just(ResultStatus::Final),
        Just(ResultStatus::Corrected),
        Just(ResultStatus::Cancelled)
    ]
}

fn observation() -> impl Strategy<Value = Observation> {
    (
        (text(), opt(), opt()),
        of(value()),
        (opt(), opt(), proptest::collection::vec("[A-Z]{1,2}", 0..3)),
        (status(), of(ts()), opt(), proptest::collection::vec(text(), 0..2)),
    )
        .prop_map(|((code, name, system), v, (units, reference_range, flags), (st, at, lab, notes))| {
            let (value_type, value) = match v {
                Some((t, v)) => (Some(t), Some(v)),
                None => (None, None),
            };
            Observation {
                code: Some(code),
                name,
                system,
                value_type,
                value,
                units,
                reference_range,
                abnormal_flags: flags,
                status: Some(st),
                observed_at: at,
                performing_lab: lab,
                notes,
            }
        })
}

fn result() -> impl Strategy<Value = LabResult> {
    (
        (text(), ts(), opt(), opt(), opt(), opt()),
        (patient(), provider(), opt(), text()),
        proptest::collection::vec(
            (
                (text(), opt(), opt()),
                status(),
                (of(ts()), of(ts()), specimen()),
                proptest::collection::vec(observation(), 0..4),
                proptest::collection::vec(text(), 0..2),
            ),
            1..3,
        ),
    )
        .prop_map(|((id, sent, sa, sf, ra, rf), (patient, prov, placer, filler), reports)| LabResult {
            message_control_id: Some(id),
            sent_at: Some(sent),
            sending: Endpoint { application: sa, facility: sf },
            receiving: Endpoint { application: ra, facility: rf },
            patient,
            ordering_provider: prov,
            placer_order_number: placer,
            filler_order_number: Some(filler),
            client_account: None,
            reports: reports
                .into_iter()
                .map(|((code, name, system), status, (observed_at, reported_at, specimen), observations, notes)| {
                    Report {
                        test: Coded { code: Some(code), name, system },
                        status: Some(status),
                        observed_at,
                        reported_at,
                        specimen,
                        observations,
                        notes,
                        unmapped: Vec::new(),
                    }
                })
                .collect(),
            delimiters: None,
            unmapped: Vec::new(),
        })
}

fn diff<T: serde::Serialize>(a: &T, b: &T) -> String {
    let a = serde_json::to_string_pretty(a).unwrap();
    let b = serde_json::to_string_pretty(b).unwrap();
    a.lines().zip(b.lines()).filter(|(x, y)| x != y).map(|(x, y)| format!("- {x}\n+ {y}\n")).take(6).collect()
}

/// The strategies nest deeply; debug builds need more than the default
/// test-thread stack to build them.
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(64 << 20).spawn(f).unwrap().join().unwrap();
}

#[test]
fn order_contract_hl7_contract_is_identity_through_loi() {
    with_big_stack(|| {
        let p = Profile::load("loi-oml-o21").unwrap();
        proptest!(ProptestConfig::with_cases(128), |(o in order())| {
            let hl7 = p.order_to_hl7(&o).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = p
                .to_order(&Message::parse(hl7.as_bytes()).unwrap())
                .map_err(|e| TestCaseError::fail(format!("{e}\n{hl7}")))?;
            prop_assert!(back == o, "{}\n{}", diff(&o, &back), hl7.replace('\r', "\n"));
        });
    });
}

#[test]
fn result_contract_hl7_contract_is_identity_through_lri() {
    with_big_stack(|| {
        let p = Profile::load("lri-oru-r01").unwrap();
        proptest!(ProptestConfig::with_cases(128), |(r in result())| {
            let hl7 = p.result_to_hl7(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = p
                .to_result(&Message::parse(hl7.as_bytes()).unwrap())
                .map_err(|e| TestCaseError::fail(format!("{e}\n{hl7}")))?;
            prop_assert!(back == r, "{}\n{}", diff(&r, &back), hl7.replace('\r', "\n"));
        });
    });
}
