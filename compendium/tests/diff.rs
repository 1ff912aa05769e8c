//! Diffs and versions: the sample's changes from version 1 to 2, field by
//! field, as a table and as JSON; the compendium file.

use compendium::{
    diff, AnswerType, AoeQuestion, Catalog, ChangeKind, Compendium, CustomPanel, ErrorKind, Import, Status, Test,
};

fn sample(v: u32) -> Catalog {
    let read = |n: String| std::fs::read(format!("{}/../testdata/compendium/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Import::from_csv(&read(format!("tests_v{v}.csv"))[..], Some(&read(format!("panels_v{v}.csv"))[..]))
        .into_catalog(false)
        .unwrap()
}

#[test]
fn the_sample_diff_lists_every_kind_of_change() {
    let (a, b) = (sample(1), sample(2));
    let d = diff(&a, &b);
    let t = d.test_counts();
    assert_eq!((t.added, t.removed, t.discontinued, t.reactivated), (5, 1, 4, 0));
    assert!(t.changed >= 12, "{t:?}");
    let p = d.panel_counts();
    assert_eq!((p.added, p.removed), (1, 1));
    assert!(p.changed >= 2, "{p:?}");
    // the AOE question that gained an answer
    assert_eq!(d.questions.len(), 1);
    assert_eq!(d.questions[0].fields[0].field, "allowed");
    assert!(d.questions[0].fields[0].after.as_deref().unwrap().ends_with("|EYE"));
    // a discontinued test names its replacement
    let vit_d = a.tests().find(|t| t.name == "Vitamin D, 25-hydroxy").unwrap();
    let ch = d.tests.iter().find(|c| c.code == vit_d.code).unwrap();
    assert_eq!(ch.kind, ChangeKind::Discontinued);
    let repl = ch.fields.iter().find(|f| f.field == "replaced_by").unwrap();
    assert_eq!(b.test(repl.after.as_deref().unwrap()).unwrap().name, "Vitamin D, 25-hydroxy (LC-MS/MS)");
    // the tests that ask the changed question show it as a field change
    assert!(d.tests.iter().any(|c| c.fields.iter().any(|f| f.field == "aoe.SRC")));
    // turnaround
    let ferritin = b.tests().find(|t| t.name == "Ferritin").unwrap();
    let ch = d.tests.iter().find(|c| c.code == ferritin.code).unwrap();
    assert!(ch.fields.iter().any(|f| f.field == "turnaround" && f.after.as_deref() == Some("2 days")));
    // the reverse diff mirrors it
    let r = diff(&b, &a);
    assert_eq!((r.test_counts().added, r.test_counts().removed, r.test_counts().reactivated), (1, 5, 4));
}

#[test]
fn the_table_and_the_json() {
    let d0 = "2024-01-01".parse().unwrap();
    let p = |s: &str| s.parse().unwrap();
    let old = Catalog::new(
        [Test::new("1001", "Glucose", p("42.00"), d0), Test::new("1002", "Iron", p("20.00"), d0)],
        [CustomPanel::new("CP1", "Sugar", "ACCT1", ["1001"], p("10.00"))],
    )
    .unwrap();
    let src = AoeQuestion {
        code: "SRC".into(),
        question: "Source".into(),
        answer_type: AnswerType::List,
        allowed: vec!["A".into()],
        required: true,
    };
    let new = Catalog::new(
        [
            Test::new("1001", "Glucose", p("45.00"), d0),
            Test::new("1002", "Iron", p("20.00"), d0)
                .with_status(Status::Discontinued { replaced_by: Some("1001".into()) }),
            Test::new("1003", "Culture", p("30.00"), d0).with_aoe(src),
        ],
        [CustomPanel::new("CP9", "Lipids and sugar", "ACCT1", ["1001", "1003"], p("50.00"))],
    )
    .unwrap();
    let d = diff(&old, &new).with_versions(1, 2);
    assert_eq!(
        d.to_table(),
        "\
change        record    code  field        before  after
changed       test      1001  price        42.00   45.00
discontinued  test      1002  status       active  discontinued
discontinued  test      1002  replaced_by  -       1001
added         test      1003  -            -       Culture
removed       panel     CP1   -            Sugar   -
added         panel     CP9   -            -       Lipids and sugar
added         question  SRC   -            -       Source
"
    );
    assert_eq!(
        d.summary(),
        "tests: 1 added, 0 removed, 1 discontinued, 0 reactivated, 1 changed; \
         panels: 1 added, 1 removed, 0 discontinued, 0 reactivated, 0 changed; \
         questions: 1 added, 0 removed, 0 discontinued, 0 reactivated, 0 changed"
    );
    let json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!((json["from"].as_u64(), json["to"].as_u64()), (Some(1), Some(2)));
    assert_eq!(
        json["tests"][0],
        serde_json::json!({"kind": "changed", "code": "1001", "name": "Glucose",
                           "fields": [{"field": "price", "before": "42.00", "after": "45.00"}]})
    );
    assert_eq!(json["tests"][2], serde_json::json!({"kind": "added", "code": "1003", "name": "Culture"}));
}

#[test]
fn a_price_written_with_another_scale_is_no_change() {
    let d0 = "2024-01-01".parse().unwrap();
    let a = Catalog::new([Test::new("1", "A", "42.0".parse().unwrap(), d0)], []).unwrap();
    let b = Catalog::new([Test::new("1", "A", "42.00".parse().unwrap(), d0)], []).unwrap();
    assert!(diff(&a, &b).is_empty());
}

#[test]
fn versions_are_numbered_and_kept_in_the_file() {
    let mut c = Compendium::new();
    c.commit(sample(1), "ana", "first import", "20240101090000-0500".parse().unwrap());
    c.commit(sample(2), "bo", "March update", "20240301090000-0500".parse().unwrap());
    assert_eq!(c.versions().iter().map(|v| v.number()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((c.version(2).unwrap().author(), c.version(2).unwrap().note()), ("bo", "March update"));
    assert!(c.version(0).is_none() && c.version(3).is_none());
    assert_eq!(c.diff(1, 3).unwrap_err().kind(), &ErrorKind::UnknownVersion(3));
    let json = c.to_json();
    assert!(json.contains(r#""created_at": "2024-03-01T09:00:00-05:00""#));
    let again = Compendium::from_json(&json).unwrap();
    assert_eq!(again, c);
    // a file whose versions are out of order is refused
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut swapped = v.clone();
    swapped["versions"].as_array_mut().unwrap().reverse();
    let e = Compendium::from_json(&swapped.to_string()).unwrap_err();
    assert_eq!(e.to_string(), "version 2 where version 1 was expected");
    // and so is one with a bad test in it, with its line
    let bad = json.replacen(r#""price": "12.50""#, r#""price": "12,50""#, 1);
    let e = Compendium::from_json(&bad).unwrap_err();
    assert!(
        e.to_string().contains(r#"price: invalid price \"12,50\""#)
            || e.to_string().contains(r#"invalid price "12,50""#),
        "{e}"
    );
    assert!(e.location().unwrap().line > 1);
}
