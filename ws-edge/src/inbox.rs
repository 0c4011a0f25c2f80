//! A session's inbox: where the attachments put what a connection is sent.
//!
//! The attachment tasks never wait for a session: they push into its inbox and
//! move on. Frames rendered for everyone on a topic arrive as shared bytes; the few
//! events a session renders itself (its snapshot, a resync) arrive whole. The
//! session takes what is there in one go, as much as its outbox has room for.
//!
//! Every frame is kept, positions too: an app that falls behind gets its frames
//! late rather than some of them never. It is too slow, and the inbox ends with
//! [`Ended::Slow`] (a 1013 close, its frames dropped), when more than `limit`
//! frames wait for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use logi::pb;

use crate::upstream::FeedEnd;

/// What a session is handed.
#[derive(Debug, Clone)]
pub enum Item {
    /// A frame rendered once for every session of its dialect and audience.
    Frame(Utf8Bytes),
    /// An event this session renders itself: its snapshot, or a resync.
    Event(Arc<pb::Event>),
}

/// Why an inbox takes nothing more.
#[derive(Debug, Clone)]
pub enum Ended {
    /// More than `limit` frames waited: the app does not keep up.
    Slow,
    /// The attachment, or a recover-mode app's own feed, is gone for good (outage
    /// past the limit, or refused).
    Feed(FeedEnd),
    /// A feed ended without saying why.
    Stopped,
}

/// Frames an inbox takes between two takes of its session: a burst of events
/// waits here while the socket writes (as HTTP/2's stream window held them when
/// every app had a stream of its own). Queued, a frame is a pointer to bytes shared
/// by every app that gets it.
pub const LIMIT: usize = 4096;
/// The largest emptied queue an inbox keeps for reuse.
const KEPT_CAPACITY: usize = 64;

#[derive(Debug)]
pub struct Inbox {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// Frames among `items` (events are not counted: one per topic start).
    frames: usize,
    waker: Option<Waker>,
    ended: Option<Ended>,
    /// Topics whose snapshot has not come yet.
    unstarted: usize,
}

impl Inbox {
    /// An inbox for a session on `topics` topics, taking `limit` frames.
    pub fn new(topics: usize, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                unstarted: topics,
                ..State::default()
            }),
            limit,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues shared frames; one too many ends the inbox as slow.
    pub fn push_frames(&self, frames: &[Utf8Bytes]) {
        if frames.is_empty() {
            return;
        }
        let mut state = self.state();
        if state.ended.is_some() {
            return;
        }
        if state.frames + frames.len() > self.limit {
            state.slow();
            return;
        }
        state
            .items
            .extend(frames.iter().map(|f| Item::Frame(f.clone())));
        state.frames += frames.len();
        state.wake();
    }

    /// Queues an event for the session to render.
    pub fn push_event(&self, event: Arc<pb::Event>) {
        let mut state = self.state();
        if let Some(pb::event::Kind::Snapshot(_)) = event.kind {
            state.unstarted = state.unstarted.saturating_sub(1);
        }
        if state.ended.is_none() {
            state.items.push_back(Item::Event(event));
            state.wake();
        }
    }

    /// Ends the inbox: what is queued is still handed out, then the end.
    pub fn end(&self, why: Ended) {
        let mut state = self.state();
        if state.ended.is_none() {
            state.end(why);
        }
    }

    /// Takes up to `room` items (at least one when ready), or the end once
    /// nothing is left. Cancel-safe: nothing moves unless it is ready.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<Result<VecDeque<Item>, Ended>> {
        let mut state = self.state();
        if room > 0 && !state.items.is_empty() {
            // Usually all of it: the queue itself changes hands, nothing is copied.
            let taken: VecDeque<Item> = if state.items.len() <= room {
                std::mem::take(&mut state.items)
            } else {
                state.items.drain(..room).collect()
            };
            state.frames -= taken.iter().filter(|i| matches!(i, Item::Frame(_))).count();
            return Poll::Ready(Ok(taken));
        }
        if state.items.is_empty()
            && let Some(ended) = &state.ended
        {
            return Poll::Ready(Err(ended.clone()));
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Takes back a queue the session emptied, so the next frames do not need a
    /// new one (a queue a burst made large is dropped instead).
    pub fn give_back(&self, mut spare: VecDeque<Item>) {
        if spare.capacity() > KEPT_CAPACITY {
            return;
        }
        spare.clear();
        let mut state = self.state();
        if state.items.is_empty() && state.items.capacity() < spare.capacity() {
            state.items = spare;
        }
    }

    /// Ready once every topic's snapshot has come: from then on, whatever any of
    /// them commits reaches the session. Polled before the session runs, so the
    /// one waker slot is free.
    pub fn poll_started(&self, cx: &mut Context<'_>) -> Poll<Result<(), Ended>> {
        let mut state = self.state();
        if let Some(ended) = &state.ended {
            return Poll::Ready(Err(ended.clone()));
        }
        if state.unstarted == 0 {
            return Poll::Ready(Ok(()));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    #[cfg(test)]
    fn ended(&self) -> bool {
        self.state().ended.is_some()
    }
}

impl State {
    /// The app does not keep up: what waits is dropped.
    fn slow(&mut self) {
        self.items = VecDeque::new();
        self.frames = 0;
        self.end(Ended::Slow);
    }

    fn end(&mut self, why: Ended) {
        self.ended = Some(why);
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &VecDeque<Item>) -> Vec<&str> {
        items
            .iter()
            .map(|i| match i {
                Item::Frame(t) => t.as_str(),
                Item::Event(_) => "event",
            })
            .collect()
    }

    fn take(inbox: &Inbox, room: usize) -> Poll<Result<VecDeque<Item>, Ended>> {
        inbox.poll_take(&mut Context::from_waker(Waker::noop()), room)
    }

    #[test]
    fn frames_come_out_in_order_as_room_allows() {
        let inbox = Inbox::new(1, 4);
        assert!(take(&inbox, 8).is_pending());
        for f in ["a", "b", "c"] {
            inbox.push_frames(&[f.into()]);
        }
        let Poll::Ready(Ok(items)) = take(&inbox, 2) else {
            panic!("ready")
        };
        let texts = texts(&items);
        assert_eq!(texts, ["a", "b"]);
        assert!(take(&inbox, 0).is_pending(), "no room, nothing moves");
        assert!(matches!(take(&inbox, 8), Poll::Ready(Ok(v)) if v.len() == 1));
    }

    #[test]
    fn one_frame_past_the_limit_ends_it_as_slow_and_frees_the_frames() {
        let inbox = Inbox::new(1, 2);
        inbox.push_frames(&["a".into(), "b".into()]);
        inbox.push_event(Arc::default());
        inbox.push_frames(&["c".into()]);
        assert!(inbox.ended());
        assert!(inbox.state().items.is_empty());
        assert!(matches!(take(&inbox, 8), Poll::Ready(Err(Ended::Slow))));
    }

    #[test]
    fn what_was_queued_before_the_end_still_comes_out() {
        let inbox = Inbox::new(1, 2);
        inbox.push_frames(&["a".into()]);
        inbox.end(Ended::Feed(FeedEnd::Outage(tonic::Status::unavailable(
            "x",
        ))));
        inbox.push_frames(&["late".into()]);
        assert!(matches!(take(&inbox, 8), Poll::Ready(Ok(v)) if v.len() == 1));
        assert!(matches!(
            take(&inbox, 8),
            Poll::Ready(Err(Ended::Feed(FeedEnd::Outage(_))))
        ));
    }

    #[test]
    fn it_is_started_once_every_topics_snapshot_came() {
        let inbox = Inbox::new(2, 8);
        let mut cx = Context::from_waker(Waker::noop());
        let snapshot = Arc::new(pb::Event {
            kind: Some(pb::event::Kind::Snapshot(pb::Snapshot::default())),
            ..Default::default()
        });
        inbox.push_event(snapshot.clone());
        assert!(inbox.poll_started(&mut cx).is_pending());
        inbox.push_event(snapshot);
        assert!(matches!(inbox.poll_started(&mut cx), Poll::Ready(Ok(()))));
    }
}
