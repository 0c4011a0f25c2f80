//! A simulated rider: one WebSocket (its dialect's rider route) on which it
//! watches its bookings, and a booking at a time over gRPC when the scheduler
//! picks it. Some riders change their minds and cancel; a few ask for a vehicle
//! nobody drives, and their bookings expire. The OTP its socket brings goes into
//! the ledger, which is how the rider "tells" its driver.
//!
//! One task per rider: a `select!` over its socket, the scheduler's call, its
//! cancel timer, stop (cancel what is still pending) and close (the socket).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use logi::auth::Role;
use logi::client::Clients;
use logi::pb;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::check::Status;
use super::fleet::{self, World};
use super::frames::{self, Dialect, Frame};
use super::path::Point;
use super::rpc::{self, call};
use super::summary::add;
use crate::bench::socket::Ws;

/// The share of bookings their riders cancel.
const CANCELS: f64 = 0.1;
/// The share of bookings for a vehicle nobody drives: they expire.
const UNDRIVEN: f64 = 0.05;

/// The rider's booking in progress.
#[derive(Debug)]
struct Current {
    booking: u64,
    last: Status,
    cancel_at: Option<Instant>,
}

/// How a rider is told to book, and tells it is free to.
pub struct Queues {
    /// The scheduler's word to book (one at most waiting).
    pub book: mpsc::Receiver<()>,
    /// Where a free rider puts its index (room for every rider: never full).
    pub free: mpsc::Sender<usize>,
    /// Dropped once the rider's stop clean-up is done.
    pub cleaned: mpsc::Sender<()>,
}

pub struct Rider {
    index: usize,
    id: String,
    dialect: Dialect,
    clients: Clients,
    ws: Ws,
    rng: StdRng,
    current: Option<Current>,
    world: Arc<World>,
}

impl Rider {
    /// Opens rider `index`'s socket and cancels what it left pending in an
    /// earlier run.
    ///
    /// # Errors
    /// When a call or the handshake fails: the message says which.
    pub async fn start(world: Arc<World>, index: usize, rng: StdRng) -> anyhow::Result<Self> {
        let id = fleet::rider_id(index);
        let dialect = Dialect::of(index);
        let mut clients = world.clients(Role::User, &id)?;
        let ws = world.socket(dialect.rider_path(), Role::User, &id).await?;
        let pending = call(clients.bookings.list_bookings(pb::ListBookingsRequest {
            user_id: id.clone(),
            status: pb::BookingStatus::Pending as i32,
            page_size: 50,
            ..Default::default()
        }))
        .await
        .map_err(|s| anyhow::anyhow!(rpc::describe("ListBookings", &id, &s)))?;
        let mut rider = Self {
            index,
            id,
            dialect,
            clients,
            ws,
            rng,
            current: None,
            world,
        };
        for b in pending.bookings {
            rider.cancel(b.id, false).await;
        }
        Ok(rider)
    }

    /// Books when told until `stop`, then cancels its pending booking and keeps
    /// watching until `close`.
    pub async fn run(mut self, mut q: Queues, stop: CancellationToken, close: CancellationToken) {
        let mut cleaned = Some(q.cleaned);
        let mut free_at = Some(Instant::now());
        loop {
            let cancel_at = self.current.as_ref().and_then(|c| c.cancel_at);
            let stopping = cleaned.is_none();
            tokio::select! {
                _ = close.cancelled() => break,
                _ = stop.cancelled(), if !stopping => {
                    if let Some(c) = &self.current && c.last == Status::Pending {
                        self.cancel(c.booking, true).await;
                    }
                    cleaned = None;
                }
                Some(()) = q.book.recv(), if !stopping => {
                    if self.current.is_none() {
                        self.book().await;
                    }
                    if self.current.is_none() {
                        free_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                _ = sleep_until(free_at), if !stopping && free_at.is_some() => {
                    free_at = None;
                    // Room for every rider and each is in at most once: never full.
                    let _ = q.free.try_send(self.index);
                }
                _ = sleep_until(cancel_at), if !stopping && cancel_at.is_some() => {
                    if let Some(c) = self.current.as_mut() {
                        c.cancel_at = None;
                        if matches!(c.last, Status::Pending | Status::Accepted) {
                            let booking = c.booking;
                            self.cancel(booking, true).await;
                        }
                    }
                }
                message = self.ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let frame = frames::parse(self.dialect, &text);
                        if self.on_frame(frame) {
                            // Its booking is over: free again after a pause.
                            let pause = Duration::from_millis(self.rng.random_range(0..3000));
                            free_at = Some(Instant::now() + pause);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        self.world.ledger.fail(format!("rider {}'s socket was closed by the edge: {frame:?}", self.id));
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.world.ledger.fail(format!("rider {}'s socket failed: {e}", self.id));
                        return;
                    }
                    None => {
                        self.world.ledger.fail(format!("rider {}'s socket ended", self.id));
                        return;
                    }
                },
            }
        }
        // The close handshake is a courtesy: bounded, its failure changes nothing.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    /// Records a frame; true when it ended the rider's booking in progress.
    fn on_frame(&mut self, frame: Frame) -> bool {
        let ledger = &self.world.ledger;
        match frame {
            Frame::Status(booking, status) => {
                ledger.seen(booking, status);
                let Some(c) = self.current.as_mut().filter(|c| c.booking == booking) else {
                    return false;
                };
                c.last = status;
                if status == Status::Expired {
                    add(&ledger.stats.expired);
                }
                if status.is_final() {
                    self.current = None;
                    return true;
                }
            }
            Frame::Otp(booking, otp) => ledger.seen_otp(booking, otp),
            Frame::Error(message) => {
                ledger.fail(format!("rider {} got an error frame: {message}", self.id));
            }
            Frame::Offer(_) | Frame::OfferClosed(_) | Frame::Other => {}
        }
        false
    }

    fn place(&self, p: Point) -> pb::Place {
        pb::Place {
            latitude: p.lat,
            longitude: p.lon,
            address: format!("{:.5}, {:.5}", p.lat, p.lon),
        }
    }

    /// One booking, retried once with the same request id when its answer is lost.
    async fn book(&mut self) {
        let area = self.world.area;
        let pickup = area.random_point(&mut self.rng);
        let length = self
            .rng
            .random_range(area.radius_m / 6.0..=area.radius_m / 3.0);
        let dropoff = area.random_point_at(&mut self.rng, pickup, length);
        let vehicle = if self.rng.random_bool(UNDRIVEN) {
            fleet::UNDRIVEN
        } else {
            fleet::vehicle(self.rng.random_range(0..20))
        };
        let req = pb::CreateBookingRequest {
            user_id: self.id.clone(),
            pickup: Some(self.place(pickup)),
            dropoff: Some(self.place(dropoff)),
            vehicle_type: vehicle.into(),
            phone_number: format!("+1555{:07}", self.index),
            request_id: format!("sim-{:032x}", self.rng.random::<u128>()),
        };
        let mut answer = call(self.clients.bookings.create_booking(req.clone())).await;
        if let Err(s) = &answer
            && matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            )
        {
            answer = call(self.clients.bookings.create_booking(req)).await;
        }
        match answer {
            Ok(b) => {
                self.world.ledger.created(b.id, &self.id);
                let cancel_at = self.rng.random_bool(CANCELS).then(|| {
                    Instant::now() + Duration::from_millis(self.rng.random_range(500..4000))
                });
                self.current = Some(Current {
                    booking: b.id,
                    last: Status::Pending,
                    cancel_at,
                });
            }
            Err(s) => self
                .world
                .ledger
                .fail(rpc::describe("CreateBooking", &self.id, &s)),
        }
    }

    /// Cancels `booking` as the rider; `count` for this run's bookings (not one an
    /// earlier run left pending).
    async fn cancel(&mut self, booking: u64, count: bool) {
        let req = pb::CancelBookingRequest {
            booking_id: booking,
            cancelled_by: pb::Canceller::User as i32,
            reason: "plans changed".into(),
        };
        let ledger = &self.world.ledger;
        match call(self.clients.bookings.cancel_booking(req)).await {
            Ok(_) if count => {
                add(&ledger.stats.cancelled);
                ledger.confirm(booking, Status::Cancelled);
            }
            Ok(_) => {}
            // The trip started (or the booking expired) first: the rider's lost race.
            Err(s) if rpc::lost_race(&s) => {}
            Err(s) => ledger.fail(rpc::describe("CancelBooking", &self.id, &s)),
        }
    }
}

/// Sleeps until `at`, or forever for `None` (its `select!` arm is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
