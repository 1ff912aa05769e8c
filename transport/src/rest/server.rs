//! The HTTP server source.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::MESSAGE_ID;
use crate::audit::{Direction, EventKind, NewEvent};
use crate::item::{BoxFuture, Inbound, Item, Settle, Source};
use crate::store::Store;
use crate::{Error, ErrorKind};

/// Settings of a [`RestServer`].
#[derive(Debug, Clone)]
pub struct RestServerOptions {
    /// The connection name pushed items are tagged with.
    pub connection: String,
    /// Bearer tokens accepted; empty: no authentication (loopback tests).
    pub tokens: Vec<String>,
    /// The largest body accepted (`413` above it).
    pub max_length: usize,
    /// Where results are fetched from: a store and the queue in it.
    pub results: Option<(Arc<dyn Store>, String)>,
}

impl Default for RestServerOptions {
    fn default() -> RestServerOptions {
        RestServerOptions {
            connection: "rest".into(),
            tokens: Vec::new(),
            max_length: crate::mllp::DEFAULT_MAX_LENGTH,
            results: None,
        }
    }
}

use crate::replies::{Pending, Replies};

struct Shared {
    connection: String,
    tokens: Vec<[u8; 32]>,
    results: Option<(Arc<dyn Store>, String)>,
    tx: mpsc::Sender<Pending>,
    next: AtomicU64,
}

/// An HTTP endpoint as a [`Source`].
///
/// Routes:
/// - `POST /messages`: the body is one HL7 message or a batch. The answer
///   waits until the item is [settled](Source::settle): `200` once stored
///   (a duplicate too), `422` with the reason when it went to quarantine,
///   `503` when it was not stored (send again). A `Message-Id` header, if
///   given, becomes the item's id.
/// - `GET /results`: the oldest result waiting in the results queue, as
///   `application/hl7-v2` with its `Message-Id` header, or `204` when none.
///   The result stays queued (and is fetched again) until confirmed.
/// - `POST /results/{id}/ack`: confirms a fetched result; it leaves the
///   outbox (`204`; `404` when not queued).
/// - `GET /metrics`: the store's metrics and the alerts that hold, in the
///   Prometheus text format, for a scraper (`404` without a store).
///
/// With tokens configured every route needs `Authorization: Bearer …`
/// (`401` otherwise).
///
/// # Examples
///
/// ```
/// use transport::rest::{RestServer, RestServerOptions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let server = RestServer::bind("127.0.0.1:0", RestServerOptions::default()).await?;
/// assert!(server.local_addr().port() > 0);
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct RestServer {
    local_addr: SocketAddr,
    replies: Replies,
    task: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl RestServer {
    /// Listens on `addr` (`127.0.0.1:0` for a free port).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: &str, opts: RestServerOptions) -> Result<RestServer, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::io(e, "bind").with_peer(addr))?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            connection: opts.connection,
            tokens: opts.tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect(),
            results: opts.results,
            tx,
            next: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/messages", post(push))
            .route("/results", get(fetch))
            .route("/results/{id}/ack", post(confirm))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(opts.max_length))
            .with_state(shared);
        let (shutdown, mut stop) = watch::channel(false);
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { drop(stop.wait_for(|s| *s).await) });
        let task = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "HTTP server stopped");
            }
        });
        Ok(RestServer { local_addr, replies: Replies::new(rx), task: Some(task), shutdown })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Source for RestServer {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>> {
        Box::pin(async move { Ok(self.replies.recv().await) })
    }

    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { self.replies.settle(receipt, outcome) })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let _ = self.shutdown.send(true);
            // Unsettled pushes were not stored: their clients get 503.
            self.replies.close();
            if let Some(task) = self.task.take() {
                let _ = task.await;
            }
            Ok(())
        })
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    if shared.tokens.is_empty() {
        return true;
    }
    let Some(token) =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Comparing digests keeps the comparison time independent of the token.
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    shared.tokens.contains(&digest)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [("content-type", "text/plain; charset=utf-8")], body.into()).into_response()
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer")], "bearer token required\n").into_response()
}

async fn push(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let id = headers
        .get(MESSAGE_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{peer}#{n}"));
    let mut item = Item::new(id, body).with_connection(shared.connection.clone());
    item.meta.peer = Some(peer.to_string());
    let inbound = Inbound { item, framing_error: None, receipt: n };
    let (reply_tx, reply_rx) = oneshot::channel();
    if shared.tx.send((inbound, reply_tx)).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not accepting messages\n");
    }
    match reply_rx.await {
        Ok(Settle::Stored) => text(StatusCode::OK, "stored\n"),
        Ok(Settle::Quarantined { reason }) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("{reason}\n")),
        Ok(_) | Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not stored; send again\n"),
    }
}

async fn fetch(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Some((store, queue)) = &shared.results else {
        return text(StatusCode::NOT_FOUND, "no results here\n");
    };
    let next = match store.pending(queue, 1) {
        Ok(mut v) => v.pop(),
        Err(e) => {
            tracing::warn!(error = %e, "results: store failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n");
        }
    };
    let Some(q) = next else { return StatusCode::NO_CONTENT.into_response() };
    let mut sent = NewEvent::new(EventKind::Sent, queue, Direction::Out).message(q.id).detail("fetched over HTTP");
    sent.control_id = q.item.meta.control_id.clone();
    sent.byte_count = Some(q.item.bytes.len() as u64);
    if let Err(e) = store.record(&sent) {
        tracing::warn!(error = %e, "results: store failed");
        return text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n");
    }
    let id = q.id.to_string();
    (StatusCode::OK, [("content-type", "application/hl7-v2"), (MESSAGE_ID, id.as_str())], q.item.bytes).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Some((store, _)) = &shared.results else {
        return text(StatusCode::NOT_FOUND, "no store here\n");
    };
    let rules = crate::monitor::AlertRules::default();
    match store.snapshot(rules.window).map(|snap| {
        let alerts = rules.evaluate(&snap);
        crate::monitor::render_prometheus(&snap, &alerts)
    }) {
        Ok(body) => (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], body).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: store failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

async fn confirm(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Some((store, queue)) = &shared.results else {
        return text(StatusCode::NOT_FOUND, "no results here\n");
    };
    let Ok(id) = id.parse::<i64>() else { return text(StatusCode::NOT_FOUND, "no such result\n") };
    // Only a result of this endpoint's queue can be confirmed here.
    let confirmed = match store.queue_of(id) {
        Ok(Some(q)) if q == *queue => store.mark_delivered(id, "fetched"),
        Ok(_) => Err(Error::new(ErrorKind::NotFound, "not queued here")),
        Err(e) => Err(e),
    };
    match confirmed {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.kind() == ErrorKind::NotFound => text(StatusCode::NOT_FOUND, "no such result\n"),
        Err(e) => {
            tracing::warn!(error = %e, "results: store failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}
