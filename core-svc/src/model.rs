//! Domain types. Requests become these at the API boundary; protobuf stays there.

use std::time::SystemTime;

use logi::id::Id;
use logi::pb;

use crate::error::Error;

pub type BookingId = u64;

/// A validated WGS84 position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    /// # Errors
    /// [`Error::InvalidArgument`] naming `field` when a coordinate is out of range or
    /// not finite.
    pub fn new(lat: f64, lon: f64, field: &str) -> Result<Self, Error> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(Error::invalid(format!(
                "{field}.latitude must be a number from -90 to 90, got {lat}"
            )));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(Error::invalid(format!(
                "{field}.longitude must be a number from -180 to 180, got {lon}"
            )));
        }
        Ok(Self { lat, lon })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub point: GeoPoint,
    pub address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookingStatus {
    Pending,
    Accepted,
    OnTrip,
    Completed,
    Cancelled,
    Expired,
}

impl BookingStatus {
    /// The name stored in the database and used in messages (the channels dialect's).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::OnTrip => "on_trip",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Accepted,
            Self::OnTrip,
            Self::Completed,
            Self::Cancelled,
            Self::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Pending, accepted or on trip.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Accepted | Self::OnTrip)
    }

    pub fn to_pb(self) -> pb::BookingStatus {
        match self {
            Self::Pending => pb::BookingStatus::Pending,
            Self::Accepted => pb::BookingStatus::Accepted,
            Self::OnTrip => pb::BookingStatus::OnTrip,
            Self::Completed => pb::BookingStatus::Completed,
            Self::Cancelled => pb::BookingStatus::Cancelled,
            Self::Expired => pb::BookingStatus::Expired,
        }
    }

    pub fn from_pb(s: pb::BookingStatus) -> Option<Self> {
        match s {
            pb::BookingStatus::Unspecified => None,
            pb::BookingStatus::Pending => Some(Self::Pending),
            pb::BookingStatus::Accepted => Some(Self::Accepted),
            pb::BookingStatus::OnTrip => Some(Self::OnTrip),
            pb::BookingStatus::Completed => Some(Self::Completed),
            pb::BookingStatus::Cancelled => Some(Self::Cancelled),
            pb::BookingStatus::Expired => Some(Self::Expired),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverStatus {
    Available,
    OnTrip,
    Offline,
}

impl DriverStatus {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::OnTrip => "On Trip",
            Self::Offline => "Offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Available, Self::OnTrip, Self::Offline]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn to_pb(self) -> pb::DriverStatus {
        match self {
            Self::Available => pb::DriverStatus::Available,
            Self::OnTrip => pb::DriverStatus::OnTrip,
            Self::Offline => pb::DriverStatus::Offline,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canceller {
    User,
    Driver,
}

impl Canceller {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Driver => "driver",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "driver" => Some(Self::Driver),
            _ => None,
        }
    }

    pub fn to_pb(self) -> pb::Canceller {
        match self {
            Self::User => pb::Canceller::User,
            Self::Driver => pb::Canceller::Driver,
        }
    }
}

/// What CreateBooking asks for, validated and priced.
#[derive(Debug, Clone)]
pub struct NewBooking {
    pub user_id: Id,
    pub pickup: Place,
    pub dropoff: Place,
    pub vehicle_type: String,
    pub phone_number: String,
    pub price_estimate: f64,
    pub distance_m: f64,
    /// The caller's id for this request, so that a retry gets the same booking.
    pub request: Option<RequestKey>,
}

impl NewBooking {
    /// Whether `b` is what this request asks for (so a retry may return it).
    pub fn same_as(&self, b: &Booking) -> bool {
        self.user_id == b.user_id
            && self.pickup == b.pickup
            && self.dropoff == b.dropoff
            && self.vehicle_type == b.vehicle_type
            && self.phone_number == b.phone_number
    }
}

/// A CreateBooking request's id, scoped to the principal that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// `{role}:{id}` of the caller.
    pub principal: String,
    pub request_id: String,
}

/// An offer of a booking to one driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub driver_id: Id,
    /// From the driver's position to the pickup, metres.
    pub distance_m: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub id: BookingId,
    pub user_id: Id,
    pub driver_id: Option<Id>,
    pub status: BookingStatus,
    pub pickup: Place,
    pub dropoff: Place,
    pub vehicle_type: String,
    pub price_estimate: f64,
    pub distance_m: f64,
    pub phone_number: String,
    /// The current OTP while accepted; never put in events other than OtpIssued.
    pub otp: Option<String>,
    pub otp_failures: u32,
    pub cancelled_by: Option<Canceller>,
    pub cancel_reason: String,
    pub pickup_time: Option<SystemTime>,
    pub dropoff_time: Option<SystemTime>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Booking {
    /// The booking as clients see it; the OTP only when `with_otp` and accepted.
    pub fn to_pb(&self, with_otp: bool) -> pb::Booking {
        let place = |p: &Place| pb::Place {
            latitude: p.point.lat,
            longitude: p.point.lon,
            address: p.address.clone(),
        };
        let otp = match (&self.otp, self.status) {
            (Some(otp), BookingStatus::Accepted) if with_otp => otp.clone(),
            _ => String::new(),
        };
        pb::Booking {
            id: self.id,
            user_id: self.user_id.to_string(),
            driver_id: self
                .driver_id
                .as_ref()
                .map(Id::to_string)
                .unwrap_or_default(),
            status: self.status.to_pb() as i32,
            pickup: Some(place(&self.pickup)),
            dropoff: Some(place(&self.dropoff)),
            vehicle_type: self.vehicle_type.clone(),
            price_estimate: self.price_estimate,
            phone_number: self.phone_number.clone(),
            pickup_time: self.pickup_time.map(timestamp),
            dropoff_time: self.dropoff_time.map(timestamp),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            cancelled_by: self
                .cancelled_by
                .map_or(pb::Canceller::Unspecified, Canceller::to_pb)
                as i32,
            cancel_reason: self.cancel_reason.clone(),
            otp,
            distance_m: self.distance_m,
        }
    }
}

#[cfg(test)]
impl Booking {
    /// A booking for tests: rider `user`, optionally a driver, with an OTP.
    pub fn example(id: BookingId, user: &str, status: BookingStatus, driver: Option<&str>) -> Self {
        let place = Place {
            point: GeoPoint { lat: 1.0, lon: 2.0 },
            address: "x".into(),
        };
        Self {
            id,
            user_id: Id::new(user).unwrap(),
            driver_id: driver.map(|d| Id::new(d).unwrap()),
            status,
            pickup: place.clone(),
            dropoff: place,
            vehicle_type: "car".into(),
            price_estimate: 3.0,
            distance_m: 10.0,
            phone_number: String::new(),
            otp: Some("123456".into()),
            otp_failures: 0,
            cancelled_by: None,
            cancel_reason: String::new(),
            pickup_time: None,
            dropoff_time: None,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// A driver as the registry and the database know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub id: Id,
    pub status: DriverStatus,
    pub vehicle_type: String,
    pub active: Option<ActiveTrip>,
    /// Counts the changes committed to this driver. Commits can reach the
    /// registry out of order (several connections, several replicas): it applies
    /// a change only if it is not older than what it holds.
    pub version: u64,
}

impl Driver {
    pub fn to_pb(&self) -> pb::Driver {
        pb::Driver {
            driver_id: self.id.to_string(),
            status: self.status.to_pb() as i32,
            vehicle_type: self.vehicle_type.clone(),
            active_booking_id: self.active.as_ref().map_or(0, |a| a.booking_id),
        }
    }
}

/// The accepted or started booking of an on-trip driver: where their positions go.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveTrip {
    pub booking_id: BookingId,
    pub user_id: Id,
    pub status: BookingStatus,
}

/// A driver's last reported position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    pub point: GeoPoint,
    pub heading: f64,
    pub speed_mps: f64,
    pub at: SystemTime,
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// Milliseconds since the Unix epoch, as stored.
pub fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_checked() {
        assert!(GeoPoint::new(37.77, -122.42, "pickup").is_ok());
        assert!(GeoPoint::new(90.0, 180.0, "pickup").is_ok());
        for (lat, lon) in [
            (90.1, 0.0),
            (0.0, -180.5),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            let err = GeoPoint::new(lat, lon, "pickup").unwrap_err();
            assert!(err.to_string().starts_with("pickup."), "{err}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            "pending",
            "accepted",
            "on_trip",
            "completed",
            "cancelled",
            "expired",
        ] {
            assert_eq!(BookingStatus::parse(s).unwrap().as_str(), s);
        }
        for s in ["Available", "On Trip", "Offline"] {
            assert_eq!(DriverStatus::parse(s).unwrap().as_str(), s);
        }
    }
}
