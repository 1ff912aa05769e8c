//! Tracing spans per hop carry ids, sizes and outcomes, never PHI.
//!
//! Alone in its own test binary: tracing caches per call site whether
//! anyone listens, and a test on another thread hitting the same call site
//! first with no subscriber would hide it from this one.

use std::sync::{Arc, Mutex};

use transport::mock::{MockSink, MockSource};
use transport::pipeline::{Forwarder, Intake};
use transport::store::{ManualClock, SqliteStore, Store, StoreConfig};
use transport::{Error, ErrorKind, Item};

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

/// A subscriber that keeps what would be printed at INFO and above.
#[derive(Default, Clone)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::INFO
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut out = self.0.lock().unwrap();
        out.push_str(&format!("\nspan {}", span.metadata().name()));
        span.record(&mut Fields(&mut out));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut out = self.0.lock().unwrap();
        out.push_str(&format!("\nevent {}", event.metadata().level()));
        event.record(&mut Fields(&mut out));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn spans_per_hop_carry_ids_and_sizes_never_phi() {
    let capture = Capture::default();
    let log = capture.0.clone();
    tracing::subscriber::with_default(capture, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let clock = ManualClock::new(0);
            let store = store(&clock);
            let bad = "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|Q1|P|2.3\rPID|1||MRN-Q1||DOE^JANE\rBAD LINE\r";
            let items = vec![Item::new("a", msg("T1")), Item::new("b", bad)];
            Intake::new(store.clone(), "emr", "lis").drain(&mut MockSource::new(items)).await.unwrap();
            let sink = Arc::new(MockSink::new());
            sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
            let fwd = Forwarder::new(store.clone(), "lis", sink);
            fwd.drain().await.unwrap();
            fwd.drain().await.unwrap();
        });
    });
    let log = log.lock().unwrap().clone();
    assert!(log.contains("span intake"), "{log}");
    assert!(log.contains("span deliver") && log.contains("message_id=1"), "{log}");
    for event in ["message=stored", "message=delivered", "message=delivery failed"] {
        assert!(log.contains(event), "{event} not in\n{log}");
    }
    for phi in ["MRN", "DOE", "JANE", "Glucose", "PLC-"] {
        assert!(!log.contains(phi), "{phi} in the log:\n{log}");
    }
}
