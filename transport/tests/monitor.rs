//! Metrics and alerts computed from the store, on a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use transport::mock::{MockSink, MockSource};
use transport::monitor::{render_prometheus, AlertKind, AlertRules};
use transport::pipeline::{Forwarder, Intake};
use transport::store::{ManualClock, Retention, SqliteStore, Store, StoreConfig};
use transport::{Error, ErrorKind, Item};

const MINUTE: Duration = Duration::from_secs(60);

fn msg(id: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN-{id}^^^CLINIC^MR||DOE^JANE\r\
         ORC|NW|PLC-{id}\rOBR|1|PLC-{id}||2345-7^Glucose^LN\r"
    )
}

fn store(clock: &ManualClock) -> Arc<dyn Store> {
    let cfg = StoreConfig::new().audit_key("k").clock(Arc::new(clock.clone())).build();
    Arc::new(SqliteStore::open(":memory:", cfg).unwrap())
}

async fn take(store: &Arc<dyn Store>, ids: &[&str]) {
    let items: Vec<Item> = ids.iter().map(|id| Item::new(*id, msg(id))).collect();
    Intake::new(store.clone(), "emr", "lis").drain(&mut MockSource::new(items)).await.unwrap();
}

fn kinds(store: &Arc<dyn Store>, rules: &AlertRules) -> Vec<(AlertKind, String)> {
    rules.check(store.as_ref()).unwrap().into_iter().map(|a| (a.kind, a.subject)).collect()
}

#[tokio::test]
async fn queue_stuck_fires_after_the_limit_and_clears_once_delivered() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = store(&clock);
    let rules = AlertRules::new().none().stuck_after(10 * MINUTE).build();
    take(&store, &["S1", "S2"]).await;
    assert!(kinds(&store, &rules).is_empty());
    clock.advance(10 * MINUTE);
    assert!(kinds(&store, &rules).is_empty(), "at the limit is not over it");
    clock.advance(Duration::from_secs(1));
    let alerts = rules.check(store.as_ref()).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].to_string(), "queue lis stuck: oldest message waiting 601 s (limit 600 s)");

    let snap = store.snapshot(rules.error_window()).unwrap();
    assert_eq!((snap.queues["lis"].depth, snap.queues["lis"].oldest_age_ms), (2, 601_000));
    Forwarder::new(store.clone(), "lis", Arc::new(MockSink::new())).drain().await.unwrap();
    assert!(kinds(&store, &rules).is_empty());
    assert!(store.snapshot(rules.error_window()).unwrap().queues.is_empty());
}

#[tokio::test(start_paused = true)]
async fn error_rate_fires_over_the_threshold_within_the_window_only() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = store(&clock);
    let rules = AlertRules::new().none().error_rate(0.5, 4).window(5 * MINUTE).build();
    take(&store, &["E1", "E2", "E3", "E4"]).await;
    let sink = Arc::new(MockSink::new());
    let fwd = Forwarder::new(store.clone(), "lis", sink.clone()).poison_after(100);
    // one success, then three failed passes: 3 of 4 attempts failed
    fwd.clone().drain().await.unwrap(); // delivers all four
    take(&store, &["E5"]).await;
    for _ in 0..3 {
        sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
        assert!(fwd.drain().await.unwrap().deferred.is_some());
    }
    // 4 successes + 3 failures = 43% : under the limit
    assert!(kinds(&store, &rules).is_empty());
    sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
    fwd.drain().await.unwrap();
    // 4 / 8 = 50%: not over
    assert!(kinds(&store, &rules).is_empty());
    sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
    fwd.drain().await.unwrap();
    let alerts = rules.check(store.as_ref()).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].to_string(), "connection lis: 56% of delivery attempts failed (limit 50%)");

    // the window moves on: old failures no longer count
    clock.advance(5 * MINUTE + Duration::from_millis(1));
    assert!(kinds(&store, &rules).is_empty());
    let snap = store.snapshot(rules.error_window()).unwrap();
    assert_eq!(snap.connections["lis"].failures, 5, "the counter keeps its total");
    assert_eq!(snap.connections["lis"].window_failures, 0);
}

#[tokio::test]
async fn no_traffic_fires_per_connection_and_clears_with_traffic() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = store(&clock);
    let rules = AlertRules::new().none().silent_after(30 * MINUTE).build();
    assert!(kinds(&store, &rules).is_empty(), "a connection never seen is not silent");
    take(&store, &["N1"]).await;
    Forwarder::new(store.clone(), "lis", Arc::new(MockSink::new())).drain().await.unwrap();
    clock.advance(20 * MINUTE);
    take(&store, &["N2"]).await; // emr talks, nothing goes out to lis
    clock.advance(11 * MINUTE);
    assert_eq!(kinds(&store, &rules), [(AlertKind::NoTraffic, "lis".to_owned())]);
    clock.advance(20 * MINUTE);
    assert_eq!(
        kinds(&store, &rules),
        [(AlertKind::NoTraffic, "emr".to_owned()), (AlertKind::NoTraffic, "lis".to_owned())]
    );
    Forwarder::new(store.clone(), "lis", Arc::new(MockSink::new())).drain().await.unwrap();
    assert_eq!(kinds(&store, &rules), [(AlertKind::NoTraffic, "emr".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn prometheus_text_counts_each_hop_and_survives_pruning() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = store(&clock);
    take(&store, &["P1", "P2", "P3"]).await;
    take(&store, &["P1"]).await; // a duplicate
    let sink = Arc::new(MockSink::new());
    sink.push_err(Error::new(ErrorKind::Rejected, "peer answered AE"));
    Forwarder::new(store.clone(), "lis", sink).drain().await.unwrap();
    clock.advance(Duration::from_secs(2));
    let snap = store.snapshot(MINUTE).unwrap();
    let text = render_prometheus(&snap, &[]);
    for line in [
        "# TYPE labbridge_messages_in_total counter",
        "labbridge_messages_in_total{connection=\"emr\"} 4",
        "labbridge_duplicates_total{connection=\"emr\"} 1",
        "labbridge_messages_out_total{connection=\"lis\"} 2",
        "labbridge_failures_total{connection=\"lis\"} 1",
        "labbridge_quarantined_total{connection=\"lis\"} 1",
        "labbridge_last_success_timestamp_seconds{connection=\"lis\"} 1700000000.000",
        "labbridge_quarantine_waiting 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // every sample line is `name{labels} value` or `name value`
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = l.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap_or_else(|_| panic!("bad sample {l:?}"));
    }

    // counters never run backwards, even when the events are pruned
    clock.advance(MINUTE);
    let pruned = store.prune(&Retention::new().max_age(Duration::from_secs(1)).build()).unwrap();
    assert!(pruned.events > 0);
    let after = render_prometheus(&store.snapshot(MINUTE).unwrap(), &[]);
    assert!(after.contains("labbridge_messages_in_total{connection=\"emr\"} 4\n"), "{after}");
    assert!(!after.contains("labbridge_queue_depth{"), "nothing waiting: {after}");
}
