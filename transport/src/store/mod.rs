//! The durable store: inbox/outbox queues, de-duplication, quarantine and
//! the audit trail, behind one object-safe trait.
//!
//! Why one trait for all four: they must change together. A message is
//! queued, its de-duplication key recorded, a bad neighbour quarantined and
//! the audit events written in **one transaction**, or none of it happened.
//! Two stores would need a two-phase commit to say the same.
//!
//! Why the trait is synchronous: the embedded default, SQLite, is a local
//! file and each call is a short transaction; callers on an async runtime
//! may wrap a call in `spawn_blocking` when batches are large.
//!
//! Delivery is at-least-once on the wire and exactly-once in effect: a
//! message leaves the outbox ([`Store::mark_delivered`]) only after the peer
//! confirmed; a crash between the send and that commit sends it again after
//! restart, with the same message id (the folder sink overwrites the same
//! file name) and the same MSH-10 (the receiver's de-duplication drops it).

mod chain;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

#[cfg(feature = "postgres")]
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::audit::{AuditEvent, AuditQuery, NewEvent};
use crate::monitor::Snapshot;
use crate::{Error, Item};

/// A message's id in the store.
pub type MessageId = i64;

/// Business keys indexed by the audit trail. The MRN is never stored: the
/// store keeps a keyed hash of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexKeys {
    /// The patient's MRN (PID-3-1), hashed with the store's key before storage.
    pub mrn: Option<String>,
    /// Placer order number (ORC-2 / OBR-2).
    pub placer: Option<String>,
    /// Filler order number (ORC-3 / OBR-3).
    pub filler: Option<String>,
}

/// A message to queue, prepared by the [`Intake`](crate::pipeline::Intake).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// The bytes as received.
    pub bytes: Bytes,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-3^MSH-4.
    pub sender: Option<String>,
    /// The de-duplication key, if de-duplication is on.
    pub dedup_key: Option<String>,
    /// Keys for the audit index.
    pub keys: IndexKeys,
    /// The file the message came from.
    pub name: Option<String>,
}

/// Bytes that could not be taken as a message, with why and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// The original bytes.
    pub bytes: Bytes,
    /// Why (a fixed, PHI-free message such as `invalid segment name at byte 27`).
    pub reason: String,
    /// Byte offset of the problem in the original file or stream.
    pub offset: Option<u64>,
    /// Where in the message, as a terser path (`OBX(2)-5`).
    pub path: Option<String>,
    /// MSH-10, if it could be salvaged.
    pub control_id: Option<String>,
    /// The file it came from.
    pub name: Option<String>,
    /// When set, the same bytes already quarantined from the same
    /// connection within the de-duplication window are recorded as a
    /// duplicate instead of quarantined again (a file read again after a
    /// crash between the commit and its archiving, a sender's resend).
    pub dedup: bool,
}

/// One unit of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message to queue.
    Message(NewMessage),
    /// Bytes for quarantine.
    Invalid(Rejected),
}

/// What one inbound item (a file, a frame) became, stored in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The connection it came in on.
    pub connection: String,
    /// The queue (outbound connection) its messages go to.
    pub queue: String,
    /// The messages and rejects, in order.
    pub entries: Vec<Entry>,
}

/// A message seen before within the de-duplication window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The de-duplication key.
    pub key: String,
    /// The message stored the first time.
    pub original: MessageId,
}

/// What [`Store::ingest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// New messages queued.
    pub queued: Vec<MessageId>,
    /// Duplicates, recorded and not queued.
    pub duplicates: Vec<Duplicate>,
    /// Quarantine entries the rejects went to: new ones, or for bytes
    /// already quarantined (see [`Rejected::dedup`]) the existing one.
    pub quarantined: Vec<i64>,
}

/// A queued message as handed to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its id.
    pub id: MessageId,
    /// The item to deliver (`item.id` is `id` as text).
    pub item: Item,
    /// Failed delivery attempts so far, across restarts.
    pub attempts: u32,
}

/// A quarantined message or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Its id in the quarantine.
    pub id: i64,
    /// The connection it came in on or was going out to.
    pub connection: String,
    /// The message id, when it had been queued before.
    pub message_id: Option<MessageId>,
    /// MSH-10, when known.
    pub control_id: Option<String>,
    /// Why.
    pub reason: String,
    /// Byte offset of the problem, when known.
    pub offset: Option<u64>,
    /// Terser path of the problem, when known.
    pub path: Option<String>,
    /// The original bytes.
    pub bytes: Bytes,
    /// When (milliseconds since the Unix epoch).
    pub created_at: i64,
    /// Whether it was released.
    pub released: bool,
}

/// The durable store. Object-safe: pipelines hold `Arc<dyn Store>`.
///
/// # Examples
///
/// ```
/// use transport::store::{Batch, Entry, NewMessage, SqliteStore, Store, StoreConfig};
///
/// let store = SqliteStore::open(":memory:", StoreConfig::default())?;
/// let batch = Batch {
///     connection: "lis".into(),
///     queue: "emr".into(),
///     entries: vec![Entry::Message(NewMessage { bytes: "MSH|^~\\&|A\r".into(), ..Default::default() })],
/// };
/// let report = store.ingest(&batch)?;
/// let pending = store.pending("emr", 10)?;
/// assert_eq!(pending[0].id, report.queued[0]);
/// store.mark_delivered(pending[0].id, "AA")?;
/// assert!(store.pending("emr", 10)?.is_empty());
/// # Ok::<(), transport::Error>(())
/// ```
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores everything an inbound item became, with its audit events, in
    /// one durable transaction. Duplicates are recorded, not queued.
    ///
    /// # Errors
    ///
    /// When the store fails; then nothing of the batch was stored.
    fn ingest(&self, batch: &Batch) -> Result<IngestReport, Error>;

    /// Up to `limit` queued messages of `queue`, oldest first.
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Queued>, Error>;

    /// Number of queued messages and the age of the oldest, in milliseconds.
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn depth(&self, queue: &str) -> Result<(u64, Option<i64>), Error>;

    /// The queue `id` is waiting in, or `None` when it is not queued
    /// (delivered, quarantined, unknown).
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn queue_of(&self, id: MessageId) -> Result<Option<String>, Error>;

    /// The peer confirmed `id`: it leaves the outbox (audit `acknowledged`).
    ///
    /// # Errors
    ///
    /// When the store fails or `id` is unknown.
    fn mark_delivered(&self, id: MessageId, outcome: &str) -> Result<(), Error>;

    /// A delivery attempt failed; returns the attempts so far (audit `failed`).
    ///
    /// # Errors
    ///
    /// When the store fails or `id` is unknown.
    fn record_failure(&self, id: MessageId, reason: &str) -> Result<u32, Error>;

    /// Moves a queued message to quarantine (audit `quarantined`).
    ///
    /// # Errors
    ///
    /// When the store fails or `id` is unknown.
    fn quarantine_message(&self, id: MessageId, reason: &str) -> Result<i64, Error>;

    /// Quarantine entries, oldest first; released ones too if asked.
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn quarantined(&self, include_released: bool) -> Result<Vec<QuarantineEntry>, Error>;

    /// One quarantine entry with its bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown id.
    fn quarantine_entry(&self, id: i64) -> Result<QuarantineEntry, Error>;

    /// Releases a quarantine entry into `queue`, with fixed bytes if given
    /// (audit `released`). Returns the queued message's id.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or
    /// already released entry.
    fn release(&self, id: i64, queue: &str, fixed: Option<&[u8]>) -> Result<MessageId, Error>;

    /// Appends one audit event; returns its sequence number.
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn record(&self, event: &NewEvent) -> Result<u64, Error>;

    /// Audit events matching `query`, in order.
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, Error>;

    /// Checks the hash chain of the audit trail from its latest
    /// [checkpoint](Store::prune) (or from the first event when nothing was
    /// pruned); returns the number of events checked.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Tampered`](crate::ErrorKind::Tampered) naming the first
    /// event that does not verify.
    fn verify_audit(&self) -> Result<u64, Error>;

    /// Stores several inbound items, each as [`Store::ingest`] would, in
    /// **one** durable transaction (group commit): either all are stored or
    /// none. Acknowledge none of them upstream before this returns.
    ///
    /// # Errors
    ///
    /// When the store fails; then nothing of any batch was stored.
    fn ingest_many(&self, batches: &[Batch]) -> Result<Vec<IngestReport>, Error> {
        batches.iter().map(|b| self.ingest(b)).collect()
    }

    /// Appends several audit events in one transaction; returns the
    /// sequence number of the last.
    ///
    /// # Errors
    ///
    /// When the store fails; then none was appended.
    fn record_many(&self, events: &[NewEvent]) -> Result<u64, Error> {
        let mut last = 0;
        for e in events {
            last = self.record(e)?;
        }
        Ok(last)
    }

    /// [`Store::mark_delivered`] for several messages in one transaction.
    ///
    /// # Errors
    ///
    /// When the store fails or an id is not queued; then none was marked.
    fn mark_delivered_many(&self, done: &[(MessageId, String)]) -> Result<(), Error> {
        done.iter().try_for_each(|(id, outcome)| self.mark_delivered(*id, outcome))
    }

    /// Counters per connection, queue depths and what happened within the
    /// last `window`: the input of [`monitor`](crate::monitor).
    ///
    /// # Errors
    ///
    /// When the store fails.
    fn snapshot(&self, window: Duration) -> Result<Snapshot, Error>;

    /// Removes finished messages, expired de-duplication keys, released
    /// quarantine entries and old audit events as `policy` says, in
    /// transactions of at most [`Retention::chunk`] rows each. Queued
    /// messages, waiting quarantine entries and the audit events of queued
    /// messages are never removed. Before audit events go, a checkpoint
    /// keeps the hash of the last removed one, so the rest still verifies.
    ///
    /// # Errors
    ///
    /// When the store fails; chunks committed before stay removed.
    fn prune(&self, policy: &Retention) -> Result<PruneReport, Error>;
}

/// How much the store keeps: by age, by count, or both (whichever removes
/// more). Nothing is removed by default; see [`Store::prune`].
///
/// Why counts and not bytes: a row count bounds the file size once rows
/// have a bounded size (messages do: the intake has a maximum), and it is
/// what SQLite and PostgreSQL can both answer cheaply.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use transport::store::Retention;
///
/// let policy = Retention::new().max_age(Duration::from_secs(30 * 24 * 3600)).max_events(1_000_000).build();
/// assert_eq!(policy.chunk_size(), 1000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    max_age: Option<Duration>,
    max_messages: Option<u64>,
    max_events: Option<u64>,
    chunk: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention { max_age: None, max_messages: None, max_events: None, chunk: 1000 }
    }
}

impl Retention {
    /// Keeps everything; chunks of 1000 rows.
    pub fn new() -> Retention {
        Retention::default()
    }

    /// Removes finished messages and audit events older than `age`.
    pub fn max_age(&mut self, age: Duration) -> &mut Self {
        self.max_age = Some(age);
        self
    }

    /// Keeps at most `n` finished (delivered) messages, the newest.
    pub fn max_messages(&mut self, n: u64) -> &mut Self {
        self.max_messages = Some(n);
        self
    }

    /// Keeps at most `n` audit events, the newest (more when queued
    /// messages still need theirs).
    pub fn max_events(&mut self, n: u64) -> &mut Self {
        self.max_events = Some(n);
        self
    }

    /// Rows removed per transaction (at least 1): bounds how long a prune
    /// holds the write lock and how large the write-ahead log grows.
    pub fn chunk(&mut self, rows: usize) -> &mut Self {
        self.chunk = rows.max(1);
        self
    }

    /// A copy of these settings.
    pub fn build(&self) -> Retention {
        self.clone()
    }

    /// The age limit.
    pub fn age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The message count limit.
    pub fn messages(&self) -> Option<u64> {
        self.max_messages
    }

    /// The audit event count limit.
    pub fn events(&self) -> Option<u64> {
        self.max_events
    }

    /// Rows per transaction.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Delivered (or quarantined and released) messages.
    pub messages: u64,
    /// Audit events.
    pub events: u64,
    /// Expired de-duplication keys.
    pub dedup_keys: u64,
    /// Released quarantine entries.
    pub quarantine: u64,
    /// Transactions used.
    pub chunks: u64,
    /// The audit checkpoint written last: (sequence number of the last
    /// removed event, its hash).
    pub checkpoint: Option<(u64, String)>,
}

/// Milliseconds since the Unix epoch, from a clock tests can set.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now_millis(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told to.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use transport::store::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(clock.now_millis(), 2_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `millis`.
    pub fn new(millis: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(millis)))
    }

    /// Moves the clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    dedup_window: Duration,
    audit_key: Option<Vec<u8>>,
    clock: Arc<dyn Clock>,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig { dedup_window: Duration::from_secs(7 * 24 * 3600), audit_key: None, clock: Arc::new(SystemClock) }
    }
}

impl StoreConfig {
    /// Default settings: a 7-day de-duplication window, a per-store random
    /// audit key, the system clock.
    pub fn new() -> StoreConfig {
        StoreConfig::default()
    }

    /// How long a de-duplication key is remembered.
    pub fn dedup_window(&mut self, window: Duration) -> &mut Self {
        self.dedup_window = window;
        self
    }

    /// The key of the MRN hash (HMAC-SHA-256). Without one the store makes
    /// one at creation and keeps it in the database.
    pub fn audit_key(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.audit_key = Some(key.into());
        self
    }

    /// The clock (tests use [`ManualClock`]).
    pub fn clock(&mut self, clock: Arc<dyn Clock>) -> &mut Self {
        self.clock = clock;
        self
    }

    /// A copy of these settings.
    pub fn build(&self) -> StoreConfig {
        self.clone()
    }
}
