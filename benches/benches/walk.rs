//! Walk throughput: [`Message::parse`] of every message of the bench corpus,
//! then visiting every leaf (segments, fields, repetitions, components,
//! subcomponents) and reading its raw text (`labbridge_benches::walk`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_core::Message;
use labbridge_benches::{corpus_label, corpus_path, messages, parse_and_visit, read_corpus, total_bytes, walk};

fn parse_and_walk(c: &mut Criterion) {
    let path = corpus_path();
    let data = read_corpus(&path);
    let msgs = messages(&data);
    assert!(msgs.iter().all(|m| Message::parse(m).is_ok()), "the bench corpus must parse");

    let mut g = c.benchmark_group("walk");
    g.throughput(Throughput::Bytes(total_bytes(&msgs)));
    g.bench_function(corpus_label(&path), |b| b.iter(|| black_box(parse_and_visit(&msgs, walk))));
    g.finish();
}

criterion_group!(benches, parse_and_walk);
criterion_main!(benches);
