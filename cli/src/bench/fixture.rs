//! Trips set up through the gRPC API for scenarios to run on: each driver online
//! far from every other (so dispatch offers it only its own booking), its rider's
//! booking created and accepted.

use futures::{StreamExt, TryStreamExt};
use logi::auth::Role;
use logi::client::{Bearer, Clients};
use logi::pb;
use tonic::transport::Channel;

use super::system::System;

/// Setup calls in flight at once.
const SETUP_CONCURRENCY: usize = 32;

#[derive(Debug, Clone)]
pub struct Trip {
    pub index: usize,
    pub driver: String,
    pub rider: String,
    pub at: (f64, f64),
}

/// Where trip `i` happens: 0.1° apart (at least 7 km), far from any other.
pub fn place(i: usize) -> (f64, f64) {
    (
        -50.0 + (i / 100) as f64 * 0.1,
        -170.0 + (i % 100) as f64 * 0.1,
    )
}

/// `n` trips named as [`trips`] names them, set up nowhere (for the floor relay).
pub fn unregistered(n: usize) -> Vec<Trip> {
    (0..n)
        .map(|i| Trip {
            index: i,
            driver: format!("d{i}"),
            rider: format!("r{i}"),
            at: place(i),
        })
        .collect()
}

/// A service client of core-svc.
///
/// # Errors
/// When core-svc cannot be reached.
pub async fn service(system: &System) -> anyhow::Result<Clients> {
    service_of(system, 0).await
}

/// A service client of the replica worker `i` calls (see [`System::grpc`]).
///
/// # Errors
/// When core-svc cannot be reached.
pub async fn service_of(system: &System, i: usize) -> anyhow::Result<Clients> {
    let channel = Channel::from_shared(format!("http://{}", system.grpc(i)))?
        .connect()
        .await?;
    Ok(Clients::new(
        channel,
        Bearer::token(&system.token(Role::Service, "bench"))?,
    ))
}

/// Sets up `n` accepted trips; riders are `r{i}`, drivers `d{i}`.
///
/// # Errors
/// The first call core-svc refused.
pub async fn trips(system: &System, n: usize, accept: bool) -> anyhow::Result<Vec<Trip>> {
    let clients = service(system).await?;
    futures::stream::iter(0..n)
        .map(|i| {
            let mut c = clients.clone();
            async move {
                let (driver, rider, at) = (format!("d{i}"), format!("r{i}"), place(i));
                let status = pb::SetDriverStatusRequest {
                    driver_id: driver.clone(),
                    status: pb::DriverStatus::Available as i32,
                    vehicle_type: "car".into(),
                };
                c.locations.set_driver_status(status).await?;
                let ping = pb::UpdateDriverLocationRequest {
                    driver_id: driver.clone(),
                    latitude: at.0,
                    longitude: at.1,
                    heading: 0.0,
                    speed_mps: 0.0,
                };
                c.locations.update_driver_location(ping).await?;
                let place = |dlat: f64| {
                    Some(pb::Place {
                        latitude: at.0 + dlat,
                        longitude: at.1,
                        address: "bench".into(),
                    })
                };
                let booking = c
                    .bookings
                    .create_booking(pb::CreateBookingRequest {
                        user_id: rider.clone(),
                        pickup: place(0.0),
                        dropoff: place(0.01),
                        vehicle_type: "car".into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .id;
                if accept {
                    let req = pb::AcceptBookingRequest {
                        booking_id: booking,
                        driver_id: driver.clone(),
                    };
                    c.bookings.accept_booking(req).await?;
                }
                Ok::<_, tonic::Status>(Trip {
                    index: i,
                    driver,
                    rider,
                    at,
                })
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<Trip>>()
        .await
        .map(|mut trips| {
            trips.sort_by_key(|t| t.index);
            trips
        })
        .map_err(|s| anyhow::anyhow!("setting up trips: {s}"))
}
