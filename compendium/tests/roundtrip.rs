//! Property: import(export(c)) == c, through CSV and through JSON, for
//! generated catalogs (odd text, every answer type, replacements, panels);
//! and the compendium file keeps every version.

use compendium::{export, AnswerType, AoeQuestion, Catalog, Compendium, CustomPanel, Import, Status, Test};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// Text as a cell holds it: no surrounding whitespace, not empty; commas,
/// quotes, separators of the AOE cell, HL7 delimiters and non-ASCII welcome.
fn text() -> impl Strategy<Value = String> {
    "[^\\s\\p{C}]([^\\p{C}]{0,12}[^\\s\\p{C}])?"
}

fn code() -> impl Strategy<Value = String> {
    "[A-Z0-9][A-Z0-9._/-]{0,7}"
}

fn price() -> impl Strategy<Value = Decimal> {
    (0i64..100_000_000, 0u32..=4).prop_map(|(m, s)| Decimal::new(m, s))
}

fn answer_type() -> impl Strategy<Value = AnswerType> {
    prop_oneof![
        Just(AnswerType::Text),
        Just(AnswerType::Number),
        Just(AnswerType::Date),
        Just(AnswerType::YesNo),
        Just(AnswerType::List)
    ]
}

/// A pool of AOE question definitions (one per code, as a catalog requires).
fn questions() -> impl Strategy<Value = Vec<AoeQuestion>> {
    prop::collection::btree_map(code(), (text(), answer_type(), prop::collection::btree_set(text(), 1..4)), 0..5)
        .prop_map(|m| {
            m.into_iter()
                .map(|(code, (question, t, allowed))| AoeQuestion {
                    code,
                    question,
                    answer_type: t,
                    allowed: if t == AnswerType::List { distinct_without_case(allowed) } else { vec![] },
                    required: false,
                })
                .collect()
        })
}

/// Allowed answers differ without case (`A` and `a` would be one answer).
fn distinct_without_case(answers: std::collections::BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in answers {
        if !out.iter().any(|b| b.to_lowercase() == a.to_lowercase() || b.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct TestSeed {
    name: String,
    optional: [Option<String>; 7],
    price: Decimal,
    days: u32,
    status: (bool, Option<usize>),
    aoe: Vec<(usize, bool)>,
}

fn test_seed() -> impl Strategy<Value = TestSeed> {
    let opt = || prop::option::of(text());
    (
        text(),
        [opt(), opt(), opt(), opt(), opt(), opt(), opt()],
        price(),
        0u32..10_000,
        (any::<bool>(), prop::option::of(0usize..100)),
        prop::collection::vec((0usize..100, any::<bool>()), 0..3),
    )
        .prop_map(|(name, optional, price, days, status, aoe)| TestSeed {
            name,
            optional,
            price,
            days,
            status,
            aoe,
        })
}

fn catalog() -> impl Strategy<Value = Catalog> {
    (
        prop::collection::btree_map(code(), test_seed(), 1..12),
        questions(),
        prop::collection::vec((text(), code(), price(), prop::collection::vec(0usize..100, 1..4)), 0..4),
    )
        .prop_map(|(seeds, pool, panels)| {
            let codes: Vec<String> = seeds.keys().cloned().collect();
            let base = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
            let tests: Vec<Test> = seeds
                .iter()
                .enumerate()
                .map(|(i, (code, s))| {
                    let [loinc, cpt, specimen, container, volume, storage, turnaround] = s.optional.clone();
                    let status = match s.status {
                        (true, _) => Status::Active,
                        (false, r) => Status::Discontinued {
                            replaced_by: r.map(|r| codes[r % codes.len()].clone()).filter(|r| *r != codes[i]),
                        },
                    };
                    let mut aoe: Vec<AoeQuestion> = Vec::new();
                    for (q, required) in &s.aoe {
                        if pool.is_empty() {
                            break;
                        }
                        let mut q = pool[q % pool.len()].clone();
                        q.required = *required;
                        if !aoe.iter().any(|a| a.code == q.code) {
                            aoe.push(q);
                        }
                    }
                    Test {
                        code: code.clone(),
                        name: s.name.clone(),
                        loinc,
                        cpt,
                        specimen,
                        container,
                        volume,
                        storage,
                        turnaround,
                        price: s.price,
                        status,
                        effective_from: base + chrono::Days::new(u64::from(s.days)),
                        aoe,
                    }
                })
                .collect();
            let panels: Vec<CustomPanel> = panels
                .into_iter()
                .enumerate()
                .map(|(i, (name, client, price, comps))| {
                    let mut c: Vec<String> = Vec::new();
                    for k in comps {
                        let code = &codes[k % codes.len()];
                        if !c.contains(code) {
                            c.push(code.clone());
                        }
                    }
                    // panel codes cannot clash with test codes: they have a lower-case letter
                    CustomPanel::new(format!("p{i}"), name, client, c, price)
                })
                .collect();
            Catalog::new(tests, panels).expect("the generator makes valid catalogs")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn csv_export_then_import_is_the_identity(c in catalog()) {
        let (mut t, mut p) = (Vec::new(), Vec::new());
        export::tests_csv(&c, &mut t).unwrap();
        export::panels_csv(&c, &mut p).unwrap();
        let back = Import::from_csv(&t[..], Some(&p[..]));
        prop_assert!(back.errors().is_empty(), "{:?}\n{}", back.errors(), String::from_utf8_lossy(&t));
        prop_assert_eq!(back.into_catalog(false).unwrap(), c);
    }

    #[test]
    fn json_export_then_import_is_the_identity(c in catalog()) {
        let back = Import::from_json(&export::json(&c));
        prop_assert!(back.errors().is_empty(), "{:?}", back.errors());
        prop_assert_eq!(back.into_catalog(false).unwrap(), c);
    }

    #[test]
    fn the_compendium_file_keeps_every_version(a in catalog(), b in catalog()) {
        let mut comp = Compendium::new();
        comp.commit(a, "a", "", "20240101".parse().unwrap());
        comp.commit(b, "b", "note", "20240102120000+0100".parse().unwrap());
        prop_assert_eq!(Compendium::from_json(&comp.to_json()).unwrap(), comp);
    }

    /// Bad input never panics: arbitrary bytes after a valid header, arbitrary JSON text.
    #[test]
    fn import_never_panics(body in prop::collection::vec(any::<u8>(), 0..400), text in "\\PC{0,200}") {
        let mut tests = b"code,name,loinc,cpt,specimen,container,volume,storage,turnaround,price,status,effective_from,replaced_by,aoe\n".to_vec();
        tests.extend_from_slice(&body);
        let mut panels = b"code,name,client_account,price,components\n".to_vec();
        panels.extend_from_slice(&body);
        let _ = Import::from_csv(&tests[..], Some(&panels[..]));
        let _ = Import::from_csv(&body[..], None::<&[u8]>);
        let _ = Import::from_json(&text);
        let _ = Import::from_json(&format!("{{\"tests\": [{{\"code\": {text:?}, \"aoe\": {text:?}}}]}}"));
        let _ = compendium::EmrCodeMap::from_csv("m", &body[..]);
        let _ = compendium::EmrCodeMap::from_json("m", &text);
        let _ = Compendium::from_json(&text);
    }
}
