//! The embedded default store: one SQLite file in WAL mode with
//! `synchronous = FULL`, so a commit is on disk before anyone is told.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

use super::{
    Batch, Clock, Duplicate, Entry, IngestReport, MessageId, QuarantineEntry, Queued, Rejected, Store, StoreConfig,
};
use crate::audit::{AuditEvent, AuditQuery, Direction, EventKind, NewEvent};
use crate::item::{content_hash, hex, Item, Meta};
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
    bytes BLOB NOT NULL,
    content_hash TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages(queue, state, id);
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
    released_at INTEGER
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
CREATE INDEX IF NOT EXISTS audit_message ON audit(message_id);
CREATE INDEX IF NOT EXISTS audit_control ON audit(control_id);
CREATE INDEX IF NOT EXISTS audit_connection ON audit(connection, at);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_patient ON audit(patient);
CREATE INDEX IF NOT EXISTS audit_placer ON audit(placer);
CREATE INDEX IF NOT EXISTS audit_filler ON audit(filler);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
";

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
        conn.execute_batch(SCHEMA).map_err(Error::store)?;
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

    fn append(&self, tx: &Transaction<'_>, ev: &NewEvent) -> Result<u64, Error> {
        let prev: String = tx
            .query_row("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(Error::store)?
            .unwrap_or_else(|| GENESIS.to_owned());
        let patient = ev.keys.mrn.as_deref().map(|m| self.patient_hash(m));
        let mut stored = AuditEvent {
            seq: 0,
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
            prev_hash: prev,
            hash: String::new(),
        };
        let seq: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit", [], |r| r.get(0)).map_err(Error::store)?;
        stored.seq = seq as u64;
        stored.hash = chain_hash(&stored);
        tx.execute(
            "INSERT INTO audit(seq, at, kind, connection, direction, message_id, control_id, outcome, byte_count,
                               content_hash, patient, placer, filler, detail, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
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
            ],
        )
        .map_err(Error::store)?;
        // The head pointer catches a trail cut short at its end, which the
        // chain alone cannot.
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('audit_head', ?1)",
            [format!("{seq} {}", stored.hash).into_bytes()],
        )
        .map_err(Error::store)?;
        Ok(seq as u64)
    }

    fn quarantine_rejected(&self, tx: &Transaction<'_>, connection: &str, r: &Rejected) -> Result<i64, Error> {
        let now = self.clock.now_millis();
        tx.execute(
            "INSERT INTO quarantine(connection, control_id, reason, offset, path, name, bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![connection, r.control_id, r.reason, r.offset.map(|o| o as i64), r.path, r.name, &r.bytes[..], now],
        )
        .map_err(Error::store)?;
        let qid = tx.last_insert_rowid();
        let mut ev = NewEvent::new(EventKind::Received, connection, Direction::In);
        ev.control_id = r.control_id.clone();
        ev.byte_count = Some(r.bytes.len() as u64);
        ev.content_hash = Some(content_hash(&r.bytes));
        self.append(tx, &ev)?;
        let mut ev = ev.clone();
        ev.kind = EventKind::Quarantined;
        ev.outcome = "invalid".into();
        ev.detail = format!("q={qid} {}", r.reason);
        self.append(tx, &ev)?;
        Ok(qid)
    }
}

fn fresh_key() -> Vec<u8> {
    // No CSPRNG dependency: the key only needs to be unguessable from the
    // trail, and this mixes time, process id and an address.
    let mut h = Sha256::new();
    h.update(format!("{:?}", std::time::SystemTime::now()));
    h.update(std::process::id().to_le_bytes());
    let local = 0u8;
    h.update(format!("{:p}", &local));
    h.finalize().to_vec()
}

fn chain_hash(e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let fields = [
        e.prev_hash.clone(),
        e.seq.to_string(),
        e.at.to_string(),
        e.kind.as_str().to_owned(),
        e.connection.clone(),
        e.direction.as_str().to_owned(),
        e.message_id.map(|m| m.to_string()).unwrap_or_default(),
        opt(&e.control_id),
        e.outcome.clone(),
        e.byte_count.map(|b| b.to_string()).unwrap_or_default(),
        opt(&e.content_hash),
        opt(&e.patient),
        opt(&e.placer),
        opt(&e.filler),
        e.detail.clone(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    hex(&h.finalize())
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

fn not_found(what: &str, id: i64) -> Error {
    Error::new(ErrorKind::NotFound, format!("no {what} {id}"))
}

impl Store for SqliteStore {
    fn ingest(&self, batch: &Batch) -> Result<IngestReport, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let now = self.clock.now_millis();
        let mut report = IngestReport::default();
        for entry in &batch.entries {
            let m = match entry {
                Entry::Invalid(r) => {
                    report.quarantined.push(self.quarantine_rejected(&tx, &batch.connection, r)?);
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
            self.append(&tx, &ev)?;
            let mut parsed = ev.clone();
            parsed.kind = EventKind::Parsed;
            self.append(&tx, &parsed)?;
            if let Some(key) = &m.dedup_key {
                let seen: Option<(i64, i64)> = tx
                    .query_row("SELECT message_id, first_seen FROM dedup WHERE key = ?1", [key], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .map_err(Error::store)?;
                if let Some((original, first_seen)) = seen {
                    if now - first_seen < self.window_ms {
                        let mut dup = ev.clone();
                        dup.kind = EventKind::Duplicate;
                        dup.message_id = Some(original);
                        dup.outcome = "not queued".into();
                        dup.detail = format!("duplicate of m={original}");
                        self.append(&tx, &dup)?;
                        report.duplicates.push(Duplicate { key: key.clone(), original });
                        continue;
                    }
                }
            }
            tx.execute(
                "INSERT INTO messages(queue, connection, state, control_id, sender, name, bytes, content_hash,
                                      created_at, updated_at)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![batch.queue, batch.connection, m.control_id, m.sender, m.name, &m.bytes[..], hash, now],
            )
            .map_err(Error::store)?;
            let id = tx.last_insert_rowid();
            if let Some(key) = &m.dedup_key {
                tx.execute(
                    "INSERT OR REPLACE INTO dedup(key, message_id, first_seen) VALUES (?1, ?2, ?3)",
                    params![key, id, now],
                )
                .map_err(Error::store)?;
            }
            let mut queued = ev;
            queued.kind = EventKind::Queued;
            queued.message_id = Some(id);
            queued.detail = format!("queue={}", batch.queue);
            self.append(&tx, &queued)?;
            report.queued.push(id);
        }
        tx.commit().map_err(Error::store)?;
        Ok(report)
    }

    fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Queued>, Error> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, connection, control_id, sender, name, bytes, attempts FROM messages
                 WHERE queue = ?1 AND state = 'queued' ORDER BY id LIMIT ?2",
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
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let row: Option<(String, Option<String>, i64, String)> = tx
            .query_row(
                "SELECT queue, control_id, length(bytes), content_hash FROM messages WHERE id = ?1 AND state = 'queued'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(Error::store)?;
        let (queue, control_id, len, hash) = row.ok_or_else(|| not_found("queued message", id))?;
        tx.execute(
            "UPDATE messages SET state = 'delivered', updated_at = ?2 WHERE id = ?1",
            params![id, self.clock.now_millis()],
        )
        .map_err(Error::store)?;
        let mut ev = NewEvent::new(EventKind::Acknowledged, queue, Direction::Out).message(id).outcome(outcome);
        ev.control_id = control_id;
        ev.byte_count = Some(len as u64);
        ev.content_hash = Some(hash);
        self.append(&tx, &ev)?;
        tx.commit().map_err(Error::store)
    }

    fn record_failure(&self, id: MessageId, reason: &str) -> Result<u32, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
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
        self.append(&tx, &ev)?;
        tx.commit().map_err(Error::store)?;
        Ok(attempts as u32)
    }

    fn quarantine_message(&self, id: MessageId, reason: &str) -> Result<i64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        type Row = (String, Option<String>, Option<String>, Vec<u8>);
        let row: Option<Row> = tx
            .query_row(
                "SELECT queue, control_id, name, bytes FROM messages WHERE id = ?1 AND state = 'queued'",
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
            "INSERT INTO quarantine(connection, message_id, control_id, reason, name, bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![queue, id, control_id, reason, name, bytes, now],
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
        self.append(&tx, &ev)?;
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
                    "INSERT INTO messages(queue, connection, state, control_id, bytes, content_hash, created_at,
                                          updated_at)
                     VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6)",
                    params![queue, entry.connection, control_id, &bytes[..], hash, now],
                )
                .map_err(Error::store)?;
                tx.last_insert_rowid()
            }
        };
        tx.execute("UPDATE quarantine SET released_at = ?2 WHERE id = ?1", params![id, now]).map_err(Error::store)?;
        let mut ev = NewEvent::new(EventKind::Released, queue, Direction::Out)
            .message(message_id)
            .detail(format!("q={id}{}", if fixed.is_some() { " fixed" } else { "" }));
        ev.control_id = control_id;
        ev.byte_count = Some(bytes.len() as u64);
        ev.content_hash = Some(hash);
        self.append(&tx, &ev)?;
        tx.commit().map_err(Error::store)?;
        Ok(message_id)
    }

    fn record(&self, event: &NewEvent) -> Result<u64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::store)?;
        let seq = self.append(&tx, event)?;
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
        let mut stmt =
            conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM audit ORDER BY seq")).map_err(Error::store)?;
        let rows = stmt.query_map([], row_event).map_err(Error::store)?;
        let mut prev = GENESIS.to_owned();
        let mut n = 0u64;
        for row in rows {
            let ev = row.map_err(Error::store)?;
            n += 1;
            if ev.seq != n {
                return Err(Error::new(ErrorKind::Tampered, format!("audit event {n} is missing")));
            }
            if ev.prev_hash != prev || chain_hash(&ev) != ev.hash {
                return Err(Error::new(ErrorKind::Tampered, format!("audit event {} does not verify", ev.seq)));
            }
            prev = ev.hash;
        }
        let head: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'audit_head'", [], |r| r.get(0))
            .optional()
            .map_err(Error::store)?;
        let expected = head.map(|h| String::from_utf8_lossy(&h).into_owned());
        if (n > 0 || expected.is_some()) && expected.as_deref() != Some(format!("{n} {prev}").as_str()) {
            return Err(Error::new(ErrorKind::Tampered, format!("audit trail ends at event {n}, not at its head")));
        }
        Ok(n)
    }
}
