//! One error shape for the crate: what failed, with which peer, and whether
//! trying again can help.
//!
//! Why a retryability verdict on the error and not a list of retryable
//! types in the retry layer: the mechanism that saw the failure knows best
//! (a refused TCP connect is worth retrying, an `AE` from the peer is not),
//! and every layer above can then decide without knowing the mechanism.

use std::fmt;
use std::sync::Arc;

/// What failed. New kinds may be added in minor releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing a file or socket failed.
    Io,
    /// The peer could not be reached.
    Connect,
    /// No answer (or no ACK) within the configured time.
    Timeout,
    /// The connection closed before the exchange finished.
    Closed,
    /// The peer refused the message for now (MSA-1 `AR`/`CR` by default): retry.
    NegativeAck,
    /// The peer refused the message for good (MSA-1 `AE`/`CE` by default):
    /// quarantine it and move on.
    Rejected,
    /// The answer cannot be acted upon automatically (an ACK without MSA by
    /// default): hold the queue for an operator.
    Hold,
    /// An MLLP frame or a message over the configured maximum length.
    TooLarge,
    /// The peer spoke something else than the protocol.
    Protocol,
    /// The retry budget is spent: the message stays queued for later.
    BudgetExhausted,
    /// The durable store failed.
    Store,
    /// The audit trail does not verify: an event was changed or removed.
    Tampered,
    /// Bad configuration or arguments.
    Config,
    /// No such item (quarantine entry, message).
    NotFound,
}

impl ErrorKind {
    /// Whether trying the same thing again later can succeed.
    ///
    /// # Examples
    ///
    /// ```
    /// use transport::ErrorKind;
    ///
    /// assert!(ErrorKind::Timeout.is_retryable());
    /// assert!(!ErrorKind::Rejected.is_retryable());
    /// ```
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Io
                | ErrorKind::Connect
                | ErrorKind::Timeout
                | ErrorKind::Closed
                | ErrorKind::NegativeAck
                | ErrorKind::BudgetExhausted
        )
    }
}

/// A transport error: its [`ErrorKind`], a short fixed message, and the
/// peer (host, directory) it concerns when known.
///
/// Messages never contain message bodies or patient data, only ids, sizes
/// and reasons, so they are safe to log.
///
/// # Examples
///
/// ```
/// use transport::{Error, ErrorKind};
///
/// let e = Error::new(ErrorKind::Timeout, "no ACK within 30 s").with_peer("127.0.0.1:2575");
/// assert_eq!(e.to_string(), "127.0.0.1:2575: no ACK within 30 s");
/// assert!(e.is_retryable());
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    peer: Option<String>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), peer: None, source: None }
    }

    /// Names the peer (host:port, URL or directory) the error concerns.
    pub fn with_peer(mut self, peer: impl Into<String>) -> Error {
        self.peer = Some(peer.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn io(e: std::io::Error, what: impl fmt::Display) -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionRefused => ErrorKind::Connect,
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Closed,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{what}: {e}")).with_source(e)
    }

    pub(crate) fn store(e: rusqlite::Error) -> Error {
        Error::new(ErrorKind::Store, format!("store: {e}")).with_source(e)
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The short message, without the peer.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The peer the error concerns, when known.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// Shorthand for [`ErrorKind::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::io(e, "I/O error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_messages() {
        let e = Error::new(ErrorKind::Rejected, "peer answered AE").with_peer("lis:2575");
        assert_eq!(e.to_string(), "lis:2575: peer answered AE");
        let e = Error::io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused), "connect");
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().starts_with("connect: "));
    }

    #[test]
    fn retryable_kinds() {
        for k in [ErrorKind::Rejected, ErrorKind::Hold, ErrorKind::TooLarge, ErrorKind::Tampered] {
            assert!(!k.is_retryable(), "{k:?}");
        }
    }
}
