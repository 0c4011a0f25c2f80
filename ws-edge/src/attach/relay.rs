//! Drivers' positions from the sockets, up to core-svc on one
//! `LocationService.RelayDriverLocations` stream per attachment (on the
//! attachment's connections), instead of one call per ping.
//!
//! A session hands its driver's position to the [`Relay`] of that driver and
//! goes on. Each driver has one waiting slot: a newer position replaces the one
//! not yet sent (only where the driver is now matters), so a burst of pings costs
//! one position. The relay's task sends what waits in batches of at most
//! [`MAX_BATCH`], at most [`IN_FLIGHT`] of them unanswered; core-svc answers each
//! batch, in order, with its refusals, and each refusal becomes an `error` frame
//! in that driver's session's inbox. When the stream breaks, the sessions whose
//! positions were in flight are told they were not recorded; what waits stays,
//! and goes once the stream is open again, on the next replica (a [`Rotation`]
//! of its own, starting where its attachment's link starts).
//!
//! Bounds: one waiting position per driver (so at most the drivers connected),
//! and [`IN_FLIGHT`] × [`MAX_BATCH`] in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use axum::extract::ws::Utf8Bytes;
use logi::id::Id;
use logi::pb;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::close;
use crate::dialect::{self, inbound::Position};
use crate::inbox::Inbox;
use crate::metrics::{FrameType, Metrics};
use crate::upstream::{Rotation, Upstream};

/// Positions per batch at most (core-svc takes up to 1024).
pub const MAX_BATCH: usize = 512;
/// Batches sent and not yet answered at most.
pub const IN_FLIGHT: usize = 4;

/// One relay stream's waiting positions.
#[derive(Default)]
pub struct Relay {
    state: Mutex<Waiting>,
    wanted: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Waiting {
    /// The latest position of each driver not yet sent, and whom to tell if it
    /// is refused.
    positions: HashMap<Id, (Position, Weak<Inbox>)>,
    /// Drivers in the order their waiting position came.
    order: VecDeque<Id>,
}

/// A batch sent: whom to tell about each of its positions.
type Sent = Vec<Weak<Inbox>>;

impl Relay {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `driver`'s position `at`, in place of one not yet sent; a refusal
    /// goes to `inbox` as an `error` frame.
    pub fn push(&self, driver: &Id, at: Position, inbox: &Arc<Inbox>) {
        let mut state = self.state();
        let inbox = Arc::downgrade(inbox);
        match state.positions.get_mut(driver) {
            Some(waiting) => *waiting = (at, inbox),
            None => {
                state.positions.insert(driver.clone(), (at, inbox));
                state.order.push_back(driver.clone());
                self.wanted.notify_one();
            }
        }
    }

    /// Up to [`MAX_BATCH`] waiting positions, oldest first.
    fn take(&self) -> (Vec<pb::UpdateDriverLocationRequest>, Sent) {
        let mut state = self.state();
        let n = state.order.len().min(MAX_BATCH);
        let mut batch = Vec::with_capacity(n);
        let mut sent = Vec::with_capacity(n);
        for _ in 0..n {
            let driver = state.order.pop_front().expect("counted");
            let Some((at, inbox)) = state.positions.remove(&driver) else {
                continue;
            };
            batch.push(pb::UpdateDriverLocationRequest {
                driver_id: driver.to_string(),
                latitude: at.latitude,
                longitude: at.longitude,
                heading: 0.0,
                speed_mps: 0.0,
            });
            sent.push(inbox);
        }
        (batch, sent)
    }

    fn waiting(&self) -> bool {
        !self.state().order.is_empty()
    }

    /// Relays until `shutdown`, first to replica `first` over `channels` (one
    /// per replica), opening the stream again on the next replica whenever it
    /// breaks.
    pub async fn run(
        self: Arc<Self>,
        upstream: Upstream,
        first: usize,
        channels: Arc<[Channel]>,
        shutdown: CancellationToken,
    ) {
        let mut rotation = Rotation::new(first, upstream.replicas());
        loop {
            let replica = rotation.replica();
            let (status, was_up) = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = self.relayed(&upstream, &channels[replica]) => ended,
            };
            if was_up {
                rotation.up();
            }
            let wait = rotation.failed();
            tracing::debug!(replica = upstream.url(replica), next = upstream.url(rotation.replica()), code = ?status.code(), message = status.message(), "location relay broke; opening it on the next replica");
            if !wait.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Opens the stream and relays until it breaks: the status it broke with, and
    /// whether it was open at all.
    async fn relayed(&self, upstream: &Upstream, channel: &Channel) -> (Status, bool) {
        let (tx, rx) = mpsc::channel::<pb::LocationBatch>(IN_FLIGHT);
        let mut answers = match upstream
            .relay_locations(channel.clone(), ReceiverStream::new(rx))
            .await
        {
            Ok(answers) => answers,
            Err(status) => return (status, false),
        };
        let mut in_flight: VecDeque<Sent> = VecDeque::new();
        let mut pending = true;
        let status = loop {
            tokio::select! {
                biased;
                answer = answers.message() => match answer {
                    Ok(Some(result)) => {
                        let Some(sent) = in_flight.pop_front() else {
                            break Status::internal("core-svc answered a batch that was not sent");
                        };
                        answered(&sent, &result, &self.metrics);
                    }
                    Ok(None) => break Status::unavailable("core-svc ended the location relay"),
                    Err(status) => break status,
                },
                () = self.wanted.notified(), if !pending => pending = true,
                permit = tx.reserve(), if pending && in_flight.len() < IN_FLIGHT => {
                    let Ok(permit) = permit else {
                        break Status::unavailable("the location relay's requests were closed");
                    };
                    let (positions, sent) = self.take();
                    pending = self.waiting();
                    if !positions.is_empty() {
                        permit.send(pb::LocationBatch { positions });
                        in_flight.push_back(sent);
                    }
                }
            }
        };
        // Never to be answered now: their drivers send the next one.
        let lost = error_frame(&close::location_error(&Status::unavailable("")));
        for inbox in in_flight.iter().flatten().filter_map(Weak::upgrade) {
            self.metrics.frames_sent(FrameType::Error, 1);
            inbox.push_frames(std::slice::from_ref(&lost));
        }
        (status, true)
    }
}

fn error_frame(message: &str) -> Utf8Bytes {
    Utf8Bytes::from(dialect::error_frame(message).to_string())
}

/// Tells the sessions of a batch's refused positions.
fn answered(sent: &Sent, result: &pb::LocationBatchResult, metrics: &Metrics) {
    for refused in &result.refused {
        let inbox = usize::try_from(refused.index)
            .ok()
            .and_then(|i| sent.get(i))
            .and_then(Weak::upgrade);
        if let Some(inbox) = inbox {
            let status = Status::new(Code::from(refused.code), refused.message.clone());
            metrics.frames_sent(FrameType::Error, 1);
            inbox.push_frames(&[error_frame(&close::location_error(&status))]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64) -> Position {
        Position {
            latitude,
            longitude: 1.0,
        }
    }

    #[test]
    fn a_newer_position_replaces_the_waiting_one_and_keeps_its_place() {
        let relay = Relay::default();
        let inbox = Inbox::new(0, 8);
        let (a, b) = (Id::new("a").unwrap(), Id::new("b").unwrap());
        relay.push(&a, at(1.0), &inbox);
        relay.push(&b, at(2.0), &inbox);
        relay.push(&a, at(3.0), &inbox);
        let (batch, sent) = relay.take();
        let got: Vec<(&str, f64)> = batch
            .iter()
            .map(|p| (p.driver_id.as_str(), p.latitude))
            .collect();
        assert_eq!(got, [("a", 3.0), ("b", 2.0)]);
        assert_eq!(sent.len(), 2);
        assert!(!relay.waiting());
    }

    #[test]
    fn a_refusal_reaches_the_session_of_that_position() {
        let (first, second) = (Inbox::new(0, 8), Inbox::new(0, 8));
        let sent = vec![Arc::downgrade(&first), Arc::downgrade(&second)];
        let result = pb::LocationBatchResult {
            refused: vec![pb::RefusedLocation {
                index: 1,
                code: Code::NotFound as i32,
                message: "driver 9 is not registered".into(),
            }],
        };
        answered(&sent, &result, &Metrics::default());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(first.poll_take(&mut cx, 8).is_pending());
        let std::task::Poll::Ready(Ok(items)) = second.poll_take(&mut cx, 8) else {
            panic!("an error frame")
        };
        let crate::inbox::Item::Frame(text) = &items[0] else {
            panic!("a frame")
        };
        assert_eq!(
            text.as_str(),
            r#"{"type":"error","message":"location_update refused: driver 9 is not registered"}"#
        );
    }
}
