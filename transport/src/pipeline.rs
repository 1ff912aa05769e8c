//! Store-and-forward: [`Intake`] takes items from a [`Source`] into the
//! store, [`Forwarder`] drains a queue of the store into a [`Sink`].
//!
//! The order of operations is the whole point (DOMAIN P15):
//! 1. the intake splits an item into messages, parses each, and stores the
//!    good ones, the duplicates' records and the bad ones' quarantine
//!    entries in one transaction;
//! 2. only then is the source told ([`Source::settle`]): the MLLP server
//!    sends its ACK, the folder archives the file;
//! 3. the forwarder hands each queued message to the sink, and the message
//!    leaves the queue only when the sink confirmed.
//!
//! A crash between 1 and 2 makes the sender send again, and de-duplication
//! records it as a duplicate; a crash between 3's send and its commit sends
//! again with the same message id and MSH-10, which the next hop drops.

use std::sync::Arc;

use bytes::Bytes;
use hl7_core::reader::{split, Chunk, Split};
use hl7_core::{Message, ParseOptions, Path};
use tracing::Instrument;

use crate::audit::{Direction, EventKind, NewEvent};
use crate::item::{content_hash, Inbound, Settle, Sink, Source};
use crate::layers::RetryHook;
use crate::store::{Batch, Entry, IndexKeys, IngestReport, MessageId, NewMessage, Queued, Rejected, Store};
use crate::{Error, ErrorKind};

/// What makes two messages "the same" for de-duplication (DOMAIN P7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DedupKey {
    /// No de-duplication.
    Off,
    /// MSH-10 from the same sender (MSH-3 + MSH-4): what a sender re-sends
    /// after a lost ACK. Falls back to the content hash without MSH-10.
    #[default]
    ControlIdAndSender,
    /// The SHA-256 of the bytes: the same file delivered twice.
    ContentHash,
    /// A business key: the values at these paths joined, e.g. placer order
    /// number + test + status (`ORC-2`, `OBR-4-1`, `OBR-25`). Falls back to
    /// the content hash when all are empty.
    Business(Vec<Path>),
}

impl DedupKey {
    /// The key of `msg` (whose bytes are `bytes`), or `None` when off.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::Message;
    /// use transport::pipeline::DedupKey;
    ///
    /// let bytes = b"MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||OML^O21|LOI001|P|2.5.1\r";
    /// let msg = Message::parse(bytes)?;
    /// assert_eq!(DedupKey::ControlIdAndSender.key(&msg, bytes).as_deref(), Some("cid:EHR^CLINIC|LOI001"));
    /// let biz = DedupKey::Business(vec!["MSH-9-1".parse()?, "MSH-10".parse()?]);
    /// assert_eq!(biz.key(&msg, bytes).as_deref(), Some("biz:OML|LOI001"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self, msg: &Message<'_>, bytes: &[u8]) -> Option<String> {
        let hash = || format!("sha:{}", content_hash(bytes));
        match self {
            DedupKey::Off => None,
            DedupKey::ContentHash => Some(hash()),
            DedupKey::ControlIdAndSender => match msg.control_id().filter(|c| !c.is_empty()) {
                Some(cid) => Some(format!("cid:{}|{cid}", sender(msg))),
                None => Some(hash()),
            },
            DedupKey::Business(paths) => {
                let values: Vec<String> =
                    paths.iter().map(|p| msg.get(p).map(|e| e.raw().to_owned()).unwrap_or_default()).collect();
                if values.iter().all(String::is_empty) {
                    Some(hash())
                } else {
                    Some(format!("biz:{}", values.join("|")))
                }
            }
        }
    }
}

fn raw_at(msg: &Message<'_>, path: &str) -> Option<String> {
    let p: Path = path.parse().ok()?;
    msg.get(&p).map(|e| e.raw().to_owned()).filter(|s| !s.is_empty())
}

fn sender(msg: &Message<'_>) -> String {
    format!("{}^{}", raw_at(msg, "MSH-3").unwrap_or_default(), raw_at(msg, "MSH-4").unwrap_or_default())
}

fn index_keys(msg: &Message<'_>) -> IndexKeys {
    IndexKeys {
        mrn: raw_at(msg, "PID-3-1"),
        placer: raw_at(msg, "ORC-2-1").or_else(|| raw_at(msg, "OBR-2-1")),
        filler: raw_at(msg, "ORC-3-1").or_else(|| raw_at(msg, "OBR-3-1")),
    }
}

/// What a pass of [`Intake::drain`] took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeReport {
    /// Items (files, frames) taken.
    pub items: u64,
    /// What the store did with them, added up.
    pub stored: IngestReport,
}

/// Takes inbound items into the store (step 1 and 2 of the module docs).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use transport::mock::MockSource;
/// use transport::pipeline::Intake;
/// use transport::store::{SqliteStore, Store, StoreConfig};
/// use transport::Item;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default())?);
/// let file = "MSH|^~\\&|EHR|C|||||ORM^O01|M1|P|2.3\rMSH|^~\\&|EHR|C|||||ORM^O01|M2|P|2.3\rOOPS\r";
/// let mut source = MockSource::new([Item::new("f1", file)]);
/// let report = Intake::new(store.clone(), "ehr", "lis").drain(&mut source).await?;
/// assert_eq!(report.stored.queued.len(), 1);        // M1
/// assert_eq!(report.stored.quarantined.len(), 1);   // M2 with its bad last line
/// assert_eq!(source.settled().len(), 1);            // the file is settled after the commit
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Intake {
    store: Arc<dyn Store>,
    connection: String,
    queue: String,
    dedup: DedupKey,
    opts: ParseOptions,
    group: usize,
}

impl Intake {
    /// Takes items arriving on `connection` into `queue`, de-duplicated by
    /// MSH-10 + sender.
    pub fn new(store: Arc<dyn Store>, connection: impl Into<String>, queue: impl Into<String>) -> Intake {
        Intake {
            store,
            connection: connection.into(),
            queue: queue.into(),
            dedup: DedupKey::default(),
            opts: ParseOptions::default(),
            group: 1,
        }
    }

    /// Group commit: [`drain`](Intake::drain) takes up to `items` items
    /// from the source, stores them in one transaction, and only then
    /// settles each (acknowledges upstream). One durable commit for many
    /// items instead of one each; nothing is acknowledged before its commit.
    ///
    /// For polling sources (folders, SFTP inboxes), whose `recv` answers
    /// `None` when nothing is ready. A listening source (MLLP, HTTP) waits in
    /// `recv` for the next item while the earlier ones wait for their ACK,
    /// so keep those at 1, the default.
    pub fn group(mut self, items: usize) -> Intake {
        self.group = items.max(1);
        self
    }

    /// Sets the de-duplication key.
    pub fn dedup(mut self, key: DedupKey) -> Intake {
        self.dedup = key;
        self
    }

    /// Sets the parse options (character set, limits).
    pub fn parse_options(mut self, opts: ParseOptions) -> Intake {
        self.opts = opts;
        self
    }

    /// Splits an inbound item into what the store should do with each
    /// part: messages to queue, and bad bytes (with offset and path) to
    /// quarantine. Batch envelopes (FHS/BHS/BTS/FTS) and blank lines are
    /// not messages and are left out.
    pub fn batch(&self, inbound: &Inbound) -> Batch {
        let name = inbound.item.meta.name.clone();
        let mut batch = Batch { connection: self.connection.clone(), queue: self.queue.clone(), entries: Vec::new() };
        let bytes = &inbound.item.bytes;
        if let Some(reason) = &inbound.framing_error {
            batch.entries.push(Entry::Invalid(Rejected {
                bytes: bytes.clone(),
                reason: reason.clone(),
                offset: Some(0),
                name,
                dedup: self.dedup != DedupKey::Off,
                ..Rejected::default()
            }));
            return batch;
        }
        let mut at = if bytes.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
        while at < bytes.len() {
            let Split::Complete { chunk, len } = split(&bytes[at..], true, 0) else { break };
            let part = bytes.slice(at..at + len);
            let start = at;
            at += len;
            if chunk != Chunk::Message {
                continue;
            }
            batch.entries.push(self.entry(part, start as u64, name.clone()));
        }
        if batch.entries.is_empty() && bytes.iter().all(|b| b.is_ascii_whitespace()) {
            batch.entries.push(Entry::Invalid(Rejected {
                bytes: bytes.clone(),
                reason: "no message in the input".into(),
                name,
                dedup: self.dedup != DedupKey::Off,
                ..Rejected::default()
            }));
        }
        batch
    }

    fn entry(&self, part: Bytes, start: u64, name: Option<String>) -> Entry {
        match Message::parse_with(&part, &self.opts) {
            Ok(msg) => Entry::Message(NewMessage {
                control_id: msg.control_id().map(|c| c.into_owned()),
                sender: Some(sender(&msg)),
                dedup_key: self.dedup.key(&msg, &part),
                keys: index_keys(&msg),
                name,
                bytes: part.clone(),
            }),
            Err(e) => {
                let offset = start + e.offset();
                let path = e.path().map(|p| p.to_string());
                let reason = match &path {
                    Some(p) => format!("{} at byte {offset} ({p})", e.kind()),
                    None => format!("{} at byte {offset}", e.kind()),
                };
                let control_id = salvage_control_id(&part);
                let dedup = self.dedup != DedupKey::Off;
                Entry::Invalid(Rejected { bytes: part, reason, offset: Some(offset), path, control_id, name, dedup })
            }
        }
    }

    /// Stores one inbound item (step 1).
    ///
    /// # Errors
    ///
    /// When the store fails; nothing of the item was stored then.
    pub fn store(&self, inbound: &Inbound) -> Result<IngestReport, Error> {
        self.store.ingest(&self.batch(inbound))
    }

    /// Stores one inbound item, then settles it with its source (steps 1
    /// and 2). A single message that went to quarantine is settled as
    /// [`Settle::Quarantined`] (an MLLP sender gets `AE`); a file is settled
    /// as stored as soon as every part of it is stored somewhere.
    ///
    /// # Errors
    ///
    /// When the store fails (the item is then settled as
    /// [`Settle::Failed`]) or the settle itself fails.
    pub async fn take(&self, source: &mut (dyn Source + '_), inbound: Inbound) -> Result<IngestReport, Error> {
        Ok(self.take_many(source, vec![inbound]).await?.remove(0))
    }

    /// [`take`](Intake::take) for several items: one transaction, then
    /// each is settled in order.
    async fn take_many(
        &self,
        source: &mut (dyn Source + '_),
        inbound: Vec<Inbound>,
    ) -> Result<Vec<IngestReport>, Error> {
        let span = tracing::info_span!("intake", connection = %self.connection, items = inbound.len());
        let batches: Vec<Batch> = inbound.iter().map(|i| self.batch(i)).collect();
        let stored = span.in_scope(|| self.store.ingest_many(&batches));
        match stored {
            Ok(reports) => {
                for ((inbound, batch), report) in inbound.into_iter().zip(&batches).zip(&reports) {
                    let single_reject = report.queued.is_empty()
                        && report.duplicates.is_empty()
                        && batch.entries.len() == 1
                        && inbound.item.meta.name.is_none();
                    let outcome = match (&batch.entries[..], single_reject) {
                        ([Entry::Invalid(r)], true) => Settle::Quarantined { reason: r.reason.clone() },
                        _ => Settle::Stored,
                    };
                    span.in_scope(|| {
                        tracing::info!(
                            receipt = inbound.receipt,
                            bytes = inbound.item.bytes.len(),
                            queued = report.queued.len(),
                            duplicates = report.duplicates.len(),
                            quarantined = report.quarantined.len(),
                            "stored"
                        )
                    });
                    source.settle(inbound.receipt, outcome).await?;
                }
                Ok(reports)
            }
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "not stored; not acknowledged"));
                for inbound in inbound {
                    source.settle(inbound.receipt, Settle::Failed { reason: "not stored".into() }).await?;
                }
                Err(e)
            }
        }
    }

    /// Takes every item the source has now, until it answers `None`.
    ///
    /// # Errors
    ///
    /// The first failure of the source or the store.
    pub async fn drain(&self, source: &mut (dyn Source + '_)) -> Result<IntakeReport, Error> {
        let mut report = IntakeReport::default();
        loop {
            let mut group = Vec::new();
            while group.len() < self.group {
                match source.recv().await? {
                    Some(inbound) => group.push(inbound),
                    None => break,
                }
            }
            if group.is_empty() {
                return Ok(report);
            }
            let last = group.len() < self.group;
            for r in self.take_many(source, group).await? {
                report.items += 1;
                report.stored.queued.extend(r.queued);
                report.stored.duplicates.extend(r.duplicates);
                report.stored.quarantined.extend(r.quarantined);
            }
            if last {
                return Ok(report);
            }
        }
    }
}

/// MSH-10 of a message that does not parse, if its first line allows.
fn salvage_control_id(bytes: &[u8]) -> Option<String> {
    let line = bytes.split(|&b| b == b'\r' || b == b'\n').next()?;
    if !line.starts_with(b"MSH") || line.len() < 4 {
        return None;
    }
    let sep = line[3];
    let id = line.split(|&b| b == sep).nth(9)?;
    std::str::from_utf8(id).ok().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// What a pass of [`Forwarder::drain`] did.
#[derive(Debug, Default)]
pub struct ForwardReport {
    /// Messages the sink confirmed.
    pub delivered: Vec<MessageId>,
    /// Messages sent to quarantine, with why.
    pub quarantined: Vec<(MessageId, String)>,
    /// Warnings from confirmed deliveries (an MSA-2 mismatch, say).
    pub warnings: Vec<(MessageId, String)>,
    /// The message the pass stopped at because the failure may pass: it
    /// stays queued for the next pass.
    pub deferred: Option<(MessageId, Error)>,
    /// The message the queue is held at for an operator.
    pub held: Option<(MessageId, Error)>,
}

/// Drains a queue into a sink (step 3 of the module docs).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use transport::mock::MockSink;
/// use transport::pipeline::Forwarder;
/// use transport::store::{Batch, Entry, NewMessage, SqliteStore, Store, StoreConfig};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default())?);
/// let msg = NewMessage { bytes: "MSH|^~\\&|A\r".into(), ..Default::default() };
/// store.ingest(&Batch { connection: "in".into(), queue: "out".into(), entries: vec![Entry::Message(msg)] })?;
/// let sink = Arc::new(MockSink::new());
/// let report = Forwarder::new(store.clone(), "out", sink.clone()).drain().await?;
/// assert_eq!(report.delivered.len(), 1);
/// assert_eq!(sink.delivered().len(), 1);
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Forwarder {
    store: Arc<dyn Store>,
    queue: String,
    sink: Arc<dyn Sink>,
    poison_after: u32,
    group: usize,
}

impl Forwarder {
    /// Delivers `queue` to `sink`; a message failing 5 passes is poison.
    pub fn new(store: Arc<dyn Store>, queue: impl Into<String>, sink: Arc<dyn Sink>) -> Forwarder {
        Forwarder { store, queue: queue.into(), sink, poison_after: 5, group: 1 }
    }

    /// Group commit: the `sent` events of up to `messages` messages are
    /// written in one transaction before the first is handed to the sink,
    /// and their confirmations in one transaction after the last. A message
    /// still leaves the queue only once the peer confirmed it; a crash
    /// before the second commit sends the group again (same message ids).
    /// When a pass stops early (a failure that may pass, a hold), the rest
    /// of the group was announced as `sent` but not handed over, and is
    /// announced again on the next pass: the trail may show more `sent`
    /// events than transmissions, never fewer. Default 1.
    pub fn group(mut self, messages: usize) -> Forwarder {
        self.group = messages.max(1);
        self
    }

    /// After how many failed passes (across restarts) a message goes to
    /// quarantine so the queue keeps moving (DOMAIN P14).
    pub fn poison_after(mut self, attempts: u32) -> Forwarder {
        self.poison_after = attempts.max(1);
        self
    }

    /// Delivers queued messages, oldest first, until the queue is empty, a
    /// failure that may pass stops the pass, or a hold.
    ///
    /// # Errors
    ///
    /// When the store fails. Delivery failures are in the report.
    pub async fn drain(&self) -> Result<ForwardReport, Error> {
        let mut report = ForwardReport::default();
        loop {
            let batch = self.store.pending(&self.queue, self.group.max(64))?;
            if batch.is_empty() {
                return Ok(report);
            }
            for group in batch.chunks(self.group) {
                if !self.deliver_group(group, &mut report).await? {
                    return Ok(report);
                }
            }
        }
    }

    /// Delivers one group; `false` when the pass must stop.
    async fn deliver_group(&self, group: &[Queued], report: &mut ForwardReport) -> Result<bool, Error> {
        let sent: Vec<NewEvent> = group
            .iter()
            .map(|q| {
                let mut sent = NewEvent::new(EventKind::Sent, &self.queue, Direction::Out)
                    .message(q.id)
                    .detail(format!("attempt {}", q.attempts + 1));
                sent.control_id = q.item.meta.control_id.clone();
                sent.byte_count = Some(q.item.bytes.len() as u64);
                sent
            })
            .collect();
        self.store.record_many(&sent)?;
        let mut done: Vec<(MessageId, String)> = Vec::with_capacity(group.len());
        let flush = |done: &mut Vec<(MessageId, String)>, report: &mut ForwardReport| -> Result<(), Error> {
            if !done.is_empty() {
                self.store.mark_delivered_many(done)?;
                report.delivered.extend(done.drain(..).map(|(id, _)| id));
            }
            Ok(())
        };
        for q in group {
            let span = tracing::info_span!("deliver", queue = %self.queue, message_id = q.id, attempt = q.attempts + 1);
            let result = self.sink.deliver(&q.item).instrument(span.clone()).await;
            let _entered = span.enter();
            match result {
                Ok(d) => {
                    let outcome = d
                        .ack
                        .as_deref()
                        .and_then(crate::mllp::msa)
                        .map(|(code, _)| code)
                        .unwrap_or_else(|| "ok".into());
                    tracing::info!(bytes = q.item.bytes.len(), outcome = %outcome, "delivered");
                    if let Some(w) = d.warning {
                        tracing::warn!(warning = %w, "delivered with a warning");
                        report.warnings.push((q.id, w));
                    }
                    done.push((q.id, outcome));
                }
                Err(e) if e.kind() == ErrorKind::Hold => {
                    flush(&mut done, report)?;
                    tracing::warn!(error = %e, "queue held for an operator");
                    let mut ev = NewEvent::new(EventKind::Held, &self.queue, Direction::Out)
                        .message(q.id)
                        .outcome("held")
                        .detail(e.message().to_owned());
                    ev.control_id = q.item.meta.control_id.clone();
                    self.store.record(&ev)?;
                    report.held = Some((q.id, e));
                    return Ok(false);
                }
                Err(e) => {
                    flush(&mut done, report)?;
                    tracing::warn!(error = %e, "delivery failed");
                    let attempts = self.store.record_failure(q.id, &e.to_string())?;
                    // A peer that cannot be reached is not the message's
                    // fault: it never makes a message poison.
                    let poison = attempts >= self.poison_after && e.kind() != ErrorKind::Connect;
                    if !e.is_retryable() || poison {
                        let reason =
                            if poison { format!("poison after {attempts} failed passes: {e}") } else { e.to_string() };
                        tracing::warn!(reason = %reason, "quarantined");
                        self.store.quarantine_message(q.id, &reason)?;
                        report.quarantined.push((q.id, reason));
                    } else {
                        report.deferred = Some((q.id, e));
                        return Ok(false);
                    }
                }
            }
        }
        flush(&mut done, report)?;
        Ok(true)
    }
}

/// A [`RetryHook`] that writes a `retried` audit event for each retry.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use transport::layers::RetryPolicy;
/// use transport::store::{SqliteStore, Store, StoreConfig};
///
/// let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default())?);
/// let policy = RetryPolicy::default().on_retry(transport::pipeline::audit_retries(store, "emr"));
/// # let _ = policy;
/// # Ok::<(), transport::Error>(())
/// ```
pub fn audit_retries(store: Arc<dyn Store>, queue: impl Into<String>) -> RetryHook {
    let queue = queue.into();
    Arc::new(move |item, attempt, error, delay| {
        let mut ev = NewEvent::new(EventKind::Retried, &queue, Direction::Out)
            .outcome("retry")
            .detail(format!("attempt {attempt} failed ({error}); next in {} ms", delay.as_millis()));
        ev.message_id = item.id.parse().ok();
        ev.control_id = item.meta.control_id.clone();
        if let Err(e) = store.record(&ev) {
            tracing::warn!(error = %e, "could not record a retry in the audit trail");
        }
    })
}
