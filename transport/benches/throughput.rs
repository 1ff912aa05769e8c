//! Messages per second end to end through store-and-forward with audit:
//! source → intake (parse, de-duplicate, index, audit) → SQLite (WAL,
//! `synchronous = FULL`: every commit is on disk before anyone is told) →
//! forwarder (audit `sent`, deliver, audit `acknowledged`, leave the queue).
//!
//! Rows differ in the group commit (items per transaction) and the
//! downstream. Every message is durably stored at each stage: an item is
//! settled (acknowledged upstream) only after the transaction holding it
//! committed, and leaves the queue only in a transaction after the sink
//! confirmed it. Inputs: `testdata/bench/corpus_300.hl7` (ORU^R01, ~2.9 KB
//! each), with MSH-10 made unique so de-duplication lets each through.
//!
//! `LB_BENCH_MESSAGES` sets the messages per row (default 20000).
//! `scripts/transport-bench.sh` runs this and prints its table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use transport::folder::FolderSink;
use transport::mock::MockSource;
use transport::pipeline::{Forwarder, Intake};
use transport::store::{SqliteStore, Store, StoreConfig};
use transport::{BoxFuture, Delivery, Error, Item, Sink};

/// A peer that confirms at once: measures the engine, not a network.
#[derive(Default)]
struct NullSink(AtomicU64);

impl Sink for NullSink {
    fn deliver<'a>(&'a self, _: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(Delivery::default()) })
    }
}

fn corpus() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/bench/corpus_300.hl7");
    let text = std::fs::read_to_string(path).expect("testdata/bench/corpus_300.hl7");
    text.split("MSH|")
        .filter(|m| !m.trim().is_empty())
        .map(|m| format!("MSH|{}", m.trim_end_matches(['\r', '\n']).replace("\r\n", "\r").replace('\n', "\r") + "\r"))
        .collect()
}

/// `n` messages, MSH-10 made unique, `per_item` to an item (file or frame).
fn items(corpus: &[String], n: usize, per_item: usize) -> Vec<Item> {
    let mut out = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        let m = &corpus[i % corpus.len()];
        let mut fields: Vec<&str> = m.splitn(11, '|').collect();
        let cid = format!("B{i:08}");
        fields[9] = &cid;
        text.push_str(&fields.join("|"));
        if (i + 1) % per_item == 0 || i + 1 == n {
            out.push(Item::new(format!("i{}", out.len()), Bytes::from(std::mem::take(&mut text))));
        }
    }
    out
}

struct Row {
    label: String,
    messages: usize,
    seconds: f64,
    /// `None` where the work is in other processes (PostgreSQL rows).
    cpu_seconds: Option<f64>,
    written: Option<u64>,
    events: u64,
}

/// Bytes this process wrote (`/proc/self/io` `wchar`) and CPU seconds it
/// used (`/proc/self/stat` utime + stime): the two costs that do not depend
/// on what else the machine is doing, unlike the wall-clock rate.
fn usage() -> (u64, f64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let wchar = io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields after the command: state is 0, utime 11, stime 12; 100 ticks a second
    (wchar, (ticks(11) + ticks(12)) / 100.0)
}

fn run(label: &str, corpus: &[String], n: usize, per_item: usize, group: usize, folder: bool) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("lb.db"), StoreConfig::default()).unwrap());
    let items = items(corpus, n, per_item);
    let null = Arc::new(NullSink::default());
    let sink: Arc<dyn Sink> =
        if folder { Arc::new(FolderSink::new(dir.path().join("out"))) } else { null.clone() as Arc<dyn Sink> };
    let intake = Intake::new(store.clone(), "lab", "emr").group(group);
    let forwarder = Forwarder::new(store.clone(), "emr", sink).group(group);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (written0, cpu0) = usage();
    let start = Instant::now();
    rt.block_on(async {
        // Steady state: arrivals and deliveries interleave, the queue stays short.
        for chunk in items.chunks(group.max(64) * 4) {
            let mut source = MockSource::new(chunk.to_vec());
            intake.drain(&mut source).await.unwrap();
            forwarder.drain().await.unwrap();
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let (written1, cpu1) = usage();
    // Check, outside the timing, that everything went through once.
    let snap = store.snapshot(std::time::Duration::from_secs(3600)).unwrap();
    assert_eq!(snap.connections["emr"].messages_out, n as u64, "{label}");
    assert!(snap.queues.is_empty(), "{label}");
    let events = store.verify_audit().unwrap();
    assert_eq!(events, 5 * n as u64, "{label}: received, parsed, queued, sent, acknowledged");
    Row {
        label: label.to_owned(),
        messages: n,
        seconds,
        cpu_seconds: Some(cpu1 - cpu0),
        written: Some(written1 - written0),
        events,
    }
}

/// PostgreSQL rows: `workers` processes (this binary again) share one
/// database; each stores its share of the input and all drain the one
/// queue through `FOR UPDATE SKIP LOCKED` leases.
#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use transport::store::PgStore;

    pub(crate) fn worker(url: &str, share: usize, offset: usize) {
        let corpus = corpus();
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(url, StoreConfig::default()).unwrap());
        let all = items(&corpus, offset + share, 1);
        let mine = all[offset..].to_vec();
        let intake = Intake::new(store.clone(), "lab", "emr").group(256);
        let forwarder = Forwarder::new(store.clone(), "emr", Arc::new(NullSink::default())).group(256);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for chunk in mine.chunks(1024) {
                intake.drain(&mut MockSource::new(chunk.to_vec())).await.unwrap();
                forwarder.drain().await.unwrap();
            }
            forwarder.drain().await.unwrap();
        });
    }

    pub(crate) fn row(base: &str, n: usize, workers: usize) -> Row {
        let db = format!("bench_{workers}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        let url = format!("{base}/{db}");
        // the schema once, before the clock starts
        drop(PgStore::connect(&url, StoreConfig::default()).unwrap());
        let exe = std::env::current_exe().unwrap();
        let start = Instant::now();
        let children: Vec<_> = (0..workers)
            .map(|w| {
                std::process::Command::new(&exe)
                    .env("LB_BENCH_PG_WORKER", &url)
                    .env("LB_BENCH_PG_SHARE", (n / workers).to_string())
                    .env("LB_BENCH_PG_OFFSET", (w * (n / workers)).to_string())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let seconds = start.elapsed().as_secs_f64();
        let store = PgStore::connect(&url, StoreConfig::default()).unwrap();
        let total = (n / workers) * workers;
        let snap = store.snapshot(std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(snap.connections["emr"].messages_out, total as u64);
        let events = store.verify_audit().unwrap();
        assert_eq!(events, 5 * total as u64);
        drop(store);
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).unwrap();
        Row {
            label: format!("PostgreSQL, {workers} worker process{}, group 256", if workers == 1 { "" } else { "es" }),
            messages: total,
            seconds,
            cpu_seconds: None,
            written: None,
            events,
        }
    }
}

fn main() {
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("LB_BENCH_PG_WORKER") {
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        pg::worker(&url, num("LB_BENCH_PG_SHARE"), num("LB_BENCH_PG_OFFSET"));
        return;
    }
    let n: usize = std::env::var("LB_BENCH_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let corpus = corpus();
    let mut rows = vec![
        run("1 msg/item, commit per item (group 1)", &corpus, (n / 10).max(500), 1, 1, false),
        run("1 msg/item, group commit 16", &corpus, n, 1, 16, false),
        run("1 msg/item, group commit 64", &corpus, n, 1, 64, false),
        run("1 msg/item, group commit 256", &corpus, n, 1, 256, false),
        run("10 msgs/file, group commit 64", &corpus, n, 10, 64, false),
    ];
    rows.push(run("folder sink (fsync per file), group 64", &corpus, (n / 10).max(500), 1, 64, true));
    // `postgresql://user@host:port` without a database: each row makes its own
    #[cfg(feature = "postgres")]
    if let Ok(base) = std::env::var("LB_BENCH_PG_URL") {
        for workers in [1, 2, 4] {
            rows.push(pg::row(&base, n, workers));
        }
    }
    println!(
        "| {:<44} | {:>8} | {:>7} | {:>10} | {:>12} | {:>11} | {:>13} |",
        "SQLite store-and-forward with audit",
        "messages",
        "seconds",
        "messages/s",
        "audit evts/s",
        "CPU µs/msg",
        "KB written/msg"
    );
    println!("|{:-<46}|{:->10}|{:->9}|{:->12}|{:->14}|{:->13}|{:->15}|", "", "", "", "", "", "", "");
    for r in rows {
        println!(
            "| {:<44} | {:>8} | {:>7.3} | {:>10.0} | {:>12.0} | {:>11} | {:>13} |",
            r.label,
            r.messages,
            r.seconds,
            r.messages as f64 / r.seconds,
            r.events as f64 / r.seconds,
            r.cpu_seconds.map_or("-".into(), |c| format!("{:.0}", c * 1e6 / r.messages as f64)),
            r.written.map_or("-".into(), |w| format!("{:.1}", w as f64 / 1024.0 / r.messages as f64))
        );
    }
}
