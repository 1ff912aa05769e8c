//! MLLP over TCP: the frame codec, a client [`Sink`] and a server [`Source`].
//!
//! Why the server acknowledges only from [`Source::settle`]: an ACK tells the
//! sender it may forget the message, so it must not leave before the message
//! is durably stored (DOMAIN P15). The connection task waits for the settle
//! before it reads the next frame, so a crash before the commit leaves the
//! message un-ACKed and the sender sends it again; de-duplication on
//! MSH-10 + sender then keeps it from being stored twice.
//!
//! Why the client drops the connection on an ACK timeout: an ACK that comes
//! late would otherwise be read as the answer to the next message (P6).
//! On top of that the client remembers the control ids it sent recently and
//! discards an ACK whose MSA-2 names one of them but not the current one.

mod codec;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hl7_core::ack::{AckBuilder, AckCode};
use hl7_core::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

pub use codec::{Frame, FrameError, MllpCodec, CR, DEFAULT_MAX_LENGTH, END, START};

use crate::item::{BoxFuture, Delivery, Inbound, Item, Settle, Sink, Source};
use crate::{Error, ErrorKind};

/// MSA-1 and MSA-2 of an ACK, when it has an MSA segment.
///
/// # Examples
///
/// ```
/// let ack = b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240117||ACK^O21^ACK|A1|P|2.5.1\rMSA|AE|LOI001|bad\r";
/// assert_eq!(transport::mllp::msa(ack), Some(("AE".to_owned(), "LOI001".to_owned())));
/// assert_eq!(transport::mllp::msa(b"MSH|^~\\&|X\r"), None);
/// ```
pub fn msa(ack: &[u8]) -> Option<(String, String)> {
    let msg = Message::parse(ack).ok()?;
    let seg = msg.segment("MSA")?;
    let code = seg.field(1).map(|f| f.raw().to_owned()).unwrap_or_default();
    let id = seg.field(2).map(|f| f.raw().to_owned()).unwrap_or_default();
    Some((code, id))
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to wait for the TCP connection.
    pub connect_timeout: Duration,
    /// How long to wait for the ACK of one message.
    pub ack_timeout: Duration,
    /// Maximum frame length, both ways.
    pub max_length: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(30),
            max_length: DEFAULT_MAX_LENGTH,
        }
    }
}

/// How many recent control ids the client remembers to spot stale ACKs.
const RECENT: usize = 64;

#[derive(Debug, Default)]
struct Conn {
    framed: Option<Framed<TcpStream, MllpCodec>>,
    recent: VecDeque<String>,
}

/// An MLLP client: sends one message, waits for its ACK.
///
/// The ACK's content is returned as is in [`Delivery::ack`]; what `AE`,
/// `AR` or a missing MSA mean is decided by the
/// [`AckCheck`](crate::layers::AckCheck) layer around it.
///
/// # Examples
///
/// ```no_run
/// use transport::layers::{AckCheck, AckPolicy};
/// use transport::mllp::{ClientOptions, MllpClient};
/// use transport::{Item, Sink};
///
/// # async fn f() -> Result<(), transport::Error> {
/// let sink = AckCheck::new(MllpClient::new("127.0.0.1:2575", ClientOptions::default()), AckPolicy::default());
/// sink.deliver(&Item::new("1", "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||OML^O21|LOI001|P|2.5.1\r")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MllpClient {
    addr: String,
    opts: ClientOptions,
    conn: Mutex<Conn>,
}

impl MllpClient {
    /// A client for `addr` (`host:port`). Connects on first use.
    pub fn new(addr: impl Into<String>, opts: ClientOptions) -> MllpClient {
        MllpClient { addr: addr.into(), opts, conn: Mutex::new(Conn::default()) }
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn exchange(&self, conn: &mut Conn, item: &Item) -> Result<Delivery, Error> {
        if conn.framed.is_none() {
            let stream = tokio::time::timeout(self.opts.connect_timeout, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| Error::new(ErrorKind::Timeout, "connect timed out"))?
                .map_err(|e| Error::io(e, "connect"))?;
            let _ = stream.set_nodelay(true);
            conn.framed = Some(Framed::new(stream, MllpCodec::new(self.opts.max_length)));
        }
        let framed = conn.framed.as_mut().expect("connected above");
        framed.send(&item.bytes[..]).await?;
        let current = item.meta.control_id.clone().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + self.opts.ack_timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, framed.next())
                .await
                .map_err(|_| Error::new(ErrorKind::Timeout, format!("no ACK within {:?}", self.opts.ack_timeout)))?;
            match next {
                None => return Err(Error::new(ErrorKind::Closed, "connection closed before the ACK")),
                Some(Err(e)) => return Err(e),
                Some(Ok(Frame::Invalid { reason, .. })) => {
                    tracing::warn!(peer = %self.addr, %reason, "ignoring bytes that are not an ACK frame");
                }
                Some(Ok(Frame::Message(ack))) => {
                    if let Some((_, id)) = msa(&ack) {
                        if id != current && conn.recent.contains(&id) {
                            tracing::warn!(peer = %self.addr, stale = %id, "discarding a stale ACK");
                            continue;
                        }
                    }
                    return Ok(Delivery { ack: Some(ack), warning: None });
                }
            }
        }
    }
}

impl Sink for MllpClient {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            let mut conn = self.conn.lock().await;
            if let Some(id) = &item.meta.control_id {
                if conn.recent.len() == RECENT {
                    conn.recent.pop_front();
                }
                conn.recent.push_back(id.clone());
            }
            let result = self.exchange(&mut conn, item).await;
            if result.is_err() {
                // Never reuse a connection in an unknown state: a late ACK
                // must not answer the next message.
                conn.framed = None;
            }
            result.map_err(|e| e.with_peer(self.addr.clone()))
        })
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The connection name items are tagged with.
    pub connection: String,
    /// Maximum frame length.
    pub max_length: usize,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions { connection: "mllp".into(), max_length: DEFAULT_MAX_LENGTH }
    }
}

use crate::replies::{Pending, Replies};

/// An MLLP listener as a [`Source`]: every frame is handed out by
/// [`recv`](Source::recv), and acknowledged only when it is
/// [settled](Source::settle).
///
/// # Examples
///
/// ```
/// use transport::mllp::{MllpServer, ServerOptions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let server = MllpServer::bind("127.0.0.1:0", ServerOptions::default()).await?;
/// assert!(server.local_addr().port() > 0);
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct MllpServer {
    local_addr: SocketAddr,
    replies: Replies,
    accept: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl MllpServer {
    /// Listens on `addr` (`127.0.0.1:0` for a free port).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: &str, opts: ServerOptions) -> Result<MllpServer, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::io(e, "bind").with_peer(addr))?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(16);
        let (shutdown, stop) = watch::channel(false);
        let accept = Some(tokio::spawn(accept_loop(listener, opts, tx, stop)));
        Ok(MllpServer { local_addr, replies: Replies::new(rx), accept, shutdown })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MllpServer {
    fn drop(&mut self) {
        if let Some(a) = &self.accept {
            a.abort();
        }
    }
}

impl Source for MllpServer {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>> {
        Box::pin(async move { Ok(self.replies.recv().await) })
    }

    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { self.replies.settle(receipt, outcome) })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let _ = self.shutdown.send(true);
            // Unsettled items are not stored: their senders get no ACK.
            self.replies.close();
            if let Some(accept) = self.accept.take() {
                let _ = accept.await;
            }
            Ok(())
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    opts: ServerOptions,
    tx: mpsc::Sender<Pending>,
    stop: watch::Receiver<bool>,
) {
    // Owned by this task: when the server is dropped the accept task is
    // aborted, the set is dropped, and every connection task ends with it.
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_base = 0u64;
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = async { drop(stopping.wait_for(|s| *s).await) } => {
                drop(listener);
                // Each connection finishes the ACK it owes, then ends.
                while tasks.join_next().await.is_some() {}
                return;
            }
        };
        let Ok((stream, peer)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        while tasks.try_join_next().is_some() {}
        // Receipts are unique per server: connection number in the high bits.
        let base = next_base;
        next_base += 1 << 32;
        tasks.spawn(serve(stream, peer, opts.clone(), tx.clone(), base, stop.clone()));
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    opts: ServerOptions,
    tx: mpsc::Sender<Pending>,
    base: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut framed = Framed::new(stream, MllpCodec::new(opts.max_length));
    let mut n = 0u64;
    loop {
        let frame = tokio::select! {
            f = framed.next() => match f {
                Some(f) => f,
                None => return,
            },
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
        };
        let (bytes, framing_error) = match frame {
            Ok(Frame::Message(b)) => (b, None),
            Ok(Frame::Invalid { raw, reason }) => (raw, Some(reason.to_string())),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "MLLP connection failed");
                return;
            }
        };
        n += 1;
        let mut item = Item::new(format!("{peer}#{n}"), bytes.clone()).with_connection(opts.connection.clone());
        item.meta.peer = Some(peer.to_string());
        let inbound = Inbound { item, framing_error: framing_error.clone(), receipt: base + n };
        let (reply_tx, reply_rx) = oneshot::channel();
        if tx.send((inbound, reply_tx)).await.is_err() {
            return;
        }
        let Ok(outcome) = reply_rx.await else { return };
        if framing_error.is_some() {
            continue;
        }
        if let Some(ack) = ack_for(&bytes, &outcome) {
            if let Err(e) = framed.send(ack).await {
                tracing::warn!(%peer, error = %e, "could not send the ACK");
                return;
            }
        }
    }
}

fn ack_for(bytes: &[u8], outcome: &Settle) -> Option<Bytes> {
    let text = match outcome {
        Settle::Stored => None,
        Settle::Quarantined { reason } | Settle::Failed { reason } => Some(reason.clone()),
    };
    let builder = match Message::parse(bytes) {
        Ok(msg) => {
            let enhanced = msg.get(&"MSH-15".parse().ok()?).is_some_and(|e| !e.raw().is_empty());
            let code = match (outcome, enhanced) {
                (Settle::Stored, false) => AckCode::AA,
                (Settle::Stored, true) => AckCode::CA,
                (Settle::Quarantined { .. }, false) => AckCode::AE,
                (Settle::Quarantined { .. }, true) => AckCode::CE,
                (_, false) => AckCode::AR,
                (_, true) => AckCode::CR,
            };
            AckBuilder::for_message(&msg, code)
        }
        Err(e) => {
            let code = if matches!(outcome, Settle::Failed { .. }) { AckCode::AR } else { AckCode::AE };
            AckBuilder::for_rejected(bytes, &e, code)
        }
    };
    let builder = match text {
        Some(t) => builder.with_text(t),
        None => builder,
    };
    if !builder.required() {
        return None;
    }
    Some(Bytes::from(builder.build()))
}
