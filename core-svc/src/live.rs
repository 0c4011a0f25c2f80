//! The commit sink that makes committed changes live: driver changes go to the
//! registry, pending bookings to the dispatch schedule, events to the hub, and, in
//! a cluster, the whole commit to the other replicas. Runs right after each
//! commit. Also where a driver's position becomes live, wherever it was received.

use std::sync::{Arc, OnceLock};

use logi::id::Id;
use logi::pb::{self, event::Kind};
use logi::topic::{FLEET, Topic};

use crate::cluster::Cluster;
use crate::cluster::wire::Remote;
use crate::dispatch::Schedule;
use crate::drivers::{Recorded, Registry};
use crate::error::Error;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::{Driver, Location, timestamp};
use crate::store::{CommitSink, Effects};

pub struct Live {
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
    pub schedule: Arc<Schedule>,
    /// The other replicas, once connected (never, on a single node).
    pub cluster: OnceLock<Arc<Cluster>>,
    pub metrics: Arc<Metrics>,
}

impl CommitSink for Live {
    fn committed(&self, effects: &Effects) {
        for driver in &effects.drivers {
            self.registry.apply(driver);
        }
        for booking in &effects.created {
            self.schedule.track(booking, std::time::Duration::ZERO);
        }
        for id in &effects.settled {
            self.schedule.settled(*id);
        }
        // Counted first: whoever hears of a change then finds it counted.
        self.metrics.published(effects);
        self.hub.publish(&effects.events);
        if let Some(cluster) = self.cluster.get() {
            cluster.committed(effects);
        }
    }

    fn measured(&self, writes: usize, took: std::time::Duration, ok: bool) {
        self.metrics.committed(writes, took, ok);
    }

    fn writable(&self) -> Result<(), Error> {
        match self.cluster.get() {
            Some(cluster) if !cluster.connected() => Err(Error::Unavailable(
                "this core-svc replica has lost its link to the others (NATS): nothing was changed; retry, and another replica takes the call"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

impl Live {
    /// What another replica committed (its dispatch stays its own).
    pub fn remote(&self, remote: Remote) {
        for driver in &remote.drivers {
            self.registry.apply(driver);
        }
        for id in &remote.settled {
            self.schedule.settled(*id);
        }
        self.hub.publish(&remote.events);
    }
}

pub fn location_pb(driver_id: &str, l: &Location) -> pb::DriverLocation {
    pb::DriverLocation {
        driver_id: driver_id.to_owned(),
        latitude: l.point.lat,
        longitude: l.point.lon,
        heading: l.heading,
        speed_mps: l.speed_mps,
        updated_at: Some(timestamp(l.at)),
    }
}

/// A driver as the `fleet` topic shows it; `unseen`: its positions stopped, so
/// admins see it OFFLINE.
pub fn fleet_pb(driver: &Driver, location: Option<&Location>, unseen: bool) -> pb::DriverPosition {
    let status = if unseen {
        pb::DriverStatus::Offline
    } else {
        driver.status.to_pb()
    };
    pb::DriverPosition {
        location: location.map(|l| location_pb(driver.id.as_str(), l)),
        status: status as i32,
        vehicle_type: driver.vehicle_type.clone(),
        booking_id: driver.active.as_ref().map_or(0, |t| t.booking_id),
        driver_id: driver.id.to_string(),
    }
}

/// Records a driver's position, sends it to the `fleet` topic and, during a trip,
/// to the rider's topic, as ephemeral events; the trip's booking id, if any.
/// `here`: this replica received it (and saves it behind) rather than another one.
///
/// # Errors
/// [`Error::DriverNotFound`] for a driver not registered.
pub fn position(
    hub: &Hub,
    registry: &Registry,
    driver: &Id,
    location: Location,
    here: bool,
) -> Result<Recorded<u64>, Error> {
    let seen = tokio::time::Instant::now();
    registry.record(driver, location, seen, here, |d| {
        // Built only when a console watches the fleet.
        hub.publish_ephemeral_with(FLEET, location.at, || {
            Kind::DriverPosition(fleet_pb(d, Some(&location), false))
        });
        let trip = d.active.as_ref()?;
        let kind = Kind::DriverLocation(pb::DriverLocationChanged {
            booking_id: trip.booking_id,
            booking_status: trip.status.to_pb() as i32,
            location: Some(location_pb(driver.as_str(), &location)),
        });
        let topic = Topic::UserBookings(trip.user_id.clone()).to_string();
        hub.publish_ephemeral(&topic, kind, location.at);
        Some(trip.booking_id)
    })
}
