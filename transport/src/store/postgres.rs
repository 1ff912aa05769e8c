//! The scale-out store: PostgreSQL, shared by several engine processes.
//!
//! Why leases with `FOR UPDATE SKIP LOCKED`: [`Store::pending`] hands each
//! worker queued messages no other worker holds, without waiting on them:
//! the rows are marked leased (owner, until when) in the same statement
//! that skips the rows another transaction is marking. A worker that dies
//! leaves its lease to expire and another takes the messages over; the
//! delivery is then repeated with the same message id, which is what the
//! next hop de-duplicates on anyway. Order within a queue is kept per
//! worker, not across workers.
//!
//! Why one `audit_head` row locked by every appending transaction: the
//! audit trail is one hash chain, so its appends are serialized across all
//! processes. That row is the chain's tip and the head pointer
//! [`Store::verify_audit`] checks; it is also what limits how far more
//! workers help (see `scripts/transport-bench.sh`).
//!
//! Why a thread: the [`Store`] trait is synchronous and is called from
//! async code, and the `postgres` client drives its own runtime, which may
//! not be started from inside another. Each store owns one connection on
//! one thread; calls are sent to it and wait for the answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use postgres::{Client, NoTls, Row, Statement, Transaction};
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
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS messages(
    id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, connection TEXT NOT NULL, state TEXT NOT NULL,
    control_id TEXT, sender TEXT, name TEXT, size BIGINT NOT NULL, content_hash TEXT NOT NULL,
    attempts INT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    lease_owner TEXT, lease_until BIGINT);
CREATE INDEX IF NOT EXISTS messages_queue ON messages(queue, state, id);
CREATE INDEX IF NOT EXISTS messages_done ON messages(state, id);
CREATE TABLE IF NOT EXISTS bodies(id BIGINT PRIMARY KEY, bytes BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS dedup(key TEXT PRIMARY KEY, message_id BIGINT NOT NULL, first_seen BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS dedup_seen ON dedup(first_seen);
CREATE TABLE IF NOT EXISTS quarantine(
    id BIGSERIAL PRIMARY KEY, connection TEXT NOT NULL, message_id BIGINT, control_id TEXT, reason TEXT NOT NULL,
    \"offset\" BIGINT, path TEXT, name TEXT, bytes BYTEA NOT NULL, created_at BIGINT NOT NULL, released_at BIGINT,
    content_hash TEXT);
CREATE INDEX IF NOT EXISTS quarantine_hash ON quarantine(content_hash);
CREATE TABLE IF NOT EXISTS audit(
    seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, kind TEXT NOT NULL, connection TEXT NOT NULL,
    direction TEXT NOT NULL, message_id BIGINT, control_id TEXT, outcome TEXT NOT NULL, byte_count BIGINT,
    content_hash TEXT, patient TEXT, placer TEXT, filler TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_connection ON audit(connection, at);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_message ON audit(message_id) WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_control ON audit(control_id) WHERE control_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_patient ON audit(patient) WHERE patient IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_placer ON audit(placer) WHERE placer IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_filler ON audit(filler) WHERE filler IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit_head(id INT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_checkpoints(
    id BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL, event_at BIGINT NOT NULL,
    pruned BIGINT NOT NULL, at BIGINT NOT NULL, prev TEXT NOT NULL, self_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters(
    connection TEXT NOT NULL, kind TEXT NOT NULL, n BIGINT NOT NULL, last_at BIGINT NOT NULL,
    PRIMARY KEY(connection, kind));
CREATE OR REPLACE FUNCTION labbridge_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' OR OLD.seq > COALESCE((SELECT MAX(seq) FROM audit_checkpoints), 0) THEN
        RAISE EXCEPTION 'audit is append-only';
    END IF;
    RETURN OLD;
END $$;
CREATE OR REPLACE FUNCTION labbridge_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit checkpoints are append-only'; END $$;
DROP TRIGGER IF EXISTS audit_append_only ON audit;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION labbridge_audit_guard();
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints;
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION labbridge_append_only();
";

/// Bumped whenever [`SCHEMA`] changes.
const SCHEMA_VERSION: &[u8] = b"1";

fn pg(e: postgres::Error) -> Error {
    Error::new(ErrorKind::Store, format!("store: {e}")).with_source(e)
}

type Job = Box<dyn FnOnce(&mut Client, &Info) + Send>;

/// What every call needs besides the connection.
struct Info {
    key: Vec<u8>,
    window_ms: i64,
    clock: Arc<dyn Clock>,
    lease_ms: i64,
    owner: String,
    /// Prepared once per connection: a statement prepared anew costs a
    /// round trip of its own.
    statements: RefCell<HashMap<&'static str, Statement>>,
}

/// `sql` prepared on this connection (once).
fn prep(tx: &mut Transaction<'_>, i: &Info, sql: &'static str) -> Result<Statement, Error> {
    if let Some(s) = i.statements.borrow().get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql).map_err(pg)?;
    i.statements.borrow_mut().insert(sql, s.clone());
    Ok(s)
}

impl Info {
    fn patient_hash(&self, mrn: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(mrn.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// The PostgreSQL store: the same contract as
/// [`SqliteStore`](super::SqliteStore), for several processes sharing the
/// work (see the module docs).
///
/// # Examples
///
/// ```no_run
/// use transport::store::{PgStore, Store, StoreConfig};
///
/// let store = PgStore::connect("postgresql://labbridge@127.0.0.1:5432/labbridge", StoreConfig::default())?;
/// store.verify_audit()?;
/// # Ok::<(), transport::Error>(())
/// ```
pub struct PgStore {
    jobs: mpsc::Sender<Job>,
    owner: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("owner", &self.owner).finish_non_exhaustive()
    }
}

static STORES: AtomicU64 = AtomicU64::new(0);

impl PgStore {
    /// Connects to `url` (a `postgresql://` URL or key=value string),
    /// creating the schema if needed; leases last 60 seconds.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the schema not created.
    pub fn connect(url: &str, config: StoreConfig) -> Result<PgStore, Error> {
        PgStore::connect_with_lease(url, config, Duration::from_secs(60))
    }

    /// [`PgStore::connect`] with how long a worker holds the messages
    /// [`pending`](Store::pending) handed it before another may take them.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the schema not created.
    pub fn connect_with_lease(url: &str, config: StoreConfig, lease: Duration) -> Result<PgStore, Error> {
        let owner = format!("{}-{}", std::process::id(), STORES.fetch_add(1, Ordering::Relaxed));
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<(), Error>>(1);
        let url = url.to_owned();
        let who = owner.clone();
        std::thread::Builder::new()
            .name(format!("labbridge-pg-{owner}"))
            .spawn(move || {
                let setup = (|| -> Result<(Client, Info), Error> {
                    let mut client = Client::connect(&url, NoTls).map_err(|e| pg(e).with_peer(redact(&url)))?;
                    let mut tx = client.transaction().map_err(pg)?;
                    // One process creates the schema at a time.
                    tx.execute("SELECT pg_advisory_xact_lock(7212345)", &[]).map_err(pg)?;
                    // DDL only when the schema is missing or older: even
                    // `CREATE INDEX IF NOT EXISTS` locks its table, and would
                    // deadlock with workers already inside a transaction.
                    let has_meta: bool =
                        tx.query_one("SELECT to_regclass('meta') IS NOT NULL", &[]).map_err(pg)?.get(0);
                    let current = has_meta
                        && tx
                            .query_opt("SELECT 1 FROM meta WHERE key = 'schema' AND value = $1", &[&SCHEMA_VERSION])
                            .map_err(pg)?
                            .is_some();
                    if !current {
                        tx.batch_execute(SCHEMA).map_err(pg)?;
                        tx.execute(
                            "INSERT INTO meta(key, value) VALUES ('schema', $1)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            &[&SCHEMA_VERSION],
                        )
                        .map_err(pg)?;
                    }
                    tx.execute(
                        "INSERT INTO audit_head(id, seq, hash) VALUES (1, 0, $1) ON CONFLICT DO NOTHING",
                        &[&GENESIS],
                    )
                    .map_err(pg)?;
                    tx.execute(
                        "INSERT INTO meta(key, value) VALUES ('audit_key', $1) ON CONFLICT DO NOTHING",
                        &[&fresh_key()],
                    )
                    .map_err(pg)?;
                    let stored: Vec<u8> =
                        tx.query_one("SELECT value FROM meta WHERE key = 'audit_key'", &[]).map_err(pg)?.get(0);
                    tx.commit().map_err(pg)?;
                    let info = Info {
                        key: config.audit_key.clone().unwrap_or(stored),
                        window_ms: config.dedup_window.as_millis() as i64,
                        clock: config.clock.clone(),
                        lease_ms: lease.as_millis() as i64,
                        owner: who,
                        statements: RefCell::new(HashMap::new()),
                    };
                    Ok((client, info))
                })();
                let (mut client, info) = match setup {
                    Ok(ok) => {
                        let _ = ready_tx.send(Ok(()));
                        ok
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = inbox.recv() {
                    job(&mut client, &info);
                }
            })
            .map_err(|e| Error::io(e, "start the store thread"))?;
        ready.recv().map_err(|_| Error::new(ErrorKind::Store, "store thread ended"))??;
        Ok(PgStore { jobs, owner })
    }

    /// Who this store's leases are held as (process id and a counter).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &Info) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c, i| {
                let _ = tx.send(f(c, i));
            }))
            .map_err(|_| Error::new(ErrorKind::Store, "store thread ended"))?;
        rx.recv().map_err(|_| Error::new(ErrorKind::Store, "store thread ended"))?
    }

    /// Runs `f` in one transaction with the audit chain's tip locked.
    fn chained<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>, &Info, &mut Chain) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.call(move |c, i| {
            let mut tx = c.transaction().map_err(pg)?;
            let head = prep(&mut tx, i, "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")?;
            let row = tx.query_one(&head, &[]).map_err(pg)?;
            let mut chain = Chain { seq: row.get(0), hash: row.get(1), counts: HashMap::new(), events: Vec::new() };
            let out = f(&mut tx, i, &mut chain)?;
            seal(&mut tx, i, chain)?;
            tx.commit().map_err(pg)?;
            Ok(out)
        })
    }
}

/// Hides a password in a connection URL for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            let user = cred.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

struct Chain {
    seq: i64,
    hash: String,
    counts: HashMap<(String, &'static str), (i64, i64)>,
    /// Appended in this transaction, written in one statement by [`seal`]
    /// (nothing reads them back before the commit).
    events: Vec<AuditEvent>,
}

fn append(_tx: &mut Transaction<'_>, i: &Info, chain: &mut Chain, ev: &NewEvent) -> Result<u64, Error> {
    let mut stored = AuditEvent {
        seq: (chain.seq + 1) as u64,
        at: i.clock.now_millis(),
        kind: ev.kind,
        connection: ev.connection.clone(),
        direction: ev.direction,
        message_id: ev.message_id,
        control_id: ev.control_id.clone(),
        outcome: ev.outcome.clone(),
        byte_count: ev.byte_count,
        content_hash: ev.content_hash.clone(),
        patient: ev.keys.mrn.as_deref().map(|m| i.patient_hash(m)),
        placer: ev.keys.placer.clone(),
        filler: ev.keys.filler.clone(),
        detail: ev.detail.clone(),
        prev_hash: std::mem::take(&mut chain.hash),
        hash: String::new(),
    };
    stored.hash = chain_hash(&stored);
    let seq = chain.seq + 1;
    chain.seq = seq;
    chain.hash = stored.hash.clone();
    let c = chain.counts.entry((stored.connection.clone(), stored.kind.as_str())).or_insert((0, stored.at));
    c.0 += 1;
    c.1 = c.1.max(stored.at);
    chain.events.push(stored);
    Ok(seq as u64)
}

fn seal(tx: &mut Transaction<'_>, i: &Info, chain: Chain) -> Result<(), Error> {
    if chain.events.is_empty() {
        return Ok(());
    }
    let e = &chain.events;
    let col = |f: &dyn Fn(&AuditEvent) -> Option<String>| e.iter().map(f).collect::<Vec<Option<String>>>();
    let int = |f: &dyn Fn(&AuditEvent) -> Option<i64>| e.iter().map(f).collect::<Vec<Option<i64>>>();
    let insert = prep(
        tx,
        i,
        "INSERT INTO audit(seq, at, kind, connection, direction, message_id, control_id, outcome, byte_count,
                           content_hash, patient, placer, filler, detail, prev_hash, hash)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                              $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[],
                              $13::text[], $14::text[], $15::text[], $16::text[])",
    )?;
    tx.execute(
        &insert,
        &[
            &int(&|e| Some(e.seq as i64)),
            &int(&|e| Some(e.at)),
            &col(&|e| Some(e.kind.as_str().to_owned())),
            &col(&|e| Some(e.connection.clone())),
            &col(&|e| Some(e.direction.as_str().to_owned())),
            &int(&|e| e.message_id),
            &col(&|e| e.control_id.clone()),
            &col(&|e| Some(e.outcome.clone())),
            &int(&|e| e.byte_count.map(|b| b as i64)),
            &col(&|e| e.content_hash.clone()),
            &col(&|e| e.patient.clone()),
            &col(&|e| e.placer.clone()),
            &col(&|e| e.filler.clone()),
            &col(&|e| Some(e.detail.clone())),
            &col(&|e| Some(e.prev_hash.clone())),
            &col(&|e| Some(e.hash.clone())),
        ],
    )
    .map_err(pg)?;
    let head = prep(tx, i, "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")?;
    tx.execute(&head, &[&chain.seq, &chain.hash]).map_err(pg)?;
    let count = prep(
        tx,
        i,
        "INSERT INTO counters(connection, kind, n, last_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection, kind) DO UPDATE
         SET n = counters.n + excluded.n, last_at = GREATEST(counters.last_at, excluded.last_at)",
    )?;
    for ((connection, kind), (n, last)) in chain.counts {
        tx.execute(&count, &[&connection, &kind, &n, &last]).map_err(pg)?;
    }
    Ok(())
}

/// Everything several inbound items became, in one transaction and a
/// handful of round trips whatever their number: the de-duplication keys
/// are looked up at once, message ids drawn at once, and the messages,
/// bodies and keys written with one set-based statement each.
fn ingest_all(
    tx: &mut Transaction<'_>,
    i: &Info,
    chain: &mut Chain,
    batches: &[Batch],
) -> Result<Vec<IngestReport>, Error> {
    let now = i.clock.now_millis();
    let messages = || {
        batches.iter().flat_map(|b| b.entries.iter()).filter_map(|e| match e {
            Entry::Message(m) => Some(m),
            Entry::Invalid(_) => None,
        })
    };
    let keys: Vec<&str> = messages().filter_map(|m| m.dedup_key.as_deref()).collect();
    let mut seen: HashMap<String, (i64, i64)> = HashMap::new();
    if !keys.is_empty() {
        let select = prep(tx, i, "SELECT key, message_id, first_seen FROM dedup WHERE key = ANY($1)")?;
        for r in tx.query(&select, &[&keys]).map_err(pg)? {
            seen.insert(r.get(0), (r.get(1), r.get(2)));
        }
    }
    let count = messages().count() as i64;
    let mut ids = Vec::new();
    if count > 0 {
        let draw = prep(tx, i, "SELECT nextval('messages_id_seq') FROM generate_series(1, $1::bigint)")?;
        ids = tx.query(&draw, &[&count]).map_err(pg)?.iter().map(|r| r.get::<_, i64>(0)).collect();
    }
    let mut ids = ids.into_iter();
    #[derive(Default)]
    struct Rows<'a> {
        id: Vec<i64>,
        queue: Vec<&'a str>,
        connection: Vec<&'a str>,
        control_id: Vec<Option<&'a str>>,
        sender: Vec<Option<&'a str>>,
        name: Vec<Option<&'a str>>,
        size: Vec<i64>,
        hash: Vec<String>,
        bytes: Vec<&'a [u8]>,
    }
    let mut rows = Rows::default();
    let mut remember: HashMap<&str, i64> = HashMap::new();
    let mut reports = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut report = IngestReport::default();
        for entry in &batch.entries {
            let m = match entry {
                Entry::Invalid(r) => {
                    report.quarantined.push(quarantine_rejected(tx, i, chain, &batch.connection, r)?);
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
            append(tx, i, chain, &ev)?;
            ev.keys = IndexKeys::default();
            let mut parsed = ev.clone();
            parsed.kind = EventKind::Parsed;
            append(tx, i, chain, &parsed)?;
            let id = ids.next().ok_or_else(|| Error::new(ErrorKind::Store, "store: message ids ran out"))?;
            if let Some(key) = &m.dedup_key {
                if let Some(&(original, first_seen)) = seen.get(key) {
                    if now - first_seen < i.window_ms {
                        let mut dup = ev.clone();
                        dup.kind = EventKind::Duplicate;
                        dup.message_id = Some(original);
                        dup.outcome = "not queued".into();
                        dup.detail = format!("duplicate of m={original}");
                        append(tx, i, chain, &dup)?;
                        report.duplicates.push(Duplicate { key: key.clone(), original });
                        continue;
                    }
                }
                seen.insert(key.clone(), (id, now));
                remember.insert(key, id);
            }
            rows.id.push(id);
            rows.queue.push(&batch.queue);
            rows.connection.push(&batch.connection);
            rows.control_id.push(m.control_id.as_deref());
            rows.sender.push(m.sender.as_deref());
            rows.name.push(m.name.as_deref());
            rows.size.push(m.bytes.len() as i64);
            rows.hash.push(hash);
            rows.bytes.push(&m.bytes);
            let mut queued = ev;
            queued.kind = EventKind::Queued;
            queued.message_id = Some(id);
            queued.detail = format!("queue={}", batch.queue);
            append(tx, i, chain, &queued)?;
            report.queued.push(id);
        }
        reports.push(report);
    }
    if !rows.id.is_empty() {
        let insert = prep(
            tx,
            i,
            "INSERT INTO messages(id, queue, connection, state, control_id, sender, name, size, content_hash,
                                  created_at, updated_at)
             SELECT id, q, c, 'queued', cid, s, n, sz, h, $9, $9
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                         $8::text[]) AS u(id, q, c, cid, s, n, sz, h)",
        )?;
        tx.execute(
            &insert,
            &[
                &rows.id,
                &rows.queue,
                &rows.connection,
                &rows.control_id,
                &rows.sender,
                &rows.name,
                &rows.size,
                &rows.hash,
                &now,
            ],
        )
        .map_err(pg)?;
        let bodies = prep(tx, i, "INSERT INTO bodies(id, bytes) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])")?;
        tx.execute(&bodies, &[&rows.id, &rows.bytes]).map_err(pg)?;
    }
    if !remember.is_empty() {
        let (k, m): (Vec<&str>, Vec<i64>) = remember.into_iter().unzip();
        let upsert = prep(
            tx,
            i,
            "INSERT INTO dedup(key, message_id, first_seen) SELECT k, m, $3 FROM UNNEST($1::text[], $2::bigint[]) AS u(k, m)
             ON CONFLICT (key) DO UPDATE SET message_id = excluded.message_id, first_seen = excluded.first_seen",
        )?;
        tx.execute(&upsert, &[&k, &m, &now]).map_err(pg)?;
    }
    Ok(reports)
}

fn quarantine_rejected(
    tx: &mut Transaction<'_>,
    i: &Info,
    chain: &mut Chain,
    connection: &str,
    r: &Rejected,
) -> Result<i64, Error> {
    let now = i.clock.now_millis();
    let hash = content_hash(&r.bytes);
    let mut ev = NewEvent::new(EventKind::Received, connection, Direction::In);
    ev.control_id = r.control_id.clone();
    ev.byte_count = Some(r.bytes.len() as u64);
    ev.content_hash = Some(hash.clone());
    append(tx, i, chain, &ev)?;
    if r.dedup {
        let seen = tx
            .query_opt(
                "SELECT id FROM quarantine WHERE content_hash = $1 AND connection = $2 AND created_at > $3
                 ORDER BY id LIMIT 1",
                &[&hash, &connection, &(now - i.window_ms)],
            )
            .map_err(pg)?;
        if let Some(row) = seen {
            let qid: i64 = row.get(0);
            let mut dup = ev;
            dup.kind = EventKind::Duplicate;
            dup.outcome = "not quarantined again".into();
            dup.detail = format!("duplicate of q={qid}");
            append(tx, i, chain, &dup)?;
            return Ok(qid);
        }
    }
    let qid: i64 = tx
        .query_one(
            "INSERT INTO quarantine(connection, control_id, reason, \"offset\", path, name, bytes, created_at,
                                    content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &connection,
                &r.control_id,
                &r.reason,
                &r.offset.map(|o| o as i64),
                &r.path,
                &r.name,
                &&r.bytes[..],
                &now,
                &hash,
            ],
        )
        .map_err(pg)?
        .get(0);
    ev.kind = EventKind::Quarantined;
    ev.outcome = "invalid".into();
    ev.detail = format!("q={qid} {}", r.reason);
    append(tx, i, chain, &ev)?;
    Ok(qid)
}

fn delivered_tx(
    tx: &mut Transaction<'_>,
    i: &Info,
    chain: &mut Chain,
    id: MessageId,
    outcome: &str,
) -> Result<(), Error> {
    let update = prep(
        tx,
        i,
        "UPDATE messages SET state = 'delivered', updated_at = $2, lease_owner = NULL, lease_until = NULL
         WHERE id = $1 AND state = 'queued' RETURNING queue, control_id, size, content_hash",
    )?;
    let row = tx
        .query_opt(&update, &[&id, &i.clock.now_millis()])
        .map_err(pg)?
        .ok_or_else(|| not_found("queued message", id))?;
    let mut ev =
        NewEvent::new(EventKind::Acknowledged, row.get::<_, String>(0), Direction::Out).message(id).outcome(outcome);
    ev.control_id = row.get(1);
    ev.byte_count = Some(row.get::<_, i64>(2) as u64);
    ev.content_hash = Some(row.get(3));
    append(tx, i, chain, &ev)?;
    Ok(())
}

const EVENT_COLUMNS: &str = "seq, at, kind, connection, direction, message_id, control_id, outcome, byte_count,
    content_hash, patient, placer, filler, detail, prev_hash, hash";

fn row_event(r: &Row) -> AuditEvent {
    let kind: String = r.get(2);
    let dir: String = r.get(4);
    AuditEvent {
        seq: r.get::<_, i64>(0) as u64,
        at: r.get(1),
        kind: kind.parse().unwrap_or(EventKind::Failed),
        connection: r.get(3),
        direction: if dir == "in" { Direction::In } else { Direction::Out },
        message_id: r.get(5),
        control_id: r.get(6),
        outcome: r.get(7),
        byte_count: r.get::<_, Option<i64>>(8).map(|b| b as u64),
        content_hash: r.get(9),
        patient: r.get(10),
        placer: r.get(11),
        filler: r.get(12),
        detail: r.get(13),
        prev_hash: r.get(14),
        hash: r.get(15),
    }
}

const QUARANTINE_COLUMNS: &str =
    "id, connection, message_id, control_id, reason, \"offset\", path, bytes, created_at, released_at";

fn row_quarantine(r: &Row) -> QuarantineEntry {
    QuarantineEntry {
        id: r.get(0),
        connection: r.get(1),
        message_id: r.get(2),
        control_id: r.get(3),
        reason: r.get(4),
        offset: r.get::<_, Option<i64>>(5).map(|o| o as u64),
        path: r.get(6),
        bytes: Bytes::from(r.get::<_, Vec<u8>>(7)),
        created_at: r.get(8),
        released: r.get::<_, Option<i64>>(9).is_some(),
    }
}

impl Store for PgStore {
    fn ingest(&self, batch: &Batch) -> Result<IngestReport, Error> {
        Ok(self.ingest_many(std::slice::from_ref(batch))?.remove(0))
    }

    fn ingest_many(&self, batches: &[Batch]) -> Result<Vec<IngestReport>, Error> {
        let batches = batches.to_vec();
        self.chained(move |tx, i, chain| ingest_all(tx, i, chain, &batches))
    }

    fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Queued>, Error> {
        let queue = queue.to_owned();
        self.call(move |c, i| {
            let now = i.clock.now_millis();
            let rows = c
                .query(
                    "UPDATE messages m SET lease_owner = $3, lease_until = $4
                     FROM bodies b
                     WHERE b.id = m.id AND m.id IN (
                         SELECT id FROM messages
                         WHERE queue = $1 AND state = 'queued'
                           AND (lease_until IS NULL OR lease_until < $5 OR lease_owner = $3)
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
                     RETURNING m.id, m.connection, m.control_id, m.sender, m.name, b.bytes, m.attempts",
                    &[&queue, &(limit as i64), &i.owner, &(now + i.lease_ms), &now],
                )
                .map_err(pg)?;
            let mut out: Vec<Queued> = rows
                .iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    let meta = Meta {
                        connection: queue.clone(),
                        name: r.get(4),
                        control_id: r.get(2),
                        sender: r.get(3),
                        peer: Some(r.get::<_, String>(1)),
                    };
                    let item = Item { id: id.to_string(), bytes: Bytes::from(r.get::<_, Vec<u8>>(5)), meta };
                    Queued { id, item, attempts: r.get::<_, i32>(6) as u32 }
                })
                .collect();
            out.sort_by_key(|q| q.id);
            Ok(out)
        })
    }

    fn depth(&self, queue: &str) -> Result<(u64, Option<i64>), Error> {
        let queue = queue.to_owned();
        self.call(move |c, i| {
            let r = c
                .query_one(
                    "SELECT COUNT(*), MIN(created_at) FROM messages WHERE queue = $1 AND state = 'queued'",
                    &[&queue],
                )
                .map_err(pg)?;
            Ok((r.get::<_, i64>(0) as u64, r.get::<_, Option<i64>>(1).map(|o| i.clock.now_millis() - o)))
        })
    }

    fn queue_of(&self, id: MessageId) -> Result<Option<String>, Error> {
        self.call(move |c, _| {
            Ok(c.query_opt("SELECT queue FROM messages WHERE id = $1 AND state = 'queued'", &[&id])
                .map_err(pg)?
                .map(|r| r.get(0)))
        })
    }

    fn mark_delivered(&self, id: MessageId, outcome: &str) -> Result<(), Error> {
        self.mark_delivered_many(&[(id, outcome.to_owned())])
    }

    fn mark_delivered_many(&self, done: &[(MessageId, String)]) -> Result<(), Error> {
        let done = done.to_vec();
        self.chained(move |tx, i, chain| done.iter().try_for_each(|(id, o)| delivered_tx(tx, i, chain, *id, o)))
    }

    fn record_failure(&self, id: MessageId, reason: &str) -> Result<u32, Error> {
        let reason = reason.to_owned();
        self.chained(move |tx, i, chain| {
            let row = tx
                .query_opt(
                    "UPDATE messages SET attempts = attempts + 1, updated_at = $2 WHERE id = $1
                     RETURNING queue, control_id, attempts",
                    &[&id, &i.clock.now_millis()],
                )
                .map_err(pg)?
                .ok_or_else(|| not_found("message", id))?;
            let attempts: i32 = row.get(2);
            let mut ev = NewEvent::new(EventKind::Failed, row.get::<_, String>(0), Direction::Out)
                .message(id)
                .outcome("failed")
                .detail(format!("attempt {attempts}: {reason}"));
            ev.control_id = row.get(1);
            append(tx, i, chain, &ev)?;
            Ok(attempts as u32)
        })
    }

    fn quarantine_message(&self, id: MessageId, reason: &str) -> Result<i64, Error> {
        let reason = reason.to_owned();
        self.chained(move |tx, i, chain| {
            let row = tx
                .query_opt(
                    "SELECT m.queue, m.control_id, m.name, b.bytes FROM messages m JOIN bodies b ON b.id = m.id
                     WHERE m.id = $1 AND m.state = 'queued'",
                    &[&id],
                )
                .map_err(pg)?
                .ok_or_else(|| not_found("queued message", id))?;
            let (queue, control_id, name, bytes): (String, Option<String>, Option<String>, Vec<u8>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let now = i.clock.now_millis();
            tx.execute("UPDATE messages SET state = 'quarantined', updated_at = $2 WHERE id = $1", &[&id, &now])
                .map_err(pg)?;
            let qid: i64 = tx
                .query_one(
                    "INSERT INTO quarantine(connection, message_id, control_id, reason, name, bytes, created_at,
                                            content_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    &[&queue, &id, &control_id, &reason, &name, &bytes, &now, &content_hash(&bytes)],
                )
                .map_err(pg)?
                .get(0);
            let mut ev = NewEvent::new(EventKind::Quarantined, queue, Direction::Out)
                .message(id)
                .outcome("quarantined")
                .detail(format!("q={qid} {reason}"));
            ev.control_id = control_id;
            ev.byte_count = Some(bytes.len() as u64);
            ev.content_hash = Some(content_hash(&bytes));
            append(tx, i, chain, &ev)?;
            Ok(qid)
        })
    }

    fn quarantined(&self, include_released: bool) -> Result<Vec<QuarantineEntry>, Error> {
        self.call(move |c, _| {
            let filter = if include_released { "" } else { "WHERE released_at IS NULL" };
            let rows = c
                .query(&format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine {filter} ORDER BY id"), &[])
                .map_err(pg)?;
            Ok(rows.iter().map(row_quarantine).collect())
        })
    }

    fn quarantine_entry(&self, id: i64) -> Result<QuarantineEntry, Error> {
        self.call(move |c, _| {
            c.query_opt(&format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = $1"), &[&id])
                .map_err(pg)?
                .map(|r| row_quarantine(&r))
                .ok_or_else(|| not_found("quarantine entry", id))
        })
    }

    fn release(&self, id: i64, queue: &str, fixed: Option<&[u8]>) -> Result<MessageId, Error> {
        let (queue, fixed) = (queue.to_owned(), fixed.map(<[u8]>::to_vec));
        self.chained(move |tx, i, chain| {
            let entry = tx
                .query_opt(
                    &format!(
                        "SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = $1 AND released_at IS NULL FOR UPDATE"
                    ),
                    &[&id],
                )
                .map_err(pg)?
                .map(|r| row_quarantine(&r))
                .ok_or_else(|| not_found("quarantine entry", id))?;
            let now = i.clock.now_millis();
            let bytes = fixed.clone().map(Bytes::from).unwrap_or(entry.bytes.clone());
            let hash = content_hash(&bytes);
            let control_id = match &fixed {
                Some(b) => hl7_core::Message::parse(b).ok().and_then(|m| m.control_id().map(|c| c.into_owned())),
                None => entry.control_id.clone(),
            };
            let message_id = match (entry.message_id, &fixed) {
                (Some(mid), None) => {
                    tx.execute(
                        "UPDATE messages SET state = 'queued', queue = $2, attempts = 0, updated_at = $3,
                                lease_owner = NULL, lease_until = NULL WHERE id = $1",
                        &[&mid, &queue, &now],
                    )
                    .map_err(pg)?;
                    mid
                }
                _ => {
                    let mid: i64 = tx
                        .query_one(
                            "INSERT INTO messages(queue, connection, state, control_id, size, content_hash,
                                                  created_at, updated_at)
                             VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6) RETURNING id",
                            &[&queue, &entry.connection, &control_id, &(bytes.len() as i64), &hash, &now],
                        )
                        .map_err(pg)?
                        .get(0);
                    tx.execute("INSERT INTO bodies(id, bytes) VALUES ($1, $2)", &[&mid, &&bytes[..]]).map_err(pg)?;
                    mid
                }
            };
            tx.execute("UPDATE quarantine SET released_at = $2 WHERE id = $1", &[&id, &now]).map_err(pg)?;
            let mut ev = NewEvent::new(EventKind::Released, queue, Direction::Out)
                .message(message_id)
                .detail(format!("q={id}{}", if fixed.is_some() { " fixed" } else { "" }));
            ev.control_id = control_id;
            ev.byte_count = Some(bytes.len() as u64);
            ev.content_hash = Some(hash);
            append(tx, i, chain, &ev)?;
            Ok(message_id)
        })
    }

    fn record(&self, event: &NewEvent) -> Result<u64, Error> {
        self.record_many(std::slice::from_ref(event))
    }

    fn record_many(&self, events: &[NewEvent]) -> Result<u64, Error> {
        let events = events.to_vec();
        self.chained(move |tx, i, chain| {
            let mut last = chain.seq as u64;
            for e in &events {
                last = append(tx, i, chain, e)?;
            }
            Ok(last)
        })
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, Error> {
        let q = q.clone();
        self.call(move |c, i| {
            let mut clauses: Vec<String> = Vec::new();
            let mut args: Vec<Box<dyn postgres::types::ToSql + Sync + Send>> = Vec::new();
            let mut add = |clause: &str, v: Box<dyn postgres::types::ToSql + Sync + Send>| {
                args.push(v);
                clauses.push(format!("{clause} ${}", args.len()));
            };
            if let Some(m) = q.message_id {
                add("message_id =", Box::new(m));
            }
            if let Some(v) = q.control_id {
                add("control_id =", Box::new(v));
            }
            if let Some(v) = q.connection {
                add("connection =", Box::new(v));
            }
            if let Some(m) = &q.patient_mrn {
                add("patient =", Box::new(i.patient_hash(m)));
            }
            if let Some(v) = q.placer {
                add("placer =", Box::new(v));
            }
            if let Some(v) = q.filler {
                add("filler =", Box::new(v));
            }
            if let Some(k) = q.kind {
                add("kind =", Box::new(k.as_str().to_owned()));
            }
            if let Some(f) = q.from {
                add("at >=", Box::new(f));
            }
            if let Some(t) = q.to {
                add("at <", Box::new(t));
            }
            let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                args.iter().map(|a| a.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
            let rows =
                c.query(&format!("SELECT {EVENT_COLUMNS} FROM audit {filter} ORDER BY seq"), &params).map_err(pg)?;
            Ok(rows.iter().map(row_event).collect())
        })
    }

    fn verify_audit(&self) -> Result<u64, Error> {
        self.call(|c, _| {
            let tampered = |what: String| Error::new(ErrorKind::Tampered, what);
            let mut tx = c
                .build_transaction()
                .read_only(true)
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .start()
                .map_err(pg)?;
            let mut start = (0i64, GENESIS.to_owned());
            let mut prev = GENESIS.to_owned();
            for r in tx
                .query(
                    "SELECT id, seq, hash, event_at, pruned, at, prev, self_hash FROM audit_checkpoints ORDER BY id",
                    &[],
                )
                .map_err(pg)?
            {
                let (id, seq, hash): (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
                let (event_at, pruned, at, cp_prev, self_hash): (i64, i64, i64, String, String) =
                    (r.get(3), r.get(4), r.get(5), r.get(6), r.get(7));
                if cp_prev != prev
                    || seq <= start.0
                    || checkpoint_hash(&prev, seq, &hash, event_at, pruned, at) != self_hash
                {
                    return Err(tampered(format!("audit checkpoint {id} does not verify")));
                }
                prev = self_hash;
                start = (seq, hash);
            }
            let (mut last, mut prev) = start;
            let mut n = 0u64;
            for r in tx
                .query(&format!("SELECT {EVENT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq"), &[&last])
                .map_err(pg)?
            {
                let ev = row_event(&r);
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
            let head = tx.query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[]).map_err(pg)?;
            if (head.get::<_, i64>(0), head.get::<_, String>(1)) != (last, prev) {
                return Err(tampered(format!("audit trail ends at event {last}, not at its head")));
            }
            tx.commit().map_err(pg)?;
            Ok(n)
        })
    }

    fn snapshot(&self, window: Duration) -> Result<Snapshot, Error> {
        self.call(move |c, i| {
            let now = i.clock.now_millis();
            let window_ms = window.as_millis() as i64;
            let mut snap = Snapshot { at: now, window_ms, ..Snapshot::default() };
            for r in c.query("SELECT connection, kind, n, last_at FROM counters", &[]).map_err(pg)? {
                let c = snap.connections.entry(r.get(0)).or_default();
                let (n, last) = (r.get::<_, i64>(2) as u64, r.get::<_, i64>(3));
                match r.get::<_, String>(1).parse::<EventKind>() {
                    Ok(EventKind::Received) => (c.messages_in, c.last_in) = (n, Some(last)),
                    Ok(EventKind::Acknowledged) => (c.messages_out, c.last_success) = (n, Some(last)),
                    Ok(EventKind::Failed) => c.failures = n,
                    Ok(EventKind::Retried) => c.retries = n,
                    Ok(EventKind::Quarantined) => c.quarantined = n,
                    Ok(EventKind::Duplicate) => c.duplicates = n,
                    _ => {}
                }
            }
            for r in c
                .query(
                    "SELECT connection, kind, COUNT(*) FROM audit
                     WHERE at >= $1 AND kind IN ('failed', 'retried', 'acknowledged') GROUP BY connection, kind",
                    &[&(now - window_ms)],
                )
                .map_err(pg)?
            {
                let c = snap.connections.entry(r.get(0)).or_default();
                let n = r.get::<_, i64>(2) as u64;
                if r.get::<_, String>(1) == "acknowledged" {
                    c.window_successes += n;
                } else {
                    c.window_failures += n;
                }
            }
            for r in c
                .query(
                    "SELECT queue, COUNT(*), MIN(created_at) FROM messages WHERE state = 'queued' GROUP BY queue",
                    &[],
                )
                .map_err(pg)?
            {
                let oldest: i64 = r.get(2);
                snap.queues.insert(
                    r.get(0),
                    QueueStats { depth: r.get::<_, i64>(1) as u64, oldest_age_ms: (now - oldest).max(0) },
                );
            }
            snap.quarantine_waiting = c
                .query_one("SELECT COUNT(*) FROM quarantine WHERE released_at IS NULL", &[])
                .map_err(pg)?
                .get::<_, i64>(0) as u64;
            Ok(snap)
        })
    }

    fn prune(&self, policy: &Retention) -> Result<PruneReport, Error> {
        let policy = policy.clone();
        self.call(move |c, i| {
            let chunk = policy.chunk_size() as i64;
            let now = i.clock.now_millis();
            let cutoff = policy.age().map(|a| now - a.as_millis() as i64);
            let mut report = PruneReport::default();
            let mut chunked = |c: &mut Client, sql: &str, args: &[&(dyn postgres::types::ToSql + Sync)]| {
                let mut total = 0u64;
                loop {
                    let n = c.execute(sql, args).map_err(pg)?;
                    report.chunks += u64::from(n > 0);
                    total += n;
                    if n < chunk as u64 {
                        return Ok::<u64, Error>(total);
                    }
                }
            };
            let finished = "(state = 'delivered' OR (state = 'quarantined' AND NOT EXISTS
                (SELECT 1 FROM quarantine q WHERE q.message_id = messages.id AND q.released_at IS NULL)))";
            let delete_messages = |pick: String| {
                format!(
                    "WITH d AS (DELETE FROM messages WHERE id IN ({pick}) RETURNING id)
                     DELETE FROM bodies WHERE id IN (SELECT id FROM d)"
                )
            };
            if let Some(cut) = cutoff {
                report.messages += chunked(
                    c,
                    &delete_messages(format!(
                        "SELECT id FROM messages WHERE {finished} AND updated_at < $1 ORDER BY id LIMIT $2"
                    )),
                    &[&cut, &chunk],
                )?;
                report.quarantine += chunked(
                    c,
                    "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE released_at < $1
                     ORDER BY id LIMIT $2)",
                    &[&cut, &chunk],
                )?;
            }
            if let Some(keep) = policy.messages() {
                let keep = keep as i64;
                report.messages += chunked(
                    c,
                    &delete_messages(format!(
                        "SELECT id FROM messages WHERE {finished} AND id <
                           (SELECT COALESCE(MIN(id), 9223372036854775807) FROM
                             (SELECT id FROM messages WHERE {finished} ORDER BY id DESC LIMIT $1) k)
                         ORDER BY id LIMIT $2"
                    )),
                    &[&keep, &chunk],
                )?;
            }
            let expired = now - i.window_ms;
            report.dedup_keys += chunked(
                c,
                "DELETE FROM dedup WHERE key IN (SELECT key FROM dedup WHERE first_seen < $1 LIMIT $2)",
                &[&expired, &chunk],
            )?;
            loop {
                let mut tx = c.transaction().map_err(pg)?;
                // Appends wait while a chunk of the trail is cut and anchored.
                tx.query_one("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE", &[]).map_err(pg)?;
                let r = tx.query_one("SELECT MIN(seq), MAX(seq), COUNT(*) FROM audit", &[]).map_err(pg)?;
                let Some(first) = r.get::<_, Option<i64>>(0) else { break };
                let (last_seq, count): (i64, i64) = (r.get(1), r.get(2));
                let mut bound = first - 1;
                if let Some(cut) = cutoff {
                    let by_age: Option<i64> =
                        tx.query_one("SELECT MAX(seq) FROM audit WHERE at < $1", &[&cut]).map_err(pg)?.get(0);
                    bound = bound.max(by_age.unwrap_or(0));
                }
                if let Some(keep) = policy.events() {
                    if count as u64 > keep {
                        bound = bound.max(last_seq - keep as i64);
                    }
                }
                let oldest: Option<i64> = tx
                    .query_one("SELECT MIN(created_at) FROM messages WHERE state = 'queued'", &[])
                    .map_err(pg)?
                    .get(0);
                if let Some(oq) = oldest {
                    let protect: Option<i64> =
                        tx.query_one("SELECT MIN(seq) FROM audit WHERE at >= $1", &[&oq]).map_err(pg)?.get(0);
                    if let Some(p) = protect {
                        bound = bound.min(p - 1);
                    }
                }
                let bound = bound.min(first + chunk - 1);
                if bound < first {
                    break;
                }
                let r = tx.query_one("SELECT hash, at FROM audit WHERE seq = $1", &[&bound]).map_err(pg)?;
                let (hash, event_at): (String, i64) = (r.get(0), r.get(1));
                let prev: String = tx
                    .query_opt("SELECT self_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1", &[])
                    .map_err(pg)?
                    .map(|r| r.get(0))
                    .unwrap_or_else(|| GENESIS.to_owned());
                let pruned: i64 =
                    tx.query_one("SELECT COUNT(*) FROM audit WHERE seq <= $1", &[&bound]).map_err(pg)?.get(0);
                let self_hash = checkpoint_hash(&prev, bound, &hash, event_at, pruned, now);
                tx.execute(
                    "INSERT INTO audit_checkpoints(seq, hash, event_at, pruned, at, prev, self_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&bound, &hash, &event_at, &pruned, &now, &prev, &self_hash],
                )
                .map_err(pg)?;
                let n = tx.execute("DELETE FROM audit WHERE seq <= $1", &[&bound]).map_err(pg)?;
                tx.commit().map_err(pg)?;
                report.events += n;
                report.chunks += 1;
                report.checkpoint = Some((bound as u64, hash));
            }
            Ok(report)
        })
    }
}
