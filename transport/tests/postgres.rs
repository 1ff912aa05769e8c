//! The PostgreSQL store against a real server: a throwaway cluster started
//! on 127.0.0.1 by this test (initdb + pg_ctl, as the `postgres` user when
//! run as root) and stopped at the end. Run with `--features postgres`;
//! skipped with a message when no PostgreSQL binaries are installed.
#![cfg(feature = "postgres")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use transport::audit::{AuditQuery, EventKind};
use transport::mock::{MockSink, MockSource};
use transport::pipeline::{Forwarder, Intake};
use transport::store::{ManualClock, PgStore, Retention, Store, StoreConfig};
use transport::{BoxFuture, Delivery, Error, ErrorKind, Item, Sink};

/// A PostgreSQL cluster in a temporary directory, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn run(as_postgres: bool, program: &Path, args: &[&str]) -> bool {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdout(std::process::Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

impl Server {
    fn start() -> Option<Server> {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .collect();
        bins.sort();
        let bin = bins.pop()?;
        // the server refuses to run as root
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let dir = tempfile::tempdir().unwrap();
        if root {
            assert!(Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap().success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.path().join("data");
        let (data_s, log) = (data.display().to_string(), dir.path().join("server.log").display().to_string());
        assert!(run(
            root,
            &bin.join("initdb"),
            &["-D", &data_s, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        ));
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            dir.path().display()
        );
        assert!(run(root, &bin.join("pg_ctl"), &["-D", &data_s, "-l", &log, "-w", "-t", "30", "-o", &opts, "start"]));
        Some(Server { dir, bin, port, as_postgres: root })
    }

    /// A fresh database, by URL.
    fn database(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(
            &format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port),
            postgres::NoTls,
        )
        .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("postgresql://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        run(self.as_postgres, &self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn msg(id: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN-{id}^^^CLINIC^MR||DOE^JANE\r\
         ORC|NW|PLC-{id}\rOBR|1|PLC-{id}||2345-7^Glucose^LN\r"
    )
}

fn config(clock: &ManualClock) -> StoreConfig {
    StoreConfig::new().audit_key("k").clock(Arc::new(clock.clone())).build()
}

#[test]
fn postgres_store() {
    let Some(server) = Server::start() else {
        eprintln!("postgres_store: skipped, no PostgreSQL under /usr/lib/postgresql");
        return;
    };
    pipeline_audit_quarantine_and_pruning(&server.database("pipeline"));
    leases_hand_each_message_to_one_worker(&server.database("leases"));
    workers_drain_one_queue_exactly_once(&server.database("workers"));
}

fn pipeline_audit_quarantine_and_pruning(url: &str) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(url, config(&clock)).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let bad = "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|BAD1|P|2.3\rOOPS\r";
        let file = format!("{}{}{bad}", msg("P1"), msg("P2"));
        let intake = Intake::new(store.clone(), "emr", "lis").group(4);
        let r = intake.drain(&mut MockSource::new([Item::new("f", file.clone())])).await.unwrap();
        assert_eq!((r.stored.queued.len(), r.stored.quarantined.len()), (2, 1));
        // the same file again: duplicates, recorded; the broken one not quarantined twice
        let r = intake.drain(&mut MockSource::new([Item::new("f", file)])).await.unwrap();
        assert_eq!((r.stored.queued.len(), r.stored.duplicates.len()), (0, 2));
        assert_eq!(store.quarantined(false).unwrap().len(), 1);

        let sink = Arc::new(MockSink::new());
        sink.push_err(Error::new(ErrorKind::Rejected, "peer answered AE"));
        let sent = Forwarder::new(store.clone(), "lis", sink.clone()).group(8).drain().await.unwrap();
        assert_eq!((sent.delivered.len(), sent.quarantined.len()), (1, 1));
        let kinds: Vec<EventKind> =
            store.audit(&AuditQuery::new().control_id("P2")).unwrap().iter().map(|e| e.kind).collect();
        use EventKind::*;
        assert_eq!(kinds, [Received, Parsed, Queued, Received, Parsed, Duplicate, Sent, Acknowledged]);
        assert_eq!(store.audit(&AuditQuery::new().patient("MRN-P1")).unwrap().len(), 2, "one per reception");

        // release the AE'd one, fixed, and deliver it
        let q = store.quarantined(false).unwrap();
        let p1 = q.iter().find(|e| e.control_id.as_deref() == Some("P1")).unwrap();
        store.release(p1.id, "lis", None).unwrap();
        assert_eq!(Forwarder::new(store.clone(), "lis", sink).drain().await.unwrap().delivered.len(), 1);
    });
    let snap = store.snapshot(Duration::from_secs(60)).unwrap();
    assert_eq!((snap.connections["emr"].messages_in, snap.connections["lis"].messages_out), (6, 2));
    assert_eq!(snap.quarantine_waiting, 1);
    let n = store.verify_audit().unwrap();
    assert!(n > 10, "{n}");

    // pruning keeps the trail verifiable, and tampering is still caught
    clock.advance(Duration::from_secs(3600));
    let report = store.prune(&Retention::new().max_age(Duration::from_secs(60)).chunk(5).build()).unwrap();
    assert_eq!(report.messages, 2);
    assert_eq!(report.events, n);
    chain_goes_on_and_tampering_is_caught(&store, url);
}

fn chain_goes_on_and_tampering_is_caught(store: &Arc<dyn Store>, url: &str) {
    let first = store.audit(&AuditQuery::new()).unwrap();
    assert!(first.is_empty());
    // the same message twice in one transaction: the second is a duplicate
    let n1 = transport::store::Entry::Message(transport::store::NewMessage {
        bytes: msg("N1").into(),
        control_id: Some("N1".into()),
        dedup_key: Some("cid:N1".into()),
        ..Default::default()
    });
    let b = transport::store::Batch { connection: "emr".into(), queue: "lis".into(), entries: vec![n1.clone(), n1] };
    let r = store.ingest(&b).unwrap();
    assert_eq!((r.queued.len(), r.duplicates.len()), (1, 1));
    assert_eq!(r.duplicates[0].original, r.queued[0]);
    assert_eq!(store.verify_audit().unwrap(), 6, "the chain goes on from the checkpoint");

    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let refused = c.execute("DELETE FROM audit", &[]).unwrap_err();
    assert!(format!("{refused:?}").contains("append-only"), "{refused:?}");
    c.batch_execute(
        "ALTER TABLE audit DISABLE TRIGGER audit_append_only;
         UPDATE audit SET outcome = 'AA' WHERE seq = (SELECT MIN(seq) FROM audit);",
    )
    .unwrap();
    let e = store.verify_audit().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tampered);
    assert!(e.to_string().ends_with("does not verify"), "{e}");
}

fn leases_hand_each_message_to_one_worker(url: &str) {
    let clock = ManualClock::new(0);
    let lease = Duration::from_secs(30);
    let a = PgStore::connect_with_lease(url, config(&clock), lease).unwrap();
    let b = PgStore::connect_with_lease(url, config(&clock), lease).unwrap();
    let entries = (0..20)
        .map(|i| {
            transport::store::Entry::Message(transport::store::NewMessage {
                bytes: msg(&format!("L{i}")).into(),
                ..Default::default()
            })
        })
        .collect();
    a.ingest(&transport::store::Batch { connection: "emr".into(), queue: "lis".into(), entries }).unwrap();
    let got_a: Vec<i64> = a.pending("lis", 8).unwrap().iter().map(|q| q.id).collect();
    let got_b: Vec<i64> = b.pending("lis", 8).unwrap().iter().map(|q| q.id).collect();
    assert_eq!(got_a.len() + got_b.len(), 16);
    assert!(got_a.iter().all(|id| !got_b.contains(id)), "no message to two workers: {got_a:?} {got_b:?}");
    assert_eq!(a.pending("lis", 8).unwrap().iter().map(|q| q.id).collect::<Vec<_>>(), got_a, "a keeps its own");
    // a dies; once its lease ran out, b takes its messages over
    drop(a);
    assert_eq!(b.pending("lis", 100).unwrap().len(), 12, "b's 8 and the 4 nobody had");
    clock.advance(lease + Duration::from_secs(1));
    assert_eq!(b.pending("lis", 100).unwrap().len(), 20);
}

/// A peer that records what it got (shared by all workers).
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Sink for Recorder {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        self.0.lock().unwrap().push(item.id.clone());
        Box::pin(async { Ok(Delivery::default()) })
    }
}

fn workers_drain_one_queue_exactly_once(url: &str) {
    let clock = ManualClock::new(0);
    let store = PgStore::connect(url, config(&clock)).unwrap();
    let entries = (0..400)
        .map(|i| {
            transport::store::Entry::Message(transport::store::NewMessage {
                bytes: msg(&format!("W{i}")).into(),
                ..Default::default()
            })
        })
        .collect();
    store.ingest(&transport::store::Batch { connection: "emr".into(), queue: "lis".into(), entries }).unwrap();
    let sink = Arc::new(Recorder::default());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (url, sink, cfg) = (url.to_owned(), sink.clone(), config(&clock));
            std::thread::spawn(move || {
                let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url, cfg).unwrap());
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(Forwarder::new(store, "lis", sink).group(16).drain()).unwrap().delivered.len()
            })
        })
        .collect();
    let per_worker: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 400, "{per_worker:?}");
    let got = sink.0.lock().unwrap().clone();
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!((got.len(), unique.len()), (400, 400), "each message to exactly one worker, once");
    assert_eq!(store.depth("lis").unwrap().0, 0);
    assert_eq!(store.verify_audit().unwrap(), 400 * 3 + 400 * 2);
}
