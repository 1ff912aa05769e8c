//! The `labbridge hl7 get` conformance cases (testdata/conformance), run
//! through every library entry point: borrowed (`Messages` over a slice),
//! owned (`into_owned`), and streaming (`Reader` fed a few bytes at a time).

use std::io::Read;

use hl7_core::{Message, Messages, Path, Reader};
use serde_json::Value;

fn cases_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/conformance")
}

/// A reader that hands out at most `step` bytes per call, to exercise
/// incremental reading across every boundary.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn values(msg: &Message<'_>, paths: &[Path]) -> Value {
    Value::Array(
        paths
            .iter()
            .map(|p| msg.get(p).and_then(|e| e.value()).map_or(Value::Null, |v| Value::String(v.into_owned())))
            .collect(),
    )
}

fn outcome<'a>(results: impl Iterator<Item = Result<Message<'a>, hl7_core::Error>>, paths: &[Path]) -> Vec<Value> {
    results
        .map(|r| match r {
            Ok(m) => values(&m, paths),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                Value::Null
            }
        })
        .collect()
}

#[test]
fn every_case_through_every_entry_point() {
    let dir = cases_dir();
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 34);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let paths: Vec<Path> =
            case["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().parse().unwrap()).collect();
        let expect: Vec<Value> = case["expect"].as_array().unwrap().clone();
        let data = std::fs::read(dir.join(format!("{name}.hl7"))).unwrap();

        let borrowed = outcome(Messages::new(&data), &paths);
        assert_eq!(borrowed, expect, "{name}: borrowed");

        let owned = outcome(Messages::new(&data).map(|r| r.map(Message::into_owned)), &paths);
        assert_eq!(owned, expect, "{name}: owned");

        for step in [1, 3, 7, 64, 1 << 20] {
            let streamed = outcome(Reader::new(Trickle { data: &data, step }), &paths);
            assert_eq!(streamed, expect, "{name}: streaming, {step} bytes per read");
        }
    }
}

#[test]
fn every_parsed_case_writes_back_byte_for_byte() {
    let dir = cases_dir();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "hl7") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let mut events = Messages::new(&data);
        while let Some(ev) = events.next_event() {
            if let hl7_core::Event::Message(m) = ev {
                let bytes = m.to_bytes();
                let again = Message::parse(&bytes).unwrap();
                assert_eq!(again.to_bytes(), bytes, "{}", path.display());
                assert!(
                    data.windows(bytes.len()).any(|w| w == bytes.as_ref()),
                    "{}: written message is in the input",
                    path.display()
                );
            }
        }
    }
}
