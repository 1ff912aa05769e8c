//! MLLP both ends on 127.0.0.1: real sockets, servers started and stopped
//! by the tests. Timeouts run on paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use transport::audit::{AuditQuery, EventKind};
use transport::layers::{AckCheck, AckPolicy};
use transport::mllp::{msa, ClientOptions, Frame, MllpClient, MllpCodec, MllpServer, ServerOptions};
use transport::pipeline::Intake;
use transport::store::{SqliteStore, Store, StoreConfig};
use transport::{ErrorKind, Item, Settle, Sink, Source};

fn msg(id: &str) -> String {
    format!("MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN{id}\r")
}

fn item(id: &str) -> Item {
    Item::new(id, msg(id)).with_control_id(id)
}

fn opts() -> ClientOptions {
    ClientOptions { ack_timeout: Duration::from_secs(10), ..ClientOptions::default() }
}

/// A receiver: MLLP server → intake → store, until the test ends.
async fn receiver() -> (String, Arc<dyn Store>, tokio::task::JoinHandle<()>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap());
    let mut server = MllpServer::bind("127.0.0.1:0", ServerOptions::default()).await.unwrap();
    let addr = server.local_addr().to_string();
    let intake = Intake::new(store.clone(), "mllp-in", "emr");
    let task = tokio::spawn(async move {
        while let Ok(Some(inbound)) = server.recv().await {
            intake.take(&mut server, inbound).await.unwrap();
        }
    });
    (addr, store, task)
}

#[tokio::test]
async fn client_and_server_exchange_and_ack_after_store() {
    let (addr, store, task) = receiver().await;
    let client = AckCheck::new(MllpClient::new(addr, opts()), AckPolicy::default());
    for id in ["M1", "M2", "M3"] {
        let d = client.deliver(&item(id)).await.unwrap();
        let (code, echoed) = msa(d.ack.as_ref().unwrap()).unwrap();
        assert_eq!((code.as_str(), echoed.as_str()), ("AA", id));
    }
    let pending = store.pending("emr", 10).unwrap();
    let ids: Vec<_> = pending.iter().map(|q| q.item.meta.control_id.clone().unwrap()).collect();
    assert_eq!(ids, ["M1", "M2", "M3"]);
    // the same message again (a resend after a lost ACK): ACKed, recorded, not queued twice
    client.deliver(&item("M2")).await.unwrap();
    assert_eq!(store.pending("emr", 10).unwrap().len(), 3);
    assert_eq!(store.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap().len(), 1);
    task.abort();
}

#[tokio::test]
async fn no_ack_before_the_item_is_settled() {
    let mut server = MllpServer::bind("127.0.0.1:0", ServerOptions::default()).await.unwrap();
    let client = Arc::new(MllpClient::new(server.local_addr().to_string(), opts()));
    let c = client.clone();
    let sending = tokio::spawn(async move { c.deliver(&item("S1")).await });
    let inbound = server.recv().await.unwrap().unwrap();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!sending.is_finished(), "the ACK waits for the durable store");
    server.settle(inbound.receipt, Settle::Stored).await.unwrap();
    let d = sending.await.unwrap().unwrap();
    assert_eq!(msa(d.ack.as_ref().unwrap()).unwrap().0, "AA");
}

#[tokio::test]
async fn a_message_that_cannot_be_stored_gets_ar_and_a_bad_one_ae() {
    let mut server = MllpServer::bind("127.0.0.1:0", ServerOptions::default()).await.unwrap();
    let client =
        Arc::new(AckCheck::new(MllpClient::new(server.local_addr().to_string(), opts()), AckPolicy::default()));
    let c = client.clone();
    let sending = tokio::spawn(async move { c.deliver(&item("F1")).await });
    let inbound = server.recv().await.unwrap().unwrap();
    server.settle(inbound.receipt, Settle::Failed { reason: "store down".into() }).await.unwrap();
    assert_eq!(sending.await.unwrap().unwrap_err().kind(), ErrorKind::NegativeAck);

    let c = client.clone();
    let sending = tokio::spawn(async move { c.deliver(&item("F2")).await });
    let inbound = server.recv().await.unwrap().unwrap();
    server.settle(inbound.receipt, Settle::Quarantined { reason: "bad".into() }).await.unwrap();
    let e = sending.await.unwrap().unwrap_err();
    assert_eq!((e.kind(), e.to_string().as_str()), (ErrorKind::Rejected, "peer answered AE"));
}

#[tokio::test]
async fn framing_junk_is_quarantined_with_its_bytes_and_good_frames_flow() {
    let (addr, store, task) = receiver().await;
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let good = msg("G1");
    raw.write_all(format!("garbage!\x0b{good}\x1c").as_bytes()).await.unwrap(); // no final CR either
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.contains(&0x1c) {
        let n = raw.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the ACK");
        got.extend_from_slice(&buf[..n]);
    }
    let ack = &got[1..got.iter().position(|&b| b == 0x1c).unwrap()];
    assert_eq!(msa(ack).unwrap(), ("AA".to_owned(), "G1".to_owned()));
    let q = store.quarantined(false).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(&q[0].bytes[..], b"garbage!");
    assert_eq!(q[0].reason, "bytes before the MLLP start block");
    assert_eq!(store.pending("emr", 10).unwrap().len(), 1);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn ack_timeout_drops_the_connection_and_a_stale_ack_is_discarded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // A slow peer: never answers the first message on the first connection;
    // on the second connection it first sends the late ACK of T1, then T2's.
    let peer = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        let mut first = Framed::new(first, MllpCodec::default());
        let _ = first.next().await;
        let (second, _) = listener.accept().await.unwrap();
        let mut second = Framed::new(second, MllpCodec::default());
        let Some(Ok(Frame::Message(_))) = second.next().await else { panic!("expected T2") };
        for id in ["T1", "T2"] {
            let ack = format!("MSH|^~\\&|LIS|LAB|||20240117||ACK|A{id}|P|2.3\rMSA|AA|{id}\r");
            second.send(ack.as_bytes()).await.unwrap();
        }
        let _ = second.next().await;
        drop(first);
    });
    let client = MllpClient::new(addr, ClientOptions { ack_timeout: Duration::from_secs(30), ..opts() });
    let e = client.deliver(&item("T1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.to_string().ends_with("no ACK within 30s"), "{e}");
    let d = client.deliver(&item("T2")).await.unwrap();
    assert_eq!(msa(d.ack.as_ref().unwrap()).unwrap().1, "T2", "T1's late ACK is not taken for T2's");
    drop(client);
    peer.await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_retryable_and_names_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let e = MllpClient::new(addr.clone(), opts()).deliver(&item("C1")).await.unwrap_err();
    assert!(e.is_retryable());
    assert!(e.to_string().starts_with(&format!("{addr}: connect")), "{e}");
}

#[tokio::test]
async fn close_sends_the_acks_owed_and_no_others() {
    let mut server = MllpServer::bind("127.0.0.1:0", ServerOptions::default()).await.unwrap();
    let addr = server.local_addr().to_string();
    let (c1, c2) = (Arc::new(MllpClient::new(addr.clone(), opts())), Arc::new(MllpClient::new(addr, opts())));
    let stored = tokio::spawn(async move { c1.deliver(&item("K1")).await });
    let first = server.recv().await.unwrap().unwrap();
    let unsettled = tokio::spawn(async move { c2.deliver(&item("K2")).await });
    let second = server.recv().await.unwrap().unwrap();
    assert_ne!(first.receipt, second.receipt);
    server.settle(first.receipt, Settle::Stored).await.unwrap();
    server.close().await.unwrap();
    let d = stored.await.unwrap().unwrap();
    assert_eq!(msa(d.ack.as_ref().unwrap()).unwrap(), ("AA".to_owned(), "K1".to_owned()));
    let e = unsettled.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "never stored, never acknowledged");
}
