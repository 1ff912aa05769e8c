//! Parse throughput: [`Message::parse`] of every message of the bench corpus
//! (the generated 10,000-message corpus when present, else the committed
//! `testdata/bench/corpus_300.hl7`; see `labbridge_benches::corpus_path`).
//! Nothing is read from the parsed messages; see `touch` and `walk` for that.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_core::Message;
use labbridge_benches::{corpus_label, corpus_path, messages, read_corpus, total_bytes};

fn parse(c: &mut Criterion) {
    let path = corpus_path();
    let data = read_corpus(&path);
    let msgs = messages(&data);
    assert!(msgs.iter().all(|m| Message::parse(m).is_ok()), "the bench corpus must parse");

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(total_bytes(&msgs)));
    g.bench_function(corpus_label(&path), |b| {
        b.iter(|| {
            for m in &msgs {
                let _ = black_box(Message::parse(black_box(m)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
