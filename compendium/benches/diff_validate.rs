//! Diff and order validation on a generated 10,000-test compendium.
//!
//! - `diff/10000_tests`: a full field-by-field diff of two versions that
//!   differ in about 5 % of their tests (prices, discontinuations, additions,
//!   removals, an AOE change) and a few panels. Target: well under a second.
//! - `diff_mfn/10000_tests`: the same diff exported as the `UPD` messages.
//! - `validate/one_order`: one order of five lines (tests with AOE answers,
//!   a discontinued test, a client panel). Target: microseconds.
//!
//! The compendium is generated here, deterministically (the same on every
//! run): codes, prices and AOE questions shaped like the sample in
//! `testdata/compendium`, ten thousand of them.
//!
//! ```text
//! cargo bench -p compendium --bench diff_validate
//! ```

use std::hint::black_box;

use compendium::{diff, mfn, validate, AnswerType, AoeQuestion, Catalog, CustomPanel, Status, Test};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_core::contract::LabOrder;
use rust_decimal::Decimal;

const TESTS: usize = 10_000;
const PANELS: usize = 200;

/// A small deterministic generator (xorshift), so the bench needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn questions() -> Vec<AoeQuestion> {
    let q = |code: &str, question: &str, t, allowed: &[&str], required| AoeQuestion {
        code: code.into(),
        question: question.into(),
        answer_type: t,
        allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
        required,
    };
    vec![
        q("49541-6", "Fasting status", AnswerType::YesNo, &[], true),
        q("SRC", "Specimen source", AnswerType::List, &["THROAT", "NASOPHARYNX", "WOUND", "URINE", "SPUTUM"], true),
        q("VOL24", "24-hour urine volume (mL)", AnswerType::Number, &[], true),
        q("8665-2", "Last menstrual period start date", AnswerType::Date, &[], false),
        q("LASTDOSE", "Date and time of last dose", AnswerType::Text, &[], false),
    ]
}

fn generate() -> (Catalog, Catalog) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pool = questions();
    let specimens = [
        ("SER", "SST (gold top)"),
        ("WB", "Lavender top (EDTA)"),
        ("UR", "Sterile urine cup"),
        ("PLAS", "Light blue top (citrate)"),
    ];
    let date = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let mut tests: Vec<Test> = (0..TESTS)
        .map(|i| {
            let (spec, cont) = specimens[rng.below(specimens.len())];
            let mut t = Test::new(
                format!("{:06}", 100_000 + i * 7),
                format!("Generated test {i}"),
                Decimal::new(500 + rng.below(20_000) as i64, 2),
                date,
            )
            .with_loinc(format!("{}-{}", 10_000 + i, i % 10))
            .with_cpt(format!("{}", 80_000 + rng.below(9_000)))
            .with_specimen(spec)
            .with_container(cont);
            t.volume = Some("1 mL".into());
            t.storage = Some("Refrigerated".into());
            t.turnaround = Some(format!("{} days", 1 + rng.below(5)));
            if rng.below(10) < 3 {
                t.aoe.push(pool[rng.below(pool.len())].clone());
            }
            t
        })
        .collect();
    let panels: Vec<CustomPanel> = (0..PANELS)
        .map(|i| {
            let comps: Vec<String> =
                (0..2 + rng.below(4)).map(|_| tests[rng.below(TESTS)].code.clone()).fold(Vec::new(), |mut v, c| {
                    if !v.contains(&c) {
                        v.push(c);
                    }
                    v
                });
            CustomPanel::new(
                format!("CP{i:04}"),
                format!("Panel {i}"),
                format!("ACCT{}", 1000 + i % 40),
                comps,
                Decimal::new(9_900, 2),
            )
        })
        .collect();
    let old = Catalog::new(tests.clone(), panels.clone()).expect("valid generated catalog");

    // about 5 % of the tests change
    let in_panels: std::collections::HashSet<String> = panels.iter().flat_map(|p| p.components.clone()).collect();
    for i in 0..TESTS {
        match rng.below(100) {
            0..=2 => tests[i].price += Decimal::new(250, 2),
            3 if !in_panels.contains(&tests[i].code) => {
                let r = tests[(i + 1) % TESTS].code.clone();
                tests[i].status = Status::Discontinued { replaced_by: Some(r) };
            }
            4 => tests[i].turnaround = Some("7 days".into()),
            _ => {}
        }
    }
    for i in 0..100 {
        tests.push(
            Test::new(format!("9{i:05}"), format!("New test {i}"), Decimal::new(4_200, 2), date).with_specimen("SER"),
        );
    }
    let mut panels = panels;
    panels[0].price = Decimal::new(10_900, 2);
    panels.pop();
    let new = Catalog::new(tests, panels).expect("valid generated catalog");
    (old, new)
}

fn order(catalog: &Catalog) -> LabOrder {
    let mut tests = catalog.tests().filter(|t| t.status.is_active());
    let with_aoe = catalog.tests().find(|t| t.aoe.iter().any(|q| q.answer_type == AnswerType::List)).unwrap();
    let discontinued = catalog.tests().find(|t| !t.status.is_active()).map_or("000000", |t| t.code.as_str());
    let panel = catalog.panels().next().unwrap();
    let json = serde_json::json!({
        "client_account": panel.client_account,
        "tests": [
            {"code": tests.next().unwrap().code, "specimen": {"type": "SER"}},
            {"code": tests.next().unwrap().code, "aoe": [{"question_code": "49541-6", "answer": "Y"}]},
            {"code": with_aoe.code, "aoe": [{"question_code": "SRC", "answer": "WOUND"}]},
            {"code": discontinued},
            {"code": panel.code, "aoe": [{"question_code": "49541-6", "answer": "N"}]},
        ]
    });
    serde_json::from_value(json).expect("a valid contract order")
}

fn bench(c: &mut Criterion) {
    let (old, new) = generate();
    let d = diff(&old, &new);
    assert!(d.tests.len() > TESTS / 50, "about 5 % changed: {}", d.summary());

    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Elements(TESTS as u64));
    g.sample_size(20);
    g.bench_function("10000_tests", |b| b.iter(|| black_box(diff(black_box(&old), black_box(&new))).tests.len()));
    g.finish();

    let mut g = c.benchmark_group("diff_mfn");
    g.throughput(Throughput::Elements(TESTS as u64));
    g.sample_size(10);
    let at = "20240301".parse().unwrap();
    g.bench_function("10000_tests", |b| {
        b.iter(|| {
            let d = diff(&old, &new).with_versions(1, 2);
            black_box(mfn::export_diff(&d, &at, &Default::default()))
        })
    });
    g.finish();

    let o = order(&new);
    assert!(!validate(&o, &new, None).is_empty(), "the order has problems to find");
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(o.tests.len() as u64));
    g.bench_function("one_order", |b| b.iter(|| black_box(validate(black_box(&o), black_box(&new), None))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
