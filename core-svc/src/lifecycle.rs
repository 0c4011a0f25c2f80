//! The booking state machine, as pure functions.
//!
//! `pending → accepted → on_trip → completed`, `cancelled` from pending or accepted,
//! `expired` from pending. Storage applies a transition with a conditional update on
//! the status these functions checked, so a concurrent change makes it fail rather
//! than overwrite.

use logi::id::Id;

use crate::error::Error;
use crate::model::{Booking, BookingStatus, Canceller};

/// What may happen to a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Accept {
        driver: &'a Id,
    },
    VerifyOtp {
        driver: &'a Id,
    },
    IssueOtp,
    Complete {
        driver: &'a Id,
    },
    Cancel {
        by: Canceller,
        driver: Option<&'a Id>,
    },
    Expire,
}

/// The status `action` moves `booking` to, or why it may not.
///
/// # Errors
/// [`Error::Taken`] when another driver accepted first, [`Error::WrongStatus`] for
/// any other illegal transition, [`Error::FailedPrecondition`] when the acting
/// driver is not the booking's driver.
pub fn next(booking: &Booking, action: Action<'_>) -> Result<BookingStatus, Error> {
    use BookingStatus::*;
    let id = booking.id;
    let wrong = |what| Error::WrongStatus {
        booking: id,
        status: booking.status,
        what,
    };
    let own = |driver: &Id| match &booking.driver_id {
        Some(d) if d == driver => Ok(()),
        _ => Err(Error::precondition(format!(
            "booking {id} was not accepted by driver {driver}"
        ))),
    };
    match (booking.status, action) {
        (Pending, Action::Accept { .. }) => Ok(Accepted),
        (Accepted | OnTrip | Completed, Action::Accept { driver })
            if booking.driver_id.as_ref() == Some(driver) =>
        {
            Err(Error::precondition(format!(
                "booking {id} was already accepted by driver {driver}: this accept is a repeat"
            )))
        }
        (Accepted | OnTrip | Completed, Action::Accept { .. }) => Err(Error::Taken(id)),
        (_, Action::Accept { .. }) => Err(wrong("only a pending booking can be accepted")),
        (Accepted, Action::VerifyOtp { driver }) => own(driver).map(|()| OnTrip),
        (_, Action::VerifyOtp { .. }) => Err(wrong("the OTP starts only an accepted booking")),
        (Accepted, Action::IssueOtp) => Ok(Accepted),
        (_, Action::IssueOtp) => Err(wrong("an OTP is issued only for an accepted booking")),
        (OnTrip, Action::Complete { driver }) => own(driver).map(|()| Completed),
        (_, Action::Complete { .. }) => Err(wrong("only a booking on trip can be completed")),
        (
            Pending,
            Action::Cancel {
                by: Canceller::Driver,
                ..
            },
        ) => Err(Error::precondition(format!(
            "booking {id} has no driver yet: a driver can cancel only a booking it accepted"
        ))),
        (
            Accepted,
            Action::Cancel {
                by: Canceller::Driver,
                driver: Some(driver),
            },
        ) => own(driver).map(|()| Cancelled),
        (Pending | Accepted, Action::Cancel { .. }) => Ok(Cancelled),
        (OnTrip, Action::Cancel { .. }) => Err(wrong(
            "a trip in progress cannot be cancelled, only completed",
        )),
        (_, Action::Cancel { .. }) => {
            Err(wrong("only a pending or accepted booking can be cancelled"))
        }
        (Pending, Action::Expire) => Ok(Expired),
        (_, Action::Expire) => Err(wrong("only a pending booking can expire")),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use tonic::Code;

    #[test]
    fn the_happy_path() {
        let d = Id::new("9").unwrap();
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Pending, None),
                Action::Accept { driver: &d }
            ),
            Ok(BookingStatus::Accepted)
        );
        let accepted = Booking::example(7, "1", BookingStatus::Accepted, Some("9"));
        assert_eq!(
            next(&accepted, Action::VerifyOtp { driver: &d }),
            Ok(BookingStatus::OnTrip)
        );
        assert_eq!(
            next(&accepted, Action::IssueOtp),
            Ok(BookingStatus::Accepted)
        );
        let on_trip = Booking::example(7, "1", BookingStatus::OnTrip, Some("9"));
        assert_eq!(
            next(&on_trip, Action::Complete { driver: &d }),
            Ok(BookingStatus::Completed)
        );
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Pending, None),
                Action::Expire
            ),
            Ok(BookingStatus::Expired)
        );
    }

    #[test]
    fn a_second_accept_is_told_the_booking_was_taken() {
        let d = Id::new("8").unwrap();
        for status in [
            BookingStatus::Accepted,
            BookingStatus::OnTrip,
            BookingStatus::Completed,
        ] {
            assert_eq!(
                next(
                    &Booking::example(7, "1", status, Some("9")),
                    Action::Accept { driver: &d }
                ),
                Err(Error::Taken(7))
            );
        }
        let err = next(
            &Booking::example(7, "1", BookingStatus::Cancelled, None),
            Action::Accept { driver: &d },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "booking 7 is cancelled: only a pending booking can be accepted"
        );
    }

    #[test]
    fn a_repeated_accept_by_the_winner_says_so() {
        let d = Id::new("9").unwrap();
        let err = next(
            &Booking::example(7, "1", BookingStatus::Accepted, Some("9")),
            Action::Accept { driver: &d },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "booking 7 was already accepted by driver 9: this accept is a repeat"
        );
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[test]
    fn cancel_rules() {
        let d9 = Id::new("9").unwrap();
        let d8 = Id::new("8").unwrap();
        let by_user = Action::Cancel {
            by: Canceller::User,
            driver: None,
        };
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Pending, None),
                by_user
            ),
            Ok(BookingStatus::Cancelled)
        );
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Accepted, Some("9")),
                by_user
            ),
            Ok(BookingStatus::Cancelled)
        );
        let by_9 = Action::Cancel {
            by: Canceller::Driver,
            driver: Some(&d9),
        };
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Accepted, Some("9")),
                by_9
            ),
            Ok(BookingStatus::Cancelled)
        );
        let by_8 = Action::Cancel {
            by: Canceller::Driver,
            driver: Some(&d8),
        };
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Accepted, Some("9")),
                by_8
            )
            .unwrap_err()
            .code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            next(
                &Booking::example(7, "1", BookingStatus::Pending, None),
                by_9
            )
            .unwrap_err()
            .code(),
            Code::FailedPrecondition
        );
        let err = next(
            &Booking::example(7, "1", BookingStatus::OnTrip, Some("9")),
            by_user,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "booking 7 is on_trip: a trip in progress cannot be cancelled, only completed"
        );
        for status in [
            BookingStatus::Completed,
            BookingStatus::Cancelled,
            BookingStatus::Expired,
        ] {
            assert!(matches!(
                next(&Booking::example(7, "1", status, Some("9")), by_user),
                Err(Error::WrongStatus { .. })
            ));
        }
    }

    #[test]
    fn only_the_assigned_driver_starts_and_completes() {
        let d8 = Id::new("8").unwrap();
        let err = next(
            &Booking::example(7, "1", BookingStatus::Accepted, Some("9")),
            Action::VerifyOtp { driver: &d8 },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "booking 7 was not accepted by driver 8");
        assert!(
            next(
                &Booking::example(7, "1", BookingStatus::OnTrip, Some("9")),
                Action::Complete { driver: &d8 }
            )
            .is_err()
        );
        assert!(
            next(
                &Booking::example(7, "1", BookingStatus::Accepted, Some("9")),
                Action::Complete {
                    driver: &Id::new("9").unwrap()
                }
            )
            .is_err()
        );
        assert!(
            next(
                &Booking::example(7, "1", BookingStatus::Pending, None),
                Action::VerifyOtp { driver: &d8 }
            )
            .is_err()
        );
        assert!(
            next(
                &Booking::example(7, "1", BookingStatus::Expired, None),
                Action::Expire
            )
            .is_err()
        );
    }
}
