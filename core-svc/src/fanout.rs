//! Which topics hear of each change, and with what event. Pure: storage calls these
//! inside the transaction that makes the change and appends what they return.

use logi::id::Id;
use logi::pb::{self, event::Kind, offer_closed};
use logi::topic::Topic;

use crate::model::{Booking, BookingStatus, DriverStatus, Offer};

pub type Outgoing = Vec<(Topic, Kind)>;

/// A booking was created or changed status: the rider, the assigned driver's
/// bookings topic (once a driver is assigned) and the admins hear of it.
pub fn booking_changed(b: &Booking, previous: Option<BookingStatus>) -> Outgoing {
    let kind = Kind::BookingChanged(pb::BookingChanged {
        booking: Some(b.to_pb(false)),
        previous_status: previous.map_or(pb::BookingStatus::Unspecified, BookingStatus::to_pb)
            as i32,
    });
    let mut out = vec![(Topic::UserBookings(b.user_id.clone()), kind.clone())];
    if let Some(driver) = &b.driver_id {
        out.push((Topic::DriverBookings(driver.clone()), kind.clone()));
    }
    out.push((Topic::Admins, kind));
    out
}

/// The booking was offered to these drivers.
pub fn offered(b: &Booking, offers: &[Offer]) -> Outgoing {
    let booking = b.to_pb(false);
    offers
        .iter()
        .map(|o| {
            let kind = Kind::BookingOffered(pb::BookingOffered {
                booking: Some(booking.clone()),
                distance_m: o.distance_m,
            });
            (Topic::DriverAvailable(o.driver_id.clone()), kind)
        })
        .collect()
}

/// The open offers to `drivers` closed; the one that accepted hears ACCEPTED, the
/// others `reason`.
pub fn offers_closed(b: &Booking, drivers: &[Id], reason: offer_closed::Reason) -> Outgoing {
    let booking = b.to_pb(false);
    drivers
        .iter()
        .map(|d| {
            let reason = match &b.driver_id {
                Some(winner) if winner == d && b.status == BookingStatus::Accepted => {
                    offer_closed::Reason::Accepted
                }
                _ => reason,
            };
            let kind = Kind::OfferClosed(pb::OfferClosed {
                booking_id: b.id,
                reason: reason as i32,
                booking: Some(booking.clone()),
            });
            (Topic::DriverAvailable(d.clone()), kind)
        })
        .collect()
}

/// A new OTP for the rider only.
pub fn otp_issued(b: &Booking, otp: &str) -> Outgoing {
    let kind = Kind::OtpIssued(pb::OtpIssued {
        booking_id: b.id,
        otp: otp.to_owned(),
    });
    vec![(Topic::UserBookings(b.user_id.clone()), kind)]
}

/// A driver's availability changed: the admins hear of it.
pub fn driver_status(
    driver: &Id,
    previous: Option<DriverStatus>,
    now: DriverStatus,
    vehicle_type: &str,
) -> Outgoing {
    let kind = Kind::DriverStatus(pb::DriverStatusChanged {
        driver_id: driver.to_string(),
        status: now.to_pb() as i32,
        previous_status: previous.map_or(pb::DriverStatus::Unspecified, DriverStatus::to_pb) as i32,
        vehicle_type: vehicle_type.to_owned(),
        unseen: false,
    });
    vec![(Topic::Admins, kind)]
}

/// An available driver fell silent (shown OFFLINE) or was seen again (AVAILABLE):
/// the admins hear of it.
pub fn driver_unseen(driver: &Id, unseen: bool, vehicle_type: &str) -> Outgoing {
    let (previous, now) = if unseen {
        (DriverStatus::Available, DriverStatus::Offline)
    } else {
        (DriverStatus::Offline, DriverStatus::Available)
    };
    let kind = Kind::DriverStatus(pb::DriverStatusChanged {
        driver_id: driver.to_string(),
        status: now.to_pb() as i32,
        previous_status: previous.to_pb() as i32,
        vehicle_type: vehicle_type.to_owned(),
        unseen,
    });
    vec![(Topic::Admins, kind)]
}

#[cfg(test)]
mod tests {

    use super::*;

    fn names(out: &Outgoing) -> Vec<String> {
        out.iter().map(|(t, _)| t.to_string()).collect()
    }

    #[test]
    fn status_changes_reach_rider_driver_and_admins_without_the_otp() {
        assert_eq!(
            names(&booking_changed(
                &Booking::example(5, "12", BookingStatus::Pending, None),
                None
            )),
            ["user_12_bookings", "admins"]
        );
        let out = booking_changed(
            &Booking::example(5, "12", BookingStatus::Accepted, Some("45")),
            Some(BookingStatus::Pending),
        );
        assert_eq!(
            names(&out),
            ["user_12_bookings", "driver_45_bookings", "admins"]
        );
        for (_, kind) in &out {
            let Kind::BookingChanged(c) = kind else {
                panic!("{kind:?}")
            };
            assert_eq!(c.booking.as_ref().unwrap().otp, "");
            assert_eq!(c.previous_status, pb::BookingStatus::Pending as i32);
        }
    }

    #[test]
    fn the_winner_hears_accepted_and_the_others_taken() {
        let b = Booking::example(5, "12", BookingStatus::Accepted, Some("45"));
        let drivers = [Id::new("45").unwrap(), Id::new("46").unwrap()];
        let out = offers_closed(&b, &drivers, offer_closed::Reason::Taken);
        let reasons: Vec<_> = out
            .iter()
            .map(|(t, k)| match k {
                Kind::OfferClosed(c) => (t.to_string(), c.reason),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "driver_45_available_bookings".to_owned(),
                    offer_closed::Reason::Accepted as i32
                ),
                (
                    "driver_46_available_bookings".to_owned(),
                    offer_closed::Reason::Taken as i32
                )
            ]
        );
    }

    #[test]
    fn otps_go_to_the_rider_only() {
        assert_eq!(
            names(&otp_issued(
                &Booking::example(5, "12", BookingStatus::Accepted, Some("45")),
                "123456"
            )),
            ["user_12_bookings"]
        );
    }
}
