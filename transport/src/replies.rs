//! The inbox of a server that answers its peer only once an item is settled
//! (MLLP and REST): connection tasks hand over each item with a reply
//! channel; the answer goes back when the pipeline settles the item.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::{Error, ErrorKind, Inbound, Settle};

/// What a connection task hands over: the item and where its answer goes.
pub(crate) type Pending = (Inbound, oneshot::Sender<Settle>);

/// Items received and the replies still owed for them.
#[derive(Debug)]
pub(crate) struct Replies {
    rx: mpsc::Receiver<Pending>,
    owed: HashMap<u64, oneshot::Sender<Settle>>,
}

impl Replies {
    pub(crate) fn new(rx: mpsc::Receiver<Pending>) -> Replies {
        Replies { rx, owed: HashMap::new() }
    }

    /// The next item; `None` once every connection task is gone.
    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        let (inbound, reply) = self.rx.recv().await?;
        self.owed.insert(inbound.receipt, reply);
        Some(inbound)
    }

    /// Sends the answer for `receipt`. The peer may be gone: the item is
    /// settled either way, and a peer that sends again is told it is a
    /// duplicate.
    pub(crate) fn settle(&mut self, receipt: u64, outcome: Settle) -> Result<(), Error> {
        let reply = self
            .owed
            .remove(&receipt)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no pending item {receipt}")))?;
        let _ = reply.send(outcome);
        Ok(())
    }

    /// Drops every unsettled item: those were not stored, so their peers get
    /// no positive answer.
    pub(crate) fn close(&mut self) {
        self.owed.clear();
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }
}
