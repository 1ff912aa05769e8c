//! REST both ends on 127.0.0.1 (ephemeral ports): the HTTP sink against the
//! server source, and against scripted peers that fail, throttle, hang or
//! want OAuth2. Timeouts run on paused tokio time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use transport::audit::{AuditQuery, EventKind};
use transport::layers::{Backoff, Retry, RetryPolicy};
use transport::pipeline::{audit_retries, Forwarder, Intake};
use transport::rest::{Auth, HttpOptions, HttpSink, OAuth2, RestServer, RestServerOptions};
use transport::store::{Batch, Entry, NewMessage, SqliteStore, Store, StoreConfig};
use transport::{ErrorKind, Item, Sink, Source};

fn msg(id: &str) -> String {
    format!("MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN{id}\r")
}

fn item(id: &str) -> Item {
    Item::new(id, msg(id)).with_control_id(id)
}

fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap())
}

/// The lab's endpoint: REST server → intake → store, until the test ends.
async fn lab(opts: RestServerOptions) -> (String, Arc<dyn Store>, tokio::task::JoinHandle<()>) {
    let store = match &opts.results {
        Some((s, _)) => s.clone(),
        None => memory_store(),
    };
    let mut server = RestServer::bind("127.0.0.1:0", opts).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let intake = Intake::new(store.clone(), "rest-in", "lis");
    let task = tokio::spawn(async move {
        while let Ok(Some(inbound)) = server.recv().await {
            intake.take(&mut server, inbound).await.unwrap();
        }
    });
    (base, store, task)
}

/// A scripted peer: answers POSTs with the statuses in `script` (then 200
/// forever) and counts what it accepted.
struct Peer {
    url: String,
    calls: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct PeerState {
    script: Arc<Mutex<Vec<u16>>>,
    calls: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<String>>>,
    hang: bool,
}

async fn peer_post(State(s): State<PeerState>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    s.calls.fetch_add(1, Ordering::SeqCst);
    if s.hang {
        std::future::pending::<()>().await;
    }
    let next = {
        let mut script = s.script.lock().unwrap();
        if script.is_empty() {
            200
        } else {
            script.remove(0)
        }
    };
    if next == 200 {
        let id = headers.get("message-id").unwrap().to_str().unwrap().to_owned();
        assert!(body.starts_with("MSH|"));
        s.accepted.lock().unwrap().push(id);
    }
    (StatusCode::from_u16(next).unwrap(), String::new())
}

async fn peer(script: &[u16], hang: bool) -> Peer {
    let state = PeerState {
        script: Arc::new(Mutex::new(script.to_vec())),
        calls: Arc::default(),
        accepted: Arc::default(),
        hang,
    };
    let (calls, accepted) = (state.calls.clone(), state.accepted.clone());
    let app = Router::new().route("/api/hl7", post(peer_post)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/hl7", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Peer { url, calls, accepted }
}

fn queue_one(store: &Arc<dyn Store>, queue: &str, id: &str) {
    let m = NewMessage { bytes: msg(id).into(), control_id: Some(id.into()), ..NewMessage::default() };
    store.ingest(&Batch { connection: "lis".into(), queue: queue.into(), entries: vec![Entry::Message(m)] }).unwrap();
}

#[tokio::test]
async fn client_and_server_push_stored_before_200() {
    let opts = RestServerOptions { tokens: vec!["t0k3n".into()], ..RestServerOptions::default() };
    let (base, store, task) = lab(opts).await;
    let url = format!("{base}/messages");
    let sink =
        HttpSink::new(&url, HttpOptions { auth: Auth::Bearer("t0k3n".into()), ..HttpOptions::default() }).unwrap();
    for id in ["H1", "H2", "H3"] {
        sink.deliver(&item(id)).await.unwrap();
        // 200 came back: the order is already in the store
        assert!(store.audit(&AuditQuery::new().control_id(id).kind(EventKind::Queued)).unwrap().len() == 1);
    }
    let queued: Vec<_> =
        store.pending("lis", 10).unwrap().into_iter().map(|q| q.item.meta.control_id.unwrap()).collect();
    assert_eq!(queued, ["H1", "H2", "H3"]);

    // a resend after a lost answer: 200 again, recorded as a duplicate, not queued twice
    sink.deliver(&item("H2")).await.unwrap();
    assert_eq!(store.pending("lis", 10).unwrap().len(), 3);
    assert_eq!(store.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap().len(), 1);

    // a malformed order: 422 with the reason, which is permanent for the client
    let bad = Item::new("B1", "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|B1|P|2.3\rnot a segment\r");
    let e = sink.deliver(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert_eq!(e.to_string(), format!("{url}: HTTP 422 Unprocessable Entity"));
    assert_eq!(store.quarantined(false).unwrap().len(), 1);

    // a wrong token holds the queue: no message is at fault
    let wrong =
        HttpSink::new(&url, HttpOptions { auth: Auth::Bearer("nope".into()), ..HttpOptions::default() }).unwrap();
    let e = wrong.deliver(&item("H4")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Hold);
    assert!(e.to_string().contains("401"), "{e}");
    assert_eq!(store.pending("lis", 10).unwrap().len(), 3);
    task.abort();
}

#[tokio::test]
async fn results_are_fetched_until_confirmed() {
    let store = memory_store();
    queue_one(&store, "emr-results", "R1");
    queue_one(&store, "other", "X1");
    let opts = RestServerOptions { results: Some((store.clone(), "emr-results".into())), ..Default::default() };
    let (base, _, task) = lab(opts).await;
    let http = reqwest::Client::new();
    let get = || http.get(format!("{base}/results")).send();

    let first = get().await.unwrap();
    assert_eq!(first.status(), 200);
    let id = first.headers()["message-id"].to_str().unwrap().to_owned();
    assert_eq!(first.text().await.unwrap(), msg("R1"));
    // not confirmed (the answer may have been lost): fetched again, same id
    let again = get().await.unwrap();
    assert_eq!(again.headers()["message-id"].to_str().unwrap(), id);

    // a message of another queue cannot be confirmed here
    let other = store.pending("other", 1).unwrap()[0].id;
    let r = http.post(format!("{base}/results/{other}/ack")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = http.post(format!("{base}/results/{id}/ack")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get().await.unwrap().status(), 204, "confirmed: gone from the outbox");
    let r = http.post(format!("{base}/results/{id}/ack")).send().await.unwrap();
    assert_eq!(r.status(), 404, "confirmed once");

    let trail: Vec<EventKind> =
        store.audit(&AuditQuery::new().control_id("R1")).unwrap().into_iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(trail, [Received, Parsed, Queued, Sent, Sent, Acknowledged]);

    // the same endpoint serves the metrics a scraper reads
    let m = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let body = m.text().await.unwrap();
    assert!(body.contains("# TYPE "), "{body}");
    assert!(body.contains("other"), "queue depth per queue: {body}");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_500_then_200_is_retried_and_delivered_once() {
    let peer = peer(&[500, 503, 200], false).await;
    let store = memory_store();
    queue_one(&store, "emr", "P1");
    queue_one(&store, "emr", "P2");
    let policy = RetryPolicy::default()
        .max_attempts(5)
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(1)))
        .on_retry(audit_retries(store.clone(), "emr"));
    let sink = Arc::new(Retry::new(HttpSink::new(&peer.url, HttpOptions::default()).unwrap(), policy));
    let report = Forwarder::new(store.clone(), "emr", sink).drain().await.unwrap();
    assert_eq!(report.delivered.len(), 2);
    assert_eq!(peer.calls.load(Ordering::SeqCst), 4, "P1 three times, P2 once");
    let mut accepted = peer.accepted.lock().unwrap().clone();
    accepted.sort();
    let mut expected: Vec<String> = report.delivered.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(accepted, expected, "each delivered exactly once");
    assert_eq!(store.audit(&AuditQuery::new().kind(EventKind::Retried)).unwrap().len(), 2);
    assert!(store.pending("emr", 10).unwrap().is_empty());
}

#[tokio::test]
async fn statuses_map_to_retryable_or_permanent() {
    let peer = peer(&[429, 400, 404], false).await;
    let sink = HttpSink::new(&peer.url, HttpOptions::default()).unwrap();
    let kinds: Vec<(ErrorKind, bool)> = [
        sink.deliver(&item("S1")).await.unwrap_err(),
        sink.deliver(&item("S2")).await.unwrap_err(),
        sink.deliver(&item("S3")).await.unwrap_err(),
    ]
    .iter()
    .map(|e| (e.kind(), e.is_retryable()))
    .collect();
    assert_eq!(kinds, [(ErrorKind::NegativeAck, true), (ErrorKind::Rejected, false), (ErrorKind::Hold, false)]);
    sink.deliver(&item("S4")).await.unwrap();

    // a refused connection is retryable and names the URL
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    drop(listener);
    let e = HttpSink::new(&url, HttpOptions::default()).unwrap().deliver(&item("S5")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().starts_with(&format!("{url}: connect")), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_times_out_and_the_message_stays_queued() {
    let peer = peer(&[], true).await;
    let store = memory_store();
    queue_one(&store, "emr", "T1");
    let opts = HttpOptions { timeout: Duration::from_secs(30), ..HttpOptions::default() };
    let sink = Arc::new(HttpSink::new(&peer.url, opts).unwrap());
    let e = sink.deliver(&item("T0")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.is_retryable());
    let report = Forwarder::new(store.clone(), "emr", sink).drain().await.unwrap();
    assert!(report.delivered.is_empty());
    assert_eq!(report.deferred.unwrap().1.kind(), ErrorKind::Timeout);
    assert_eq!(store.pending("emr", 10).unwrap().len(), 1, "kept for the next pass");
}

#[derive(Clone, Default)]
struct OAuthState {
    issued: Arc<AtomicUsize>,
    revoked_once: Arc<AtomicUsize>,
}

async fn token(State(s): State<OAuthState>, body: String) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    assert!(body.contains("grant_type=client_credentials") && body.contains("client_secret=s%26cret"), "{body}");
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!(r#"{{"access_token":"tok{n}","expires_in":3600}}"#),
    )
}

async fn api(State(s): State<OAuthState>, headers: HeaderMap) -> StatusCode {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    // the first token is revoked after one use
    if auth == "Bearer tok1" && s.revoked_once.fetch_add(1, Ordering::SeqCst) > 0 {
        return StatusCode::UNAUTHORIZED;
    }
    if auth.starts_with("Bearer tok") {
        StatusCode::ACCEPTED
    } else {
        StatusCode::UNAUTHORIZED
    }
}

#[tokio::test]
async fn oauth2_client_credentials_cached_and_renewed_on_401() {
    let state = OAuthState::default();
    let app = Router::new().route("/token", post(token)).route("/api", post(api)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let auth = Auth::ClientCredentials(OAuth2 {
        token_url: format!("{base}/token"),
        client_id: "lab".into(),
        client_secret: "s&cret".into(),
        scope: Some("system/*.write".into()),
    });
    let sink = HttpSink::new(format!("{base}/api"), HttpOptions { auth, ..HttpOptions::default() }).unwrap();
    sink.deliver(&item("O1")).await.unwrap();
    assert_eq!(state.issued.load(Ordering::SeqCst), 1);
    sink.deliver(&item("O2")).await.unwrap(); // tok1 revoked: 401, a new token, delivered
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);
    sink.deliver(&item("O3")).await.unwrap(); // cached tok2
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);
}
