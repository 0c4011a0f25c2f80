//! What every simulated app shares: the area, the speed-up, the ledger, and the
//! way to core-svc and to the edge (a gRPC channel, the WebSocket URL, a signer
//! for each app's own token). Also who each app is: ids, dialects, vehicles.

use std::time::Duration;

use logi::auth::{Role, Signer};
use logi::client::{Bearer, Clients};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tonic::transport::Channel;

use super::ledger::Ledger;
use super::path::Area;
use crate::bench::socket::Ws;

/// A WebSocket handshake must be answered this soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an app retries a handshake the edge answers 503 (core-svc not yet
/// reachable from it, as just after `logi up` starts).
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(15);

pub struct World {
    pub area: Area,
    /// How many times faster than the street speeds vehicles move.
    pub speedup: f64,
    pub ledger: Ledger,
    pub channel: Channel,
    pub ws_url: String,
    pub signer: Signer,
    pub token_ttl: Duration,
}

impl World {
    /// gRPC clients calling as `id` with role `role`.
    ///
    /// # Errors
    /// When the token cannot be signed.
    pub fn clients(&self, role: Role, id: &str) -> anyhow::Result<Clients> {
        let token = self.signer.mint(id, role, self.token_ttl)?;
        Ok(Clients::new(self.channel.clone(), Bearer::token(&token)?))
    }

    /// A WebSocket to `path` as `id`.
    ///
    /// # Errors
    /// When the edge cannot be reached or refuses the handshake (the message says
    /// which URL, without the token).
    pub async fn socket(&self, path: &str, role: Role, id: &str) -> anyhow::Result<Ws> {
        let token = self.signer.mint(id, role, self.token_ttl)?;
        let base = format!("{}{path}", self.ws_url);
        let url = format!("{base}?token={token}");
        let give_up = Instant::now() + UNAVAILABLE_PATIENCE;
        let mut backoff = Duration::from_millis(100);
        loop {
            let connect = tokio_tungstenite::connect_async(url.as_str());
            let error = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok((ws, _))) => return Ok(ws),
                Ok(Err(Error::Http(r)))
                    if r.status() == StatusCode::SERVICE_UNAVAILABLE
                        && Instant::now() < give_up =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                Ok(Err(Error::Http(r))) => anyhow::anyhow!("HTTP {}", r.status()),
                Ok(Err(e)) => anyhow::Error::from(e),
                Err(_) => anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            return Err(error.context(format!("{id} cannot open {base}")));
        }
    }
}

pub fn driver_id(i: usize) -> String {
    format!("sim-d{i}")
}

pub fn rider_id(i: usize) -> String {
    format!("sim-r{i}")
}

/// Driver `i`'s vehicle: three in four drive cars, the rest bikes and vans.
/// Fixed per driver, so a driver keeps its vehicle from run to run.
pub fn vehicle(i: usize) -> &'static str {
    match i % 20 {
        0..15 => "car",
        15..18 => "bike",
        _ => "van",
    }
}

/// A vehicle type nobody in the fleet drives: its bookings expire.
pub const UNDRIVEN: &str = "truck";

/// Street speed of a vehicle type, in metres per second.
pub fn street_speed(vehicle: &str) -> f64 {
    match vehicle {
        "bike" => 6.0,
        "van" => 9.0,
        _ => 11.0,
    }
}
