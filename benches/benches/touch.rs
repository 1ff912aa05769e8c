//! Touch throughput: [`Message::parse`] of every message of the bench corpus,
//! then reading PID-5 and every OBX-5 (raw text), the few fields an interface
//! engine typically looks at (`labbridge_benches::touch`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_core::Message;
use labbridge_benches::{corpus_label, corpus_path, messages, parse_and_visit, read_corpus, total_bytes, touch};

fn parse_and_touch(c: &mut Criterion) {
    let path = corpus_path();
    let data = read_corpus(&path);
    let msgs = messages(&data);
    assert!(msgs.iter().all(|m| Message::parse(m).is_ok()), "the bench corpus must parse");

    let mut g = c.benchmark_group("touch");
    g.throughput(Throughput::Bytes(total_bytes(&msgs)));
    g.bench_function(corpus_label(&path), |b| b.iter(|| black_box(parse_and_visit(&msgs, touch))));
    g.finish();
}

criterion_group!(benches, parse_and_touch);
criterion_main!(benches);
