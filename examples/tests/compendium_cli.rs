//! `labbridge compendium …` end to end on the sample compendium of
//! testdata/compendium: import two versions, diff, export (CSV, JSON, MFN
//! parsed back), validate orders, record MFK acknowledgements, sync.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn labbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labbridge")).args(args).current_dir(root()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A fresh directory under target/ for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target").join("compendium-cli-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Imports versions 1 and 2 of the sample into `dir/c.json`.
fn two_versions(dir: &std::path::Path) -> String {
    let c = dir.join("c.json").display().to_string();
    for v in ["1", "2"] {
        let (t, p) = (format!("testdata/compendium/tests_v{v}.csv"), format!("testdata/compendium/panels_v{v}.csv"));
        let o = labbridge(&["compendium", "import", &t, "--panels", &p, "--out", &c, "--author", "ana"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(line["version"].as_u64(), Some(v.parse().unwrap()));
    }
    c
}

#[test]
fn import_makes_versions_and_diff_lists_the_changes() {
    let dir = scratch("import_diff");
    let c = two_versions(&dir);
    // the same files again make no new version
    let o = labbridge(&[
        "compendium",
        "import",
        "testdata/compendium/tests_v2.csv",
        "--panels",
        "testdata/compendium/panels_v2.csv",
        "--out",
        &c,
    ]);
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), r#"{"unchanged":true,"version":2}"#));

    let o = labbridge(&["compendium", "diff", &format!("{c}@1"), &format!("{c}@2")]);
    assert_eq!(o.status.code(), Some(0));
    let table = stdout(&o);
    assert!(table.starts_with("change "), "{table}");
    assert!(table
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>()[..4] == ["changed", "test", "100184", "turnaround"]));
    assert!(stderr(&o).starts_with("tests: 5 added, 1 removed, 4 discontinued"), "{}", stderr(&o));

    let o = labbridge(&["compendium", "diff", &format!("{c}@1"), "testdata/compendium/tests_v2.csv", "--json"]);
    let d: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(d["tests"].as_array().unwrap().iter().any(|t| t["kind"] == "added"));
}

#[test]
fn a_bad_import_writes_nothing_and_reports_every_row() {
    let dir = scratch("bad_import");
    let out = dir.join("c.json").display().to_string();
    let args = [
        "compendium",
        "import",
        "testdata/compendium/invalid/tests_bad_rows.csv",
        "--panels",
        "testdata/compendium/invalid/panels_bad_rows.csv",
        "--out",
        &out,
    ];
    let o = labbridge(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "testdata/compendium/invalid/tests_bad_rows.csv: line 3, column 10 (price): invalid price \"4x\"\n"
        ),
        "{err}"
    );
    assert!(err.ends_with("labbridge: import rejected: 18 bad row(s), nothing imported\n"), "{err}");
    assert!(!dir.join("c.json").exists());
    // asked to, it keeps the good rows
    let o = labbridge(&[&args[..], &["--skip-bad-rows"]].concat());
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains(r#""tests":1"#), "{}", stdout(&o));
}

#[test]
fn export_mfn_parses_back_and_an_update_carries_the_changes_in_the_emr_codes() {
    let dir = scratch("export");
    let c = two_versions(&dir);
    let o = labbridge(&["compendium", "export", &format!("{c}@1"), "--format", "mfn"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let msgs: Vec<hl7_core::Message<'_>> =
        hl7_core::Messages::new(text.as_bytes()).map(|m| m.expect("every MFN parses")).collect();
    assert_eq!(msgs.iter().map(|m| m.message_type().1).collect::<Vec<_>>(), ["M08", "M10", "M04"]);
    let get = |m: &hl7_core::Message<'_>, p: &str| m.get(&p.parse().unwrap()).map(|e| e.decoded().into_owned());
    assert_eq!(get(&msgs[0], "MFI-3").as_deref(), Some("REP"));

    let o = labbridge(&[
        "compendium",
        "export",
        &c,
        "--format",
        "mfn",
        "--since-version",
        "1",
        "--emr-map",
        "testdata/compendium/emr_northwind.csv",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let msgs: Vec<hl7_core::Message<'_>> = hl7_core::Messages::new(text.as_bytes()).map(Result::unwrap).collect();
    assert!(msgs.iter().all(|m| get(m, "MFI-3").as_deref() == Some("UPD")));
    assert_eq!(get(&msgs[0], "MSH-10").as_deref(), Some("CMP2-M08-1"));
    let keys: Vec<String> = msgs[0]
        .segments_named("MFE")
        .map(|s| s.field(4).unwrap().component(1).unwrap().decoded().into_owned())
        .collect();
    assert!(keys.contains(&"NW-100028".to_owned()), "{keys:?}"); // a common test, in Northwind's code

    let o = labbridge(&["compendium", "export", &c, "--format", "csv", "--table", "panels"]);
    assert_eq!(stdout(&o), std::fs::read_to_string(root().join("testdata/compendium/panels_v2.csv")).unwrap());
    let o = labbridge(&["compendium", "export", &c, "--format", "csv", "--since-version", "1"]);
    assert_eq!(o.status.code(), Some(2));
    let o = labbridge(&["compendium", "export", &format!("{c}@9"), "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no version 9 (latest is 2)"), "{}", stderr(&o));
}

#[test]
fn validate_order_prints_one_line_per_order_and_exits_1_on_problems() {
    let dir = scratch("validate");
    let c = two_versions(&dir);
    let o = labbridge(&[
        "compendium",
        "validate-order",
        &c,
        "testdata/compendium/orders.hl7",
        "--profile",
        "loi-oml-o21",
        "--client",
        "ACCT1001",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["problems"], serde_json::json!([]));
    let kinds: Vec<&str> =
        lines[1]["problems"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["unknown_code", "discontinued", "missing_aoe", "answer_not_allowed", "specimen_mismatch", "panel_not_owned"]
    );
    assert_eq!(lines[1]["problems"][1]["path"], "tests[1].code");
    assert!(stderr(&o).contains("message 2: tests[0].code: test 999999: unknown test code\n"), "{}", stderr(&o));
    // a profile that does not exist is a usage error
    let o = labbridge(&[
        "compendium",
        "validate-order",
        &c,
        "testdata/compendium/orders.hl7",
        "--profile",
        "no-such-profile",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn ack_records_acceptance_and_sync_writes_each_emr_package() {
    let dir = scratch("ack_sync");
    let c = two_versions(&dir);
    let mfk = dir.join("mfk.hl7");
    std::fs::write(&mfk, "MSH|^~\\&|EMR|CLINIC|LABBRIDGE|LAB|20240302||MFK^M08^MFK_M01|K1|P|2.5.1\rMSA|AA|CMP1-M08\rMFI|OMA||REP\rMFA|MAD|1|20240302|S|100011^Glucose^L|CWE\r").unwrap();
    let o = labbridge(&["compendium", "ack", &c, mfk.to_str().unwrap(), "--emr", "northwind"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(r#""version":1"#) && stdout(&o).contains(r#""accepted":true"#), "{}", stdout(&o));
    assert_eq!(stderr(&o), "northwind has accepted version 1\n");
    let out_dir = dir.join("sync").display().to_string();
    let o = labbridge(&[
        "compendium",
        "sync",
        &c,
        "--since-version",
        "1",
        "--emr",
        "northwind=testdata/compendium/emr_northwind.csv:ACCT1002,ACCT1004",
        "--emr",
        "riverside=testdata/compendium/emr_riverside.json",
        "--out-dir",
        &out_dir,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let text = std::fs::read_to_string(dir.join("sync/riverside.hl7")).unwrap();
    assert_eq!(hl7_core::Messages::new(text.as_bytes()).filter(Result::is_ok).count(), 3);
    let keys: Vec<String> = hl7_core::Messages::new(text.as_bytes())
        .flat_map(|m| {
            let m = m.unwrap();
            m.segments_named("MFE")
                .map(|s| s.field(4).unwrap().component(1).unwrap().decoded().into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let lab_code = |k: &String| k.len() == 6 && k.starts_with("10");
    assert!(keys.iter().any(|k| k.len() == 7 && k.starts_with('5')), "{keys:?}");
    assert!(!keys.iter().any(lab_code), "riverside gets its own codes only: {keys:?}");
}
