//! The embedded default store: one SQLite file in WAL mode with
//! `synchronous = FULL`, so a commit is on disk before anyone is told.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::Sha256;

use super::chain::{chain_hash, checkpoint_hash, fresh_key, not_found, GENESIS};
use super::{
    Batch, Clock, Duplicate, Entry, IndexKeys, IngestReport, MessageId, PruneReport, QuarantineEntry, Queued, Rejected,
    Retention, Store, StoreConfig,
};
use crate::audit::{AuditEvent, AuditQuery, Direction, EventKind, NewEvent};
use crate::item::{content_hash, hex, Item, Meta};
use crate::monitor::{QueueStats, Snapshot};
use crate::{Error, ErrorKind};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    connection TEXT NOT NULL,
    state TEXT NOT NULL,
    control_id TEXT,
    sender TEXT,
    name TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages(queue, state, id);
CREATE TABLE IF NOT EXISTS bodies(id INTEGER PRIMARY KEY, bytes BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS messages_body_goes_too AFTER DELETE ON messages
    BEGIN DELETE FROM bodies WHERE id = OLD.id; END;
CREATE TABLE IF NOT EXISTS dedup(key TEXT PRIMARY KEY, message_id INTEGER NOT NULL, first_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    message_id INTEGER,
    control_id TEXT,
    reason TEXT NOT NULL,
    offset INTEGER,
    path TEXT,
    name TEXT,
    bytes BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    released_at INTEGER,
    content_hash TEXT
);
CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    connection TEXT NOT NULL,
    direction TEXT NOT NULL,
    message_id INTEGER,
    control_id TEXT,
    outcome TEXT NOT NULL,
    byte_count INTEGER,
    content_hash TEXT,
    patient TEXT,
    placer TEXT,
    filler TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_connection ON audit(connection, at);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_checkpoints(
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    event_at INTEGER NOT NULL,
    pruned INTEGER NOT NULL,
    at INTEGER NOT NULL,
    prev TEXT NOT NULL,
    self_hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TABLE IF NOT EXISTS counters(
    connection TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY(connection, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_done ON messages(state, id);
CREATE INDEX IF NOT EXISTS dedup_seen ON dedup(first_seen);
";

/// The audit trail's search indexes. Partial: most events carry no
/// patient, order or control id, and an index entry for a NULL costs a
/// write per event and finds nothing. Stores made before get them rebuilt
/// once (the definitions without `WHERE` are dropped).
const KEY_INDEXES: [(&str, &str); 5] = [
    ("audit_message", "message_id"),
    ("audit_control", "control_id"),
    ("audit_patient", "patient"),
    ("audit_placer", "placer"),
    ("audit_filler", "filler"),
];

/// Events may be deleted only up to the latest checkpoint, which
/// [`Store::prune`] writes in the same transaction. Recreated at every open:
/// stores made before checkpoints existed refused every delete.
const DELETE_GUARD: &str = "
DROP TRIGGER IF EXISTS audit_append_only_delete;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
    WHEN OLD.seq > COALESCE((SELECT MAX(seq) FROM audit_checkpoints), 0)
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
";

/// The chain's end within one transaction, and the counts of the events
/// appended so far.
struct Chain {
    seq: i64,
    hash: String,
    counts: HashMap<(String, &'static str), (u64, i64)>,
}

/// A row of `audit_checkpoints`.
struct Checkpoint {
    seq: i64,
    hash: String,
}

fn checkpoint(tx: &Connection) -> Result<Option<Checkpoint>, Error> {
    tx.query_row("SELECT seq, hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1", [], |r| {
        Ok(Checkpoint { seq: r.get(0)?, hash: r.get(1)? })
    })
    .optional()
    .map_err(Error::store)
}

/// The SQLite store.
///
/// # Examples
///
/// ```
/// use transport::store::{SqliteStore, Store, StoreConfig};
///
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("labbridge.db"), StoreConfig::default())?;
/// assert_eq!(store.verify_audit()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    key: Vec<u8>,
    window_ms: i64,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`; `":memory:"` for a
    /// throw-away store.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or its schema created.
    pub fn open(path: impl AsRef<std::path::Path>, config: StoreConfig) -> Result<SqliteStore, Error> {
        let conn = Connection::open(path.as_ref()).map_err(Error::store)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(Error::store)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(Error::store)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(Error::store)?;
        // Throughput without giving up durability (every commit is still
        // fsynced before it returns): a page cache that holds the hot index
        // pages instead of re-reading them, and fewer, larger checkpoints, so
        // a page changed by many transactions is copied into the database
        // once. The write-ahead log stays bounded (about 40 MB).
        conn.pragma_update(None, "cache_size", -32_768).map_err(Error::store)?;
        conn.pragma_update(None, "wal_autocheckpoint", 10_000).map_err(Error::store)?;
        migrate_bodies(&conn)?;
        conn.execute_batch(SCHEMA).map_err(Error::store)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {DELETE_GUARD} COMMIT;")).map_err(Error::store)?;
        let has_hash: i64 = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('quarantine') WHERE name = 'content_hash'", [], |r| {
                r.get(0)
            })
            .map_err(Error::store)?;
        if has_hash == 0 {
            conn.execute_batch("ALTER TABLE quarantine ADD COLUMN content_hash TEXT;").map_err(Error::store)?;
        }
        conn.execute_batch("CREATE INDEX IF NOT EXISTS quarantine_hash ON quarantine(content_hash);")
            .map_err(Error::store)?;
        for (name, column) in KEY_INDEXES {
            let sql: Option<String> = conn
                .query_row("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(Error::store)?;
            if !sql.is_some_and(|s| s.contains("WHERE")) {
                conn.execute_batch(&format!(
                    "DROP INDEX IF EXISTS {name};
                     CREATE INDEX {name} ON audit({column}) WHERE {column} IS NOT NULL;"
                ))
                .map_err(Error::store)?;
            }
        }
        // Counters came after the audit trail: stores from before get them
        // from the events they still have.
        conn.execute_batch(
            "INSERT INTO counters(connection, kind, n, last_at)
             SELECT connection, kind, COUNT(*), MAX(at) FROM audit
             WHERE NOT EXISTS (SELECT 1 FROM counters) GROUP BY connection, kind",
        )
        .map_err(Error::store)?;
        let key = match config.audit_key {
            Some(k) => k,
            None => {
                let existing: Option<Vec<u8>> = conn
                    .query_row("SELECT value FROM meta WHERE key = 'audit_key'", [], |r| r.get(0))
                    .optional()
                    .map_err(Error::store)?;
                match existing {
                    Some(k) => k,
                    None => {
                        let k = fresh_key();
                        conn.execute("INSERT INTO meta(key, value) VALUES ('audit_key', ?1)", [&k])
                            .map_err(Error::store)?;
                        k
                    }
                }
            }
        };
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            key,
            window_ms: config.dedup_window.as_millis() as i64,
            clock: config.clock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction:
        // SQLite rolls back an uncommitted transaction when it is dropped.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keyed hash the audit trail stores for an MRN.
    ///
    /// # Examples
    ///
    /// ```
    /// use transport::store::{SqliteStore, StoreConfig};
    ///
    /// let store = SqliteStore::open(":memory:", StoreConfig::new().audit_key("k").build())?;
    /// assert_eq!(store.patient_hash("MRN1"), store.patient_hash("MRN1"));
    /// assert_ne!(store.patient_hash("MRN1"), store.patient_hash("MRN2"));
    /// # Ok::<(), transport::Error>(())
    /// ```
    pub fn patient_hash(&self, mrn: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(mrn.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Runs `f` on the raw connection: for tests that play the attacker and
    /// for maintenance. Not part of the [`Store`] contract.
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.lock())
    }

    /// Where the chain stands, read once per transaction: the last event,
    /// else the latest checkpoint, else the genesis.
    fn chain(&self, tx: &Transaction<'_>) -> Result<Chain, Error> {
        let last: Option<(i64, String)> = tx
            .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(Error::store)?;
        let (seq, hash) = match last {
            Some(l) => l,
            None => checkpoint(tx)?.map(|c| (c.seq, c.hash)).unwrap_or_else(|| (0, GENESIS.to_owned())),
        };
        Ok(Chain { seq, hash, counts: HashMap::new() })
    }

    fn append(&self, tx: &Transaction<'_>, chain: &mut Chain, ev: &NewEvent) -> Result<u64, Error> {
        let patient = ev.keys.mrn.as_deref().map(|m| self.patient_hash(m));
        let mut stored = AuditEvent {
            seq: (chain.seq + 1) as u64,
            at: self.clock.now_millis(),
            kind: ev.kind,
            connection: ev.connection.clone(),
            direction: ev.direction,
            message_id: ev.message_id,
            control_id: ev.control_id.clone(),
            outcome: ev.outcome.clone(),
            byte_count: ev.byte_count,
            content_hash: ev.content_hash.clone(),
            patient,
            placer: ev.keys.placer.clone(),
            filler: ev.keys.filler.clone(),
            detail: ev.detail.clone(),
            prev_hash: std::mem::take(&mut chain.hash),
            hash: String::new(),
        };
        stored.hash = chain_hash(&stored);
        let seq = chain.seq + 1;
        tx.prepare_cached(
            "INSERT INTO audit(seq, at, kind, connection, direction, message_id, control_id, outcome, byte_count,
                               content_hash, patient, placer, filler, detail, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )
        .and_then(|mut st| {
            st.execute(params![
                seq,
                stored.at,
                stored.kind.as_str(),
                stored.connection,
                stored.direction.as_str(),
                stored.message_id,
                stored.control_id,
                stored.outcome,
                stored.byte_count.map(|b| b as i64),
                stored.content_hash,
                stored.patient,
                stored.placer,
                stored.filler,
                stored.detail,
                stored.prev_hash,
                stored.hash,
            ])
        })
        .map_err(Error::store)?;
        chain.seq = seq;
        chain.hash = stored.hash;
        let c = chain.counts.entry((stored.connection, stored.kind.as_str())).or_insert((0, stored.at));
        c.0 += 1;
        c.1 = c.1.max(stored.at);
        Ok(seq as u64)
    }

    /// Writes what a transaction's events changed besides themselves: the
    /// head pointer, which catches a trail cut short at its end (the chain
    /// alone cannot), and the counters of [`monitor`](crate::monitor).
    fn seal(&self, tx: &Transaction<'_>, chain: Chain) -> Result<(), Error> {
        if chain.counts.is_empty() {
            return Ok(());
        }
        tx.prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES ('audit_head', ?1)")
            .and_then(|mut st| st.execute([format!("{} {}", chain.seq, chain.hash).into_bytes()]))
            .map_err(Error::store)?;
        let mut st = tx
            .prepare_cached(
                "INSERT INTO counters(connection, kind, n, last_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(connection, kind) DO UPDATE SET n = n + excluded.n, last_at = MAX(last_at, excluded.last_at)",
            )
            .map_err(Error::store)?;
        for ((connection, kind), (n, last)) in chain.counts {
            st.execute(params![connection, kind, n as i64, last]).map_err(Error::store)?;
        }
        Ok(())
    }

    fn ingest_tx(&self, tx: &Transaction<'_>, chain: &mut Chain, batch: &Batch) -> Result<IngestReport, Error> {
        let now = self.clock.now_millis();
        let mut report = IngestReport::default();
        for entry in &batch.entries {
            let m = match entry {
                Entry::Invalid(r) => {
                    report.quarantined.push(self.quarantine_rejected(tx, chain, &batch.connection, r)?);
                    continue;
                }
                Entry::Message(m) => m,
            };
            let hash = content_hash(&m.bytes);
            let mut ev = NewEvent::new(EventKind::Received, &batch.connection, Direction::In);
            ev.control_id = m.control_id.clone();
            ev.byte_count = Some(m.bytes.len() as u64);
            ev.content_hash = Some(hash.clone());
            ev.keys = m.keys.clone();
            self.append(tx, chain, &ev)?;
            // The business keys go on the reception only: one index entry
            // per message and key instead of one per event, and the
            // reception is where a search by patient or order starts.
            let mut parsed = ev.clone();
            parsed.kind = EventKind::Parsed;
            parsed.keys = IndexKeys::default();
            self.append(tx, chain, &parsed)?;
            if let Some(key) = &m.dedup_key {
                let seen: Option<(i64, i64)> = tx
                    .prepare_cached("SELECT message_id, first_seen FROM dedup WHERE key = ?1")
                    .and_then(|mut st| st.query_row([key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(Error::store)?;
                if let Some((original, first_seen)) = seen {
                    if now - first_seen < self.window_ms {
                        let mut dup = ev.clone();
                        dup.kind = EventKind::Duplicate;
                        dup.keys = IndexKeys::default();
                        dup.message_id = Some(original);
                        dup.outcome = "not queued".into();
                        dup.detail = format!("duplicate of m={original}");
                        self.append(tx, chain, &dup)?;
                        report.duplicates.push(Duplicate { key: key.clone(), original });
                        continue;
                    }
                }
            }
            tx.prepare_cached(
                "INSERT INTO messages(queue, connection, state, control_id, sender, name, size, content_hash,
                                      created_at, updated_at)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    batch.queue,
                    batch.connection,
                    m.control_id,
                    m.sender,
                    m.name,
                    m.bytes.len() as i64,
                    hash,
                    now
                ])
            })
            .map_err(Error::store)?;
            let id = tx.last_insert_rowid();
            tx.prepare_cached("INSERT INTO bodies(id, bytes) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![id, &m.bytes[..]]))
                .map_err(Error::store)?;
            if let Some(key) = &m.dedup_key {
                tx.prepare_cached("INSERT OR REPLACE INTO dedup(key, message_id, first_seen) VALUES (?1, ?2, ?3)")
                    .and_then(|mut st| st.execute(params![key, id, now]))
                    .map_err(Error::store)?;
            }
            let mut queued = ev;
            queued.kind = EventKind::Queued;
            queued.keys = IndexKeys::default();
            queued.message_id = Some(id);
            queued.detail = format!("queue={}", batch.queue);
            self.append(tx, chain, &queued)?;
            report.queued.push(id);
        }
        Ok(report)
    }

    fn delivered_tx(&self, tx: &Transaction<'_>, chain: &mut Chain, id: MessageId, outcome: &str) -> Result<(), Error> {
        let row: Option<(String, Option<String>, i64, String)> = tx
            .prepare_cached(
                "UPDATE messages SET state = 'delivered', updated_at = ?2 WHERE id = ?1 AND state = 'queued'
                 RETURNING queue, control_id, size, content_hash",
            )
            .and_then(|mut st| {
                st.query_row(params![id, self.clock.now_millis()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()
            })
            .map_err(Error::store)?;
        let (queue, control_id, len, hash) = row.ok_or_else(|| not_found("queued message", id))?;
        let mut ev = NewEvent::new(EventKind::Acknowledged, queue, Direction::Out).message(id).outcome(outcome);
        ev.control_id = control_id;
        ev.byte_count = Some(len as u64);
        ev.content_hash = Some(hash);
        self.append(tx, chain, &ev)?;
        Ok(())
    }

    fn quarantine_rejected(
        &self,
        tx: &Transaction<'_>,
        chain: &mut Chain,
        connection: &str,
        r: &Rejected,
    ) -> Result<i64, Error> {
        let now = self.clock.now_millis();
        let hash = content_hash(&r.bytes);
        let mut ev = NewEvent::new(EventKind::Received, connection, Direction::In);
        ev.control_id = r.control_id.clone();
        ev.byte_count = Some(r.bytes.len() as u64);
        ev.content_hash = Some(hash.clone());
        self.append(tx, chain, &ev)?;
        if r.dedup {
            let seen: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM quarantine WHERE content_hash = ?1 AND connection = ?2 AND created_at > ?3
                     ORDER BY id LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_row(params![hash, connection, now - self.window_ms], |r| r.get(0)).optional()
                })
                .map_err(Error::store)?;
            if let Some(qid) = seen {
                let mut dup = ev;
                dup.kind = EventKind::Duplicate;
                dup.outcome = "not quarantined again".into();
                dup.detail = format!("duplicate of q={qid}");
                self.append(tx, chain, &dup)?;
                return Ok(qid);
            }
        }
        tx.execute(
            "INSERT INTO quarantine(connection, control_id, reason, offset, path, name, bytes, created_at, content_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                connection,
                r.control_id,
                r.reason,
                r.offset.map(|o| o as i64),
                r.path,
                r.name,
                &r.bytes[..],
                now,
                hash
            ],
        )
        .map_err(Error::store)?;
        let qid = tx.last_insert_rowid();
        let mut ev = ev.clone();
        ev.kind = EventKind::Quarantined;
        ev.outcome = "invalid".into();
        ev.detail = format!("q={qid} {}", r.reason);
        self.append(tx, chain, &ev)?;
        Ok(qid)
    }
}

/// Stores from before kept a message's bytes in its `messages` row. They
/// now live in `bodies`, written once: the row that changes with each
/// attempt and at delivery is small, so changing it rewrites a small page
/// share instead of a page holding the whole message (half the bytes
/// written per message, measured by `benches/throughput.rs`).
fn migrate_bodies(conn: &Connection) -> Result<(), Error> {
    let has_bytes: bool = conn
        .query_row("SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'bytes'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(Error::store)?
        > 0;
    if has_bytes {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS bodies(id INTEGER PRIMARY KEY, bytes BLOB NOT NULL);
             INSERT OR IGNORE INTO bodies(id, bytes) SELECT id, bytes FROM messages;
             ALTER TABLE messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
             UPDATE messages SET size = length(bytes);
             ALTER TABLE messages DROP COLUMN bytes;
             COMMIT;",
        )
        .map_err(Error::store)?;
    }
    Ok(())
}

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    let kind: String = r.get(2)?;
    let dir: String = r.get(4)?;
    Ok(AuditEvent {
        seq: r.get::<_, i64>(0)? as u64,
        at: r.get(1)?,
        kind: kind.parse().unwrap_or(EventKind::Failed),
        connection: r.get(3)?,
        direction: if dir == "in" { Direction::In } else { Direction::Out },
        message_id: r.get(5)?,
        control_id: r.get(6)?,
        outcome: r.get(7)?,
        byte_count: r.get::<_, Option<i64>>(8)?.map(|b| b as u64),
        content_hash: r.get(9)?,
        patient: r.get(10)?,
        placer: r.get(11)?,
        filler: r.get(12)?,
        detail: r.get(13)?,
        prev_hash: r.get(14)?,
        hash: r.get(15)?,
    })
}

const EVENT_COLUMNS: &str = "seq, at, kind, connection, direction, message_id, control_id, outcome, byte_count,
    content_hash, patient, placer, filler, detail, prev_hash, hash";

fn row_quarantine(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineEntry> {
    Ok(QuarantineEntry {
        id: r.get(0)?,
        connection: r.get(1)?,
        message_id: r.get(2)?,
        control_id: r.get(3)?,
        reason: r.get(4)?,
        offset: r.get::<_, Option<i64>>(5)?.map(|o| o as u64),
        path: r.get(6)?,
        bytes: Bytes::from(r.get::<_, Vec<u8>>(7)?),
        created_at: r.get(8)?,
        released: r.get::<_, Option<i64>>(9)?.is_some(),
    })
}

const QUARANTINE_COLUMNS: &str =
    "id, connection, message_id, control_id, reason, offset, path, bytes, created_at, released_at";

impl Store for SqliteStore {
    fn ingest(&self, batch: &Batch) -> Result<IngestReport, Error> {
        Ok(self.ingest_many(std::slice::from_ref(batch))?.remove(0))
    }

    fn ingest_many(&self, batches: &[Batch]) -> Result<Vec<IngestReport>, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        let reports = batches.iter().map(|b| self.ingest_tx(&tx, &mut chain, b)).collect::<Result<Vec<_>, _>>()?;
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)?;
        Ok(reports)
    }

    fn record_many(&self, events: &[NewEvent]) -> Result<u64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        let mut last = chain.seq as u64;
        for e in events {
            last = self.append(&tx, &mut chain, e)?;
        }
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)?;
        Ok(last)
    }

    fn mark_delivered_many(&self, done: &[(MessageId, String)]) -> Result<(), Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        for (id, outcome) in done {
            self.delivered_tx(&tx, &mut chain, *id, outcome)?;
        }
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)
    }

    fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Queued>, Error> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT m.id, m.connection, m.control_id, m.sender, m.name, b.bytes, m.attempts
                 FROM messages m JOIN bodies b ON b.id = m.id
                 WHERE m.queue = ?1 AND m.state = 'queued' ORDER BY m.id LIMIT ?2",
            )
            .map_err(Error::store)?;
        let rows = stmt
            .query_map(params![queue, limit as i64], |r| {
                let id: i64 = r.get(0)?;
                let meta = Meta {
                    connection: queue.to_owned(),
                    name: r.get(4)?,
                    control_id: r.get(2)?,
                    sender: r.get(3)?,
                    peer: Some(r.get::<_, String>(1)?),
                };
                let item = Item { id: id.to_string(), bytes: Bytes::from(r.get::<_, Vec<u8>>(5)?), meta };
                Ok(Queued { id, item, attempts: r.get::<_, i64>(6)? as u32 })
            })
            .map_err(Error::store)?;
        rows.collect::<Result<_, _>>().map_err(Error::store)
    }

    fn depth(&self, queue: &str) -> Result<(u64, Option<i64>), Error> {
        let conn = self.lock();
        let (n, oldest): (i64, Option<i64>) = conn
            .query_row(
                "SELECT COUNT(*), MIN(created_at) FROM messages WHERE queue = ?1 AND state = 'queued'",
                [queue],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(Error::store)?;
        Ok((n as u64, oldest.map(|o| self.clock.now_millis() - o)))
    }

    fn queue_of(&self, id: MessageId) -> Result<Option<String>, Error> {
        let conn = self.lock();
        conn.query_row("SELECT queue FROM messages WHERE id = ?1 AND state = 'queued'", [id], |r| r.get(0))
            .optional()
            .map_err(Error::store)
    }

    fn mark_delivered(&self, id: MessageId, outcome: &str) -> Result<(), Error> {
        self.mark_delivered_many(&[(id, outcome.to_owned())])
    }

    fn record_failure(&self, id: MessageId, reason: &str) -> Result<u32, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        let row: Option<(String, Option<String>, i64)> = tx
            .query_row(
                "UPDATE messages SET attempts = attempts + 1, updated_at = ?2 WHERE id = ?1
                 RETURNING queue, control_id, attempts",
                params![id, self.clock.now_millis()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(Error::store)?;
        let (queue, control_id, attempts) = row.ok_or_else(|| not_found("message", id))?;
        let mut ev = NewEvent::new(EventKind::Failed, queue, Direction::Out)
            .message(id)
            .outcome("failed")
            .detail(format!("attempt {attempts}: {reason}"));
        ev.control_id = control_id;
        self.append(&tx, &mut chain, &ev)?;
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)?;
        Ok(attempts as u32)
    }

    fn quarantine_message(&self, id: MessageId, reason: &str) -> Result<i64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        type Row = (String, Option<String>, Option<String>, Vec<u8>);
        let row: Option<Row> = tx
            .query_row(
                "SELECT m.queue, m.control_id, m.name, b.bytes FROM messages m JOIN bodies b ON b.id = m.id
                 WHERE m.id = ?1 AND m.state = 'queued'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(Error::store)?;
        let (queue, control_id, name, bytes) = row.ok_or_else(|| not_found("queued message", id))?;
        let now = self.clock.now_millis();
        tx.execute("UPDATE messages SET state = 'quarantined', updated_at = ?2 WHERE id = ?1", params![id, now])
            .map_err(Error::store)?;
        tx.execute(
            "INSERT INTO quarantine(connection, message_id, control_id, reason, name, bytes, created_at, content_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![queue, id, control_id, reason, name, bytes, now, content_hash(&bytes)],
        )
        .map_err(Error::store)?;
        let qid = tx.last_insert_rowid();
        let mut ev = NewEvent::new(EventKind::Quarantined, queue, Direction::Out)
            .message(id)
            .outcome("quarantined")
            .detail(format!("q={qid} {reason}"));
        ev.control_id = control_id;
        ev.byte_count = Some(bytes.len() as u64);
        ev.content_hash = Some(content_hash(&bytes));
        self.append(&tx, &mut chain, &ev)?;
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)?;
        Ok(qid)
    }

    fn quarantined(&self, include_released: bool) -> Result<Vec<QuarantineEntry>, Error> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantine {} ORDER BY id",
            if include_released { "" } else { "WHERE released_at IS NULL" }
        );
        let mut stmt = conn.prepare(&sql).map_err(Error::store)?;
        let rows = stmt.query_map([], row_quarantine).map_err(Error::store)?;
        rows.collect::<Result<_, _>>().map_err(Error::store)
    }

    fn quarantine_entry(&self, id: i64) -> Result<QuarantineEntry, Error> {
        let conn = self.lock();
        conn.query_row(&format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?1"), [id], row_quarantine)
            .optional()
            .map_err(Error::store)?
            .ok_or_else(|| not_found("quarantine entry", id))
    }

    fn release(&self, id: i64, queue: &str, fixed: Option<&[u8]>) -> Result<MessageId, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        let entry = tx
            .query_row(
                &format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?1 AND released_at IS NULL"),
                [id],
                row_quarantine,
            )
            .optional()
            .map_err(Error::store)?
            .ok_or_else(|| not_found("quarantine entry", id))?;
        let now = self.clock.now_millis();
        let bytes = fixed.map(Bytes::copy_from_slice).unwrap_or(entry.bytes.clone());
        let hash = content_hash(&bytes);
        let control_id = match fixed {
            Some(b) => hl7_core::Message::parse(b).ok().and_then(|m| m.control_id().map(|c| c.into_owned())),
            None => entry.control_id.clone(),
        };
        let message_id = match (entry.message_id, fixed) {
            (Some(mid), None) => {
                tx.execute(
                    "UPDATE messages SET state = 'queued', queue = ?2, attempts = 0, updated_at = ?3 WHERE id = ?1",
                    params![mid, queue, now],
                )
                .map_err(Error::store)?;
                mid
            }
            _ => {
                tx.execute(
                    "INSERT INTO messages(queue, connection, state, control_id, size, content_hash, created_at,
                                          updated_at)
                     VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6)",
                    params![queue, entry.connection, control_id, bytes.len() as i64, hash, now],
                )
                .map_err(Error::store)?;
                let mid = tx.last_insert_rowid();
                tx.execute("INSERT INTO bodies(id, bytes) VALUES (?1, ?2)", params![mid, &bytes[..]])
                    .map_err(Error::store)?;
                mid
            }
        };
        tx.execute("UPDATE quarantine SET released_at = ?2 WHERE id = ?1", params![id, now]).map_err(Error::store)?;
        let mut ev = NewEvent::new(EventKind::Released, queue, Direction::Out)
            .message(message_id)
            .detail(format!("q={id}{}", if fixed.is_some() { " fixed" } else { "" }));
        ev.control_id = control_id;
        ev.byte_count = Some(bytes.len() as u64);
        ev.content_hash = Some(hash);
        self.append(&tx, &mut chain, &ev)?;
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)?;
        Ok(message_id)
    }

    fn record(&self, event: &NewEvent) -> Result<u64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let mut chain = self.chain(&tx)?;
        let seq = self.append(&tx, &mut chain, event)?;
        self.seal(&tx, chain)?;
        tx.commit().map_err(Error::store)?;
        Ok(seq)
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, Error> {
        use rusqlite::types::Value;
        let mut clauses = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let mut add = |clause: &str, v: Value| {
            args.push(v);
            clauses.push(format!("{clause} ?{}", args.len()));
        };
        if let Some(m) = q.message_id {
            add("message_id =", Value::Integer(m));
        }
        if let Some(c) = &q.control_id {
            add("control_id =", Value::Text(c.clone()));
        }
        if let Some(c) = &q.connection {
            add("connection =", Value::Text(c.clone()));
        }
        if let Some(m) = &q.patient_mrn {
            add("patient =", Value::Text(self.patient_hash(m)));
        }
        if let Some(p) = &q.placer {
            add("placer =", Value::Text(p.clone()));
        }
        if let Some(f) = &q.filler {
            add("filler =", Value::Text(f.clone()));
        }
        if let Some(k) = q.kind {
            add("kind =", Value::Text(k.as_str().to_owned()));
        }
        if let Some(f) = q.from {
            add("at >=", Value::Integer(f));
        }
        if let Some(t) = q.to {
            add("at <", Value::Integer(t));
        }
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let conn = self.lock();
        let mut stmt =
            conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM audit {filter} ORDER BY seq")).map_err(Error::store)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), row_event).map_err(Error::store)?;
        rows.collect::<Result<_, _>>().map_err(Error::store)
    }

    fn verify_audit(&self) -> Result<u64, Error> {
        let conn = self.lock();
        let tampered = |what: String| Error::new(ErrorKind::Tampered, what);
        // The checkpoints chain among themselves; the latest is where the
        // events' chain starts.
        let mut start = (0i64, GENESIS.to_owned());
        {
            let mut stmt = conn
                .prepare(
                    "SELECT id, seq, hash, event_at, pruned, at, prev, self_hash FROM audit_checkpoints ORDER BY id",
                )
                .map_err(Error::store)?;
            let mut rows = stmt.query([]).map_err(Error::store)?;
            let mut prev = GENESIS.to_owned();
            while let Some(r) = rows.next().map_err(Error::store)? {
                let id: i64 = r.get(0).map_err(Error::store)?;
                let seq: i64 = r.get(1).map_err(Error::store)?;
                let hash: String = r.get(2).map_err(Error::store)?;
                let fields = (r.get(3), r.get(4), r.get(5), r.get::<_, String>(6), r.get::<_, String>(7));
                let (event_at, pruned, at, cp_prev, self_hash): (i64, i64, i64, String, String) = match fields {
                    (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
                    _ => return Err(tampered(format!("audit checkpoint {id} does not verify"))),
                };
                if cp_prev != prev
                    || seq <= start.0
                    || checkpoint_hash(&prev, seq, &hash, event_at, pruned, at) != self_hash
                {
                    return Err(tampered(format!("audit checkpoint {id} does not verify")));
                }
                prev = self_hash;
                start = (seq, hash);
            }
        }
        let mut stmt = conn
            .prepare(&format!("SELECT {EVENT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq"))
            .map_err(Error::store)?;
        let rows = stmt.query_map([start.0], row_event).map_err(Error::store)?;
        let (mut last, mut prev) = start;
        let mut n = 0u64;
        for row in rows {
            let ev = row.map_err(Error::store)?;
            n += 1;
            if ev.seq as i64 != last + 1 {
                return Err(tampered(format!("audit event {} is missing", last + 1)));
            }
            if ev.prev_hash != prev || chain_hash(&ev) != ev.hash {
                return Err(tampered(format!("audit event {} does not verify", ev.seq)));
            }
            last = ev.seq as i64;
            prev = ev.hash;
        }
        let head: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'audit_head'", [], |r| r.get(0))
            .optional()
            .map_err(Error::store)?;
        let expected = head.map(|h| String::from_utf8_lossy(&h).into_owned());
        if (last > 0 || expected.is_some()) && expected.as_deref() != Some(format!("{last} {prev}").as_str()) {
            return Err(tampered(format!("audit trail ends at event {last}, not at its head")));
        }
        Ok(n)
    }

    fn snapshot(&self, window: std::time::Duration) -> Result<Snapshot, Error> {
        let conn = self.lock();
        let now = self.clock.now_millis();
        let window_ms = window.as_millis() as i64;
        let mut snap = Snapshot { at: now, window_ms, ..Snapshot::default() };
        let mut stmt =
            conn.prepare_cached("SELECT connection, kind, n, last_at FROM counters").map_err(Error::store)?;
        let mut rows = stmt.query([]).map_err(Error::store)?;
        while let Some(r) = rows.next().map_err(Error::store)? {
            let conn_name: String = r.get(0).map_err(Error::store)?;
            let kind: String = r.get(1).map_err(Error::store)?;
            let n: i64 = r.get(2).map_err(Error::store)?;
            let last: i64 = r.get(3).map_err(Error::store)?;
            let c = snap.connections.entry(conn_name).or_default();
            let n = n as u64;
            match kind.parse::<EventKind>() {
                Ok(EventKind::Received) => (c.messages_in, c.last_in) = (n, Some(last)),
                Ok(EventKind::Acknowledged) => (c.messages_out, c.last_success) = (n, Some(last)),
                Ok(EventKind::Failed) => c.failures = n,
                Ok(EventKind::Retried) => c.retries = n,
                Ok(EventKind::Quarantined) => c.quarantined = n,
                Ok(EventKind::Duplicate) => c.duplicates = n,
                _ => {}
            }
        }
        drop(rows);
        let mut stmt = conn
            .prepare_cached(
                "SELECT connection, kind, COUNT(*) FROM audit
                 WHERE at >= ?1 AND kind IN ('failed', 'retried', 'acknowledged') GROUP BY connection, kind",
            )
            .map_err(Error::store)?;
        let mut rows = stmt.query([now - window_ms]).map_err(Error::store)?;
        while let Some(r) = rows.next().map_err(Error::store)? {
            let conn_name: String = r.get(0).map_err(Error::store)?;
            let kind: String = r.get(1).map_err(Error::store)?;
            let n: i64 = r.get(2).map_err(Error::store)?;
            let c = snap.connections.entry(conn_name).or_default();
            if kind == "acknowledged" {
                c.window_successes += n as u64;
            } else {
                c.window_failures += n as u64;
            }
        }
        drop(rows);
        let mut stmt = conn
            .prepare_cached(
                "SELECT queue, COUNT(*), MIN(created_at) FROM messages WHERE state = 'queued' GROUP BY queue",
            )
            .map_err(Error::store)?;
        let mut rows = stmt.query([]).map_err(Error::store)?;
        while let Some(r) = rows.next().map_err(Error::store)? {
            let queue: String = r.get(0).map_err(Error::store)?;
            let n: i64 = r.get(1).map_err(Error::store)?;
            let oldest: i64 = r.get(2).map_err(Error::store)?;
            snap.queues.insert(queue, QueueStats { depth: n as u64, oldest_age_ms: (now - oldest).max(0) });
        }
        drop(rows);
        snap.quarantine_waiting = conn
            .query_row("SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL", [], |r| r.get::<_, i64>(0))
            .map_err(Error::store)? as u64;
        Ok(snap)
    }

    fn prune(&self, policy: &Retention) -> Result<PruneReport, Error> {
        let chunk = policy.chunk_size() as i64;
        let now = self.clock.now_millis();
        let cutoff = policy.age().map(|a| now - a.as_millis() as i64);
        let mut report = PruneReport::default();
        // One short transaction per chunk: other writers wait at most one
        // chunk, and the write-ahead log stays small.
        let mut chunked = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<u64, Error> {
            let mut total = 0u64;
            loop {
                let mut conn = self.lock();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::store)?;
                let n = tx.execute(sql, args).map_err(Error::store)? as u64;
                tx.commit().map_err(Error::store)?;
                report.chunks += u64::from(n > 0);
                total += n;
                if n < chunk as u64 {
                    return Ok(total);
                }
            }
        };
        // Finished messages: delivered, or quarantined with no entry waiting
        // (the quarantine keeps its own copy of the bytes).
        let finished = "(state = 'delivered' OR (state = 'quarantined' AND NOT EXISTS
            (SELECT 1 FROM quarantine q WHERE q.message_id = messages.id AND q.released_at IS NULL)))";
        if let Some(cut) = cutoff {
            report.messages += chunked(
                &format!(
                    "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE {finished} AND updated_at < ?1
                     ORDER BY id LIMIT ?2)"
                ),
                &[&cut, &chunk],
            )?;
            report.quarantine += chunked(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE released_at < ?1
                 ORDER BY id LIMIT ?2)",
                &[&cut, &chunk],
            )?;
        }
        if let Some(keep) = policy.messages() {
            let keep = keep as i64;
            report.messages += chunked(
                &format!(
                    "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE {finished} AND id <
                       (SELECT COALESCE(MIN(id), 9223372036854775807) FROM (SELECT id FROM messages WHERE {finished}
                        ORDER BY id DESC LIMIT ?1))
                     ORDER BY id LIMIT ?2)"
                ),
                &[&keep, &chunk],
            )?;
        }
        // De-duplication keys outside the window mean nothing any more.
        let expired = now - self.window_ms;
        report.dedup_keys += chunked(
            "DELETE FROM dedup WHERE key IN (SELECT key FROM dedup WHERE first_seen < ?1 LIMIT ?2)",
            &[&expired, &chunk],
        )?;
        // Audit events: up to a bound, never into the trail of a message
        // still queued (events are in time order, so everything before the
        // oldest queued message's arrival is someone else's).
        loop {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::store)?;
            let first: Option<i64> =
                tx.query_row("SELECT MIN(seq) FROM audit", [], |r| r.get(0)).map_err(Error::store)?;
            let Some(first) = first else { break };
            let (last_seq, count): (i64, i64) = tx
                .query_row("SELECT MAX(seq), COUNT(*) FROM audit", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(Error::store)?;
            let mut bound = first - 1; // remove seq <= bound
            if let Some(cut) = cutoff {
                let by_age: Option<i64> = tx
                    .query_row("SELECT MAX(seq) FROM audit WHERE at < ?1", [cut], |r| r.get(0))
                    .map_err(Error::store)?;
                bound = bound.max(by_age.unwrap_or(0));
            }
            if let Some(keep) = policy.events() {
                if count as u64 > keep {
                    bound = bound.max(last_seq - keep as i64);
                }
            }
            let oldest_queued: Option<i64> = tx
                .query_row("SELECT MIN(created_at) FROM messages WHERE state = 'queued'", [], |r| r.get(0))
                .map_err(Error::store)?;
            if let Some(oq) = oldest_queued {
                let protect: Option<i64> = tx
                    .query_row("SELECT MIN(seq) FROM audit WHERE at >= ?1", [oq], |r| r.get(0))
                    .map_err(Error::store)?;
                if let Some(p) = protect {
                    bound = bound.min(p - 1);
                }
            }
            let bound = bound.min(first + chunk - 1);
            if bound < first {
                break;
            }
            let (hash, event_at): (String, i64) = tx
                .query_row("SELECT hash, at FROM audit WHERE seq = ?1", [bound], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(Error::store)?;
            let prev: String = tx
                .query_row("SELECT self_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
                .optional()
                .map_err(Error::store)?
                .unwrap_or_else(|| GENESIS.to_owned());
            let pruned = tx.query_row("SELECT COUNT(*) FROM audit WHERE seq <= ?1", [bound], |r| r.get::<_, i64>(0));
            let pruned = pruned.map_err(Error::store)?;
            let self_hash = checkpoint_hash(&prev, bound, &hash, event_at, pruned, now);
            tx.execute(
                "INSERT INTO audit_checkpoints(seq, hash, event_at, pruned, at, prev, self_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![bound, hash, event_at, pruned, now, prev, self_hash],
            )
            .map_err(Error::store)?;
            let n = tx.execute("DELETE FROM audit WHERE seq <= ?1", [bound]).map_err(Error::store)? as u64;
            tx.commit().map_err(Error::store)?;
            report.events += n;
            report.chunks += 1;
            report.checkpoint = Some((bound as u64, hash));
        }
        Ok(report)
    }
}
