//! `labbridge hl7 …` end to end: the binary on real files and stdin.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn labbridge(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_labbridge"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn get_prints_one_json_line_per_message_and_the_next_ones_survive_a_bad_one() {
    let o = labbridge(&["hl7", "get", "testdata/samples/batch_oru.hl7", "MSH-10", "OBX-5", "NTE-3"], None);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], r#"["BAT0001","95",null]"#);
    assert_eq!(lines[1], r#"["BAT0002","131",null]"#);
    assert_eq!(lines[2], r#"{"error":"message 3: invalid segment name at byte 818 (line 14, column 1)"}"#);
}

#[test]
fn get_reads_stdin_and_exits_0_when_all_parse() {
    let o = labbridge(&["hl7", "get", "-", "PID-5-1", "PID-5-2"], Some(b"MSH|^~\\&|A\rPID|1||||DOE^JANE\r"));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "[\"DOE\",\"JANE\"]\n");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(labbridge(&["hl7", "get", "-", "PID-0"], Some(b"")).status.code(), Some(2));
    assert_eq!(labbridge(&["hl7", "get", "-"], Some(b"")).status.code(), Some(2));
    assert_eq!(labbridge(&["hl7", "frobnicate"], None).status.code(), Some(2));
    let o = labbridge(&["hl7", "get", "-", "PID-5", "--charset", "KLINGON"], Some(b""));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown character set"));
}

#[test]
fn missing_file_is_an_error_on_stderr() {
    let o = labbridge(&["hl7", "get", "no/such/file.hl7", "PID-5"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/file.hl7"));
}

#[test]
fn json_tree_decodes_and_keeps_structure() {
    let o = labbridge(&["hl7", "json", "-"], Some(b"MSH|^~\\&|A\rPID|1||X~Y||DOE^J&K^O\\S\\N\r"));
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let pid = &v["segments"][1];
    assert_eq!(pid["name"], "PID");
    assert_eq!(pid["fields"][2], serde_json::json!(["X", "Y"]));
    assert_eq!(pid["fields"][4], serde_json::json!([["DOE", ["J", "K"], "O^N"]]));
    assert_eq!(pid["fields"][1], serde_json::json!([]));
    assert_eq!(v["segments"][0]["fields"][1], serde_json::json!(["^~\\&"]));
}

#[test]
fn ack_answers_each_message_and_rejects_the_bad_one_with_err() {
    let input = b"MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240101||ORM^O01|M1|P|2.5.1\rPID|1\r\
MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240101||ORM^O01|M2|P|2.5.1\rPID|1\rO?X|1\r";
    let o = labbridge(&["hl7", "ack", "-"], Some(input));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let acks: Vec<&str> = out.lines().collect();
    assert_eq!(acks.len(), 2);
    assert!(acks[0].ends_with("\rMSA|AA|M1"), "{:?}", acks[0]);
    assert!(acks[0].starts_with("MSH|^~\\&|LIS|LAB|EHR|CLINIC|"));
    assert!(acks[1].contains("\rMSA|AR|M2\r"), "{:?}", acks[1]);
    assert!(acks[1].contains("\rERR||"), "{:?}", acks[1]);
    assert!(acks[1].contains("|102^Data type error^HL70357|E|"), "{:?}", acks[1]);
}

#[test]
fn ack_honours_msh16_unless_always() {
    let input = b"MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240101||ORM^O01|M1|P|2.3|||AL|NE\r";
    let o = labbridge(&["hl7", "ack", "-", "--code", "AA"], Some(input));
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let o = labbridge(&["hl7", "ack", "-", "--code", "CA"], Some(input));
    assert!(stdout(&o).contains("MSA|CA|M1"));
    let o = labbridge(&["hl7", "ack", "-", "--code", "AA", "--always"], Some(input));
    assert!(stdout(&o).contains("MSA|AA|M1"));
}

#[test]
fn check_reports_errors_and_warnings_with_line_and_path() {
    let o = labbridge(&["hl7", "check", "testdata/samples/batch_oru.hl7", "--join-lines"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "message 3: warning: line joined to the previous segment at byte 818 (NTE) (line 14, column 1)\n"
    );
    let o = labbridge(&["hl7", "check", "testdata/samples/oru_r01_lri.hl7"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 message(s), 0 problem(s)"));
}
