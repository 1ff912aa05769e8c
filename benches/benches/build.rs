//! Build throughput: `MessageBuilder::from_message(&msg).build()` of every
//! parsed message of the bench corpus, i.e. decoding every value into a
//! builder and writing the message out again as ER7. Parsing is done before
//! timing; throughput is counted in bytes of the input messages.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use hl7_core::builder::MessageBuilder;
use hl7_core::Message;
use labbridge_benches::{corpus_label, corpus_path, messages, read_corpus, total_bytes};

fn build(c: &mut Criterion) {
    let path = corpus_path();
    let data = read_corpus(&path);
    let msgs = messages(&data);
    let parsed: Vec<Message<'_>> =
        msgs.iter().map(|m| Message::parse(m).expect("the bench corpus must parse")).collect();

    let mut g = c.benchmark_group("build");
    g.throughput(Throughput::Bytes(total_bytes(&msgs)));
    // One pass over the large corpus takes most of a second: a few flat samples.
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.bench_function(corpus_label(&path), |b| {
        b.iter(|| {
            for msg in &parsed {
                black_box(MessageBuilder::from_message(black_box(msg)).build());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
