//! The audit trail: one append-only event per hop, indexed and
//! tamper-evident.
//!
//! An event records what happened to which message on which connection —
//! ids, sizes, the SHA-256 of the content, outcome — and never the content
//! itself or a name. The patient is findable by a keyed hash (HMAC-SHA-256)
//! of the MRN: whoever can read the trail cannot reverse it without the key.
//!
//! The business keys (patient hash, placer and filler order numbers) are
//! recorded on each message's `received` event, where a search by patient
//! or order starts; the rest of its trail follows by message id or MSH-10.
//!
//! Why a hash chain: each event carries the hash of the previous one and its
//! own hash over both, so changing, removing or reordering any stored event
//! breaks every hash after it, and [`Store::verify_audit`](crate::store::Store::verify_audit)
//! names the first bad one. The SQLite store also refuses `UPDATE` and
//! `DELETE` on the table with triggers; the chain catches whoever drops them.

use std::fmt;
use std::str::FromStr;

use crate::store::{IndexKeys, MessageId};

/// A hop in a message's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// Bytes arrived.
    Received,
    /// They parsed as a message.
    Parsed,
    /// Mapped to the lab contract by the connection's EMR profile.
    Mapped,
    /// Checked against the compendium (or another rule set).
    Validated,
    /// Stored in a queue.
    Queued,
    /// Seen before within the de-duplication window; not queued again.
    Duplicate,
    /// Handed to the peer.
    Sent,
    /// The peer confirmed; the message left the outbox.
    Acknowledged,
    /// An attempt failed.
    Failed,
    /// An attempt will be repeated after a back-off.
    Retried,
    /// Moved to quarantine.
    Quarantined,
    /// Released from quarantine.
    Released,
    /// The queue is held for an operator.
    Held,
}

impl EventKind {
    /// Every kind, in life order.
    pub const ALL: [EventKind; 13] = [
        EventKind::Received,
        EventKind::Parsed,
        EventKind::Mapped,
        EventKind::Validated,
        EventKind::Queued,
        EventKind::Duplicate,
        EventKind::Sent,
        EventKind::Acknowledged,
        EventKind::Failed,
        EventKind::Retried,
        EventKind::Quarantined,
        EventKind::Released,
        EventKind::Held,
    ];

    /// The lower-case name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Received => "received",
            EventKind::Parsed => "parsed",
            EventKind::Mapped => "mapped",
            EventKind::Validated => "validated",
            EventKind::Queued => "queued",
            EventKind::Duplicate => "duplicate",
            EventKind::Sent => "sent",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::Quarantined => "quarantined",
            EventKind::Released => "released",
            EventKind::Held => "held",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<EventKind, crate::Error> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| crate::Error::new(crate::ErrorKind::Config, format!("unknown audit event {s:?}")))
    }
}

/// Which way a message travels relative to this engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Coming in.
    In,
    /// Going out.
    Out,
}

impl Direction {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// An event to append.
///
/// # Examples
///
/// ```
/// use transport::audit::{Direction, EventKind, NewEvent};
///
/// let ev = NewEvent::new(EventKind::Retried, "emr", Direction::Out).message(7).detail("attempt 2");
/// assert_eq!(ev.message_id, Some(7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// On which connection.
    pub connection: String,
    /// Which way.
    pub direction: Direction,
    /// The message, once it has an id.
    pub message_id: Option<MessageId>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// `ok`, an ACK code, or a short reason.
    pub outcome: String,
    /// Size of the content.
    pub byte_count: Option<u64>,
    /// SHA-256 of the content.
    pub content_hash: Option<String>,
    /// Business keys (the MRN is hashed before storage).
    pub keys: IndexKeys,
    /// A short PHI-free remark.
    pub detail: String,
}

impl NewEvent {
    /// An event with outcome `ok` and nothing else set.
    pub fn new(kind: EventKind, connection: impl Into<String>, direction: Direction) -> NewEvent {
        NewEvent {
            kind,
            connection: connection.into(),
            direction,
            message_id: None,
            control_id: None,
            outcome: "ok".into(),
            byte_count: None,
            content_hash: None,
            keys: IndexKeys::default(),
            detail: String::new(),
        }
    }

    /// Sets the message id.
    pub fn message(mut self, id: MessageId) -> NewEvent {
        self.message_id = Some(id);
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: impl Into<String>) -> NewEvent {
        self.outcome = outcome.into();
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> NewEvent {
        self.detail = detail.into();
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// When (milliseconds since the Unix epoch).
    pub at: i64,
    /// What happened.
    pub kind: EventKind,
    /// Connection.
    pub connection: String,
    /// Direction.
    pub direction: Direction,
    /// Message id.
    pub message_id: Option<MessageId>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Size of the content.
    pub byte_count: Option<u64>,
    /// SHA-256 of the content.
    pub content_hash: Option<String>,
    /// Keyed hash of the MRN.
    pub patient: Option<String>,
    /// Placer order number.
    pub placer: Option<String>,
    /// Filler order number.
    pub filler: Option<String>,
    /// Remark.
    pub detail: String,
    /// Hash of the previous event (64 zeros for the first).
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl fmt::Display for AuditEvent {
    /// One line: `seq time kind dir connection m=id cid=… outcome bytes=… detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>6} {} {:<12} {:<3} {}", self.seq, self.at, self.kind, self.direction.as_str(), self.connection)?;
        if let Some(m) = self.message_id {
            write!(f, " m={m}")?;
        }
        if let Some(c) = &self.control_id {
            write!(f, " cid={c}")?;
        }
        write!(f, " {}", self.outcome)?;
        if let Some(b) = self.byte_count {
            write!(f, " bytes={b}")?;
        }
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}

/// A filter over the audit trail; every set field must match.
///
/// # Examples
///
/// ```
/// use transport::audit::{AuditQuery, EventKind};
///
/// let q = AuditQuery::new().connection("emr").kind(EventKind::Quarantined).between(0, i64::MAX);
/// assert_eq!(q.connection.as_deref(), Some("emr"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Message id.
    pub message_id: Option<MessageId>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// Connection.
    pub connection: Option<String>,
    /// The patient's MRN (hashed with the store's key to search).
    pub patient_mrn: Option<String>,
    /// Placer order number.
    pub placer: Option<String>,
    /// Filler order number.
    pub filler: Option<String>,
    /// Event kind.
    pub kind: Option<EventKind>,
    /// From (inclusive, ms since the epoch).
    pub from: Option<i64>,
    /// To (exclusive, ms since the epoch).
    pub to: Option<i64>,
}

impl AuditQuery {
    /// Matches everything.
    pub fn new() -> AuditQuery {
        AuditQuery::default()
    }

    /// Only this message's events.
    pub fn message(mut self, id: MessageId) -> AuditQuery {
        self.message_id = Some(id);
        self
    }

    /// Only events with this MSH-10.
    pub fn control_id(mut self, id: impl Into<String>) -> AuditQuery {
        self.control_id = Some(id.into());
        self
    }

    /// Only this connection.
    pub fn connection(mut self, c: impl Into<String>) -> AuditQuery {
        self.connection = Some(c.into());
        self
    }

    /// Only this patient (by MRN; searched by its keyed hash).
    pub fn patient(mut self, mrn: impl Into<String>) -> AuditQuery {
        self.patient_mrn = Some(mrn.into());
        self
    }

    /// Only this placer order number.
    pub fn placer(mut self, p: impl Into<String>) -> AuditQuery {
        self.placer = Some(p.into());
        self
    }

    /// Only this filler order number.
    pub fn filler(mut self, p: impl Into<String>) -> AuditQuery {
        self.filler = Some(p.into());
        self
    }

    /// Only this kind of event.
    pub fn kind(mut self, k: EventKind) -> AuditQuery {
        self.kind = Some(k);
        self
    }

    /// Only events in `[from, to)` (ms since the epoch).
    pub fn between(mut self, from: i64, to: i64) -> AuditQuery {
        self.from = Some(from);
        self.to = Some(to);
        self
    }
}
