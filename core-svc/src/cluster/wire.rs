//! What a commit or a batch of positions looks like between replicas
//! (`proto/logi/cluster/v1`), and back.

use std::time::SystemTime;

use logi::id::Id;
use logi::pb;

use crate::model::{
    ActiveTrip, BookingId, BookingStatus, Driver, DriverStatus, GeoPoint, Location, timestamp,
};
use crate::store::Effects;

/// The generated messages.
pub mod cpb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/logi.cluster.v1.rs"));
}

/// What another replica committed, as this one applies it.
#[derive(Debug, Default, PartialEq)]
pub struct Remote {
    pub events: Vec<pb::Event>,
    pub drivers: Vec<Driver>,
    pub settled: Vec<BookingId>,
}

/// The message for a commit's effects (`sent` is numbered by the sender).
pub fn committed(replica: u64, sent: u64, fx: &Effects) -> cpb::Committed {
    cpb::Committed {
        replica,
        sent,
        events: fx.events.clone(),
        drivers: fx.drivers.iter().map(driver_state).collect(),
        settled: fx.settled.clone(),
    }
}

fn driver_state(d: &Driver) -> cpb::DriverState {
    cpb::DriverState {
        driver: Some(d.to_pb()),
        trip_user_id: d
            .active
            .as_ref()
            .map(|t| t.user_id.to_string())
            .unwrap_or_default(),
        trip_status: d.active.as_ref().map_or(0, |t| t.status.to_pb() as i32),
        version: d.version,
    }
}

/// A commit of another replica.
///
/// # Errors
/// What is malformed, for the log: the message is then treated as lost.
pub fn remote(msg: cpb::Committed) -> Result<Remote, String> {
    let drivers = msg
        .drivers
        .into_iter()
        .map(driver)
        .collect::<Result<_, _>>()?;
    Ok(Remote {
        events: msg.events,
        drivers,
        settled: msg.settled,
    })
}

fn driver(s: cpb::DriverState) -> Result<Driver, String> {
    let d = s.driver.ok_or("a driver state without its driver")?;
    let id = Id::new(d.driver_id).map_err(|e| e.to_string())?;
    let status = match pb::DriverStatus::try_from(d.status) {
        Ok(pb::DriverStatus::Available) => DriverStatus::Available,
        Ok(pb::DriverStatus::OnTrip) => DriverStatus::OnTrip,
        Ok(pb::DriverStatus::Offline) => DriverStatus::Offline,
        _ => return Err(format!("driver {id} has no status")),
    };
    let active = if d.active_booking_id == 0 {
        None
    } else {
        let status = pb::BookingStatus::try_from(s.trip_status)
            .ok()
            .and_then(BookingStatus::from_pb)
            .ok_or_else(|| format!("driver {id}'s trip has no status"))?;
        Some(ActiveTrip {
            booking_id: d.active_booking_id,
            user_id: Id::new(s.trip_user_id).map_err(|e| e.to_string())?,
            status,
        })
    };
    Ok(Driver {
        id,
        status,
        vehicle_type: d.vehicle_type,
        active,
        version: s.version,
    })
}

/// The message for positions received here.
pub fn positions(replica: u64, moved: Vec<(Id, Location)>) -> cpb::Positions {
    cpb::Positions {
        replica,
        positions: moved
            .into_iter()
            .map(|(id, l)| pb::DriverLocation {
                driver_id: id.to_string(),
                latitude: l.point.lat,
                longitude: l.point.lon,
                heading: l.heading,
                speed_mps: l.speed_mps,
                updated_at: Some(timestamp(l.at)),
            })
            .collect(),
    }
}

/// Positions another replica received; malformed ones are left out.
pub fn locations(msg: cpb::Positions) -> Vec<(Id, Location)> {
    msg.positions
        .into_iter()
        .filter_map(|p| {
            let id = Id::new(p.driver_id).ok()?;
            let point = GeoPoint::new(p.latitude, p.longitude, "location").ok()?;
            let at = p
                .updated_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .unwrap_or_else(SystemTime::now);
            Some((
                id,
                Location {
                    point,
                    heading: p.heading,
                    speed_mps: p.speed_mps,
                    at,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_commit_arrives_as_it_was_sent() {
        let on_trip = Driver {
            id: Id::new("45").unwrap(),
            status: DriverStatus::OnTrip,
            vehicle_type: "car".into(),
            active: Some(ActiveTrip {
                booking_id: 7,
                user_id: Id::new("12").unwrap(),
                status: BookingStatus::Accepted,
            }),
            version: 3,
        };
        let free = Driver {
            id: Id::new("46").unwrap(),
            status: DriverStatus::Available,
            vehicle_type: "van".into(),
            active: None,
            version: 1,
        };
        let fx = Effects {
            events: vec![pb::Event {
                topic: "admins".into(),
                ..Default::default()
            }],
            drivers: vec![on_trip.clone(), free.clone()],
            created: Vec::new(),
            settled: vec![7],
        };
        let bytes = committed(9, 4, &fx).encode_to_vec();
        let msg = cpb::Committed::decode(bytes.as_slice()).unwrap();
        assert_eq!((msg.replica, msg.sent), (9, 4));
        assert_eq!(
            remote(msg).unwrap(),
            Remote {
                events: fx.events.clone(),
                drivers: vec![on_trip, free],
                settled: vec![7],
            }
        );
    }

    #[test]
    fn positions_arrive_as_they_were_sent() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let moved = vec![(
            Id::new("45").unwrap(),
            Location {
                point: GeoPoint {
                    lat: 1.5,
                    lon: -2.25,
                },
                heading: 90.0,
                speed_mps: 8.0,
                at,
            },
        )];
        let bytes = positions(9, moved.clone()).encode_to_vec();
        assert_eq!(
            locations(cpb::Positions::decode(bytes.as_slice()).unwrap()),
            moved
        );
    }
}
