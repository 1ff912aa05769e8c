//! What travels: bytes plus metadata, and the two small traits every
//! mechanism implements.
//!
//! Why two traits and not one `Transport`: receiving and delivering fail in
//! different ways and are acknowledged at different moments. A [`Source`]
//! hands out an item and is told later, with [`Source::settle`], whether the
//! item was durably stored; only then does it acknowledge upstream (send the
//! MLLP ACK, archive the file). A [`Sink`] delivers one item and says what
//! the peer answered. Both are object-safe (futures are boxed) so a pipeline
//! can hold `Box<dyn Source>` / `Arc<dyn Sink>` picked at run time from a URL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::Error;

/// A boxed, `Send` future: what the object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One file or message with its metadata.
///
/// # Examples
///
/// ```
/// use transport::Item;
///
/// let item = Item::new("42", &b"MSH|^~\\&|LIS|LAB\r"[..]).with_control_id("MSG1");
/// assert_eq!(item.meta.control_id.as_deref(), Some("MSG1"));
/// assert_eq!(item.content_hash().len(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The message id: stable across restarts, the key of idempotent delivery.
    pub id: String,
    /// The bytes, exactly as received.
    pub bytes: Bytes,
    /// What is known about them.
    pub meta: Meta,
}

/// Metadata of an [`Item`]: never message content beyond ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The connection (channel) name the item belongs to.
    pub connection: String,
    /// The file name it came from or should be written as, if any.
    pub name: Option<String>,
    /// MSH-10, when the item is one parsed message.
    pub control_id: Option<String>,
    /// MSH-3 and MSH-4 (`app^facility`), when known.
    pub sender: Option<String>,
    /// Where it came from: host:port of the peer or a directory.
    pub peer: Option<String>,
}

impl Item {
    /// An item with empty metadata.
    pub fn new(id: impl Into<String>, bytes: impl Into<Bytes>) -> Item {
        Item { id: id.into(), bytes: bytes.into(), meta: Meta::default() }
    }

    /// Sets the control id (MSH-10) the ACK must echo in MSA-2.
    pub fn with_control_id(mut self, id: impl Into<String>) -> Item {
        self.meta.control_id = Some(id.into());
        self
    }

    /// Sets the file name.
    pub fn with_name(mut self, name: impl Into<String>) -> Item {
        self.meta.name = Some(name.into());
        self
    }

    /// Sets the connection name.
    pub fn with_connection(mut self, c: impl Into<String>) -> Item {
        self.meta.connection = c.into();
        self
    }

    /// SHA-256 of the bytes, lower-case hex: what the audit trail records
    /// instead of the content.
    pub fn content_hash(&self) -> String {
        content_hash(&self.bytes)
    }
}

/// SHA-256 of `bytes`, lower-case hex.
///
/// # Examples
///
/// ```
/// assert!(transport::content_hash(b"").starts_with("e3b0c442"));
/// ```
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// An item handed out by a [`Source`], waiting to be settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The item.
    pub item: Item,
    /// Set when the bytes are not a well-framed unit (MLLP junk, a truncated
    /// frame): they go to quarantine with this reason, never only to a log.
    pub framing_error: Option<String>,
    /// The source's handle for [`Source::settle`].
    pub receipt: u64,
}

/// What became of an inbound item, told back to its [`Source`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settle {
    /// Durably stored (queued, or recorded as a duplicate): acknowledge
    /// positively, archive or delete the file.
    Stored,
    /// Durably stored in quarantine: acknowledge negatively (MLLP `AE` with
    /// the reason), archive the file.
    Quarantined {
        /// Why, for MSA-3 / the operator.
        reason: String,
    },
    /// Not stored: do not acknowledge; leave the file for the next poll.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Where items come from: a directory, an MLLP listener, an SFTP inbox …
///
/// # Examples
///
/// ```
/// use transport::mock::MockSource;
/// use transport::{Item, Settle, Source};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut src: Box<dyn Source> = Box::new(MockSource::new([Item::new("1", "MSH|^~\\&|A\r")]));
/// let inbound = src.recv().await?.expect("one item");
/// src.settle(inbound.receipt, Settle::Stored).await?;
/// assert!(src.recv().await?.is_none());
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
pub trait Source: Send {
    /// The next complete item. `Ok(None)`: nothing more for now (a polling
    /// source after one pass) or the source closed.
    ///
    /// # Errors
    ///
    /// When the mechanism fails (directory unreadable, listener closed).
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>>;

    /// Tells the source what became of the item with `receipt`. Sources
    /// acknowledge upstream here and nowhere else.
    ///
    /// # Errors
    ///
    /// When the acknowledgement itself fails (archive rename, socket write).
    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>>;

    /// Stops taking new items and finishes acknowledging the settled ones
    /// (an MLLP server sends its last ACKs); items handed out but not
    /// settled are not acknowledged. The default does nothing.
    ///
    /// # Errors
    ///
    /// When the mechanism fails to shut down cleanly.
    fn close(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// What the peer said when an item was delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The raw ACK, for mechanisms that have one (MLLP, REST returning HL7).
    pub ack: Option<Bytes>,
    /// A non-fatal remark (an ACK whose MSA-2 does not match, say).
    pub warning: Option<String>,
}

/// Where items go: a directory, an MLLP peer, an EMR's REST API …
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use transport::mock::MockSink;
/// use transport::{Item, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mock = Arc::new(MockSink::new());
/// let sink: Arc<dyn Sink> = mock.clone();
/// sink.deliver(&Item::new("1", "MSH|^~\\&|A\r")).await?;
/// assert_eq!(mock.delivered().len(), 1);
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
pub trait Sink: Send + Sync {
    /// Delivers one item and returns what the peer answered.
    ///
    /// # Errors
    ///
    /// A failure of the delivery; [`Error::is_retryable`] tells whether
    /// trying again may help.
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>>;
}

impl std::fmt::Debug for dyn Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Sink")
    }
}

impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        (**self).deliver(item)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        (**self).deliver(item)
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>> {
        (**self).recv()
    }

    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>> {
        (**self).settle(receipt, outcome)
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        (**self).close()
    }
}
