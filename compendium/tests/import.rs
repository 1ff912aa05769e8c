//! Import: the sample compendium, every kind of bad row with its line and
//! column, all-or-nothing versus skipping bad rows, headers, JSON.

use std::fs;

use compendium::{export, ErrorKind, Import, Importer, Status};

fn data(name: &str) -> Vec<u8> {
    fs::read(format!("{}/../testdata/compendium/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn import_files(tests: &str, panels: Option<&str>) -> Import {
    let mut i = Importer::new();
    i.tests_csv(tests, &data(tests)[..]);
    if let Some(p) = panels {
        i.panels_csv(p, &data(p)[..]);
    }
    i.finish()
}

#[test]
fn the_sample_compendium_imports_cleanly() {
    for (t, p, tests, panels) in
        [("tests_v1.csv", "panels_v1.csv", 309, 12), ("tests_v2.csv", "panels_v2.csv", 313, 12)]
    {
        let i = import_files(t, Some(p));
        assert!(i.errors().is_empty(), "{t}: {:?}", i.errors());
        let c = i.into_catalog(false).unwrap();
        assert_eq!((c.tests().count(), c.panels().count()), (tests, panels), "{t}");
    }
    let c = import_files("tests_v2.csv", Some("panels_v2.csv")).into_catalog(false).unwrap();
    let vit_d = c.tests().find(|t| t.name == "Vitamin D, 25-hydroxy").unwrap();
    let Status::Discontinued { replaced_by: Some(r) } = &vit_d.status else { panic!("{:?}", vit_d.status) };
    assert_eq!(c.test(r).unwrap().name, "Vitamin D, 25-hydroxy (LC-MS/MS)");
    assert_eq!(vit_d.price.to_string(), "55.00");
}

/// Every bad row, with its line and column, as the golden file says.
#[test]
fn every_bad_row_is_reported_with_line_and_column() {
    let i = import_files("invalid/tests_bad_rows.csv", Some("invalid/panels_bad_rows.csv"));
    let got: Vec<String> = i.errors().iter().map(ToString::to_string).collect();
    let want = String::from_utf8(data("invalid/bad_rows.errors")).unwrap();
    assert_eq!(got, want.lines().collect::<Vec<_>>());
    let first = i.errors()[0].location().unwrap();
    assert_eq!((first.line, first.column, first.field.as_deref()), (3, 10, Some("price")));
}

#[test]
fn an_import_with_bad_rows_is_all_or_nothing() {
    let i = import_files("invalid/tests_bad_rows.csv", Some("invalid/panels_bad_rows.csv"));
    let err = i.into_catalog(false).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Rejected(_)));
    assert_eq!(err.to_string(), "import rejected: 18 bad row(s), nothing imported");
    assert_eq!(err.rows().len(), 18);
}

#[test]
fn skipping_bad_rows_keeps_the_good_ones_and_what_named_a_bad_one_goes_too() {
    let i = import_files("invalid/tests_bad_rows.csv", Some("invalid/panels_bad_rows.csv"));
    let c = i.into_catalog(true).unwrap();
    let codes: Vec<&str> = c.tests().map(|t| t.code.as_str()).collect();
    // 1002 (bad price) is out, and so is 1012, which it replaced
    assert_eq!(codes, ["1001"]);
    assert_eq!(c.panels().map(|p| p.code.as_str()).collect::<Vec<_>>(), ["CP1"]);
    assert_eq!(c.panel("CP1").unwrap().name, "Sugar"); // the first of two CP1 rows
}

#[test]
fn a_bad_header_is_never_skipped() {
    let mut i = Importer::new();
    i.tests_csv("t.csv", &data("tests_v1.csv")[..]);
    i.panels_csv("p.csv", &data("invalid/panels_bad_header.csv")[..]);
    let imp = i.finish();
    let errs: Vec<String> = imp.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        [
            r#"p.csv: line 1, column 3: unknown column "account""#,
            r#"p.csv: line 1, column 6: missing column "client_account""#
        ]
    );
    assert!(imp.into_catalog(true).is_err());
}

#[test]
fn header_columns_may_come_in_any_order_and_values_are_trimmed() {
    let csv = "name,code,price,effective_from,loinc,cpt,specimen,container,volume,storage,turnaround,status,replaced_by,aoe\n\
               \" Glucose \", 1001 ,12.50,20240101,,,,,,,,ACTIVE,,\n";
    let c = Import::from_csv(csv.as_bytes(), None::<&[u8]>).into_catalog(false).unwrap();
    let t = c.test("1001").unwrap();
    assert_eq!((t.name.as_str(), t.effective_from.to_string().as_str()), ("Glucose", "2024-01-01"));
}

#[test]
fn an_empty_file_and_a_duplicate_column_are_header_errors() {
    let e = Import::from_csv(&b""[..], None::<&[u8]>);
    assert_eq!(e.errors()[0].to_string(), r#"tests: line 1, column 1: missing column "code""#);
    let e = Import::from_csv(&b"code,code"[..], None::<&[u8]>);
    assert_eq!(e.errors()[0].to_string(), r#"tests: line 1, column 2: duplicate column "code""#);
}

#[test]
fn invalid_utf8_is_reported_at_its_cell() {
    let mut csv = b"code,name,client_account,price,components\nCP1,Sug".to_vec();
    csv.extend_from_slice(b"\xff\xfe,ACCT1,1.00,1001\n");
    let mut i = Importer::new();
    i.panels_csv("p.csv", &csv[..]);
    assert_eq!(i.finish().errors()[0].to_string(), "p.csv: line 2, column 2 (name): invalid UTF-8");
}

#[test]
fn a_quoted_field_over_two_lines_reports_the_line_the_row_starts_on() {
    let csv = "code,name,client_account,price,components\nCP1,\"Sugar\nand more\",ACCT1,x,1001\nCP2,B,ACCT1,y,1001\n";
    let mut i = Importer::new();
    i.panels_csv("p.csv", csv.as_bytes());
    let errs: Vec<String> = i.finish().errors().iter().map(ToString::to_string).collect();
    assert_eq!(errs[0], r#"p.csv: line 2, column 4 (price): invalid price "x""#);
    assert_eq!(errs[1], r#"p.csv: line 4, column 4 (price): invalid price "y""#);
}

#[test]
fn json_import_reports_each_bad_record_at_its_line_and_column() {
    let json = r#"{
  "tests": [
    {"code": "1001", "name": "Glucose", "price": "12.50", "effective_from": "2024-01-01"},
    {"code": "1002", "name": "Iron", "price": "x", "effective_from": "2024-01-01"},
    {"code": "1003", "name": "Typo", "prise": "1.00", "effective_from": "2024-01-01"},
    {"code": "1004", "name": "Aoe", "price": "1.00", "effective_from": "2024-01-01",
     "aoe": [{"code": "SRC", "question": "Source", "type": "list", "allowed": ["A", "B"], "required": true}]}
  ],
  "panels": [{"code": "CP1", "name": "P", "client_account": "A1", "price": "2.00", "components": ["1001", "1004"]}]
}"#;
    let i = Import::from_json(json);
    let errs: Vec<String> = i.errors().iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0], r#"json: line 4, column 5 (price): invalid price "x""#);
    assert!(errs[1].starts_with("json: line 5, column "), "{}", errs[1]);
    assert!(errs[1].contains("invalid record: unknown field `prise`"), "{}", errs[1]);
    let c = i.into_catalog(true).unwrap();
    assert_eq!(c.test("1004").unwrap().aoe[0].allowed, ["A", "B"]);
    assert_eq!(c.panel("CP1").unwrap().components, ["1001", "1004"]);
}

#[test]
fn json_that_is_not_a_catalog_is_one_error() {
    let i = Import::from_json("{\"tests\": [1, 2,]}");
    assert_eq!(i.errors().len(), 1);
    assert!(i.errors()[0].to_string().starts_with("json: line 1, column 17: invalid JSON"), "{}", i.errors()[0]);
    assert!(!i.errors()[0].is_row_error());
}

#[test]
fn a_json_float_price_is_refused_and_an_integer_accepted() {
    let i = Import::from_json(
        r#"{"tests": [{"code": "1", "name": "A", "price": 42, "effective_from": "2024-01-01"},
                                           {"code": "2", "name": "B", "price": 0.1, "effective_from": "2024-01-01"}]}"#,
    );
    assert_eq!(i.errors().len(), 1);
    assert_eq!(i.catalog().test("1").unwrap().price.to_string(), "42");
}

#[test]
fn the_sample_survives_csv_and_json_round_trips() {
    let c = import_files("tests_v2.csv", Some("panels_v2.csv")).into_catalog(false).unwrap();
    let (mut t, mut p) = (Vec::new(), Vec::new());
    export::tests_csv(&c, &mut t).unwrap();
    export::panels_csv(&c, &mut p).unwrap();
    assert_eq!(t, data("tests_v2.csv"), "the export is the canonical file, byte for byte");
    assert_eq!(p, data("panels_v2.csv"));
    assert_eq!(Import::from_json(&export::json(&c)).into_catalog(false).unwrap(), c);
}
