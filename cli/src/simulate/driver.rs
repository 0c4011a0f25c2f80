//! A simulated driver: online with its vehicle, holding one WebSocket (its
//! dialect's driver route), cruising between random waypoints and pinging its
//! position up the socket every 1–2 s. It takes some of the offers the socket
//! brings (after a moment's thought, so drivers race for them), drives to the
//! pickup, starts the trip with the OTP the rider tells it, drives to the
//! dropoff and completes. At stop it ends what it has open and goes offline.
//!
//! One task per driver: a `select!` over its socket, a movement tick and stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use logi::auth::Role;
use logi::client::Clients;
use logi::pb;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::check::Status;
use super::fleet::{self, World};
use super::frames::{self, Dialect, Frame};
use super::path::{Point, Route};
use super::rpc::{self, call};
use super::summary::add;
use crate::bench::socket::Ws;

/// How often a driver moves (and checks what is due).
const TICK: Duration = Duration::from_millis(250);
/// The share of offers a free driver considers taking.
const TAKES: f64 = 0.8;
/// Open offers a driver keeps in mind; past this the oldest is forgotten.
const OFFERS_KEPT: usize = 8;
/// How long a driver at the pickup waits for the rider's OTP before giving up.
const OTP_WAIT: Duration = Duration::from_secs(15);
/// A frame to the edge must be taken this soon.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether ending a booking counts in this run's figures (not one an earlier
/// run left open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Yes,
    No,
}

#[derive(Debug)]
enum Job {
    Cruising,
    /// Accepted: driving to the pickup, then waiting there for the OTP.
    Pickup {
        booking: u64,
        dropoff: Point,
        arrived: Option<Instant>,
    },
    Trip {
        booking: u64,
    },
}

pub struct Driver {
    index: usize,
    id: String,
    dialect: Dialect,
    clients: Clients,
    ws: Ws,
    rng: StdRng,
    at: Point,
    route: Route,
    job: Job,
    /// Open offers it would take, oldest first.
    offers: VecDeque<u64>,
    /// When its moment of thought is over and it accepts the oldest offer.
    decide_at: Option<Instant>,
    next_ping: Instant,
    world: Arc<World>,
}

fn place(p: Option<&pb::Place>) -> Option<Point> {
    p.map(|p| Point {
        lat: p.latitude,
        lon: p.longitude,
    })
}

impl Driver {
    /// Ends what driver `index` left open in an earlier run, brings it online and
    /// opens its socket, with a first position.
    ///
    /// # Errors
    /// When a call or the handshake fails: the message says which.
    pub async fn start(world: Arc<World>, index: usize, mut rng: StdRng) -> anyhow::Result<Self> {
        let id = fleet::driver_id(index);
        let dialect = Dialect::of(index);
        let mut clients = world.clients(Role::Driver, &id)?;
        let open = call(clients.bookings.list_bookings(pb::ListBookingsRequest {
            driver_id: id.clone(),
            active: true,
            page_size: 50,
            ..Default::default()
        }))
        .await
        .map_err(|s| anyhow::anyhow!(rpc::describe("ListBookings", &id, &s)))?;
        let at = world.area.random_point(&mut rng);
        let mut driver = Self {
            index,
            dialect,
            clients,
            ws: world
                .socket(dialect.driver_path(), Role::Driver, &id)
                .await?,
            route: Route::new(at, world.area.random_point(&mut rng)),
            at,
            job: Job::Cruising,
            offers: VecDeque::new(),
            decide_at: None,
            next_ping: Instant::now(),
            id,
            rng,
            world: world.clone(),
        };
        for b in open.bookings {
            let on_trip = b.status == pb::BookingStatus::OnTrip as i32;
            driver.end(b.id, on_trip, Count::No).await;
        }
        let online = pb::SetDriverStatusRequest {
            driver_id: driver.id.clone(),
            status: pb::DriverStatus::Available as i32,
            vehicle_type: fleet::vehicle(index).into(),
        };
        call(driver.clients.locations.set_driver_status(online))
            .await
            .map_err(|s| anyhow::anyhow!(rpc::describe("SetDriverStatus", &driver.id, &s)))?;
        world.ledger.stats.drivers_online.fetch_add(1, Relaxed);
        driver.ping().await;
        Ok(driver)
    }

    /// Drives until `stop`, then ends its booking, goes offline and closes.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut open = true;
        while open {
            tokio::select! {
                _ = stop.cancelled() => break,
                message = self.ws.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_frame(frames::parse(self.dialect, &text)).await,
                    Some(Ok(Message::Close(frame))) => {
                        self.world.ledger.fail(format!("driver {}'s socket was closed by the edge: {frame:?}", self.id));
                        open = false;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.world.ledger.fail(format!("driver {}'s socket failed: {e}", self.id));
                        open = false;
                    }
                    None => {
                        self.world.ledger.fail(format!("driver {}'s socket ended", self.id));
                        open = false;
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let dt = now - last;
                    last = now;
                    self.on_tick(dt).await;
                }
            }
        }
        match self.job {
            Job::Cruising => {}
            Job::Pickup { booking, .. } => self.end(booking, false, Count::Yes).await,
            Job::Trip { booking } => self.end(booking, true, Count::Yes).await,
        }
        self.job = Job::Cruising;
        let offline = pb::SetDriverStatusRequest {
            driver_id: self.id.clone(),
            status: pb::DriverStatus::Offline as i32,
            vehicle_type: String::new(),
        };
        match call(self.clients.locations.set_driver_status(offline)).await {
            Ok(_) => {
                self.world.ledger.stats.drivers_online.fetch_sub(1, Relaxed);
            }
            Err(s) => {
                self.world
                    .ledger
                    .fail(rpc::describe("SetDriverStatus OFFLINE", &self.id, &s))
            }
        }
        if open {
            // The close handshake is a courtesy: bounded, its failure changes nothing.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
        }
    }

    async fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Offer(booking) => {
                if matches!(self.job, Job::Cruising) && self.rng.random_bool(TAKES) {
                    if self.offers.len() == OFFERS_KEPT {
                        self.offers.pop_front();
                    }
                    self.offers.push_back(booking);
                    if self.decide_at.is_none() {
                        self.think(300..2500);
                    }
                }
            }
            Frame::OfferClosed(booking) => self.offers.retain(|b| *b != booking),
            Frame::Status(booking, Status::Cancelled) => {
                if let Job::Pickup { booking: b, .. } = self.job
                    && b == booking
                {
                    // The rider cancelled: back to cruising.
                    self.cruise();
                }
            }
            Frame::Error(message) => self
                .world
                .ledger
                .fail(format!("driver {} got an error frame: {message}", self.id)),
            Frame::Status(..) | Frame::Otp(..) | Frame::Other => {}
        }
    }

    async fn on_tick(&mut self, dt: Duration) {
        let speed = fleet::street_speed(fleet::vehicle(self.index)) * self.world.speedup;
        self.at = self
            .route
            .advance(&self.world.area, self.at, speed * dt.as_secs_f64());
        let now = Instant::now();
        if now >= self.next_ping {
            self.ping().await;
        }
        if self.decide_at.is_some_and(|at| now >= at) {
            self.decide_at = None;
            if matches!(self.job, Job::Cruising)
                && let Some(booking) = self.offers.pop_front()
            {
                self.accept(booking).await;
            }
        }
        if !self.route.arrived() {
            return;
        }
        match self.job {
            Job::Cruising => self.cruise(),
            Job::Pickup {
                booking,
                dropoff,
                mut arrived,
            } => {
                let since = *arrived.get_or_insert(now);
                self.job = Job::Pickup {
                    booking,
                    dropoff,
                    arrived: Some(since),
                };
                if let Some(otp) = self.world.ledger.otp(booking) {
                    self.start_trip(booking, dropoff, otp).await;
                } else if now - since > OTP_WAIT {
                    self.world.ledger.fail(format!(
                        "driver {} waited {} s at the pickup of booking {booking} and no OTP reached its rider",
                        self.id,
                        OTP_WAIT.as_secs()
                    ));
                    self.end(booking, false, Count::Yes).await;
                    self.cruise();
                }
            }
            Job::Trip { booking } => {
                self.end(booking, true, Count::Yes).await;
                self.cruise();
            }
        }
    }

    /// Takes a moment (`millis`) before accepting the oldest open offer.
    fn think(&mut self, millis: std::ops::Range<u64>) {
        self.decide_at =
            Some(Instant::now() + Duration::from_millis(self.rng.random_range(millis)));
    }

    /// Heads for a new random waypoint, free for offers.
    fn cruise(&mut self) {
        self.job = Job::Cruising;
        let to = self.world.area.random_point(&mut self.rng);
        self.route = Route::new(self.at, to);
    }

    async fn ping(&mut self) {
        self.next_ping = Instant::now() + Duration::from_millis(self.rng.random_range(1000..2000));
        let frame = Message::text(self.dialect.ping(self.at));
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self
                .world
                .ledger
                .fail(format!("driver {} cannot send its position: {e}", self.id)),
            Err(_) => self.world.ledger.fail(format!(
                "driver {}'s position was not taken within {SEND_TIMEOUT:?}",
                self.id
            )),
        }
    }

    async fn accept(&mut self, booking: u64) {
        let req = pb::AcceptBookingRequest {
            booking_id: booking,
            driver_id: self.id.clone(),
        };
        let stats = &self.world.ledger.stats;
        match call(self.clients.bookings.accept_booking(req)).await {
            Ok(b) => {
                add(&stats.accepted);
                self.world.ledger.confirm(booking, Status::Accepted);
                let (Some(pickup), Some(dropoff)) =
                    (place(b.pickup.as_ref()), place(b.dropoff.as_ref()))
                else {
                    self.world.ledger.fail(format!(
                        "AcceptBooking {booking} answered without its places"
                    ));
                    self.end(booking, false, Count::Yes).await;
                    return;
                };
                self.offers.clear();
                self.route = Route::new(self.at, pickup);
                self.job = Job::Pickup {
                    booking,
                    dropoff,
                    arrived: None,
                };
            }
            Err(s) if rpc::lost_race(&s) => {
                add(&stats.races_lost);
                if !self.offers.is_empty() {
                    self.think(200..800);
                }
            }
            Err(s) => self
                .world
                .ledger
                .fail(rpc::describe("AcceptBooking", &self.id, &s)),
        }
    }

    async fn start_trip(&mut self, booking: u64, dropoff: Point, otp: String) {
        let req = pb::VerifyOtpRequest {
            booking_id: booking,
            driver_id: self.id.clone(),
            otp,
        };
        match call(self.clients.bookings.verify_otp(req)).await {
            Ok(_) => {
                self.world.ledger.stats.on_trip.fetch_add(1, Relaxed);
                self.world.ledger.confirm(booking, Status::OnTrip);
                self.route = Route::new(self.at, dropoff);
                self.job = Job::Trip { booking };
            }
            Err(s) => {
                self.unless_cancelled(booking, "VerifyOtp", s).await;
                self.cruise();
            }
        }
    }

    /// Ends booking `booking`: completes it if on trip, else cancels it as the driver.
    async fn end(&mut self, booking: u64, on_trip: bool, count: Count) {
        let ledger = &self.world.ledger;
        let count = count == Count::Yes;
        if on_trip {
            let req = pb::CompleteTripRequest {
                booking_id: booking,
                driver_id: self.id.clone(),
            };
            match call(self.clients.bookings.complete_trip(req)).await {
                Ok(_) if count => {
                    ledger.stats.on_trip.fetch_sub(1, Relaxed);
                    add(&ledger.stats.completed);
                    ledger.confirm(booking, Status::Completed);
                }
                Ok(_) => {}
                Err(s) => ledger.fail(rpc::describe("CompleteTrip", &self.id, &s)),
            }
            return;
        }
        let req = pb::CancelBookingRequest {
            booking_id: booking,
            cancelled_by: pb::Canceller::Driver as i32,
            reason: "the driver stopped".into(),
        };
        match call(self.clients.bookings.cancel_booking(req)).await {
            Ok(_) if count => {
                add(&ledger.stats.cancelled);
                ledger.confirm(booking, Status::Cancelled);
            }
            Ok(_) => {}
            Err(s) => self.unless_cancelled(booking, "CancelBooking", s).await,
        }
    }

    /// A FAILED_PRECONDITION on a booking the rider cancelled meanwhile is the
    /// race a driver loses to its rider; anything else is a failure.
    async fn unless_cancelled(&mut self, booking: u64, method: &str, status: tonic::Status) {
        if rpc::lost_race(&status) {
            let get = pb::GetBookingRequest {
                booking_id: booking,
            };
            if let Ok(b) = call(self.clients.bookings.get_booking(get)).await
                && b.status == pb::BookingStatus::Cancelled as i32
            {
                return;
            }
        }
        self.world
            .ledger
            .fail(rpc::describe(method, &self.id, &status));
    }
}
