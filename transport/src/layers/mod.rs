//! Layers wrapped around any [`Sink`](crate::Sink), tower-style: each does
//! one thing, is a `Sink` itself, and is tested alone against
//! [`mock`](crate::mock) sinks on paused tokio time.
//!
//! ```
//! use transport::layers::{AckCheck, AckPolicy, Retry, RetryPolicy};
//! use transport::mock::MockSink;
//!
//! // retry outside, ACK interpretation inside: an `AR` becomes a retryable
//! // error that the retry layer then repeats with back-off.
//! let sink = Retry::new(AckCheck::new(MockSink::new(), AckPolicy::default()), RetryPolicy::default());
//! # let _ = sink;
//! ```

mod ack;
mod retry;

pub use ack::{AckAction, AckCheck, AckOutcome, AckPolicy};
pub use retry::{Backoff, Budget, Retry, RetryHook, RetryPolicy};
