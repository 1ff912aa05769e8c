//! Mapping throughput (messages/s): each message of the bench corpus parsed,
//! then mapped to the lab contract by its base profile (ORU^R01 through
//! `lri-oru-r01`, ORM^O01 through `v23-orm-o01`), beside parsing alone and
//! beside a parse and a walk over every leaf, so the cost mapping adds over
//! the parse (`map only`) is read off one report against both. Also the way
//! back: contract to HL7 in the profile's dialect.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_core::profile::Profile;
use hl7_core::Message;
use labbridge_benches::{corpus_label, corpus_path, messages, parse_and_visit, read_corpus, walk};

fn map(c: &mut Criterion) {
    let path = corpus_path();
    let data = read_corpus(&path);
    let msgs = messages(&data);
    let oru = Profile::load("lri-oru-r01").expect("base profile");
    let orm = Profile::load("v23-orm-o01").expect("base profile");
    let pick = |m: &Message<'_>| if m.message_type().0 == "ORU" { &oru } else { &orm };

    let mut g = c.benchmark_group("map");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function(format!("parse only/{}", corpus_label(&path)), |b| {
        b.iter(|| {
            for m in &msgs {
                let _ = black_box(Message::parse(black_box(m)));
            }
        })
    });
    // What reading every leaf once costs: mapping reads a third of them and
    // must look at every field to know that nothing is left unread.
    g.bench_function(format!("parse+walk/{}", corpus_label(&path)), |b| {
        b.iter(|| black_box(parse_and_visit(&msgs, walk)))
    });
    // Mapping alone, on messages parsed beforehand: the cost mapping adds
    // over the parse (the target is that it adds less than `parse only`).
    let parsed: Vec<Message<'_>> = msgs.iter().filter_map(|m| Message::parse(m).ok()).collect();
    g.bench_function(format!("map only/{}", corpus_label(&path)), |b| {
        b.iter(|| {
            for msg in &parsed {
                black_box(pick(msg).map_value(black_box(msg)));
            }
        })
    });
    g.bench_function(format!("parse+map/{}", corpus_label(&path)), |b| {
        b.iter(|| {
            for m in &msgs {
                if let Ok(msg) = Message::parse(black_box(m)) {
                    black_box(pick(&msg).map_value(&msg));
                }
            }
        })
    });
    let results: Vec<hl7_core::contract::LabResult> = msgs
        .iter()
        .filter_map(|m| Message::parse(m).ok())
        .filter(|msg| msg.message_type().0 == "ORU")
        .filter_map(|msg| oru.to_result(&msg).ok())
        .collect();
    g.throughput(Throughput::Elements(results.len() as u64));
    g.bench_function(format!("result to hl7/{}", corpus_label(&path)), |b| {
        b.iter(|| {
            for r in &results {
                let _ = black_box(oru.result_to_hl7(black_box(r)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, map);
criterion_main!(benches);
