//! Who may do what, by role. Admins and services may do everything; a driver acts
//! only as itself; a user only on its own bookings.

use logi::auth::{Principal, Role};
use logi::id::Id;

use crate::error::Error;
use crate::model::Booking;

/// Only `service` and `admin` tokens.
///
/// # Errors
/// [`Error::PermissionDenied`] naming `what`.
pub fn privileged(p: &Principal, what: &str) -> Result<(), Error> {
    if p.role.is_privileged() {
        Ok(())
    } else {
        Err(Error::denied(format!(
            "{what} needs a service or admin token, not a {} token",
            p.role.as_str()
        )))
    }
}

/// Acting as `driver`: that driver's own token, or a privileged one.
///
/// # Errors
/// [`Error::PermissionDenied`].
pub fn as_driver(p: &Principal, driver: &Id) -> Result<(), Error> {
    match p.role {
        Role::Admin | Role::Service => Ok(()),
        Role::Driver if p.id == *driver => Ok(()),
        Role::Driver => Err(Error::denied(format!(
            "this token is driver {}: it may not act as driver {driver}",
            p.id
        ))),
        Role::User => Err(Error::denied("a user token may not act as a driver")),
    }
}

/// Acting for rider `user`: that user's own token, or a privileged one.
///
/// # Errors
/// [`Error::PermissionDenied`].
pub fn as_user(p: &Principal, user: &Id) -> Result<(), Error> {
    match p.role {
        Role::Admin | Role::Service => Ok(()),
        Role::User if p.id == *user => Ok(()),
        Role::User => Err(Error::denied(format!(
            "this token is user {}: it may not act for user {user}",
            p.id
        ))),
        Role::Driver => Err(Error::denied("a driver token may not act for a user")),
    }
}

/// Whether the rider's OTP may be shown to `p`.
pub fn sees_otp(p: &Principal, booking: &Booking) -> bool {
    p.role.is_privileged() || (p.role == Role::User && p.id == booking.user_id)
}

/// The id a driver or user token stands for when a request leaves it empty.
pub fn default_id(p: &Principal, role: Role, given: &str) -> String {
    if given.is_empty() && p.role == role {
        p.id.to_string()
    } else {
        given.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn p(role: Role, id: &str) -> Principal {
        Principal {
            id: Id::new(id).unwrap(),
            role,
            expires_at: 0,
        }
    }

    #[test]
    fn drivers_act_only_as_themselves() {
        let d7 = Id::new("7").unwrap();
        assert!(as_driver(&p(Role::Driver, "7"), &d7).is_ok());
        assert!(as_driver(&p(Role::Service, "edge"), &d7).is_ok());
        assert!(as_driver(&p(Role::Admin, "ops"), &d7).is_ok());
        let err = as_driver(&p(Role::Driver, "8"), &d7).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "this token is driver 8: it may not act as driver 7"
        );
        assert!(as_driver(&p(Role::User, "7"), &d7).is_err());
    }

    #[test]
    fn users_act_only_for_themselves() {
        let u = Id::new("12").unwrap();
        assert!(as_user(&p(Role::User, "12"), &u).is_ok());
        assert!(as_user(&p(Role::User, "13"), &u).is_err());
        assert!(as_user(&p(Role::Driver, "12"), &u).is_err());
        assert!(as_user(&p(Role::Admin, "1"), &u).is_ok());
        assert!(privileged(&p(Role::User, "1"), "FindNearbyDrivers").is_err());
        assert!(privileged(&p(Role::Service, "1"), "FindNearbyDrivers").is_ok());
    }

    #[test]
    fn empty_ids_default_to_the_token_of_that_role() {
        assert_eq!(default_id(&p(Role::Driver, "7"), Role::Driver, ""), "7");
        assert_eq!(default_id(&p(Role::Service, "x"), Role::Driver, ""), "");
        assert_eq!(default_id(&p(Role::Driver, "7"), Role::Driver, "8"), "8");
    }
}
