//! [`Batches`]: a partition's pulled messages in batches. A batch closes when it is full;
//! or, once nothing more has arrived, at once when traffic is sparse (the last batch held
//! fewer than [`DENSE_BATCH`] messages and the consumer reports nothing else waiting on
//! the server: a live event does not wait for company), else up to `linger` after its
//! first message (a catch-up, or dense live traffic: the batch fills and its deltas
//! coalesce into fewer messages, which is what keeps up at high rates). The messages not
//! yet handed out stay inside the stream, so dropping a `next()` in a `select!` loses
//! none.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream;
use futures::Stream;
use tokio::time::Sleep;

/// A batch of this many messages or more says traffic is dense: the next one lingers.
/// At 5,000 events/s over 16 partitions a load generator's burst often puts two events
/// of a partition side by side; lingering after those cost the live p99 a fifth
/// (BENCHMARKS.md, seventeenth round).
pub const DENSE_BATCH: usize = 4;

/// The adapter; see the module.
pub struct Batches<S: Stream> {
    inner: Pin<Box<S>>,
    max: usize,
    linger: Duration,
    batch: Vec<S::Item>,
    /// Set once the batch's first message arrived with more waiting on the server.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last batch handed out held [`DENSE_BATCH`] messages or more: traffic is dense
    /// enough for waiting to pay off.
    dense: bool,
    ended: bool,
}

impl<S: Stream> Batches<S> {
    /// Batches of at most `max` items of `inner`, waiting at most `linger` for a batch to
    /// fill while the server holds more.
    pub fn new(inner: S, max: usize, linger: Duration) -> Self {
        Batches {
            inner: Box::pin(inner),
            max: max.max(1),
            linger,
            batch: Vec::new(),
            deadline: None,
            dense: false,
            ended: false,
        }
    }

    fn take(&mut self) -> Poll<Option<Vec<S::Item>>> {
        self.deadline = None;
        self.dense = self.batch.len() >= DENSE_BATCH;
        Poll::Ready(Some(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(self.max),
        )))
    }
}

/// Whether the server held more messages for the consumer when this one was delivered.
pub trait Backlog {
    /// Messages waiting behind this one, as the delivery reported them.
    fn waiting_behind(&self) -> bool;
}

impl Backlog for jetstream::Message {
    fn waiting_behind(&self) -> bool {
        self.info().is_ok_and(|info| info.pending > 0)
    }
}

impl<E> Backlog for Result<jetstream::Message, E> {
    fn waiting_behind(&self) -> bool {
        self.as_ref().is_ok_and(Backlog::waiting_behind)
    }
}

impl<S> Stream for Batches<S>
where
    S: Stream,
    S::Item: Backlog + Unpin,
{
    type Item = Vec<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.batch.len() >= this.max {
                return this.take();
            }
            if this.ended {
                return if this.batch.is_empty() {
                    Poll::Ready(None)
                } else {
                    this.take()
                };
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => this.batch.push(item),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    let Some(last) = this.batch.last() else {
                        return Poll::Pending;
                    };
                    if this.linger.is_zero() || !(this.dense || last.waiting_behind()) {
                        return this.take();
                    }
                    let linger = this.linger;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(linger)));
                    return match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => this.take(),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// A test item: whether more waited behind it.
    struct Item(bool);

    impl Backlog for Item {
        fn waiting_behind(&self) -> bool {
            self.0
        }
    }

    fn sizes(batches: &[Vec<Item>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn live_messages_go_at_once_and_a_backlog_waits_to_fill() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Item>();
        let mut batches = Batches::new(rx, 4, Duration::from_millis(5));
        // Live: nothing behind it, handed out alone without waiting.
        tx.unbounded_send(Item(false)).unwrap();
        let started = tokio::time::Instant::now();
        let one = batches.next().await.unwrap();
        assert_eq!((one.len(), started.elapsed()), (1, Duration::ZERO));
        // A backlog: the batch waits for the rest, up to full.
        for _ in 0..3 {
            tx.unbounded_send(Item(true)).unwrap();
        }
        let sender = tokio::spawn({
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                tx.unbounded_send(Item(true)).unwrap();
                tx.unbounded_send(Item(true)).unwrap();
            }
        });
        let mut got = vec![batches.next().await.unwrap()];
        sender.await.unwrap();
        // ...and what did not fill by the linger goes when it expires.
        got.push(batches.next().await.unwrap());
        assert_eq!(sizes(&got), vec![4, 1]);
        assert_eq!(started.elapsed(), Duration::from_millis(7));
        // Sparse again (the last batch held one message): nothing behind it goes at once.
        tx.unbounded_send(Item(false)).unwrap();
        let at = tokio::time::Instant::now();
        assert_eq!(batches.next().await.unwrap().len(), 1);
        assert_eq!(at.elapsed(), Duration::ZERO);
        // Two side by side (a load generator's burst) are not dense traffic yet.
        tx.unbounded_send(Item(false)).unwrap();
        tx.unbounded_send(Item(false)).unwrap();
        assert_eq!(batches.next().await.unwrap().len(), 2);
        let at = tokio::time::Instant::now();
        tx.unbounded_send(Item(false)).unwrap();
        assert_eq!(batches.next().await.unwrap().len(), 1);
        assert_eq!(at.elapsed(), Duration::ZERO);
        // Dense traffic (DENSE_BATCH at once) lingers even with nothing reported behind.
        for _ in 0..DENSE_BATCH {
            tx.unbounded_send(Item(false)).unwrap();
        }
        assert_eq!(batches.next().await.unwrap().len(), DENSE_BATCH);
        let at = tokio::time::Instant::now();
        tx.unbounded_send(Item(false)).unwrap();
        assert_eq!(batches.next().await.unwrap().len(), 1);
        assert_eq!(at.elapsed(), Duration::from_millis(5), "waited for company");
        drop(tx);
        assert!(batches.next().await.is_none(), "ends with its input");
    }
}
