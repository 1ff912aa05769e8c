//! Fault injection, end to end on 127.0.0.1: an EMR's inbox folder → store
//! → MLLP → store → the lab's folder. Each case checks that every good
//! message arrives exactly once and that the audit trail accounts for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hl7_core::{Limits, ParseOptions};
use transport::audit::{AuditQuery, EventKind};
use transport::folder::{FolderOptions, FolderSink, FolderSource};
use transport::layers::{AckCheck, AckPolicy, Backoff, Retry, RetryPolicy};
use transport::mllp::{ClientOptions, MllpClient, MllpServer, ServerOptions};
use transport::pipeline::{audit_retries, Forwarder, Intake};
use transport::store::{SqliteStore, Store, StoreConfig};
use transport::{Sink, Source};

fn msg(id: &str, extra: &str) -> String {
    format!("MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN-{id}\rORC|NW|P-{id}\r{extra}")
}

const GOOD: [&str; 3] = ["G1", "G2", "G3"];

fn batch_file() -> String {
    format!(
        "FHS|^~\\&|EHR\rBHS|^~\\&|EHR\r{}{}{}{}BTS|4\rFTS|1\r",
        msg("G1", ""),
        msg("BAD", "this is not a segment\r"),
        msg("G2", ""),
        msg("G3", "")
    )
}

struct Lab {
    addr: String,
    store: Arc<dyn Store>,
    task: tokio::task::JoinHandle<()>,
}

/// The lab side: MLLP server → intake (with parse options) → its store.
async fn lab(opts: ParseOptions) -> Lab {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap());
    let mut server = MllpServer::bind("127.0.0.1:0", ServerOptions::default()).await.unwrap();
    let addr = server.local_addr().to_string();
    let intake = Intake::new(store.clone(), "mllp-from-emr", "lis-folder").parse_options(opts);
    let task = tokio::spawn(async move {
        while let Ok(Some(inbound)) = server.recv().await {
            intake.take(&mut server, inbound).await.unwrap();
        }
    });
    Lab { addr, store, task }
}

fn sender_sink(store: &Arc<dyn Store>, addr: &str) -> Arc<dyn Sink> {
    let client = MllpClient::new(addr, ClientOptions { ack_timeout: Duration::from_secs(10), ..Default::default() });
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(50)))
        .on_retry(audit_retries(store.clone(), "mllp-to-lab"));
    Arc::new(Retry::new(AckCheck::new(client, AckPolicy::default()), policy))
}

/// The EMR side: pick up complete files, store them, forward over MLLP.
async fn emr_send(store: &Arc<dyn Store>, inbox: &Path, addr: &str) -> transport::pipeline::ForwardReport {
    let mut source = FolderSource::new(inbox, FolderOptions::default());
    source.scan().unwrap();
    source.scan().unwrap();
    let intake = Intake::new(store.clone(), "emr-inbox", "mllp-to-lab");
    intake.drain(&mut source as &mut dyn Source).await.unwrap();
    Forwarder::new(store.clone(), "mllp-to-lab", sender_sink(store, addr)).drain().await.unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn malformed_message_in_a_batch_duplicate_file_and_resend_after_crash() {
    let (inbox, outdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lab = lab(ParseOptions::default()).await;
    let emr: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap());

    std::fs::write(inbox.path().join("batch-1.hl7"), batch_file()).unwrap();
    let sent = emr_send(&emr, inbox.path(), &lab.addr).await;
    assert_eq!(sent.delivered.len(), 3);
    assert!(sent.quarantined.is_empty() && sent.deferred.is_none());

    // the malformed one is quarantined at the EMR side with its bytes and where it broke
    let q = emr.quarantined(false).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(std::str::from_utf8(&q[0].bytes).unwrap(), msg("BAD", "this is not a segment\r"));
    assert!(q[0].reason.starts_with("invalid segment name at byte "), "{}", q[0].reason);
    assert!(!inbox.path().join("batch-1.hl7").exists(), "archived after the commit");
    assert!(inbox.path().join(".archive/batch-1.hl7").exists());

    // the same file delivered twice (under another name): recorded, not sent again
    std::fs::write(inbox.path().join("batch-1-again.hl7"), batch_file()).unwrap();
    let sent = emr_send(&emr, inbox.path(), &lab.addr).await;
    assert!(sent.delivered.is_empty());
    // three good messages and the broken one: it is not quarantined twice
    assert_eq!(emr.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap().len(), 4);
    assert_eq!(emr.quarantined(false).unwrap().len(), 1);

    // the EMR engine crashed after sending, before recording it: a fresh
    // store sends all again; the lab records duplicates and queues nothing new
    let emr2: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap());
    std::fs::write(inbox.path().join("batch-1-resent.hl7"), batch_file()).unwrap();
    let sent = emr_send(&emr2, inbox.path(), &lab.addr).await;
    assert_eq!(sent.delivered.len(), 3, "the lab ACKs duplicates: they are stored (as duplicates)");
    assert_eq!(lab.store.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap().len(), 3);

    // the lab delivers to its folder: each good message exactly once
    let out = Forwarder::new(lab.store.clone(), "lis-folder", Arc::new(FolderSink::new(outdir.path())));
    assert_eq!(out.drain().await.unwrap().delivered.len(), 3);
    let expected: Vec<String> = GOOD.iter().map(|id| msg(id, "")).collect();
    assert_eq!(files(outdir.path()), expected);

    // and the trail accounts for each good message at both ends
    for id in GOOD {
        let emr_kinds: Vec<_> = emr.audit(&AuditQuery::new().control_id(id)).unwrap().iter().map(|e| e.kind).collect();
        assert!(emr_kinds.contains(&EventKind::Acknowledged), "{id}: {emr_kinds:?}");
        let lab_kinds: Vec<_> =
            lab.store.audit(&AuditQuery::new().control_id(id)).unwrap().iter().map(|e| e.kind).collect();
        let queued = lab_kinds.iter().filter(|k| **k == EventKind::Queued).count();
        let acked = lab_kinds.iter().filter(|k| **k == EventKind::Acknowledged).count();
        assert_eq!((queued, acked), (1, 1), "{id}: {lab_kinds:?}");
    }
    for s in [&emr, &emr2, &lab.store] {
        s.verify_audit().unwrap();
    }
    lab.task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_peer_answering_ae_quarantines_that_message_and_the_rest_flows() {
    let inbox = tempfile::tempdir().unwrap();
    // The lab refuses messages with more than 3 segments: it stores them in
    // its quarantine and answers AE.
    let mut strict = ParseOptions::default();
    strict.limits(Limits { max_segments: 3, ..Limits::default() });
    let lab = lab(strict).await;
    let emr: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap());
    let file = format!("{}{}{}", msg("A1", ""), msg("TOO-LONG", "NTE|1\r"), msg("A2", ""));
    std::fs::write(inbox.path().join("orders.hl7"), file).unwrap();

    let sent = emr_send(&emr, inbox.path(), &lab.addr).await;
    assert_eq!(sent.delivered.len(), 2);
    assert_eq!(sent.quarantined.len(), 1);
    assert!(sent.quarantined[0].1.ends_with("peer answered AE"), "{}", sent.quarantined[0].1);
    let q = emr.quarantined(false).unwrap();
    assert_eq!(q[0].control_id.as_deref(), Some("TOO-LONG"));
    // the lab kept its copy too, with the reason
    let lab_q = lab.store.quarantined(false).unwrap();
    assert_eq!(lab_q.len(), 1);
    assert!(lab_q[0].reason.starts_with("more than 3 segments"), "{}", lab_q[0].reason);
    // no retries for a permanent refusal
    assert!(emr.audit(&AuditQuery::new().kind(EventKind::Retried)).unwrap().is_empty());
    lab.task.abort();
}

#[tokio::test(start_paused = true)]
async fn the_peer_is_down_then_up_nothing_is_lost() {
    let inbox = tempfile::tempdir().unwrap();
    let emr: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap());
    std::fs::write(inbox.path().join("o.hl7"), msg("D1", "")).unwrap();
    // nothing listens on this port
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let sent = emr_send(&emr, inbox.path(), &dead).await;
    let (_, e) = sent.deferred.expect("kept for later");
    assert!(e.to_string().starts_with(&dead), "{e}");
    assert_eq!(emr.depth("mllp-to-lab").unwrap().0, 1);
    assert_eq!(emr.audit(&AuditQuery::new().kind(EventKind::Retried)).unwrap().len(), 2);

    let lab = lab(ParseOptions::default()).await;
    let sent = Forwarder::new(emr.clone(), "mllp-to-lab", sender_sink(&emr, &lab.addr)).drain().await.unwrap();
    assert_eq!(sent.delivered.len(), 1);
    assert_eq!(lab.store.pending("lis-folder", 10).unwrap().len(), 1);
    lab.task.abort();
}
