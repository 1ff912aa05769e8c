//! REST: an HTTP client [`Sink`](crate::Sink) that posts messages to an
//! EMR's API, and an HTTP server [`Source`](crate::Source) where an EMR
//! pushes orders and fetches results.
//!
//! Why HTTP status codes map to error kinds here and not in the retry
//! layer: only this mechanism knows that `503` means "later" while `422`
//! means "never" (see [`status_error`]). Authentication and addressing
//! failures (`401`, `403`, `404`, `405`) are neither: retrying cannot help
//! and the message is not at fault, so they [hold](crate::ErrorKind::Hold)
//! the queue for an operator instead of sending every message to quarantine.
//!
//! Why the server answers a push only after the settle: a `2xx` tells the
//! EMR it may forget the order, so it must not leave before the order is
//! durably stored (DOMAIN P15). A push that could not be stored gets `503`
//! and the EMR sends it again; de-duplication then keeps it from being
//! stored twice. Results are fetched one at a time with `GET` and leave the
//! outbox only when the EMR confirms them by id, so a response lost on the
//! way is fetched again, with the same `Message-Id`.

mod client;
mod server;

pub use client::{Auth, BodyFormat, HttpOptions, HttpSink, OAuth2};
pub use server::{RestServer, RestServerOptions};

use crate::{Error, ErrorKind};

/// The header carrying the message id: on a push it is the idempotency key
/// the receiver may de-duplicate by; on a fetched result it is the id to
/// confirm.
pub const MESSAGE_ID: &str = "message-id";

/// What an HTTP status means for a delivery, as an [`Error`] (`None` for
/// `2xx`).
///
/// # Examples
///
/// ```
/// use transport::rest::status_error;
/// use transport::ErrorKind;
///
/// assert!(status_error(201).is_none());
/// assert!(status_error(503).unwrap().is_retryable());
/// assert!(status_error(429).unwrap().is_retryable());
/// assert_eq!(status_error(422).unwrap().kind(), ErrorKind::Rejected);
/// assert_eq!(status_error(401).unwrap().kind(), ErrorKind::Hold);
/// assert_eq!(status_error(500).unwrap().to_string(), "HTTP 500 Internal Server Error");
/// ```
pub fn status_error(status: u16) -> Option<Error> {
    let kind = match status {
        200..=299 => return None,
        // the request timed out or was throttled: later
        408 | 429 => ErrorKind::NegativeAck,
        // credentials or address wrong: an operator must act, no message is at fault
        401 | 403 | 404 | 405 => ErrorKind::Hold,
        400..=499 => ErrorKind::Rejected,
        500..=599 => ErrorKind::NegativeAck,
        _ => ErrorKind::Protocol,
    };
    let reason = axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    let text = match reason {
        Some(r) => format!("HTTP {status} {r}"),
        None => format!("HTTP {status}"),
    };
    Some(Error::new(kind, text))
}
