//! Retention: the store stays bounded under endless traffic, pruning never
//! touches unfinished work, and the audit trail still verifies — and still
//! catches tampering — after its beginning was pruned.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use transport::audit::{AuditQuery, EventKind};
use transport::mock::{MockSink, MockSource};
use transport::pipeline::{Forwarder, Intake};
use transport::store::{ManualClock, Retention, SqliteStore, Store, StoreConfig};
use transport::{ErrorKind, Item};

const MINUTE: Duration = Duration::from_secs(60);

fn msg(id: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN-{id}^^^CLINIC^MR||DOE^JANE\r\
         ORC|NW|PLC-{id}\rOBR|1|PLC-{id}||2345-7^Glucose^LN\r"
    )
}

fn config(clock: &ManualClock) -> StoreConfig {
    StoreConfig::new().audit_key("k").clock(Arc::new(clock.clone())).dedup_window(5 * MINUTE).build()
}

async fn round(store: &Arc<dyn Store>, ids: impl IntoIterator<Item = String>, deliver: bool) {
    let items: Vec<Item> = ids.into_iter().map(|id| Item::new(id.clone(), msg(&id))).collect();
    Intake::new(store.clone(), "emr", "lis").group(16).drain(&mut MockSource::new(items)).await.unwrap();
    if deliver {
        Forwarder::new(store.clone(), "lis", Arc::new(MockSink::new())).group(16).drain().await.unwrap();
    }
}

fn count(store: &SqliteStore, table: &str) -> i64 {
    store.with_connection(|c| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap())
}

fn size(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn wal(db: &Path) -> u64 {
    size(format!("{}-wal", db.display()))
}

/// The database file once the write-ahead log is folded in (the log itself
/// is bounded by the automatic checkpoint and reused from its start).
fn db_size(store: &SqliteStore, db: &Path) -> u64 {
    store.with_connection(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap());
    size(db)
}

#[tokio::test]
async fn rounds_of_ingest_and_prune_keep_rows_and_file_size_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lb.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let sqlite = Arc::new(SqliteStore::open(&db, config(&clock)).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    let policy = Retention::new().max_age(5 * MINUTE).chunk(64).build();
    const PER_ROUND: usize = 50;
    let (mut size_at_20, mut max_wal) = (0, 0);
    let mut max_rows = (0, 0, 0);
    for r in 0..80 {
        round(&store, (0..PER_ROUND).map(|i| format!("R{r}-{i}")), true).await;
        clock.advance(MINUTE);
        let report = store.prune(&policy).unwrap();
        if r >= 6 {
            // steady state: each round removes what the round 5 minutes ago added
            assert_eq!(report.messages, PER_ROUND as u64, "round {r}");
            assert_eq!(report.events, 5 * PER_ROUND as u64, "round {r}");
            assert!(report.chunks >= 4, "bounded chunks: {report:?}");
        }
        let rows = (count(&sqlite, "messages"), count(&sqlite, "audit"), count(&sqlite, "dedup"));
        max_rows = (max_rows.0.max(rows.0), max_rows.1.max(rows.1), max_rows.2.max(rows.2));
        max_wal = max_wal.max(wal(&db));
        if r == 20 {
            size_at_20 = db_size(&sqlite, &db);
        }
    }
    // at most the last 5 minutes (plus the round just added) are kept
    assert!(max_rows.0 <= 6 * PER_ROUND as i64, "messages {max_rows:?}");
    assert!(max_rows.1 <= 6 * 5 * PER_ROUND as i64, "events {max_rows:?}");
    assert!(max_rows.2 <= 6 * PER_ROUND as i64, "dedup keys {max_rows:?}");
    let end = db_size(&sqlite, &db);
    assert!(end <= size_at_20 + size_at_20 / 4, "file grew from {size_at_20} to {end} bytes");
    assert!(max_wal <= 64 << 20, "the write-ahead log grew to {max_wal} bytes");
    // 80 rounds of 50 messages went through; the trail still verifies
    assert_eq!(store.verify_audit().unwrap(), count(&sqlite, "audit") as u64);
    let snap = store.snapshot(MINUTE).unwrap();
    assert_eq!(snap.connections["lis"].messages_out, 80 * PER_ROUND as u64);
}

#[tokio::test]
async fn count_limits_prune_in_chunks_and_keep_the_newest() {
    let clock = ManualClock::new(0);
    let sqlite = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    round(&store, (0..40).map(|i| format!("C{i}")), true).await; // 40 messages, 200 events
    let report = store.prune(&Retention::new().max_events(50).max_messages(10).chunk(7).build()).unwrap();
    assert_eq!((report.messages, report.events), (30, 150));
    assert_eq!(report.chunks, 5 + 22, "30 messages in chunks of 7, 150 events in chunks of 7");
    assert_eq!((count(&sqlite, "messages"), count(&sqlite, "audit")), (10, 50));
    let first: i64 = sqlite.with_connection(|c| c.query_row("SELECT MIN(seq) FROM audit", [], |r| r.get(0)).unwrap());
    assert_eq!(first, 151, "the newest are kept");
    assert_eq!(report.checkpoint.as_ref().map(|c| c.0), Some(150));
    assert_eq!(store.verify_audit().unwrap(), 50);
    // nothing more to do: a second prune is a no-op
    assert_eq!(store.prune(&Retention::new().max_events(50).max_messages(10).build()).unwrap().events, 0);
}

#[tokio::test]
async fn unfinished_work_and_its_trail_are_never_pruned() {
    let clock = ManualClock::new(1_700_000_000_000);
    let sqlite = Arc::new(SqliteStore::open(":memory:", config(&clock)).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    round(&store, ["DONE".to_owned()], true).await;
    clock.advance(MINUTE);
    round(&store, ["WAITING".to_owned()], false).await;
    clock.advance(60 * MINUTE);
    let report = store.prune(&Retention::new().max_age(MINUTE).max_events(0).max_messages(0).build()).unwrap();
    assert_eq!((report.messages, report.events), (1, 5), "DONE's message and its 5 events");
    assert_eq!(store.depth("lis").unwrap().0, 1);
    let trail: Vec<EventKind> =
        store.audit(&AuditQuery::new().control_id("WAITING")).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(trail, [EventKind::Received, EventKind::Parsed, EventKind::Queued]);
    // once delivered, it may go too
    Forwarder::new(store.clone(), "lis", Arc::new(MockSink::new())).drain().await.unwrap();
    clock.advance(60 * MINUTE);
    let report = store.prune(&Retention::new().max_age(MINUTE).build()).unwrap();
    assert_eq!((report.messages, report.events), (1, 5));
    assert_eq!(count(&sqlite, "audit"), 0);
    assert_eq!(store.verify_audit().unwrap(), 0);
    // the chain goes on from the checkpoint, across a restart
    round(&store, ["NEXT".to_owned()], false).await;
    let seqs: Vec<u64> = store.audit(&AuditQuery::new()).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [11, 12, 13]);
    assert_eq!(store.verify_audit().unwrap(), 3);
}

async fn pruned_store(clock: &ManualClock) -> Arc<SqliteStore> {
    let sqlite = Arc::new(SqliteStore::open(":memory:", config(clock)).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    for r in 0..4 {
        round(&store, (0..3).map(|i| format!("T{r}-{i}")), true).await;
        clock.advance(MINUTE);
    }
    // 4 rounds × 3 messages × 5 events = 60; keep 20 (seq 41..=60)
    let report = store.prune(&Retention::new().max_events(20).chunk(15).build()).unwrap();
    assert_eq!((report.events, report.chunks), (40, 3));
    assert_eq!(store.verify_audit().unwrap(), 20);
    sqlite
}

#[tokio::test]
async fn tampering_after_pruning_is_still_detected() {
    let clock = ManualClock::new(1_700_000_000_000);
    let tampered = |s: &SqliteStore| {
        let e = s.verify_audit().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tampered);
        e.to_string()
    };

    // the guard: events after the last checkpoint cannot be deleted or changed
    let s = pruned_store(&clock).await;
    let refused = s.with_connection(|c| c.execute("DELETE FROM audit WHERE seq = 41", []));
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    let refused = s.with_connection(|c| c.execute("DELETE FROM audit_checkpoints", []));
    assert!(refused.unwrap_err().to_string().contains("append-only"));

    // changing a kept event
    s.with_connection(|c| {
        c.execute_batch("DROP TRIGGER audit_append_only_update; UPDATE audit SET outcome = 'AA' WHERE seq = 45;")
            .unwrap()
    });
    assert_eq!(tampered(&s), "audit event 45 does not verify");

    // removing the first kept event (the one right after the checkpoint)
    let s = pruned_store(&clock).await;
    s.with_connection(|c| {
        c.execute_batch("DROP TRIGGER audit_append_only_delete; DELETE FROM audit WHERE seq = 41;").unwrap()
    });
    assert_eq!(tampered(&s), "audit event 41 is missing");

    // moving the checkpoint to hide more removed events
    let s = pruned_store(&clock).await;
    s.with_connection(|c| {
        c.execute_batch(
            "DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_append_only_delete;
             UPDATE audit_checkpoints SET seq = 45, hash = (SELECT hash FROM audit WHERE seq = 45)
               WHERE id = (SELECT MAX(id) FROM audit_checkpoints);
             DELETE FROM audit WHERE seq <= 45;",
        )
        .unwrap()
    });
    assert_eq!(tampered(&s), "audit checkpoint 3 does not verify");

    // removing the checkpoints: the trail then starts in the middle
    let s = pruned_store(&clock).await;
    s.with_connection(|c| {
        c.execute_batch("DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit_checkpoints;").unwrap()
    });
    assert_eq!(tampered(&s), "audit event 1 is missing");

    // cutting the end off is caught by the head, as before pruning
    let s = pruned_store(&clock).await;
    s.with_connection(|c| {
        c.execute_batch("DROP TRIGGER audit_append_only_delete; DELETE FROM audit WHERE seq = 60;").unwrap()
    });
    assert_eq!(tampered(&s), "audit trail ends at event 59, not at its head");
}
