//! Test doubles for [`Source`] and [`Sink`], living next to the traits
//! (tower-test style). Script a [`MockSink`]'s answers, then drive the code
//! under test on paused tokio time: no sleeps, no wall-clock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::item::{BoxFuture, Delivery, Inbound, Item, Settle, Sink, Source};
use crate::{Error, ErrorKind};

#[derive(Debug)]
enum Answer {
    Ok(Delivery),
    Err(Error),
    /// Never answers: for timeouts on paused time.
    Hang,
    /// Answers after a (virtual) delay.
    After(Duration, Box<Answer>),
}

/// A scripted sink: answers from a queue (then `Ok` with no ACK), records
/// every item it was given.
///
/// # Examples
///
/// ```
/// use transport::mock::MockSink;
/// use transport::{Error, ErrorKind, Item, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let sink = MockSink::new();
/// sink.push_err(Error::new(ErrorKind::Timeout, "no ACK"));
/// let item = Item::new("1", "MSH|^~\\&|A\r");
/// assert!(sink.deliver(&item).await.is_err());
/// assert!(sink.deliver(&item).await.is_ok());
/// assert_eq!((sink.calls(), sink.delivered().len()), (2, 1));
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MockSink {
    answers: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<Item>>,
    delivered: Mutex<Vec<Item>>,
}

impl MockSink {
    /// A sink that accepts everything until scripted otherwise.
    pub fn new() -> MockSink {
        MockSink::default()
    }

    fn push(&self, a: Answer) {
        self.answers.lock().unwrap_or_else(|p| p.into_inner()).push_back(a);
    }

    /// Next answer: success without an ACK.
    pub fn push_ok(&self) {
        self.push(Answer::Ok(Delivery::default()));
    }

    /// Next answer: success with this ACK (for the [`AckCheck`](crate::layers::AckCheck) layer).
    pub fn push_ack(&self, ack: impl Into<Bytes>) {
        self.push(Answer::Ok(Delivery { ack: Some(ack.into()), warning: None }));
    }

    /// Next answer: this error.
    pub fn push_err(&self, e: Error) {
        self.push(Answer::Err(e));
    }

    /// Next answer: none, ever (the caller's timeout must fire).
    pub fn push_hang(&self) {
        self.push(Answer::Hang);
    }

    /// Next answer: success, after `delay` of tokio time.
    pub fn push_ok_after(&self, delay: Duration) {
        self.push(Answer::After(delay, Box::new(Answer::Ok(Delivery::default()))));
    }

    /// How many times `deliver` was called.
    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every item passed to `deliver`, in order.
    pub fn attempted(&self) -> Vec<Item> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The items whose delivery succeeded, in order.
    pub fn delivered(&self) -> Vec<Item> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Sink for MockSink {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(item.clone());
            let mut answer = self.answers.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            loop {
                match answer {
                    None => answer = Some(Answer::Ok(Delivery::default())),
                    Some(Answer::Ok(d)) => {
                        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).push(item.clone());
                        return Ok(d);
                    }
                    Some(Answer::Err(e)) => return Err(e),
                    Some(Answer::Hang) => {
                        std::future::pending::<()>().await;
                        return Err(Error::new(ErrorKind::Timeout, "unreachable"));
                    }
                    Some(Answer::After(d, next)) => {
                        tokio::time::sleep(d).await;
                        answer = Some(*next);
                    }
                }
            }
        })
    }
}

/// A source that hands out a fixed list of items once and records how each
/// was settled.
///
/// # Examples
///
/// ```
/// use transport::mock::MockSource;
/// use transport::{Item, Settle, Source};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut src = MockSource::new([Item::new("a", "x")]);
/// let i = src.recv().await.unwrap().unwrap();
/// src.settle(i.receipt, Settle::Stored).await.unwrap();
/// assert_eq!(src.settled(), [(0, Settle::Stored)]);
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MockSource {
    items: VecDeque<Inbound>,
    settled: Vec<(u64, Settle)>,
}

impl MockSource {
    /// A source of `items`, receipts numbered from 0.
    pub fn new(items: impl IntoIterator<Item = Item>) -> MockSource {
        let items = items
            .into_iter()
            .enumerate()
            .map(|(n, item)| Inbound { item, framing_error: None, receipt: n as u64 })
            .collect();
        MockSource { items, settled: Vec::new() }
    }

    /// Adds an inbound item as is (with a framing error, say).
    pub fn push(&mut self, inbound: Inbound) {
        self.items.push_back(inbound);
    }

    /// How each receipt was settled, in order.
    pub fn settled(&self) -> &[(u64, Settle)] {
        &self.settled
    }
}

impl Source for MockSource {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>> {
        Box::pin(async move { Ok(self.items.pop_front()) })
    }

    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.settled.push((receipt, outcome));
            Ok(())
        })
    }
}
