//! Topic names of the event log and who may read them.
//!
//! The names are the group names of the Django Channels documents, so a Channels user
//! recognises them. Ids cannot contain `_` (see [`crate::id`]), which keeps parsing
//! unambiguous.

use std::fmt;

use crate::auth::{Principal, Role};
use crate::id::{self, Id};

/// The name of the topic every admin console reads.
pub const ADMINS: &str = "admins";
/// The name of the topic of every driver's position, for operations consoles.
pub const FLEET: &str = "fleet";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `user_{id}_bookings`: a rider's bookings, OTPs and driver positions.
    UserBookings(Id),
    /// `driver_{id}_available_bookings`: offers to a driver and what became of them.
    DriverAvailable(Id),
    /// `driver_{id}_bookings`: the bookings a driver accepted.
    DriverBookings(Id),
    /// `admins`: driver status changes and every booking change.
    Admins,
    /// `fleet`: every driver's position and status, for operations consoles.
    Fleet,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown topic {0:?}: expected user_{{id}}_bookings, driver_{{id}}_available_bookings, driver_{{id}}_bookings, admins or fleet"
)]
pub struct TopicError(pub String);

impl Topic {
    /// # Errors
    /// [`TopicError`] when `name` is none of the four forms or its id is invalid.
    pub fn parse(name: &str) -> Result<Self, TopicError> {
        let bad = || TopicError(name.to_owned());
        match name {
            ADMINS => return Ok(Self::Admins),
            FLEET => return Ok(Self::Fleet),
            _ => {}
        }
        let with_id =
            |id: &str, make: fn(Id) -> Topic| id::Id::new(id).map(make).map_err(|_| bad());
        if let Some(id) = name
            .strip_prefix("user_")
            .and_then(|r| r.strip_suffix("_bookings"))
        {
            return with_id(id, Topic::UserBookings);
        }
        if let Some(rest) = name.strip_prefix("driver_") {
            if let Some(id) = rest.strip_suffix("_available_bookings") {
                return with_id(id, Topic::DriverAvailable);
            }
            if let Some(id) = rest.strip_suffix("_bookings") {
                return with_id(id, Topic::DriverBookings);
            }
        }
        Err(bad())
    }

    /// The topics a principal's client sees by default: a rider its bookings, a driver
    /// its offers and accepted bookings, an admin the `admins` topic.
    pub fn defaults_for(principal: &Principal) -> Vec<Topic> {
        match principal.role {
            Role::User => vec![Topic::UserBookings(principal.id.clone())],
            Role::Driver => vec![
                Topic::DriverAvailable(principal.id.clone()),
                Topic::DriverBookings(principal.id.clone()),
            ],
            Role::Admin | Role::Service => vec![Topic::Admins],
        }
    }

    /// Whether `principal` may read this topic.
    pub fn readable_by(&self, principal: &Principal) -> bool {
        match (principal.role, self) {
            (Role::Admin | Role::Service, _) => true,
            (Role::User, Topic::UserBookings(id)) => *id == principal.id,
            (Role::Driver, Topic::DriverAvailable(id) | Topic::DriverBookings(id)) => {
                *id == principal.id
            }
            _ => false,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::UserBookings(id) => write!(f, "user_{id}_bookings"),
            Topic::DriverAvailable(id) => write!(f, "driver_{id}_available_bookings"),
            Topic::DriverBookings(id) => write!(f, "driver_{id}_bookings"),
            Topic::Admins => f.write_str(ADMINS),
            Topic::Fleet => f.write_str(FLEET),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Id {
        Id::new(s).unwrap()
    }

    #[test]
    fn round_trips_every_form() {
        for name in [
            "user_12_bookings",
            "driver_45_available_bookings",
            "driver_45_bookings",
            "admins",
            "fleet",
        ] {
            assert_eq!(Topic::parse(name).unwrap().to_string(), name);
        }
        assert_eq!(
            Topic::parse("driver_45_available_bookings"),
            Ok(Topic::DriverAvailable(id("45")))
        );
    }

    #[test]
    fn rejects_unknown_and_ambiguous_names() {
        for name in [
            "",
            "user__bookings",
            "users_1_bookings",
            "driver_4_5_bookings",
            "admin",
            "user_1_bookings_x",
        ] {
            assert!(Topic::parse(name).is_err(), "{name}");
        }
    }

    #[test]
    fn readers() {
        let p = |role, s: &str| Principal {
            id: id(s),
            role,
            expires_at: 0,
        };
        let rider = Topic::parse("user_1_bookings").unwrap();
        assert!(rider.readable_by(&p(Role::User, "1")));
        assert!(!rider.readable_by(&p(Role::User, "2")));
        assert!(!rider.readable_by(&p(Role::Driver, "1")));
        assert!(rider.readable_by(&p(Role::Service, "edge")));
        let offers = Topic::parse("driver_9_available_bookings").unwrap();
        assert!(offers.readable_by(&p(Role::Driver, "9")));
        assert!(!offers.readable_by(&p(Role::Driver, "8")));
        assert!(!Topic::Admins.readable_by(&p(Role::Driver, "9")));
        assert!(Topic::Admins.readable_by(&p(Role::Admin, "ops")));
        assert!(!Topic::Fleet.readable_by(&p(Role::User, "1")));
        assert!(Topic::Fleet.readable_by(&p(Role::Admin, "ops")));
    }
}
