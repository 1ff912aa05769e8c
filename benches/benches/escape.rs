//! Escape decoding throughput: [`escape::decode`] of the NTE-3 and OBX-5
//! values of the bench corpus that contain escape sequences (`\F\ \S\ \T\
//! \R\ \E\ \X0D\ \.br\`), with each message's delimiters and character set.
//! Parsing is not measured: the values are collected before timing, and
//! throughput is counted in bytes of raw (escaped) text.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_core::{escape, Charset, Delimiters, Message};
use labbridge_benches::{corpus_label, corpus_path, messages, read_corpus};

/// The raw NTE-3 and OBX-5 values that contain the escape character.
fn escaped_values(msgs: &[&[u8]]) -> Vec<(String, Delimiters, Charset)> {
    let mut out = Vec::new();
    for m in msgs {
        let msg = Message::parse(m).expect("the bench corpus must parse");
        let d = msg.delimiters();
        for seg in msg.segments() {
            let n = match seg.name() {
                "NTE" => 3,
                "OBX" => 5,
                _ => continue,
            };
            if let Some(f) = seg.field(n) {
                if f.raw().as_bytes().contains(&d.escape) {
                    out.push((f.raw().to_owned(), d, msg.charset()));
                }
            }
        }
    }
    out
}

fn decode(c: &mut Criterion) {
    let path = corpus_path();
    let data = read_corpus(&path);
    let values = escaped_values(&messages(&data));
    assert!(!values.is_empty(), "the bench corpus has escaped NTE-3/OBX-5 values");
    let bytes: u64 = values.iter().map(|(v, _, _)| v.len() as u64).sum();

    let mut g = c.benchmark_group("escape_decode");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("{}_nte3_obx5", corpus_label(&path)), |b| {
        b.iter(|| {
            for (raw, d, cs) in &values {
                black_box(escape::decode(black_box(raw), d, *cs));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
