//! The frames of one connection waiting for its socket.
//!
//! The session task writes its own socket: an [`Outbox`] is a bounded queue that the
//! session's `select!` drains through [`Outbox::poll_write`], which feeds up to
//! [`MAX_BATCH`] frames to the socket and then flushes once. All progress is kept
//! in the outbox, not in the future polling it, so the `select!` may drop that
//! future whenever another branch is ready and lose nothing.
//!
//! One task per connection rather than a session task, a writer task and a channel
//! between them: a channel's first block (32 slots) and a second task are 2–3 KiB
//! per connection, which is most of the budget of a connection.

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use prometheus_client::metrics::gauge::Gauge;

/// Frames written per flush at most, so one flush is not put off indefinitely.
pub const MAX_BATCH: usize = 64;
/// Slots an emptied queue keeps: shrinking after every small burst would only
/// allocate again at the next.
const KEPT_CAPACITY: usize = 32;

pub type Sink = SplitSink<WebSocket, Message>;

/// A frame did not fit: the client is not reading fast enough.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Message>,
    limit: usize,
    /// Frames handed to the socket since its last flush.
    unflushed: usize,
    /// The edge's count of frames left waiting after a write, and this outbox's
    /// part in it: told only when a write leaves a backlog or clears one, or the
    /// session's stall timer arms or fires, so a client that keeps up costs
    /// nothing there.
    backlog: Gauge,
    reported: usize,
}

impl Outbox {
    pub fn new(limit: usize, backlog: Gauge) -> Self {
        Self {
            queue: VecDeque::new(),
            limit,
            unflushed: 0,
            backlog,
            reported: 0,
        }
    }

    /// Queues a frame.
    ///
    /// # Errors
    /// [`Full`] when `limit` frames are already waiting.
    pub fn push(&mut self, frame: Message) -> Result<(), Full> {
        if self.queue.len() >= self.limit {
            return Err(Full);
        }
        self.queue.push_back(frame);
        Ok(())
    }

    /// How many more frames [`Outbox::push`] takes.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.queue.len())
    }

    /// Queues a frame of a snapshot, past the limit if need be: a snapshot is
    /// bounded by core-svc, and an app with many bookings is not a slow one.
    pub fn push_snapshot(&mut self, frame: Message) {
        self.queue.push_back(frame);
    }

    /// Whether anything is waiting to be written or flushed.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || self.unflushed > 0
    }

    /// Writes up to [`MAX_BATCH`] frames and flushes; ready when that flush is done.
    ///
    /// # Errors
    /// The socket's error: the connection is gone.
    pub fn poll_write(
        &mut self,
        sink: &mut Sink,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), axum::Error>> {
        while self.unflushed < MAX_BATCH && !self.queue.is_empty() {
            ready!(sink.poll_ready_unpin(cx))?;
            let frame = self.queue.pop_front().expect("not empty");
            sink.start_send_unpin(frame)?;
            self.unflushed += 1;
        }
        ready!(sink.poll_flush_unpin(cx))?;
        self.unflushed = 0;
        self.report(self.queue.len());
        if self.queue.is_empty() && self.queue.capacity() > KEPT_CAPACITY {
            // A big burst grew the queue: an idle connection keeps little.
            self.queue.shrink_to(KEPT_CAPACITY);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes and flushes every waiting frame.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn write_all(&mut self, sink: &mut Sink) -> Result<(), axum::Error> {
        while self.busy() {
            std::future::poll_fn(|cx| self.poll_write(sink, cx)).await?;
        }
        Ok(())
    }
}

impl Outbox {
    /// Tells the edge's backlog how many frames wait now. For the session to call
    /// once per wait for the socket: a socket that takes nothing never completes
    /// the flush after which [`Outbox::poll_write`] reports.
    pub fn report_waiting(&mut self) {
        self.report(self.queue.len());
    }

    fn report(&mut self, waiting: usize) {
        if waiting != self.reported {
            // Both are at most the queue's length, far below i64::MAX.
            self.backlog.inc_by(waiting as i64 - self.reported as i64);
            self.reported = waiting;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.report(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_refuses_rather_than_grows() {
        let mut outbox = Outbox::new(2, Gauge::default());
        assert!(!outbox.busy());
        assert_eq!(outbox.push(Message::Text("a".into())), Ok(()));
        assert_eq!(outbox.push(Message::Text("b".into())), Ok(()));
        assert_eq!(outbox.push(Message::Text("c".into())), Err(Full));
        assert!(outbox.busy());
        assert_eq!(outbox.queue.len(), 2);
    }
}
