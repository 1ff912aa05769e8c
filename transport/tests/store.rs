//! The SQLite store through the pipeline: de-duplication across restarts and
//! windows, quarantine, audit queries, tamper evidence, poison messages.

use std::sync::Arc;
use std::time::Duration;

use transport::audit::{AuditQuery, EventKind};
use transport::layers::{AckCheck, AckPolicy};
use transport::mock::{MockSink, MockSource};
use transport::pipeline::{DedupKey, Forwarder, Intake};
use transport::store::{ManualClock, SqliteStore, Store, StoreConfig};
use transport::{Error, ErrorKind, Item};

fn msg(id: &str, mrn: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||{mrn}^^^CLINIC^MR||DOE^JANE\r\
         ORC|NW|PLC-{id}\rOBR|1|PLC-{id}||2345-7^Glucose^LN\r"
    )
}

fn config(clock: &ManualClock) -> StoreConfig {
    StoreConfig::new()
        .audit_key("test key")
        .clock(Arc::new(clock.clone()))
        .dedup_window(Duration::from_secs(3600))
        .build()
}

async fn take(store: &Arc<dyn Store>, dedup: DedupKey, items: Vec<Item>) -> transport::pipeline::IntakeReport {
    let mut src = MockSource::new(items);
    Intake::new(store.clone(), "emr", "lis").dedup(dedup).drain(&mut src).await.unwrap()
}

#[tokio::test]
async fn duplicates_are_recorded_across_restarts_and_within_the_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let path = dir.path().join("lb.db");
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, config(&clock)).unwrap());
        let r = take(&store, DedupKey::default(), vec![Item::new("f", msg("M1", "MRN1"))]).await;
        assert_eq!(r.stored.queued.len(), 1);
    }
    // restart: same MSH-10 from the same sender, different bytes (a resend)
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, config(&clock)).unwrap());
    let resend = msg("M1", "MRN1").replace("20240117", "20240118");
    let r = take(&store, DedupKey::default(), vec![Item::new("f", resend.clone())]).await;
    assert_eq!(r.stored.queued.len(), 0);
    assert_eq!(r.stored.duplicates.len(), 1);
    assert_eq!(r.stored.duplicates[0].key, "cid:EHR^CLINIC|M1");
    let dups = store.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap();
    assert_eq!(dups.len(), 1, "each duplicate is recorded");
    assert_eq!(dups[0].detail, format!("duplicate of m={}", r.stored.duplicates[0].original));

    // past the window it is new again
    clock.advance(Duration::from_secs(3601));
    let r = take(&store, DedupKey::default(), vec![Item::new("f", resend)]).await;
    assert_eq!(r.stored.queued.len(), 1);
    assert_eq!(store.verify_audit().unwrap(), store.audit(&AuditQuery::new()).unwrap().len() as u64);
}

#[tokio::test]
async fn content_hash_and_business_keys() {
    let clock = ManualClock::new(0);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    // same bytes twice: one queued
    let r =
        take(&store, DedupKey::ContentHash, vec![Item::new("a", msg("A", "1")), Item::new("b", msg("A", "1"))]).await;
    assert_eq!((r.stored.queued.len(), r.stored.duplicates.len()), (1, 1));
    // a business key: placer order number + test; new control id, same order → duplicate
    let key = DedupKey::Business(vec!["ORC-2".parse().unwrap(), "OBR-4-1".parse().unwrap()]);
    let other = msg("B", "1").replace("|B|P|", "|B2|P|");
    let r = take(&store, key, vec![Item::new("a", msg("B", "1")), Item::new("b", other)]).await;
    assert_eq!((r.stored.queued.len(), r.stored.duplicates.len()), (1, 1));
    assert_eq!(r.stored.duplicates[0].key, "biz:PLC-B|2345-7");
}

#[tokio::test]
async fn quarantine_keeps_bytes_offset_and_path_and_can_be_released() {
    let clock = ManualClock::new(0);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let bad = "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|BAD1|P|2.3\rPID|1\rzz|oops\r";
    let file = format!("{}{bad}{}", msg("G1", "1"), msg("G2", "2"));
    let r = take(&store, DedupKey::default(), vec![Item::new("f", file.clone()).with_name("batch.hl7")]).await;
    assert_eq!((r.stored.queued.len(), r.stored.quarantined.len()), (2, 1));

    let list = store.quarantined(false).unwrap();
    assert_eq!(list.len(), 1);
    let q = store.quarantine_entry(list[0].id).unwrap();
    assert_eq!(&q.bytes[..], bad.as_bytes());
    let start = msg("G1", "1").len() as u64;
    assert_eq!(q.offset, Some(start + 63));
    assert_eq!(q.reason, format!("invalid segment name at byte {}", start + 63));
    assert_eq!(q.control_id.as_deref(), Some("BAD1"));

    // fixed by an operator and released into the queue
    let fixed = bad.replace("zz|oops", "NTE|1||fixed");
    let id = store.release(q.id, "lis", Some(fixed.as_bytes())).unwrap();
    assert!(store.quarantined(false).unwrap().is_empty());
    assert!(store.quarantined(true).unwrap()[0].released);
    let pending = store.pending("lis", 10).unwrap();
    assert_eq!(pending.len(), 3);
    assert_eq!(pending.last().unwrap().id, id);
    assert_eq!(pending.last().unwrap().item.meta.control_id.as_deref(), Some("BAD1"));
    let released = store.audit(&AuditQuery::new().kind(EventKind::Released)).unwrap();
    assert_eq!(released[0].message_id, Some(id));
    assert_eq!(store.release(q.id, "lis", None).unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn audit_is_queryable_and_carries_no_phi() {
    let clock = ManualClock::new(1_000);
    let store = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    take(&dyn_store, DedupKey::default(), vec![Item::new("a", msg("Q1", "MRN-77"))]).await;
    clock.advance(Duration::from_secs(10));
    take(&dyn_store, DedupKey::default(), vec![Item::new("b", msg("Q2", "MRN-88"))]).await;

    let by_patient = store.audit(&AuditQuery::new().patient("MRN-77")).unwrap();
    assert!(!by_patient.is_empty());
    assert!(by_patient.iter().all(|e| e.control_id.as_deref() == Some("Q1")));
    assert_eq!(by_patient[0].patient.as_deref(), Some(store.patient_hash("MRN-77").as_str()));
    let by_placer = store.audit(&AuditQuery::new().placer("PLC-Q2")).unwrap();
    assert!(by_placer.iter().all(|e| e.control_id.as_deref() == Some("Q2")));
    let late = store.audit(&AuditQuery::new().between(5_000, 20_000)).unwrap();
    assert!(late.iter().all(|e| e.control_id.as_deref() == Some("Q2")) && !late.is_empty());
    let queued = store.audit(&AuditQuery::new().kind(EventKind::Queued).connection("emr")).unwrap();
    assert_eq!(queued.len(), 2);
    let id = queued[0].message_id.unwrap();
    let trail: Vec<_> = store.audit(&AuditQuery::new().message(id)).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(trail, [EventKind::Queued]);
    assert_eq!(store.audit(&AuditQuery::new().control_id("Q1")).unwrap().len(), 3);

    // neither the MRN nor the name appears anywhere in the trail
    let dump: String = store.with_connection(|c| {
        let mut s = c.prepare("SELECT * FROM audit").unwrap();
        let n = s.column_count();
        let rows = s
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        v => format!("{v:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    });
    assert!(!dump.contains("MRN-77") && !dump.contains("DOE") && !dump.contains("JANE"), "{dump}");
}

#[tokio::test]
async fn tampering_with_the_audit_trail_is_detected() {
    let clock = ManualClock::new(0);
    let store = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    take(&dyn_store, DedupKey::default(), vec![Item::new("a", msg("T1", "1")), Item::new("b", msg("T2", "2"))]).await;
    assert_eq!(store.verify_audit().unwrap(), 6);

    // the table refuses changes ...
    let refused = store.with_connection(|c| c.execute("UPDATE audit SET outcome = 'x' WHERE seq = 2", []));
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    // ... and whoever drops the guard is caught by the chain
    store.with_connection(|c| {
        c.execute_batch(
            "DROP TRIGGER audit_append_only_update; DROP TRIGGER audit_append_only_delete;
             UPDATE audit SET byte_count = byte_count + 1 WHERE seq = 2;",
        )
        .unwrap()
    });
    let e = store.verify_audit().unwrap_err();
    assert_eq!((e.kind(), e.to_string().as_str()), (ErrorKind::Tampered, "audit event 2 does not verify"));

    // removing the last event, or one in the middle
    let store3 = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let dyn3: Arc<dyn Store> = store3.clone();
    take(&dyn3, DedupKey::default(), vec![Item::new("a", msg("T1", "1"))]).await;
    store3.with_connection(|c| {
        c.execute_batch("DROP TRIGGER audit_append_only_delete; DELETE FROM audit WHERE seq = 3;").unwrap()
    });
    assert_eq!(store3.verify_audit().unwrap_err().to_string(), "audit trail ends at event 2, not at its head");
    store3.with_connection(|c| c.execute_batch("DELETE FROM audit WHERE seq = 1;").unwrap());
    assert_eq!(store3.verify_audit().unwrap_err().to_string(), "audit event 1 is missing");
}

#[tokio::test(start_paused = true)]
async fn poison_goes_to_quarantine_and_the_queue_keeps_moving() {
    let clock = ManualClock::new(0);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    take(&store, DedupKey::default(), vec![Item::new("a", msg("P1", "1")), Item::new("b", msg("P2", "2"))]).await;
    let sink = Arc::new(MockSink::new());
    let fwd = Forwarder::new(store.clone(), "lis", sink.clone()).poison_after(2);

    sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
    let r = fwd.drain().await.unwrap();
    assert!(r.deferred.is_some() && r.delivered.is_empty(), "a passing failure keeps the order");
    sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
    let r = fwd.drain().await.unwrap();
    assert_eq!(r.quarantined.len(), 1, "second failure: poison");
    assert_eq!(r.delivered.len(), 1, "the next message still goes");
    assert_eq!(sink.delivered()[0].meta.control_id.as_deref(), Some("P2"));
    let q = store.quarantined(false).unwrap();
    assert_eq!(q[0].control_id.as_deref(), Some("P1"));
    assert_eq!(store.depth("lis").unwrap().0, 0);
}

#[tokio::test]
async fn ae_is_quarantined_no_msa_holds_the_queue() {
    let clock = ManualClock::new(0);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let items = ["H1", "H2", "H3"].map(|id| Item::new(id, msg(id, "1"))).to_vec();
    take(&store, DedupKey::default(), items).await;
    let mock = Arc::new(MockSink::new());
    mock.push_ack("MSH|^~\\&|LIS|LAB|||20240117||ACK|A1|P|2.3\rMSA|AE|H1\r");
    mock.push_ack("MSH|^~\\&|LIS|LAB|||20240117||ACK|A2|P|2.3\r");
    let sink = Arc::new(AckCheck::new(mock.clone(), AckPolicy::default()));
    let r = Forwarder::new(store.clone(), "lis", sink).drain().await.unwrap();
    assert_eq!(r.quarantined.len(), 1);
    assert_eq!(r.quarantined[0].1, "peer answered AE");
    let (held, e) = r.held.unwrap();
    assert_eq!(e.kind(), ErrorKind::Hold);
    assert_eq!(store.pending("lis", 10).unwrap()[0].id, held, "H2 stays first in the queue");
    assert_eq!(store.audit(&AuditQuery::new().kind(EventKind::Held)).unwrap().len(), 1);
}

#[tokio::test]
async fn a_store_from_before_bodies_and_checkpoints_opens_and_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // the schema of the first release: bytes in the messages row, an
        // unconditional delete guard on the audit trail
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE messages(id INTEGER PRIMARY KEY, queue TEXT NOT NULL, connection TEXT NOT NULL,
                 state TEXT NOT NULL, control_id TEXT, sender TEXT, name TEXT, bytes BLOB NOT NULL,
                 content_hash TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
                 updated_at INTEGER NOT NULL);
             CREATE INDEX messages_queue ON messages(queue, state, id);
             CREATE TABLE audit(seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL,
                 connection TEXT NOT NULL, direction TEXT NOT NULL, message_id INTEGER, control_id TEXT,
                 outcome TEXT NOT NULL, byte_count INTEGER, content_hash TEXT, patient TEXT, placer TEXT,
                 filler TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE INDEX audit_patient ON audit(patient);
             CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
                 BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
             INSERT INTO messages(queue, connection, state, control_id, bytes, content_hash, created_at, updated_at)
                 VALUES ('lis', 'emr', 'queued', 'OLD1', X'4D53487C', 'h', 0, 0);",
        )
        .unwrap();
    }
    let clock = ManualClock::new(10);
    let sqlite = Arc::new(SqliteStore::open(&path, config(&clock)).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    let q = store.pending("lis", 10).unwrap();
    assert_eq!((q.len(), &q[0].item.bytes[..]), (1, &b"MSH|"[..]));
    let sink = Arc::new(MockSink::new());
    Forwarder::new(store.clone(), "lis", sink.clone()).drain().await.unwrap();
    assert_eq!(&sink.delivered()[0].bytes[..], b"MSH|");
    let acked = store.audit(&AuditQuery::new().kind(EventKind::Acknowledged)).unwrap();
    assert_eq!(acked[0].byte_count, Some(4));
    let partial: String = sqlite.with_connection(|c| {
        c.query_row("SELECT sql FROM sqlite_master WHERE name = 'audit_patient'", [], |r| r.get(0)).unwrap()
    });
    assert!(partial.contains("WHERE patient IS NOT NULL"), "{partial}");
    clock.advance(Duration::from_secs(10));
    let pruned = store.prune(&transport::store::Retention::new().max_age(Duration::from_secs(1)).build()).unwrap();
    assert_eq!((pruned.messages, pruned.events), (1, 2), "the old delete guard was replaced");
    assert_eq!(store.verify_audit().unwrap(), 0);
}

#[tokio::test]
async fn a_broken_message_read_again_is_a_duplicate_not_a_second_quarantine_entry() {
    let clock = ManualClock::new(0);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let file = format!("{}MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|B1|P|2.3\rOOPS\r", msg("G1", "1"));
    // the same file twice: as after a crash between the commit and its archiving
    let r1 = take(&store, DedupKey::default(), vec![Item::new("f", file.clone())]).await;
    let r2 = take(&store, DedupKey::default(), vec![Item::new("f", file.clone())]).await;
    assert_eq!(r1.stored.quarantined, r2.stored.quarantined, "the second points at the first entry");
    assert_eq!(store.quarantined(true).unwrap().len(), 1);
    let dups = store.audit(&AuditQuery::new().kind(EventKind::Duplicate).control_id("B1")).unwrap();
    assert_eq!(dups.len(), 1);
    assert_eq!(dups[0].detail, format!("duplicate of q={}", r1.stored.quarantined[0]));
    // without de-duplication every copy is kept
    take(&store, DedupKey::Off, vec![Item::new("f", file)]).await;
    assert_eq!(store.quarantined(true).unwrap().len(), 2);
    store.verify_audit().unwrap();
}

#[test]
fn mapping_and_validation_hops_are_recorded_and_queryable() {
    use transport::audit::{Direction, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = SqliteStore::open(dir.path().join("lb.db"), config(&clock)).unwrap();
    for kind in [EventKind::Mapped, EventKind::Validated] {
        store.record(&NewEvent::new(kind, "emr", Direction::In)).unwrap();
    }
    let trail = store.audit(&AuditQuery { connection: Some("emr".into()), ..AuditQuery::new() }).unwrap();
    let kinds: Vec<EventKind> = trail.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Mapped, EventKind::Validated]);
    assert_eq!("validated".parse::<EventKind>().unwrap(), EventKind::Validated);
    assert_eq!(store.verify_audit().unwrap(), 2);
}
