//! Retry with exponential back-off, jitter and a budget.
//!
//! Why a budget and not only a maximum number of attempts (tower's
//! argument): when a peer is down, every message retrying N times multiplies
//! the load by N exactly when the peer can least take it — the
//! retransmission storm of DOMAIN P6. A budget lets retries be at most a
//! fraction of the traffic (plus a small reserve); once spent, the message
//! stays queued and the forwarder tries again on its next pass. The maximum
//! number of attempts bounds one pass; the
//! [`Forwarder`](crate::pipeline::Forwarder) counts failed passes per message
//! across restarts and sends a poison message to quarantine so the queue
//! keeps moving.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::item::{BoxFuture, Delivery, Item, Sink};
use crate::{Error, ErrorKind};

/// Called before each retry with the item, the attempt that failed (from
/// 1), its error and the delay before the next one.
pub type RetryHook = Arc<dyn Fn(&Item, u32, &Error, Duration) + Send + Sync>;

/// Exponential back-off with proportional jitter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use transport::layers::Backoff;
///
/// let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(0.0);
/// assert_eq!(b.delay(1, 0.5), Duration::from_secs(1));
/// assert_eq!(b.delay(3, 0.5), Duration::from_secs(4));
/// assert_eq!(b.delay(30, 0.5), Duration::from_secs(60));
/// let j = b.jitter(0.5);
/// assert_eq!(j.delay(3, 1.0), Duration::from_secs(2)); // up to half taken off
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Doubling from `base` up to `max`, with 20 % jitter.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, jitter: 0.2 }
    }

    /// The fraction of each delay (0 to 1) that jitter may take off, so
    /// that senders that failed together do not retry together.
    pub fn jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The delay after failed attempt `attempt` (from 1), for a random
    /// `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let full = self.base.saturating_mul(1u32 << exp.min(31)).min(self.max);
        full.mul_f64(1.0 - self.jitter * unit.clamp(0.0, 1.0))
    }
}

/// A retry budget shared by every message of a connection: a reserve of
/// retries, refilled by a fraction of a retry per delivery.
///
/// # Examples
///
/// ```
/// use transport::layers::Budget;
///
/// let budget = Budget::new(2, 0.1);
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw()); // spent
/// for _ in 0..10 { budget.deposit(); }
/// assert!(budget.withdraw());  // ten deliveries earned one retry
/// ```
#[derive(Debug)]
pub struct Budget {
    tokens: Mutex<f64>,
    reserve: f64,
    ratio: f64,
}

impl Budget {
    /// `reserve` retries at most in hand, `ratio` of a retry earned per delivery.
    pub fn new(reserve: u32, ratio: f64) -> Budget {
        Budget { tokens: Mutex::new(f64::from(reserve)), reserve: f64::from(reserve), ratio: ratio.max(0.0) }
    }

    /// Earns `ratio` of a retry (called once per delivery).
    pub fn deposit(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t + self.ratio).min(self.reserve.max(1.0));
    }

    /// Spends one retry, if there is one.
    pub fn withdraw(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *t >= 1.0 - 1e-9 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }
}

/// When and how often to retry.
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<Arc<Budget>>,
    hook: Option<RetryHook>,
    seed: u64,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s doubling to 5 min, 20 % jitter, no budget.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            budget: None,
            hook: None,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl RetryPolicy {
    /// At most `n` attempts per delivery (the first included).
    pub fn max_attempts(mut self, n: u32) -> RetryPolicy {
        self.max_attempts = n.max(1);
        self
    }

    /// The back-off between attempts.
    pub fn backoff(mut self, b: Backoff) -> RetryPolicy {
        self.backoff = b;
        self
    }

    /// A budget shared with other layers or connections.
    pub fn budget(mut self, b: Arc<Budget>) -> RetryPolicy {
        self.budget = Some(b);
        self
    }

    /// Called before each retry (the pipeline records a `retried` audit event).
    pub fn on_retry(mut self, hook: RetryHook) -> RetryPolicy {
        self.hook = Some(hook);
        self
    }

    /// Seed of the jitter's pseudo-random sequence (tests pin it).
    pub fn seed(mut self, seed: u64) -> RetryPolicy {
        self.seed = seed | 1;
        self
    }
}

/// Retries retryable failures of the inner sink; permanent ones pass
/// through at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use transport::layers::{Backoff, Retry, RetryPolicy};
/// use transport::mock::MockSink;
/// use transport::{Error, ErrorKind, Item, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let mock = MockSink::new();
/// mock.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
/// let sink = Retry::new(&mock, RetryPolicy::default().backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(8))));
/// sink.deliver(&Item::new("1", "MSH|^~\\&|A\r")).await?; // fails once, then succeeds
/// assert_eq!(mock.calls(), 2);
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
    rng: Mutex<u64>,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Retry<S> {
        let seed = policy.seed | 1;
        Retry { inner, policy, rng: Mutex::new(seed) }
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn unit(&self) -> f64 {
        // xorshift64*: enough to spread retries, no dependency.
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<S: Sink> Sink for Retry<S> {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            if let Some(b) = &self.policy.budget {
                b.deposit();
            }
            let mut attempt = 1;
            loop {
                let err = match self.inner.deliver(item).await {
                    Ok(d) => return Ok(d),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => e,
                };
                if attempt >= self.policy.max_attempts {
                    // Same kind: whether the message is poison or the peer
                    // is down is the forwarder's call, across passes.
                    let mut out =
                        Error::new(err.kind(), format!("gave up after {attempt} attempts: {}", err.message()));
                    if let Some(p) = err.peer() {
                        out = out.with_peer(p);
                    }
                    return Err(out);
                }
                if let Some(b) = &self.policy.budget {
                    if !b.withdraw() {
                        let mut out = Error::new(
                            ErrorKind::BudgetExhausted,
                            format!("retry budget spent after {attempt} attempts: {}", err.message()),
                        );
                        if let Some(p) = err.peer() {
                            out = out.with_peer(p);
                        }
                        return Err(out);
                    }
                }
                let delay = self.policy.backoff.delay(attempt, self.unit());
                if let Some(hook) = &self.policy.hook {
                    hook(item, attempt, &err, delay);
                }
                tracing::debug!(message = %item.id, attempt, error = %err, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        })
    }
}

impl<S: Sink + ?Sized> Sink for &S {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        (**self).deliver(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockSink;
    use tokio::time::Instant;

    fn item() -> Item {
        Item::new("1", "MSH|^~\\&|A\r")
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::default().backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).jitter(0.0))
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_exponentially_on_virtual_time() {
        let mock = MockSink::new();
        for _ in 0..3 {
            mock.push_err(Error::new(ErrorKind::Connect, "refused"));
        }
        let sink = Retry::new(&mock, policy());
        let start = Instant::now();
        sink.deliver(&item()).await.unwrap();
        assert_eq!(mock.calls(), 4);
        // 1 + 2 + 4 seconds of paused (virtual) time, not wall-clock.
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mock = MockSink::new();
        mock.push_err(Error::new(ErrorKind::Rejected, "peer answered AE"));
        let sink = Retry::new(&mock, policy());
        let e = sink.deliver(&item()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected);
        assert_eq!(mock.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_keeping_the_kind() {
        let mock = MockSink::new();
        for _ in 0..10 {
            mock.push_err(Error::new(ErrorKind::Timeout, "no ACK").with_peer("lis:2575"));
        }
        let sink = Retry::new(&mock, policy().max_attempts(3));
        let e = sink.deliver(&item()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.to_string(), "lis:2575: gave up after 3 attempts: no ACK");
        assert_eq!(mock.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_limits_retries_across_messages() {
        let mock = MockSink::new();
        for _ in 0..10 {
            mock.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
        }
        let budget = Arc::new(Budget::new(2, 0.0));
        let sink = Retry::new(&mock, policy().max_attempts(10).budget(budget));
        let e = sink.deliver(&item()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BudgetExhausted);
        assert_eq!(mock.calls(), 3); // first try + 2 budgeted retries
        assert!(e.is_retryable(), "the message stays queued");
    }

    #[tokio::test(start_paused = true)]
    async fn hook_sees_each_retry_and_jitter_stays_in_bounds() {
        let mock = MockSink::new();
        for _ in 0..4 {
            mock.push_err(Error::new(ErrorKind::Closed, "closed"));
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let hook: RetryHook = Arc::new(move |_, attempt, _, delay| s2.lock().unwrap().push((attempt, delay)));
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).jitter(0.5);
        let sink = Retry::new(&mock, RetryPolicy::default().backoff(b).on_retry(hook).seed(42));
        sink.deliver(&item()).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        for &(attempt, delay) in seen.iter() {
            let full = Duration::from_secs(1 << (attempt - 1));
            assert!(delay <= full && delay >= full / 2, "{attempt}: {delay:?}");
        }
    }
}
