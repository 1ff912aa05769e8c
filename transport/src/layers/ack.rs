//! What an ACK means: a table from outcome to action, like the reply-code
//! actions of the big interface engines.
//!
//! Why matching on MSA-2 is part of the table and not an afterthought: an
//! ACK that answers another message (a late one, after a timeout and a
//! resend) must never be taken as this message's ACK (DOMAIN P6).

use crate::item::{BoxFuture, Delivery, Item, Sink};
use crate::mllp::msa;
use crate::{Error, ErrorKind};

/// What an ACK says, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// MSA-1 `AA` or `CA`.
    Accept,
    /// MSA-1 `AE` or `CE`.
    Error,
    /// MSA-1 `AR` or `CR`.
    Reject,
    /// No MSA segment, an unknown MSA-1, or bytes that are not an ACK.
    NoMsa,
    /// MSA-2 is not the control id of the message sent.
    Mismatch,
}

/// What to do about an [`AckOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckAction {
    /// Delivered.
    Accept,
    /// A retryable failure ([`ErrorKind::NegativeAck`]).
    Retry,
    /// A permanent failure ([`ErrorKind::Rejected`]): quarantine, move on.
    Quarantine,
    /// Stop the queue for an operator ([`ErrorKind::Hold`]).
    Hold,
    /// Go on as the MSA-1 code says, with a warning.
    Warn,
}

/// The table. Default: accept → accept, reject (`AR`) → retry, error
/// (`AE`) → quarantine and move on, no MSA → hold, MSA-2 mismatch → warn.
///
/// # Examples
///
/// ```
/// use transport::layers::{AckAction, AckOutcome, AckPolicy};
///
/// let mut policy = AckPolicy::default();
/// assert_eq!(policy.action(AckOutcome::Error), AckAction::Quarantine);
/// policy.set(AckOutcome::Mismatch, AckAction::Retry);
/// assert_eq!(policy.action(AckOutcome::Mismatch), AckAction::Retry);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckPolicy {
    table: [(AckOutcome, AckAction); 5],
}

impl Default for AckPolicy {
    fn default() -> AckPolicy {
        AckPolicy {
            table: [
                (AckOutcome::Accept, AckAction::Accept),
                (AckOutcome::Error, AckAction::Quarantine),
                (AckOutcome::Reject, AckAction::Retry),
                (AckOutcome::NoMsa, AckAction::Hold),
                (AckOutcome::Mismatch, AckAction::Warn),
            ],
        }
    }
}

impl AckPolicy {
    /// The action for `outcome`.
    pub fn action(&self, outcome: AckOutcome) -> AckAction {
        self.table.iter().find(|(o, _)| *o == outcome).map(|(_, a)| *a).unwrap_or(AckAction::Hold)
    }

    /// Sets the action for `outcome`.
    pub fn set(&mut self, outcome: AckOutcome, action: AckAction) -> &mut Self {
        if let Some(row) = self.table.iter_mut().find(|(o, _)| *o == outcome) {
            row.1 = action;
        }
        self
    }

    /// Classifies an ACK for a message whose MSH-10 is `expected`:
    /// the MSA-1 outcome and whether MSA-2 matches.
    ///
    /// # Examples
    ///
    /// ```
    /// use transport::layers::{AckOutcome, AckPolicy};
    ///
    /// let ack = b"MSH|^~\\&|LIS|LAB|||20240117||ACK|A1|P|2.5.1\rMSA|AR|M1\r";
    /// assert_eq!(AckPolicy::classify(ack, Some("M1")), (AckOutcome::Reject, true));
    /// assert_eq!(AckPolicy::classify(ack, Some("M2")), (AckOutcome::Reject, false));
    /// assert_eq!(AckPolicy::classify(b"garbage", Some("M1")), (AckOutcome::NoMsa, true));
    /// ```
    pub fn classify(ack: &[u8], expected: Option<&str>) -> (AckOutcome, bool) {
        let Some((code, id)) = msa(ack) else { return (AckOutcome::NoMsa, true) };
        let outcome = match code.as_str() {
            "AA" | "CA" => AckOutcome::Accept,
            "AE" | "CE" => AckOutcome::Error,
            "AR" | "CR" => AckOutcome::Reject,
            _ => AckOutcome::NoMsa,
        };
        let matches = expected.is_none_or(|e| e == id);
        (outcome, matches)
    }
}

/// Interprets the inner sink's ACK with an [`AckPolicy`]. A delivery
/// without an ACK (a folder, say) passes through.
///
/// # Examples
///
/// ```
/// use transport::layers::{AckCheck, AckPolicy};
/// use transport::mock::MockSink;
/// use transport::{ErrorKind, Item, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mock = MockSink::new();
/// mock.push_ack("MSH|^~\\&|LIS|LAB|||20240117||ACK|A1|P|2.5.1\rMSA|AE|M1\r");
/// let sink = AckCheck::new(&mock, AckPolicy::default());
/// let e = sink.deliver(&Item::new("1", "MSH|...").with_control_id("M1")).await.unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Rejected);
/// assert_eq!(e.to_string(), "peer answered AE");
/// # }) ;
/// ```
#[derive(Debug)]
pub struct AckCheck<S> {
    inner: S,
    policy: AckPolicy,
}

impl<S> AckCheck<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: AckPolicy) -> AckCheck<S> {
        AckCheck { inner, policy }
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn act(action: AckAction, what: &str, mut d: Delivery) -> Result<Delivery, Error> {
    match action {
        AckAction::Accept => Ok(d),
        AckAction::Warn => {
            d.warning = Some(match d.warning.take() {
                Some(w) => format!("{w}; {what}"),
                None => what.to_owned(),
            });
            Ok(d)
        }
        AckAction::Retry => Err(Error::new(ErrorKind::NegativeAck, what)),
        AckAction::Quarantine => Err(Error::new(ErrorKind::Rejected, what)),
        AckAction::Hold => Err(Error::new(ErrorKind::Hold, what)),
    }
}

impl<S: Sink> Sink for AckCheck<S> {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            let d = self.inner.deliver(item).await?;
            let Some(ack) = d.ack.clone() else { return Ok(d) };
            let expected = item.meta.control_id.as_deref();
            let (outcome, matches) = AckPolicy::classify(&ack, expected);
            let mut d = d;
            if !matches {
                let what = format!("ACK names another message than {}", expected.unwrap_or(""));
                match self.policy.action(AckOutcome::Mismatch) {
                    AckAction::Warn => d = act(AckAction::Warn, &what, d)?,
                    AckAction::Accept => {}
                    other => return act(other, &what, d),
                }
            }
            let what = match (outcome, msa(&ack)) {
                (AckOutcome::NoMsa, _) | (_, None) => "ACK without a usable MSA".to_owned(),
                (_, Some((code, _))) => format!("peer answered {code}"),
            };
            let action = self.policy.action(outcome);
            act(action, &what, d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockSink;

    fn ack(code: &str, id: &str) -> String {
        format!("MSH|^~\\&|LIS|LAB|||20240117||ACK|A1|P|2.5.1\rMSA|{code}|{id}\r")
    }

    async fn run(policy: &AckPolicy, ack_bytes: Option<String>) -> Result<Delivery, Error> {
        let mock = MockSink::new();
        match ack_bytes {
            Some(a) => mock.push_ack(a),
            None => mock.push_ok(),
        }
        AckCheck::new(&mock, policy.clone()).deliver(&Item::new("1", "MSH").with_control_id("M1")).await
    }

    #[tokio::test]
    async fn default_table() {
        let p = AckPolicy::default();
        assert!(run(&p, Some(ack("AA", "M1"))).await.unwrap().warning.is_none());
        assert!(run(&p, Some(ack("CA", "M1"))).await.is_ok());
        assert_eq!(run(&p, Some(ack("AR", "M1"))).await.unwrap_err().kind(), ErrorKind::NegativeAck);
        assert_eq!(run(&p, Some(ack("CR", "M1"))).await.unwrap_err().kind(), ErrorKind::NegativeAck);
        assert_eq!(run(&p, Some(ack("AE", "M1"))).await.unwrap_err().kind(), ErrorKind::Rejected);
        let e = run(&p, Some("MSH|^~\\&|LIS|LAB|||x||ACK|A1|P|2.5.1\r".into())).await.unwrap_err();
        assert_eq!((e.kind(), e.to_string().as_str()), (ErrorKind::Hold, "ACK without a usable MSA"));
        let d = run(&p, Some(ack("AA", "OLD"))).await.unwrap();
        assert_eq!(d.warning.as_deref(), Some("ACK names another message than M1"));
        // no ACK at all (a folder): passes
        assert!(run(&p, None).await.is_ok());
    }

    #[tokio::test]
    async fn configured_table() {
        let mut p = AckPolicy::default();
        p.set(AckOutcome::Mismatch, AckAction::Retry).set(AckOutcome::Error, AckAction::Retry);
        assert_eq!(run(&p, Some(ack("AA", "OLD"))).await.unwrap_err().kind(), ErrorKind::NegativeAck);
        assert_eq!(run(&p, Some(ack("AE", "M1"))).await.unwrap_err().kind(), ErrorKind::NegativeAck);
        p.set(AckOutcome::NoMsa, AckAction::Quarantine);
        assert_eq!(run(&p, Some("junk".into())).await.unwrap_err().kind(), ErrorKind::Rejected);
    }
}
