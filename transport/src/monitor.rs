//! Monitoring: metrics in Prometheus text format and alert conditions
//! computed from the store.
//!
//! Why from the store and not from counters in memory: the store is what
//! survives a restart and what every process sharing it sees, so
//! `labbridge transport metrics --store DB` run by cron or a node exporter
//! tells the same story as the engine itself. The store keeps one durable
//! counter per connection and event kind, updated in the same transaction
//! as the audit event it counts, so counters never run backwards — not
//! after a restart, not after [retention](crate::store::Store::prune) removed
//! the events they counted.
//!
//! Why alerts are values and not log lines: an operator's tooling must be
//! able to act on them (page, exit 1 in a health check), and a test must be
//! able to prove each one fires and clears. [`AlertRules::evaluate`] is a
//! pure function of a [`Snapshot`]; the snapshot's times come from the
//! store's [`Clock`](crate::store::Clock), so tests move time by hand.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use transport::monitor::{render_prometheus, AlertKind, AlertRules};
//! use transport::store::{Batch, Entry, ManualClock, NewMessage, SqliteStore, Store, StoreConfig};
//!
//! let clock = ManualClock::new(1_700_000_000_000);
//! let store = SqliteStore::open(":memory:", StoreConfig::new().clock(Arc::new(clock.clone())).build())?;
//! let msg = NewMessage { bytes: "MSH|^~\\&|A\r".into(), ..Default::default() };
//! store.ingest(&Batch { connection: "emr".into(), queue: "lis".into(), entries: vec![Entry::Message(msg)] })?;
//!
//! let rules = AlertRules::new().stuck_after(Duration::from_secs(600)).build();
//! assert!(rules.check(&store)?.is_empty());
//! clock.advance(Duration::from_secs(601)); // nobody delivers
//! let alerts = rules.check(&store)?;
//! assert_eq!(alerts[0].kind, AlertKind::QueueStuck);
//! assert_eq!(alerts[0].to_string(), "queue lis stuck: oldest message waiting 601 s (limit 600 s)");
//!
//! let text = render_prometheus(&store.snapshot(rules.error_window())?, &alerts);
//! assert!(text.contains("labbridge_messages_in_total{connection=\"emr\"} 1\n"));
//! assert!(text.contains("labbridge_queue_depth{queue=\"lis\"} 1\n"));
//! assert!(text.contains("labbridge_alert{alert=\"queue_stuck\",subject=\"lis\"} 1\n"));
//! # Ok::<(), transport::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::store::Store;
use crate::Error;

/// What the store knows at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When (store clock, ms since the epoch).
    pub at: i64,
    /// The window the `window_*` counts cover, in milliseconds.
    pub window_ms: i64,
    /// Per connection (inbound connections and outbound queues alike).
    pub connections: BTreeMap<String, ConnectionStats>,
    /// Per queue with messages waiting.
    pub queues: BTreeMap<String, QueueStats>,
    /// Quarantine entries waiting for an operator.
    pub quarantine_waiting: u64,
}

/// Counters of one connection since the store was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Items received (`received` events, including those quarantined).
    pub messages_in: u64,
    /// Messages the peer confirmed (`acknowledged` events).
    pub messages_out: u64,
    /// Failed delivery passes (`failed` events).
    pub failures: u64,
    /// Retried attempts within a pass (`retried` events).
    pub retries: u64,
    /// Messages and files sent to quarantine.
    pub quarantined: u64,
    /// Duplicates recorded and not queued.
    pub duplicates: u64,
    /// Last item received (ms since the epoch).
    pub last_in: Option<i64>,
    /// Last confirmed delivery (ms since the epoch).
    pub last_success: Option<i64>,
    /// Failed attempts (`failed` + `retried`) within the window.
    pub window_failures: u64,
    /// Confirmed deliveries within the window.
    pub window_successes: u64,
}

impl ConnectionStats {
    /// The last time anything went in or out successfully.
    pub fn last_traffic(&self) -> Option<i64> {
        self.last_in.max(self.last_success)
    }
}

/// A queue with messages waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting.
    pub depth: u64,
    /// How long the oldest has been waiting, in milliseconds.
    pub oldest_age_ms: i64,
}

/// Which condition fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// A queue's oldest message waits longer than the limit.
    QueueStuck,
    /// Too many failed delivery attempts within the window.
    ErrorRate,
    /// A connection had no traffic for longer than the limit.
    NoTraffic,
}

impl AlertKind {
    /// `queue_stuck`, `error_rate` or `no_traffic`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::QueueStuck => "queue_stuck",
            AlertKind::ErrorRate => "error_rate",
            AlertKind::NoTraffic => "no_traffic",
        }
    }
}

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Which.
    pub kind: AlertKind,
    /// The queue or connection.
    pub subject: String,
    /// The measured value (seconds, or a ratio for the error rate).
    pub value: f64,
    /// The limit it crossed.
    pub limit: f64,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AlertKind::QueueStuck => write!(
                f,
                "queue {} stuck: oldest message waiting {:.0} s (limit {:.0} s)",
                self.subject, self.value, self.limit
            ),
            AlertKind::ErrorRate => write!(
                f,
                "connection {}: {:.0}% of delivery attempts failed (limit {:.0}%)",
                self.subject,
                self.value * 100.0,
                self.limit * 100.0
            ),
            AlertKind::NoTraffic => {
                write!(f, "connection {}: no traffic for {:.0} s (limit {:.0} s)", self.subject, self.value, self.limit)
            }
        }
    }
}

/// When to alert. A config builder: set, then [`build`](AlertRules::build).
///
/// Defaults: a queue is stuck after 15 minutes, the error rate limit is
/// 50% of at least 10 attempts in a 15-minute window, and a connection is
/// silent after 60 minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRules {
    stuck_after: Option<Duration>,
    error_rate: Option<f64>,
    min_attempts: u64,
    pub(crate) window: Duration,
    silent_after: Option<Duration>,
}

impl Default for AlertRules {
    fn default() -> AlertRules {
        AlertRules {
            stuck_after: Some(Duration::from_secs(15 * 60)),
            error_rate: Some(0.5),
            min_attempts: 10,
            window: Duration::from_secs(15 * 60),
            silent_after: Some(Duration::from_secs(60 * 60)),
        }
    }
}

impl AlertRules {
    /// The defaults.
    pub fn new() -> AlertRules {
        AlertRules::default()
    }

    /// A queue is stuck when its oldest message waits longer than `limit`.
    pub fn stuck_after(&mut self, limit: Duration) -> &mut Self {
        self.stuck_after = Some(limit);
        self
    }

    /// Alert when more than `ratio` (0..=1) of the delivery attempts of a
    /// connection within the window failed, counting only once there were
    /// at least `min_attempts` (one failure in one attempt is no trend).
    pub fn error_rate(&mut self, ratio: f64, min_attempts: u64) -> &mut Self {
        self.error_rate = Some(ratio);
        self.min_attempts = min_attempts.max(1);
        self
    }

    /// The window of the error rate.
    pub fn window(&mut self, window: Duration) -> &mut Self {
        self.window = window;
        self
    }

    /// A connection is silent when nothing went in or out successfully for
    /// longer than `limit`.
    pub fn silent_after(&mut self, limit: Duration) -> &mut Self {
        self.silent_after = Some(limit);
        self
    }

    /// Turns every rule off (then switch on the ones wanted).
    pub fn none(&mut self) -> &mut Self {
        self.stuck_after = None;
        self.error_rate = None;
        self.silent_after = None;
        self
    }

    /// A copy of these settings.
    pub fn build(&self) -> AlertRules {
        self.clone()
    }

    /// The error-rate window: what to pass to [`Store::snapshot`].
    pub fn error_window(&self) -> Duration {
        self.window
    }

    /// The conditions that hold in `snap`, queues first, then connections,
    /// each in name order.
    pub fn evaluate(&self, snap: &Snapshot) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let Some(limit) = self.stuck_after {
            for (queue, q) in &snap.queues {
                if q.depth > 0 && q.oldest_age_ms > limit.as_millis() as i64 {
                    alerts.push(Alert {
                        kind: AlertKind::QueueStuck,
                        subject: queue.clone(),
                        value: q.oldest_age_ms as f64 / 1000.0,
                        limit: limit.as_secs_f64(),
                    });
                }
            }
        }
        for (name, c) in &snap.connections {
            if let Some(limit) = self.error_rate {
                let attempts = c.window_failures + c.window_successes;
                if attempts >= self.min_attempts {
                    let rate = c.window_failures as f64 / attempts as f64;
                    if rate > limit {
                        alerts.push(Alert { kind: AlertKind::ErrorRate, subject: name.clone(), value: rate, limit });
                    }
                }
            }
            if let (Some(limit), Some(last)) = (self.silent_after, c.last_traffic()) {
                let quiet = snap.at - last;
                if quiet > limit.as_millis() as i64 {
                    alerts.push(Alert {
                        kind: AlertKind::NoTraffic,
                        subject: name.clone(),
                        value: quiet as f64 / 1000.0,
                        limit: limit.as_secs_f64(),
                    });
                }
            }
        }
        alerts
    }

    /// Snapshots `store` over the window and evaluates.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub fn check(&self, store: &dyn Store) -> Result<Vec<Alert>, Error> {
        Ok(self.evaluate(&store.snapshot(self.window)?))
    }
}

fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The snapshot (and the alerts that hold) in the Prometheus text
/// exposition format, version 0.0.4: one `# HELP` and `# TYPE` per metric,
/// label values escaped, times in seconds.
pub fn render_prometheus(snap: &Snapshot, alerts: &[Alert]) -> String {
    let mut out = String::new();
    let mut emit =
        |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| family(&mut out, name, kind, help, rows);
    let per_conn = |f: &dyn Fn(&ConnectionStats) -> Option<String>| -> Vec<(String, String)> {
        snap.connections.iter().filter_map(|(n, c)| f(c).map(|v| (format!("connection=\"{}\"", label(n)), v))).collect()
    };
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    emit(
        "labbridge_messages_in_total",
        "counter",
        "Items received, stored or quarantined.",
        per_conn(&|c| Some(c.messages_in.to_string())),
    );
    emit(
        "labbridge_messages_out_total",
        "counter",
        "Messages delivered and confirmed by the peer.",
        per_conn(&|c| Some(c.messages_out.to_string())),
    );
    emit("labbridge_failures_total", "counter", "Failed delivery passes.", per_conn(&|c| Some(c.failures.to_string())));
    emit("labbridge_retries_total", "counter", "Retried attempts.", per_conn(&|c| Some(c.retries.to_string())));
    emit(
        "labbridge_quarantined_total",
        "counter",
        "Messages and files sent to quarantine.",
        per_conn(&|c| Some(c.quarantined.to_string())),
    );
    emit(
        "labbridge_duplicates_total",
        "counter",
        "Duplicates recorded and not queued.",
        per_conn(&|c| Some(c.duplicates.to_string())),
    );
    emit(
        "labbridge_last_success_timestamp_seconds",
        "gauge",
        "Time of the last confirmed delivery.",
        per_conn(&|c| c.last_success.map(secs)),
    );
    emit(
        "labbridge_last_received_timestamp_seconds",
        "gauge",
        "Time of the last item received.",
        per_conn(&|c| c.last_in.map(secs)),
    );
    let queues = |f: &dyn Fn(&QueueStats) -> String| -> Vec<(String, String)> {
        snap.queues.iter().map(|(n, q)| (format!("queue=\"{}\"", label(n)), f(q))).collect()
    };
    emit("labbridge_queue_depth", "gauge", "Messages waiting.", queues(&|q| q.depth.to_string()));
    emit(
        "labbridge_queue_oldest_age_seconds",
        "gauge",
        "How long the oldest waiting message has waited.",
        queues(&|q| secs(q.oldest_age_ms)),
    );
    emit(
        "labbridge_quarantine_waiting",
        "gauge",
        "Quarantine entries waiting for an operator.",
        vec![(String::new(), snap.quarantine_waiting.to_string())],
    );
    let rows = alerts
        .iter()
        .map(|a| (format!("alert=\"{}\",subject=\"{}\"", a.kind.as_str(), label(&a.subject)), "1".to_owned()))
        .collect();
    emit("labbridge_alert", "gauge", "Alert conditions that hold now.", rows);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn error_rate_needs_enough_attempts() {
        let mut snap = Snapshot { at: 0, ..Snapshot::default() };
        let c = ConnectionStats { window_failures: 3, window_successes: 0, ..ConnectionStats::default() };
        snap.connections.insert("emr".into(), c);
        let rules = AlertRules::new().none().error_rate(0.5, 4).build();
        assert!(rules.evaluate(&snap).is_empty());
        snap.connections.get_mut("emr").unwrap().window_failures = 4;
        assert_eq!(
            rules.evaluate(&snap)[0].to_string(),
            "connection emr: 100% of delivery attempts failed (limit 50%)"
        );
    }
}
