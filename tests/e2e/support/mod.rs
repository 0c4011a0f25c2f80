//! Test harness: core-svc started in-process on 127.0.0.1:0 with a temporary
//! database, and real tonic clients that carry a token.
#![allow(dead_code)]

pub mod db;
pub mod edge;
pub mod proxy;
pub mod readme;
pub mod tools;

pub use db::Db;

use std::net::SocketAddr;
use std::time::Duration;

use logi::auth::{Role, Signer};
use logi::client::{Authed, Bearer, Clients};
use logi::pb::{self, event::Kind};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn token(role: Role, sub: &str) -> String {
    Signer::hs256(SECRET.as_bytes())
        .unwrap()
        .mint(sub, role, Duration::from_secs(3600))
        .unwrap()
}

pub struct Core {
    pub addr: SocketAddr,
    /// Where its `/metrics` is served.
    pub metrics: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), core_svc::server::ServeError>>,
}

/// Starts core-svc on `db` with extra flags.
pub async fn spawn_core(db: &Db, extra: &[&str]) -> Core {
    spawn_core_on("127.0.0.1:0", db, extra).await
}

/// Starts core-svc on a given address (to restart one where it was).
pub async fn spawn_core_on(addr: &str, db: &Db, extra: &[&str]) -> Core {
    let mut args = vec![
        "core-svc",
        "--database",
        db.location(),
        "--grpc-addr",
        addr,
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    if !extra.contains(&"--jwt-public-key") {
        args.extend_from_slice(&["--jwt-secret", SECRET]);
    }
    args.extend_from_slice(extra);
    let config = <core_svc::Config as clap::Parser>::try_parse_from(args).unwrap();
    let listeners = core_svc::server::Listeners::bind(&config).await.unwrap();
    let addr = listeners.grpc.local_addr().unwrap();
    let metrics = listeners.metrics.as_ref().unwrap().local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(core_svc::run(config, listeners, shutdown.clone()));
    Core {
        addr,
        metrics,
        shutdown,
        handle,
    }
}

impl Core {
    /// Shuts down through the shutdown signal and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("core-svc stops")
            .unwrap()
            .unwrap();
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn as_(&self, role: Role, sub: &str) -> Client {
        Client::new(self.channel().await, &token(role, sub))
    }
}

/// A plain HTTP GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = http_request(addr, path, &[]).await;
    (answer.status, answer.body)
}

/// A plain HTTP GET with extra request headers.
pub async fn http_request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    Answer {
        status: status.parse().unwrap(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: body.to_owned(),
    }
}

/// A plain HTTP answer: status, headers (names in lower case) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The three services, calling with one token.
#[derive(Clone)]
pub struct Client {
    pub bookings: pb::booking_service_client::BookingServiceClient<Authed>,
    pub locations: pb::location_service_client::LocationServiceClient<Authed>,
    pub events: pb::event_service_client::EventServiceClient<Authed>,
}

impl Client {
    pub fn new(channel: Channel, token: &str) -> Self {
        Self::with_header(channel, Some(format!("Bearer {token}")))
    }

    pub fn with_header(channel: Channel, header: Option<String>) -> Self {
        let clients = Clients::new(channel, Bearer::header(header.as_deref()).unwrap());
        Self {
            bookings: clients.bookings,
            locations: clients.locations,
            events: clients.events,
        }
    }

    pub async fn subscribe(&mut self, topics: &[&str]) -> Events {
        self.subscribe_from(topics, &[]).await
    }

    pub async fn subscribe_from(
        &mut self,
        topics: &[&str],
        resume: &[(&str, pb::Cursor)],
    ) -> Events {
        let req = pb::SubscribeRequest {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            resume: resume.iter().map(|(t, c)| (t.to_string(), *c)).collect(),
            heads: false,
            snapshots: false,
        };
        Events(self.events.subscribe(req).await.unwrap().into_inner())
    }

    pub async fn driver_online(&mut self, driver: &str, vehicle: &str, lat: f64, lon: f64) {
        self.locations
            .set_driver_status(pb::SetDriverStatusRequest {
                driver_id: driver.into(),
                status: pb::DriverStatus::Available as i32,
                vehicle_type: vehicle.into(),
            })
            .await
            .unwrap();
        self.move_driver(driver, lat, lon).await.unwrap();
    }

    pub async fn move_driver(&mut self, driver: &str, lat: f64, lon: f64) -> Result<u64, Status> {
        let req = pb::UpdateDriverLocationRequest {
            driver_id: driver.into(),
            latitude: lat,
            longitude: lon,
            heading: 90.0,
            speed_mps: 8.0,
        };
        Ok(self
            .locations
            .update_driver_location(req)
            .await?
            .into_inner()
            .booking_id)
    }

    pub async fn accept(
        &mut self,
        booking_id: u64,
        driver: impl Into<String>,
    ) -> Result<pb::Booking, Status> {
        let req = pb::AcceptBookingRequest {
            booking_id,
            driver_id: driver.into(),
        };
        Ok(self.bookings.accept_booking(req).await?.into_inner())
    }

    pub async fn verify(
        &mut self,
        booking_id: u64,
        driver: impl Into<String>,
        otp: impl Into<String>,
    ) -> Result<pb::Booking, Status> {
        let req = pb::VerifyOtpRequest {
            booking_id,
            driver_id: driver.into(),
            otp: otp.into(),
        };
        Ok(self.bookings.verify_otp(req).await?.into_inner())
    }

    pub async fn complete(
        &mut self,
        booking_id: u64,
        driver: impl Into<String>,
    ) -> Result<pb::Booking, Status> {
        let req = pb::CompleteTripRequest {
            booking_id,
            driver_id: driver.into(),
        };
        Ok(self.bookings.complete_trip(req).await?.into_inner())
    }

    /// Cancels as the booking's rider.
    pub async fn cancel(&mut self, booking_id: u64, reason: &str) -> Result<pb::Booking, Status> {
        let req = pb::CancelBookingRequest {
            booking_id,
            cancelled_by: pb::Canceller::User as i32,
            reason: reason.into(),
        };
        Ok(self.bookings.cancel_booking(req).await?.into_inner())
    }

    /// The booking as this client may see it.
    pub async fn get(&mut self, booking_id: u64) -> Result<pb::Booking, Status> {
        Ok(self
            .bookings
            .get_booking(pb::GetBookingRequest { booking_id })
            .await?
            .into_inner())
    }

    pub async fn book(&mut self, user: &str, vehicle: &str) -> Result<pb::Booking, Status> {
        Ok(self
            .bookings
            .create_booking(booking_request(user, vehicle))
            .await?
            .into_inner())
    }
}

/// Pickup at San Francisco's Ferry Building, dropoff ~2.2 km away.
pub const PICKUP: (f64, f64) = (37.7955, -122.3937);

pub fn booking_request(user: &str, vehicle: &str) -> pb::CreateBookingRequest {
    pb::CreateBookingRequest {
        user_id: user.into(),
        pickup: Some(pb::Place {
            latitude: PICKUP.0,
            longitude: PICKUP.1,
            address: "123 Main St".into(),
        }),
        dropoff: Some(pb::Place {
            latitude: 37.7793,
            longitude: -122.4193,
            address: "456 Elm St".into(),
        }),
        vehicle_type: vehicle.into(),
        phone_number: "+1234567890".into(),
        request_id: String::new(),
    }
}

pub struct Events(pub Streaming<pb::Event>);

impl Events {
    /// The next event, failing the test if none comes in time.
    pub async fn next(&mut self) -> pb::Event {
        match tokio::time::timeout(PATIENCE, self.0.next()).await {
            Ok(Some(Ok(e))) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The stream's ending status.
    pub async fn end(&mut self) -> Status {
        match tokio::time::timeout(PATIENCE, self.0.next()).await {
            Ok(Some(Err(status))) => status,
            other => panic!("expected the stream to end with an error, got {other:?}"),
        }
    }

    /// The next `n` events, summarised.
    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(summary(&self.next().await));
        }
        out
    }

    /// Nothing more arrives within a short wait.
    pub async fn assert_quiet(&mut self) {
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), self.0.next()).await {
            panic!("expected no more events, got {item:?}");
        }
    }
}

fn status_name(s: i32) -> String {
    pb::BookingStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("BOOKING_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// "45 available car 37.7,-122.4 #7" (no position: "-"; no trip: no "#").
fn position(p: &pb::DriverPosition) -> String {
    let at = p.location.as_ref().map_or("-".to_owned(), |l| {
        format!("{},{}", l.latitude, l.longitude)
    });
    let status = pb::DriverStatus::try_from(p.status)
        .unwrap()
        .as_str_name()
        .trim_start_matches("DRIVER_STATUS_")
        .to_lowercase();
    let trip = match p.booking_id {
        0 => String::new(),
        id => format!(" #{id}"),
    };
    format!("{} {status} {} {at}{trip}", p.driver_id, p.vehicle_type)
}

/// A short, exact description of an event: "topic kind details".
pub fn summary(e: &pb::Event) -> String {
    let detail = match e.kind.as_ref().unwrap() {
        Kind::BookingChanged(c) => {
            let b = c.booking.as_ref().unwrap();
            format!(
                "booking_changed #{} {}->{}",
                b.id,
                status_name(c.previous_status),
                status_name(b.status)
            )
        }
        Kind::OtpIssued(o) => format!("otp_issued #{}", o.booking_id),
        Kind::BookingOffered(o) => format!("booking_offered #{}", o.booking.as_ref().unwrap().id),
        Kind::OfferClosed(c) => format!(
            "offer_closed #{} {}",
            c.booking_id,
            pb::offer_closed::Reason::try_from(c.reason)
                .unwrap()
                .as_str_name()
                .trim_start_matches("REASON_")
                .to_lowercase()
        ),
        Kind::DriverLocation(l) => {
            let loc = l.location.as_ref().unwrap();
            format!(
                "driver_location #{} {} {},{}",
                l.booking_id,
                status_name(l.booking_status),
                loc.latitude,
                loc.longitude
            )
        }
        Kind::Snapshot(s) if !s.drivers.is_empty() => format!(
            "snapshot drivers {:?}",
            s.drivers.iter().map(position).collect::<Vec<_>>()
        ),
        Kind::Snapshot(s) => format!(
            "snapshot bookings {:?} offers {:?}",
            s.bookings.iter().map(|b| b.id).collect::<Vec<_>>(),
            s.offers
                .iter()
                .map(|o| o.booking.as_ref().unwrap().id)
                .collect::<Vec<_>>()
        ),
        Kind::DriverPosition(p) => format!("driver_position {}", position(p)),
        Kind::DriverStatus(d) => format!(
            "driver_status {} {}",
            d.driver_id,
            pb::DriverStatus::try_from(d.status)
                .unwrap()
                .as_str_name()
                .trim_start_matches("DRIVER_STATUS_")
                .to_lowercase()
        ),
        Kind::StreamHead(_) => "stream_head".to_owned(),
        Kind::ResyncRequired(r) => format!(
            "resync_required {}",
            pb::resync_required::Reason::try_from(r.reason)
                .unwrap()
                .as_str_name()
                .trim_start_matches("REASON_")
                .to_lowercase()
        ),
    };
    format!("{} {detail}", e.topic)
}
