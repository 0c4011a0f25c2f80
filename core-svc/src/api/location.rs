//! LocationService.

use std::sync::Arc;
use std::time::SystemTime;

use logi::auth::{Principal, Role};
use logi::pb::{self, location_service_server::LocationService};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{Core, access, convert, principal};
use crate::error::Error;
use crate::live::{self, location_pb};
use crate::liveness;
use crate::model::{DriverStatus, GeoPoint, Location};

const DEFAULT_RADIUS_M: f64 = 3_000.0;
const MAX_RADIUS_M: f64 = 100_000.0;
const DEFAULT_LIMIT: u32 = 10;
const MAX_LIMIT: u32 = 100;

pub struct LocationApi(pub Arc<Core>);

impl LocationApi {
    /// Validates and applies one position; returns the booking whose rider got it.
    async fn apply(&self, p: &Principal, r: pb::UpdateDriverLocationRequest) -> Result<u64, Error> {
        let driver = convert::id(
            "driver_id",
            &access::default_id(p, Role::Driver, &r.driver_id),
        )?;
        access::as_driver(p, &driver)?;
        let point = GeoPoint::new(r.latitude, r.longitude, "location")?;
        convert::motion(r.heading, r.speed_mps)?;
        let location = Location {
            point,
            heading: r.heading,
            speed_mps: r.speed_mps,
            at: SystemTime::now(),
        };
        let recorded = live::position(&self.0.hub, &self.0.registry, &driver, location, true)?;
        if let Some(cluster) = &self.0.cluster {
            cluster.moved(driver.clone(), location);
        }
        if recorded.back {
            liveness::back(self.0.store.as_ref(), &driver).await;
        }
        Ok(recorded.during_trip.unwrap_or(0))
    }
}

/// Positions per batch of RelayDriverLocations at most.
pub const MAX_RELAY_BATCH: usize = 1024;

pub type RelayStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LocationBatchResult, Status>> + Send>>;

impl LocationApi {
    /// Applies one batch of an edge's relay; the refusals among it.
    async fn relay_batch(
        &self,
        p: &Principal,
        batch: pb::LocationBatch,
    ) -> pb::LocationBatchResult {
        let mut refused = Vec::new();
        for (index, position) in batch.positions.into_iter().enumerate() {
            if let Err(e) = self.apply(p, position).await {
                let status = Status::from(e);
                refused.push(pb::RefusedLocation {
                    // At most MAX_RELAY_BATCH, checked before.
                    index: index as u32,
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                });
            }
        }
        pb::LocationBatchResult { refused }
    }
}

#[tonic::async_trait]
impl LocationService for LocationApi {
    async fn update_driver_location(
        &self,
        req: Request<pb::UpdateDriverLocationRequest>,
    ) -> Result<Response<pb::UpdateDriverLocationResponse>, Status> {
        let p = principal(&req)?;
        let booking_id = self.apply(&p, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateDriverLocationResponse {
            booking_id,
        }))
    }

    async fn stream_driver_locations(
        &self,
        req: Request<Streaming<pb::UpdateDriverLocationRequest>>,
    ) -> Result<Response<pb::StreamDriverLocationsResponse>, Status> {
        let p = principal(&req)?;
        let mut stream = req.into_inner();
        let mut accepted = 0u64;
        loop {
            let next = tokio::select! {
                () = self.0.shutdown.cancelled() => {
                    return Err(Status::unavailable(format!(
                        "core-svc is shutting down after {accepted} positions: reconnect and keep streaming"
                    )));
                }
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(r)) => {
                    self.apply(&p, r).await.map_err(|e| {
                        let status = Status::from(e);
                        Status::new(
                            status.code(),
                            format!("{} (after {accepted} positions applied)", status.message()),
                        )
                    })?;
                    accepted += 1;
                }
                Some(Err(status)) => return Err(status),
            }
        }
        Ok(Response::new(pb::StreamDriverLocationsResponse {
            accepted,
        }))
    }

    type RelayDriverLocationsStream = RelayStream;

    async fn relay_driver_locations(
        &self,
        req: Request<Streaming<pb::LocationBatch>>,
    ) -> Result<Response<RelayStream>, Status> {
        let p = principal(&req)?;
        if p.role != Role::Service {
            return Err(Status::permission_denied(
                "RelayDriverLocations is for ws-edge, with a service token: drivers use UpdateDriverLocation or StreamDriverLocations",
            ));
        }
        let api = LocationApi(self.0.clone());
        let mut batches = req.into_inner();
        let shutdown = self.0.shutdown.clone();
        let answers = async_stream::stream! {
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => {
                        yield Err(Status::unavailable("core-svc is shutting down: relay the next positions elsewhere"));
                        return;
                    }
                    next = batches.next() => next,
                };
                // The edge closed its side, or went away.
                let Some(Ok(batch)) = next else { return };
                if batch.positions.len() > MAX_RELAY_BATCH {
                    yield Err(Status::invalid_argument(format!(
                        "a batch holds at most {MAX_RELAY_BATCH} positions, this one {}",
                        batch.positions.len()
                    )));
                    return;
                }
                yield Ok(api.relay_batch(&p, batch).await);
            }
        };
        Ok(Response::new(Box::pin(answers)))
    }

    async fn get_driver_location(
        &self,
        req: Request<pb::GetDriverLocationRequest>,
    ) -> Result<Response<pb::DriverLocation>, Status> {
        let p = principal(&req)?;
        let driver = convert::id(
            "driver_id",
            &access::default_id(&p, Role::Driver, &req.get_ref().driver_id),
        )?;
        let found = self.0.registry.get(&driver);
        let rider_of_trip = |d: &crate::model::Driver| {
            p.role == Role::User && d.active.as_ref().is_some_and(|t| t.user_id == p.id)
        };
        match &found {
            Some((d, _)) if rider_of_trip(d) => {}
            _ if p.role == Role::User => {
                return Err(
                    Error::denied(format!("driver {driver} is not on a trip of yours")).into(),
                );
            }
            _ => access::as_driver(&p, &driver)?,
        }
        let (_, location) = found.ok_or_else(|| Error::DriverNotFound(driver.to_string()))?;
        let location = location.ok_or_else(|| Error::NoLocation(driver.to_string()))?;
        Ok(Response::new(location_pb(driver.as_str(), &location)))
    }

    async fn set_driver_status(
        &self,
        req: Request<pb::SetDriverStatusRequest>,
    ) -> Result<Response<pb::Driver>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let driver = convert::id(
            "driver_id",
            &access::default_id(&p, Role::Driver, &r.driver_id),
        )?;
        access::as_driver(&p, &driver)?;
        let status = match pb::DriverStatus::try_from(r.status) {
            Ok(pb::DriverStatus::Available) => DriverStatus::Available,
            Ok(pb::DriverStatus::Offline) => DriverStatus::Offline,
            Ok(pb::DriverStatus::OnTrip) => {
                return Err(Error::invalid(
                    "status ON_TRIP is set by AcceptBooking, not SetDriverStatus",
                )
                .into());
            }
            _ => {
                return Err(Error::invalid(
                    "status is required: DRIVER_STATUS_AVAILABLE or DRIVER_STATUS_OFFLINE",
                )
                .into());
            }
        };
        let vehicle_type = if r.vehicle_type.is_empty() {
            None
        } else {
            convert::vehicle_type(&self.0.tariffs, &r.vehicle_type)?;
            Some(r.vehicle_type)
        };
        let updated = self
            .0
            .store
            .set_driver_status(driver.clone(), status, vehicle_type)
            .await?;
        tracing::info!(%driver, status = status.as_str(), "driver status set");
        Ok(Response::new(updated.to_pb()))
    }

    async fn find_nearby_drivers(
        &self,
        req: Request<pb::FindNearbyDriversRequest>,
    ) -> Result<Response<pb::FindNearbyDriversResponse>, Status> {
        let p = principal(&req)?;
        access::privileged(&p, "FindNearbyDrivers")?;
        let r = req.into_inner();
        let center = GeoPoint::new(r.latitude, r.longitude, "center")?;
        convert::vehicle_type(&self.0.tariffs, &r.vehicle_type)?;
        let radius_m = if r.radius_m == 0.0 {
            DEFAULT_RADIUS_M
        } else {
            r.radius_m
        };
        if !(radius_m.is_finite() && radius_m > 0.0 && radius_m <= MAX_RADIUS_M) {
            return Err(Error::invalid(format!(
                "radius_m must be more than 0 and at most {MAX_RADIUS_M}"
            ))
            .into());
        }
        if r.limit > MAX_LIMIT {
            return Err(Error::invalid(format!("limit must be at most {MAX_LIMIT}")).into());
        }
        let limit = if r.limit == 0 { DEFAULT_LIMIT } else { r.limit } as usize;
        let drivers = self
            .0
            .registry
            .nearest(&r.vehicle_type, center, radius_m, limit, |_| false)
            .into_iter()
            .map(|n| pb::NearbyDriver {
                location: Some(location_pb(n.driver_id.as_str(), &n.location)),
                distance_m: n.distance_m,
            })
            .collect();
        Ok(Response::new(pb::FindNearbyDriversResponse { drivers }))
    }
}
