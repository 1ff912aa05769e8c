//! `transport`: LabBridge's pipes — folders, MLLP, REST and SFTP behind two
//! small traits, with store-and-forward, retries, de-duplication, quarantine and
//! a tamper-evident audit trail around them.
//!
//! ```
//! use std::sync::Arc;
//! use transport::audit::{AuditQuery, EventKind};
//! use transport::folder::{FolderOptions, FolderSink, FolderSource};
//! use transport::pipeline::{Forwarder, Intake};
//! use transport::store::{SqliteStore, Store, StoreConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (inbox, outbox, db) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
//! // An EMR dropped a file of two orders, the second one broken.
//! std::fs::write(
//!     inbox.path().join("orders.hl7"),
//!     "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|ORD1|P|2.3\rPID|1||MRN1\r\
//!      MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|ORD2|P|2.3\rPID|1||MRN2\rBAD LINE\r",
//! )?;
//!
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db.path().join("lb.db"), StoreConfig::default())?);
//! let mut source = FolderSource::new(inbox.path(), FolderOptions::default());
//! source.scan()?; // a file is taken only once two scans agree it is complete
//!
//! // 1. store (the file is archived only after the commit) ...
//! let intake = Intake::new(store.clone(), "emr-sftp", "lis");
//! let taken = intake.drain(&mut source).await?;
//! assert_eq!((taken.stored.queued.len(), taken.stored.quarantined.len()), (1, 1));
//!
//! // 2. ... and forward (a message leaves the queue only once delivered)
//! let sink = Arc::new(FolderSink::new(outbox.path()));
//! let sent = Forwarder::new(store.clone(), "lis", sink).drain().await?;
//! assert_eq!(sent.delivered.len(), 1);
//!
//! // the broken message waits in quarantine with its bytes and the reason
//! let q = &store.quarantined(false)?[0];
//! assert_eq!(q.reason, "invalid segment name at byte 138");
//! assert!(q.bytes.ends_with(b"BAD LINE\r"));
//!
//! // every hop is in the audit trail, which verifies
//! let trail = store.audit(&AuditQuery::new().control_id("ORD1"))?;
//! let kinds: Vec<EventKind> = trail.iter().map(|e| e.kind).collect();
//! use EventKind::*;
//! assert_eq!(kinds, [Received, Parsed, Queued, Sent, Acknowledged]);
//! store.verify_audit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # Pieces
//!
//! - Mechanisms implement [`Source`] (items come in, and are
//!   [settled](Source::settle) once stored) and/or [`Sink`] (an item goes
//!   out and the peer's answer comes back): [`folder`], [`mllp`], [`rest`]
//!   (HTTP client sink, HTTP server source), [`sftp`] (remote inbox and outbox).
//! - [`layers`] wrap any sink: [`Retry`](layers::Retry) (back-off, jitter,
//!   budget) and [`AckCheck`](layers::AckCheck) (the ACK policy table).
//! - [`store`] is the durable state behind one trait; [`SqliteStore`](store::SqliteStore)
//!   is the embedded default.
//! - [`pipeline`] connects them: [`Intake`](pipeline::Intake) stores what a
//!   source yields, [`Forwarder`](pipeline::Forwarder) drains a queue into a sink.
//! - [`audit`] events are written by the store in the same transactions as
//!   the data they describe.
//! - [`mock`] has test doubles of the traits for paused-time tests.
//!
//! Nothing here logs message content or patient names: logs and the audit
//! trail carry ids, sizes, hashes and reasons only.

#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

pub mod audit;
mod error;
pub mod folder;
mod item;
pub mod layers;
pub mod mllp;
pub mod mock;
pub mod monitor;
pub mod pipeline;
mod replies;
pub mod rest;
pub mod sftp;
pub mod store;

pub use error::{Error, ErrorKind};
pub use item::{content_hash, BoxFuture, Delivery, Inbound, Item, Meta, Settle, Sink, Source};

/// Compile-time proof that the traits stay object-safe: this function
/// would not compile otherwise.
#[allow(dead_code)]
fn _object_safety(_: &dyn Source, _: &dyn Sink, _: &dyn store::Store, _: &dyn store::Clock) {}
